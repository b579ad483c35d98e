//! Loading the eBPF object: resolve every kernel-specific offset first
//! (tracefs formats, BTF), hand them over as load-time constants, then load
//! and attach each program on its own so that one that cannot load is
//! reported and the others go on.

pub mod contract;
pub mod lock_types;
pub mod offsets;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::{
    maps::Array,
    programs::{BtfTracePoint, FEntry, FExit, Program, TracePoint},
    Btf as AyaBtf, Ebpf, EbpfLoader, Endianness,
};
use hostprobe_common::{
    lock,
    sched::{CpuTopo, GANG_SAMPLE_PERIOD_NS, NEIGHBOURS_PER_WORKLOAD},
    DEFAULT_MAX_WORKLOADS, DEFAULT_TASK_SLOTS, WORKLOAD_PROBES,
};
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::host::btf::{Btf, VMLINUX_BTF};
use crate::host::privileges::require_privileges;
use crate::host::topology::{Topology, SYSFS_SYSTEM};
use crate::host::{proc, tracefs};
use contract::check_object;
use offsets::{
    balance_pause_offset, cgroup_offsets, dirty_args, fault_args, folio_offsets, lock_args,
    lock_offsets, mapping_offsets, migrate_pages_offsets, migrate_reasons, owner_offsets,
    page_node_bits, sched_args, task_offsets, ulock_offsets, CgroupOffsets, OwnerOffsets,
    PrevState,
};
use spec::{Hook, Needs, ProgramSpec, Way, PROGRAMS};

/// The futex sleeps `sched_switch` sees (user-space lock waits): a probe
/// in `check` and the self-metrics, without a program of its own.
pub const ULOCK_PROBE: &str = "ulock";

/// This architecture's syscall numbers of `futex`, `futex_waitv` (5.16+)
/// and `futex_wait` (6.7+), and whether `sched_switch` searches a sleeping
/// thread's stack for the caller of a library without frame pointers (it
/// knows x86-64's call encodings only).
#[cfg(target_arch = "x86_64")]
const SYSCALLS: (u32, u32, u32, u32) = (202, 449, 455, 1);
#[cfg(target_arch = "aarch64")]
const SYSCALLS: (u32, u32, u32, u32) = (98, 449, 455, 0);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYSCALLS: (u32, u32, u32, u32) = (u32::MAX, u32::MAX, u32::MAX, 0);

/// The compiled kernel programs, built by `build.rs` through aya-build.
pub(crate) static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hostprobe-probes"));

/// One kernel program and whether it runs.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeStatus {
    /// Program name, also the `probe` label of the self-metrics.
    pub probe: String,
    /// `category:name` of the tracepoint it hooks.
    pub tracepoint: String,
    /// `tp_btf` or `tracepoint`.
    pub attach_type: String,
    pub attached: bool,
    /// False when it is off by design (`mm_page_alloc` on one NUMA node or
    /// with `--numa-page-alloc never`), not because it failed.
    pub enabled: bool,
    /// Why it is not attached.
    pub reason: Option<String>,
    /// Times it ran.
    pub events: u64,
    /// Events it could not handle (e.g. an out-of-range CPU).
    pub errors: u64,
    /// Runs the kernel skipped (recursion protection: the program, or for a
    /// classic tracepoint any tracing program, was already running on that
    /// CPU); their events are lost.
    pub missed: u64,
}

impl ProbeStatus {
    /// A probe that did not (or could not) attach, and why.
    pub fn unavailable(spec: &ProgramSpec, reason: &str) -> Self {
        Self {
            probe: spec.probe.to_string(),
            tracepoint: spec.first().hook.tracepoint(),
            attach_type: spec.first().hook.attach_type().to_string(),
            attached: false,
            enabled: true,
            reason: Some(reason.to_string()),
            events: 0,
            errors: 0,
            missed: 0,
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
    /// The kernel's locking code (`__lock_text`, `__sched_text` ranges from
    /// kallsyms), which lock callers are found outside of; zeros when
    /// kallsyms hides addresses (callers are then unknown).
    pub locking_text: [(u64, u64); 2],
    /// Kernel BTF from this file (`--btf`) instead of sysfs.
    pub btf: Option<PathBuf>,
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
            locking_text: [(0, 0); 2],
            btf: None,
        }
    }
}

/// The loaded object; dropping it detaches and unloads every program.
pub struct Probes {
    pub ebpf: Ebpf,
    pub status: Vec<ProbeStatus>,
    /// The kernel program each attached probe runs (a probe may have
    /// several ways to attach).
    programs: BTreeMap<&'static str, &'static str>,
    pub topology: Topology,
    /// Names of `enum migrate_reason` values (`numa_misplaced`, ...).
    pub migrate_reasons: Vec<String>,
}

impl Probes {
    /// Runs of `probe` the kernel skipped (`recursion_misses` in its
    /// program's fdinfo; aya 0.14 does not expose it). `None` when not
    /// attached or the kernel does not report it.
    pub fn missed(&self, probe: &str) -> Option<u64> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let program = self.programs.get(probe)?;
        let fd = self.ebpf.program(program)?.fd().ok()?.as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        proc::fdinfo_field(&info, "recursion_misses")
    }

    pub fn load(opts: &LoadOptions) -> Result<Self> {
        check_object(PROBES_OBJECT)?;
        require_privileges()?;
        let topology = Topology::read(Path::new(SYSFS_SYSTEM))?;

        let btf = kernel_btf(opts.btf.as_deref())?;
        let task = with_btf(&btf, task_offsets);
        // Each scheduler program's own prototype (for sched_switch also
        // where the outgoing task's state is), checked once.
        let sched: BTreeMap<&str, Result<Option<PrevState>>> = PROGRAMS
            .iter()
            .flat_map(|s| s.ways)
            .filter(|w| w.needs == Needs::SchedBtf)
            .map(|w| {
                (
                    w.hook.name(),
                    with_btf(&btf, |b| sched_args(b, w.hook.name())),
                )
            })
            .collect();
        let prev_state = sched.get("sched_switch");
        let cgroup_links = with_btf(&btf, cgroup_offsets);
        let owners = btf.as_ref().ok().map(owner_offsets);
        let ulock = with_btf(&btf, ulock_offsets);
        let mapping = with_btf(&btf, mapping_offsets);
        let folio = with_btf(&btf, folio_offsets);
        let dirty_page = with_btf(&btf, |b| dirty_args(b, "writeback_dirty_page", "page"));
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
        let lock_btf = with_btf(&btf, lock_args);
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
            ?prev_state,
            ?cgroup_links,
            ?owners,
            ?locks,
            ?mapping,
            ?folio,
            ?balance,
            ?fault,
            "resolved kernel offsets"
        );
        let co = match &cgroup_links {
            Ok(c) => *c,
            Err(e) => {
                warn!("run-queue waits are not charged to neighbours: {e}");
                CgroupOffsets {
                    task_cgroups: u32::MAX,
                    ..Default::default()
                }
            }
        };
        let ow = owners.unwrap_or(OwnerOffsets {
            mutex_owner: u32::MAX,
            rwsem_owner: u32::MAX,
            task_state: u32::MAX,
            task_on_cpu: u32::MAX,
        });
        let fo = folio.as_ref().ok().copied().unwrap_or_default();
        let mo = mapping.as_ref().ok().copied().unwrap_or_default();
        let state_off = match prev_state {
            Some(Ok(Some(p))) => p.load_time_constant(),
            _ => PrevState::Argument.load_time_constant(),
        };
        let balance_pause = balance.as_ref().ok().copied().unwrap_or(0);
        let l = locks.as_ref().ok().copied().unwrap_or_default();
        let windows_per_sec = (1_000_000_000 / lock::STACK_WINDOW_NS) as u32;
        let spin_stacks_per_window = opts.spin_stacks_per_sec.div_ceil(windows_per_sec);

        let t = task.as_ref().ok().copied();
        let slots = opts.task_slots.max(2).next_power_of_two();
        let mask = slots - 1;
        let workloads = opts.max_workloads.max(WORKLOAD_PROBES).next_power_of_two();
        let workloads_mask = workloads - 1;
        // A gang per process: fewer than threads.
        let gang_slots = (slots / 4).max(1024);
        let gang_mask = gang_slots - 1;
        let neighbour_pairs = workloads * NEIGHBOURS_PER_WORKLOAD;
        let neighbours_mask = neighbour_pairs - 1;
        let (pid_off, tgid_off, cpu_off, comm_off) = (
            t.map_or(0, |t| t.pid),
            t.map_or(0, |t| t.tgid),
            t.map_or(0, |t| t.cpu),
            t.map_or(0, |t| t.comm),
        );
        let (signal_off, nr_threads_off) =
            (t.map_or(0, |t| t.signal), t.map_or(0, |t| t.nr_threads));
        let regs = ulock.as_ref().ok();
        let (regs_nr, regs_op, regs_ip, regs_sp, regs_fp) = (
            regs.map_or(u32::MAX, |r| r.nr),
            regs.map_or(0, |r| r.op),
            regs.map_or(0, |r| r.ip),
            regs.map_or(0, |r| r.sp),
            regs.map_or(0, |r| r.fp),
        );
        let (sys_futex, sys_futex_waitv, sys_futex_wait, scan_caller) = SYSCALLS;
        let filter_tgid = opts.pid.unwrap_or(0);
        let filter_cgroup = opts.cgroup_id.unwrap_or(0);
        let ncpus = topology.cpus.len() as u32;
        let mut ebpf = EbpfLoader::new()
            .override_global("TASK_PID_OFFSET", &pid_off, true)
            .override_global("TASK_TGID_OFFSET", &tgid_off, true)
            .override_global("TASK_CPU_OFFSET", &cpu_off, true)
            .override_global("TASK_STATE_OFFSET", &state_off, true)
            .override_global("TASK_SLOTS_MASK", &mask, true)
            .override_global("WORKLOADS_MASK", &workloads_mask, true)
            .override_global("TASK_CGROUPS_OFFSET", &co.task_cgroups, true)
            .override_global("CSS_SET_DFL_CGRP_OFFSET", &co.css_set_dfl_cgrp, true)
            .override_global("CGROUP_KN_OFFSET", &co.cgroup_kn, true)
            .override_global("KERNFS_NODE_ID_OFFSET", &co.kernfs_node_id, true)
            .override_global("NEIGHBOURS_MASK", &neighbours_mask, true)
            .override_global("GANG_SLOTS_MASK", &gang_mask, true)
            .override_global("TASK_COMM_OFFSET", &comm_off, true)
            .override_global("TASK_SIGNAL_OFFSET", &signal_off, true)
            .override_global("SIGNAL_NR_THREADS_OFFSET", &nr_threads_off, true)
            .override_global("TASK_STATE_FIELD_OFFSET", &ow.task_state, true)
            .override_global("TASK_ON_CPU_OFFSET", &ow.task_on_cpu, true)
            .override_global("MUTEX_OWNER_OFFSET", &ow.mutex_owner, true)
            .override_global("RWSEM_OWNER_OFFSET", &ow.rwsem_owner, true)
            .override_global("REGS_NR_OFFSET", &regs_nr, true)
            .override_global("REGS_OP_OFFSET", &regs_op, true)
            .override_global("REGS_IP_OFFSET", &regs_ip, true)
            .override_global("REGS_SP_OFFSET", &regs_sp, true)
            .override_global("REGS_FP_OFFSET", &regs_fp, true)
            .override_global("SYS_FUTEX", &sys_futex, true)
            .override_global("SYS_FUTEX_WAITV", &sys_futex_waitv, true)
            .override_global("SYS_FUTEX_WAIT", &sys_futex_wait, true)
            .override_global("SCAN_CALLER", &scan_caller, true)
            .override_global("FILTER_TGID", &filter_tgid, true)
            .override_global("FILTER_CGROUP", &filter_cgroup, true)
            .override_global("LOCK_BEGIN_ADDR_OFFSET", &l.begin_lock, true)
            .override_global("LOCK_BEGIN_FLAGS_OFFSET", &l.begin_flags, true)
            .override_global("LOCK_END_ADDR_OFFSET", &l.end_lock, true)
            .override_global("LOCK_TYPE_MASK", &opts.lock_types, true)
            .override_global("LOCK_TEXT_START", &opts.locking_text[0].0, true)
            .override_global("LOCK_TEXT_END", &opts.locking_text[0].1, true)
            .override_global("SCHED_TEXT_START", &opts.locking_text[1].0, true)
            .override_global("SCHED_TEXT_END", &opts.locking_text[1].1, true)
            .override_global("SPIN_STACKS_PER_WINDOW", &spin_stacks_per_window, true)
            .override_global("FOLIO_FLAGS_OFFSET", &fo.flags, true)
            .override_global("FOLIO_PG_HEAD", &fo.pg_head, true)
            .override_global("FOLIO_NR_PAGES_OFFSET", &fo.nr_pages, true)
            .override_global("MAPPING_HOST_OFFSET", &mo.mapping_host, true)
            .override_global("INODE_SB_OFFSET", &mo.inode_sb, true)
            .override_global("SB_DEV_OFFSET", &mo.sb_dev, true)
            .override_global("BALANCE_PAUSE_OFFSET", &balance_pause, true)
            .override_global("NR_NODES", &nr_nodes, true)
            .override_global("PAGE_FLAGS_OFFSET", &pa.flags, true)
            .override_global("NODE_PGSHIFT", &pa.shift, true)
            .override_global("NODE_MASK", &pa.mask, true)
            .override_global("MIGRATE_SUCCEEDED_OFFSET", &mp_succeeded, true)
            .override_global("MIGRATE_REASON_OFFSET", &mp_reason, true)
            .map_max_entries("LOCK_TASK_SLOTS", slots)
            .map_max_entries("TASK_SLOTS", slots)
            .map_max_entries("GANG_SLOTS", gang_slots)
            .map_max_entries("CPU_TOPO", ncpus)
            .map_max_entries("SCHED_WORKLOADS", workloads)
            .map_max_entries("SCHED_NEIGHBOURS", 2 * neighbour_pairs)
            .map_max_entries("DIRTY_WORKLOADS", workloads)
            .map_max_entries("DIRTY_FILES", 2 * workloads)
            .map_max_entries("NUMA_WORKLOADS", workloads)
            // Every id the three per-CPU workload tables (sched, dirty,
            // NUMA) can hold may be dead at once.
            .map_max_entries("DEAD_CGROUPS", 3 * workloads * ncpus.max(1))
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

        // aya's parser for attaching BTF tracepoints, from the bytes already
        // read (EbpfLoader parsed its own copy; Rust programs carry no CO-RE
        // relocations for it to apply).
        let kernel_btf = btf
            .as_ref()
            .ok()
            .and_then(|b| AyaBtf::parse(b.data(), Endianness::default()).ok());
        let chosen_off = matches!(page_alloc, Err(Error::OneNode | Error::PageAllocOff));
        let mut status = Vec::new();
        let mut programs = BTreeMap::new();
        for spec in PROGRAMS {
            let mut failures = Vec::new();
            let mut attached = None;
            for way in spec.ways {
                let prerequisite = match way.needs {
                    Needs::SchedBtf => (task.as_ref().err())
                        .or_else(|| sched.get(way.hook.name()).and_then(|r| r.as_ref().err()))
                        .map(ToString::to_string),
                    Needs::LockBtf => lock_btf.as_ref().err().map(ToString::to_string),
                    Needs::LockFormat => locks.as_ref().err().map(ToString::to_string),
                    Needs::FolioBtf => (mapping.as_ref().err())
                        .or(folio.as_ref().err())
                        .map(ToString::to_string),
                    Needs::PageBtf => (mapping.as_ref().err())
                        .or(dirty_page.as_ref().err())
                        .map(ToString::to_string),
                    Needs::BalanceFormat => balance.as_ref().err().map(ToString::to_string),
                    Needs::FaultBtf => fault.as_ref().err().map(ToString::to_string),
                    Needs::PageAlloc => page_alloc.as_ref().err().map(ToString::to_string),
                    Needs::Nothing => None,
                    Needs::KernelBtf => btf.as_ref().err().map(ToString::to_string),
                    Needs::MigratePagesFormat => {
                        migrate_pages.as_ref().err().map(ToString::to_string)
                    }
                    Needs::SchedState => task.as_ref().err().map(ToString::to_string),
                };
                // A classic tracepoint is found (its id) through tracefs.
                let prerequisite = prerequisite.or_else(|| match (way.hook, &tracefs) {
                    (Hook::Tracepoint(..), Err(e)) => Some(e.to_string()),
                    _ => None,
                });
                let outcome = match prerequisite {
                    Some(reason) => Err(reason),
                    None => load_program(&mut ebpf, way, kernel_btf.as_ref()),
                };
                match outcome {
                    Ok(()) => {
                        attached = Some(way);
                        break;
                    }
                    Err(reason) => failures.push((way, reason)),
                }
            }
            // Detached by design (one node, or asked to): not a warning.
            let enabled = !(spec.ways.iter().any(|w| w.needs == Needs::PageAlloc) && chosen_off);
            let reason = (attached.is_none()).then(|| match failures.as_slice() {
                [(_, only)] => only.clone(),
                all => all
                    .iter()
                    .map(|(w, r)| format!("{}: {r}", w.hook.attach_type()))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
            let shown = attached.unwrap_or(spec.first());
            match &reason {
                None => {
                    if !failures.is_empty() {
                        let why = failures
                            .iter()
                            .map(|(w, r)| format!("{}: {r}", w.hook.attach_type()))
                            .collect::<Vec<_>>()
                            .join("; ");
                        info!(probe = spec.probe, %why, "preferred way unavailable");
                    }
                    info!(probe = spec.probe, hook = %shown.hook.tracepoint(), attach = shown.hook.attach_type(), "probe ready");
                    programs.insert(spec.probe, shown.program);
                }
                Some(reason) if !enabled => info!(probe = spec.probe, %reason, "probe disabled"),
                Some(reason) => warn!(probe = spec.probe, %reason, "probe disabled"),
            }
            status.push(ProbeStatus {
                probe: spec.probe.to_string(),
                tracepoint: shown.hook.tracepoint(),
                attach_type: shown.hook.attach_type().to_string(),
                attached: attached.is_some(),
                enabled,
                reason,
                events: 0,
                errors: 0,
                missed: 0,
            });
        }
        // User lock waits ride on sched_switch: its status, and theirs.
        let switch = status.iter().find(|s| s.probe == "sched_switch");
        let ulock_reason = match (switch, &ulock) {
            (Some(s), _) if !s.attached => Some("sched_switch is not attached".to_string()),
            (_, Err(e)) => Some(e.to_string()),
            _ => None,
        };
        match &ulock_reason {
            Some(reason) => warn!(probe = ULOCK_PROBE, %reason, "probe disabled"),
            None => info!(
                probe = ULOCK_PROBE,
                hook = "sched:sched_switch",
                "probe ready"
            ),
        }
        status.push(ProbeStatus {
            probe: ULOCK_PROBE.to_string(),
            tracepoint: "sched:sched_switch".to_string(),
            attach_type: switch
                .map_or("tp_btf", |s| s.attach_type.as_str())
                .to_string(),
            attached: ulock_reason.is_none(),
            enabled: true,
            reason: ulock_reason,
            events: 0,
            errors: 0,
            missed: 0,
        });
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
            programs,
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

/// The kernel's BTF: from `--btf` (an error if that file is unusable: the
/// user asked for it), else from sysfs (its absence disables only what
/// needs it).
pub fn kernel_btf(file: Option<&Path>) -> Result<Result<Btf>> {
    match file {
        Some(path) => Btf::from_file(path).map(Ok).map_err(|e| Error::BtfFile {
            path: path.to_path_buf(),
            reason: match e {
                Error::Btf { reason, .. } => format!("invalid BTF: {reason}"),
                Error::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            },
        }),
        None => {
            let path = Path::new(VMLINUX_BTF);
            Ok(if path.exists() {
                Btf::from_file(path)
            } else {
                Err(Error::NoKernelBtf {
                    path: path.to_path_buf(),
                })
            })
        }
    }
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
    way: &Way,
    kernel_btf: Option<&AyaBtf>,
) -> std::result::Result<(), String> {
    fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> std::result::Result<&'a mut Program, String> {
        ebpf.program_mut(name)
            .ok_or_else(|| format!("program {name} missing from the object"))
    }
    match way.hook {
        Hook::BtfTracepoint(_, tp) => {
            let btf = kernel_btf.ok_or("kernel BTF unavailable")?;
            let p: &mut BtfTracePoint = program(ebpf, way.program)?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            p.load(tp, btf).map_err(|e| load_error(&format!("{e:#}")))?;
            p.attach().map_err(|e| format!("attach: {e:#}"))?;
        }
        Hook::Tracepoint(cat, name) => {
            let p: &mut TracePoint = program(ebpf, way.program)?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            p.load().map_err(|e| load_error(&format!("{e:#}")))?;
            p.attach(cat, name).map_err(|e| format!("attach: {e:#}"))?;
        }
        Hook::Functions { exit, each } => {
            let btf = kernel_btf.ok_or("kernel BTF unavailable")?;
            let mut missing = Vec::new();
            for &(program, function) in each {
                if let Err(e) = attach_function(ebpf, program, function, exit, btf) {
                    missing.push(format!("{function}: {e}"));
                }
            }
            if missing.len() == each.len() {
                return Err(missing.join("; "));
            }
            if !missing.is_empty() {
                info!(missing = %missing.join("; "), "some lock slow paths are not hooked");
            }
        }
        Hook::CpuClock => {
            use aya::programs::perf_event::{
                PerfEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent,
            };
            let p: &mut PerfEvent = program(ebpf, way.program)?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            p.load().map_err(|e| load_error(&format!("{e:#}")))?;
            let cpus =
                aya::util::online_cpus().map_err(|(what, e)| format!("reading {what}: {e}"))?;
            for cpu in cpus {
                p.attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Period(GANG_SAMPLE_PERIOD_NS),
                    false,
                )
                .map_err(|e| format!("attach on CPU {cpu}: {e:#}"))?;
            }
        }
    }
    Ok(())
}

/// fentry (or fexit) `program` on kernel function `function`.
fn attach_function(
    ebpf: &mut Ebpf,
    program: &str,
    function: &str,
    exit: bool,
    btf: &AyaBtf,
) -> std::result::Result<(), String> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the object"))?;
    if exit {
        let p: &mut FExit = prog.try_into().map_err(|e| format!("{e}"))?;
        p.load(function, btf)
            .map_err(|e| load_error(&format!("{e:#}")))?;
        p.attach().map_err(|e| format!("attach: {e:#}"))?;
    } else {
        let p: &mut FEntry = prog.try_into().map_err(|e| format!("{e}"))?;
        p.load(function, btf)
            .map_err(|e| load_error(&format!("{e:#}")))?;
        p.attach().map_err(|e| format!("attach: {e:#}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
