//! The scheduler section: migrations by distance, placement at switch-in,
//! run-queue latency, on-CPU time, slices and preemptions per workload, and
//! who delayed whom.

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
    /// Run-queue waits charged to the workloads that held the CPU.
    pub neighbours: NeighbourWaits,
    /// How exactly the waits were charged (self-metric of the method).
    pub neighbour_attribution: NeighbourAttribution,
    /// QEMU VMs' vCPU threads, top-K VMs by vCPU wait, then `other`.
    pub vms: Vec<VmSched>,
}

/// What the host's scheduler did to one VM's vCPU threads (QEMU names them
/// `CPU n/KVM`, `CPU n/TCG`), since they started.
#[derive(Debug, Clone, Serialize)]
pub struct VmSched {
    /// `vm:NAME`, as readiness labels VMs, or `other`.
    pub vm: String,
    /// Run-queue wait of the vCPU threads (their schedstat): what the guest
    /// sees as steal time under KVM.
    pub vcpu_wait_seconds: f64,
    /// Involuntary switch-outs of the vCPU threads.
    pub vcpu_preemptions: u64,
    /// How the vCPU threads got the CPUs together.
    pub gang: Gang,
}

/// Who delayed whom: each workload's run-queue wait charged to what ran on
/// the CPU meanwhile, top-K (victim, neighbour) pairs, then `other`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NeighbourWaits {
    pub pairs: Vec<NeighbourPair>,
    /// Wait charged to any neighbour, per top-K victim (then `other`).
    pub victims: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NeighbourPair {
    /// The waiting workload.
    pub workload: String,
    /// The workload that held the CPU, `(idle)` for the idle task (waking
    /// the CPU), `(unknown)` for waits older than the per-CPU history.
    pub neighbour: String,
    pub wait_seconds: f64,
    /// Waits of the workload during which the neighbour ran.
    pub waits: u64,
    /// Share of the workload's charged wait (when the workload is itself
    /// among the top-K victims).
    pub share_of_wait: Option<f64>,
}

impl NeighbourWaits {
    /// From (victim, neighbour, wait ns, waits) pairs and (victim, wait ns).
    pub fn new(pairs: Vec<(String, String, u64, u64)>, victims: Vec<(String, u64)>) -> Self {
        let total = |v: &str| {
            victims
                .iter()
                .find(|(w, ns)| w == v && *ns > 0 && v != crate::model::topk::OTHER)
                .map(|(_, ns)| *ns as f64)
        };
        Self {
            pairs: pairs
                .iter()
                .map(|(v, n, ns, waits)| NeighbourPair {
                    workload: v.clone(),
                    neighbour: n.clone(),
                    wait_seconds: *ns as f64 / 1e9,
                    waits: *waits,
                    share_of_wait: total(v).map(|t| (*ns as f64 / t).min(1.0)),
                })
                .collect(),
            victims: victims
                .into_iter()
                .map(|(v, ns)| (v, ns as f64 / 1e9))
                .collect(),
        }
    }
}

/// Run-queue wait charged to neighbours, by how: from the history of the
/// CPU the task waited on (`direct`), from the CPU it was switched in on
/// after it moved while waiting (`moved`: an approximation), or beyond the
/// per-CPU history (`unknown`, charged to `(unknown)`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NeighbourAttribution {
    pub direct_seconds: f64,
    pub moved_seconds: f64,
    pub unknown_seconds: f64,
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
    /// Switch-outs while runnable: `nonvoluntary_ctxt_switches`.
    pub preemptions: u64,
    /// Switch-outs to wait: `voluntary_ctxt_switches`.
    pub voluntary_switches: u64,
    /// On-CPU run lengths, switch-in to switch-out.
    pub slices: LatencySummary,
    /// How its processes' threads got the CPUs together.
    pub gang: Gang,
}

/// Co-scheduling of a group of threads (a process's, or a VM's vCPUs),
/// sampled: of the time two or more of them were runnable and one or more
/// ran, `together` is when every runnable one was on a CPU, `split` when
/// some waited while a sibling ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Gang {
    pub together_seconds: f64,
    pub split_seconds: f64,
    /// together / (together + split); `None` without such time.
    pub coscheduled_ratio: Option<f64>,
}

impl Gang {
    pub fn new(together_ns: u64, split_ns: u64) -> Self {
        let all = together_ns + split_ns;
        Self {
            together_seconds: together_ns as f64 / 1e9,
            split_seconds: split_ns as f64 / 1e9,
            coscheduled_ratio: (all > 0).then(|| together_ns as f64 / all as f64),
        }
    }
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
    fn the_coscheduled_ratio_needs_time_with_two_runnable() {
        assert_eq!(Gang::new(0, 0).coscheduled_ratio, None);
        let g = Gang::new(3_000_000_000, 1_000_000_000);
        assert_eq!((g.together_seconds, g.coscheduled_ratio), (3.0, Some(0.75)));
    }

    #[test]
    fn shares_are_of_the_victims_own_charged_wait() {
        let n = NeighbourWaits::new(
            vec![
                ("/a".into(), "/hog".into(), 3_000_000_000, 30),
                ("/a".into(), "(idle)".into(), 1_000_000_000, 2),
                ("other".into(), "other".into(), 5_000_000_000, 9),
            ],
            vec![
                ("/a".into(), 4_000_000_000),
                ("other".into(), 5_000_000_000),
            ],
        );
        let shares: Vec<Option<f64>> = n.pairs.iter().map(|p| p.share_of_wait).collect();
        assert_eq!(shares, [Some(0.75), Some(0.25), None]);
        assert_eq!(n.pairs[0].wait_seconds, 3.0);
    }

    #[test]
    fn migration_distances_ignore_same_cpu() {
        let d = Distances::from_classes(&[9, 1, 2, 3, 4]);
        assert_eq!(d.total(), 10);
        assert_eq!(d.labeled()[3], ("other_node", 4));
    }
}
