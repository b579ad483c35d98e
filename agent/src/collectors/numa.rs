//! NUMA collector: reads the maps of `ebpf-probes/probes/src/numa.rs`
//! (allocations local/remote and NUMA-balancing events per workload, pages
//! migrated by reason) and, for the labelled workloads, where their memory
//! is resident (/proc/PID/numa_maps, at most every `RESIDENCY_EVERY`; on
//! one node too, where it is the resident size).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray};
use aya::Ebpf;
use hostprobe_common::numa::{counter, Stats, MAX_REASONS};

use super::{counter, map_err, take, Pass, ProbeCounters, WorkloadRounds};
use crate::error::Result;
use crate::host::cgroup::CgroupResolver;
use crate::host::proc;
use crate::model::topk::Totals;
use crate::snapshot::{NumaBalancing, WorkloadNuma};

/// numa_maps walks page tables: read it for the labelled workloads only,
/// and not more often than this (or when a newly labelled one has none).
const RESIDENCY_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NumaTotals {
    pub local_pages: u64,
    pub remote_pages: u64,
    pub move_numa: u64,
    pub swap_numa: u64,
    pub stick_numa: u64,
}

impl Totals for NumaTotals {
    /// Pages allocated rank the workloads.
    fn activity(&self) -> u64 {
        self.local_pages + self.remote_pages + self.move_numa + self.swap_numa
    }

    fn add(&mut self, o: &Self) {
        self.local_pages += o.local_pages;
        self.remote_pages += o.remote_pages;
        self.move_numa += o.move_numa;
        self.swap_numa += o.swap_numa;
        self.stick_numa += o.stick_numa;
    }

    fn since(&self, p: &Self) -> Self {
        Self {
            local_pages: self.local_pages.saturating_sub(p.local_pages),
            remote_pages: self.remote_pages.saturating_sub(p.remote_pages),
            move_numa: self.move_numa.saturating_sub(p.move_numa),
            swap_numa: self.swap_numa.saturating_sub(p.swap_numa),
            stick_numa: self.stick_numa.saturating_sub(p.stick_numa),
        }
    }
}

pub struct NumaCollector {
    workloads: PerCpuArray<MapData, Stats>,
    migrated: PerCpuArray<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    /// `enum migrate_reason` value -> name, from kernel BTF.
    reasons: Vec<String>,
    nodes: usize,
    rounds: WorkloadRounds<NumaTotals>,
    residency: HashMap<String, Vec<u64>>,
    residency_at: Option<Instant>,
}

impl NumaCollector {
    /// Removed cgroups whose entries are still in the kernel tables.
    pub fn retired(&self) -> &HashSet<u64> {
        self.rounds.retired()
    }

    pub fn new(ebpf: &mut Ebpf, top_k: usize, nodes: usize, reasons: Vec<String>) -> Result<Self> {
        Ok(Self {
            workloads: PerCpuArray::try_from(take(ebpf, "NUMA_WORKLOADS")?)
                .map_err(map_err("NUMA_WORKLOADS"))?,
            migrated: PerCpuArray::try_from(take(ebpf, "NUMA_MIGRATED")?)
                .map_err(map_err("NUMA_MIGRATED"))?,
            counters: PerCpuArray::try_from(take(ebpf, "NUMA_COUNTERS")?)
                .map_err(map_err("NUMA_COUNTERS"))?,
            reasons,
            nodes,
            rounds: WorkloadRounds::new(top_k),
            residency: HashMap::new(),
            residency_at: None,
        })
    }

    /// `busiest`: the scheduler's labelled workloads, whose residency is read
    /// too (with `mm_page_alloc` detached, nothing else would rank them).
    pub fn collect(
        &mut self,
        cgroups: &mut CgroupResolver,
        busiest: &[String],
        pass: Pass,
    ) -> Result<(Vec<WorkloadNuma>, BTreeMap<String, u64>, ProbeCounters)> {
        let mut now: HashMap<u64, NumaTotals> = HashMap::new();
        let mut present = HashSet::new();
        for index in 0..self.workloads.len() {
            let per_cpu = self
                .workloads
                .get(&index, 0)
                .map_err(map_err("NUMA_WORKLOADS"))?;
            for s in per_cpu.iter().filter(|s| s.cgroup_id != 0) {
                present.insert(s.cgroup_id);
                if self.rounds.retired().contains(&s.cgroup_id) {
                    continue;
                }
                now.entry(s.cgroup_id).or_default().add(&NumaTotals {
                    local_pages: s.local_pages,
                    remote_pages: s.remote_pages,
                    move_numa: s.move_numa,
                    swap_numa: s.swap_numa,
                    stick_numa: s.stick_numa,
                });
            }
        }
        let view = self.rounds.fold(cgroups, now, &present, pass);
        let labelled: Vec<&str> = view.iter().map(|(w, _)| w.as_str()).collect();
        // With two or more nodes, busy workloads the NUMA labels do not rank
        // get a row of their own, without allocations: where they run and
        // where their memory is.
        let unranked: Vec<&String> = busiest
            .iter()
            .filter(|w| self.nodes >= 2 && w.starts_with('/') && !labelled.contains(&w.as_str()))
            .collect();
        let paths: Vec<&str> = labelled
            .iter()
            .copied()
            .chain(unranked.iter().map(|w| w.as_str()))
            .filter(|w| w.starts_with('/'))
            .collect();
        let unread = paths.iter().any(|w| !self.residency.contains_key(*w));
        if unread
            || self
                .residency_at
                .is_none_or(|t| t.elapsed() >= RESIDENCY_EVERY)
        {
            self.residency = paths
                .iter()
                .map(|w| (w.to_string(), resident_by_node(cgroups, w, self.nodes)))
                .collect();
            self.residency_at = Some(Instant::now());
        }
        let unranked_rows = unranked
            .iter()
            .map(|w| (w.to_string(), NumaTotals::default()));
        let workloads = view
            .iter()
            .cloned()
            .chain(unranked_rows)
            .map(|(w, t)| WorkloadNuma {
                workload: w.to_string(),
                local_pages: t.local_pages,
                remote_pages: t.remote_pages,
                balancing: NumaBalancing {
                    move_numa: t.move_numa,
                    swap_numa: t.swap_numa,
                    stick_numa: t.stick_numa,
                },
                resident_bytes_by_node: self.residency.get(&w).cloned().unwrap_or_default(),
                oncpu_seconds_by_node: Vec::new(),
                remote_allocation_ratio: None,
                estimated_remote_access_ratio: None,
            })
            .collect();

        let mut migrated = BTreeMap::new();
        for reason in 0..MAX_REASONS {
            let n: u64 = self
                .migrated
                .get(&reason, 0)
                .map_err(map_err("NUMA_MIGRATED"))?
                .iter()
                .sum();
            // Every reason the kernel names, at 0 too (a counter that
            // exists from the start); unnamed ones only once they count.
            match self.reasons.get(reason as usize).filter(|r| !r.is_empty()) {
                Some(name) => {
                    migrated.insert(name.clone(), n);
                }
                None if n > 0 => {
                    migrated.insert(format!("reason_{reason}"), n);
                }
                None => {}
            }
        }
        let c = |i: u32| counter(&self.counters, "NUMA_COUNTERS", i);
        let counters = ProbeCounters {
            events: BTreeMap::from([
                ("mm_page_alloc", c(counter::EV_PAGE_ALLOC)?),
                ("sched_move_numa", c(counter::EV_MOVE)?),
                ("sched_swap_numa", c(counter::EV_SWAP)?),
                ("sched_stick_numa", c(counter::EV_STICK)?),
                ("mm_migrate_pages", c(counter::EV_MIGRATE_PAGES)?),
            ]),
            errors: BTreeMap::from([("mm_page_alloc", c(counter::ERR_NO_NODE)?)]),
            drops: BTreeMap::from([("NUMA_WORKLOADS".into(), c(counter::DROP_WORKLOAD_MAP_FULL)?)]),
        };
        Ok((workloads, migrated, counters))
    }
}

/// Bytes resident on each node of the processes directly in cgroup
/// `workload` (the kernel side keys workloads by the task's own cgroup).
fn resident_by_node(cgroups: &CgroupResolver, workload: &str, nodes: usize) -> Vec<u64> {
    let mut total = vec![0u64; nodes];
    for pid in cgroups.own_procs(workload).unwrap_or_default() {
        for (node, bytes) in proc::resident_by_node(pid)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if let Some(t) = total.get_mut(node) {
                *t += bytes;
            }
        }
    }
    total
}
