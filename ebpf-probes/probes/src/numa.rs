//! NUMA per workload: page allocations local or remote to the allocating
//! CPU's node (`kmem:mm_page_alloc`), NUMA-balancing task moves,
//! swaps and failed moves (`sched:sched_{move,swap,stick}_numa`, in the
//! task's own context), and pages migrated by reason
//! (`migrate:mm_migrate_pages`). `mm_page_alloc` fires on every page
//! allocation: it is a BTF tracepoint (as a classic one the kernel spent
//! ~250 ns per event building the record), and the page's node comes from
//! the node bits of `page->flags`, whose position the agent derives from
//! BTF (MAX_NUMNODES); the others are classic, with tracefs offsets.

use aya_ebpf::{
    helpers::bpf_get_numa_node_id,
    macros::{btf_tracepoint, map},
    maps::{Array, PerCpuArray},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext, Global,
};
use aya_log_ebpf::warn;
use hostprobe_common::{
    numa::{counter, Stats, MAX_REASONS},
    DEFAULT_MAX_WORKLOADS,
};

use crate::tables;
use crate::util::{bump, first_time, selected};

/// Possible nodes: a larger node id means the flags layout is not what the
/// agent derived (counted as an error).
#[no_mangle]
static NR_NODES: Global<u32> = Global::new(1);
/// `page->flags` offset, and where its node bits are: node =
/// (flags >> NODE_PGSHIFT) & NODE_MASK.
#[no_mangle]
static PAGE_FLAGS_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static NODE_PGSHIFT: Global<u32> = Global::new(54);
#[no_mangle]
static NODE_MASK: Global<u64> = Global::new(1023);
#[no_mangle]
static MIGRATE_SUCCEEDED_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static MIGRATE_REASON_OFFSET: Global<u32> = Global::new(0);

#[map]
static NUMA_WORKLOADS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(DEFAULT_MAX_WORKLOADS, 0);
/// Pages migrated, by `enum migrate_reason`.
#[map]
static NUMA_MIGRATED: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_REASONS, 0);
#[map]
static NUMA_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static NUMA_LOGGED: Array<u32> = Array::with_max_entries(counter::COUNT, 0);

#[btf_tracepoint(function = "mm_page_alloc")]
pub fn mm_page_alloc(ctx: BtfTracePointContext) -> i32 {
    count_page_alloc(&ctx);
    0
}

/// The classic tracepoint programs return 1 so that perf users of the
/// tracepoints (perf stat, numastat-like tools) still see the events: one
/// returning 0 hides them (aya's `#[tracepoint]` macro always returns 0).
#[no_mangle]
#[link_section = "tracepoint/sched/sched_move_numa"]
pub extern "C" fn sched_move_numa(ctx: *mut core::ffi::c_void) -> u32 {
    balancing(&TracePointContext::new(ctx), counter::EV_MOVE);
    1
}

#[no_mangle]
#[link_section = "tracepoint/sched/sched_swap_numa"]
pub extern "C" fn sched_swap_numa(ctx: *mut core::ffi::c_void) -> u32 {
    balancing(&TracePointContext::new(ctx), counter::EV_SWAP);
    1
}

#[no_mangle]
#[link_section = "tracepoint/sched/sched_stick_numa"]
pub extern "C" fn sched_stick_numa(ctx: *mut core::ffi::c_void) -> u32 {
    balancing(&TracePointContext::new(ctx), counter::EV_STICK);
    1
}

#[no_mangle]
#[link_section = "tracepoint/migrate/mm_migrate_pages"]
pub extern "C" fn mm_migrate_pages(ctx: *mut core::ffi::c_void) -> u32 {
    let _ = try_migrate_pages(&TracePointContext::new(ctx));
    1
}

fn count_page_alloc(ctx: &BtfTracePointContext) {
    bump(&NUMA_COUNTERS, counter::EV_PAGE_ALLOC);
    // (page, order, gfp_flags, migratetype); page is NULL when it failed.
    let page: *const u8 = ctx.arg(0);
    if page.is_null() || !selected() {
        return;
    }
    let order: u32 = ctx.arg(1);
    // SAFETY: `page` is the tracepoint's trusted `struct page *`; the
    // verifier checks the load against BTF (a direct load, no helper call).
    let flags: u64 =
        unsafe { *(page.wrapping_add(PAGE_FLAGS_OFFSET.load() as usize) as *const u64) };
    let node = ((flags >> (NODE_PGSHIFT.load() & 63)) & NODE_MASK.load()) as u32;
    if node >= NR_NODES.load() {
        bump(&NUMA_COUNTERS, counter::ERR_NO_NODE);
        return;
    }
    // SAFETY: helper without arguments.
    let remote = node != unsafe { bpf_get_numa_node_id() } as u32;
    let pages = 1u64 << (order & 15);
    update(ctx, |s| {
        if remote {
            s.remote_pages += pages;
        } else {
            s.local_pages += pages;
        }
    });
}

fn balancing(ctx: &TracePointContext, event: u32) {
    bump(&NUMA_COUNTERS, event);
    if !selected() {
        return;
    }
    update(ctx, |s| match event {
        counter::EV_MOVE => s.move_numa += 1,
        counter::EV_SWAP => s.swap_numa += 1,
        _ => s.stick_numa += 1,
    });
}

fn try_migrate_pages(ctx: &TracePointContext) -> Result<(), i64> {
    bump(&NUMA_COUNTERS, counter::EV_MIGRATE_PAGES);
    // SAFETY: offsets from this kernel's tracefs format file.
    let (succeeded, reason) = unsafe {
        (
            ctx.read_at::<u64>(MIGRATE_SUCCEEDED_OFFSET.load() as usize)?,
            ctx.read_at::<u32>(MIGRATE_REASON_OFFSET.load() as usize)?,
        )
    };
    if let Some(n) = NUMA_MIGRATED.get_ptr_mut(reason & (MAX_REASONS - 1)) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *n += succeeded };
    }
    Ok(())
}

/// Applies `f` to the current workload's per-CPU stats.
#[inline(always)]
fn update<C: EbpfContext>(ctx: &C, f: impl FnOnce(&mut Stats)) {
    if let Err(cgroup) = tables::update(&NUMA_WORKLOADS, f) {
        bump(&NUMA_COUNTERS, counter::DROP_WORKLOAD_MAP_FULL);
        if first_time(&NUMA_LOGGED, counter::DROP_WORKLOAD_MAP_FULL) {
            warn!(
                ctx,
                "NUMA_WORKLOADS is full on a CPU: cgroup {} and later new workloads are not counted there (raise --max-workloads)",
                cgroup
            );
        }
    }
}

impl tables::Entry for Stats {
    fn cgroup(&self) -> u64 {
        self.cgroup_id
    }

    fn reset(&mut self, cgroup: u64) {
        *self = Stats {
            cgroup_id: cgroup,
            ..Stats::default()
        };
    }
}
