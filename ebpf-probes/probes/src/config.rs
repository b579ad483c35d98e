//! Load-time constants shared by every program: filters and table sizes.
//! aya freezes .rodata, so the verifier sees them as known values and
//! prunes the branches a filter rules out.

use aya_ebpf::Global;
use hostprobe_common::DEFAULT_TASK_SLOTS;

/// Only tasks of this process (tgid) when non-zero.
#[no_mangle]
pub static FILTER_TGID: Global<u32> = Global::new(0);
/// Only tasks of this cgroup v2 id when non-zero.
#[no_mangle]
pub static FILTER_CGROUP: Global<u64> = Global::new(0);
/// Size - 1 of the per-task direct-mapped arrays (a power of two).
#[no_mangle]
pub static TASK_SLOTS_MASK: Global<u32> = Global::new(DEFAULT_TASK_SLOTS - 1);
