//! Lock contention: `lock:contention_begin(lock, flags)` and
//! `lock:contention_end(lock, ret)` (the kernel's slow paths of spinlocks,
//! rwlocks, rwsems, mutexes, rt-mutexes, percpu-rwsems, semaphores).
//!
//! Wait = end - begin per waiter. Spinning waiters keep their start in a
//! per-CPU slot (preemption is off while they spin, and no shared map lock is
//! taken); sleeping waiters in a per-task slot. Everything is aggregated in
//! the kernel: per (type, caller stack), per lock address, per workload and a
//! log2 histogram per type. Classic tracepoints, field offsets from tracefs.

use aya_ebpf::{
    bindings::{bpf_map_def, bpf_map_type},
    helpers::generated::bpf_get_stackid,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
    EbpfContext, Global,
};
use core::cell::UnsafeCell;

use aya_log_ebpf::warn;
use hostprobe_common::{
    lock::{
        counter, AddrKey, Begin, CallerKey, CpuSlots, Hist, Stat, TaskSlot, Wait, CPU_DEPTH,
        DEFAULT_ADDRS, DEFAULT_CALLERS, DEFAULT_SPIN_STACKS_PER_SEC, DEFAULT_STACKS,
        DEFAULT_WORKLOADS, F_MUTEX, F_SPIN, STACK_DEPTH, STACK_NOT_SAMPLED, TYPES,
    },
    log2_bucket, DEFAULT_TASK_SLOTS,
};

use crate::config::{FILTER_CGROUP, FILTER_TGID, TASK_SLOTS_MASK};
use crate::util::{bump, first_time, selected};

#[no_mangle]
static LOCK_BEGIN_ADDR_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static LOCK_BEGIN_FLAGS_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static LOCK_END_ADDR_OFFSET: Global<u32> = Global::new(0);
/// Stack walks per `STACK_WINDOW_NS` per CPU for spinning waits; 0: all.
#[no_mangle]
static SPIN_STACKS_PER_WINDOW: Global<u32> = Global::new(DEFAULT_SPIN_STACKS_PER_SEC / 100);
/// Bit `flags` set for each lock type to trace; 0 traces every type.
#[no_mangle]
static LOCK_TYPE_MASK: Global<u64> = Global::new(0);

#[map]
static LOCK_TASK_SLOTS: Array<TaskSlot> = Array::with_max_entries(DEFAULT_TASK_SLOTS, 0);
#[map]
static LOCK_CPU_SLOTS: PerCpuArray<CpuSlots> = PerCpuArray::with_max_entries(1, 0);
/// A stack-trace map of `STACK_DEPTH` frames, defined by hand because
/// aya-ebpf's `StackTrace` always holds 127 frames, and the kernel walks as
/// many frames as the map value holds.
#[repr(transparent)]
pub struct ShortStacks(UnsafeCell<bpf_map_def>);

// SAFETY: the kernel owns the map; the program only passes its address.
unsafe impl Sync for ShortStacks {}

#[link_section = "maps"]
#[export_name = "LOCK_STACKS"]
static LOCK_STACKS: ShortStacks = ShortStacks(UnsafeCell::new(bpf_map_def {
    type_: bpf_map_type::BPF_MAP_TYPE_STACK_TRACE,
    key_size: 4,
    value_size: 8 * STACK_DEPTH,
    max_entries: DEFAULT_STACKS,
    map_flags: 0,
    id: 0,
    pinning: 0,
}));
#[map]
static LOCK_BY_CALLER: PerCpuHashMap<CallerKey, Stat> =
    PerCpuHashMap::with_max_entries(DEFAULT_CALLERS, 0);
#[map]
static LOCK_BY_ADDR: PerCpuHashMap<AddrKey, Stat> =
    PerCpuHashMap::with_max_entries(DEFAULT_ADDRS, 0);
#[map]
static LOCK_WORKLOADS: PerCpuHashMap<u64, Stat> =
    PerCpuHashMap::with_max_entries(DEFAULT_WORKLOADS, 0);
#[map]
static LOCK_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(TYPES, 0);
#[map]
static LOCK_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static LOCK_LOGGED: Array<u32> = Array::with_max_entries(counter::COUNT, 0);

/// Returns 1 so that perf users of the tracepoint (`perf lock record`) still
/// see the event: a classic tracepoint program returning 0 hides it (aya's
/// `#[tracepoint]` macro always returns 0, hence written by hand).
#[no_mangle]
#[link_section = "tracepoint/lock/contention_begin"]
pub extern "C" fn contention_begin(ctx: *mut core::ffi::c_void) -> u32 {
    let _ = try_begin(&TracePointContext::new(ctx));
    1
}

#[no_mangle]
#[link_section = "tracepoint/lock/contention_end"]
pub extern "C" fn contention_end(ctx: *mut core::ffi::c_void) -> u32 {
    let _ = try_end(&TracePointContext::new(ctx));
    1
}

/// Spinning waits that are not a mutex's optimistic spin: per-CPU slots.
#[inline(always)]
fn spins(flags: u32) -> bool {
    flags & F_SPIN != 0 && flags & F_MUTEX == 0
}

fn try_begin(ctx: &TracePointContext) -> Result<(), i32> {
    bump(&LOCK_COUNTERS, counter::EV_BEGIN);
    // SAFETY: offsets come from this kernel's tracefs format file.
    let (lock, flags) = unsafe {
        (
            ctx.read_at::<u64>(LOCK_BEGIN_ADDR_OFFSET.load() as usize)?,
            ctx.read_at::<u32>(LOCK_BEGIN_FLAGS_OFFSET.load() as usize)?,
        )
    };
    let types = LOCK_TYPE_MASK.load();
    if (types != 0 && (types >> (flags & (TYPES - 1))) & 1 == 0) || !selected() {
        return Ok(());
    }
    // SAFETY: helper without pointer arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let slots = LOCK_CPU_SLOTS.get_ptr_mut(0).ok_or(0)?;
    // SAFETY: this CPU's slot; preemption is off in the tracepoint.
    let slots = unsafe { &mut *slots };
    // Walking a stack costs ~3 us: spinning waits (short, frequent) get a
    // per-CPU budget; sleeping waits (long, rare) always get one.
    let stack_id = if !spins(flags) || slots.take_stack(now, SPIN_STACKS_PER_WINDOW.load()) {
        // SAFETY: a tracepoint context and the address of a stack-trace map.
        let id = unsafe { bpf_get_stackid(ctx.as_ptr(), LOCK_STACKS.0.get().cast(), 0) };
        if id < 0 {
            bump(&LOCK_COUNTERS, counter::STACK_ERRORS);
        }
        id as i32
    } else {
        bump(&LOCK_COUNTERS, counter::STACKS_NOT_SAMPLED);
        STACK_NOT_SAMPLED
    };
    let wait = if spins(flags) {
        let depth = slots.depth as usize;
        // The same lock again on top of the stack continues that wait.
        if (1..=CPU_DEPTH).contains(&depth) {
            let top = &slots.waits[masked(depth - 1)];
            if top.since_ns != 0 && top.lock == lock {
                return Ok(());
            }
        }
        if depth >= CPU_DEPTH {
            bump(&LOCK_COUNTERS, counter::CPU_DEPTH_EXCEEDED);
            return Ok(());
        }
        slots.depth += 1;
        &mut slots.waits[masked(depth)]
    } else {
        let tid = bpf_get_current_pid_tgid() as u32;
        let slot = LOCK_TASK_SLOTS
            .get_ptr_mut(tid & TASK_SLOTS_MASK.load())
            .ok_or(0)?;
        // SAFETY: map value pointer from a successful lookup.
        let slot = unsafe { &mut *slot };
        if slot.tid != tid {
            if slot.wait.since_ns != 0 {
                bump(&LOCK_COUNTERS, counter::DROP_TASK_SLOT_COLLISION);
            }
            slot.tid = tid;
            slot.wait = Wait::default();
        }
        &mut slot.wait
    };
    if wait.begin(lock, flags, stack_id, now) == Begin::Replaced {
        bump(&LOCK_COUNTERS, counter::REPLACED);
    }
    Ok(())
}

fn try_end(ctx: &TracePointContext) -> Result<(), i32> {
    bump(&LOCK_COUNTERS, counter::EV_END);
    // SAFETY: offset comes from this kernel's tracefs format file.
    let lock = unsafe { ctx.read_at::<u64>(LOCK_END_ADDR_OFFSET.load() as usize)? };
    // SAFETY: helper without pointer arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let done = end_on_cpu(lock, now).or_else(|| end_on_task(lock, now));
    let Some(done) = done else {
        // With a filter, ends of waits it skipped are expected.
        if LOCK_TYPE_MASK.load() == 0 && FILTER_TGID.load() == 0 && FILTER_CGROUP.load() == 0 {
            bump(&LOCK_COUNTERS, counter::END_WITHOUT_BEGIN);
        }
        return Ok(());
    };
    account(ctx, &done, lock);
    Ok(())
}

/// An index into the per-CPU wait stack in a form the verifier can bound
/// (LLVM otherwise reuses the unchecked register). Callers check the range.
#[inline(always)]
fn masked(i: usize) -> usize {
    i & (CPU_DEPTH - 1)
}

/// Closes the innermost spinning wait of this CPU if it is on `lock`.
fn end_on_cpu(lock: u64, now: u64) -> Option<Wait> {
    let slots = LOCK_CPU_SLOTS.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; preemption is off in the tracepoint.
    let slots = unsafe { &mut *slots };
    let depth = slots.depth as usize;
    if !(1..=CPU_DEPTH).contains(&depth) {
        return None;
    }
    let done = slots.waits[masked(depth - 1)].end(lock, now)?;
    slots.depth -= 1;
    Some(done)
}

fn end_on_task(lock: u64, now: u64) -> Option<Wait> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let slot = LOCK_TASK_SLOTS.get_ptr_mut(tid & TASK_SLOTS_MASK.load())?;
    // SAFETY: map value pointer from a successful lookup.
    let slot = unsafe { &mut *slot };
    if slot.tid != tid {
        return None;
    }
    slot.wait.end(lock, now)
}

fn account(ctx: &TracePointContext, done: &Wait, lock: u64) {
    let wait_ns = done.since_ns;
    let flags = done.flags;
    if let Some(h) = LOCK_HIST.get_ptr_mut(flags & (TYPES - 1)) {
        // SAFETY: this CPU's entry of a per-CPU array.
        let h = unsafe { &mut *h };
        if let Some(b) = h.buckets.get_mut(log2_bucket(wait_ns)) {
            *b += 1;
        }
    }
    let caller = CallerKey {
        flags,
        stack_id: done.stack_id,
    };
    add(
        ctx,
        &LOCK_BY_CALLER,
        &caller,
        wait_ns,
        counter::DROP_CALLER_MAP_FULL,
    );
    let addr = AddrKey {
        lock,
        flags,
        _pad: 0,
    };
    add(
        ctx,
        &LOCK_BY_ADDR,
        &addr,
        wait_ns,
        counter::DROP_ADDR_MAP_FULL,
    );
    // The waiter is `current` at contention_end.
    // SAFETY: helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    add(
        ctx,
        &LOCK_WORKLOADS,
        &cgroup,
        wait_ns,
        counter::DROP_WORKLOAD_MAP_FULL,
    );
}

fn add<K>(ctx: &TracePointContext, map: &PerCpuHashMap<K, Stat>, key: &K, wait_ns: u64, full: u32) {
    if let Some(s) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a per-CPU hash.
        unsafe { (*s).add(wait_ns) };
        return;
    }
    let mut s = Stat::default();
    s.add(wait_ns);
    // BPF_NOEXIST: an entry created meanwhile (by an interrupt) wins.
    if map.insert(key, &s, 1).is_err() && map.get_ptr_mut(key).is_none() {
        bump(&LOCK_COUNTERS, full);
        if first_time(&LOCK_LOGGED, full) {
            warn!(
                ctx,
                "a lock contention map is full (counter {}); new entries are dropped", full
            );
        }
    }
}
