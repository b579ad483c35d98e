//! Workload names: cgroup v2 ids (what `bpf_get_current_cgroup_id` returns:
//! the kernfs inode number of the cgroup directory) resolved to paths.
//!
//! On a cgroup2 mount an unknown id is opened directly by its file handle
//! (`open_by_handle_at`, a kernfs handle is the id), so cgroup churn costs
//! one system call per new id instead of a walk of the whole tree; a known
//! id is checked to still exist once per round. Where handles are not
//! available (not cgroupfs, or no CAP_DAC_READ_SEARCH) the tree is walked
//! instead, at most once per round.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::proc;

/// Maps cgroup ids to paths relative to the cgroup v2 root (`/` is the root).
pub struct CgroupResolver {
    root: PathBuf,
    /// The mount's root directory, to open cgroups by handle; `None` where
    /// that is not possible.
    handles: Option<OwnedFd>,
    by_id: HashMap<u64, String>,
    /// The round in which each known id was last seen to exist.
    checked: HashMap<u64, u64>,
    round: u64,
    /// The round of the last walk of the tree.
    walked_in: Option<u64>,
    /// Last paths of cgroups found removed (the most recent
    /// `REMEMBER_REMOVED`), so that their last counts keep their name.
    removed: HashMap<u64, String>,
    removed_order: VecDeque<u64>,
    /// Walks of the whole tree so far (a self-metric of cgroup churn).
    pub walks: u64,
}

/// Removed cgroups whose paths are remembered.
const REMEMBER_REMOVED: usize = 4096;
/// `statfs` magic of cgroup2 and the kernfs file handle type.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const FILEID_KERNFS: i32 = 0xfe;

#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

impl CgroupResolver {
    /// Uses the cgroup v2 mount of this machine (`/sys/fs/cgroup` on unified
    /// systems, `/sys/fs/cgroup/unified` on hybrid ones).
    pub fn system() -> Result<Self> {
        let root = proc::cgroup2_mount(&proc::self_mountinfo()?).ok_or(Error::NoCgroup2)?;
        Ok(Self::at(root))
    }

    pub fn at(root: PathBuf) -> Self {
        let mut r = Self {
            handles: open_handles(&root),
            root,
            by_id: HashMap::new(),
            checked: HashMap::new(),
            round: 0,
            walked_in: None,
            removed: HashMap::new(),
            removed_order: VecDeque::new(),
            walks: 0,
        };
        if r.handles.is_none() {
            r.rescan();
        }
        r
    }

    /// Starts a round: every known id is checked again (once) before its
    /// path is handed out, and the tree may be walked once more.
    pub fn begin_round(&mut self) {
        self.round += 1;
    }

    /// Whether unknown ids are resolved by handle (not by walking the tree).
    pub fn by_handle(&self) -> bool {
        self.handles.is_some()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the hierarchy offers `controller` (the root's
    /// `cgroup.controllers`).
    pub fn offers(&self, controller: &str) -> bool {
        std::fs::read_to_string(self.root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == controller))
    }

    /// Path of cgroup `id`; `None` when the cgroup no longer exists (or,
    /// without handles, was not found by this round's walk of the tree).
    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(path) = self.by_id.get(&id) {
            if self.checked.get(&id) == Some(&self.round) {
                return Some(path.clone());
            }
            let live = std::fs::metadata(self.root.join(path.trim_start_matches('/')))
                .is_ok_and(|m| m.is_dir() && m.ino() == id);
            if live {
                self.checked.insert(id, self.round);
                return Some(path.clone());
            }
            let path = self.by_id.remove(&id).unwrap_or_default();
            self.checked.remove(&id);
            self.forget(id, path);
            return None;
        }
        if let Some(fd) = &self.handles {
            let path = open_by_id(fd, id).and_then(|f| {
                let link = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()?;
                relative(&self.root, &link)
            })?;
            self.by_id.insert(id, path.clone());
            self.checked.insert(id, self.round);
            return Some(path);
        }
        if self.walked_in != Some(self.round) {
            self.rescan();
        }
        let path = self.by_id.get(&id).cloned()?;
        self.checked.insert(id, self.round);
        Some(path)
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
        self.walks += 1;
        self.walked_in = Some(self.round);
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
            if !self.by_id.contains_key(&id) {
                self.forget(id, path);
            }
        }
    }

    /// Remembers the last path of a removed cgroup.
    fn forget(&mut self, id: u64, path: String) {
        if self.removed.insert(id, path).is_none() {
            self.removed_order.push_back(id);
            if self.removed_order.len() > REMEMBER_REMOVED {
                if let Some(old) = self.removed_order.pop_front() {
                    self.removed.remove(&old);
                }
            }
        }
    }
}

/// The cgroup2 mount's root, if it is cgroupfs and cgroups can be opened by
/// handle here (CAP_DAC_READ_SEARCH): tried on the root's own id.
fn open_handles(root: &Path) -> Option<OwnedFd> {
    let c = CString::new(root.as_os_str().as_bytes()).ok()?;
    // SAFETY: a NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd of ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed statfs filled by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and buffer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0
        || st.f_type as i64 != CGROUP2_SUPER_MAGIC
    {
        return None;
    }
    let root_id = std::fs::metadata(root).ok()?.ino();
    open_by_id(&fd, root_id).map(|_| fd)
}

/// The cgroup directory with kernfs id `id`, opened by handle; `None` when
/// it does not exist (any more) or cannot be opened.
fn open_by_id(mount: &OwnedFd, id: u64) -> Option<OwnedFd> {
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: a file_handle of 8 bytes, laid out as the kernel reads it.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&mut handle as *mut KernfsHandle).cast(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a fresh fd of ours when non-negative.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `path` relative to the mount `root`, as `/a/b` (`/` for the root).
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    Some(format!("/{}", rel.to_string_lossy()))
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
        // A cgroup created later is found by the next round's walk (at most
        // one walk per round).
        std::fs::create_dir(dir.path().join("late")).unwrap();
        let late = r.id_of("/late").unwrap();
        assert_eq!(r.path(late), None);
        r.begin_round();
        assert_eq!(r.path(late).as_deref(), Some("/late"));
        assert_eq!(r.walks, 2);
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

    #[test]
    fn resolves_new_and_removed_cgroups_by_handle_without_walking() {
        let Ok(mut r) = CgroupResolver::system() else {
            return;
        };
        assert!(
            r.by_handle(),
            "cgroupfs handles need CAP_DAC_READ_SEARCH (root)"
        );
        let dir = r
            .root()
            .join(format!("hostprobe-handles-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let rel = format!("/{}", dir.file_name().unwrap().to_string_lossy());
        let id = std::fs::metadata(&dir).unwrap().ino();
        r.begin_round();
        assert_eq!(r.path(id).as_deref(), Some(rel.as_str()));
        assert_eq!(r.path(u64::MAX), None, "no cgroup has that id");
        std::fs::remove_dir(&dir).unwrap();
        // Known for this round; checked again in the next.
        assert_eq!(r.path(id).as_deref(), Some(rel.as_str()));
        r.begin_round();
        assert_eq!(r.path(id), None);
        assert_eq!(r.removed_path(id), Some(rel.as_str()));
        assert_eq!(r.walks, 0, "never walked the tree");
    }
}
