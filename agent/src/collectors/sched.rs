//! Scheduler collector: reads the kernel's per-CPU maps of
//! `ebpf-probes/probes/src/sched.rs`, turns per-cgroup cumulative values
//! into per-workload counters with bounded labels (top-K + `other`), and
//! drains the waits charged per (workload, neighbour) pair.

use std::collections::{BTreeMap, HashMap, HashSet};

use aya::maps::{Array, MapData, PerCpuArray};
use aya::Ebpf;
use hostprobe_common::sched::{
    counter, GangSlot, NeighbourWait, SchedStats, DIST_CLASSES, GANG_VCPU, NEIGHBOUR_IDLE,
    NEIGHBOUR_UNKNOWN,
};
use hostprobe_common::{workload_index, HIST_BUCKETS, WORKLOAD_PROBES};

use super::{counter, map_err, take, workload_name, Pass, WorkloadRounds};
use crate::error::Result;
use crate::host::cgroup::CgroupResolver;
use crate::host::{proc, qemu};
use crate::model::hist::Log2Hist;
use crate::model::topk::{compound_key, key_parts, Labels, Totals, OTHER};
use crate::snapshot::{
    Distances, Gang, LatencySummary, NeighbourAttribution, NeighbourWaits, Placements,
    SchedSection, VmSched, WorkloadSched,
};

/// Per-workload totals, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedTotals {
    pub runq: Log2Hist,
    pub switch_ins: [u64; DIST_CLASSES],
    pub migrations: [u64; DIST_CLASSES],
    pub oncpu_ns: u64,
    /// On-CPU time by NUMA node of the CPU (index = node).
    pub oncpu_ns_by_node: Vec<u64>,
    pub preempted: u64,
    pub voluntary: u64,
    /// Run lengths; its sum is `oncpu_ns`.
    pub slices: Log2Hist,
    pub gang_together_ns: u64,
    pub gang_split_ns: u64,
}

/// Adds `b` into `a` element-wise, growing `a` as needed.
fn add_by_node(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

impl SchedTotals {
    /// Adds one CPU's entry; `node` is that CPU's NUMA node.
    fn add_entry(&mut self, v: &SchedStats, node: usize) {
        if self.oncpu_ns_by_node.len() <= node {
            self.oncpu_ns_by_node.resize(node + 1, 0);
        }
        self.oncpu_ns_by_node[node] += v.oncpu_ns;
        for (a, b) in self
            .runq
            .buckets
            .iter_mut()
            .zip(v.runq_hist.iter().take(HIST_BUCKETS))
        {
            *a += b;
        }
        self.runq.sum_ns += v.runq_sum_ns;
        for i in 0..DIST_CLASSES {
            self.switch_ins[i] += v.switch_ins[i];
            self.migrations[i] += v.migrations[i];
        }
        self.oncpu_ns += v.oncpu_ns;
        self.preempted += v.preempted;
        self.voluntary += v.voluntary;
        if self.slices.buckets.len() < HIST_BUCKETS {
            self.slices.buckets.resize(HIST_BUCKETS, 0);
        }
        for (a, b) in self.slices.buckets.iter_mut().zip(v.slice_hist.iter()) {
            *a += b;
        }
        self.slices.sum_ns += v.oncpu_ns;
        self.gang_together_ns += v.gang_together_ns;
        self.gang_split_ns += v.gang_split_ns;
    }
}

impl Totals for SchedTotals {
    fn add(&mut self, other: &SchedTotals) {
        self.runq.add(&other.runq);
        for i in 0..DIST_CLASSES {
            self.switch_ins[i] += other.switch_ins[i];
            self.migrations[i] += other.migrations[i];
        }
        self.oncpu_ns += other.oncpu_ns;
        add_by_node(&mut self.oncpu_ns_by_node, &other.oncpu_ns_by_node);
        self.preempted += other.preempted;
        self.voluntary += other.voluntary;
        self.slices.add(&other.slices);
        self.gang_together_ns += other.gang_together_ns;
        self.gang_split_ns += other.gang_split_ns;
    }

    /// Events in these totals: how busy the workload was, for top-K.
    fn activity(&self) -> u64 {
        self.switch_ins.iter().sum::<u64>() + self.migrations.iter().sum::<u64>()
    }

    fn since(&self, earlier: &SchedTotals) -> SchedTotals {
        let sub = |a: &[u64; DIST_CLASSES], b: &[u64; DIST_CLASSES]| {
            std::array::from_fn(|i| a[i].saturating_sub(b[i]))
        };
        SchedTotals {
            runq: self.runq.delta(&earlier.runq),
            switch_ins: sub(&self.switch_ins, &earlier.switch_ins),
            migrations: sub(&self.migrations, &earlier.migrations),
            oncpu_ns: self.oncpu_ns.saturating_sub(earlier.oncpu_ns),
            oncpu_ns_by_node: self
                .oncpu_ns_by_node
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.saturating_sub(earlier.oncpu_ns_by_node.get(i).copied().unwrap_or(0))
                })
                .collect(),
            preempted: self.preempted.saturating_sub(earlier.preempted),
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            slices: self.slices.delta(&earlier.slices),
            gang_together_ns: self
                .gang_together_ns
                .saturating_sub(earlier.gang_together_ns),
            gang_split_ns: self.gang_split_ns.saturating_sub(earlier.gang_split_ns),
        }
    }
}

impl SchedTotals {
    fn view(&self, workload: String) -> WorkloadSched {
        let switch_ins = Placements::from_classes(&self.switch_ins);
        WorkloadSched {
            workload,
            migrations: Distances::from_classes(&self.migrations),
            placement_ratios: switch_ins.ratios(),
            switch_ins,
            runqueue_latency: LatencySummary::from_hist(&self.runq),
            oncpu_seconds: self.oncpu_ns as f64 / 1e9,
            oncpu_seconds_by_node: self
                .oncpu_ns_by_node
                .iter()
                .map(|&ns| ns as f64 / 1e9)
                .collect(),
            preemptions: self.preempted,
            voluntary_switches: self.voluntary,
            slices: LatencySummary::from_hist(&self.slices),
            gang: Gang::new(self.gang_together_ns, self.gang_split_ns),
        }
    }
}

/// Run-queue wait of a victim charged to a neighbour (or, per victim, to
/// all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charged {
    pub wait_ns: u64,
    pub waits: u64,
}

impl Totals for Charged {
    fn activity(&self) -> u64 {
        self.wait_ns
    }

    fn add(&mut self, o: &Self) {
        self.wait_ns += o.wait_ns;
        self.waits += o.waits;
    }

    /// Drained deltas are never cumulative.
    fn since(&self, earlier: &Self) -> Self {
        Self {
            wait_ns: self.wait_ns.saturating_sub(earlier.wait_ns),
            waits: self.waits.saturating_sub(earlier.waits),
        }
    }
}

/// The name of a neighbour id in the pair table.
fn neighbour_name(cgroups: &mut CgroupResolver, id: u64) -> String {
    match id {
        NEIGHBOUR_IDLE => "(idle)".to_string(),
        NEIGHBOUR_UNKNOWN => "(unknown)".to_string(),
        _ => workload_name(cgroups, id),
    }
}

/// The drained `SCHED_NEIGHBOURS` table: its two halves and the labels its
/// deltas fold into, by pair and by victim.
struct Neighbours {
    map: PerCpuArray<MapData, NeighbourWait>,
    pairs: Labels<Charged>,
    victims: Labels<Charged>,
}

impl Neighbours {
    /// Every used entry of half `b` summed over CPUs by (victim, neighbour)
    /// id; with `clear`, each is zeroed once read (the half is quiescent).
    fn read(&mut self, b: usize, clear: bool) -> Result<HashMap<(u64, u64), Charged>> {
        let half = self.map.len() / 2;
        let mut out: HashMap<(u64, u64), Charged> = HashMap::new();
        for index in b as u32 * half..(b as u32 + 1) * half {
            let per_cpu = self
                .map
                .get(&index, 0)
                .map_err(map_err("SCHED_NEIGHBOURS"))?;
            let mut used = false;
            for e in per_cpu.iter().filter(|e| e.victim != 0) {
                used = true;
                let c = out.entry((e.victim, e.neighbour)).or_default();
                c.wait_ns += e.wait_ns;
                c.waits += e.waits;
            }
            if used && clear {
                let zeros = vec![NeighbourWait::default(); per_cpu.len()];
                let zeros = aya::maps::PerCpuValues::try_from(zeros).map_err(|io_error| {
                    map_err("SCHED_NEIGHBOURS")(aya::maps::MapError::SyscallError(
                        aya::sys::SyscallError {
                            call: "nr_cpus",
                            io_error,
                        },
                    ))
                })?;
                self.map
                    .set(index, zeros, 0)
                    .map_err(map_err("SCHED_NEIGHBOURS"))?;
            }
        }
        Ok(out)
    }

    /// Folds what a round drained (or previews, for a peek, both halves
    /// as they are) into the pair and victim labels.
    fn collect(&mut self, cgroups: &mut CgroupResolver, pass: Pass) -> Result<NeighbourWaits> {
        let read = match pass {
            Pass::Round { drain: b, .. } => self.read(b, true)?,
            Pass::Peek => {
                let mut all = self.read(0, false)?;
                for (k, v) in self.read(1, false)? {
                    all.entry(k).or_default().add(&v);
                }
                all
            }
        };
        let mut pairs: Vec<(String, Charged)> = Vec::new();
        let mut victims: BTreeMap<String, Charged> = BTreeMap::new();
        for ((victim, neighbour), c) in read {
            let v = workload_name(cgroups, victim);
            let n = neighbour_name(cgroups, neighbour);
            victims.entry(v.clone()).or_default().add(&c);
            pairs.push((compound_key(&[&v, &n]), c));
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let victims: Vec<(String, Charged)> = victims.into_iter().collect();
        let (pairs, victims) = match pass {
            Pass::Round { elapsed, .. } => {
                self.pairs.round(&pairs, &[], elapsed);
                self.victims.round(&victims, &[], elapsed);
                (self.pairs.view(), self.victims.view())
            }
            Pass::Peek => (self.pairs.preview(&pairs), self.victims.preview(&victims)),
        };
        Ok(NeighbourWaits::new(
            pairs
                .into_iter()
                .map(|(k, c)| {
                    let [v, n] = key_parts(&k);
                    (v, n, c.wait_ns, c.waits)
                })
                .collect(),
            victims.into_iter().map(|(v, c)| (v, c.wait_ns)).collect(),
        ))
    }
}

/// What the scheduler did to one VM's vCPU threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmTotals {
    /// Run-queue wait of the vCPU threads (schedstat): the guest's steal.
    pub wait_ns: u64,
    pub preemptions: u64,
    pub together_ns: u64,
    pub split_ns: u64,
}

impl Totals for VmTotals {
    fn activity(&self) -> u64 {
        self.wait_ns
    }

    fn add(&mut self, o: &Self) {
        self.wait_ns += o.wait_ns;
        self.preemptions += o.preemptions;
        self.together_ns += o.together_ns;
        self.split_ns += o.split_ns;
    }

    fn since(&self, e: &Self) -> Self {
        Self {
            wait_ns: self.wait_ns.saturating_sub(e.wait_ns),
            preemptions: self.preemptions.saturating_sub(e.preemptions),
            together_ns: self.together_ns.saturating_sub(e.together_ns),
            split_ns: self.split_ns.saturating_sub(e.split_ns),
        }
    }
}

/// How often the VMs and their vCPU threads are looked for (a walk of
/// /proc).
const VM_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Per-VM vCPU figures: the kernel's own per-thread counters of the vCPU
/// threads (schedstat, status) and their gang's co-scheduling, folded into
/// top-K VM labels.
struct Vms {
    gangs: Array<MapData, GangSlot>,
    /// (label, QEMU pid, vCPU thread ids), and when they were found.
    found: Vec<(String, u32, Vec<u32>)>,
    found_at: Option<std::time::Instant>,
    last: HashMap<u32, VmTotals>,
    labels: Labels<VmTotals>,
}

impl Vms {
    /// One VM's counters now: sums over its vCPU threads (a thread that
    /// exited meanwhile is skipped), and its vCPU gang's sampled times.
    fn read(&self, pid: u32, tids: &[u32]) -> VmTotals {
        let mut t = VmTotals::default();
        for tid in tids {
            let base = format!("/proc/{pid}/task/{tid}");
            if let Some((_, wait, _)) = std::fs::read_to_string(format!("{base}/schedstat"))
                .ok()
                .and_then(|x| proc::parse_schedstat(&x))
            {
                t.wait_ns += wait;
            }
            if let Some(n) = std::fs::read_to_string(format!("{base}/status"))
                .ok()
                .and_then(|x| proc::status_field(&x, "nonvoluntary_ctxt_switches"))
            {
                t.preemptions += u64::from(n);
            }
        }
        let gang = pid | GANG_VCPU;
        let mask = self.gangs.len().saturating_sub(1);
        let first = workload_index(u64::from(gang), mask);
        if let Some(g) = (0..WORKLOAD_PROBES)
            .filter_map(|i| self.gangs.get(&((first + i) & mask), 0).ok())
            .find(|g| g.gang == gang)
        {
            t.together_ns = g.together_ns;
            t.split_ns = g.split_ns;
        }
        t
    }

    /// Looks for VMs and their vCPU threads again.
    fn find(&mut self) {
        self.found = qemu::find_vms()
            .into_iter()
            .map(|vm| {
                (
                    format!("vm:{}", vm.name),
                    vm.pid,
                    qemu::vcpu_threads(vm.pid),
                )
            })
            .filter(|(_, _, tids)| !tids.is_empty())
            .collect();
        self.found_at = Some(std::time::Instant::now());
    }

    /// Starts from the VMs' counters now, so that what is reported is
    /// what happened since the agent started, as for the kernel tables.
    fn baseline(&mut self) {
        self.find();
        self.last = self
            .found
            .iter()
            .map(|(_, pid, tids)| (*pid, self.read(*pid, tids)))
            .collect();
    }

    fn collect(&mut self, pass: Pass) -> Vec<VmSched> {
        let due = self.found_at.is_none_or(|at| at.elapsed() >= VM_REFRESH);
        if due && matches!(pass, Pass::Round { .. }) {
            self.find();
        }
        let now: Vec<(u32, String, VmTotals)> = self
            .found
            .iter()
            .map(|(label, pid, tids)| (*pid, label.clone(), self.read(*pid, tids)))
            .collect();
        let deltas: Vec<(String, VmTotals)> = now
            .iter()
            .map(|(pid, label, t)| {
                let last = self.last.get(pid).copied().unwrap_or_default();
                (label.clone(), t.since(&last))
            })
            .collect();
        let view = match pass {
            Pass::Round { elapsed, .. } => {
                let live: HashSet<&String> = now.iter().map(|(_, l, _)| l).collect();
                let gone: Vec<String> = self
                    .labels
                    .view()
                    .into_iter()
                    .map(|(l, _)| l)
                    .filter(|l| l != OTHER && !live.contains(l))
                    .collect();
                self.labels.round(&deltas, &gone, elapsed);
                self.last = now.into_iter().map(|(pid, _, t)| (pid, t)).collect();
                self.labels.view()
            }
            Pass::Peek => self.labels.preview(&deltas),
        };
        view.into_iter()
            .map(|(vm, t)| VmSched {
                vm,
                vcpu_wait_seconds: t.wait_ns as f64 / 1e9,
                vcpu_preemptions: t.preemptions,
                gang: Gang::new(t.together_ns, t.split_ns),
            })
            .collect()
    }
}

pub struct SchedCollector {
    workloads: PerCpuArray<MapData, SchedStats>,
    neighbours: Neighbours,
    vms: Vms,
    counters: PerCpuArray<MapData, u64>,
    rounds: WorkloadRounds<SchedTotals>,
    /// NUMA node of each CPU (per-CPU values come in CPU order).
    cpu_node: Vec<usize>,
    /// Run-queue latency of all workloads per CPU at the last reference
    /// point (moved at most once a second), and the p99 since then.
    cpu_runq_ref: (Vec<Log2Hist>, std::time::Instant),
    cpu_runq_p99: Vec<Option<f64>>,
}

/// Self-metrics of the scheduler programs, read from `SCHED_COUNTERS`.
#[derive(Debug, Clone, Default)]
pub struct SchedCounters {
    pub events: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub host_migrations: Distances,
    pub host_migrated_switch_ins: u64,
    pub drops: BTreeMap<String, u64>,
}

impl SchedCollector {
    /// Removed cgroups whose entries are still in the kernel table.
    pub fn retired(&self) -> &HashSet<u64> {
        self.rounds.retired()
    }

    pub fn new(ebpf: &mut Ebpf, top_k: usize, cpu_node: Vec<usize>) -> Result<Self> {
        let workloads = PerCpuArray::try_from(take(ebpf, "SCHED_WORKLOADS")?)
            .map_err(map_err("SCHED_WORKLOADS"))?;
        let counters = PerCpuArray::try_from(take(ebpf, "SCHED_COUNTERS")?)
            .map_err(map_err("SCHED_COUNTERS"))?;
        let neighbours = PerCpuArray::try_from(take(ebpf, "SCHED_NEIGHBOURS")?)
            .map_err(map_err("SCHED_NEIGHBOURS"))?;
        let gangs = Array::try_from(take(ebpf, "GANG_SLOTS")?).map_err(map_err("GANG_SLOTS"))?;
        let mut vms = Vms {
            gangs,
            found: Vec::new(),
            found_at: None,
            last: HashMap::new(),
            labels: Labels::new(top_k),
        };
        vms.baseline();
        Ok(Self {
            workloads,
            vms,
            neighbours: Neighbours {
                map: neighbours,
                pairs: Labels::new(top_k),
                victims: Labels::new(top_k),
            },
            counters,
            rounds: WorkloadRounds::new(top_k),
            cpu_node,
            cpu_runq_ref: (Vec::new(), std::time::Instant::now()),
            cpu_runq_p99: Vec::new(),
        })
    }

    /// Reads the maps once; a round folds the deltas into the workload
    /// labels. Cgroups that no longer exist are counted one last time and
    /// retired: their entries stay in the kernel table until the kernel
    /// reuses them (the agent hands their ids back through `DEAD_CGROUPS`).
    pub fn collect(
        &mut self,
        cgroups: &mut CgroupResolver,
        pass: Pass,
    ) -> Result<(SchedSection, SchedCounters)> {
        let mut now: HashMap<u64, SchedTotals> = HashMap::new();
        let mut present = HashSet::new();
        // All workloads' run-queue latencies per CPU, cumulative.
        let mut cpu_runq: Vec<Log2Hist> = Vec::new();
        for index in 0..self.workloads.len() {
            let per_cpu = self
                .workloads
                .get(&index, 0)
                .map_err(map_err("SCHED_WORKLOADS"))?;
            for (cpu, entry) in per_cpu.iter().enumerate() {
                if entry.cgroup_id == 0 {
                    continue;
                }
                if cpu_runq.len() <= cpu {
                    cpu_runq.resize(cpu + 1, Log2Hist::default());
                }
                for (a, b) in cpu_runq[cpu]
                    .buckets
                    .iter_mut()
                    .zip(entry.runq_hist.iter().take(HIST_BUCKETS))
                {
                    *a += b;
                }
                present.insert(entry.cgroup_id);
                if !self.rounds.retired().contains(&entry.cgroup_id) {
                    let node = self.cpu_node.get(cpu).copied().unwrap_or(0);
                    now.entry(entry.cgroup_id)
                        .or_default()
                        .add_entry(entry, node);
                }
            }
        }
        // p99 per CPU since the round that last moved the reference (at
        // most once a second), for the affinity model's saturation.
        let p99: Vec<Option<f64>> = cpu_runq
            .iter()
            .enumerate()
            .map(|(cpu, h)| {
                let d = match self.cpu_runq_ref.0.get(cpu) {
                    Some(r) => h.delta(r),
                    None => h.clone(),
                };
                d.quantile_ns(0.99).map(|ns| ns / 1e9)
            })
            .collect();
        if matches!(pass, Pass::Round { .. })
            && (self.cpu_runq_p99.is_empty()
                || self.cpu_runq_ref.1.elapsed() >= std::time::Duration::from_secs(1))
        {
            self.cpu_runq_p99 = p99;
            self.cpu_runq_ref = (cpu_runq, std::time::Instant::now());
        }
        let view = self.rounds.fold(cgroups, now, &present, pass);
        let neighbours = self.neighbours.collect(cgroups, pass)?;
        let vms = self.vms.collect(pass);

        let c = |i: u32| counter(&self.counters, "SCHED_COUNTERS", i);
        let mut migrations = [0u64; DIST_CLASSES];
        for (d, m) in migrations.iter_mut().enumerate() {
            *m = c(counter::MIGRATIONS + d as u32)?;
        }
        let counters = SchedCounters {
            events: BTreeMap::from([
                ("sched_switch", c(counter::EV_SWITCH)?),
                ("sched_wakeup", c(counter::EV_WAKEUP)?),
                ("sched_wakeup_new", c(counter::EV_WAKEUP_NEW)?),
                ("sched_migrate_task", c(counter::EV_MIGRATE)?),
                ("gang_sample", c(counter::EV_GANG_SAMPLE)?),
            ]),
            errors: BTreeMap::from([("sched_migrate_task", c(counter::ERR_BAD_CPU)?)]),
            host_migrations: Distances::from_classes(&migrations),
            host_migrated_switch_ins: c(counter::MIGRATED_SWITCH_INS)?,
            drops: BTreeMap::from([
                (
                    "SCHED_WORKLOADS".to_string(),
                    c(counter::DROP_WORKLOAD_MAP_FULL)?,
                ),
                (
                    "TASK_SLOTS".to_string(),
                    c(counter::DROP_TASK_SLOT_COLLISION)?,
                ),
                (
                    "SCHED_NEIGHBOURS".to_string(),
                    c(counter::DROP_NEIGHBOUR_MAP_FULL)?,
                ),
                ("GANG_SLOTS".to_string(), c(counter::DROP_GANG_SLOT_BUSY)?),
            ]),
        };
        let section = SchedSection {
            host_migrations: counters.host_migrations,
            host_migrated_switch_ins: counters.host_migrated_switch_ins,
            workloads: view.into_iter().map(|(label, t)| t.view(label)).collect(),
            cpu_runqueue_p99_seconds: self.cpu_runq_p99.clone(),
            neighbours,
            vms,
            neighbour_attribution: NeighbourAttribution {
                direct_seconds: c(counter::NEIGHBOUR_DIRECT_NS)? as f64 / 1e9,
                moved_seconds: c(counter::NEIGHBOUR_MOVED_NS)? as f64 / 1e9,
                unknown_seconds: c(counter::NEIGHBOUR_UNKNOWN_NS)? as f64 / 1e9,
            },
        };
        Ok((section, counters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::topk::Labels;

    const R: std::time::Duration = crate::model::topk::HALF_LIFE;

    fn views(l: &Labels<SchedTotals>) -> Vec<WorkloadSched> {
        l.view().into_iter().map(|(n, t)| t.view(n)).collect()
    }

    fn t(switch_ins: u64, migrations: u64) -> SchedTotals {
        let mut x = SchedTotals::default();
        x.switch_ins[0] = switch_ins;
        x.migrations[4] = migrations;
        x.runq.buckets[10] = switch_ins;
        x
    }

    #[test]
    fn sums_per_cpu_values() {
        let mut a = SchedStats::default();
        a.runq_hist[3] = 2;
        a.switch_ins[1] = 4;
        a.oncpu_ns = 10;
        let mut b = a;
        b.migrations[2] = 7;
        let mut s = SchedTotals::default();
        s.add_entry(&a, 0);
        s.add_entry(&b, 1);
        assert_eq!(
            s.oncpu_ns_by_node,
            vec![10, 10],
            "CPU 0 on node 0, CPU 1 on node 1"
        );
        assert_eq!(
            (
                s.runq.buckets[3],
                s.switch_ins[1],
                s.migrations[2],
                s.oncpu_ns
            ),
            (4, 8, 7, 20)
        );
        assert_eq!(s.activity(), 15);
    }

    #[test]
    fn labels_busiest_and_folds_the_rest_into_other() {
        let mut l = Labels::<SchedTotals>::new(1);
        l.round(&[("/a".into(), t(10, 0)), ("/b".into(), t(100, 5))], &[], R);
        let v = views(&l);
        assert_eq!(
            v.iter().map(|w| w.workload.as_str()).collect::<Vec<_>>(),
            ["/b", "other"]
        );
        assert_eq!(v[0].migrations.other_node, 5);
        assert_eq!(v[1].switch_ins.same_cpu, 10);
    }

    #[test]
    fn counters_stay_monotonic_across_rounds() {
        let mut l = Labels::<SchedTotals>::new(1);
        l.round(&[("/a".into(), t(10, 1))], &[], R);
        l.round(&[("/a".into(), t(5, 1)), ("/b".into(), t(20, 0))], &[], R);
        let v = views(&l);
        // /b is busier, but not twice /a's decayed score (11/2 + 6): /a
        // keeps its label and its series, /b's activity goes to other.
        assert_eq!(v[0].workload, "/a");
        assert_eq!(v[0].switch_ins.same_cpu, 15);
        assert_eq!(v[0].migrations.other_node, 2);
        assert_eq!(v[1].workload, "other");
        assert_eq!(v[1].switch_ins.same_cpu, 20);
    }

    #[test]
    fn gone_workloads_free_their_label() {
        let mut l = Labels::<SchedTotals>::new(1);
        l.round(&[("/a".into(), t(10, 0))], &["/a".into()], R);
        l.round(&[("/b".into(), t(1, 0))], &[], R);
        let names: Vec<String> = views(&l).into_iter().map(|w| w.workload).collect();
        assert_eq!(names, ["/b"]);
    }

    #[test]
    fn deltas_subtract_field_by_field() {
        let d = t(10, 4).since(&t(3, 1));
        assert_eq!(
            (d.switch_ins[0], d.migrations[4], d.runq.buckets[10]),
            (7, 3, 7)
        );
    }
}
