//! Page dirtying: file pages dirtied (`writeback:writeback_dirty_folio`),
//! dirty throttling (`writeback:balance_dirty_pages`) and user write faults
//! (`exceptions:page_fault_user`), per workload.

/// (workload, device) pairs per CPU in `DIRTY_FILES`.
pub const DEFAULT_FILES: u32 = 2048;

/// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
pub const PF_PROT: u64 = 1 << 0;
pub const PF_WRITE: u64 = 1 << 1;

/// Per workload, per CPU: an entry of the open-addressed per-CPU
/// table `DIRTY_WORKLOADS` (as `SchedStats` in `SCHED_WORKLOADS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// 0: free entry.
    pub cgroup_id: u64,
    /// Write faults on a page that was not mapped: new memory.
    pub write_faults_new: u64,
    /// Write faults on a mapped, write-protected page: copy-on-write,
    /// or re-dirtying tracked by soft-dirty / userfaultfd.
    pub write_faults_present: u64,
    /// Jiffies the workload's tasks were paused by dirty throttling.
    pub throttle_jiffies: u64,
    /// Times they were paused.
    pub throttle_pauses: u64,
}

/// Key of file dirtying: workload and the device of the file's
/// filesystem (`super_block.s_dev`, the kernel's dev_t encoding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub cgroup: u64,
    pub dev: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Folios that went from clean to dirty.
    pub folios: u64,
    /// Their size in bytes (large folios count in full).
    pub bytes: u64,
}

pub mod counter {
    pub const EV_DIRTY_FOLIO: u32 = 0;
    pub const EV_BALANCE: u32 = 1;
    pub const EV_FAULT: u32 = 2;
    /// A workload could not be added: `DIRTY_WORKLOADS` was full.
    pub const DROP_WORKLOAD_MAP_FULL: u32 = 3;
    /// A (workload, device) pair could not be added: `DIRTY_FILES` full.
    pub const DROP_FILE_MAP_FULL: u32 = 4;
    /// A folio or its mapping could not be read.
    pub const ERR_READ: u32 = 5;
    pub const COUNT: u32 = 6;
}
#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, no implicit padding.
    unsafe impl aya::Pod for super::Stats {}
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::FileStats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Stats>(), 40);
        assert_eq!(size_of::<FileKey>(), 16);
        assert_eq!(size_of::<FileStats>(), 16);
    }
}
