//! CPU topology from sysfs: which CPUs share a core, a last-level cache, a
//! NUMA node. The kernel programs classify migrations and placements with
//! the table built here.

use std::collections::BTreeSet;
use std::path::Path;

use hostprobe_common::sched::CpuTopo;
use serde::Serialize;

use crate::error::{Error, Result};

/// Default sysfs root holding `cpu/` and `node/`.
pub const SYSFS_SYSTEM: &str = "/sys/devices/system";

#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    /// Indexed by CPU number up to the highest possible CPU.
    #[serde(skip)]
    pub cpus: Vec<CpuTopo>,
    pub online_cpus: usize,
    pub cores: usize,
    pub llcs: usize,
    pub nodes: usize,
}

impl Topology {
    pub fn read(root: &Path) -> Result<Self> {
        let cpu_dir = root.join("cpu");
        let possible = read_list(&cpu_dir.join("possible"))?;
        let max = possible.iter().max().copied().unwrap_or(0);
        let mut cpus = vec![CpuTopo::default(); max as usize + 1];
        let node_of = node_map(root, max)?;
        for &cpu in &possible {
            let dir = cpu_dir.join(format!("cpu{cpu}"));
            let topo = dir.join("topology");
            // Offline CPUs have no topology directory.
            if !topo.is_dir() {
                continue;
            }
            let siblings = ["core_cpus_list", "thread_siblings_list"]
                .iter()
                .find_map(|f| read_list(&topo.join(f)).ok())
                .unwrap_or_else(|| vec![cpu]);
            let core = siblings.iter().min().copied().unwrap_or(cpu);
            let llc = last_level_cache(&dir.join("cache")).unwrap_or(core);
            cpus[cpu as usize] = CpuTopo {
                core,
                llc,
                node: node_of[cpu as usize],
                present: 1,
            };
        }
        let present: Vec<&CpuTopo> = cpus.iter().filter(|c| c.present == 1).collect();
        let count =
            |f: fn(&CpuTopo) -> u32| present.iter().map(|c| f(c)).collect::<BTreeSet<_>>().len();
        Ok(Self {
            online_cpus: present.len(),
            cores: count(|c| c.core),
            llcs: count(|c| c.llc),
            nodes: count(|c| c.node),
            cpus,
        })
    }
}

/// `nodeN/cpulist` gives each CPU its node; without `node/` (non-NUMA
/// kernels) everything is node 0.
fn node_map(root: &Path, max_cpu: u32) -> Result<Vec<u32>> {
    let mut node_of = vec![0u32; max_cpu as usize + 1];
    let Ok(entries) = std::fs::read_dir(root.join("node")) else {
        return Ok(node_of);
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("node"))
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        for cpu in read_list(&e.path().join("cpulist"))? {
            if let Some(slot) = node_of.get_mut(cpu as usize) {
                *slot = n;
            }
        }
    }
    Ok(node_of)
}

/// First CPU sharing the highest-level data or unified cache.
fn last_level_cache(cache: &Path) -> Option<u32> {
    let mut best: Option<(u32, u32)> = None;
    for e in std::fs::read_dir(cache).ok()?.flatten() {
        if !e.file_name().to_string_lossy().starts_with("index") {
            continue;
        }
        let p = e.path();
        let kind = std::fs::read_to_string(p.join("type")).unwrap_or_default();
        if kind.trim() == "Instruction" {
            continue;
        }
        let Some(level) = std::fs::read_to_string(p.join("level"))
            .ok()
            .and_then(|l| l.trim().parse().ok())
        else {
            continue;
        };
        let Some(first) = read_list(&p.join("shared_cpu_list"))
            .ok()
            .and_then(|l| l.into_iter().min())
        else {
            continue;
        };
        if best.is_none_or(|(l, _)| level > l) {
            best = Some((level, first));
        }
    }
    best.map(|(_, first)| first)
}

fn read_list(path: &Path) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_cpu_list(&text).ok_or_else(|| Error::Parse {
        path: path.to_path_buf(),
        reason: format!("not a CPU list: {:?}", text.trim()),
    })
}

/// Parses the kernel's list format, e.g. `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let text = text.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hostprobe_common::sched::{
        DIST_OTHER_NODE, DIST_SAME_CORE, DIST_SAME_CPU, DIST_SAME_LLC, DIST_SAME_NODE,
    };
    use std::fs;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("{text}\n")).unwrap();
    }

    /// A sysfs tree: `cores` are SMT sibling lists, `llcs` L3 sharing lists,
    /// `nodes` node CPU lists (None: no node directory at all).
    pub(crate) fn fake_sysfs(
        cores: &[&str],
        llcs: &[&str],
        nodes: Option<&[&str]>,
    ) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let all: Vec<u32> = cores
            .iter()
            .flat_map(|c| parse_cpu_list(c).unwrap())
            .collect();
        write(
            root,
            "cpu/possible",
            &format!("0-{}", all.iter().max().unwrap()),
        );
        for core in cores {
            for cpu in parse_cpu_list(core).unwrap() {
                write(root, &format!("cpu/cpu{cpu}/topology/core_cpus_list"), core);
                write(root, &format!("cpu/cpu{cpu}/cache/index0/level"), "1");
                write(root, &format!("cpu/cpu{cpu}/cache/index0/type"), "Data");
                write(
                    root,
                    &format!("cpu/cpu{cpu}/cache/index0/shared_cpu_list"),
                    core,
                );
                write(root, &format!("cpu/cpu{cpu}/cache/index1/level"), "1");
                write(
                    root,
                    &format!("cpu/cpu{cpu}/cache/index1/type"),
                    "Instruction",
                );
                write(
                    root,
                    &format!("cpu/cpu{cpu}/cache/index1/shared_cpu_list"),
                    &cpu.to_string(),
                );
            }
        }
        for llc in llcs {
            for cpu in parse_cpu_list(llc).unwrap() {
                write(root, &format!("cpu/cpu{cpu}/cache/index3/level"), "3");
                write(root, &format!("cpu/cpu{cpu}/cache/index3/type"), "Unified");
                write(
                    root,
                    &format!("cpu/cpu{cpu}/cache/index3/shared_cpu_list"),
                    llc,
                );
            }
        }
        for (n, list) in nodes.unwrap_or_default().iter().enumerate() {
            write(root, &format!("node/node{n}/cpulist"), list);
        }
        dir
    }

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }

    #[test]
    fn one_node_two_cpus_without_node_dir() {
        let fs = fake_sysfs(&["0", "1"], &["0-1"], None);
        let t = Topology::read(fs.path()).unwrap();
        assert_eq!((t.online_cpus, t.cores, t.llcs, t.nodes), (2, 2, 1, 1));
        let (a, b) = (t.cpus[0], t.cpus[1]);
        assert_eq!(a.distance(0, &b, 1), Some(DIST_SAME_LLC));
        assert_eq!(a.distance(0, &a, 0), Some(DIST_SAME_CPU));
    }

    #[test]
    fn two_nodes_with_smt_and_two_llcs() {
        // 8 CPUs: cores {0,4} {1,5} {2,6} {3,7}; LLC per node; node0 = 0,1,4,5.
        let fs = fake_sysfs(
            &["0,4", "1,5", "2,6", "3,7"],
            &["0-1,4-5", "2-3,6-7"],
            Some(&["0-1,4-5", "2-3,6-7"]),
        );
        let t = Topology::read(fs.path()).unwrap();
        assert_eq!((t.online_cpus, t.cores, t.llcs, t.nodes), (8, 4, 2, 2));
        let d = |a: u32, b: u32| t.cpus[a as usize].distance(a, &t.cpus[b as usize], b);
        assert_eq!(d(0, 4), Some(DIST_SAME_CORE));
        assert_eq!(d(0, 5), Some(DIST_SAME_LLC));
        assert_eq!(d(1, 6), Some(DIST_OTHER_NODE));
        assert_eq!(d(7, 3), Some(DIST_SAME_CORE));
        assert_eq!(t.cpus[6].node, 1);
    }

    #[test]
    fn two_llcs_in_one_node() {
        let fs = fake_sysfs(&["0", "1", "2", "3"], &["0-1", "2-3"], Some(&["0-3"]));
        let t = Topology::read(fs.path()).unwrap();
        let d = |a: u32, b: u32| t.cpus[a as usize].distance(a, &t.cpus[b as usize], b);
        assert_eq!(d(0, 1), Some(DIST_SAME_LLC));
        assert_eq!(d(1, 2), Some(DIST_SAME_NODE));
    }

    #[test]
    fn offline_cpus_are_unknown() {
        let fs = fake_sysfs(&["0", "1", "2"], &["0-2"], None);
        fs::remove_dir_all(fs.path().join("cpu/cpu1/topology")).unwrap();
        let t = Topology::read(fs.path()).unwrap();
        assert_eq!(t.online_cpus, 2);
        assert_eq!(t.cpus[0].distance(0, &t.cpus[1], 1), None);
    }

    #[test]
    fn reads_this_machine() {
        let t = Topology::read(Path::new(SYSFS_SYSTEM)).unwrap();
        let online = std::thread::available_parallelism().unwrap().get();
        assert!(t.online_cpus >= online, "{} < {online}", t.online_cpus);
        assert!(t.nodes >= 1 && t.llcs >= 1);
    }
}
