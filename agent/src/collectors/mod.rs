//! One collector per signal: each reads its kernel maps and returns its
//! part of the snapshot. A round (the interval's) folds what it read into
//! the label state; a peek (a scrape's) shows fresh counters and changes
//! nothing, so results do not depend on who scrapes or how often.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use aya::maps::{Array, ArrayOfMaps, Map, MapData, MapError, PerCpuArray, PerCpuHashMap};
use aya::{Ebpf, Pod};

use crate::error::{Error, Result};
use crate::host::cgroup::CgroupResolver;
use crate::model::topk::{Labels, Totals};

pub mod dirty;
pub mod lock;
pub mod numa;
pub mod readiness;
pub mod sched;
pub mod ulock;

/// What a collection does with what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The interval's round, `elapsed` after the last: deltas fold into the
    /// labels, which move; buffer `drain` of the drained tables is read and
    /// emptied.
    Round { elapsed: Duration, drain: usize },
    /// A scrape: fresh counters under the labels in force; nothing moves.
    Peek,
}

/// The kernel's `DEAD_CGROUPS` set: ids of removed cgroups whose entries
/// the per-CPU workload tables (sched, dirty, NUMA) may reuse. The agent
/// adds every collector's retired ids after all of them have read their
/// last values, and takes an id out once no table holds it.
pub struct DeadSet {
    map: aya::maps::HashMap<MapData, u64, u8>,
    published: BTreeSet<u64>,
}

impl DeadSet {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            map: aya::maps::HashMap::try_from(take(ebpf, "DEAD_CGROUPS")?)
                .map_err(map_err("DEAD_CGROUPS"))?,
            published: BTreeSet::new(),
        })
    }

    /// Makes the set `ids`.
    pub fn publish(&mut self, ids: &BTreeSet<u64>) -> Result<()> {
        for id in self.published.difference(ids) {
            // Already gone is fine.
            let _ = self.map.remove(id);
        }
        for id in ids.difference(&self.published) {
            self.map.insert(id, 1, 0).map_err(map_err("DEAD_CGROUPS"))?;
        }
        self.published.clone_from(ids);
        Ok(())
    }
}

/// The drained tables' buffer switch (`DRAIN_GEN`, see
/// `ebpf-probes/probes/src/tables.rs`): each round it flips the buffer the
/// programs write, then waits for every program that may have read the old
/// one to finish, so that the old buffer can be read and emptied without
/// losing a write.
pub struct Drain {
    gen: Array<MapData, u32>,
    grace: ArrayOfMaps<MapData, MapData>,
    grace_inner: MapData,
    /// The buffer programs write now.
    active: u32,
}

impl Drain {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self> {
        let grace_inner = match take(ebpf, "DRAIN_GRACE_INNER")? {
            Map::Array(data) => data,
            _ => {
                return Err(Error::Contract {
                    reason: "DRAIN_GRACE_INNER is not an array".into(),
                })
            }
        };
        Ok(Self {
            gen: Array::try_from(take(ebpf, "DRAIN_GEN")?).map_err(map_err("DRAIN_GEN"))?,
            grace: ArrayOfMaps::try_from(take(ebpf, "DRAIN_GRACE")?)
                .map_err(map_err("DRAIN_GRACE"))?,
            grace_inner,
            active: 0,
        })
    }

    /// Switches the programs to the other buffer and returns the one to
    /// drain. Blocks for an RCU grace period (a few milliseconds): the
    /// kernel returns from the update of a map of maps only after every
    /// BPF program running at that time has finished, on every CPU and
    /// also when PREEMPT_RT preempted one, and every program started since
    /// reads the new `DRAIN_GEN`.
    pub fn flip(&mut self) -> Result<usize> {
        let old = self.active;
        self.active ^= 1;
        self.gen
            .set(0, self.active, 0)
            .map_err(map_err("DRAIN_GEN"))?;
        self.grace
            .set(0, &self.grace_inner, 0)
            .map_err(map_err("DRAIN_GRACE"))?;
        Ok(old as usize)
    }
}

/// One drained table: its two buffers.
pub struct Buffers<K: Pod, V: Pod>([PerCpuHashMap<MapData, K, V>; 2], &'static str);

impl<K: Pod + Eq + std::hash::Hash, V: Pod> Buffers<K, V> {
    pub fn new(ebpf: &mut Ebpf, names: [&'static str; 2]) -> Result<Self> {
        let mut one = |name| PerCpuHashMap::try_from(take(ebpf, name)?).map_err(map_err(name));
        Ok(Self([one(names[0])?, one(names[1])?], names[0]))
    }

    /// Every entry of buffer `b`, each entry's per-CPU values as a list;
    /// with `delete`, each is deleted once read (the buffer is quiescent:
    /// no program writes it).
    pub fn read(&mut self, b: usize, delete: bool) -> Result<Vec<(K, Vec<V>)>> {
        let map = &mut self.0[b];
        let keys: Vec<K> = map
            .keys()
            .collect::<std::result::Result<_, _>>()
            .map_err(map_err(self.1))?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            // A key deleted meanwhile (by a drain) is simply gone.
            let Ok(values) = map.get(&k, 0) else {
                continue;
            };
            out.push((k, values.iter().copied().collect()));
            if delete {
                map.remove(&k).map_err(map_err(self.1))?;
            }
        }
        Ok(out)
    }

    /// A round drains its quiescent buffer; a peek reads both, deleting
    /// nothing (what it reads are the deltas since their last drain).
    pub fn take(&mut self, pass: Pass) -> Result<Vec<(K, Vec<V>)>> {
        match pass {
            Pass::Round { drain: b, .. } => self.read(b, true),
            Pass::Peek => {
                let mut all = self.read(0, false)?;
                all.extend(self.read(1, false)?);
                Ok(all)
            }
        }
    }
}

/// Self-metrics of one signal's kernel programs, by program (events, errors)
/// and by map (drops).
#[derive(Debug, Clone, Default)]
pub struct ProbeCounters {
    pub events: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub drops: BTreeMap<String, u64>,
}

/// Takes a map the collector will own out of the loaded object.
fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map> {
    ebpf.take_map(name).ok_or(Error::Map {
        name,
        source: MapError::InvalidName { name: name.into() },
    })
}

/// Names the map in an aya map error.
fn map_err(name: &'static str) -> impl Fn(MapError) -> Error {
    move |source| Error::Map { name, source }
}

/// Counter `index` of a per-CPU counter array, summed over CPUs.
fn counter(map: &PerCpuArray<MapData, u64>, name: &'static str, index: u32) -> Result<u64> {
    Ok(map.get(&index, 0).map_err(map_err(name))?.iter().sum())
}

/// A per-CPU workload table's state across rounds (sched, dirty, NUMA):
/// each cgroup's cumulative values at the last round, the removed cgroups
/// already counted (their entries stay in the kernel table until it reuses
/// them, and must not be counted again), and the bounded labels the deltas
/// fold into.
pub struct WorkloadRounds<T> {
    pub labels: Labels<T>,
    last: HashMap<u64, T>,
    retired: HashSet<u64>,
}

impl<T: Totals + Clone> WorkloadRounds<T> {
    pub fn new(top_k: usize) -> Self {
        Self {
            labels: Labels::new(top_k),
            last: HashMap::new(),
            retired: HashSet::new(),
        }
    }

    /// Removed cgroups whose entries are still in the kernel table.
    pub fn retired(&self) -> &HashSet<u64> {
        &self.retired
    }

    /// Each cgroup's counters since the last round (`now` holds the
    /// cumulative values of every cgroup not retired) under their labels.
    /// In a round they fold into the labels; removed cgroups are counted
    /// once and retired, and `present` (the ids still in the table) tells
    /// when the kernel has reused a retired id's entries, so that it can be
    /// forgotten. A peek only adds them to the view.
    pub fn fold(
        &mut self,
        cgroups: &mut CgroupResolver,
        mut now: HashMap<u64, T>,
        present: &HashSet<u64>,
        pass: Pass,
    ) -> Vec<(String, T)> {
        let deltas: Vec<_> = now
            .iter()
            .map(|(id, t)| {
                (
                    *id,
                    t.since(&self.last.get(id).cloned().unwrap_or_default()),
                )
            })
            .collect();
        let Pass::Round { elapsed, .. } = pass else {
            return self.labels.preview(&name_deltas(cgroups, deltas).0);
        };
        self.retired.retain(|id| present.contains(id));
        for id in fold_workload_deltas(&mut self.labels, cgroups, deltas, elapsed) {
            now.remove(&id);
            self.retired.insert(id);
        }
        self.last = now;
        self.labels.view()
    }
}

/// The path of a cgroup id, its last path if it was removed, else
/// `(cgroup ID)`.
fn workload_name(cgroups: &mut CgroupResolver, id: u64) -> String {
    cgroups
        .path(id)
        .or_else(|| cgroups.removed_path(id).map(str::to_string))
        .unwrap_or_else(|| format!("(cgroup {id})"))
}

/// Each cgroup's delta under its path; a cgroup that no longer exists under
/// its last path (or `(cgroup ID)` if it was never resolved). Also returns
/// the ids of those removed cgroups, and their paths where no live cgroup
/// has taken them over (a restarted unit keeps its label).
fn name_deltas<T>(
    cgroups: &mut CgroupResolver,
    deltas: impl IntoIterator<Item = (u64, T)>,
) -> (Vec<(String, T)>, Vec<u64>, Vec<String>) {
    let mut named = Vec::new();
    let mut live = HashSet::new();
    let mut gone = Vec::new();
    let mut gone_paths = Vec::new();
    for (id, d) in deltas {
        match cgroups.path(id) {
            Some(path) => {
                live.insert(path.clone());
                named.push((path, d));
            }
            None => {
                let path = cgroups
                    .removed_path(id)
                    .map_or_else(|| format!("(cgroup {id})"), str::to_string);
                named.push((path.clone(), d));
                gone.push(id);
                gone_paths.push(path);
            }
        }
    }
    gone_paths.retain(|p| !live.contains(p));
    (named, gone, gone_paths)
}

/// Folds each cgroup's delta into `labels` under its path (see
/// [`name_deltas`]); removed cgroups lose their labels. Returns their ids.
fn fold_workload_deltas<T: Totals + Clone>(
    labels: &mut Labels<T>,
    cgroups: &mut CgroupResolver,
    deltas: impl IntoIterator<Item = (u64, T)>,
    elapsed: Duration,
) -> Vec<u64> {
    let (named, gone, gone_paths) = name_deltas(cgroups, deltas);
    labels.round(&named, &gone_paths, elapsed);
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Clone, Copy, PartialEq)]
    struct Count(u64);

    impl Totals for Count {
        fn activity(&self) -> u64 {
            self.0
        }
        fn add(&mut self, o: &Self) {
            self.0 += o.0;
        }
        fn since(&self, e: &Self) -> Self {
            Self(self.0 - e.0)
        }
    }

    const R: Duration = crate::model::topk::HALF_LIFE;

    fn totals(labels: &Labels<Count>) -> Vec<(String, u64)> {
        labels.view().into_iter().map(|(l, c)| (l, c.0)).collect()
    }

    #[test]
    fn removed_cgroups_keep_their_name_and_a_restarted_one_keeps_its_label() {
        // tmpfs numbers inodes without reusing them, as cgroupfs does its
        // ids (disk filesystems hand a freed inode to the next directory).
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let mut cgroups = CgroupResolver::at(dir.path().to_path_buf());
        let mut labels = Labels::new(4);
        let first = cgroups.id_of("/db").unwrap();
        assert!(fold_workload_deltas(&mut labels, &mut cgroups, [(first, Count(5))], R).is_empty());

        // The unit restarts: same path, new cgroup (new id). The old one's
        // last delta counts under the path, which keeps its label.
        std::fs::remove_dir(dir.path().join("db")).unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let second = cgroups.id_of("/db").unwrap();
        assert_ne!(first, second);
        cgroups.begin_round();
        let gone = fold_workload_deltas(
            &mut labels,
            &mut cgroups,
            [(second, Count(3)), (first, Count(2))],
            R,
        );
        assert_eq!(gone, vec![first]);
        assert_eq!(totals(&labels), vec![("/db".to_string(), 10)]);

        // Removed for good: its last delta is named, then the label goes.
        std::fs::remove_dir(dir.path().join("db")).unwrap();
        std::fs::create_dir(dir.path().join("other")).unwrap();
        let other = cgroups.id_of("/other").unwrap();
        cgroups.begin_round();
        let gone = fold_workload_deltas(
            &mut labels,
            &mut cgroups,
            [(other, Count(1)), (second, Count(1))],
            R,
        );
        assert_eq!(gone, vec![second]);
        assert_eq!(totals(&labels), vec![("/other".to_string(), 1)]);
    }
}
