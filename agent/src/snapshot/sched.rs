//! The scheduler section: migrations by distance, placement at switch-in,
//! run-queue latency and on-CPU time per workload.

use hostprobe_common::sched::{
    DIST_CLASSES, DIST_OTHER_NODE, DIST_SAME_CORE, DIST_SAME_CPU, DIST_SAME_LLC, DIST_SAME_NODE,
};
use serde::Serialize;

use super::LatencySummary;

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
