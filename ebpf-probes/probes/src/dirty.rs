//! Page dirtying per workload: file folios going from clean to dirty
//! (`writeback:writeback_dirty_folio`, in the writer's context, with the
//! folio's size and its filesystem's device; `writeback_dirty_page`, one
//! page each, on kernels before folios, 5.16), dirty throttling
//! (`writeback:balance_dirty_pages` pause) and user write faults
//! (`exceptions:page_fault_user`, new vs. already-mapped page). Struct
//! offsets from BTF and field offsets from tracefs, both at load time.
//! Page faults are frequent: that program is a BTF tracepoint and counts
//! in an open-addressed per-CPU array, not a hash map.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext, Global,
};
use aya_log_ebpf::warn;
use hostprobe_common::{
    dirty::{counter, FileKey, FileStats, Stats, DEFAULT_FILES, PF_PROT, PF_WRITE},
    DEFAULT_MAX_WORKLOADS,
};

use crate::tables;
use crate::util::{bump, first_time, selected};

/// `struct folio`: `flags`, the `PG_head` bit, and `_nr_pages` (6.18) or
/// `_folio_nr_pages` (6.1), valid when the folio is large (`PG_head`).
#[no_mangle]
static FOLIO_FLAGS_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static FOLIO_PG_HEAD: Global<u32> = Global::new(0);
#[no_mangle]
static FOLIO_NR_PAGES_OFFSET: Global<u32> = Global::new(0);
/// `address_space.host` -> `inode.i_sb` -> `super_block.s_dev`.
#[no_mangle]
static MAPPING_HOST_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static INODE_SB_OFFSET: Global<u32> = Global::new(0);
#[no_mangle]
static SB_DEV_OFFSET: Global<u32> = Global::new(0);
/// Tracefs offset of `balance_dirty_pages.pause`.
#[no_mangle]
static BALANCE_PAUSE_OFFSET: Global<u32> = Global::new(0);

const PAGE_SIZE: u64 = 4096;

#[map]
static DIRTY_WORKLOADS: PerCpuArray<Stats> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_WORKLOADS, 0);
#[map]
static DIRTY_FILES: PerCpuHashMap<FileKey, FileStats> =
    PerCpuHashMap::with_max_entries(DEFAULT_FILES, 0);
#[map]
static DIRTY_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static DIRTY_LOGGED: Array<u32> = Array::with_max_entries(counter::COUNT, 0);

#[btf_tracepoint(function = "writeback_dirty_folio")]
pub fn writeback_dirty_folio(ctx: BtfTracePointContext) -> i32 {
    if try_dirty(&ctx, true).is_err() {
        bump(&DIRTY_COUNTERS, counter::ERR_READ);
    }
    0
}

/// The same before folios: `(struct page *, struct address_space *)`.
#[btf_tracepoint(function = "writeback_dirty_page")]
pub fn writeback_dirty_page(ctx: BtfTracePointContext) -> i32 {
    if try_dirty(&ctx, false).is_err() {
        bump(&DIRTY_COUNTERS, counter::ERR_READ);
    }
    0
}

/// Returns 1: a classic tracepoint program returning 0 hides the event from
/// every perf user of the tracepoint (written by hand because aya's
/// `#[tracepoint]` macro always returns 0).
#[no_mangle]
#[link_section = "tracepoint/writeback/balance_dirty_pages"]
pub extern "C" fn balance_dirty_pages(ctx: *mut core::ffi::c_void) -> u32 {
    let _ = try_balance(&TracePointContext::new(ctx));
    1
}

/// A BTF tracepoint: every user page fault runs it, and it skips building
/// the trace record a classic tracepoint program would read.
#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user(ctx: BtfTracePointContext) -> i32 {
    count_fault(&ctx);
    0
}

/// Reads a kernel value at `base + offset`.
#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel checks the address; offsets come from
    // this kernel's BTF.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }
}

/// `folio`: the first argument is a folio (its pages counted), else a page.
#[inline(always)]
fn try_dirty(ctx: &BtfTracePointContext, folio: bool) -> Result<(), i32> {
    bump(&DIRTY_COUNTERS, counter::EV_DIRTY_FOLIO);
    if !selected() {
        return Ok(());
    }
    let first: *const u8 = ctx.arg(0);
    let mapping: *const u8 = ctx.arg(1);
    if first.is_null() || mapping.is_null() {
        return Err(0);
    }
    let mut pages = 1;
    if folio {
        let flags: u64 = read(first, FOLIO_FLAGS_OFFSET.load())?;
        if (flags >> (FOLIO_PG_HEAD.load() & 63)) & 1 != 0 {
            pages = u64::from(read::<u32>(first, FOLIO_NR_PAGES_OFFSET.load())?);
        }
    }
    let host: *const u8 = read(mapping, MAPPING_HOST_OFFSET.load())?;
    let sb: *const u8 = read(host, INODE_SB_OFFSET.load())?;
    let dev: u32 = read(sb, SB_DEV_OFFSET.load())?;
    let key = FileKey {
        // SAFETY: helper without arguments.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        dev,
        _pad: 0,
    };
    let bytes = pages * PAGE_SIZE;
    if let Some(s) = DIRTY_FILES.get_ptr_mut(&key) {
        // SAFETY: this CPU's value of a per-CPU hash.
        unsafe {
            (*s).folios += 1;
            (*s).bytes += bytes;
        }
        return Ok(());
    }
    let s = FileStats { folios: 1, bytes };
    if DIRTY_FILES.insert(&key, &s, 0).is_err() {
        full(ctx, counter::DROP_FILE_MAP_FULL);
    }
    Ok(())
}

fn try_balance(ctx: &TracePointContext) -> Result<(), i64> {
    bump(&DIRTY_COUNTERS, counter::EV_BALANCE);
    // SAFETY: offset from this kernel's tracefs format file.
    let pause: i64 = unsafe { ctx.read_at(BALANCE_PAUSE_OFFSET.load() as usize)? };
    // The event also fires when the task is not paused (pause <= 0).
    if pause <= 0 || !selected() {
        return Ok(());
    }
    update(ctx, |s| {
        s.throttle_jiffies += pause as u64;
        s.throttle_pauses += 1;
    });
    Ok(())
}

fn count_fault(ctx: &BtfTracePointContext) {
    bump(&DIRTY_COUNTERS, counter::EV_FAULT);
    // (address, regs, error_code)
    let code: u64 = ctx.arg(2);
    if code & PF_WRITE == 0 || !selected() {
        return;
    }
    let present = code & PF_PROT != 0;
    update(ctx, |s| {
        if present {
            s.write_faults_present += 1;
        } else {
            s.write_faults_new += 1;
        }
    });
}

/// Applies `f` to the current workload's per-CPU stats.
#[inline(always)]
fn update<C: EbpfContext>(ctx: &C, f: impl FnOnce(&mut Stats)) {
    if tables::update(&DIRTY_WORKLOADS, f).is_err() {
        full(ctx, counter::DROP_WORKLOAD_MAP_FULL);
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

fn full<C: EbpfContext>(ctx: &C, which: u32) {
    bump(&DIRTY_COUNTERS, which);
    if first_time(&DIRTY_LOGGED, which) {
        warn!(
            ctx,
            "a dirty-page table is full on a CPU (counter {}): new workloads are not counted there (raise --max-workloads)",
            which
        );
    }
}
