//! One collector per signal: each reads its kernel maps on an interval and
//! returns its part of the snapshot.

use aya::maps::{Map, MapData, MapError, PerCpuArray};
use aya::Ebpf;

use crate::cgroup::CgroupResolver;
use crate::error::{Error, Result};
use crate::topk::{Labels, Totals};

pub mod dirty;
pub mod lock;
pub mod numa;
pub mod readiness;
pub mod sched;

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

/// Folds each cgroup's delta into `labels` under its path; a cgroup that no
/// longer exists counts its last delta as `(cgroup ID)` and loses its label.
/// Returns the ids of those removed cgroups.
fn fold_workload_deltas<T: Totals>(
    labels: &mut Labels<T>,
    cgroups: &mut CgroupResolver,
    deltas: impl IntoIterator<Item = (u64, T)>,
) -> Vec<u64> {
    let mut named = Vec::new();
    let mut gone = Vec::new();
    let mut gone_paths = Vec::new();
    for (id, d) in deltas {
        match cgroups.path(id) {
            Some(path) => named.push((path, d)),
            None => {
                let path = format!("(cgroup {id})");
                named.push((path.clone(), d));
                gone.push(id);
                gone_paths.push(path);
            }
        }
    }
    labels.round(&named, &gone_paths);
    gone
}
