//! What joins sections: figures of one signal that need another's (the
//! NUMA ratios need the scheduler's on-CPU time by node; the affinity
//! model needs every section). Pure functions of the snapshot.

use std::collections::BTreeMap;

use super::{NumaSection, SchedSection, Snapshot};
use crate::host::topology::Topology;
use crate::model::affinity::{self, Affinity};
use crate::model::remote_access::estimated_remote_access;

/// Fills each NUMA row's ratios: remote allocations, and the estimated
/// remote-access share from where the workload ran (the scheduler's on-CPU
/// time by node) and where its memory is.
pub fn join_numa(numa: &mut NumaSection, sched: &SchedSection) {
    for w in &mut numa.workloads {
        let allocated = w.local_pages + w.remote_pages;
        w.remote_allocation_ratio =
            (allocated > 0).then(|| w.remote_pages as f64 / allocated as f64);
        if let Some(s) = sched.workloads.iter().find(|s| s.workload == w.workload) {
            w.oncpu_seconds_by_node = s.oncpu_seconds_by_node.clone();
        }
        w.estimated_remote_access_ratio =
            estimated_remote_access(&w.oncpu_seconds_by_node, &w.resident_bytes_by_node);
    }
}

/// The affinity model over the snapshot's workloads, worst score first.
pub fn affinity(s: &Snapshot) -> Vec<Affinity> {
    let host = affinity::Host {
        node_cpus: cpu_groups(&s.topology, |c| c.node),
        llc_cpus: cpu_groups(&s.topology, |c| c.llc),
        cpu_busy: s.cpu_busy.clone(),
        cpu_runq_p99: s.sched.cpu_runqueue_p99_seconds.clone(),
        cgroup_root: s.cgroup_root.clone(),
        cgroup_cpuset: s.cgroup_cpuset,
    };
    let mut out: Vec<Affinity> = affinity_inputs(s)
        .iter()
        .map(|w| affinity::evaluate(w, &host))
        .collect();
    out.sort_by(|a, b| a.score.total_cmp(&b.score));
    out
}

/// Present CPUs grouped by `key` (node, LLC), in key order.
fn cpu_groups(t: &Topology, key: fn(&hostprobe_common::sched::CpuTopo) -> u32) -> Vec<Vec<u32>> {
    let mut m: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (cpu, c) in t.cpus.iter().enumerate().filter(|(_, c)| c.present != 0) {
        m.entry(key(c)).or_default().push(cpu as u32);
    }
    m.into_values().collect()
}

/// The model's inputs: each workload of the scheduler section, with its
/// lock wait and NUMA figures where those name it too.
fn affinity_inputs(s: &Snapshot) -> Vec<affinity::Input> {
    s.sched
        .workloads
        .iter()
        .map(|w| {
            let lock = s.lock.workloads.iter().find(|l| l.name == w.workload);
            let mine = || {
                s.sched
                    .neighbours
                    .pairs
                    .iter()
                    .filter(|p| p.workload == w.workload)
            };
            let top_neighbour = mine()
                .filter(|p| {
                    p.neighbour.starts_with('/') && p.neighbour != "/" && p.neighbour != w.workload
                })
                .max_by(|a, b| a.wait_seconds.total_cmp(&b.wait_seconds))
                .map(|p| affinity::Neighbour {
                    workload: p.neighbour.clone(),
                    wait_seconds: p.wait_seconds,
                });
            let charged = s
                .sched
                .neighbours
                .victims
                .iter()
                .find(|(v, _)| *v == w.workload)
                .map_or_else(|| mine().map(|p| p.wait_seconds).sum(), |(_, t)| *t);
            let numa = s.numa.workloads.iter().find(|n| n.workload == w.workload);
            affinity::Input {
                workload: w.workload.clone(),
                switch_ins: [
                    w.switch_ins.same_cpu,
                    w.switch_ins.same_llc,
                    w.switch_ins.same_node,
                    w.switch_ins.other_node,
                ],
                cross_node_migrations: w.migrations.other_node,
                migrations: w.migrations.total(),
                oncpu_seconds: w.oncpu_seconds,
                lock_wait_seconds: lock.map_or(0.0, |l| l.wait_seconds),
                remote_access: numa.and_then(|n| n.estimated_remote_access_ratio),
                remote_allocations: numa.and_then(|n| n.remote_allocation_ratio),
                resident_by_node: numa
                    .map(|n| n.resident_bytes_by_node.clone())
                    .unwrap_or_default(),
                window_seconds: s.window_seconds,
                runq_wait_seconds: w.runqueue_latency.sum_seconds,
                charged_wait_seconds: charged,
                top_neighbour,
            }
        })
        .collect()
}
