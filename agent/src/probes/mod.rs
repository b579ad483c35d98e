//! Loading the eBPF object: resolve every kernel-specific offset first
//! (tracefs formats, BTF), hand them over as load-time constants, then load
//! and attach each program on its own so that one that cannot load is
//! reported and the others go on.

use std::path::Path;

pub mod lock_types;

use aya::{
    maps::Array,
    programs::{BtfTracePoint, TracePoint},
    Btf as AyaBtf, Ebpf, EbpfLoader,
};
use std::mem::size_of;

use hostprobe_common::{
    dirty, lock, numa, CpuTopo, SchedStats, TaskSlot, DEFAULT_MAX_WORKLOADS, DEFAULT_TASK_SLOTS,
    WORKLOAD_PROBES,
};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::host::btf::{Btf, TypeShape};
use crate::host::topology::{Topology, SYSFS_SYSTEM};
use crate::host::tracefs::{self, Format};
use crate::snapshot::ProbeStatus;

/// The compiled kernel programs, built by `build.rs` through aya-build.
static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hostprobe-probes"));

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// How a program attaches.
#[derive(Debug, Clone, Copy)]
pub enum Hook {
    /// BTF-typed tracepoint (category, name): needs kernel BTF.
    BtfTracepoint(&'static str, &'static str),
    /// Classic tracepoint: needs tracefs for its format and id.
    Tracepoint(&'static str, &'static str),
}

/// What a program needs resolved from the running kernel before it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// task_struct offsets and tracepoint prototypes from BTF.
    TaskBtf,
    /// The lock:contention_begin/end formats.
    LockFormat,
    /// struct folio / address_space / inode / super_block offsets from BTF.
    FolioBtf,
    /// The writeback:balance_dirty_pages format.
    BalanceFormat,
    /// The exceptions:page_fault_user BTF prototype (x86).
    FaultBtf,
    /// The kmem:mm_page_alloc BTF prototype and the page-flags node bits.
    PageAlloc,
    /// Nothing read from the record: the tracepoint only has to exist.
    Nothing,
    /// The migrate:mm_migrate_pages format.
    MigratePagesFormat,
}

/// A kernel program of the object and where it attaches.
#[derive(Debug, Clone, Copy)]
pub struct ProgramSpec {
    pub program: &'static str,
    pub hook: Hook,
    pub needs: Needs,
}

const fn spec(program: &'static str, hook: Hook, needs: Needs) -> ProgramSpec {
    ProgramSpec {
        program,
        hook,
        needs,
    }
}

/// Every program of the object: the scheduler signal (`sched.rs`), lock
/// contention (`lock.rs`), page dirtying (`dirty.rs`), NUMA (`numa.rs`).
#[rustfmt::skip]
pub const PROGRAMS: [ProgramSpec; 14] = [
    spec("sched_switch", Hook::BtfTracepoint("sched", "sched_switch"), Needs::TaskBtf),
    spec("sched_wakeup", Hook::BtfTracepoint("sched", "sched_wakeup"), Needs::TaskBtf),
    spec("sched_wakeup_new", Hook::BtfTracepoint("sched", "sched_wakeup_new"), Needs::TaskBtf),
    spec("sched_migrate_task", Hook::BtfTracepoint("sched", "sched_migrate_task"), Needs::TaskBtf),
    spec("contention_begin", Hook::Tracepoint("lock", "contention_begin"), Needs::LockFormat),
    spec("contention_end", Hook::Tracepoint("lock", "contention_end"), Needs::LockFormat),
    spec("writeback_dirty_folio", Hook::BtfTracepoint("writeback", "writeback_dirty_folio"), Needs::FolioBtf),
    spec("balance_dirty_pages", Hook::Tracepoint("writeback", "balance_dirty_pages"), Needs::BalanceFormat),
    spec("page_fault_user", Hook::BtfTracepoint("exceptions", "page_fault_user"), Needs::FaultBtf),
    spec("mm_page_alloc", Hook::BtfTracepoint("kmem", "mm_page_alloc"), Needs::PageAlloc),
    spec("sched_move_numa", Hook::Tracepoint("sched", "sched_move_numa"), Needs::Nothing),
    spec("sched_swap_numa", Hook::Tracepoint("sched", "sched_swap_numa"), Needs::Nothing),
    spec("sched_stick_numa", Hook::Tracepoint("sched", "sched_stick_numa"), Needs::Nothing),
    spec("mm_migrate_pages", Hook::Tracepoint("migrate", "mm_migrate_pages"), Needs::MigratePagesFormat),
];

/// Maps the collectors and the loader use, with the value size the agent
/// expects: the kernel and user sides must agree on every record type.
pub const MAP_CONTRACT: [(&str, usize); 17] = [
    ("TASK_SLOTS", size_of::<TaskSlot>()),
    ("CPU_TOPO", size_of::<CpuTopo>()),
    ("SCHED_WORKLOADS", size_of::<SchedStats>()),
    ("SCHED_COUNTERS", size_of::<u64>()),
    ("DEAD_CGROUPS", size_of::<u64>()),
    ("LOCK_BY_CALLER", size_of::<lock::Stat>()),
    ("LOCK_BY_ADDR", size_of::<lock::Stat>()),
    ("LOCK_WORKLOADS", size_of::<lock::Stat>()),
    ("LOCK_HIST", size_of::<lock::Hist>()),
    ("LOCK_COUNTERS", size_of::<u64>()),
    ("LOCK_TASK_SLOTS", size_of::<lock::TaskSlot>()),
    ("DIRTY_WORKLOADS", size_of::<dirty::Stats>()),
    ("DIRTY_FILES", size_of::<dirty::FileStats>()),
    ("DIRTY_COUNTERS", size_of::<u64>()),
    ("NUMA_WORKLOADS", size_of::<numa::Stats>()),
    ("NUMA_MIGRATED", size_of::<u64>()),
    ("NUMA_COUNTERS", size_of::<u64>()),
];

/// Checks the embedded object against what the agent expects of it, as
/// ebpf_exporter validates its map-to-metric contract at start: every
/// program in the section its hook needs, every map with the value size of
/// the shared record type. A mismatch is a build defect, caught before
/// anything is loaded.
pub fn check_object(data: &[u8]) -> Result<()> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let bad = |reason: String| Error::Contract { reason };
    let file = object::File::parse(data).map_err(|e| bad(format!("not an ELF object: {e}")))?;
    let section_of = |name: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(name))
            .and_then(|s| s.section_index())
            .and_then(|i| file.section_by_index(i).ok())
    };
    for spec in PROGRAMS {
        let want = spec.hook.section();
        let found = section_of(spec.program).and_then(|s| s.name().ok().map(str::to_string));
        if found.as_deref() != Some(want.as_str()) {
            return Err(bad(format!(
                "program {} is in section {found:?}, expected {want}",
                spec.program
            )));
        }
    }
    let maps = file
        .section_by_name("maps")
        .ok_or_else(|| bad("no maps section".into()))?;
    let maps_data = maps.data().map_err(|e| bad(format!("maps section: {e}")))?;
    for (name, value_size) in MAP_CONTRACT {
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok(name) && s.section_index() == Some(maps.index()))
            .ok_or_else(|| bad(format!("map {name} missing")))?;
        // Legacy map definition: u32 type, key_size, value_size, ...
        let at = sym.address() as usize + 8;
        let size = maps_data
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| bad(format!("map {name}: definition out of bounds")))?;
        if size != value_size {
            return Err(bad(format!(
                "map {name} holds {size}-byte values, the agent reads {value_size}-byte records"
            )));
        }
    }
    Ok(())
}

impl Hook {
    /// ELF section aya derives the program type and attach point from.
    pub fn section(&self) -> String {
        match self {
            Hook::BtfTracepoint(_, n) => format!("tp_btf/{n}"),
            Hook::Tracepoint(c, n) => format!("tracepoint/{c}/{n}"),
        }
    }

    pub fn tracepoint(&self) -> String {
        match self {
            Hook::BtfTracepoint(c, n) | Hook::Tracepoint(c, n) => format!("{c}:{n}"),
        }
    }

    pub fn attach_type(&self) -> &'static str {
        match self {
            Hook::BtfTracepoint(..) => "tp_btf",
            Hook::Tracepoint(..) => "tracepoint",
        }
    }
}

/// Kernel-side filters and map sizes; filters are load-time constants, so
/// filtered-out tasks cost the programs almost nothing.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Only this process (tgid).
    pub pid: Option<u32>,
    /// Only this cgroup v2 id.
    pub cgroup_id: Option<u64>,
    /// Per-task slots (rounded up to a power of two).
    pub task_slots: u32,
    /// Entries per CPU of the workload table (rounded up to a power of two).
    pub max_workloads: u32,
    /// Lock types to trace (bit per flag value, see `lock_types::mask`); 0: all.
    pub lock_types: u64,
    /// Stack walks per second per CPU for spinning lock waits; 0: all.
    pub spin_stacks_per_sec: u32,
    /// When to attach `mm_page_alloc`, the one program every page
    /// allocation pays for.
    pub page_alloc: PageAlloc,
}

/// When `mm_page_alloc` (remote page allocations per workload) attaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PageAlloc {
    /// With two or more NUMA nodes (on one, nothing is remote).
    #[default]
    Auto,
    /// Also on a one-node host (the benchmark measures it there).
    Always,
    /// Never: on-CPU time by node, balancing and residency stay on.
    Never,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pid: None,
            cgroup_id: None,
            task_slots: DEFAULT_TASK_SLOTS,
            max_workloads: DEFAULT_MAX_WORKLOADS,
            lock_types: 0,
            spin_stacks_per_sec: lock::DEFAULT_SPIN_STACKS_PER_SEC,
            page_alloc: PageAlloc::Auto,
        }
    }
}

/// The loaded object; dropping it detaches and unloads every program.
pub struct Probes {
    pub ebpf: Ebpf,
    pub status: Vec<ProbeStatus>,
    pub topology: Topology,
    /// Names of `enum migrate_reason` values (`numa_misplaced`, ...).
    pub migrate_reasons: Vec<String>,
}

/// `enum migrate_reason` names by value, lowercased without `MR_`.
fn migrate_reasons(btf: &Btf) -> Result<Vec<String>> {
    let mut v = btf.enum_values("migrate_reason")?;
    v.retain(|(_, val)| (0..i64::from(numa::MAX_REASONS)).contains(val));
    let mut names = vec![String::new(); v.iter().map(|(_, x)| *x as usize + 1).max().unwrap_or(0)];
    for (name, val) in v {
        names[val as usize] = name.trim_start_matches("MR_").to_ascii_lowercase();
    }
    Ok(names)
}

/// Offsets in `task_struct` read by the BTF tracepoints.
#[derive(Debug, Clone, Copy)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
    /// The task's CPU: `thread_info.cpu` (5.16+ with THREAD_INFO_IN_TASK),
    /// else `task_struct.cpu`.
    pub cpu: u32,
}

/// Resolves `task_struct` offsets from kernel BTF and checks that the BTF
/// tracepoints pass the arguments the programs read.
pub fn task_offsets(btf: &Btf) -> Result<TaskOffsets> {
    let int4 = |member: &str| -> Result<u32> {
        match btf.member("task_struct", member)? {
            (off, 4) => Ok(off),
            (_, size) => Err(Error::BtfMissing {
                what: format!("4-byte task_struct.{member} (it has {size} bytes)"),
            }),
        }
    };
    let cpu = match (
        btf.member("task_struct", "thread_info"),
        btf.member("thread_info", "cpu"),
    ) {
        (Ok((ti, _)), Ok((off, 4))) => ti + off,
        _ => int4("cpu")?,
    };
    let offsets = TaskOffsets {
        pid: int4("pid")?,
        tgid: int4("tgid")?,
        cpu,
    };
    let task = TypeShape::Pointer {
        to: Some("task_struct".into()),
    };
    let switch = btf.tracepoint_args("sched_switch")?;
    // (bool preempt, task_struct *prev, task_struct *next, unsigned int prev_state): 5.18+
    let ok = switch.len() >= 4
        && switch[1] == task
        && switch[2] == task
        && matches!(switch[3], TypeShape::Int { .. });
    if !ok {
        return Err(Error::BadTracepointArgs {
            tracepoint: "sched:sched_switch".into(),
            reason: format!(
                "expected (preempt, prev, next, prev_state) (kernel 5.18 or later), found {switch:?}"
            ),
        });
    }
    for tp in ["sched_wakeup", "sched_wakeup_new"] {
        let args = btf.tracepoint_args(tp)?;
        if args.first() != Some(&task) {
            return Err(Error::BadTracepointArgs {
                tracepoint: format!("sched:{tp}"),
                reason: format!("expected (task_struct *p), found {args:?}"),
            });
        }
    }
    let migrate = btf.tracepoint_args("sched_migrate_task")?;
    if migrate.len() != 2 || migrate[0] != task || !matches!(migrate[1], TypeShape::Int { .. }) {
        return Err(Error::BadTracepointArgs {
            tracepoint: "sched:sched_migrate_task".into(),
            reason: format!("expected (task_struct *p, int dest_cpu), found {migrate:?}"),
        });
    }
    Ok(offsets)
}

/// Kernel struct offsets `writeback_dirty_folio` reads: the folio's size
/// and the device of its file's filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct FolioOffsets {
    pub flags: u32,
    pub pg_head: u32,
    pub nr_pages: u32,
    pub mapping_host: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
}

pub fn folio_offsets(btf: &Btf) -> Result<FolioOffsets> {
    let sized = |st: &str, member: &str, want: u32| -> Result<u32> {
        match btf.member(st, member)? {
            (off, size) if size == want => Ok(off),
            (_, size) => Err(Error::BtfMissing {
                what: format!("{want}-byte {st}.{member} (it has {size} bytes)"),
            }),
        }
    };
    // 6.18 calls it `_nr_pages`, 6.1 `_folio_nr_pages`.
    let nr_pages =
        sized("folio", "_nr_pages", 4).or_else(|_| sized("folio", "_folio_nr_pages", 4))?;
    let pg_head = btf.enum_value("pageflags", "PG_head")?;
    let args = btf.tracepoint_args("writeback_dirty_folio")?;
    let ptr = |to: &str| TypeShape::Pointer {
        to: Some(to.into()),
    };
    if args != [ptr("folio"), ptr("address_space")] {
        return Err(Error::BadTracepointArgs {
            tracepoint: "writeback:writeback_dirty_folio".into(),
            reason: format!("expected (folio *, address_space *), found {args:?}"),
        });
    }
    Ok(FolioOffsets {
        flags: sized("folio", "flags", 8)?,
        pg_head: u32::try_from(pg_head).map_err(|_| Error::BtfMissing {
            what: format!("a small PG_head bit (found {pg_head})"),
        })?,
        nr_pages,
        mapping_host: sized("address_space", "host", 8)?,
        inode_sb: sized("inode", "i_sb", 8)?,
        sb_dev: sized("super_block", "s_dev", 4)?,
    })
}

/// Where `mm_page_alloc` finds a page's node: `page->flags` at `flags`,
/// node = (flags >> shift) & mask.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageNodeBits {
    pub flags: u32,
    pub shift: u32,
    pub mask: u64,
}

/// The node bits of `page->flags` on x86-64 with SPARSEMEM_VMEMMAP (no
/// section bits): the top NODES_SHIFT bits, where MAX_NUMNODES =
/// 2^NODES_SHIFT is read from BTF as `struct zonelist`'s
/// `_zonerefs[MAX_NUMNODES * MAX_NR_ZONES + 1]`.
pub fn page_node_bits(btf: &Btf) -> Result<PageNodeBits> {
    let args = btf.tracepoint_args("mm_page_alloc")?;
    let page = TypeShape::Pointer {
        to: Some("page".into()),
    };
    if args.first() != Some(&page) || args.get(1) != Some(&TypeShape::Int { size: 4 }) {
        return Err(Error::BadTracepointArgs {
            tracepoint: "kmem:mm_page_alloc".into(),
            reason: format!("expected (page *, unsigned int order, ...), found {args:?}"),
        });
    }
    let refs = u64::from(btf.array_len("zonelist", "_zonerefs")?);
    let zones = btf.enum_value("zone_type", "__MAX_NR_ZONES")?;
    let zones = u64::try_from(zones).ok().filter(|&z| z > 0);
    let nodes = zones
        .map(|z| (refs.saturating_sub(1)) / z)
        .filter(|n| n.is_power_of_two());
    let Some(nodes) = nodes else {
        return Err(Error::BtfMissing {
            what: format!("MAX_NUMNODES as a power of two (zonelist holds {refs} zonerefs)"),
        });
    };
    let bits = nodes.trailing_zeros();
    let (flags, size) = btf.member("page", "flags")?;
    if size != 8 {
        return Err(Error::BtfMissing {
            what: format!("8-byte page.flags (it has {size} bytes)"),
        });
    }
    Ok(PageNodeBits {
        flags,
        shift: 64 - bits,
        mask: nodes - 1,
    })
}

/// Offsets (succeeded, reason) in the `mm_migrate_pages` record.
pub fn migrate_pages_offsets(tracefs: &Path) -> Result<(u32, u32)> {
    let f = Format::read(tracefs, "migrate", "mm_migrate_pages")?;
    Ok((f.int_field("succeeded", 8)?, f.int_field("reason", 4)?))
}

/// Offsets in the `contention_begin` and `contention_end` records.
#[derive(Debug, Clone, Copy, Default)]
pub struct LockOffsets {
    pub begin_lock: u32,
    pub begin_flags: u32,
    pub end_lock: u32,
}

pub fn lock_offsets(tracefs: &Path) -> Result<LockOffsets> {
    let begin = Format::read(tracefs, "lock", "contention_begin")?;
    let end = Format::read(tracefs, "lock", "contention_end")?;
    Ok(LockOffsets {
        begin_lock: begin.int_field("lock_addr", 8)?,
        begin_flags: begin.int_field("flags", 4)?,
        end_lock: end.int_field("lock_addr", 8)?,
    })
}

/// `balance_dirty_pages.pause` (jiffies).
pub fn balance_pause_offset(tracefs: &Path) -> Result<u32> {
    Format::read(tracefs, "writeback", "balance_dirty_pages")?.int_field("pause", 8)
}

/// Checks that `page_fault_user` passes (address, regs, error_code), the
/// third of which the program reads.
pub fn fault_args(btf: &Btf) -> Result<()> {
    let args = btf.tracepoint_args("page_fault_user")?;
    let ok = args.len() == 3
        && args[0] == TypeShape::Int { size: 8 }
        && args[1]
            == TypeShape::Pointer {
                to: Some("pt_regs".into()),
            }
        && args[2] == TypeShape::Int { size: 8 };
    if ok {
        Ok(())
    } else {
        Err(Error::BadTracepointArgs {
            tracepoint: "exceptions:page_fault_user".into(),
            reason: format!("expected (address, pt_regs *, error_code), found {args:?}"),
        })
    }
}

/// Fails with a clear message when the process cannot load eBPF programs.
pub fn require_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io(Path::new("/proc/self/status"), e))?;
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    missing_capabilities(caps).map_or(Ok(()), |missing| Err(Error::Privileges { missing }))
}

/// Which of the needed capabilities an effective set lacks, if any.
/// CAP_SYS_ADMIN covers both on kernels before 5.8 and still works after.
pub fn missing_capabilities(cap_eff: u64) -> Option<String> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let has = |c: u32| cap_eff & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return None;
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
    (!missing.is_empty()).then(|| missing.join(" and "))
}

impl Probes {
    /// Runs of `program` the kernel skipped (`recursion_misses` in the
    /// program's fdinfo; aya 0.14 does not expose it). `None` when not
    /// loaded or the kernel does not report it.
    pub fn missed(&self, program: &str) -> Option<u64> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let fd = self.ebpf.program(program)?.fd().ok()?.as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        fdinfo_field(&info, "recursion_misses")
    }

    pub fn load(opts: &LoadOptions) -> Result<Self> {
        check_object(PROBES_OBJECT)?;
        require_privileges()?;
        let topology = Topology::read(Path::new(SYSFS_SYSTEM))?;

        let btf_path = Path::new(VMLINUX_BTF);
        let btf = if btf_path.exists() {
            Btf::from_file(btf_path)
        } else {
            Err(Error::NoKernelBtf {
                path: btf_path.to_path_buf(),
            })
        };
        let task = with_btf(&btf, task_offsets);
        let folio = with_btf(&btf, folio_offsets);
        let tracefs = tracefs::mount_point().ok_or(Error::NoTracefs);
        let locks = tracefs
            .as_ref()
            .map_err(|_| Error::NoTracefs)
            .and_then(|t| lock_offsets(t));
        let balance = tracefs
            .as_ref()
            .map_err(|_| Error::NoTracefs)
            .and_then(|t| balance_pause_offset(t));
        let fault = with_btf(&btf, fault_args);
        let page_alloc = with_btf(&btf, page_node_bits).and_then(|b| match opts.page_alloc {
            PageAlloc::Never => Err(Error::PageAllocOff),
            PageAlloc::Auto if topology.nodes <= 1 => Err(Error::OneNode),
            _ => Ok(b),
        });
        let migrate_pages = tracefs
            .as_ref()
            .map_err(|_| Error::NoTracefs)
            .and_then(|t| migrate_pages_offsets(t));
        let pa = page_alloc.as_ref().ok().copied().unwrap_or_default();
        // Possible node ids, for the kernel's sanity check of the node bits.
        let nr_nodes = std::fs::read_to_string("/sys/devices/system/node/possible")
            .ok()
            .and_then(|t| crate::host::topology::parse_cpu_list(t.trim()))
            .and_then(|ids| ids.into_iter().max())
            .map_or(pa.mask as u32 + 1, |m| m + 1);
        let (mp_succeeded, mp_reason) = migrate_pages.as_ref().ok().copied().unwrap_or((0, 0));
        debug!(
            ?task,
            ?locks,
            ?folio,
            ?balance,
            ?fault,
            "resolved kernel offsets"
        );
        let fo = folio.as_ref().ok().copied().unwrap_or_default();
        let balance_pause = balance.as_ref().ok().copied().unwrap_or(0);
        let l = locks.as_ref().ok().copied().unwrap_or_default();
        let windows_per_sec = (1_000_000_000 / lock::STACK_WINDOW_NS) as u32;
        let spin_stacks_per_window = opts.spin_stacks_per_sec.div_ceil(windows_per_sec);

        let t = task.as_ref().ok().copied();
        let slots = opts.task_slots.max(2).next_power_of_two();
        let mask = slots - 1;
        let workloads = opts.max_workloads.max(WORKLOAD_PROBES).next_power_of_two();
        let workloads_mask = workloads - 1;
        let (pid_off, tgid_off, cpu_off) = (
            t.map_or(0, |t| t.pid),
            t.map_or(0, |t| t.tgid),
            t.map_or(0, |t| t.cpu),
        );
        let filter_tgid = opts.pid.unwrap_or(0);
        let filter_cgroup = opts.cgroup_id.unwrap_or(0);
        let ncpus = topology.cpus.len() as u32;
        let mut ebpf = EbpfLoader::new()
            .override_global("TASK_PID_OFFSET", &pid_off, true)
            .override_global("TASK_TGID_OFFSET", &tgid_off, true)
            .override_global("TASK_CPU_OFFSET", &cpu_off, true)
            .override_global("TASK_SLOTS_MASK", &mask, true)
            .override_global("WORKLOADS_MASK", &workloads_mask, true)
            .override_global("FILTER_TGID", &filter_tgid, true)
            .override_global("FILTER_CGROUP", &filter_cgroup, true)
            .override_global("LOCK_BEGIN_ADDR_OFFSET", &l.begin_lock, true)
            .override_global("LOCK_BEGIN_FLAGS_OFFSET", &l.begin_flags, true)
            .override_global("LOCK_END_ADDR_OFFSET", &l.end_lock, true)
            .override_global("LOCK_TYPE_MASK", &opts.lock_types, true)
            .override_global("SPIN_STACKS_PER_WINDOW", &spin_stacks_per_window, true)
            .override_global("FOLIO_FLAGS_OFFSET", &fo.flags, true)
            .override_global("FOLIO_PG_HEAD", &fo.pg_head, true)
            .override_global("FOLIO_NR_PAGES_OFFSET", &fo.nr_pages, true)
            .override_global("MAPPING_HOST_OFFSET", &fo.mapping_host, true)
            .override_global("INODE_SB_OFFSET", &fo.inode_sb, true)
            .override_global("SB_DEV_OFFSET", &fo.sb_dev, true)
            .override_global("BALANCE_PAUSE_OFFSET", &balance_pause, true)
            .override_global("NR_NODES", &nr_nodes, true)
            .override_global("PAGE_FLAGS_OFFSET", &pa.flags, true)
            .override_global("NODE_PGSHIFT", &pa.shift, true)
            .override_global("NODE_MASK", &pa.mask, true)
            .override_global("MIGRATE_SUCCEEDED_OFFSET", &mp_succeeded, true)
            .override_global("MIGRATE_REASON_OFFSET", &mp_reason, true)
            .map_max_entries("LOCK_TASK_SLOTS", slots)
            .map_max_entries("TASK_SLOTS", slots)
            .map_max_entries("CPU_TOPO", ncpus)
            .map_max_entries("SCHED_WORKLOADS", workloads)
            .map_max_entries("DIRTY_WORKLOADS", workloads)
            .map_max_entries("DIRTY_FILES", 2 * workloads)
            .map_max_entries("NUMA_WORKLOADS", workloads)
            .load(PROBES_OBJECT)
            .map_err(|e| Error::Load(Box::new(e)))?;

        let mut topo: Array<_, CpuTopo> =
            Array::try_from(ebpf.map_mut("CPU_TOPO").ok_or(Error::Map {
                name: "CPU_TOPO",
                source: aya::maps::MapError::InvalidName {
                    name: "CPU_TOPO".into(),
                },
            })?)
            .map_err(|source| Error::Map {
                name: "CPU_TOPO",
                source,
            })?;
        for (cpu, t) in topology.cpus.iter().enumerate() {
            topo.set(cpu as u32, t, 0).map_err(|source| Error::Map {
                name: "CPU_TOPO",
                source,
            })?;
        }

        let kernel_btf = AyaBtf::from_sys_fs().ok();
        let chosen_off = matches!(page_alloc, Err(Error::OneNode | Error::PageAllocOff));
        let mut status = Vec::new();
        for spec in PROGRAMS {
            let prerequisite = match spec.needs {
                Needs::TaskBtf => task.as_ref().err().map(ToString::to_string),
                Needs::LockFormat => locks.as_ref().err().map(ToString::to_string),
                Needs::FolioBtf => folio.as_ref().err().map(ToString::to_string),
                Needs::BalanceFormat => balance.as_ref().err().map(ToString::to_string),
                Needs::FaultBtf => fault.as_ref().err().map(ToString::to_string),
                Needs::PageAlloc => page_alloc.as_ref().err().map(ToString::to_string),
                Needs::Nothing => None,
                Needs::MigratePagesFormat => migrate_pages.as_ref().err().map(ToString::to_string),
            };
            let outcome = match prerequisite {
                Some(reason) => Err(reason),
                None => load_program(&mut ebpf, spec, kernel_btf.as_ref()),
            };
            // Detached by design (one node, or asked to): not a warning.
            let enabled = !(spec.needs == Needs::PageAlloc && chosen_off);
            match &outcome {
                Ok(()) => {
                    info!(probe = spec.program, hook = %spec.hook.tracepoint(), "probe ready")
                }
                Err(reason) if !enabled => info!(probe = spec.program, %reason, "probe disabled"),
                Err(reason) => warn!(probe = spec.program, %reason, "probe disabled"),
            }
            status.push(ProbeStatus {
                probe: spec.program.to_string(),
                tracepoint: spec.hook.tracepoint(),
                attach_type: spec.hook.attach_type().to_string(),
                attached: outcome.is_ok(),
                enabled,
                reason: outcome.err(),
                events: 0,
                errors: 0,
                missed: 0,
            });
        }
        if !status.iter().any(|s| s.attached) {
            let reasons = status
                .iter()
                .map(|s| format!("{}: {}", s.probe, s.reason.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::NothingAttached { reasons });
        }
        Ok(Self {
            ebpf,
            status,
            topology,
            migrate_reasons: with_btf(&btf, migrate_reasons).unwrap_or_default(),
        })
    }
}

/// A load failure in a line or two: the verifier's whole log goes to the
/// debug log, its verdict (the last lines before the statistics) stays.
fn load_error(e: &str) -> String {
    let Some((head, log)) = e.split_once("Verifier output:") else {
        return format!("verifier/load: {e}");
    };
    debug!(verifier_log = log, "program rejected");
    let verdict: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != ")")
        .take_while(|l| !l.starts_with("verification time"))
        .collect();
    let tail = verdict[verdict.len().saturating_sub(2)..].join(" / ");
    format!("verifier/load: {} verifier: {tail}", head.trim())
}

/// Offsets from kernel BTF, or why there is no BTF to read them from.
fn with_btf<T>(btf: &Result<Btf>, f: impl FnOnce(&Btf) -> Result<T>) -> Result<T> {
    match btf {
        Ok(b) => f(b),
        Err(e) => Err(Error::BtfUnusable {
            reason: e.to_string(),
        }),
    }
}

fn load_program(
    ebpf: &mut Ebpf,
    spec: ProgramSpec,
    kernel_btf: Option<&AyaBtf>,
) -> std::result::Result<(), String> {
    let prog = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| format!("program {} missing from the object", spec.program))?;
    match spec.hook {
        Hook::BtfTracepoint(_, tp) => {
            let btf = kernel_btf.ok_or("kernel BTF unavailable")?;
            let p: &mut BtfTracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            p.load(tp, btf).map_err(|e| load_error(&format!("{e:#}")))?;
            p.attach().map_err(|e| format!("attach: {e:#}"))?;
        }
        Hook::Tracepoint(cat, name) => {
            let p: &mut TracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            p.load().map_err(|e| load_error(&format!("{e:#}")))?;
            p.attach(cat, name).map_err(|e| format!("attach: {e:#}"))?;
        }
    }
    Ok(())
}

/// A `name:\tvalue` line of a /proc/PID/fdinfo file.
fn fdinfo_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_fields_are_parsed() {
        let info = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nrun_cnt:\t0\nrecursion_misses:\t163\nverified_insns:\t60\n";
        assert_eq!(fdinfo_field(info, "recursion_misses"), Some(163));
        assert_eq!(fdinfo_field(info, "run_cnt"), Some(0));
        assert_eq!(fdinfo_field(info, "recursion"), None);
        assert_eq!(fdinfo_field("", "recursion_misses"), None);
    }

    #[test]
    fn the_embedded_object_keeps_the_contract() {
        check_object(PROBES_OBJECT).unwrap();
    }

    #[test]
    fn contract_violations_are_reported() {
        assert!(matches!(
            check_object(b"not elf"),
            Err(Error::Contract { .. })
        ));
        // The same object with one map's value size changed.
        let mut data = PROBES_OBJECT.to_vec();
        let needle = (size_of::<SchedStats>() as u32).to_le_bytes();
        let file = object::File::parse(PROBES_OBJECT).unwrap();
        use object::{Object, ObjectSection, ObjectSymbol};
        let maps = file.section_by_name("maps").unwrap();
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok("SCHED_WORKLOADS"))
            .unwrap();
        let at = maps.file_range().unwrap().0 as usize + sym.address() as usize + 8;
        assert_eq!(data[at..at + 4], needle);
        data[at] ^= 8;
        let err = check_object(&data).unwrap_err().to_string();
        assert!(err.contains("SCHED_WORKLOADS"), "{err}");
    }

    #[test]
    fn verifier_rejections_are_cut_to_their_verdict() {
        let e = "the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier output: 0: R1=ctx() R10=fp0
75: (61) r1 = *(u32 *)(r1 +0)         ; R1=0
76: (0f) r6 += r1
R6 pointer arithmetic on trusted_ptr_or_null_ prohibited, null-check it first
verification time 550 usec
stack depth 16
processed 76 insns (limit 1000000) max_states_per_insn 0 total_states 6 peak_states 6 mark_read 0
)";
        assert_eq!(
            load_error(e),
            "verifier/load: the BPF_PROG_LOAD syscall returned Permission denied (os error 13). \
             verifier: 76: (0f) r6 += r1 / R6 pointer arithmetic on trusted_ptr_or_null_ prohibited, \
             null-check it first"
        );
        assert_eq!(load_error("no such file"), "verifier/load: no such file");
    }

    #[test]
    fn capability_sets() {
        assert_eq!(missing_capabilities(u64::MAX), None);
        assert_eq!(missing_capabilities(1 << 21), None);
        assert_eq!(missing_capabilities((1 << 38) | (1 << 39)), None);
        assert_eq!(
            missing_capabilities(1 << 39).as_deref(),
            Some("CAP_PERFMON")
        );
        assert_eq!(
            missing_capabilities(0).as_deref(),
            Some("CAP_BPF and CAP_PERFMON")
        );
    }

    #[test]
    fn this_kernel_has_the_sched_layout_the_programs_expect() {
        let btf = Btf::from_file(Path::new(VMLINUX_BTF)).unwrap();
        let t = task_offsets(&btf).unwrap();
        assert_eq!(t.tgid, t.pid + 4);
        let tracefs =
            tracefs::mount_point().expect("tracefs mounted (cargo xtask setup mounts it)");
        // 6.18: thread_info (with cpu) is the first member of task_struct.
        assert!(t.cpu < 64, "thread_info.cpu at {}", t.cpu);
        let l = lock_offsets(&tracefs).unwrap();
        assert!(l.begin_flags > l.begin_lock);
        let f = folio_offsets(&btf).unwrap();
        assert_eq!(f.flags, 0, "folio.flags is the first word of struct page");
        assert!(
            f.nr_pages > 64 && f.nr_pages < 128,
            "_nr_pages in the second struct page"
        );
        assert!(balance_pause_offset(&tracefs).unwrap() >= 8);
        fault_args(&btf).unwrap();
        let bits = page_node_bits(&btf).unwrap();
        // The top NODES_SHIFT bits of the first word (6.18 and 6.1 here:
        // NODES_SHIFT 10, so (0, 54, 1023)); the 2-node guest checks the
        // node ids themselves.
        assert_eq!(bits.flags, 0);
        assert!((bits.mask + 1).is_power_of_two());
        assert_eq!(bits.shift + (bits.mask + 1).trailing_zeros(), 64);
        let (succeeded, reason) = migrate_pages_offsets(&tracefs).unwrap();
        assert!(reason > succeeded);
    }
}
