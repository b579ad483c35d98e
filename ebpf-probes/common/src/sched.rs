//! Scheduler signal (`sched:sched_switch`, `sched_wakeup[_new]`,
//! `sched_migrate_task`): CPU topology, per-task slots, per-workload
//! statistics and host-wide counters.

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
    /// Explicit padding so the layout has no hidden holes.
    pub _pad: u32,
    /// Migrations of this task by distance class, not yet attributed.
    pub pending_migrations: [u16; DIST_CLASSES],
    pub _pad2: [u16; 3],
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
        }
    }
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
    pub const COUNT: u32 = ERR_BAD_CPU + 1;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, no implicit padding (explicit `_pad`
    // fields fill every hole).
    unsafe impl aya::Pod for super::CpuTopo {}
    unsafe impl aya::Pod for super::TaskSlot {}
    unsafe impl aya::Pod for super::SchedStats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<CpuTopo>(), 16);
        assert_eq!(size_of::<TaskSlot>(), 4 + 4 + 8 + 8 + 8 + 4 + 4 + 2 * 8);
        assert_eq!(
            size_of::<SchedStats>(),
            8 * (1 + HIST_BUCKETS + 1 + DIST_CLASSES * 2 + 1)
        );
    }
}
