//! User-space lock waits: threads asleep in a futex wait (`FUTEX_WAIT*`,
//! `FUTEX_LOCK_PI*`, `futex_waitv`, `futex_wait`), timed from the switch
//! that puts them to sleep to the one that runs them again, per workload
//! and per user stack.

use crate::HIST_BUCKETS;

/// Frames kept of a user stack (innermost first).
pub const STACK_DEPTH: usize = 32;
/// Words of the user stack above the stack pointer searched for the return
/// address into the code that called the C library (see `UserStack::caller`).
pub const SCAN_WORDS: usize = 32;

/// A user stack seen at a futex sleep, keyed by `stack_hash`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UserStack {
    /// The process whose address space the frames belong to.
    pub tgid: u32,
    /// Frames in `frames` (the frame-pointer walk's depth).
    pub depth: u32,
    /// A return address found on the stack between the stack pointer and
    /// the frame pointer, after a call instruction (`call rel32` or
    /// `call *disp32(%rip)`): the caller of a library built without frame
    /// pointers, whose own frame the frame-pointer walk skips. 0: none.
    /// The agent checks it before using it.
    pub caller: u64,
    /// The frame-pointer walk: the instruction pointer, then return
    /// addresses.
    pub frames: [u64; STACK_DEPTH],
}

impl Default for UserStack {
    fn default() -> Self {
        Self {
            tgid: 0,
            depth: 0,
            caller: 0,
            frames: [0; STACK_DEPTH],
        }
    }
}

/// Waits of one workload at one user stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WaitKey {
    pub cgroup: u64,
    /// `UserStack` key, `NO_STACK` when the stack could not be read.
    pub stack: u64,
}

/// The stack of a wait whose user stack could not be read.
pub const NO_STACK: u64 = 0;

/// A workload's waits: count, sum, longest and a log2 histogram (ns).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub hist: [u64; HIST_BUCKETS],
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            count: 0,
            total_ns: 0,
            max_ns: 0,
            hist: [0; HIST_BUCKETS],
        }
    }
}

/// The stack's key: FNV-1a over the process, the caller and every frame
/// slot (the kernel zeroes those past the walk's depth; a loop without a
/// branch on the depth keeps the verifier's work small), never `NO_STACK`.
#[inline(always)]
pub fn stack_hash(tgid: u32, caller: u64, frames: &[u64; STACK_DEPTH]) -> u64 {
    const PRIME: u64 = 0x100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    h = (h ^ u64::from(tgid)).wrapping_mul(PRIME);
    h = (h ^ caller).wrapping_mul(PRIME);
    for f in frames {
        h = (h ^ f).wrapping_mul(PRIME);
    }
    if h == NO_STACK {
        1
    } else {
        h
    }
}

/// Indexes of the per-CPU `ULOCK_COUNTERS` array.
pub mod counter {
    /// Futex sleeps seen (a voluntary switch-out inside a futex wait).
    pub const EV_SLEEP: u32 = 0;
    /// Waits ended (the sleeper ran again).
    pub const EV_WAKE: u32 = 1;
    /// `bpf_get_stack` failed: the wait is counted under `NO_STACK`.
    pub const STACK_ERRORS: u32 = 2;
    pub const DROP_STACK_MAP_FULL: u32 = 3;
    pub const DROP_WAIT_MAP_FULL: u32 = 4;
    pub const DROP_WORKLOAD_MAP_FULL: u32 = 5;
    pub const COUNT: u32 = 6;
}

/// Entries of each drained table: the distinct keys of one round.
pub const DEFAULT_STACKS: u32 = 4096;
pub const DEFAULT_WAITS: u32 = 4096;
pub const DEFAULT_WORKLOADS: u32 = 1024;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, no implicit padding.
    unsafe impl aya::Pod for super::UserStack {}
    unsafe impl aya::Pod for super::WaitKey {}
    unsafe impl aya::Pod for super::Workload {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn records_have_no_implicit_padding() {
        assert_eq!(size_of::<UserStack>(), 16 + 8 * STACK_DEPTH);
        assert_eq!(size_of::<WaitKey>(), 16);
        assert_eq!(size_of::<Workload>(), 8 * (3 + HIST_BUCKETS));
    }

    #[test]
    fn the_hash_covers_process_caller_and_frames() {
        let mut f = [0u64; STACK_DEPTH];
        f[0] = 0x1000;
        f[1] = 0x2000;
        let h = stack_hash(7, 0, &f);
        assert_ne!(h, stack_hash(8, 0, &f));
        assert_ne!(h, stack_hash(7, 0x3000, &f));
        f[1] = 0;
        assert_ne!(h, stack_hash(7, 0, &f));
        assert_ne!(stack_hash(0, 0, &[0; STACK_DEPTH]), NO_STACK);
    }
}
