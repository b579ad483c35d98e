//! The one snapshot type behind every output: Prometheus text, the diagnose
//! report and `--json` are all views of a [`Snapshot`]. Field names are a
//! documented contract (README, "JSON output").

use std::collections::BTreeMap;

use serde::Serialize;

use crate::host::topology::Topology;
use crate::model::affinity::Affinity;
use crate::model::hist::Log2Hist;

pub mod check;
pub mod derive;
pub mod dirty;
pub mod lock;
pub mod numa;
pub mod readiness;
#[cfg(test)]
pub(crate) mod sample;
pub mod sched;
pub mod ulock;

pub use crate::probes::ProbeStatus;
pub use dirty::*;
pub use lock::*;
pub use numa::*;
pub use readiness::*;
pub use sched::*;
pub use ulock::*;

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub hostprobe_version: &'static str,
    pub kernel: String,
    /// Seconds covered by the counters (since the probes were attached).
    pub window_seconds: f64,
    pub topology: Topology,
    /// Kernel-side filter in force, e.g. `pid 1234` or `cgroup /db.slice`.
    pub filter: Option<String>,
    /// Where the cgroup v2 hierarchy is mounted (workloads are paths in it).
    pub cgroup_root: String,
    /// Whether that hierarchy offers the cpuset controller.
    pub cgroup_cpuset: bool,
    pub probes: Vec<ProbeStatus>,
    pub sched: SchedSection,
    pub lock: LockSection,
    /// User-space lock waits (futex sleeps).
    pub user_lock: UserLockSection,
    pub dirty: DirtySection,
    pub numa: NumaSection,
    /// Busy share of each CPU over the window (from /proc/stat).
    pub cpu_busy: Vec<f64>,
    /// Scheduler affinity per workload, worst score first.
    pub affinity: Vec<Affinity>,
    /// Live-migration readiness of VMs and named targets (latest pass).
    pub readiness: ReadinessSection,
    /// Updates lost because a bounded kernel map was full or a slot was
    /// taken, by map name.
    pub map_drops: BTreeMap<String, u64>,
    /// Seconds the last collection (map reads, cgroup resolution) took.
    pub collection_seconds: f64,
    /// Walks of the whole cgroup tree to name new cgroups (where they
    /// cannot be opened by handle; at most one per round).
    pub cgroup_tree_walks: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub sum_seconds: f64,
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    /// Log2 histogram: `buckets_ns_log2[i]` counts waits in [2^i, 2^(i+1)) ns.
    pub buckets_ns_log2: Vec<u64>,
}

impl LatencySummary {
    pub fn from_hist(h: &Log2Hist) -> Self {
        let q = |p| h.quantile_ns(p).map(|ns| ns / 1e9);
        Self {
            count: h.count(),
            sum_seconds: h.sum_ns as f64 / 1e9,
            p50_seconds: q(0.50),
            p90_seconds: q(0.90),
            p99_seconds: q(0.99),
            buckets_ns_log2: h.buckets.clone(),
        }
    }

    pub fn hist(&self) -> Log2Hist {
        Log2Hist {
            buckets: self.buckets_ns_log2.clone(),
            sum_ns: (self.sum_seconds * 1e9).round() as u64,
        }
    }
}
