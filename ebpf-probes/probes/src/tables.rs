//! The tables every signal shares the design of.
//!
//! Per-CPU workload tables: open-addressed arrays keyed by cgroup id (an
//! inlined array lookup is far cheaper on hot paths than a hash map). The
//! agent hands entries of removed cgroups back through `DEAD_CGROUPS` (a
//! set) after reading their last values; each CPU then reuses its own
//! entries of those the next time a new workload's probe passes them.
//!
//! Drained tables: hash maps keyed by what the kernel hands over (lock
//! addresses, callers), in two buffers. Programs write the buffer
//! `DRAIN_GEN` names; every round the agent flips it, waits for an RCU
//! grace period (the kernel's wait when user space updates a map of maps,
//! `DRAIN_GRACE`), so that no program that read the old value is still
//! running on any CPU, then reads and deletes the other buffer's entries.
//! A table so holds at most the keys of one round, and nothing is lost,
//! at no cost to the programs beyond reading `DRAIN_GEN`.

use aya_ebpf::{
    btf_maps::{self, ArrayOfMaps},
    helpers::bpf_get_current_cgroup_id,
    macros::{btf_map, map},
    maps::{Array, HashMap, PerCpuArray},
    Global,
};
use hostprobe_common::{workload_index, DEFAULT_MAX_WORKLOADS, WORKLOAD_PROBES};

/// Entries - 1 of every workload table (a power of two).
#[no_mangle]
static WORKLOADS_MASK: Global<u32> = Global::new(DEFAULT_MAX_WORKLOADS - 1);

/// Removed cgroups whose entries may be reused; sized by the agent to hold
/// every id the tables can hold.
#[map]
static DEAD_CGROUPS: HashMap<u64, u8> =
    HashMap::with_max_entries(hostprobe_common::DEAD_CGROUPS, 0);

/// The buffer of the drained tables the programs write: `DRAIN_GEN[0] & 1`.
#[map]
static DRAIN_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// Never read by a program: the agent stores `DRAIN_GRACE_INNER` in it
/// after each flip of `DRAIN_GEN`, and the kernel returns from an update
/// of a map of maps only after every program running at that time has
/// finished (`maybe_wait_bpf_programs`, 4.19+).
#[btf_map]
static DRAIN_GRACE: ArrayOfMaps<btf_maps::Array<u32, 1>, 1> = ArrayOfMaps::new();
/// A placeholder of `DRAIN_GRACE`'s inner type.
#[map]
static DRAIN_GRACE_INNER: Array<u32> = Array::with_max_entries(1, 0);

/// The buffer of the drained tables to write now (`false`: the first,
/// `true`: the second). The caller must finish its writes within the
/// program that read it: the agent's grace period covers only that.
#[inline(always)]
pub fn writing_second() -> bool {
    // SAFETY: map value pointer from a successful lookup.
    DRAIN_GEN
        .get_ptr(0)
        .is_some_and(|g| unsafe { core::ptr::read_volatile(g) } & 1 == 1)
}

/// A table entry: its cgroup id (0: free) and how to start it afresh.
pub trait Entry {
    fn cgroup(&self) -> u64;
    fn reset(&mut self, cgroup: u64);
}

/// This CPU's entry for `cgroup`, claimed if needed; `None` when its probe
/// sequence is full (the caller counts the drop).
#[inline(always)]
pub fn entry<T: Entry>(table: &PerCpuArray<T>, cgroup: u64) -> Option<*mut T> {
    let mask = WORKLOADS_MASK.load();
    let first = workload_index(cgroup, mask);
    for i in 0..WORKLOAD_PROBES {
        let e = table.get_ptr_mut((first + i) & mask)?;
        // SAFETY: this CPU's entry of a per-CPU array; preemption is off.
        let st = unsafe { &mut *e };
        if st.cgroup() == cgroup {
            return Some(e);
        }
        if st.cgroup() == 0 || is_dead(st.cgroup()) {
            st.reset(cgroup);
            return Some(e);
        }
    }
    None
}

/// Applies `f` to this CPU's entry for the current task's workload; the
/// cgroup id as the error when the table is full (the caller counts it).
#[inline(always)]
pub fn update<T: Entry>(table: &PerCpuArray<T>, f: impl FnOnce(&mut T)) -> Result<(), u64> {
    // SAFETY: helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let e = entry(table, cgroup).ok_or(cgroup)?;
    // SAFETY: this CPU's entry of a per-CPU array; preemption is off.
    f(unsafe { &mut *e });
    Ok(())
}

/// Whether the agent has reported `cgroup` removed (and read its last
/// values), so that its entries may be reused. A hash lookup, but only
/// while probing past another workload's entry.
fn is_dead(cgroup: u64) -> bool {
    // SAFETY: a lookup of a plain value.
    unsafe { DEAD_CGROUPS.get(&cgroup).is_some() }
}
