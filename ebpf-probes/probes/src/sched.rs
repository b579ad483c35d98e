//! Scheduler signal: run-queue latency, placement at switch-in, migrations.
//!
//! `sched_switch`, `sched_wakeup` and `sched_wakeup_new` fire on every
//! context switch, so they are BTF-typed tracepoints (the cheapest hook that
//! hands over `task_struct` pointers) and keep per-task state in a
//! direct-mapped array rather than a shared hash map. Work is attributed to a
//! workload (cgroup v2 id) when the task itself is `current`, i.e. at its
//! next switch-out, because `bpf_get_current_cgroup_id` only sees `current`.
//! `sched_migrate_task` is a BTF tracepoint too: as a classic one the kernel
//! skipped it whenever another tracing program or a map syscall (the agent
//! reading its maps) was running on that CPU, e.g. load balancing in a
//! softirq on that CPU; a BTF tracepoint only skips its own recursion.
//!
//! Gangs: each thread is counted runnable and running in its gang (its
//! process, or its QEMU process's vCPUs) with atomic adds in `GANG_SLOTS`;
//! a 100 Hz per-CPU sampler (`gang_sample`) reads the gang of the task it
//! interrupts and adds its period, split over the gang's running threads,
//! to "together" (all runnable threads on CPUs) or "split" (some waiting
//! while a sibling runs) when two or more are runnable.
//!
//! Who delayed whom: every switch appends the interval that just ended
//! (the outgoing task's cgroup, the time) to its CPU's `SCHED_RUN_RING`.
//! When a task that waited is switched in, its wait is split over the
//! intervals it overlaps on that CPU and charged per (its workload, the
//! workload that ran) to the drained per-CPU table `SCHED_NEIGHBOURS`: all
//! state is this CPU's, no shared hash is touched.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
        bpf_ktime_get_ns,
    },
    macros::{btf_tracepoint, map, perf_event},
    maps::{Array, PerCpuArray},
    programs::{BtfTracePointContext, PerfEventContext},
    EbpfContext, Global,
};
use aya_log_ebpf::warn;

use crate::config::{FILTER_CGROUP, FILTER_TGID, TASK_SLOTS_MASK};
use crate::tables;
use crate::task;
use crate::ulock;
use crate::util::{add, atomic_add_u32, atomic_add_u64, bump, first_time, selected};
use hostprobe_common::{
    log2_bucket,
    sched::{
        counter, pair_index, CpuTopo, GangSlot, NeighbourWait, RunRing, SchedStats, TaskSlot,
        DEFAULT_GANG_SLOTS, DIST_CLASSES, DIST_SAME_CPU, GANG_SAMPLE_PERIOD_NS, GANG_VCPU,
        NEIGHBOURS_PER_WORKLOAD, NEIGHBOUR_IDLE, NEIGHBOUR_UNKNOWN, NO_CPU, NO_PENDING,
        NO_PENDING_PLACE, RUN_RING, SLOT_ALONE, SLOT_MOVED_WHILE_QUEUED, SLOT_RUNNABLE,
        SLOT_RUNNING,
    },
    workload_index, DEFAULT_MAX_WORKLOADS, DEFAULT_TASK_SLOTS, MAX_CPUS, WORKLOAD_PROBES,
};

// Load-time constants, set by the agent (aya freezes .rodata, so the
// verifier sees them as known values).
#[no_mangle]
static TASK_PID_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static TASK_TGID_OFFSET: Global<u32> = Global::new(0);
/// `task_struct.thread_info.cpu` (or `task_struct.cpu` on older kernels).
#[no_mangle]
static TASK_CPU_OFFSET: Global<u32> = Global::new(0);
/// Where the outgoing task's state is: `u32::MAX` for `sched_switch`'s
/// `prev_state` argument (5.18+), else the offset of `task_struct.__state`
/// (or `.state` before 5.14). A load-time constant, so the verifier only
/// sees the branch this kernel takes (before 5.18 there is no fourth
/// argument to read).
#[no_mangle]
static TASK_STATE_OFFSET: Global<u32> = Global::new(u32::MAX);
/// `task_struct.comm`, whose first four bytes tell vCPU threads.
#[no_mangle]
static TASK_COMM_OFFSET: Global<u32> = Global::new(0);
/// `task_struct.signal` and `signal_struct.nr_threads`.
#[no_mangle]
static TASK_SIGNAL_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static SIGNAL_NR_THREADS_OFFSET: Global<u32> = Global::new(0);
/// Entries - 1 of `GANG_SLOTS` (a power of two).
#[no_mangle]
static GANG_SLOTS_MASK: Global<u32> = Global::new(DEFAULT_GANG_SLOTS - 1);
/// Entries - 1 of each buffer of `SCHED_NEIGHBOURS` (a power of two).
#[no_mangle]
static NEIGHBOURS_MASK: Global<u32> =
    Global::new(DEFAULT_MAX_WORKLOADS * NEIGHBOURS_PER_WORKLOAD - 1);

#[map]
static TASK_SLOTS: Array<TaskSlot> = Array::with_max_entries(DEFAULT_TASK_SLOTS, 0);
#[map]
static CPU_TOPO: Array<CpuTopo> = Array::with_max_entries(MAX_CPUS, 0);
#[map]
static SCHED_WORKLOADS: PerCpuArray<SchedStats> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_WORKLOADS, 0);
#[map]
static SCHED_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static GANG_SLOTS: Array<GangSlot> = Array::with_max_entries(DEFAULT_GANG_SLOTS, 0);
#[map]
static SCHED_RUN_RING: PerCpuArray<RunRing> = PerCpuArray::with_max_entries(1, 0);
/// Two buffers (see `tables::drained`): entries `[0, mask]` and
/// `[mask + 1, 2 * mask + 1]`.
#[map]
static SCHED_NEIGHBOURS: PerCpuArray<NeighbourWait> =
    PerCpuArray::with_max_entries(2 * DEFAULT_MAX_WORKLOADS * NEIGHBOURS_PER_WORKLOAD, 0);
/// One flag per rare condition, so each is logged once, not per event.
#[map]
static SCHED_LOGGED: Array<u32> = Array::with_max_entries(counter::COUNT, 0);

#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    let _ = try_wakeup(&ctx, counter::EV_WAKEUP);
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    let _ = try_wakeup(&ctx, counter::EV_WAKEUP_NEW);
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let _ = try_switch(&ctx);
    0
}

#[btf_tracepoint(function = "sched_migrate_task")]
pub fn sched_migrate_task(ctx: BtfTracePointContext) -> i32 {
    count_migration(&ctx);
    0
}

#[inline(always)]
fn try_wakeup(ctx: &BtfTracePointContext, event: u32) -> Result<(), ()> {
    bump(&SCHED_COUNTERS, event);
    let task: *const u8 = ctx.arg(0);
    let tid = task_field(task, TASK_PID_OFFSET.load());
    if tid == 0 || !task_selected(task) {
        return Ok(());
    }
    let slot = claim_slot(tid).ok_or(())?;
    // SAFETY: map value pointer from a successful lookup.
    let s = unsafe { &mut *slot };
    if event == counter::EV_WAKEUP_NEW {
        // A new task may reuse the tid of one that exited: nothing of the
        // old one's slot (its last CPU) belongs to it.
        s.last_cpu = NO_CPU;
        s.pending_place = NO_PENDING_PLACE;
        clear_migrations(s);
        s.cgroup = 0;
        s.flags &= !SLOT_ALONE;
        s.ulock_place = 0;
    }
    count_in_gang(s, task, true, s.flags & SLOT_RUNNING != 0);
    // SAFETY: helper without arguments.
    s.queued_ns = unsafe { bpf_ktime_get_ns() };
    Ok(())
}

fn try_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    bump(&SCHED_COUNTERS, counter::EV_SWITCH);
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let prev_state = match TASK_STATE_OFFSET.load() {
        u32::MAX => ctx.arg::<u64>(3) as u32,
        offset => task_field(prev, offset),
    };
    // SAFETY: plain helpers without arguments.
    let (now, cpu) = unsafe { (bpf_ktime_get_ns(), bpf_get_smp_processor_id()) };

    // `current` is still `prev` here; the idle task has pid 0.
    let pid_tgid = bpf_get_current_pid_tgid();
    let prev_tid = pid_tgid as u32;
    let prev_cgroup = if prev_tid == 0 {
        NEIGHBOUR_IDLE
    } else {
        // SAFETY: helper without arguments.
        unsafe { bpf_get_current_cgroup_id() }
    };
    let ring = record_run(prev_cgroup, now);
    let filter = FILTER_TGID.load();
    if prev_tid != 0 && (filter == 0 || filter == (pid_tgid >> 32) as u32) {
        if let Some(slot) = claim_slot(prev_tid) {
            // SAFETY: map value pointer from a successful lookup.
            let s = unsafe { &mut *slot };
            // Still runnable (preempted, or yielding): its wait starts now.
            // The kernel's own test for `nivcsw` vs `nvcsw`.
            let runnable = preempt & 0xff != 0 || prev_state == 0;
            flush(ctx, s, now, prev_cgroup, runnable);
            s.cgroup = prev_cgroup;
            s.last_cpu = cpu;
            s.queued_ns = if runnable { now } else { 0 };
            s.flags &= !SLOT_MOVED_WHILE_QUEUED;
            count_in_gang(s, prev, runnable, false);
            let cgroup_filter = FILTER_CGROUP.load();
            if !runnable && (cgroup_filter == 0 || cgroup_filter == prev_cgroup) {
                ulock::on_sleep(ctx, prev, s, (pid_tgid >> 32) as u32, now);
            }
        }
    }

    let next_tid = task_field(next, TASK_PID_OFFSET.load());
    if next_tid == 0 || !task_selected(next) {
        return Ok(());
    }
    let slot = claim_slot(next_tid).ok_or(())?;
    // SAFETY: map value pointer from a successful lookup.
    let s = unsafe { &mut *slot };
    ulock::on_run(s, now);
    if s.queued_ns != 0 && now > s.queued_ns {
        s.pending_lat_ns = now - s.queued_ns;
        let moved = s.flags & SLOT_MOVED_WHILE_QUEUED != 0;
        if let Some(ring) = ring {
            // SAFETY: this CPU's entry of a per-CPU array; preemption is off.
            let ring = unsafe { &*ring };
            charge_neighbours(ctx, ring, next, s.cgroup, s.queued_ns, now, moved);
        }
    }
    s.queued_ns = 0;
    s.flags &= !SLOT_MOVED_WHILE_QUEUED;
    count_in_gang(s, next, true, true);
    // Migrations are attributed at switch-out, so any pending now happened
    // since the task last ran.
    if s.pending_migrations.iter().any(|&n| n != 0) {
        bump(&SCHED_COUNTERS, counter::MIGRATED_SWITCH_INS);
    }
    if s.last_cpu != NO_CPU {
        if let Some(d) = distance(s.last_cpu, cpu) {
            s.pending_place = d as u32;
        }
    }
    s.oncpu_since_ns = now;
    Ok(())
}

/// Appends to this CPU's run ring the interval that ends now: the outgoing
/// task's (`cgroup`) run since the previous switch. A run of the workload
/// that ran just before extends its interval instead, so that the ring
/// holds the last `RUN_RING` changes of workload, however short the runs
/// (a ping-pong inside one workload switches every few microseconds).
/// Returns the ring, for the task switched in.
#[inline(always)]
fn record_run(cgroup: u64, now: u64) -> Option<*const RunRing> {
    let p = SCHED_RUN_RING.get_ptr_mut(0)?;
    // SAFETY: this CPU's entry of a per-CPU array; preemption is off.
    let r = unsafe { &mut *p };
    let start = if r.last_switch_ns == 0 {
        now
    } else {
        r.last_switch_ns
    };
    r.last_switch_ns = now;
    if r.head > 0 {
        let last = (r.head - 1) as usize & (RUN_RING - 1);
        if r.cgroup[last] == cgroup && r.end_ns[last] == start {
            r.end_ns[last] = now;
            return Some(p);
        }
    }
    let i = r.head as usize & (RUN_RING - 1);
    r.start_ns[i] = start;
    r.end_ns[i] = now;
    r.cgroup[i] = cgroup;
    r.head += 1;
    Some(p)
}

/// Charges the wait `[since, now]` of `task`, switched in now, to what ran
/// on this CPU meanwhile (`ring`), interval by interval from the newest;
/// what is older than the ring goes to `NEIGHBOUR_UNKNOWN`. `cgroup` is the
/// task's workload at its last switch-out (0: never seen, then read from
/// the task).
fn charge_neighbours<C: EbpfContext>(
    ctx: &C,
    ring: &RunRing,
    task: *const u8,
    cgroup: u64,
    since: u64,
    now: u64,
    moved: bool,
) {
    let victim = if cgroup != 0 {
        cgroup
    } else {
        match task::cgroup_of(task) {
            Some(id) => id,
            None => return,
        }
    };
    let filter = FILTER_CGROUP.load();
    if filter != 0 && filter != victim {
        return;
    }
    let head = ring.head;
    // Start of the oldest interval looked at: the wait before it is unknown.
    let mut known_from = now;
    let second = tables::writing_second();
    let mut k = 1u64;
    while k <= RUN_RING as u64 && k <= head {
        let i = (head - k) as usize & (RUN_RING - 1);
        let (start, end) = (ring.start_ns[i], ring.end_ns[i]);
        let lo = if start > since { start } else { since };
        let hi = if end < now { end } else { now };
        if hi > lo {
            charge(ctx, second, victim, ring.cgroup[i], hi - lo);
        }
        known_from = start;
        if start <= since {
            break;
        }
        k += 1;
    }
    if known_from > since {
        charge(ctx, second, victim, NEIGHBOUR_UNKNOWN, known_from - since);
    }
    let unknown = known_from.saturating_sub(since);
    if unknown > 0 {
        add(&SCHED_COUNTERS, counter::NEIGHBOUR_UNKNOWN_NS, unknown);
    }
    let known = now - since - unknown;
    let exactness = if moved {
        counter::NEIGHBOUR_MOVED_NS
    } else {
        counter::NEIGHBOUR_DIRECT_NS
    };
    add(&SCHED_COUNTERS, exactness, known);
}

/// Adds `ns` of `victim`'s wait behind `neighbour` to this CPU's entry of
/// the pair in the buffer being written.
#[inline(always)]
fn charge<C: EbpfContext>(ctx: &C, second: bool, victim: u64, neighbour: u64, ns: u64) {
    let mask = NEIGHBOURS_MASK.load();
    let base = if second { mask + 1 } else { 0 };
    let first = pair_index(victim, neighbour, mask);
    for i in 0..WORKLOAD_PROBES {
        let Some(e) = SCHED_NEIGHBOURS.get_ptr_mut(base + ((first + i) & mask)) else {
            return;
        };
        // SAFETY: this CPU's entry of a per-CPU array; preemption is off.
        let e = unsafe { &mut *e };
        if e.victim == 0 {
            *e = NeighbourWait {
                victim,
                neighbour,
                wait_ns: ns,
                waits: 1,
            };
            return;
        }
        if e.victim == victim && e.neighbour == neighbour {
            e.wait_ns += ns;
            e.waits += 1;
            return;
        }
    }
    bump(&SCHED_COUNTERS, counter::DROP_NEIGHBOUR_MAP_FULL);
    if first_time(&SCHED_LOGGED, counter::DROP_NEIGHBOUR_MAP_FULL) {
        warn!(
            ctx,
            "SCHED_NEIGHBOURS is full on a CPU: waits of cgroup {} are not charged to every neighbour this round (raise --max-workloads)",
            victim
        );
    }
}

fn count_migration(ctx: &BtfTracePointContext) {
    bump(&SCHED_COUNTERS, counter::EV_MIGRATE);
    // (task_struct *p, int dest_cpu); called before the task's CPU changes,
    // so its CPU field is still the origin.
    let task: *const u8 = ctx.arg(0);
    let dest: u64 = ctx.arg(1);
    let dest = dest as u32;
    let orig = task_field(task, TASK_CPU_OFFSET.load());
    let tid = task_field(task, TASK_PID_OFFSET.load());
    // The tracepoint also fires when the CPU does not change.
    if orig == dest {
        return;
    }
    let Some(d) = distance(orig, dest) else {
        bump(&SCHED_COUNTERS, counter::ERR_BAD_CPU);
        if first_time(&SCHED_LOGGED, counter::ERR_BAD_CPU) {
            warn!(
                ctx,
                "sched_migrate_task: cpu {} -> {} outside the topology table read at start (a CPU brought online since?)",
                orig,
                dest
            );
        }
        return;
    };
    bump(&SCHED_COUNTERS, counter::MIGRATIONS + d as u32);
    if tid == 0 {
        return;
    }
    if let Some(slot) = claim_slot(tid) {
        // SAFETY: map value pointer from a successful lookup.
        let s = unsafe { &mut *slot };
        if let Some(n) = s.pending_migrations.get_mut(d) {
            *n = n.saturating_add(1);
        }
        if s.queued_ns != 0 {
            s.flags |= SLOT_MOVED_WHILE_QUEUED;
        }
    }
}

/// Attributes what `s` measured since its last switch-in, and this
/// switch-out (`runnable`: involuntary), to `cgroup`, that of `current`
/// (the task switching out).
#[inline(always)]
fn flush<C: EbpfContext>(ctx: &C, s: &mut TaskSlot, now: u64, cgroup: u64, runnable: bool) {
    let filter = FILTER_CGROUP.load();
    if filter == 0 || filter == cgroup {
        if let Some(stats) = workload_stats(ctx, cgroup) {
            // SAFETY: per-CPU map value of this CPU; the tracepoint runs with
            // preemption off, so nobody else writes it now.
            let st = unsafe { &mut *stats };
            if s.pending_lat_ns != NO_PENDING {
                if let Some(b) = st.runq_hist.get_mut(log2_bucket(s.pending_lat_ns)) {
                    *b += 1;
                }
                st.runq_sum_ns += s.pending_lat_ns;
            }
            if let Some(p) = st.switch_ins.get_mut(s.pending_place as usize) {
                *p += 1;
            }
            for i in 0..DIST_CLASSES {
                st.migrations[i] += u64::from(s.pending_migrations[i]);
            }
            if s.oncpu_since_ns != 0 && now >= s.oncpu_since_ns {
                let slice = now - s.oncpu_since_ns;
                st.oncpu_ns += slice;
                if let Some(b) = st.slice_hist.get_mut(log2_bucket(slice)) {
                    *b += 1;
                }
            }
            if runnable {
                st.preempted += 1;
            } else {
                st.voluntary += 1;
            }
        }
    }
    s.pending_lat_ns = NO_PENDING;
    s.pending_place = NO_PENDING_PLACE;
    clear_migrations(s);
    s.oncpu_since_ns = 0;
}

/// Zeroes the pending migrations element by element: an array assignment
/// becomes a call to a `memset` subprogram on every switch-out.
#[inline(always)]
fn clear_migrations(s: &mut TaskSlot) {
    for i in 0..DIST_CLASSES {
        // SAFETY: an element of the slot's own array.
        unsafe { core::ptr::write_volatile(&mut s.pending_migrations[i], 0) };
    }
}

#[inline(always)]
fn workload_stats<C: EbpfContext>(ctx: &C, cgroup: u64) -> Option<*mut SchedStats> {
    let e = tables::entry(&SCHED_WORKLOADS, cgroup);
    if e.is_none() {
        bump(&SCHED_COUNTERS, counter::DROP_WORKLOAD_MAP_FULL);
        if first_time(&SCHED_LOGGED, counter::DROP_WORKLOAD_MAP_FULL) {
            warn!(
                ctx,
                "SCHED_WORKLOADS is full on a CPU: cgroup {} and later new workloads are not counted there (raise --max-workloads)",
                cgroup
            );
        }
    }
    e
}

impl tables::Entry for SchedStats {
    fn cgroup(&self) -> u64 {
        self.cgroup_id
    }

    /// Zeroes field by field: the struct is too big for the BPF stack.
    fn reset(&mut self, cgroup: u64) {
        self.cgroup_id = cgroup;
        for b in self.runq_hist.iter_mut() {
            *b = 0;
        }
        self.runq_sum_ns = 0;
        for i in 0..DIST_CLASSES {
            self.switch_ins[i] = 0;
            self.migrations[i] = 0;
        }
        self.oncpu_ns = 0;
        self.preempted = 0;
        self.voluntary = 0;
        for b in self.slice_hist.iter_mut() {
            *b = 0;
        }
        self.gang_together_ns = 0;
        self.gang_split_ns = 0;
    }
}

/// The slot of `tid`, taken over from another thread if needed.
#[inline(always)]
fn claim_slot(tid: u32) -> Option<*mut TaskSlot> {
    let slot = TASK_SLOTS.get_ptr_mut(tid & TASK_SLOTS_MASK.load())?;
    // SAFETY: map value pointer from a successful lookup.
    let s = unsafe { &mut *slot };
    if s.tid != tid {
        if s.tid != 0
            && (s.pending_lat_ns != NO_PENDING
                || s.pending_place != NO_PENDING_PLACE
                || s.pending_migrations.iter().any(|&n| n != 0))
        {
            bump(&SCHED_COUNTERS, counter::DROP_TASK_SLOT_COLLISION);
        }
        // The thread that held the slot leaves its gang's counts with it.
        gang_add(
            s.gang,
            s.flags & SLOT_RUNNABLE != 0,
            s.flags & SLOT_RUNNING != 0,
            u32::MAX,
        );
        *s = TaskSlot {
            tid,
            last_cpu: NO_CPU,
            queued_ns: 0,
            oncpu_since_ns: 0,
            pending_lat_ns: NO_PENDING,
            pending_place: NO_PENDING_PLACE,
            flags: 0,
            pending_migrations: [0; DIST_CLASSES],
            _pad2: 0,
            gang: 0,
            cgroup: 0,
            ulock_since_ns: 0,
            ulock_stack: 0,
            ulock_place: 0,
        };
    }
    Some(slot)
}

/// Moves the task of slot `s` to the state (`runnable`, `running`) in its
/// gang's counts, changing only what differs from what is counted. A task
/// not counted at all joins the gang its name and process say now. The
/// only thread of its process is not counted (it has no sibling to run
/// with): most tasks, spared the atomic adds (`SLOT_ALONE`).
#[inline(always)]
fn count_in_gang(s: &mut TaskSlot, task: *const u8, runnable: bool, running: bool) {
    let (was_runnable, was_running) = (s.flags & SLOT_RUNNABLE != 0, s.flags & SLOT_RUNNING != 0);
    if !was_runnable && !was_running {
        if !runnable && !running {
            s.flags &= !SLOT_ALONE;
            return;
        }
        // Looked at once per wake-up: most tasks are their process's only
        // thread, and reading the count is two dependent loads.
        if s.flags & SLOT_ALONE != 0 {
            return;
        }
        if threads(task) <= 1 {
            s.flags |= SLOT_ALONE;
            return;
        }
        s.gang = gang_of(task);
    }
    if was_runnable == runnable && was_running == running {
        return;
    }
    let (up_r, down_r) = (runnable && !was_runnable, !runnable && was_runnable);
    let (up_n, down_n) = (running && !was_running, !running && was_running);
    if up_r || up_n {
        if !gang_add(s.gang, up_r, up_n, 1) {
            return;
        }
    }
    if down_r || down_n {
        gang_add(s.gang, down_r, down_n, u32::MAX);
    }
    s.flags = (s.flags & !(SLOT_RUNNABLE | SLOT_RUNNING))
        | if runnable { SLOT_RUNNABLE } else { 0 }
        | if running { SLOT_RUNNING } else { 0 };
}

/// Threads of the task's process (`task->signal->nr_threads`).
#[inline(always)]
fn threads(task: *const u8) -> u32 {
    // SAFETY: `task` is a BTF pointer and the offset names its `signal`
    // pointer member; the verifier checks the load.
    let signal = unsafe {
        core::ptr::read_volatile(
            task.add(TASK_SIGNAL_OFFSET.load() as usize)
                .cast::<*const u8>(),
        )
    };
    task_field(signal, SIGNAL_NR_THREADS_OFFSET.load())
}

/// The gang of a task: its process, or its QEMU process's vCPUs (threads
/// whose name starts with `CPU `).
#[inline(always)]
fn gang_of(task: *const u8) -> u32 {
    let tgid = task_field(task, TASK_TGID_OFFSET.load());
    if task_field(task, TASK_COMM_OFFSET.load()) == u32::from_le_bytes(*b"CPU ") {
        tgid | GANG_VCPU
    } else {
        tgid
    }
}

/// The `GANG_SLOTS` entry of `gang`: its own among the `WORKLOAD_PROBES`
/// entries from its hashed index (the vCPU gang of a QEMU process differs
/// from its process's gang only in bit 31), or with `claim` the first one
/// without counted threads, taken over.
#[inline(always)]
fn gang_slot(gang: u32, claim: bool) -> Option<*mut GangSlot> {
    let mask = GANG_SLOTS_MASK.load();
    let first = workload_index(u64::from(gang), mask);
    let mut free = None;
    for i in 0..WORKLOAD_PROBES {
        let p = GANG_SLOTS.get_ptr_mut((first + i) & mask)?;
        // SAFETY: map value pointer from a successful lookup.
        let g = unsafe { &*p };
        if g.gang == gang {
            return Some(p);
        }
        // SAFETY: plain loads of counts other CPUs may be changing: a
        // stale zero only lets two gangs share the entry's times briefly.
        let idle = unsafe {
            core::ptr::read_volatile(&g.runnable) == 0 && core::ptr::read_volatile(&g.running) == 0
        };
        if claim && idle && free.is_none() {
            free = Some(p);
        }
    }
    let p = free?;
    // SAFETY: as above.
    unsafe {
        *p = GangSlot {
            gang,
            ..GangSlot::default()
        }
    };
    Some(p)
}

/// Adds `delta` (1, or `u32::MAX` for -1) to the runnable and/or running
/// count of `gang`; false when it has no entry (every entry of its probe
/// sequence held by gangs with threads counted).
fn gang_add(gang: u32, runnable: bool, running: bool, delta: u32) -> bool {
    if gang == 0 || !(runnable || running) {
        return true;
    }
    let Some(slot) = gang_slot(gang, delta == 1) else {
        bump(&SCHED_COUNTERS, counter::DROP_GANG_SLOT_BUSY);
        return false;
    };
    // SAFETY: map value pointer from a successful lookup.
    let g = unsafe { &mut *slot };
    if runnable {
        atomic_add_u32(&mut g.runnable, delta);
    }
    if running {
        atomic_add_u32(&mut g.running, delta);
    }
    true
}

/// The co-scheduling sampler: on each CPU every `GANG_SAMPLE_PERIOD_NS`,
/// the interrupted task's gang, if two or more of its threads are
/// runnable, gets the period divided by its running threads (each of them
/// is sampled on its own CPU) as together or split time.
#[perf_event]
pub fn gang_sample(_ctx: PerfEventContext) -> u32 {
    let _ = try_gang_sample();
    0
}

fn try_gang_sample() -> Result<(), ()> {
    bump(&SCHED_COUNTERS, counter::EV_GANG_SAMPLE);
    let tid = bpf_get_current_pid_tgid() as u32;
    if tid == 0 || !selected() {
        return Ok(());
    }
    let slot = TASK_SLOTS.get_ptr(tid & TASK_SLOTS_MASK.load()).ok_or(())?;
    // SAFETY: map value pointer from a successful lookup.
    let s = unsafe { &*slot };
    if s.tid != tid || s.flags & SLOT_RUNNING == 0 {
        return Ok(());
    }
    let gang = gang_slot(s.gang, false).ok_or(())?;
    // SAFETY: map value pointer from a successful lookup.
    let g = unsafe { &mut *gang };
    // SAFETY: plain loads of counts other CPUs may be changing.
    let (owner, runnable, running) = unsafe {
        (
            core::ptr::read_volatile(&g.gang),
            core::ptr::read_volatile(&g.runnable),
            core::ptr::read_volatile(&g.running),
        )
    };
    if owner != s.gang || runnable < 2 || running == 0 || running > runnable {
        return Ok(());
    }
    let share = GANG_SAMPLE_PERIOD_NS / u64::from(running);
    let together = running == runnable;
    atomic_add_u64(
        if together {
            &mut g.together_ns
        } else {
            &mut g.split_ns
        },
        share,
    );
    let counted = tables::update(&SCHED_WORKLOADS, |st: &mut SchedStats| {
        if together {
            st.gang_together_ns += share;
        } else {
            st.gang_split_ns += share;
        }
    });
    if counted.is_err() {
        bump(&SCHED_COUNTERS, counter::DROP_WORKLOAD_MAP_FULL);
    }
    Ok(())
}

/// Topology distance class between two CPUs, `None` if either is unknown.
fn distance(a: u32, b: u32) -> Option<usize> {
    if a == b {
        return Some(DIST_SAME_CPU);
    }
    CPU_TOPO.get(a)?.distance(a, CPU_TOPO.get(b)?, b)
}

/// Whether the process filter (if any) selects `task`.
#[inline(always)]
fn task_selected(task: *const u8) -> bool {
    let filter = FILTER_TGID.load();
    filter == 0 || task_field(task, TASK_TGID_OFFSET.load()) == filter
}

/// Reads a 32-bit field of a `task_struct` handed over by a BTF tracepoint.
/// The offset is a load-time constant from the kernel's BTF, so the verifier
/// checks this direct load against the real type.
#[inline(always)]
fn task_field(task: *const u8, offset: u32) -> u32 {
    // SAFETY: `task` is a trusted BTF pointer and `offset` names a 4-byte
    // field of it; the verifier rejects the program otherwise.
    unsafe { core::ptr::read_volatile(task.add(offset as usize).cast::<u32>()) }
}
