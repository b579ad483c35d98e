//! Lock contention collector: drains the tables of
//! `ebpf-probes/probes/src/lock.rs` (per caller, per lock address, per
//! workload: each round's entries are read and deleted, so the kernel
//! tables hold one round at most), folds them into bounded user-side state
//! (labels for the metrics, top tables for the report), and names callers
//! and static locks through /proc/kallsyms.

use std::collections::{BTreeMap, HashMap};

use aya::maps::{MapData, PerCpuArray};
use aya::Ebpf;
use hostprobe_common::lock::{
    counter, AddrKey, CallerKey, CallerStat, Hist, OwnerKey, Stat, CALLER_NOT_SAMPLED,
    CALLER_UNKNOWN, OWNER_PREEMPTED, OWNER_RUNNING, OWNER_SLEEPING, TYPES,
};
use hostprobe_common::HIST_BUCKETS;

use super::{
    counter, fold_workload_deltas, map_err, name_deltas, take, workload_name, Buffers, Pass,
    ProbeCounters,
};
use crate::error::Result;
use crate::host::cgroup::CgroupResolver;
use crate::host::kallsyms::Kallsyms;
use crate::model::hist::Log2Hist;
use crate::model::topk::{compound_key, key_parts, Labels, TopTable, Totals};
use crate::probes::lock_types;
use crate::snapshot::{
    LatencySummary, LockCaller, LockObject, LockOwnerWaits, LockSection, LockTotal, LockTypeStats,
};

/// Entries of each report table kept in the snapshot (the report shows
/// fewer).
const SNAPSHOT_ROWS: usize = 20;
/// (type, caller) rows the report keeps: call sites, far more than ever
/// contend; beyond, the least waited are summed.
const CALLER_ROWS: usize = 4096;
/// Lock addresses the report keeps (dynamic locks are without number).
const LOCK_ROWS: usize = 1024;

/// Waits of one key: how many, how long in all, the longest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

impl Totals for Waits {
    /// Nanoseconds waited rank callers and workloads, as in perf's report.
    fn activity(&self) -> u64 {
        self.total_ns
    }

    fn add(&mut self, o: &Self) {
        self.count += o.count;
        self.total_ns += o.total_ns;
        self.max_ns = self.max_ns.max(o.max_ns);
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            count: self.count.saturating_sub(earlier.count),
            total_ns: self.total_ns.saturating_sub(earlier.total_ns),
            max_ns: self.max_ns,
        }
    }
}

impl From<&Stat> for Waits {
    fn from(s: &Stat) -> Self {
        Self {
            count: s.count,
            total_ns: s.total_ns,
            max_ns: s.max_ns,
        }
    }
}

/// A (type, caller) row: its waits and one stack that led to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CallerRow {
    waits: Waits,
    stack: Vec<u64>,
}

impl Totals for CallerRow {
    fn activity(&self) -> u64 {
        self.waits.activity()
    }

    fn add(&mut self, o: &Self) {
        self.waits.add(&o.waits);
        if self.stack.is_empty() {
            self.stack = o.stack.clone();
        }
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            waits: self.waits.since(&earlier.waits),
            stack: self.stack.clone(),
        }
    }
}

fn sum(per_cpu: &[Stat]) -> Waits {
    per_cpu.iter().fold(Waits::default(), |mut a, s| {
        a.add(&Waits::from(s));
        a
    })
}

pub struct LockCollector {
    by_caller: Buffers<CallerKey, CallerStat>,
    by_addr: Buffers<AddrKey, Stat>,
    workloads: Buffers<u64, Stat>,
    owners: Buffers<OwnerKey, Stat>,
    hist: PerCpuArray<MapData, Hist>,
    counters: PerCpuArray<MapData, u64>,
    kallsyms: Kallsyms,
    /// What the drained tables added up to.
    state: Folded,
}

/// The drained tables' contents since start: report tables of callers and
/// lock addresses, and labels for the metrics.
#[derive(Clone)]
struct Folded {
    callers: TopTable<(u32, u64), CallerRow>,
    locks: TopTable<(u64, u32), Waits>,
    /// Callers aggregated by (type, calling function): the metric labels.
    caller_labels: Labels<Waits>,
    workload_labels: Labels<Waits>,
    /// (waiter's workload, owner's workload, owner's state).
    owner_labels: Labels<Waits>,
}

/// The name of an `OWNER_*` state.
fn owner_state(state: u32) -> &'static str {
    match state {
        OWNER_RUNNING => "running",
        OWNER_PREEMPTED => "preempted",
        OWNER_SLEEPING => "sleeping",
        _ => "unknown",
    }
}

impl LockCollector {
    /// `kallsyms`: the kernel's symbols (empty names nothing), loaded by
    /// the caller while the programs load.
    pub fn new(ebpf: &mut Ebpf, top_k: usize, kallsyms: Kallsyms) -> Result<Self> {
        Ok(Self {
            by_caller: Buffers::new(ebpf, ["LOCK_BY_CALLER_0", "LOCK_BY_CALLER_1"])?,
            by_addr: Buffers::new(ebpf, ["LOCK_BY_ADDR_0", "LOCK_BY_ADDR_1"])?,
            workloads: Buffers::new(ebpf, ["LOCK_WORKLOADS_0", "LOCK_WORKLOADS_1"])?,
            owners: Buffers::new(ebpf, ["LOCK_OWNERS_0", "LOCK_OWNERS_1"])?,
            hist: PerCpuArray::try_from(take(ebpf, "LOCK_HIST")?).map_err(map_err("LOCK_HIST"))?,
            counters: PerCpuArray::try_from(take(ebpf, "LOCK_COUNTERS")?)
                .map_err(map_err("LOCK_COUNTERS"))?,
            kallsyms,
            state: Folded {
                callers: TopTable::new(CALLER_ROWS),
                locks: TopTable::new(LOCK_ROWS),
                caller_labels: Labels::new(top_k),
                workload_labels: Labels::new(top_k),
                owner_labels: Labels::new(top_k),
            },
        })
    }

    /// The name of a caller address.
    fn function(&self, caller: u64) -> String {
        match caller {
            CALLER_NOT_SAMPLED => "(stack not sampled)".into(),
            CALLER_UNKNOWN => "(unknown)".into(),
            ip => self
                .kallsyms
                .function(ip)
                .map_or_else(|| format!("{ip:#x}"), |(n, _)| n.to_string()),
        }
    }

    fn describe(&self, caller: u64) -> String {
        match caller {
            CALLER_NOT_SAMPLED | CALLER_UNKNOWN => self.function(caller),
            ip => self.kallsyms.describe(ip),
        }
    }

    /// Folds the drained tables (a round: into the state; a peek: into a
    /// copy of it, under the labels in force) and reads the cumulative
    /// histograms and counters.
    pub fn collect(
        &mut self,
        cgroups: &mut CgroupResolver,
        pass: Pass,
    ) -> Result<(LockSection, ProbeCounters)> {
        let callers = self.by_caller.take(pass)?;
        let locks = self.by_addr.take(pass)?;
        let workloads = self.workloads.take(pass)?;
        let mut by_owner: BTreeMap<String, Waits> = BTreeMap::new();
        for (k, v) in self.owners.take(pass)? {
            let label = compound_key(&[
                &workload_name(cgroups, k.waiter),
                &workload_name(cgroups, k.owner),
                owner_state(k.state),
            ]);
            by_owner.entry(label).or_default().add(&sum(&v));
        }
        let by_owner: Vec<(String, Waits)> = by_owner.into_iter().collect();
        let mut by_function: BTreeMap<String, Waits> = BTreeMap::new();
        let mut caller_rows = Vec::with_capacity(callers.len());
        for (key, per_cpu) in callers {
            let waits = per_cpu.iter().fold(Waits::default(), |mut a, v| {
                a.add(&Waits::from(&v.stat));
                a
            });
            // The stack was written on the CPU that created the entry.
            let stack: Vec<u64> = per_cpu
                .iter()
                .map(|v| v.stack)
                .find(|s| s[0] != 0)
                .map(|s| s.into_iter().take_while(|&ip| ip != 0).collect())
                .unwrap_or_default();
            let label = format!(
                "{}\u{1f}{}",
                lock_types::name(key.flags),
                self.function(key.caller)
            );
            by_function.entry(label).or_default().add(&waits);
            caller_rows.push(((key.flags, key.caller), CallerRow { waits, stack }));
        }
        let by_function: Vec<(String, Waits)> = by_function.into_iter().collect();
        let lock_rows = locks.into_iter().map(|(k, v)| ((k.lock, k.flags), sum(&v)));
        let mut by_cgroup: HashMap<u64, Waits> = HashMap::new();
        for (id, v) in workloads {
            by_cgroup.entry(id).or_default().add(&sum(&v));
        }
        let (folded, caller_totals, workload_totals, owner_totals) = match pass {
            Pass::Round { elapsed, .. } => {
                let f = &mut self.state;
                f.callers.add(caller_rows);
                f.locks.add(lock_rows);
                f.caller_labels.round(&by_function, &[], elapsed);
                fold_workload_deltas(&mut f.workload_labels, cgroups, by_cgroup, elapsed);
                f.owner_labels.round(&by_owner, &[], elapsed);
                let callers = f.caller_labels.view();
                let workloads = f.workload_labels.view();
                (None, callers, workloads, f.owner_labels.view())
            }
            Pass::Peek => {
                let mut ahead = self.state.clone();
                ahead.callers.add(caller_rows);
                ahead.locks.add(lock_rows);
                let callers = self.state.caller_labels.preview(&by_function);
                let named = name_deltas(cgroups, by_cgroup).0;
                let workloads = self.state.workload_labels.preview(&named);
                let owners = self.state.owner_labels.preview(&by_owner);
                (Some(ahead), callers, workloads, owners)
            }
        };
        let folded = folded.as_ref().unwrap_or(&self.state);

        let mut by_type = Vec::new();
        for flags in 0..TYPES {
            let per_cpu = self.hist.get(&flags, 0).map_err(map_err("LOCK_HIST"))?;
            let mut h = Log2Hist::default();
            let mut max_ns = 0;
            for cpu in per_cpu.iter() {
                for (a, b) in h
                    .buckets
                    .iter_mut()
                    .zip(cpu.buckets.iter().take(HIST_BUCKETS))
                {
                    *a += b;
                }
                h.sum_ns += cpu.sum_ns;
                max_ns = max_ns.max(cpu.max_ns);
            }
            if h.count() == 0 {
                continue;
            }
            by_type.push(LockTypeStats {
                lock_type: lock_types::name(flags).to_string(),
                contentions: h.count(),
                wait_seconds: h.sum_ns as f64 / 1e9,
                max_wait_seconds: max_ns as f64 / 1e9,
                wait: LatencySummary::from_hist(&h),
            });
        }
        merge_same_names(&mut by_type);
        by_type.sort_by(|a, b| b.wait_seconds.total_cmp(&a.wait_seconds));

        let c = |i: u32| counter(&self.counters, "LOCK_COUNTERS", i);
        let counters = ProbeCounters {
            events: BTreeMap::from([
                ("contention_begin", c(counter::EV_BEGIN)?),
                ("contention_end", c(counter::EV_END)?),
            ]),
            errors: BTreeMap::from([
                (
                    "contention_begin",
                    c(counter::REPLACED)? + c(counter::CPU_DEPTH_EXCEEDED)?,
                ),
                ("contention_end", c(counter::END_WITHOUT_BEGIN)?),
            ]),
            drops: BTreeMap::from([
                (
                    "LOCK_BY_CALLER".to_string(),
                    c(counter::DROP_CALLER_MAP_FULL)?,
                ),
                ("LOCK_BY_ADDR".to_string(), c(counter::DROP_ADDR_MAP_FULL)?),
                (
                    "LOCK_WORKLOADS".to_string(),
                    c(counter::DROP_WORKLOAD_MAP_FULL)?,
                ),
                (
                    "LOCK_TASK_SLOTS".to_string(),
                    c(counter::DROP_TASK_SLOT_COLLISION)?,
                ),
                ("LOCK_STACKS".to_string(), c(counter::STACK_ERRORS)?),
                ("LOCK_OWNERS".to_string(), c(counter::DROP_OWNER_MAP_FULL)?),
            ]),
        };
        let totals = |view: Vec<(String, Waits)>| -> Vec<LockTotal> {
            view.into_iter()
                .map(|(label, t)| {
                    let (lock_type, name) = label.split_once('\u{1f}').unwrap_or(("", &label));
                    LockTotal {
                        lock_type: lock_type.to_string(),
                        name: name.to_string(),
                        contentions: t.count,
                        wait_seconds: t.total_ns as f64 / 1e9,
                    }
                })
                .collect()
        };
        let section = LockSection {
            by_type,
            callers: folded
                .callers
                .top(SNAPSHOT_ROWS)
                .into_iter()
                .map(|(&(flags, caller), row)| LockCaller {
                    lock_type: lock_types::name(flags).to_string(),
                    caller: self.describe(caller),
                    contentions: row.waits.count,
                    wait_seconds: row.waits.total_ns as f64 / 1e9,
                    max_wait_seconds: row.waits.max_ns as f64 / 1e9,
                    avg_wait_seconds: row.waits.total_ns as f64
                        / row.waits.count.max(1) as f64
                        / 1e9,
                    stack: row
                        .stack
                        .iter()
                        .map(|&ip| self.kallsyms.describe(ip))
                        .collect(),
                })
                .collect(),
            caller_totals: totals(caller_totals),
            locks: folded
                .locks
                .top(SNAPSHOT_ROWS)
                .into_iter()
                .map(|(&(lock, flags), w)| LockObject {
                    lock: self
                        .kallsyms
                        .static_object(lock)
                        .unwrap_or("(dynamic)")
                        .to_string(),
                    address: format!("{lock:#x}"),
                    lock_type: lock_types::name(flags).to_string(),
                    contentions: w.count,
                    wait_seconds: w.total_ns as f64 / 1e9,
                    max_wait_seconds: w.max_ns as f64 / 1e9,
                })
                .collect(),
            workloads: totals(workload_totals),
            owners: owner_totals
                .into_iter()
                .map(|(label, t)| {
                    let [workload, owner, owner_state] = key_parts(&label);
                    LockOwnerWaits {
                        workload,
                        owner,
                        owner_state,
                        contentions: t.count,
                        wait_seconds: t.total_ns as f64 / 1e9,
                    }
                })
                .collect(),
            spin_waits_without_stack: c(counter::STACKS_NOT_SAMPLED)?,
        };
        Ok((section, counters))
    }
}

/// Two flag values can share a name (a mutex that spins is a mutex): one row
/// per name, as perf reports them.
fn merge_same_names(rows: &mut Vec<LockTypeStats>) {
    let mut merged: Vec<LockTypeStats> = Vec::new();
    for r in rows.drain(..) {
        match merged.iter_mut().find(|m| m.lock_type == r.lock_type) {
            Some(m) => {
                let mut h = m.wait.hist();
                h.add(&r.wait.hist());
                m.contentions += r.contentions;
                m.wait_seconds += r.wait_seconds;
                m.max_wait_seconds = m.max_wait_seconds.max(r.max_wait_seconds);
                m.wait = LatencySummary::from_hist(&h);
            }
            None => merged.push(r),
        }
    }
    *rows = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_cpu_stats_with_the_largest_max() {
        let s = sum(&[
            Stat {
                count: 2,
                total_ns: 10,
                max_ns: 7,
            },
            Stat {
                count: 1,
                total_ns: 30,
                max_ns: 30,
            },
        ]);
        assert_eq!(
            s,
            Waits {
                count: 3,
                total_ns: 40,
                max_ns: 30
            }
        );
    }

    #[test]
    fn mutex_spin_and_sleep_rows_merge_into_one_mutex_row() {
        let mut h1 = Log2Hist::default();
        h1.buckets[10] = 2;
        let mut h2 = Log2Hist::default();
        h2.buckets[12] = 1;
        let row = |h: &Log2Hist, n, w, m| LockTypeStats {
            lock_type: "mutex".into(),
            contentions: n,
            wait_seconds: w,
            max_wait_seconds: m,
            wait: LatencySummary::from_hist(h),
        };
        let mut rows = vec![row(&h1, 2, 1.0, 0.5), row(&h2, 1, 2.0, 2.0)];
        merge_same_names(&mut rows);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].contentions,
                rows[0].wait_seconds,
                rows[0].max_wait_seconds
            ),
            (3, 3.0, 2.0)
        );
        assert_eq!(rows[0].wait.count, 3);
    }

    #[test]
    fn callers_rank_by_wait_time() {
        let mut l = Labels::<Waits>::new(1);
        let w = |count, total_ns| Waits {
            count,
            total_ns,
            max_ns: 0,
        };
        l.round(
            &[
                ("spinlock\u{1f}a".into(), w(100, 10)),
                ("mutex\u{1f}b".into(), w(1, 1000)),
            ],
            &[],
            crate::model::topk::HALF_LIFE,
        );
        let v = l.view();
        assert_eq!(v[0].0, "mutex\u{1f}b");
        assert_eq!(v[1].0, crate::model::topk::OTHER);
    }
}
