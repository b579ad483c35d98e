//! The one snapshot type behind every output: Prometheus text, the diagnose
//! report and `--json` are all views of a [`Snapshot`]. Field names are a
//! documented contract (README, "JSON output").

use std::collections::BTreeMap;

use hostprobe_common::{
    DIST_CLASSES, DIST_OTHER_NODE, DIST_SAME_CORE, DIST_SAME_CPU, DIST_SAME_LLC, DIST_SAME_NODE,
};
use serde::Serialize;

use crate::host::topology::Topology;
use crate::model::hist::Log2Hist;

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub hostprobe_version: &'static str,
    pub kernel: String,
    /// Seconds covered by the counters (since the probes were attached).
    pub window_seconds: f64,
    pub topology: Topology,
    /// Kernel-side filter in force, e.g. `pid 1234` or `cgroup /db.slice`.
    pub filter: Option<String>,
    pub probes: Vec<ProbeStatus>,
    pub sched: SchedSection,
    pub lock: LockSection,
    pub dirty: DirtySection,
    pub numa: NumaSection,
    /// Busy share of each CPU over the window (from /proc/stat).
    pub cpu_busy: Vec<f64>,
    /// Scheduler affinity per workload, worst score first.
    pub affinity: Vec<crate::model::affinity::Affinity>,
    /// Live-migration readiness of VMs and named targets (latest pass).
    pub readiness: crate::collectors::readiness::ReadinessSection,
    /// Updates lost because a bounded kernel map was full or a slot was
    /// taken, by map name.
    pub map_drops: BTreeMap<String, u64>,
    /// Seconds the last collection (map reads, cgroup resolution) took.
    pub collection_seconds: f64,
}

/// One kernel program and whether it runs.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeStatus {
    /// Program name, also the `probe` label of the self-metrics.
    pub probe: String,
    /// `category:name` of the tracepoint it hooks.
    pub tracepoint: String,
    /// `tp_btf` or `tracepoint`.
    pub attach_type: String,
    pub attached: bool,
    /// False when it is off by design (`mm_page_alloc` on one NUMA node or
    /// with `--numa-page-alloc never`), not because it failed.
    pub enabled: bool,
    /// Why it is not attached.
    pub reason: Option<String>,
    /// Times it ran.
    pub events: u64,
    /// Events it could not handle (e.g. an out-of-range CPU).
    pub errors: u64,
    /// Runs the kernel skipped (recursion protection: the program, or for a
    /// classic tracepoint any tracing program, was already running on that
    /// CPU); their events are lost.
    pub missed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SchedSection {
    /// All migrations on the host by distance, counted when they happen
    /// (not subject to workload attribution or filters).
    pub host_migrations: Distances,
    /// Switch-ins of tasks that moved since they last ran, however often
    /// they moved: what `perf stat -e cpu-migrations` counts.
    pub host_migrated_switch_ins: u64,
    /// Busiest workloads first; `other` (everything beyond top-K) last.
    pub workloads: Vec<WorkloadSched>,
    /// p99 run-queue latency of all tasks per CPU over the last second or
    /// more (`None`: none measured there).
    pub cpu_runqueue_p99_seconds: Vec<Option<f64>>,
}

/// Migrations by topology distance between source and destination CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Distances {
    pub same_core: u64,
    pub same_llc: u64,
    pub same_node: u64,
    pub other_node: u64,
}

impl Distances {
    pub fn from_classes(c: &[u64; DIST_CLASSES]) -> Self {
        Self {
            same_core: c[DIST_SAME_CORE],
            same_llc: c[DIST_SAME_LLC],
            same_node: c[DIST_SAME_NODE],
            other_node: c[DIST_OTHER_NODE],
        }
    }

    pub fn total(&self) -> u64 {
        self.same_core + self.same_llc + self.same_node + self.other_node
    }

    pub fn labeled(&self) -> [(&'static str, u64); 4] {
        [
            ("same_core", self.same_core),
            ("same_llc", self.same_llc),
            ("same_node", self.same_node),
            ("other_node", self.other_node),
        ]
    }
}

/// Switch-ins by where the task runs now relative to where it last ran.
/// SMT siblings share every cache level, so they count as `same_llc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Placements {
    pub same_cpu: u64,
    pub same_llc: u64,
    pub same_node: u64,
    pub other_node: u64,
}

impl Placements {
    pub fn from_classes(c: &[u64; DIST_CLASSES]) -> Self {
        Self {
            same_cpu: c[DIST_SAME_CPU],
            same_llc: c[DIST_SAME_CORE] + c[DIST_SAME_LLC],
            same_node: c[DIST_SAME_NODE],
            other_node: c[DIST_OTHER_NODE],
        }
    }

    pub fn total(&self) -> u64 {
        self.same_cpu + self.same_llc + self.same_node + self.other_node
    }

    pub fn labeled(&self) -> [(&'static str, u64); 4] {
        [
            ("same_cpu", self.same_cpu),
            ("same_llc", self.same_llc),
            ("same_node", self.same_node),
            ("other_node", self.other_node),
        ]
    }

    /// Share of switch-ins that kept at least the given level of cache
    /// locality: `same_cpu`, `same_llc` (CPU or LLC), `same_node`.
    pub fn ratios(&self) -> Option<PlacementRatios> {
        let t = self.total();
        (t > 0).then(|| {
            let t = t as f64;
            PlacementRatios {
                same_cpu: self.same_cpu as f64 / t,
                same_llc_or_closer: (self.same_cpu + self.same_llc) as f64 / t,
                same_node_or_closer: (self.same_cpu + self.same_llc + self.same_node) as f64 / t,
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlacementRatios {
    pub same_cpu: f64,
    pub same_llc_or_closer: f64,
    pub same_node_or_closer: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadSched {
    /// cgroup v2 path (`/` is the root cgroup) or `other`.
    pub workload: String,
    pub migrations: Distances,
    pub switch_ins: Placements,
    pub placement_ratios: Option<PlacementRatios>,
    pub runqueue_latency: LatencySummary,
    pub oncpu_seconds: f64,
    /// On-CPU time by NUMA node (index = node).
    pub oncpu_seconds_by_node: Vec<f64>,
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

/// Kernel lock contention, shaped like `perf lock contention`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LockSection {
    /// Per lock type (perf's names), most waited first.
    pub by_type: Vec<LockTypeStats>,
    /// Per (type, waiter stack), most waited first: perf's rows.
    pub callers: Vec<LockCaller>,
    /// Per (type, calling function), top-K + `other`: the metric labels.
    pub caller_totals: Vec<LockTotal>,
    /// Per lock (static locks by symbol), most waited first.
    pub locks: Vec<LockObject>,
    /// Per workload (cgroup of the waiter), top-K + `other`.
    pub workloads: Vec<LockTotal>,
    /// Spinning waits counted without walking their stack (the per-CPU
    /// budget `--lock-stacks` was spent); their callers read
    /// `(stack not sampled)`.
    pub spin_waits_without_stack: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockTypeStats {
    pub lock_type: String,
    pub contentions: u64,
    pub wait_seconds: f64,
    pub max_wait_seconds: f64,
    pub wait: LatencySummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockCaller {
    pub lock_type: String,
    /// First frame outside the locking code, `function+0xoff`.
    pub caller: String,
    pub contentions: u64,
    pub wait_seconds: f64,
    pub max_wait_seconds: f64,
    pub avg_wait_seconds: f64,
    /// The waiter's kernel stack, innermost first.
    pub stack: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockObject {
    /// Symbol of a static lock, or `(dynamic)`.
    pub lock: String,
    pub address: String,
    pub lock_type: String,
    pub contentions: u64,
    pub wait_seconds: f64,
    pub max_wait_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockTotal {
    /// Empty for workloads.
    pub lock_type: String,
    /// Calling function, workload path, or `other`.
    pub name: String,
    pub contentions: u64,
    pub wait_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smt_siblings_count_as_same_llc_placements() {
        let p = Placements::from_classes(&[5, 1, 2, 1, 1]);
        assert_eq!(
            p,
            Placements {
                same_cpu: 5,
                same_llc: 3,
                same_node: 1,
                other_node: 1
            }
        );
        let r = p.ratios().unwrap();
        assert_eq!(
            (r.same_cpu, r.same_llc_or_closer, r.same_node_or_closer),
            (0.5, 0.8, 0.9)
        );
        assert_eq!(Placements::default().ratios(), None);
    }

    #[test]
    fn migration_distances_ignore_same_cpu() {
        let d = Distances::from_classes(&[9, 1, 2, 3, 4]);
        assert_eq!(d.total(), 10);
        assert_eq!(d.labeled()[3], ("other_node", 4));
    }
}

/// Page dirtying since start, per workload (top-K + `other`) and device.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirtySection {
    /// Most dirtying first; `other` last.
    pub workloads: Vec<WorkloadDirty>,
    pub devices: Vec<DeviceDirty>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadDirty {
    pub workload: String,
    /// File pages (folios, at their size) that went from clean to dirty.
    pub file_dirtied_bytes: u64,
    pub file_dirtied_folios: u64,
    /// User write faults on unmapped pages: newly touched memory.
    pub write_faults_new: u64,
    /// User write faults on mapped, write-protected pages: copy-on-write.
    pub write_faults_present: u64,
    /// Time paused by dirty throttling (`None`: kernel HZ unknown).
    pub throttle_seconds: Option<f64>,
    pub throttle_pauses: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceDirty {
    /// Mount source (e.g. /dev/vda) or `fstype:major:minor`.
    pub device: String,
    pub file_dirtied_bytes: u64,
    pub file_dirtied_folios: u64,
}

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
