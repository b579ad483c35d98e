//! Workload names: cgroup v2 ids (what `bpf_get_current_cgroup_id` returns:
//! the kernfs inode number of the cgroup directory) resolved to paths.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::proc;

/// Maps cgroup ids to paths relative to the cgroup v2 root (`/` is the root).
pub struct CgroupResolver {
    root: PathBuf,
    by_id: HashMap<u64, String>,
    /// Last paths of cgroups that a rescan found removed (the most recent
    /// `REMEMBER_REMOVED`), so that their last counts keep their name.
    removed: HashMap<u64, String>,
    removed_order: VecDeque<u64>,
}

/// Removed cgroups whose paths are remembered.
const REMEMBER_REMOVED: usize = 4096;

impl CgroupResolver {
    /// Uses the cgroup v2 mount of this machine (`/sys/fs/cgroup` on unified
    /// systems, `/sys/fs/cgroup/unified` on hybrid ones).
    pub fn system() -> Result<Self> {
        let root = proc::cgroup2_mount(&proc::self_mountinfo()?).ok_or(Error::NoCgroup2)?;
        Ok(Self::at(root))
    }

    pub fn at(root: PathBuf) -> Self {
        let mut r = Self {
            root,
            by_id: HashMap::new(),
            removed: HashMap::new(),
            removed_order: VecDeque::new(),
        };
        r.rescan();
        r
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of cgroup `id`, rescanning the hierarchy once if it is new.
    /// `None` when the cgroup no longer exists.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if !self.by_id.contains_key(&id) {
            self.rescan();
        }
        self.by_id.get(&id).cloned()
    }

    /// The last path of cgroup `id` if a rescan found it removed.
    pub fn removed_path(&self, id: u64) -> Option<&str> {
        self.removed.get(&id).map(String::as_str)
    }

    /// Id of the cgroup at `path` (relative to the v2 root, leading `/`
    /// optional, or absolute under the mount point).
    pub fn id_of(&self, path: &str) -> Result<u64> {
        Ok(std::fs::metadata(self.dir_of(path)?)
            .map_err(|_| self.not_found(path))?
            .ino())
    }

    /// Processes directly in the cgroup at `path` (a workload's own tasks:
    /// the kernel side keys workloads by the task's own cgroup).
    pub fn own_procs(&self, path: &str) -> Result<Vec<u32>> {
        let text = std::fs::read_to_string(self.dir_of(path)?.join("cgroup.procs"))
            .map_err(|_| self.not_found(path))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Processes in the cgroup at `path` and all its descendants.
    pub fn procs(&self, path: &str) -> Result<Vec<u32>> {
        let mut pids = Vec::new();
        let mut stack = vec![self.dir_of(path)?];
        while let Some(dir) = stack.pop() {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        pids.sort_unstable();
        Ok(pids)
    }

    fn dir_of(&self, path: &str) -> Result<PathBuf> {
        let rel = Path::new(path)
            .strip_prefix(&self.root)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| PathBuf::from(path.trim_start_matches('/')));
        let full = self.root.join(rel);
        if full.is_dir() {
            Ok(full)
        } else {
            Err(self.not_found(path))
        }
    }

    fn not_found(&self, path: &str) -> Error {
        Error::NoSuchCgroup {
            path: path.to_string(),
            root: self.root.clone(),
        }
    }

    /// The cgroup v2 path of a process, from `/proc/PID/cgroup`.
    pub fn of_pid(pid: u32) -> Result<String> {
        let p = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let text = std::fs::read_to_string(&p).map_err(|_| Error::NoSuchProcess { pid })?;
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_string)
            .ok_or(Error::NoCgroup2)
    }

    fn rescan(&mut self) {
        let before = std::mem::take(&mut self.by_id);
        let mut stack = vec![(self.root.clone(), String::from("/"))];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            self.by_id.insert(meta.ino(), rel.clone());
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let child = if rel == "/" {
                        format!("/{name}")
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((e.path(), child));
                }
            }
        }
        for (id, path) in before {
            if !self.by_id.contains_key(&id) && self.removed.insert(id, path).is_none() {
                self.removed_order.push_back(id);
                if self.removed_order.len() > REMEMBER_REMOVED {
                    if let Some(old) = self.removed_order.pop_front() {
                        self.removed.remove(&old);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_ids_of_a_directory_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("system.slice/db.service")).unwrap();
        let mut r = CgroupResolver::at(dir.path().to_path_buf());
        let id = r.id_of("/system.slice/db.service").unwrap();
        assert_eq!(r.path(id).as_deref(), Some("/system.slice/db.service"));
        let root = r.id_of("/").unwrap();
        assert_eq!(r.path(root).as_deref(), Some("/"));
        let abs = dir.path().join("system.slice");
        assert_eq!(
            r.id_of(abs.to_str().unwrap()).unwrap(),
            r.id_of("system.slice").unwrap()
        );
        assert!(matches!(r.id_of("/nope"), Err(Error::NoSuchCgroup { .. })));
        // A cgroup created later is found by the rescan on a miss.
        std::fs::create_dir(dir.path().join("late")).unwrap();
        let late = r.id_of("/late").unwrap();
        assert_eq!(r.path(late).as_deref(), Some("/late"));
        // A removed cgroup is gone after the rescan its miss triggers, and
        // its last path is remembered.
        std::fs::remove_dir(dir.path().join("late")).unwrap();
        r.rescan();
        assert_eq!(r.path(late), None);
        assert_eq!(r.removed_path(late), Some("/late"));
    }

    #[test]
    fn reads_the_cgroup_of_this_process() {
        let path = CgroupResolver::of_pid(std::process::id()).unwrap();
        assert!(path.starts_with('/'));
        assert!(matches!(
            CgroupResolver::of_pid(u32::MAX),
            Err(Error::NoSuchProcess { .. })
        ));
    }
}
