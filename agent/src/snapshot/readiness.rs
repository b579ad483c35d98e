//! Live-migration readiness: the latest assessment of every target (the
//! snapshot's section) and one assessment with its evidence (the view
//! behind `hostprobe readiness`).

use serde::Serialize;

use crate::model::precopy::{DirtyPoint, Link, Prediction};

/// The latest assessment of every target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadinessSection {
    /// Bandwidth and downtime limit the predictions are for.
    pub link: Option<Link>,
    pub targets: Vec<ReadinessReport>,
    /// Assessments that failed (target gone, memory unreadable), in total.
    pub errors: u64,
    /// Targets skipped because of `max_targets`, in the last pass.
    pub skipped: u64,
    /// Completed passes over the targets.
    pub passes: u64,
}

/// One readiness answer with its evidence: the view behind
/// `hostprobe readiness` (text and `--json`) and the serve metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    pub target: TargetInfo,
    /// What the first pass sends.
    pub memory_bytes: f64,
    pub memory_method: MemoryMethod,
    pub method: SamplingMethod,
    /// Measured d(w).
    pub dirty: Vec<DirtyPoint>,
    pub link: Link,
    pub prediction: Prediction,
    pub min_bandwidth_bytes_per_second: Option<f64>,
}

/// Which target a report is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetInfo {
    /// `pid`, `cgroup` or `vm`.
    pub kind: &'static str,
    pub name: String,
    pub pids: Vec<u32>,
}

impl TargetInfo {
    /// The `workload` label: a cgroup's path, `vm:NAME`, `pid:PID`.
    pub fn workload(&self) -> String {
        match self.kind {
            "cgroup" => self.name.clone(),
            kind => format!("{kind}:{}", self.name),
        }
    }
}

/// How the memory a migration must send was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryMethod {
    /// Resident set (Rss) of the processes: what a process migration sends.
    Resident,
    /// Guest RAM size times the sampled share of non-zero pages: pre-copy
    /// sends a zero page as a flag, so only non-zero pages cost bandwidth.
    GuestRamNonZero,
}

/// What the dirty-set figures are based on, reported with every figure.
#[derive(Debug, Clone, Serialize)]
pub struct SamplingMethod {
    pub method: &'static str,
    pub samples: usize,
    pub sampled_bytes: u64,
}
