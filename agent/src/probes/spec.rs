//! The programs of the embedded object: where each attaches and what it
//! needs resolved from the running kernel before it loads.

/// How a program attaches.
#[derive(Debug, Clone, Copy)]
pub enum Hook {
    /// BTF-typed tracepoint (category, name): needs kernel BTF.
    BtfTracepoint(&'static str, &'static str),
    /// Classic tracepoint: needs tracefs for its format and id.
    Tracepoint(&'static str, &'static str),
    /// fentry (fexit when `exit`) on each of these kernel functions, one
    /// program each: (program, function). Needs kernel BTF and a kernel
    /// that allows it; attached if at least one function is there.
    Functions {
        exit: bool,
        each: &'static [(&'static str, &'static str)],
    },
    /// A software `cpu-clock` perf event on every online CPU, sampling
    /// every `GANG_SAMPLE_PERIOD_NS`.
    CpuClock,
}

/// What a program needs resolved from the running kernel before it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// task_struct offsets and the program's own tracepoint prototype
    /// from BTF (for `sched_switch`, where the outgoing task's state is).
    SchedBtf,
    /// The lock:contention_begin/end BTF prototypes and the locking code's
    /// text ranges.
    LockBtf,
    /// The lock:contention_begin/end formats (the classic fallback).
    LockFormat,
    /// struct folio / address_space / inode / super_block offsets from BTF.
    FolioBtf,
    /// address_space / inode / super_block offsets and the
    /// `writeback_dirty_page` prototype (kernels before folios).
    PageBtf,
    /// The writeback:balance_dirty_pages format.
    BalanceFormat,
    /// The exceptions:page_fault_user BTF prototype (x86).
    FaultBtf,
    /// The kmem:mm_page_alloc BTF prototype and the page-flags node bits.
    PageAlloc,
    /// Nothing read from the record: the tracepoint only has to exist.
    Nothing,
    /// Kernel BTF, for fentry/fexit on kernel functions.
    KernelBtf,
    /// The migrate:mm_migrate_pages format.
    MigratePagesFormat,
    /// The `task_struct` offsets of the scheduler programs, whose state it
    /// reads.
    SchedState,
}

/// One way to attach a probe: a kernel program of the object, its hook,
/// and what it needs resolved first.
#[derive(Debug, Clone, Copy)]
pub struct Way {
    pub program: &'static str,
    pub hook: Hook,
    pub needs: Needs,
}

/// A probe (a self-metric `probe` label) and its ways to attach, best
/// first: the first that loads and attaches is used.
#[derive(Debug, Clone, Copy)]
pub struct ProgramSpec {
    pub probe: &'static str,
    pub ways: &'static [Way],
}

impl Way {
    /// Each kernel program of this way and the ELF section it must be in.
    pub fn programs(&self) -> Vec<(&'static str, String)> {
        match self.hook {
            Hook::Functions { exit, each } => each
                .iter()
                .map(|&(program, function)| {
                    let kind = if exit { "fexit" } else { "fentry" };
                    (program, format!("{kind}/{function}"))
                })
                .collect(),
            _ => vec![(self.program, self.hook.section())],
        }
    }
}

impl ProgramSpec {
    /// The preferred way, which describes the probe when none attached.
    pub fn first(&self) -> &Way {
        &self.ways[0]
    }
}

const fn way(program: &'static str, hook: Hook, needs: Needs) -> Way {
    Way {
        program,
        hook,
        needs,
    }
}

const fn spec(probe: &'static str, ways: &'static [Way]) -> ProgramSpec {
    ProgramSpec { probe, ways }
}

/// The sleeping locks' slow paths, where kernels before 5.19 (no
/// `lock:contention_*` tracepoints) let lock contention be seen.
const SLOW_PATHS_ENTER: [(&str, &str); 5] = [
    ("mutex_slowpath_enter", "__mutex_lock_slowpath"),
    (
        "mutex_killable_slowpath_enter",
        "__mutex_lock_killable_slowpath",
    ),
    (
        "mutex_interruptible_slowpath_enter",
        "__mutex_lock_interruptible_slowpath",
    ),
    ("rwsem_read_slowpath_enter", "rwsem_down_read_slowpath"),
    ("rwsem_write_slowpath_enter", "rwsem_down_write_slowpath"),
];
const SLOW_PATHS_EXIT: [(&str, &str); 5] = [
    ("mutex_slowpath_exit", "__mutex_lock_slowpath"),
    (
        "mutex_killable_slowpath_exit",
        "__mutex_lock_killable_slowpath",
    ),
    (
        "mutex_interruptible_slowpath_exit",
        "__mutex_lock_interruptible_slowpath",
    ),
    ("rwsem_read_slowpath_exit", "rwsem_down_read_slowpath"),
    ("rwsem_write_slowpath_exit", "rwsem_down_write_slowpath"),
];

/// Every probe of the object: the scheduler signal (`sched.rs`, with its
/// co-scheduling sampler), lock
/// contention (`lock.rs`), page dirtying (`dirty.rs`), NUMA (`numa.rs`).
#[rustfmt::skip]
pub const PROGRAMS: [ProgramSpec; 15] = [
    spec("sched_switch", &[way("sched_switch", Hook::BtfTracepoint("sched", "sched_switch"), Needs::SchedBtf)]),
    spec("sched_wakeup", &[way("sched_wakeup", Hook::BtfTracepoint("sched", "sched_wakeup"), Needs::SchedBtf)]),
    spec("sched_wakeup_new", &[way("sched_wakeup_new", Hook::BtfTracepoint("sched", "sched_wakeup_new"), Needs::SchedBtf)]),
    spec("sched_migrate_task", &[way("sched_migrate_task", Hook::BtfTracepoint("sched", "sched_migrate_task"), Needs::SchedBtf)]),
    spec("gang_sample", &[way("gang_sample", Hook::CpuClock, Needs::SchedState)]),
    spec("contention_begin", &[
        way("contention_begin", Hook::BtfTracepoint("lock", "contention_begin"), Needs::LockBtf),
        way("contention_begin_tp", Hook::Tracepoint("lock", "contention_begin"), Needs::LockFormat),
        way("mutex_slowpath_enter", Hook::Functions { exit: false, each: &SLOW_PATHS_ENTER }, Needs::KernelBtf),
    ]),
    spec("contention_end", &[
        way("contention_end", Hook::BtfTracepoint("lock", "contention_end"), Needs::LockBtf),
        way("contention_end_tp", Hook::Tracepoint("lock", "contention_end"), Needs::LockFormat),
        way("mutex_slowpath_exit", Hook::Functions { exit: true, each: &SLOW_PATHS_EXIT }, Needs::KernelBtf),
    ]),
    spec("writeback_dirty_folio", &[
        way("writeback_dirty_folio", Hook::BtfTracepoint("writeback", "writeback_dirty_folio"), Needs::FolioBtf),
        way("writeback_dirty_page", Hook::BtfTracepoint("writeback", "writeback_dirty_page"), Needs::PageBtf),
    ]),
    spec("balance_dirty_pages", &[way("balance_dirty_pages", Hook::Tracepoint("writeback", "balance_dirty_pages"), Needs::BalanceFormat)]),
    spec("page_fault_user", &[way("page_fault_user", Hook::BtfTracepoint("exceptions", "page_fault_user"), Needs::FaultBtf)]),
    spec("mm_page_alloc", &[way("mm_page_alloc", Hook::BtfTracepoint("kmem", "mm_page_alloc"), Needs::PageAlloc)]),
    spec("sched_move_numa", &[way("sched_move_numa", Hook::Tracepoint("sched", "sched_move_numa"), Needs::Nothing)]),
    spec("sched_swap_numa", &[way("sched_swap_numa", Hook::Tracepoint("sched", "sched_swap_numa"), Needs::Nothing)]),
    spec("sched_stick_numa", &[way("sched_stick_numa", Hook::Tracepoint("sched", "sched_stick_numa"), Needs::Nothing)]),
    spec("mm_migrate_pages", &[way("mm_migrate_pages", Hook::Tracepoint("migrate", "mm_migrate_pages"), Needs::MigratePagesFormat)]),
];

impl Hook {
    /// ELF section aya derives the program type and attach point from.
    fn section(&self) -> String {
        match self {
            Hook::BtfTracepoint(_, n) => format!("tp_btf/{n}"),
            Hook::Tracepoint(c, n) => format!("tracepoint/{c}/{n}"),
            Hook::Functions { exit, each } => {
                format!("{}/{}", if *exit { "fexit" } else { "fentry" }, each[0].1)
            }
            Hook::CpuClock => "perf_event".to_string(),
        }
    }

    /// The tracepoint's name without its category (the first function's).
    pub fn name(&self) -> &'static str {
        match self {
            Hook::BtfTracepoint(_, n) | Hook::Tracepoint(_, n) => n,
            Hook::Functions { each, .. } => each[0].1,
            Hook::CpuClock => "cpu-clock",
        }
    }

    /// What it hooks: `category:name`, or the functions.
    pub fn tracepoint(&self) -> String {
        match self {
            Hook::BtfTracepoint(c, n) | Hook::Tracepoint(c, n) => format!("{c}:{n}"),
            Hook::Functions { each, .. } => format!(
                "{} (+{} slow paths)",
                each[0].1,
                each.len().saturating_sub(1)
            ),
            Hook::CpuClock => "software:cpu-clock".to_string(),
        }
    }

    pub fn attach_type(&self) -> &'static str {
        match self {
            Hook::BtfTracepoint(..) => "tp_btf",
            Hook::Tracepoint(..) => "tracepoint",
            Hook::Functions { exit: false, .. } => "fentry",
            Hook::Functions { exit: true, .. } => "fexit",
            Hook::CpuClock => "perf_event",
        }
    }
}
