//! NUMA per workload: page allocations local or remote to the allocating
//! CPU's node (`kmem:mm_page_alloc`: the page's node from its pfn and the
//! node pfn ranges the agent writes at start), NUMA-balancing task moves,
//! swaps and failed moves (`sched:sched_{move,swap,stick}_numa`, in the
//! task's own context), and pages migrated by reason
//! (`migrate:mm_migrate_pages`). Classic tracepoints with tracefs offsets:
//! the record of `mm_page_alloc` carries the pfn, which a BTF tracepoint
//! would have to compute from `vmemmap_base` (not in kallsyms here).

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_numa_node_id},
    macros::map,
    maps::{Array, PerCpuArray},
    programs::TracePointContext,
    EbpfContext, Global,
};
use aya_log_ebpf::warn;
use hostprobe_common::{
    numa::{counter, PfnRange, Stats, MAX_NODES, MAX_REASONS},
    DEFAULT_MAX_WORKLOADS,
};

use crate::util::{bump, first_time, selected};
use crate::workloads;

/// Nodes in `NODE_PFNS`.
#[no_mangle]
static NR_NODES: Global<u32> = Global::new(1);
#[no_mangle]
static ALLOC_PFN_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static ALLOC_ORDER_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static MIGRATE_SUCCEEDED_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static MIGRATE_REASON_OFFSET: Global<u32> = Global::new(0);

#[map]
static NODE_PFNS: Array<PfnRange> = Array::with_max_entries(MAX_NODES, 0);
#[map]
static NUMA_WORKLOADS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(DEFAULT_MAX_WORKLOADS, 0);
/// Pages migrated, by `enum migrate_reason`.
#[map]
static NUMA_MIGRATED: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_REASONS, 0);
#[map]
static NUMA_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static NUMA_LOGGED: Array<u32> = Array::with_max_entries(counter::COUNT, 0);

/// These programs return 1 so that perf users of the tracepoints (perf
/// stat, numastat-like tools) still see the events (see
/// `sched_migrate_task`).
#[no_mangle]
#[link_section = "tracepoint/kmem/mm_page_alloc"]
pub extern "C" fn mm_page_alloc(ctx: *mut core::ffi::c_void) -> u32 {
    let _ = try_page_alloc(&TracePointContext::new(ctx));
    1
}

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

/// The node whose pfn range holds `pfn`.
#[inline(always)]
fn node_of(pfn: u64) -> Option<u32> {
    let n = NR_NODES.load();
    for i in 0..MAX_NODES {
        if i >= n {
            break;
        }
        let r = NODE_PFNS.get(i)?;
        if pfn >= r.start && pfn < r.end {
            return Some(i);
        }
    }
    None
}

fn try_page_alloc(ctx: &TracePointContext) -> Result<(), i64> {
    bump(&NUMA_COUNTERS, counter::EV_PAGE_ALLOC);
    if !selected() {
        return Ok(());
    }
    // SAFETY: offsets from this kernel's tracefs format file.
    let (pfn, order) = unsafe {
        (
            ctx.read_at::<u64>(ALLOC_PFN_OFFSET.load() as usize)?,
            ctx.read_at::<u32>(ALLOC_ORDER_OFFSET.load() as usize)?,
        )
    };
    let pages = 1u64 << (order & 15);
    let remote = if NR_NODES.load() <= 1 {
        false
    } else {
        // SAFETY: helper without arguments.
        let here = unsafe { bpf_get_numa_node_id() } as u32;
        match node_of(pfn) {
            Some(node) => node != here,
            None => {
                bump(&NUMA_COUNTERS, counter::ERR_NO_NODE);
                return Ok(());
            }
        }
    };
    update(ctx, |s| {
        if remote {
            s.remote_pages += pages;
        } else {
            s.local_pages += pages;
        }
    });
    Ok(())
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
    // SAFETY: helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    match workloads::entry(&NUMA_WORKLOADS, cgroup) {
        // SAFETY: this CPU's entry of a per-CPU array; preemption is off.
        Some(s) => f(unsafe { &mut *s }),
        None => {
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
}

impl workloads::Entry for Stats {
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
