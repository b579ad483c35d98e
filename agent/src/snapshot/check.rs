//! What `hostprobe check` found: the view behind its text and `--json`.

use serde::Serialize;

use crate::host::topology::Topology;
use crate::probes::ProbeStatus;

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub kernel: String,
    pub btf: Item,
    pub tracefs: Item,
    pub cgroup_v2: Item,
    pub privileges: Item,
    /// Which exact dirty-page method `readiness --exact` uses (information:
    /// the hash fallback works everywhere).
    pub exact_dirty_method: String,
    pub topology: Option<Topology>,
    pub probes: Vec<ProbeStatus>,
}

/// One prerequisite: whether it holds, and what was found or what is wrong.
#[derive(Debug, Serialize)]
pub struct Item {
    pub ok: bool,
    pub detail: String,
}

impl CheckReport {
    /// True when at least one probe can run: the exit status of `check`.
    pub fn usable(&self) -> bool {
        self.probes.iter().any(|p| p.attached)
    }
}
