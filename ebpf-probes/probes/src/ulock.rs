//! User-space lock waits, seen from `sched_switch` (no hook of their own:
//! a second program on the scheduler's hottest tracepoint would cost more
//! than everything here). A voluntary switch-out of a thread inside a
//! futex wait (its syscall number and operation read from its user
//! registers, `bpf_task_pt_regs`, 5.15+) starts a wait and records the
//! thread's user stack; the switch that runs the thread again ends it. The
//! wait is so what the thread spent asleep and then queued for a CPU: what
//! the lock cost it, short of the syscall's own few microseconds.
//!
//! Tables: user stacks by hash, waits per (workload, stack) and per
//! workload (with a histogram), each drained (see `tables.rs`). A stack is
//! recorded in the buffer being written when the sleep starts, its wait in
//! the buffer being written when it ends: the agent drains buffers in
//! order, so it has every stack before the waits that name it.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_probe_read_user,
        generated::{self, bpf_get_stack, bpf_task_pt_regs},
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    EbpfContext, Global,
};
use hostprobe_common::{
    lock::Stat,
    log2_bucket,
    sched::TaskSlot,
    ulock::{
        counter, stack_hash, UserStack, WaitKey, Workload, DEFAULT_STACKS, DEFAULT_WAITS,
        DEFAULT_WORKLOADS, NO_STACK, SCAN_WORDS, STACK_DEPTH,
    },
};

use crate::tables::writing_second;
use crate::util::bump;

/// `pt_regs` offsets of the syscall number, the futex operation (second
/// argument), the instruction, stack and frame pointers; `u32::MAX`: the
/// signal is off (no `bpf_task_pt_regs`, or not wanted).
#[no_mangle]
static REGS_NR_OFFSET: Global<u32> = Global::new(u32::MAX);
#[no_mangle]
static REGS_OP_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static REGS_IP_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static REGS_SP_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static REGS_FP_OFFSET: Global<u32> = Global::new(0);
/// This architecture's numbers of `futex`, `futex_waitv` and `futex_wait`
/// (`u32::MAX`: none).
#[no_mangle]
static SYS_FUTEX: Global<u32> = Global::new(u32::MAX);
#[no_mangle]
static SYS_FUTEX_WAITV: Global<u32> = Global::new(u32::MAX);
#[no_mangle]
static SYS_FUTEX_WAIT: Global<u32> = Global::new(u32::MAX);
/// Whether to search the stack for the caller of a library without frame
/// pointers (x86-64 call encodings).
#[no_mangle]
static SCAN_CALLER: Global<u32> = Global::new(0);

#[map]
static ULOCK_STACKS_0: HashMap<u64, UserStack> = HashMap::with_max_entries(DEFAULT_STACKS, 0);
#[map]
static ULOCK_STACKS_1: HashMap<u64, UserStack> = HashMap::with_max_entries(DEFAULT_STACKS, 0);
#[map]
static ULOCK_WAITS_0: PerCpuHashMap<WaitKey, Stat> =
    PerCpuHashMap::with_max_entries(DEFAULT_WAITS, 0);
#[map]
static ULOCK_WAITS_1: PerCpuHashMap<WaitKey, Stat> =
    PerCpuHashMap::with_max_entries(DEFAULT_WAITS, 0);
#[map]
static ULOCK_WORKLOADS_0: PerCpuHashMap<u64, Workload> =
    PerCpuHashMap::with_max_entries(DEFAULT_WORKLOADS, 0);
#[map]
static ULOCK_WORKLOADS_1: PerCpuHashMap<u64, Workload> =
    PerCpuHashMap::with_max_entries(DEFAULT_WORKLOADS, 0);
#[map]
static ULOCK_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
/// A zeroed `Workload`, never written: what a new workload's entry starts
/// from (too big to build on the BPF stack).
#[map]
static ULOCK_EMPTY: Array<Workload> = Array::with_max_entries(1, 0);
/// Per-CPU room for a stack being recorded and the words searched.
#[map]
static ULOCK_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct Scratch {
    stack: UserStack,
    words: [u64; SCAN_WORDS],
    /// Words of `words` below the frame pointer.
    limit: u64,
    sp: u64,
}

/// How far above the stack pointer a frame pointer may be (a thread's
/// stack is 8 MiB by default).
const STACK_SPAN: u64 = 8 << 20;

/// Futex commands that wait: WAIT, LOCK_PI, WAIT_BITSET, WAIT_REQUEUE_PI,
/// LOCK_PI2 (the operation without its PRIVATE and CLOCK_REALTIME bits).
const WAIT_COMMANDS: u32 = 1 << 0 | 1 << 6 | 1 << 9 | 1 << 11 | 1 << 13;
const FUTEX_CMD_MASK: u32 = 0x7f;

/// At a voluntary switch-out of `prev` (`current`): if it sleeps in a
/// futex wait, records its user stack and starts its wait in its slot.
#[inline(always)]
pub fn on_sleep<C: EbpfContext>(ctx: &C, prev: *const u8, s: &mut TaskSlot, tgid: u32, now: u64) {
    let nr_offset = REGS_NR_OFFSET.load();
    if nr_offset == u32::MAX {
        return;
    }
    // SAFETY: `prev` is the BTF task pointer the tracepoint handed over.
    let regs = unsafe { bpf_task_pt_regs(prev as *mut _) } as *const u8;
    if regs.is_null() {
        return;
    }
    let nr = regs_word(regs, nr_offset) as u32;
    let waits = if nr == SYS_FUTEX.load() {
        let cmd = regs_word(regs, REGS_OP_OFFSET.load()) as u32 & FUTEX_CMD_MASK;
        cmd < 32 && WAIT_COMMANDS & (1 << cmd) != 0
    } else {
        nr == SYS_FUTEX_WAITV.load() || nr == SYS_FUTEX_WAIT.load()
    };
    if waits {
        start_wait(ctx, regs, s, tgid, now);
    }
}

/// Starts the wait of slot `s` and records the stack. A function of its
/// own in the object (a BPF-to-BPF call): every way out of it leaves the
/// caller in the same state, so the verifier goes through the rest of
/// `sched_switch` once, not once per path through the stack search.
#[inline(never)]
fn start_wait<C: EbpfContext>(ctx: &C, regs: *const u8, s: &mut TaskSlot, tgid: u32, now: u64) {
    bump(&ULOCK_COUNTERS, counter::EV_SLEEP);
    s.ulock_since_ns = now;
    // A thread that sleeps again where it slept last (the same instruction,
    // stack pointer and frame pointer: the same call path) has the same
    // stack: it is not walked again. Threads contending one lock sleep in
    // one place over and over.
    let (sp, fp) = (
        regs_word(regs, REGS_SP_OFFSET.load()),
        regs_word(regs, REGS_FP_OFFSET.load()),
    );
    let where_ = place(regs_word(regs, REGS_IP_OFFSET.load()), sp, fp);
    if where_ == s.ulock_place && s.ulock_stack != NO_STACK {
        return;
    }
    s.ulock_place = where_;
    s.ulock_stack = record_stack(ctx, sp, fp, tgid);
}

/// A fingerprint of where a thread sleeps (never 0).
#[inline(always)]
fn place(ip: u64, sp: u64, fp: u64) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let h = (ip.wrapping_mul(K) ^ sp).wrapping_mul(K) ^ fp;
    h.wrapping_mul(K) | 1
}

/// At the switch-in of the task of slot `s`: ends its futex wait, if any,
/// charged to `s.cgroup` (its workload when it went to sleep).
#[inline(always)]
pub fn on_run(s: &mut TaskSlot, now: u64) {
    if s.ulock_since_ns != 0 {
        end_wait(s, now);
    }
}

/// Ends the wait of slot `s`: its own function, as `start_wait`.
#[inline(never)]
fn end_wait(s: &mut TaskSlot, now: u64) {
    let wait_ns = now.saturating_sub(s.ulock_since_ns);
    let key = WaitKey {
        cgroup: s.cgroup,
        stack: s.ulock_stack,
    };
    s.ulock_since_ns = 0;
    bump(&ULOCK_COUNTERS, counter::EV_WAKE);
    let (waits, workloads) = if writing_second() {
        (&ULOCK_WAITS_1, &ULOCK_WORKLOADS_1)
    } else {
        (&ULOCK_WAITS_0, &ULOCK_WORKLOADS_0)
    };
    match waits.get_ptr_mut(&key) {
        // SAFETY: this CPU's value; preemption is off in the tracepoint.
        Some(st) => unsafe { (*st).add(wait_ns) },
        None => {
            let st = Stat {
                count: 1,
                total_ns: wait_ns,
                max_ns: wait_ns,
            };
            if waits.insert(&key, &st, 0).is_err() {
                bump(&ULOCK_COUNTERS, counter::DROP_WAIT_MAP_FULL);
            }
        }
    }
    let w = match workloads.get_ptr_mut(&key.cgroup) {
        Some(w) => w,
        None => {
            // Inserted empty, then filled in place.
            let Some(empty) = ULOCK_EMPTY.get(0) else {
                return;
            };
            if workloads.insert(&key.cgroup, empty, 0).is_err() {
                bump(&ULOCK_COUNTERS, counter::DROP_WORKLOAD_MAP_FULL);
                return;
            }
            let Some(w) = workloads.get_ptr_mut(&key.cgroup) else {
                return;
            };
            w
        }
    };
    // SAFETY: this CPU's value; preemption is off in the tracepoint.
    let w = unsafe { &mut *w };
    w.count += 1;
    w.total_ns += wait_ns;
    if wait_ns > w.max_ns {
        w.max_ns = wait_ns;
    }
    if let Some(b) = w.hist.get_mut(log2_bucket(wait_ns)) {
        *b += 1;
    }
}

/// Records the user stack of `current` (stack pointer `sp`, frame pointer
/// `fp`) in the stack buffer being written, if it is not there yet;
/// returns its key. Values
/// go through the scratch map, not registers: the verifier then sees no
/// difference between the paths that led to them and verifies what
/// follows once.
#[inline(always)]
fn record_stack<C: EbpfContext>(ctx: &C, sp: u64, fp: u64, tgid: u32) -> u64 {
    let Some(scratch) = ULOCK_SCRATCH.get_ptr_mut(0) else {
        return NO_STACK;
    };
    // SAFETY: this CPU's scratch; preemption is off in the tracepoint.
    let scratch = unsafe { &mut *scratch };
    // The kernel zeroes the buffer past the frames it writes.
    // SAFETY: a tracing context and a buffer of the size passed.
    let bytes = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            scratch.stack.frames.as_mut_ptr().cast(),
            (8 * STACK_DEPTH) as u32,
            u64::from(BPF_F_USER_STACK),
        )
    };
    if bytes <= 0 {
        bump(&ULOCK_COUNTERS, counter::STACK_ERRORS);
        return NO_STACK;
    }
    scratch.stack.depth = (bytes / 8) as u32;
    scratch.stack.tgid = tgid;
    scratch.stack.caller = 0;
    // A frame pointer outside the stack above `sp`, or a first return
    // address that does not follow a call, is a register in other use
    // (code without frame pointers): the walk from it is garbage that
    // differs from one wait to the next. Only the instruction pointer is
    // kept then (and the caller found on the stack).
    // SAFETY: a plain load of this CPU's scratch.
    let first = unsafe { core::ptr::read_volatile(&scratch.stack.frames[1]) };
    if fp <= sp || fp - sp > STACK_SPAN || !follows_call(first) {
        scratch.stack.depth = 1;
        for f in scratch.stack.frames.iter_mut().skip(1) {
            *f = 0;
        }
    }
    if SCAN_CALLER.load() != 0 {
        find_caller(scratch, sp, fp);
    }
    // SAFETY: a plain load of this CPU's scratch.
    let caller = unsafe { core::ptr::read_volatile(&scratch.stack.caller) };
    let hash = stack_hash(tgid, caller, &scratch.stack.frames);
    let stacks = if writing_second() {
        &ULOCK_STACKS_1
    } else {
        &ULOCK_STACKS_0
    };
    // SAFETY: a lookup of a plain value.
    if unsafe { stacks.get(&hash) }.is_none()
        // BPF_NOEXIST: the same stack recorded meanwhile on another CPU wins.
        && stacks.insert(&hash, &scratch.stack, 1).is_err()
        // SAFETY: as above.
        && unsafe { stacks.get(&hash) }.is_none()
    {
        bump(&ULOCK_COUNTERS, counter::DROP_STACK_MAP_FULL);
    }
    hash
}

/// Sets `scratch.stack.caller` to the highest word of the stack between
/// `sp` and the frame pointer `fp` (or the `SCAN_WORDS` words above `sp`
/// if `fp` is not among them) that follows a `call rel32` (E8) or
/// `call *disp32(%rip)` (FF 15): in a thread asleep in a C library built
/// without frame pointers, the return address into the function that
/// called the library, which the frame-pointer walk skips (it starts from
/// that function's frame pointer). The agent checks it before using it.
/// Each iteration reloads what it compares from the scratch map, so that
/// only the index is carried from one to the next.
#[inline(always)]
fn find_caller(scratch: &mut Scratch, sp: u64, fp: u64) {
    // SAFETY: bpf_probe_read_user checks the address.
    if unsafe {
        generated::bpf_probe_read_user(
            scratch.words.as_mut_ptr().cast(),
            (8 * SCAN_WORDS) as u32,
            sp as *const _,
        )
    } != 0
    {
        return;
    }
    scratch.limit = if fp > sp && fp - sp < (8 * SCAN_WORDS) as u64 {
        (fp - sp) / 8
    } else {
        SCAN_WORDS as u64
    };
    scratch.sp = sp;
    for j in 0..SCAN_WORDS {
        let i = SCAN_WORDS - 1 - j;
        // SAFETY: plain loads of this CPU's scratch.
        let (limit, sp, found, w) = unsafe {
            (
                core::ptr::read_volatile(&scratch.limit),
                core::ptr::read_volatile(&scratch.sp),
                core::ptr::read_volatile(&scratch.stack.caller),
                core::ptr::read_volatile(&scratch.words[i]),
            )
        };
        // Code addresses of user space, not the stack's own.
        if found != 0
            || i as u64 >= limit
            || !(0x1000..0x8000_0000_0000).contains(&w)
            || w.abs_diff(sp) < 1 << 24
        {
            continue;
        }
        let Some(b) = bytes_before(w) else {
            continue;
        };
        if b[3] == 0xe8 || (b[2] == 0xff && b[3] == 0x15) {
            scratch.stack.caller = w;
        }
    }
}

/// Whether the bytes before `ret` in user memory are a call instruction:
/// `call rel32` (E8), or FF /2 (through a register or memory) of 2, 3, 4,
/// 6 or 7 bytes.
#[inline(always)]
fn follows_call(ret: u64) -> bool {
    let Some(b) = bytes_before(ret) else {
        return false;
    };
    let call_at = |i: usize| b[i] == 0xff && (b[i + 1] >> 3) & 7 == 2;
    b[3] == 0xe8 || call_at(6) || call_at(5) || call_at(4) || call_at(2) || call_at(1)
}

/// The 8 bytes of user memory before `ret` (a return address: the call
/// instruction ends there).
#[inline(always)]
fn bytes_before(ret: u64) -> Option<[u8; 8]> {
    if ret < 0x1000 {
        return None;
    }
    // SAFETY: bpf_probe_read_user checks the address.
    let before = unsafe { bpf_probe_read_user((ret - 8) as *const u64) }.ok()?;
    Some(before.to_le_bytes())
}

/// A 64-bit word of a `pt_regs` the helper handed over.
#[inline(always)]
fn regs_word(regs: *const u8, offset: u32) -> u64 {
    // SAFETY: `regs` is the BTF pointer `bpf_task_pt_regs` returned and
    // `offset` names one of its members; the verifier checks the load.
    unsafe { core::ptr::read_volatile(regs.add(offset as usize).cast::<u64>()) }
}
