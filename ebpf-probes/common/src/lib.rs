//! Record types shared by hostprobe's eBPF programs and its agent.
//!
//! Every type is `#[repr(C)]` with explicit padding fields so that the kernel
//! side and user side agree byte for byte; `Pod` impls live behind the `user`
//! feature because only the agent needs them.
#![no_std]

/// Number of log2 buckets in a latency histogram: bucket `i` counts values in
/// `[2^i, 2^(i+1))` nanoseconds (bucket 0 also holds 0). 2^40 ns is ~18 min,
/// far beyond any run-queue wait, so the last bucket is an overflow bucket.
pub const HIST_BUCKETS: usize = 40;

/// Histogram bucket of a value in nanoseconds: `floor(log2(v))`, with 0 in
/// bucket 0 and everything from 2^(HIST_BUCKETS-1) in the last bucket.
#[inline(always)]
pub fn log2_bucket(v: u64) -> usize {
    let b = (63 - (v | 1).leading_zeros()) as usize;
    if b >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        b
    }
}

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

/// Map sizes used when the agent does not override them.
pub const DEFAULT_TASK_SLOTS: u32 = 1 << 15;
/// Entries per CPU of `SCHED_WORKLOADS` (a power of two).
pub const DEFAULT_MAX_WORKLOADS: u32 = 256;
/// Entries looked at for one cgroup before giving up (linear probing).
pub const WORKLOAD_PROBES: u32 = 4;
/// Ring of cgroup ids the agent found removed; the kernel reuses their
/// entries (on its own CPU, so without racing the agent).
pub const DEAD_CGROUPS: u32 = 64;

/// First table index probed for `cgroup` (Fibonacci hashing).
#[inline(always)]
pub fn workload_index(cgroup: u64, mask: u32) -> u32 {
    (cgroup.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32 & mask
}
pub const MAX_CPUS: u32 = 4096;

/// Kernel lock contention (`lock:contention_begin` / `contention_end`).
pub mod lock {
    /// Flags of `contention_begin`, as the kernel defines them (LCB_F_*).
    pub const F_SPIN: u32 = 1 << 0;
    pub const F_READ: u32 = 1 << 1;
    pub const F_WRITE: u32 = 1 << 2;
    pub const F_RT: u32 = 1 << 3;
    pub const F_PERCPU: u32 = 1 << 4;
    pub const F_MUTEX: u32 = 1 << 5;
    /// Flag combinations are the lock type; the histogram array has one
    /// entry per combination.
    pub const TYPES: u32 = 64;
    /// Nested spinning contentions tracked per CPU (an interrupt handler
    /// contending while the CPU already spins). A power of two.
    pub const CPU_DEPTH: usize = 4;

    /// One waiter's contention in progress.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Wait {
        pub lock: u64,
        /// Begin time, 0 when no contention is in progress.
        pub since_ns: u64,
        pub flags: u32,
        /// Kernel stack of the first begin; negative: no stack (error code).
        pub stack_id: i32,
    }

    /// What a `contention_begin` did to a waiter's state.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Begin {
        /// A new contention starts.
        Started,
        /// The same lock again (a mutex that spun, then sleeps): one
        /// contention, timed from its first begin, as `perf lock` does.
        Continued,
        /// A different lock while one was in progress: the earlier begin
        /// never saw its end (missed event); it is dropped and counted.
        Replaced,
    }

    impl Wait {
        pub fn begin(&mut self, lock: u64, flags: u32, stack_id: i32, now: u64) -> Begin {
            let outcome = if self.since_ns == 0 {
                Begin::Started
            } else if self.lock == lock {
                return Begin::Continued;
            } else {
                Begin::Replaced
            };
            *self = Wait {
                lock,
                since_ns: now,
                flags,
                stack_id,
            };
            outcome
        }

        /// The wait that `contention_end` on `lock` closes, if one is in
        /// progress for that lock; an end without a begin (the probe was
        /// attached mid-wait) changes nothing and returns `None`.
        pub fn end(&mut self, lock: u64, now: u64) -> Option<Wait> {
            if self.since_ns == 0 || self.lock != lock {
                return None;
            }
            let done = Wait {
                since_ns: now.saturating_sub(self.since_ns),
                ..*self
            };
            self.since_ns = 0;
            Some(done)
        }
    }

    /// Per-task state of sleeping-lock waits, direct-mapped by thread id.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct TaskSlot {
        pub tid: u32,
        pub _pad: u32,
        pub wait: Wait,
    }

    /// Per-CPU state of spinning waits (preemption is off while spinning,
    /// so no other task can use this CPU's slots meanwhile), and this CPU's
    /// budget of stack walks for them.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct CpuSlots {
        pub depth: u32,
        /// Stack walks taken in the current budget window.
        pub stacks_used: u32,
        pub window_start_ns: u64,
        pub waits: [Wait; CPU_DEPTH],
    }

    /// Stack id of a spinning wait whose stack was not walked because this
    /// CPU's budget was spent (`bpf_get_stackid` costs ~3 us here).
    pub const STACK_NOT_SAMPLED: i32 = i32::MIN;
    /// Length of a stack budget window.
    pub const STACK_WINDOW_NS: u64 = 10_000_000;
    /// Default stack walks per second per CPU for spinning waits.
    pub const DEFAULT_SPIN_STACKS_PER_SEC: u32 = 1000;

    impl CpuSlots {
        /// Whether a spinning wait at `now` may walk its stack, given
        /// `per_window` walks per `STACK_WINDOW_NS` (0: no limit).
        #[inline(always)]
        pub fn take_stack(&mut self, now: u64, per_window: u32) -> bool {
            if per_window == 0 {
                return true;
            }
            if now.wrapping_sub(self.window_start_ns) >= STACK_WINDOW_NS {
                self.window_start_ns = now;
                self.stacks_used = 0;
            }
            if self.stacks_used >= per_window {
                return false;
            }
            self.stacks_used += 1;
            true
        }
    }

    /// Aggregation key: lock type and the waiter's kernel stack.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct CallerKey {
        pub flags: u32,
        pub stack_id: i32,
    }

    /// Aggregation key: lock address and type.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct AddrKey {
        pub lock: u64,
        pub flags: u32,
        pub _pad: u32,
    }

    /// Contention count and wait time, per CPU.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Stat {
        pub count: u64,
        pub total_ns: u64,
        pub max_ns: u64,
    }

    impl Stat {
        #[inline(always)]
        pub fn add(&mut self, wait_ns: u64) {
            self.count += 1;
            self.total_ns += wait_ns;
            if wait_ns > self.max_ns {
                self.max_ns = wait_ns;
            }
        }
    }

    /// Log2 histogram of wait times, one per lock type.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct Hist {
        pub buckets: [u64; super::HIST_BUCKETS],
    }

    /// Indexes of the per-CPU `LOCK_COUNTERS` array.
    pub mod counter {
        pub const EV_BEGIN: u32 = 0;
        pub const EV_END: u32 = 1;
        /// An end with no matching begin (attached mid-wait).
        pub const END_WITHOUT_BEGIN: u32 = 2;
        /// A begin replaced an unfinished one (its end was missed).
        pub const REPLACED: u32 = 3;
        /// Nested spinning deeper than `CPU_DEPTH`.
        pub const CPU_DEPTH_EXCEEDED: u32 = 4;
        /// `bpf_get_stackid` failed (stack map full or hash collision).
        pub const STACK_ERRORS: u32 = 5;
        pub const DROP_CALLER_MAP_FULL: u32 = 6;
        pub const DROP_ADDR_MAP_FULL: u32 = 7;
        pub const DROP_WORKLOAD_MAP_FULL: u32 = 8;
        pub const DROP_TASK_SLOT_COLLISION: u32 = 9;
        /// Spinning waits counted without a stack (budget spent).
        pub const STACKS_NOT_SAMPLED: u32 = 10;
        pub const COUNT: u32 = 11;
    }

    pub const DEFAULT_STACKS: u32 = 8192;
    /// Frames kept per waiter stack (perf lock's default `--max-stack`).
    /// The kernel walks only as many frames as a stack map value holds, so
    /// this bounds the cost of `bpf_get_stackid` (measured: 3.5 us/run with
    /// 127 frames on the test VM).
    pub const STACK_DEPTH: u32 = 8;
    pub const DEFAULT_CALLERS: u32 = 4096;
    pub const DEFAULT_ADDRS: u32 = 4096;
    pub const DEFAULT_WORKLOADS: u32 = 1024;
}

/// Page dirtying: file pages dirtied (`writeback:writeback_dirty_folio`),
/// dirty throttling (`writeback:balance_dirty_pages`) and user write faults
/// (`exceptions:page_fault_user`), per workload.
pub mod dirty {
    /// (workload, device) pairs per CPU in `DIRTY_FILES`.
    pub const DEFAULT_FILES: u32 = 2048;

    /// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
    pub const PF_PROT: u64 = 1 << 0;
    pub const PF_WRITE: u64 = 1 << 1;

    /// Per workload, per CPU: an entry of the open-addressed per-CPU
    /// table `DIRTY_WORKLOADS` (as `SchedStats` in `SCHED_WORKLOADS`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Stats {
        /// 0: free entry.
        pub cgroup_id: u64,
        /// Write faults on a page that was not mapped: new memory.
        pub write_faults_new: u64,
        /// Write faults on a mapped, write-protected page: copy-on-write,
        /// or re-dirtying tracked by soft-dirty / userfaultfd.
        pub write_faults_present: u64,
        /// Jiffies the workload's tasks were paused by dirty throttling.
        pub throttle_jiffies: u64,
        /// Times they were paused.
        pub throttle_pauses: u64,
    }

    /// Key of file dirtying: workload and the device of the file's
    /// filesystem (`super_block.s_dev`, the kernel's dev_t encoding).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct FileKey {
        pub cgroup: u64,
        pub dev: u32,
        pub _pad: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FileStats {
        /// Folios that went from clean to dirty.
        pub folios: u64,
        /// Their size in bytes (large folios count in full).
        pub bytes: u64,
    }

    pub mod counter {
        pub const EV_DIRTY_FOLIO: u32 = 0;
        pub const EV_BALANCE: u32 = 1;
        pub const EV_FAULT: u32 = 2;
        /// A workload could not be added: `DIRTY_WORKLOADS` was full.
        pub const DROP_WORKLOAD_MAP_FULL: u32 = 3;
        /// A (workload, device) pair could not be added: `DIRTY_FILES` full.
        pub const DROP_FILE_MAP_FULL: u32 = 4;
        /// A folio or its mapping could not be read.
        pub const ERR_READ: u32 = 5;
        pub const COUNT: u32 = 6;
    }
}

/// NUMA: page allocations local/remote to the allocating CPU's node
/// (`kmem:mm_page_alloc`), NUMA-balancing task moves (`sched:sched_*_numa`)
/// and pages migrated by reason (`migrate:mm_migrate_pages`).
pub mod numa {
    /// Migration reasons counted (the kernel's `enum migrate_reason`).
    pub const MAX_REASONS: u32 = 16;

    /// Per workload, per CPU: an entry of the open-addressed per-CPU table
    /// `NUMA_WORKLOADS`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Stats {
        /// 0: free entry.
        pub cgroup_id: u64,
        /// Pages (4 KiB units) allocated on the allocating CPU's node.
        pub local_pages: u64,
        /// Pages allocated on another node.
        pub remote_pages: u64,
        /// NUMA balancing moved a task to another node's CPU.
        pub move_numa: u64,
        /// NUMA balancing swapped two tasks between nodes.
        pub swap_numa: u64,
        /// NUMA balancing wanted to move a task and could not.
        pub stick_numa: u64,
    }

    pub mod counter {
        pub const EV_PAGE_ALLOC: u32 = 0;
        pub const EV_MOVE: u32 = 1;
        pub const EV_SWAP: u32 = 2;
        pub const EV_STICK: u32 = 3;
        pub const EV_MIGRATE_PAGES: u32 = 4;
        /// A workload could not be added: `NUMA_WORKLOADS` full on a CPU.
        pub const DROP_WORKLOAD_MAP_FULL: u32 = 5;
        /// A page's node bits named a node that does not exist: the flags
        /// layout is not what the agent derived.
        pub const ERR_NO_NODE: u32 = 6;
        pub const COUNT: u32 = 7;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), consist only of integers and have no
    // implicit padding (explicit `_pad` fields fill every hole).
    unsafe impl aya::Pod for super::CpuTopo {}
    unsafe impl aya::Pod for super::TaskSlot {}
    unsafe impl aya::Pod for super::SchedStats {}
    unsafe impl aya::Pod for super::lock::CallerKey {}
    unsafe impl aya::Pod for super::lock::AddrKey {}
    unsafe impl aya::Pod for super::lock::Stat {}
    unsafe impl aya::Pod for super::lock::Hist {}
    unsafe impl aya::Pod for super::dirty::Stats {}
    unsafe impl aya::Pod for super::dirty::FileKey {}
    unsafe impl aya::Pod for super::dirty::FileStats {}
    unsafe impl aya::Pod for super::numa::Stats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn log2_buckets() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(1023), 9);
        assert_eq!(log2_bucket(1024), 10);
        assert_eq!(log2_bucket(u64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn a_mutex_that_spins_then_sleeps_is_one_contention() {
        use lock::{Begin, Wait, F_MUTEX, F_SPIN};
        let mut w = Wait::default();
        assert_eq!(w.begin(0xa, F_MUTEX | F_SPIN, 7, 100), Begin::Started);
        assert_eq!(w.begin(0xa, F_MUTEX, 9, 150), Begin::Continued);
        let done = w.end(0xa, 400).unwrap();
        assert_eq!(
            (done.since_ns, done.flags, done.stack_id),
            (300, F_MUTEX | F_SPIN, 7)
        );
        assert_eq!(w.end(0xa, 500), None, "the wait is closed");
    }

    #[test]
    fn an_end_without_a_begin_changes_nothing() {
        use lock::{Begin, Wait};
        let mut w = Wait::default();
        assert_eq!(w.end(0xa, 10), None);
        assert_eq!(w, Wait::default());
        assert_eq!(w.begin(0xa, 0, 1, 20), Begin::Started);
        // An end for another lock leaves the wait in progress.
        assert_eq!(w.end(0xb, 30), None);
        assert_eq!(w.end(0xa, 50).unwrap().since_ns, 30);
    }

    #[test]
    fn a_begin_on_another_lock_replaces_the_unfinished_one() {
        use lock::{Begin, Wait};
        let mut w = Wait::default();
        w.begin(0xa, 0, 1, 10);
        assert_eq!(w.begin(0xb, 0, 2, 20), Begin::Replaced);
        assert_eq!(w.end(0xa, 30), None);
        assert_eq!(w.end(0xb, 30).unwrap().since_ns, 10);
    }

    #[test]
    fn stack_budget_refills_every_window() {
        let mut c = lock::CpuSlots::default();
        let t0 = lock::STACK_WINDOW_NS * 5;
        assert!(c.take_stack(t0, 2) && c.take_stack(t0 + 1, 2));
        assert!(!c.take_stack(t0 + 2, 2), "budget spent");
        assert!(c.take_stack(t0 + lock::STACK_WINDOW_NS, 2), "new window");
        assert!(
            (0..100).all(|i| c.take_stack(t0 + i, 0)),
            "0 means no limit"
        );
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<lock::Wait>(), 24);
        assert_eq!(size_of::<lock::TaskSlot>(), 32);
        assert_eq!(size_of::<lock::CpuSlots>(), 16 + 24 * lock::CPU_DEPTH);
        assert_eq!(size_of::<lock::AddrKey>(), 16);
        assert_eq!(size_of::<dirty::Stats>(), 40);
        assert_eq!(size_of::<dirty::FileKey>(), 16);
        assert_eq!(size_of::<dirty::FileStats>(), 16);
        assert_eq!(size_of::<numa::Stats>(), 48);
        assert_eq!(size_of::<CpuTopo>(), 16);
        assert_eq!(size_of::<TaskSlot>(), 4 + 4 + 8 + 8 + 8 + 4 + 4 + 2 * 8);
        assert_eq!(
            size_of::<SchedStats>(),
            8 * (1 + HIST_BUCKETS + 1 + DIST_CLASSES * 2 + 1)
        );
    }
}
