//! Lock contention: `lock:contention_begin(lock, flags)` and
//! `lock:contention_end(lock, ret)` (the kernel's slow paths of spinlocks,
//! rwlocks, rwsems, mutexes, rt-mutexes, percpu-rwsems, semaphores).
//!
//! Wait = end - begin per waiter. Spinning waiters keep their start in a
//! per-CPU slot (preemption is off while they spin, and no shared map lock is
//! taken); sleeping waiters in a per-task slot. At begin, a walk of the
//! waiter's stack names its caller (the first frame after the locking code),
//! so waits aggregate by call site, not by stack id. Everything is
//! aggregated in the kernel: per (type, caller), per lock address and per
//! workload in drained tables (see `tables.rs`), and a histogram, sum and
//! maximum per type. For sleeping locks whose owner the lock names (a
//! mutex, an rwsem held for writing), what the owner was doing when the
//! wait began (on a CPU, preempted, asleep) and its workload, per (waiter's
//! workload, owner's workload, owner's state).
//!
//! BTF tracepoints: a classic tracepoint program is skipped whenever another
//! tracing program or a map syscall runs on its CPU, and contention is rife
//! exactly then; the classic programs (`*_tp`) are the fallback where the
//! kernel has no BTF prototype for these tracepoints (offsets from tracefs).
//! Before 5.19 there are no such tracepoints: where fentry is allowed, the
//! sleeping locks' out-of-line slow paths stand in for them (`*_slowpath_*`
//! programs): entering one means the fast path failed (a contention),
//! leaving it ends the wait. Spinning locks have no such hook (their slow
//! paths are inlined or run with preemption off), so only mutexes and
//! rwsems are seen there.

use aya_ebpf::{
    helpers::generated::bpf_get_stack,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, fentry, fexit, map},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, TracePointContext},
    EbpfContext, Global,
};

use aya_log_ebpf::warn;
use hostprobe_common::{
    lock::{
        counter, find_caller, AddrKey, Begin, CallerKey, CallerStat, CpuSlots, Hist, OwnerKey,
        Stat, TaskSlot, Wait, CALLER_NOT_SAMPLED, CALLER_UNKNOWN, CPU_DEPTH, DEFAULT_ADDRS,
        DEFAULT_CALLERS, DEFAULT_SPIN_STACKS_PER_SEC, DEFAULT_WORKLOADS, F_MUTEX, F_PERCPU, F_READ,
        F_RT, F_SPIN, F_WRITE, OWNER_PREEMPTED, OWNER_RUNNING, OWNER_SLEEPING, OWNER_UNKNOWN,
        SEARCH_DEPTH, STACK_DEPTH, TYPES,
    },
    log2_bucket, DEFAULT_TASK_SLOTS,
};

use crate::config::{FILTER_CGROUP, FILTER_TGID, TASK_SLOTS_MASK};
use crate::tables::writing_second;
use crate::task;
use crate::util::{bump, first_time, selected};

/// Offsets in the classic tracepoints' records (tracefs), for the fallback.
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
/// The locking code (`__lock_text`, `__sched_text`), from kallsyms.
#[no_mangle]
static LOCK_TEXT_START: Global<u64> = Global::new(0);
#[no_mangle]
static LOCK_TEXT_END: Global<u64> = Global::new(0);
#[no_mangle]
static SCHED_TEXT_START: Global<u64> = Global::new(0);
#[no_mangle]
static SCHED_TEXT_END: Global<u64> = Global::new(0);
/// `mutex.owner` and `rw_semaphore.owner`: the owning task's address in
/// the bits above the flags; `u32::MAX` when BTF lacks them.
#[no_mangle]
static MUTEX_OWNER_OFFSET: Global<u32> = Global::new(u32::MAX);
#[no_mangle]
static RWSEM_OWNER_OFFSET: Global<u32> = Global::new(u32::MAX);

#[map]
static LOCK_TASK_SLOTS: Array<TaskSlot> = Array::with_max_entries(DEFAULT_TASK_SLOTS, 0);
#[map]
static LOCK_CPU_SLOTS: PerCpuArray<CpuSlots> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU room for a stack walk and a caller entry being created.
#[map]
static LOCK_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
#[map]
static LOCK_BY_CALLER_0: PerCpuHashMap<CallerKey, CallerStat> =
    PerCpuHashMap::with_max_entries(DEFAULT_CALLERS, 0);
#[map]
static LOCK_BY_CALLER_1: PerCpuHashMap<CallerKey, CallerStat> =
    PerCpuHashMap::with_max_entries(DEFAULT_CALLERS, 0);
#[map]
static LOCK_BY_ADDR_0: PerCpuHashMap<AddrKey, Stat> =
    PerCpuHashMap::with_max_entries(DEFAULT_ADDRS, 0);
#[map]
static LOCK_BY_ADDR_1: PerCpuHashMap<AddrKey, Stat> =
    PerCpuHashMap::with_max_entries(DEFAULT_ADDRS, 0);
#[map]
static LOCK_WORKLOADS_0: PerCpuHashMap<u64, Stat> =
    PerCpuHashMap::with_max_entries(DEFAULT_WORKLOADS, 0);
#[map]
static LOCK_WORKLOADS_1: PerCpuHashMap<u64, Stat> =
    PerCpuHashMap::with_max_entries(DEFAULT_WORKLOADS, 0);
#[map]
static LOCK_OWNERS_0: PerCpuHashMap<OwnerKey, Stat> =
    PerCpuHashMap::with_max_entries(DEFAULT_WORKLOADS, 0);
#[map]
static LOCK_OWNERS_1: PerCpuHashMap<OwnerKey, Stat> =
    PerCpuHashMap::with_max_entries(DEFAULT_WORKLOADS, 0);
#[map]
static LOCK_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(TYPES, 0);
#[map]
static LOCK_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static LOCK_LOGGED: Array<u32> = Array::with_max_entries(counter::COUNT, 0);

#[repr(C)]
pub struct Scratch {
    frames: [u64; SEARCH_DEPTH],
    entry: CallerStat,
}

#[btf_tracepoint(function = "contention_begin")]
pub fn contention_begin(ctx: BtfTracePointContext) -> i32 {
    // (void *lock, unsigned int flags)
    let lock: u64 = ctx.arg(0);
    let flags: u64 = ctx.arg(1);
    let _ = try_begin(&ctx, lock, flags as u32);
    0
}

#[btf_tracepoint(function = "contention_end")]
pub fn contention_end(ctx: BtfTracePointContext) -> i32 {
    // (void *lock, int ret)
    let lock: u64 = ctx.arg(0);
    try_end(&ctx, lock);
    0
}

/// The fallback. Returns 1 so that perf users of the tracepoint (`perf lock
/// record`) still see the event: a classic tracepoint program returning 0
/// hides it (aya's `#[tracepoint]` macro always returns 0, hence written by
/// hand).
#[no_mangle]
#[link_section = "tracepoint/lock/contention_begin"]
pub extern "C" fn contention_begin_tp(ctx: *mut core::ffi::c_void) -> u32 {
    let ctx = TracePointContext::new(ctx);
    // SAFETY: offsets come from this kernel's tracefs format file.
    let fields = unsafe {
        (
            ctx.read_at::<u64>(LOCK_BEGIN_ADDR_OFFSET.load() as usize),
            ctx.read_at::<u32>(LOCK_BEGIN_FLAGS_OFFSET.load() as usize),
        )
    };
    if let (Ok(lock), Ok(flags)) = fields {
        let _ = try_begin(&ctx, lock, flags);
    }
    1
}

#[no_mangle]
#[link_section = "tracepoint/lock/contention_end"]
pub extern "C" fn contention_end_tp(ctx: *mut core::ffi::c_void) -> u32 {
    let ctx = TracePointContext::new(ctx);
    // SAFETY: offset comes from this kernel's tracefs format file.
    if let Ok(lock) = unsafe { ctx.read_at::<u64>(LOCK_END_ADDR_OFFSET.load() as usize) } {
        try_end(&ctx, lock);
    }
    1
}

/// A sleeping lock's slow path as a contention: `$enter` at its entry
/// begins a wait of type `$flags` on its first argument, `$exit` ends it.
macro_rules! slow_path {
    ($function:literal, $enter:ident, $exit:ident, $flags:expr) => {
        #[fentry(function = $function)]
        pub fn $enter(ctx: FEntryContext) -> i32 {
            let lock: u64 = ctx.arg(0);
            let _ = try_begin(&ctx, lock, $flags);
            0
        }

        #[fexit(function = $function)]
        pub fn $exit(ctx: FExitContext) -> i32 {
            let lock: u64 = ctx.arg(0);
            try_end(&ctx, lock);
            0
        }
    };
}

slow_path!(
    "__mutex_lock_slowpath",
    mutex_slowpath_enter,
    mutex_slowpath_exit,
    F_MUTEX
);
slow_path!(
    "__mutex_lock_killable_slowpath",
    mutex_killable_slowpath_enter,
    mutex_killable_slowpath_exit,
    F_MUTEX
);
slow_path!(
    "__mutex_lock_interruptible_slowpath",
    mutex_interruptible_slowpath_enter,
    mutex_interruptible_slowpath_exit,
    F_MUTEX
);
slow_path!(
    "rwsem_down_read_slowpath",
    rwsem_read_slowpath_enter,
    rwsem_read_slowpath_exit,
    F_READ
);
slow_path!(
    "rwsem_down_write_slowpath",
    rwsem_write_slowpath_enter,
    rwsem_write_slowpath_exit,
    F_WRITE
);

/// Spinning waits that are not a mutex's optimistic spin: per-CPU slots.
#[inline(always)]
fn spins(flags: u32) -> bool {
    flags & F_SPIN != 0 && flags & F_MUTEX == 0
}

fn try_begin<C: EbpfContext>(ctx: &C, lock: u64, flags: u32) -> Result<(), i32> {
    bump(&LOCK_COUNTERS, counter::EV_BEGIN);
    let types = LOCK_TYPE_MASK.load();
    if (types != 0 && (types >> (flags & (TYPES - 1))) & 1 == 0) || !selected() {
        return Ok(());
    }
    // SAFETY: helper without pointer arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let slots = LOCK_CPU_SLOTS.get_ptr_mut(0).ok_or(0)?;
    // SAFETY: this CPU's slot; preemption is off in the tracepoint.
    let slots = unsafe { &mut *slots };
    if spins(flags) {
        // The same lock again on top of the stack continues that wait:
        // nothing to walk.
        let depth = slots.depth as usize;
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
    }
    // Walking a stack costs ~3 us: spinning waits (short, frequent) get a
    // per-CPU budget; sleeping waits (long, rare) always get one.
    let caller = if !spins(flags) || slots.take_stack(now, SPIN_STACKS_PER_WINDOW.load()) {
        caller_of(ctx, flags)
    } else {
        bump(&LOCK_COUNTERS, counter::STACKS_NOT_SAMPLED);
        CALLER_NOT_SAMPLED
    };
    let wait = if spins(flags) {
        let depth = slots.depth as usize;
        if depth >= CPU_DEPTH {
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
    let outcome = wait.begin(lock, flags, caller, now);
    if outcome == Begin::Replaced {
        bump(&LOCK_COUNTERS, counter::REPLACED);
    }
    if outcome != Begin::Continued && !spins(flags) {
        if let Some((state, cgroup)) = owner_of(lock, flags) {
            wait.owner = state;
            wait.owner_cgroup = cgroup;
        }
    }
    Ok(())
}

/// What the owner of a sleeping lock is doing now, and its workload: the
/// owner is in the lock word of a mutex and of an rwsem held for writing
/// (bit 0 of an rwsem's word marks readers, whose word names only the
/// last of them: not an owner), above the low three flag bits.
fn owner_of(lock: u64, flags: u32) -> Option<(u32, u64)> {
    let offset = if flags & F_MUTEX != 0 {
        MUTEX_OWNER_OFFSET.load()
    } else if flags & (F_READ | F_WRITE) != 0 && flags & (F_RT | F_PERCPU | F_SPIN) == 0 {
        RWSEM_OWNER_OFFSET.load()
    } else {
        return None;
    };
    if offset == u32::MAX {
        return None;
    }
    let word: u64 = task::read(lock, offset)?;
    if flags & F_MUTEX == 0 && word & 1 != 0 {
        return None;
    }
    let owner = word & !7;
    if owner == 0 {
        return None;
    }
    let (on_cpu, state) = task::state_untrusted(owner)?;
    let state = match (on_cpu, state) {
        (true, _) => OWNER_RUNNING,
        (false, 0) => OWNER_PREEMPTED,
        (false, _) => OWNER_SLEEPING,
    };
    Some((state, task::cgroup_of_untrusted(owner)?))
}

/// Walks the waiter's stack for its caller; the first time a (type,
/// caller) is seen this round, its entry is created with the stack from
/// the locking code on, as an example for the report.
fn caller_of<C: EbpfContext>(ctx: &C, flags: u32) -> u64 {
    let Some(scratch) = LOCK_SCRATCH.get_ptr_mut(0) else {
        return CALLER_UNKNOWN;
    };
    // SAFETY: this CPU's scratch; preemption is off in the tracepoint.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: a tracing context and a buffer in a map value of its size.
    let bytes = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            scratch.frames.as_mut_ptr().cast(),
            (8 * SEARCH_DEPTH) as u32,
            0,
        )
    };
    if bytes < 0 {
        bump(&LOCK_COUNTERS, counter::STACK_ERRORS);
        return CALLER_UNKNOWN;
    }
    let text = [
        (LOCK_TEXT_START.load(), LOCK_TEXT_END.load()),
        (SCHED_TEXT_START.load(), SCHED_TEXT_END.load()),
    ];
    let (caller, from) = find_caller(&scratch.frames, bytes as usize / 8, &text);
    let key = CallerKey {
        caller,
        flags,
        _pad: 0,
    };
    let map = if writing_second() {
        &LOCK_BY_CALLER_1
    } else {
        &LOCK_BY_CALLER_0
    };
    if map.get_ptr_mut(&key).is_none() {
        scratch.entry.stat = Stat::default();
        for i in 0..STACK_DEPTH as usize {
            let f = from + i;
            scratch.entry.stack[i] = if f < SEARCH_DEPTH {
                scratch.frames[f & (SEARCH_DEPTH - 1)]
            } else {
                0
            };
        }
        // BPF_NOEXIST: an entry created meanwhile (by an interrupt) wins.
        if map.insert(&key, &scratch.entry, 1).is_err() && map.get_ptr_mut(&key).is_none() {
            full(ctx, counter::DROP_CALLER_MAP_FULL);
        }
    }
    caller
}

fn try_end<C: EbpfContext>(ctx: &C, lock: u64) {
    bump(&LOCK_COUNTERS, counter::EV_END);
    // SAFETY: helper without pointer arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let done = end_on_cpu(lock, now).or_else(|| end_on_task(lock, now));
    let Some(done) = done else {
        // With a filter, ends of waits it skipped are expected.
        if LOCK_TYPE_MASK.load() == 0 && FILTER_TGID.load() == 0 && FILTER_CGROUP.load() == 0 {
            bump(&LOCK_COUNTERS, counter::END_WITHOUT_BEGIN);
        }
        return;
    };
    account(ctx, &done, lock);
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

fn account<C: EbpfContext>(ctx: &C, done: &Wait, lock: u64) {
    let wait_ns = done.since_ns;
    let flags = done.flags;
    if let Some(h) = LOCK_HIST.get_ptr_mut(flags & (TYPES - 1)) {
        // SAFETY: this CPU's entry of a per-CPU array.
        let h = unsafe { &mut *h };
        if let Some(b) = h.buckets.get_mut(log2_bucket(wait_ns)) {
            *b += 1;
        }
        h.sum_ns += wait_ns;
        if wait_ns > h.max_ns {
            h.max_ns = wait_ns;
        }
    }
    let caller = CallerKey {
        caller: done.caller,
        flags,
        _pad: 0,
    };
    let addr = AddrKey {
        lock,
        flags,
        _pad: 0,
    };
    // The waiter is `current` at contention_end.
    // SAFETY: helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if writing_second() {
        add_caller(ctx, &LOCK_BY_CALLER_1, &caller, wait_ns);
        add(
            ctx,
            &LOCK_BY_ADDR_1,
            &addr,
            wait_ns,
            counter::DROP_ADDR_MAP_FULL,
        );
        add(
            ctx,
            &LOCK_WORKLOADS_1,
            &cgroup,
            wait_ns,
            counter::DROP_WORKLOAD_MAP_FULL,
        );
        if let Some(k) = owner_key(done, cgroup) {
            add(
                ctx,
                &LOCK_OWNERS_1,
                &k,
                wait_ns,
                counter::DROP_OWNER_MAP_FULL,
            );
        }
    } else {
        add_caller(ctx, &LOCK_BY_CALLER_0, &caller, wait_ns);
        add(
            ctx,
            &LOCK_BY_ADDR_0,
            &addr,
            wait_ns,
            counter::DROP_ADDR_MAP_FULL,
        );
        add(
            ctx,
            &LOCK_WORKLOADS_0,
            &cgroup,
            wait_ns,
            counter::DROP_WORKLOAD_MAP_FULL,
        );
        if let Some(k) = owner_key(done, cgroup) {
            add(
                ctx,
                &LOCK_OWNERS_0,
                &k,
                wait_ns,
                counter::DROP_OWNER_MAP_FULL,
            );
        }
    }
}

#[inline(always)]
fn owner_key(done: &Wait, waiter: u64) -> Option<OwnerKey> {
    (done.owner != OWNER_UNKNOWN).then_some(OwnerKey {
        waiter,
        owner: done.owner_cgroup,
        state: done.owner,
        _pad: 0,
    })
}

fn add_caller<C: EbpfContext>(
    ctx: &C,
    map: &PerCpuHashMap<CallerKey, CallerStat>,
    key: &CallerKey,
    wait_ns: u64,
) {
    if let Some(s) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a per-CPU hash.
        unsafe { (*s).stat.add(wait_ns) };
        return;
    }
    // Created at begin unless the table was drained meanwhile, the wait
    // was not walked, or it was full: without an example stack then.
    let Some(scratch) = LOCK_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch; preemption is off in the tracepoint.
    let entry = unsafe { &mut (*scratch).entry };
    entry.stat = Stat::default();
    entry.stat.add(wait_ns);
    entry.stack = [0; STACK_DEPTH as usize];
    if map.insert(key, entry, 1).is_err() {
        match map.get_ptr_mut(key) {
            // SAFETY: this CPU's value of a per-CPU hash.
            Some(s) => unsafe { (*s).stat.add(wait_ns) },
            None => full(ctx, counter::DROP_CALLER_MAP_FULL),
        }
    }
}

fn add<C: EbpfContext, K>(ctx: &C, map: &PerCpuHashMap<K, Stat>, key: &K, wait_ns: u64, drop: u32) {
    if let Some(s) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a per-CPU hash.
        unsafe { (*s).add(wait_ns) };
        return;
    }
    let mut s = Stat::default();
    s.add(wait_ns);
    // BPF_NOEXIST: an entry created meanwhile (by an interrupt) wins.
    if map.insert(key, &s, 1).is_err() {
        match map.get_ptr_mut(key) {
            // SAFETY: this CPU's value of a per-CPU hash.
            Some(e) => unsafe { (*e).add(wait_ns) },
            None => full(ctx, drop),
        }
    }
}

/// Counts a full table, and says so once per CPU.
fn full<C: EbpfContext>(ctx: &C, counter: u32) {
    bump(&LOCK_COUNTERS, counter);
    if first_time(&LOCK_LOGGED, counter) {
        warn!(
            ctx,
            "a lock contention table is full within one round (counter {}); new entries are dropped until it is drained",
            counter
        );
    }
}
