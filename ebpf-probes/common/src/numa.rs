//! NUMA: page allocations local/remote to the allocating CPU's node
//! (`kmem:mm_page_alloc`), NUMA-balancing task moves (`sched:sched_*_numa`)
//! and pages migrated by reason (`migrate:mm_migrate_pages`).

/// Migration reasons counted (the kernel's `enum migrate_reason`).
pub const MAX_REASONS: u32 = 16;

/// Per workload, per CPU: an entry of the open-addressed per-CPU table
/// `NUMA_WORKLOADS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// 0: free entry.
    pub cgroup_id: u64,
    /// Pages (4 KiB units) allocated on the allocating CPU's node.
    pub local_pages: u64,
    /// Pages allocated on another node.
    pub remote_pages: u64,
    /// NUMA balancing moved a task to another node's CPU.
    pub move_numa: u64,
    /// NUMA balancing swapped two tasks between nodes.
    pub swap_numa: u64,
    /// NUMA balancing wanted to move a task and could not.
    pub stick_numa: u64,
}

pub mod counter {
    pub const EV_PAGE_ALLOC: u32 = 0;
    pub const EV_MOVE: u32 = 1;
    pub const EV_SWAP: u32 = 2;
    pub const EV_STICK: u32 = 3;
    pub const EV_MIGRATE_PAGES: u32 = 4;
    /// A workload could not be added: `NUMA_WORKLOADS` full on a CPU.
    pub const DROP_WORKLOAD_MAP_FULL: u32 = 5;
    /// A page's node bits named a node that does not exist: the flags
    /// layout is not what the agent derived.
    pub const ERR_NO_NODE: u32 = 6;
    pub const COUNT: u32 = 7;
}
#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, no implicit padding.
    unsafe impl aya::Pod for super::Stats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Stats>(), 48);
    }
}
