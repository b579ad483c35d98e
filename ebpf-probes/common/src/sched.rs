//! Scheduler signal (`sched:sched_switch`, `sched_wakeup[_new]`,
//! `sched_migrate_task`): CPU topology, per-task slots, per-workload
//! statistics, who ran while a workload waited, and host-wide counters.

use crate::HIST_BUCKETS;

/// Topology distance between two CPUs, used both for migrations (source vs
/// destination CPU) and for placement (CPU a task last ran on vs the CPU it
/// is switched in on).
pub const DIST_SAME_CPU: usize = 0;
pub const DIST_SAME_CORE: usize = 1;
pub const DIST_SAME_LLC: usize = 2;
pub const DIST_SAME_NODE: usize = 3;
pub const DIST_OTHER_NODE: usize = 4;
pub const DIST_CLASSES: usize = 5;

/// Where a CPU sits in the machine; indexed by CPU number in the kernel's
/// `CPU_TOPO` array and filled by the agent from sysfs at start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTopo {
    /// First CPU of the SMT sibling set (the physical core).
    pub core: u32,
    /// First CPU of the last-level-cache domain.
    pub llc: u32,
    /// NUMA node.
    pub node: u32,
    /// 1 when this CPU exists; 0 for holes in the possible-CPU range.
    pub present: u32,
}

impl CpuTopo {
    /// Distance class (`DIST_*`) from this CPU (`self_cpu`) to `other`
    /// (`other_cpu`); `None` when either CPU is not in the table. The kernel
    /// programs and the agent's tests share this one definition.
    #[inline(always)]
    pub fn distance(&self, self_cpu: u32, other: &CpuTopo, other_cpu: u32) -> Option<usize> {
        if self.present == 0 || other.present == 0 {
            None
        } else if self_cpu == other_cpu {
            Some(DIST_SAME_CPU)
        } else if self.core == other.core {
            Some(DIST_SAME_CORE)
        } else if self.llc == other.llc {
            Some(DIST_SAME_LLC)
        } else if self.node == other.node {
            Some(DIST_SAME_NODE)
        } else {
            Some(DIST_OTHER_NODE)
        }
    }
}

/// Per-task bookkeeping slot in a direct-mapped array indexed by
/// `tid & (slots - 1)`. An array lookup is inlined by the verifier into
/// pointer arithmetic, unlike a hash map, which takes a bucket lock and may
/// allocate on the scheduler hot path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskSlot {
    /// Thread id owning the slot; 0 when free.
    pub tid: u32,
    /// CPU the task last ran on, `NO_CPU` when unknown.
    pub last_cpu: u32,
    /// When the task became runnable (wakeup or preemption), 0 when not queued.
    pub queued_ns: u64,
    /// When the task was last switched in, 0 when not running.
    pub oncpu_since_ns: u64,
    /// Run-queue latency measured at the last switch-in, not yet attributed
    /// to a workload; `NO_PENDING` when none.
    pub pending_lat_ns: u64,
    /// Placement class of the last switch-in, `NO_PENDING_PLACE` when none.
    pub pending_place: u32,
    /// `SLOT_*` flags.
    pub flags: u32,
    /// Migrations of this task by distance class, not yet attributed.
    pub pending_migrations: [u16; DIST_CLASSES],
    pub _pad2: u16,
    /// The gang (`GangSlot`) the task is counted in while `SLOT_RUNNABLE`
    /// or `SLOT_RUNNING` is set.
    pub gang: u32,
    /// The task's cgroup v2 id at its last switch-out (0: not seen yet):
    /// its workload when it is switched in, without walking its cgroups.
    pub cgroup: u64,
    /// When the task went to sleep in a futex wait, 0 when it is not in
    /// one (see `ulock`).
    pub ulock_since_ns: u64,
    /// The user stack of the task's last futex wait (`ulock::UserStack`
    /// key), and a fingerprint of where it slept (instruction, stack and
    /// frame pointers): a sleep at the same place reuses the stack.
    pub ulock_stack: u64,
    pub ulock_place: u64,
}

/// The task moved to another CPU while it waited in a run queue: its wait
/// is charged to what ran on the CPU it was switched in on, for all of it.
pub const SLOT_MOVED_WHILE_QUEUED: u32 = 1;
/// The task is counted runnable (running or queued) in its gang.
pub const SLOT_RUNNABLE: u32 = 2;
/// The task is counted running in its gang.
pub const SLOT_RUNNING: u32 = 4;
/// The task was the only thread of its process when it woke: not counted
/// in a gang until it sleeps again (then it is looked at afresh).
pub const SLOT_ALONE: u32 = 8;

/// Threads scheduled as a group: the threads of one process (the gang id
/// is the tgid), or the vCPU threads of one QEMU process (threads named
/// `CPU n/KVM` or `CPU n/TCG`: tgid | `GANG_VCPU`; pids stay below 2^22).
pub const GANG_VCPU: u32 = 1 << 31;
/// Sampling period of the co-scheduling sampler (per CPU, 100 Hz).
pub const GANG_SAMPLE_PERIOD_NS: u64 = 10_000_000;
/// Entries of `GANG_SLOTS` (a power of two).
pub const DEFAULT_GANG_SLOTS: u32 = 1 << 13;

/// One gang's threads now and its sampled co-scheduling: an entry of the
/// array `GANG_SLOTS`, open-addressed from `workload_index(gang)` over
/// `WORKLOAD_PROBES` entries. The
/// counts move with atomic adds from every CPU's scheduler programs; the
/// sampler adds to the times (atomic too).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GangSlot {
    /// Owner of the slot; taken over only while its counts are zero.
    pub gang: u32,
    /// Threads running or waiting in a run queue.
    pub runnable: u32,
    /// Threads on a CPU.
    pub running: u32,
    pub _pad: u32,
    /// Sampled time with two or more threads runnable, all of them on CPUs.
    pub together_ns: u64,
    /// Sampled time with two or more runnable, one or more on a CPU and
    /// one or more waiting.
    pub split_ns: u64,
}

pub const NO_CPU: u32 = u32::MAX;
pub const NO_PENDING: u64 = u64::MAX;
pub const NO_PENDING_PLACE: u32 = u32::MAX;

/// Scheduler statistics of one workload (cgroup v2 id) on one CPU: an entry
/// of the per-CPU array `SCHED_WORKLOADS`, used as an open-addressed table
/// (an inlined array lookup instead of a hash-map helper call on every
/// context switch; measured at ~100 ns per switch on the test VM).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SchedStats {
    /// Owner of this entry on this CPU; 0 when free.
    pub cgroup_id: u64,
    /// Run-queue latency log2 histogram, nanoseconds.
    pub runq_hist: [u64; HIST_BUCKETS],
    /// Sum of run-queue latencies, nanoseconds.
    pub runq_sum_ns: u64,
    /// Switch-ins by placement class (index `DIST_*`).
    pub switch_ins: [u64; DIST_CLASSES],
    /// Migrations by distance class (index `DIST_*`; `DIST_SAME_CPU` unused).
    pub migrations: [u64; DIST_CLASSES],
    /// Nanoseconds on CPU, from switch-in to switch-out.
    pub oncpu_ns: u64,
    /// Switch-outs while still runnable (preempted, or yielding): the
    /// kernel's `nonvoluntary_ctxt_switches`.
    pub preempted: u64,
    /// Switch-outs to sleep or wait: `voluntary_ctxt_switches`.
    pub voluntary: u64,
    /// On-CPU run lengths (slices), switch-in to switch-out, log2 ns.
    pub slice_hist: [u64; HIST_BUCKETS],
    /// The workload's gangs' sampled co-scheduling (`GangSlot`'s times).
    pub gang_together_ns: u64,
    pub gang_split_ns: u64,
}

impl Default for SchedStats {
    fn default() -> Self {
        Self {
            cgroup_id: 0,
            runq_hist: [0; HIST_BUCKETS],
            runq_sum_ns: 0,
            switch_ins: [0; DIST_CLASSES],
            migrations: [0; DIST_CLASSES],
            oncpu_ns: 0,
            preempted: 0,
            voluntary: 0,
            slice_hist: [0; HIST_BUCKETS],
            gang_together_ns: 0,
            gang_split_ns: 0,
        }
    }
}

/// Intervals of `RunRing` per CPU (a power of two): how far back a wait can
/// be charged to what ran meanwhile.
pub const RUN_RING: usize = 16;

/// What ran on one CPU lately: the last `RUN_RING` intervals of one
/// workload each (consecutive runs of one workload are one interval), as
/// (start, end, cgroup of the tasks that ran). Written by that CPU only, at
/// every switch, and read by it when a task it switches in has waited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RunRing {
    /// Intervals written since start; the newest is at `(head - 1) % RUN_RING`.
    pub head: u64,
    /// The last switch on this CPU (the start of the current run), 0 before
    /// the first.
    pub last_switch_ns: u64,
    pub start_ns: [u64; RUN_RING],
    pub end_ns: [u64; RUN_RING],
    /// cgroup v2 id, or `NEIGHBOUR_IDLE` for the idle task.
    pub cgroup: [u64; RUN_RING],
}

/// Neighbour of waits spent while the CPU ran its idle task (waking it up
/// from idle, or the wake-up's IPI): no workload held the CPU.
pub const NEIGHBOUR_IDLE: u64 = 0;
/// Neighbour of the part of a wait older than the CPU's `RunRing`.
pub const NEIGHBOUR_UNKNOWN: u64 = u64::MAX;

/// Run-queue wait of one workload (the victim) charged to one neighbour
/// (the workload that held the CPU meanwhile) on one CPU: an entry of the
/// drained per-CPU table `SCHED_NEIGHBOURS`, open-addressed by the pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighbourWait {
    /// cgroup v2 id of the waiting task's workload; 0 when free.
    pub victim: u64,
    /// cgroup v2 id, `NEIGHBOUR_IDLE` or `NEIGHBOUR_UNKNOWN`.
    pub neighbour: u64,
    pub wait_ns: u64,
    /// Waits of the victim during which the neighbour ran (a wait through
    /// several separate runs of one neighbour counts once per run).
    pub waits: u64,
}

/// Pair entries per CPU of each of the two buffers of `SCHED_NEIGHBOURS`,
/// per entry of `SCHED_WORKLOADS` (each workload can be delayed by a few).
/// A pair finds its entry within `WORKLOAD_PROBES` slots: at 4 the soak's
/// churn (600 cgroups in 3 minutes) once found 4 taken in a row on a CPU
/// (9 drops); 8 halves the load factor, so such runs are far rarer.
pub const NEIGHBOURS_PER_WORKLOAD: u32 = 8;

/// First table index probed for a (victim, neighbour) pair.
#[inline(always)]
pub fn pair_index(victim: u64, neighbour: u64, mask: u32) -> u32 {
    crate::workload_index(victim ^ neighbour.rotate_left(32), mask)
}

/// Indexes of the per-CPU `SCHED_COUNTERS` array: host-wide counters that
/// do not depend on workload attribution, plus self-metrics.
pub mod counter {
    /// Events seen by each program (self-metric `hostprobe_probe_events_total`).
    pub const EV_SWITCH: u32 = 0;
    pub const EV_WAKEUP: u32 = 1;
    pub const EV_WAKEUP_NEW: u32 = 2;
    pub const EV_MIGRATE: u32 = 3;
    /// Host-wide migrations by distance class, `MIGRATIONS + DIST_*`.
    pub const MIGRATIONS: u32 = 4;
    /// Switch-ins of a task that moved to another CPU since it last ran:
    /// the definition of perf's `cpu-migrations` software event, which the
    /// kernel emits at switch-in, once however often the task moved.
    pub const MIGRATED_SWITCH_INS: u32 = MIGRATIONS + super::DIST_CLASSES as u32;
    /// A workload could not be added because its probe sequence in
    /// `SCHED_WORKLOADS` was full on that CPU.
    pub const DROP_WORKLOAD_MAP_FULL: u32 = MIGRATED_SWITCH_INS + 1;
    /// A task slot was taken over by another thread id while it still held
    /// unattributed data (direct-mapped slot collision).
    pub const DROP_TASK_SLOT_COLLISION: u32 = DROP_WORKLOAD_MAP_FULL + 1;
    /// A migration named a CPU outside the topology table: the tracepoint
    /// layout is not what the agent read from tracefs.
    pub const ERR_BAD_CPU: u32 = DROP_TASK_SLOT_COLLISION + 1;
    /// A (victim, neighbour) pair found its probe sequence in
    /// `SCHED_NEIGHBOURS` full on that CPU; its wait is not charged.
    pub const DROP_NEIGHBOUR_MAP_FULL: u32 = ERR_BAD_CPU + 1;
    /// Nanoseconds of run-queue wait charged to neighbours, by how exact
    /// the charge is: what ran on the CPU of the wait (`_DIRECT`), on the
    /// CPU the task was switched in on after it moved while waiting
    /// (`_MOVED`), and the part older than the run ring (`_UNKNOWN`).
    pub const NEIGHBOUR_DIRECT_NS: u32 = DROP_NEIGHBOUR_MAP_FULL + 1;
    pub const NEIGHBOUR_MOVED_NS: u32 = NEIGHBOUR_DIRECT_NS + 1;
    pub const NEIGHBOUR_UNKNOWN_NS: u32 = NEIGHBOUR_MOVED_NS + 1;
    /// Samples taken by the co-scheduling sampler.
    pub const EV_GANG_SAMPLE: u32 = NEIGHBOUR_UNKNOWN_NS + 1;

    /// A gang found every entry of its probe sequence in `GANG_SLOTS` held
    /// by gangs with threads counted: its threads are not counted then.
    pub const DROP_GANG_SLOT_BUSY: u32 = EV_GANG_SAMPLE + 1;
    pub const COUNT: u32 = DROP_GANG_SLOT_BUSY + 1;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, no implicit padding (explicit `_pad`
    // fields fill every hole).
    unsafe impl aya::Pod for super::CpuTopo {}
    unsafe impl aya::Pod for super::TaskSlot {}
    unsafe impl aya::Pod for super::SchedStats {}
    unsafe impl aya::Pod for super::RunRing {}
    unsafe impl aya::Pod for super::GangSlot {}
    unsafe impl aya::Pod for super::NeighbourWait {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<CpuTopo>(), 16);
        assert_eq!(
            size_of::<TaskSlot>(),
            4 + 4 + 8 + 8 + 8 + 4 + 4 + 2 * 6 + 4 + 8 + 8 + 8 + 8
        );
        assert_eq!(
            size_of::<SchedStats>(),
            8 * (1 + HIST_BUCKETS + 1 + DIST_CLASSES * 2 + 1 + 2 + HIST_BUCKETS + 2)
        );
        assert_eq!(size_of::<GangSlot>(), 32);
        assert_eq!(size_of::<RunRing>(), 8 * (2 + 3 * RUN_RING));
        assert_eq!(size_of::<NeighbourWait>(), 32);
    }

    #[test]
    fn a_pair_and_its_reverse_probe_apart() {
        let mask = 1023;
        assert_ne!(pair_index(5, 9, mask), pair_index(9, 5, mask));
        assert_ne!(pair_index(5, NEIGHBOUR_IDLE, mask), pair_index(5, 6, mask));
    }
}
