//! User-space lock waits collector: drains the tables of
//! `ebpf-probes/probes/src/ulock.rs` (stacks, waits per (workload, stack),
//! waits and histograms per workload), names each stack once when it is
//! first drained (while its process most likely still runs), and folds the
//! waits into bounded state: labels per workload and per (workload,
//! function), rows per (workload, stack).

use std::collections::{BTreeMap, HashMap};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::Ebpf;
use hostprobe_common::lock::Stat;
use hostprobe_common::ulock::{counter, UserStack, WaitKey, Workload, NO_STACK, STACK_DEPTH};

use super::{
    counter, fold_workload_deltas, map_err, name_deltas, take, workload_name, Buffers, Pass,
    ProbeCounters,
};
use crate::collectors::lock::Waits;
use crate::error::Result;
use crate::host::cgroup::CgroupResolver;
use crate::host::symbols::{Frame, Symbolizer};
use crate::model::hist::Log2Hist;
use crate::model::topk::{compound_key, key_parts, Labels, TopTable, Totals};
use crate::model::ustack::{self, Named, Resolved};
use crate::snapshot::{
    LatencySummary, TruncatedBinary, UserFrame, UserLockFunction, UserLockSection, UserLockStack,
    UserLockWorkload,
};

/// Stacks kept named (least recently seen go first); a row whose stack
/// went reads `(stack evicted)`.
const STACKS: usize = 8192;
/// (workload, stack) rows the report keeps; beyond, the least waited are
/// summed.
const STACK_ROWS: usize = 4096;
/// Rows of the snapshot (the report shows fewer; the pprof profile all).
const SNAPSHOT_ROWS: usize = 200;

/// A workload's waits with their histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitHist {
    pub waits: Waits,
    pub hist: Log2Hist,
}

impl Totals for WaitHist {
    fn activity(&self) -> u64 {
        self.waits.activity()
    }

    fn add(&mut self, o: &Self) {
        self.waits.add(&o.waits);
        self.hist.add(&o.hist);
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            waits: self.waits.since(&earlier.waits),
            hist: self.hist.delta(&earlier.hist),
        }
    }
}

impl From<&Workload> for WaitHist {
    fn from(w: &Workload) -> Self {
        Self {
            waits: Waits {
                count: w.count,
                total_ns: w.total_ns,
                max_ns: w.max_ns,
            },
            hist: Log2Hist {
                buckets: w.hist.to_vec(),
                sum_ns: w.total_ns,
            },
        }
    }
}

#[derive(Clone)]
struct Folded {
    rows: TopTable<(u64, u64), Waits>,
    function_labels: Labels<Waits>,
    workload_labels: Labels<WaitHist>,
}

pub struct UlockCollector {
    stacks: [BpfHashMap<MapData, u64, UserStack>; 2],
    waits: Buffers<WaitKey, Stat>,
    workloads: Buffers<u64, Workload>,
    counters: PerCpuArray<MapData, u64>,
    symbols: Symbolizer,
    /// Named stacks by key, with the last time seen (a counter).
    named: HashMap<u64, (Named<Frame>, u64)>,
    clock: u64,
    state: Folded,
}

impl UlockCollector {
    pub fn new(ebpf: &mut Ebpf, top_k: usize) -> Result<Self> {
        let mut stacks = |name| BpfHashMap::try_from(take(ebpf, name)?).map_err(map_err(name));
        Ok(Self {
            stacks: [stacks("ULOCK_STACKS_0")?, stacks("ULOCK_STACKS_1")?],
            waits: Buffers::new(ebpf, ["ULOCK_WAITS_0", "ULOCK_WAITS_1"])?,
            workloads: Buffers::new(ebpf, ["ULOCK_WORKLOADS_0", "ULOCK_WORKLOADS_1"])?,
            counters: PerCpuArray::try_from(take(ebpf, "ULOCK_COUNTERS")?)
                .map_err(map_err("ULOCK_COUNTERS"))?,
            symbols: Symbolizer::default(),
            named: HashMap::new(),
            clock: 0,
            state: Folded {
                rows: TopTable::new(STACK_ROWS),
                function_labels: Labels::new(top_k),
                workload_labels: Labels::new(top_k),
            },
        })
    }

    /// Names the stacks of buffer `b` not named yet (a round also empties
    /// the buffer).
    fn read_stacks(&mut self, b: usize, delete: bool) -> Result<()> {
        let map = &mut self.stacks[b];
        let keys: Vec<u64> = map
            .keys()
            .collect::<std::result::Result<_, _>>()
            .map_err(map_err("ULOCK_STACKS"))?;
        for k in keys {
            self.clock += 1;
            if let Some((_, seen)) = self.named.get_mut(&k) {
                *seen = self.clock;
            } else if let Ok(stack) = map.get(&k, 0) {
                let depth = (stack.depth as usize).min(STACK_DEPTH);
                let symbols = &mut self.symbols;
                let named = ustack::name(
                    stack.tgid,
                    &stack.frames[..depth],
                    stack.caller,
                    depth == STACK_DEPTH,
                    &mut |address| {
                        let (frame, file) = symbols.resolve(stack.tgid, address);
                        let at = frame.file_address;
                        Resolved {
                            module: frame.module.clone(),
                            function: frame.function.clone(),
                            after_call: file.as_ref().is_some_and(|m| m.follows_call(at)),
                            after_call_out: file.as_ref().is_some_and(|m| m.follows_call_out(at)),
                            module_uses_frame_pointers: file
                                .as_ref()
                                .is_some_and(|m| m.uses_frame_pointers),
                            frame,
                        }
                    },
                );
                self.named.insert(k, (named, self.clock));
            }
            if delete {
                // Gone already is fine (nothing else deletes, but a
                // restart of the map would).
                let _ = map.remove(&k);
            }
        }
        if self.named.len() > STACKS {
            // The least recently seen go, all at once.
            let mut seen: Vec<(u64, u64)> = self.named.iter().map(|(k, (_, s))| (*s, *k)).collect();
            seen.sort_unstable();
            let excess = self.named.len() - STACKS;
            for (_, k) in &seen[..excess] {
                self.named.remove(k);
            }
        }
        Ok(())
    }

    /// Names the stacks recorded since, while their processes most likely
    /// still run (every second: a process that exits before a round would
    /// leave only addresses); drains nothing.
    pub fn name_new_stacks(&mut self) -> Result<()> {
        self.symbols.begin_round();
        self.read_stacks(0, false)?;
        self.read_stacks(1, false)
    }

    pub fn collect(
        &mut self,
        cgroups: &mut CgroupResolver,
        pass: Pass,
    ) -> Result<(UserLockSection, ProbeCounters)> {
        // Stacks before the waits that name them (see the kernel side).
        match pass {
            Pass::Round { drain, .. } => {
                self.symbols.begin_round();
                self.read_stacks(drain, true)?;
            }
            Pass::Peek => self.name_new_stacks()?,
        }
        let waits = self.waits.take(pass)?;
        let workloads = self.workloads.take(pass)?;

        let mut rows: HashMap<(u64, u64), Waits> = HashMap::new();
        let mut by_function: BTreeMap<String, Waits> = BTreeMap::new();
        self.clock += 1;
        for (key, per_cpu) in waits {
            let w = per_cpu.iter().fold(Waits::default(), |mut a, s| {
                a.add(&Waits::from(s));
                a
            });
            // A thread sleeping where it slept before reuses its stack
            // without recording it again: its use keeps it named.
            if let Some((_, seen)) = self.named.get_mut(&key.stack) {
                *seen = self.clock;
            }
            rows.entry((key.cgroup, key.stack)).or_default().add(&w);
            let function = self.function_of(key.stack);
            let label = compound_key(&[&workload_name(cgroups, key.cgroup), &function]);
            by_function.entry(label).or_default().add(&w);
        }
        let by_function: Vec<(String, Waits)> = by_function.into_iter().collect();
        let mut by_cgroup: HashMap<u64, WaitHist> = HashMap::new();
        for (id, per_cpu) in workloads {
            let e = by_cgroup.entry(id).or_default();
            for w in &per_cpu {
                e.add(&WaitHist::from(w));
            }
        }
        let (ahead, functions, workloads) = match pass {
            Pass::Round { elapsed, .. } => {
                let f = &mut self.state;
                f.rows.add(rows);
                f.function_labels.round(&by_function, &[], elapsed);
                fold_workload_deltas(&mut f.workload_labels, cgroups, by_cgroup, elapsed);
                (None, f.function_labels.view(), f.workload_labels.view())
            }
            Pass::Peek => {
                let mut ahead = self.state.clone();
                ahead.rows.add(rows);
                let functions = self.state.function_labels.preview(&by_function);
                let named = name_deltas(cgroups, by_cgroup).0;
                let workloads = self.state.workload_labels.preview(&named);
                (Some(ahead), functions, workloads)
            }
        };
        let folded = ahead.as_ref().unwrap_or(&self.state);

        let mut truncated: BTreeMap<String, u64> = BTreeMap::new();
        let stacks: Vec<UserLockStack> = folded
            .rows
            .top(SNAPSHOT_ROWS)
            .into_iter()
            .map(|(&(cgroup, stack), w)| {
                let named = self.named.get(&stack).map(|(n, _)| n);
                if let Some(binary) = named.and_then(|n| n.truncated_in.clone()) {
                    *truncated.entry(binary).or_default() += 1;
                }
                UserLockStack {
                    workload: workload_name(cgroups, cgroup),
                    pid: named.map_or(0, |n| n.tgid),
                    contentions: w.count,
                    wait_seconds: w.total_ns as f64 / 1e9,
                    max_wait_seconds: w.max_ns as f64 / 1e9,
                    function: self.function_of(stack),
                    frames: match named {
                        Some(n) => n.frames.iter().map(user_frame).collect(),
                        None => vec![placeholder(if stack == NO_STACK {
                            "(stack not read)"
                        } else {
                            "(stack evicted)"
                        })],
                    },
                    truncated: named.is_some_and(|n| n.truncated_in.is_some()),
                }
            })
            .collect();
        let section = UserLockSection {
            workloads: workloads
                .into_iter()
                .map(|(workload, t)| UserLockWorkload {
                    workload,
                    contentions: t.waits.count,
                    wait_seconds: t.waits.total_ns as f64 / 1e9,
                    wait: LatencySummary::from_hist(&t.hist),
                })
                .collect(),
            functions: functions
                .into_iter()
                .map(|(label, t)| {
                    let [workload, function] = key_parts(&label);
                    UserLockFunction {
                        workload,
                        function,
                        contentions: t.count,
                        wait_seconds: t.total_ns as f64 / 1e9,
                    }
                })
                .collect(),
            stacks,
            truncated: truncated
                .into_iter()
                .map(|(binary, stacks)| TruncatedBinary {
                    hint: format!(
                        "stacks end in {binary}: it was built without frame pointers (rebuild with -fno-omit-frame-pointer; Rust: -C force-frame-pointers=yes)"
                    ),
                    binary,
                    stacks,
                })
                .collect(),
        };
        let c = |i: u32| counter(&self.counters, "ULOCK_COUNTERS", i);
        let counters = ProbeCounters {
            events: BTreeMap::from([(crate::probes::ULOCK_PROBE, c(counter::EV_SLEEP)?)]),
            errors: BTreeMap::new(),
            drops: BTreeMap::from([
                (
                    "ULOCK_STACKS".to_string(),
                    c(counter::DROP_STACK_MAP_FULL)? + c(counter::STACK_ERRORS)?,
                ),
                ("ULOCK_WAITS".to_string(), c(counter::DROP_WAIT_MAP_FULL)?),
                (
                    "ULOCK_WORKLOADS".to_string(),
                    c(counter::DROP_WORKLOAD_MAP_FULL)?,
                ),
            ]),
        };
        Ok((section, counters))
    }

    /// The innermost application function of a stack, as the metric labels
    /// it.
    fn function_of(&self, stack: u64) -> String {
        match self.named.get(&stack) {
            Some((n, _)) => n.function.clone(),
            None if stack == NO_STACK => "(stack not read)".into(),
            None => "(unknown)".into(),
        }
    }
}

fn user_frame(f: &(Frame, bool)) -> UserFrame {
    let (frame, recovered) = f;
    UserFrame {
        address: frame.address,
        name: frame.name(),
        module: frame.module.clone(),
        file_address: frame.file_address,
        build_id: frame.build_id.clone(),
        path: frame.path.clone(),
        mapping: frame.mapping,
        recovered: *recovered,
    }
}

fn placeholder(name: &str) -> UserFrame {
    UserFrame {
        address: 0,
        name: name.to_string(),
        module: String::new(),
        file_address: 0,
        build_id: None,
        path: None,
        mapping: None,
        recovered: false,
    }
}
