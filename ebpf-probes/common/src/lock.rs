//! Kernel lock contention (`lock:contention_begin` / `contention_end`).

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
    /// The function that took the lock (first frame outside the locking
    /// code), or `CALLER_UNKNOWN` / `CALLER_NOT_SAMPLED`.
    pub caller: u64,
    pub flags: u32,
    /// What the lock's owner was doing when the wait began (`OWNER_*`).
    pub owner: u32,
    /// The owner's cgroup v2 id, when `owner` is known.
    pub owner_cgroup: u64,
}

/// The owner of a sleeping lock (mutex, rwsem held for writing) when a
/// waiter began to wait: unknown (another lock type, a reader-owned rwsem,
/// released meanwhile), on a CPU, runnable but not on a CPU (preempted),
/// or asleep (holding the lock across I/O or another wait).
pub const OWNER_UNKNOWN: u32 = 0;
pub const OWNER_RUNNING: u32 = 1;
pub const OWNER_PREEMPTED: u32 = 2;
pub const OWNER_SLEEPING: u32 = 3;

/// Aggregation key of waits whose owner was known: the waiter's workload,
/// the owner's, and what the owner was doing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OwnerKey {
    pub waiter: u64,
    pub owner: u64,
    pub state: u32,
    pub _pad: u32,
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
    pub fn begin(&mut self, lock: u64, flags: u32, caller: u64, now: u64) -> Begin {
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
            caller,
            flags,
            owner: OWNER_UNKNOWN,
            owner_cgroup: 0,
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

/// Caller of a wait whose stack named none: no frame outside the locking
/// code within `SEARCH_DEPTH`, the stack could not be walked, or kernel
/// symbols were unreadable.
pub const CALLER_UNKNOWN: u64 = 0;
/// Caller of a spinning wait whose stack was not walked because this CPU's
/// budget was spent (a walk costs ~3 us here).
pub const CALLER_NOT_SAMPLED: u64 = 1;
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

/// Aggregation key: lock type and the function that took the lock. A code
/// address, so the keys are the kernel's call sites of locks, not its
/// objects; the table is drained every round all the same.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CallerKey {
    pub caller: u64,
    pub flags: u32,
    pub _pad: u32,
}

/// A caller's waits, and one of the stacks that led to it (written when
/// the entry is created; zeros where no stack was walked).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerStat {
    pub stat: Stat,
    pub stack: [u64; STACK_DEPTH as usize],
}

/// Frames of a stack walk searched for the caller: the walk from a BTF
/// tracepoint starts in the BPF program and the tracing code, before the
/// locking code.
pub const SEARCH_DEPTH: usize = 16;

/// The caller of a wait in a kernel stack (innermost first): the first
/// frame outside the locking code (`text`: its address ranges) after a
/// frame inside it, and where the stack from that locking frame starts.
/// Frames before the locking code are the tracing machinery.
#[inline(always)]
pub fn find_caller(frames: &[u64; SEARCH_DEPTH], n: usize, text: &[(u64, u64); 2]) -> (u64, usize) {
    let mut first_lock = SEARCH_DEPTH;
    for (i, &ip) in frames.iter().enumerate().take(n.min(SEARCH_DEPTH)) {
        let locking = (text[0].0 <= ip && ip < text[0].1) || (text[1].0 <= ip && ip < text[1].1);
        if locking {
            if first_lock == SEARCH_DEPTH {
                first_lock = i;
            }
        } else if first_lock != SEARCH_DEPTH {
            return (ip, first_lock);
        }
    }
    (
        CALLER_UNKNOWN,
        if first_lock == SEARCH_DEPTH {
            0
        } else {
            first_lock
        },
    )
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

/// Wait times of one lock type: a log2 histogram, their sum and the
/// longest (an array entry per type: bounded, never drained).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Hist {
    pub buckets: [u64; crate::HIST_BUCKETS],
    pub sum_ns: u64,
    pub max_ns: u64,
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
    /// `bpf_get_stack` failed: the wait's caller is unknown.
    pub const STACK_ERRORS: u32 = 5;
    pub const DROP_CALLER_MAP_FULL: u32 = 6;
    pub const DROP_ADDR_MAP_FULL: u32 = 7;
    pub const DROP_WORKLOAD_MAP_FULL: u32 = 8;
    pub const DROP_TASK_SLOT_COLLISION: u32 = 9;
    /// Spinning waits counted without a stack (budget spent).
    pub const STACKS_NOT_SAMPLED: u32 = 10;
    pub const DROP_OWNER_MAP_FULL: u32 = 11;
    pub const COUNT: u32 = 12;
}

/// Frames kept of a caller's example stack, from the first frame of the
/// locking code (perf lock's default `--max-stack`).
pub const STACK_DEPTH: u32 = 8;
/// Entries of each drained table: the distinct keys of one round (a round
/// is `serve --interval` at most; more are counted as drops).
pub const DEFAULT_CALLERS: u32 = 4096;
pub const DEFAULT_ADDRS: u32 = 16384;
pub const DEFAULT_WORKLOADS: u32 = 1024;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, no implicit padding.
    unsafe impl aya::Pod for super::CallerKey {}
    unsafe impl aya::Pod for super::CallerStat {}
    unsafe impl aya::Pod for super::AddrKey {}
    unsafe impl aya::Pod for super::Stat {}
    unsafe impl aya::Pod for super::OwnerKey {}
    unsafe impl aya::Pod for super::Hist {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn a_mutex_that_spins_then_sleeps_is_one_contention() {
        let mut w = Wait::default();
        assert_eq!(w.begin(0xa, F_MUTEX | F_SPIN, 7, 100), Begin::Started);
        assert_eq!(w.begin(0xa, F_MUTEX, 9, 150), Begin::Continued);
        let done = w.end(0xa, 400).unwrap();
        assert_eq!(
            (done.since_ns, done.flags, done.caller),
            (300, F_MUTEX | F_SPIN, 7)
        );
        assert_eq!(w.end(0xa, 500), None, "the wait is closed");
    }

    #[test]
    fn an_end_without_a_begin_changes_nothing() {
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
        let mut w = Wait::default();
        w.begin(0xa, 0, 1, 10);
        assert_eq!(w.begin(0xb, 0, 2, 20), Begin::Replaced);
        assert_eq!(w.end(0xa, 30), None);
        assert_eq!(w.end(0xb, 30).unwrap().since_ns, 10);
    }

    #[test]
    fn stack_budget_refills_every_window() {
        let mut c = CpuSlots::default();
        let t0 = STACK_WINDOW_NS * 5;
        assert!(c.take_stack(t0, 2) && c.take_stack(t0 + 1, 2));
        assert!(!c.take_stack(t0 + 2, 2), "budget spent");
        assert!(c.take_stack(t0 + STACK_WINDOW_NS, 2), "new window");
        assert!(
            (0..100).all(|i| c.take_stack(t0 + i, 0)),
            "0 means no limit"
        );
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Wait>(), 40);
        assert_eq!(size_of::<TaskSlot>(), 48);
        assert_eq!(size_of::<CpuSlots>(), 16 + 40 * CPU_DEPTH);
        assert_eq!(size_of::<OwnerKey>(), 24);
        assert_eq!(size_of::<AddrKey>(), 16);
        assert_eq!(size_of::<CallerKey>(), 16);
        assert_eq!(size_of::<CallerStat>(), 24 + 8 * STACK_DEPTH as usize);
        assert_eq!(size_of::<Hist>(), 8 * (crate::HIST_BUCKETS + 2));
    }

    #[test]
    fn the_caller_is_the_first_frame_after_the_locking_code() {
        let text = [(0x100, 0x200), (0x300, 0x400)];
        let stack = |f: &[u64]| {
            let mut a = [0u64; SEARCH_DEPTH];
            a[..f.len()].copy_from_slice(f);
            (a, f.len())
        };
        // From a BTF tracepoint: BPF program, tracing code, lock, caller.
        let (s, n) = stack(&[0xf000, 0x900, 0x150, 0x350, 0x800, 0x810]);
        assert_eq!(find_caller(&s, n, &text), (0x800, 2));
        // From a classic tracepoint the walk starts in the locking code.
        let (s, n) = stack(&[0x150, 0x820]);
        assert_eq!(find_caller(&s, n, &text), (0x820, 0));
        // Still locking at the end of the walk, or never locking.
        let (s, n) = stack(&[0x900, 0x150, 0x160]);
        assert_eq!(find_caller(&s, n, &text), (CALLER_UNKNOWN, 1));
        let (s, n) = stack(&[0x900, 0x910]);
        assert_eq!(find_caller(&s, n, &text).0, CALLER_UNKNOWN);
        // Frames past `n` are not looked at.
        let (s, _) = stack(&[0x150, 0x820]);
        assert_eq!(find_caller(&s, 1, &text).0, CALLER_UNKNOWN);
    }
}
