//! Helpers every program uses: per-CPU counters and log-once flags.

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid};
use aya_ebpf::maps::{Array, PerCpuArray};

use crate::config::{FILTER_CGROUP, FILTER_TGID};

#[inline(always)]
pub fn bump(counters: &PerCpuArray<u64>, index: u32) {
    add(counters, index, 1);
}

#[inline(always)]
pub fn add(counters: &PerCpuArray<u64>, index: u32, v: u64) {
    if let Some(c) = counters.get_ptr_mut(index) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *c += v };
    }
}

/// True the first time a rare condition is seen (per flag), so that it is
/// logged once rather than on every event. Not atomic across CPUs: at most
/// one log line per CPU.
pub fn first_time(flags: &Array<u32>, flag: u32) -> bool {
    match flags.get_ptr_mut(flag) {
        // SAFETY: map value pointer from a successful lookup.
        Some(p) => unsafe {
            if *p == 0 {
                *p = 1;
                true
            } else {
                false
            }
        },
        None => false,
    }
}

/// Whether `current` passes the load-time pid and cgroup filters.
#[inline(always)]
pub fn selected() -> bool {
    let tgid = FILTER_TGID.load();
    if tgid != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 != tgid {
        return false;
    }
    let cgroup = FILTER_CGROUP.load();
    // SAFETY: helper without arguments.
    cgroup == 0 || unsafe { bpf_get_current_cgroup_id() } == cgroup
}

/// `*p += v` as one locked instruction: for values several CPUs update.
/// The target has no Rust atomic read-modify-write, hence the instruction.
#[inline(always)]
pub fn atomic_add_u64(p: *mut u64, v: u64) {
    // SAFETY: the caller passes a pointer into a map value, 8-byte aligned.
    unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v) };
}

/// `*p += v` (wrapping: `u32::MAX` subtracts one) as one locked
/// instruction.
#[inline(always)]
pub fn atomic_add_u32(p: *mut u32, v: u32) {
    // SAFETY: the caller passes a pointer into a map value, 4-byte aligned.
    unsafe { core::arch::asm!("lock *(u32 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v) };
}
