//! Lock contention collector: reads the maps of
//! `ebpf-probes/probes/src/lock.rs`, symbolises waiters' stacks and static
//! lock addresses through /proc/kallsyms, and keeps bounded labels.

use std::collections::{BTreeMap, HashMap};

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, StackTraceMap};
use aya::Ebpf;
use hostprobe_common::lock::{counter, AddrKey, CallerKey, Hist, Stat, STACK_NOT_SAMPLED, TYPES};
use hostprobe_common::HIST_BUCKETS;

use super::{counter, fold_workload_deltas, map_err, take, ProbeCounters};
use crate::error::Result;
use crate::host::cgroup::CgroupResolver;
use crate::host::kallsyms::Kallsyms;
use crate::model::hist::Log2Hist;
use crate::model::topk::{Labels, Totals};
use crate::probes::lock_types;
use crate::snapshot::{
    LatencySummary, LockCaller, LockObject, LockSection, LockTotal, LockTypeStats,
};

/// Entries of each table kept in the snapshot (the report shows fewer).
const SNAPSHOT_ROWS: usize = 20;

/// Contentions and wait of one label (a caller or a workload).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockTotals {
    pub count: u64,
    pub total_ns: u64,
}

impl Totals for LockTotals {
    /// Nanoseconds waited rank callers and workloads, as in perf's report.
    fn activity(&self) -> u64 {
        self.total_ns
    }

    fn add(&mut self, o: &Self) {
        self.count += o.count;
        self.total_ns += o.total_ns;
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            count: self.count.saturating_sub(earlier.count),
            total_ns: self.total_ns.saturating_sub(earlier.total_ns),
        }
    }
}

fn sum(per_cpu: &[Stat]) -> Stat {
    per_cpu.iter().fold(Stat::default(), |mut a, s| {
        a.count += s.count;
        a.total_ns += s.total_ns;
        a.max_ns = a.max_ns.max(s.max_ns);
        a
    })
}

pub struct LockCollector {
    by_caller: PerCpuHashMap<MapData, CallerKey, Stat>,
    by_addr: PerCpuHashMap<MapData, AddrKey, Stat>,
    workloads: PerCpuHashMap<MapData, u64, Stat>,
    hist: PerCpuArray<MapData, Hist>,
    counters: PerCpuArray<MapData, u64>,
    stacks: StackTraceMap<MapData>,
    /// Frames of each stack id read so far: the kernel never rewrites an
    /// entry (no BPF_F_REUSE_STACKID) and nothing deletes one, so each is
    /// read once instead of once per row per scrape.
    stack_frames: HashMap<i32, Vec<u64>>,
    kallsyms: Kallsyms,
    /// Cumulative values of the last round, for deltas.
    last_callers: HashMap<(u32, String), LockTotals>,
    last_workloads: HashMap<u64, LockTotals>,
    callers: Labels<LockTotals>,
    workload_labels: Labels<LockTotals>,
}

impl LockCollector {
    /// `kallsyms`: the kernel's symbols (empty names nothing), loaded by
    /// the caller while the programs load.
    pub fn new(ebpf: &mut Ebpf, top_k: usize, kallsyms: Kallsyms) -> Result<Self> {
        Ok(Self {
            by_caller: PerCpuHashMap::try_from(take(ebpf, "LOCK_BY_CALLER")?)
                .map_err(map_err("LOCK_BY_CALLER"))?,
            by_addr: PerCpuHashMap::try_from(take(ebpf, "LOCK_BY_ADDR")?)
                .map_err(map_err("LOCK_BY_ADDR"))?,
            workloads: PerCpuHashMap::try_from(take(ebpf, "LOCK_WORKLOADS")?)
                .map_err(map_err("LOCK_WORKLOADS"))?,
            hist: PerCpuArray::try_from(take(ebpf, "LOCK_HIST")?).map_err(map_err("LOCK_HIST"))?,
            counters: PerCpuArray::try_from(take(ebpf, "LOCK_COUNTERS")?)
                .map_err(map_err("LOCK_COUNTERS"))?,
            stacks: StackTraceMap::try_from(take(ebpf, "LOCK_STACKS")?)
                .map_err(map_err("LOCK_STACKS"))?,
            kallsyms,
            stack_frames: HashMap::new(),
            last_callers: HashMap::new(),
            last_workloads: HashMap::new(),
            callers: Labels::new(top_k),
            workload_labels: Labels::new(top_k),
        })
    }

    fn stack(&mut self, stack_id: i32) -> Vec<u64> {
        // Negative: not sampled, or the kernel could not store the stack.
        if stack_id < 0 {
            return Vec::new();
        }
        if let Some(frames) = self.stack_frames.get(&stack_id) {
            return frames.clone();
        }
        match self.stacks.get(&(stack_id as u32), 0) {
            Ok(s) => {
                let frames: Vec<u64> = s.frames().iter().map(|f| f.ip).collect();
                self.stack_frames.insert(stack_id, frames.clone());
                frames
            }
            Err(_) => Vec::new(),
        }
    }

    pub fn collect(
        &mut self,
        cgroups: &mut CgroupResolver,
    ) -> Result<(LockSection, ProbeCounters)> {
        // Per (type, stack): the rows of the perf-like report.
        let mut rows = Vec::new();
        for item in self.by_caller.iter() {
            let (key, per_cpu) = item.map_err(map_err("LOCK_BY_CALLER"))?;
            rows.push((key, sum(&per_cpu)));
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.1.total_ns));
        let mut callers_now: HashMap<(u32, String), LockTotals> = HashMap::new();
        let mut caller_rows = Vec::new();
        for (key, stat) in &rows {
            let stack = self.stack(key.stack_id);
            let caller_ip = self.kallsyms.caller(&stack);
            let unnamed = if key.stack_id == STACK_NOT_SAMPLED {
                "(stack not sampled)"
            } else {
                "(unknown)"
            };
            let function = caller_ip
                .and_then(|ip| self.kallsyms.function(ip).map(|(n, _)| n.to_string()))
                .unwrap_or_else(|| unnamed.into());
            let t = callers_now.entry((key.flags, function)).or_default();
            t.count += stat.count;
            t.total_ns += stat.total_ns;
            if caller_rows.len() < SNAPSHOT_ROWS {
                caller_rows.push(LockCaller {
                    lock_type: lock_types::name(key.flags).to_string(),
                    caller: caller_ip
                        .map_or_else(|| unnamed.into(), |ip| self.kallsyms.describe(ip)),
                    contentions: stat.count,
                    wait_seconds: stat.total_ns as f64 / 1e9,
                    max_wait_seconds: stat.max_ns as f64 / 1e9,
                    avg_wait_seconds: stat.total_ns as f64 / stat.count.max(1) as f64 / 1e9,
                    stack: stack.iter().map(|&ip| self.kallsyms.describe(ip)).collect(),
                });
            }
        }
        // Callers aggregated by (type, function) for bounded metric labels.
        let deltas: Vec<(String, LockTotals)> = callers_now
            .iter()
            .map(|(k, now)| {
                let d = now.since(&self.last_callers.get(k).copied().unwrap_or_default());
                (format!("{}\u{1f}{}", lock_types::name(k.0), k.1), d)
            })
            .collect();
        self.callers.round(&deltas, &[]);
        self.last_callers = callers_now;

        let mut locks = Vec::new();
        for item in self.by_addr.iter() {
            let (key, per_cpu) = item.map_err(map_err("LOCK_BY_ADDR"))?;
            locks.push((key, sum(&per_cpu)));
        }
        locks.sort_by_key(|l| std::cmp::Reverse(l.1.total_ns));
        let locks = locks
            .iter()
            .take(SNAPSHOT_ROWS)
            .map(|(k, s)| LockObject {
                lock: self
                    .kallsyms
                    .static_object(k.lock)
                    .unwrap_or("(dynamic)")
                    .to_string(),
                address: format!("{:#x}", k.lock),
                lock_type: lock_types::name(k.flags).to_string(),
                contentions: s.count,
                wait_seconds: s.total_ns as f64 / 1e9,
                max_wait_seconds: s.max_ns as f64 / 1e9,
            })
            .collect();

        let mut workloads_now = HashMap::new();
        for item in self.workloads.iter() {
            let (id, per_cpu) = item.map_err(map_err("LOCK_WORKLOADS"))?;
            let s = sum(&per_cpu);
            workloads_now.insert(
                id,
                LockTotals {
                    count: s.count,
                    total_ns: s.total_ns,
                },
            );
        }
        let deltas = workloads_now.iter().map(|(id, now)| {
            (
                *id,
                now.since(&self.last_workloads.get(id).copied().unwrap_or_default()),
            )
        });
        let gone = fold_workload_deltas(&mut self.workload_labels, cgroups, deltas);
        for id in &gone {
            workloads_now.remove(id);
            // Already gone from the map is fine.
            let _ = self.workloads.remove(id);
        }
        self.last_workloads = workloads_now;

        let mut by_type = Vec::new();
        for flags in 0..TYPES {
            let per_cpu = self.hist.get(&flags, 0).map_err(map_err("LOCK_HIST"))?;
            let mut h = Log2Hist::default();
            for cpu in per_cpu.iter() {
                for (a, b) in h
                    .buckets
                    .iter_mut()
                    .zip(cpu.buckets.iter().take(HIST_BUCKETS))
                {
                    *a += b;
                }
            }
            if h.count() == 0 {
                continue;
            }
            let of_type = rows.iter().filter(|(k, _)| k.flags == flags);
            h.sum_ns = of_type.clone().map(|(_, s)| s.total_ns).sum();
            let max_ns = of_type.map(|(_, s)| s.max_ns).max().unwrap_or(0);
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
            ]),
        };
        let totals = |labels: &Labels<LockTotals>| -> Vec<LockTotal> {
            labels
                .view()
                .into_iter()
                .map(|(label, t)| {
                    let (lock_type, name) = label.split_once('\u{1f}').unwrap_or(("", label));
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
            callers: caller_rows,
            caller_totals: totals(&self.callers),
            locks,
            workloads: totals(&self.workload_labels),
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
            Stat {
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
        let mut l = Labels::<LockTotals>::new(1);
        l.round(
            &[
                (
                    "spinlock\u{1f}a".into(),
                    LockTotals {
                        count: 100,
                        total_ns: 10,
                    },
                ),
                (
                    "mutex\u{1f}b".into(),
                    LockTotals {
                        count: 1,
                        total_ns: 1000,
                    },
                ),
            ],
            &[],
        );
        let v = l.view();
        assert_eq!(v[0].0, "mutex\u{1f}b");
        assert_eq!(v[1].0, crate::model::topk::OTHER);
    }
}
