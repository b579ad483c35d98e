//! The NUMA section: allocations local and remote, balancing, pages
//! migrated, residency and on-CPU time by node per workload.

use std::collections::BTreeMap;

use serde::Serialize;

/// NUMA since start: per workload (top-K by pages allocated + `other`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NumaSection {
    pub nodes: usize,
    pub workloads: Vec<WorkloadNuma>,
    /// Pages migrated by the kernel, by reason (e.g. `numa_misplaced`).
    pub pages_migrated: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadNuma {
    pub workload: String,
    /// Pages (4 KiB units) allocated on the allocating CPU's node.
    pub local_pages: u64,
    /// Pages allocated on another node.
    pub remote_pages: u64,
    pub balancing: NumaBalancing,
    /// Resident memory by node (numa_maps; labelled workloads only).
    pub resident_bytes_by_node: Vec<u64>,
    /// On-CPU time by node (from the scheduler signal).
    pub oncpu_seconds_by_node: Vec<f64>,
    /// remote / (local + remote) page allocations.
    pub remote_allocation_ratio: Option<f64>,
    /// Estimate: sum over nodes of (share of on-CPU time on the node) x
    /// (share of resident memory on other nodes).
    pub estimated_remote_access_ratio: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NumaBalancing {
    pub move_numa: u64,
    pub swap_numa: u64,
    pub stick_numa: u64,
}
