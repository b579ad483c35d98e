//! Live-migration readiness: the latest assessment of every target (the
//! snapshot's section) and one assessment with its evidence (the view
//! behind `hostprobe readiness`).

use serde::Serialize;

use crate::model::precopy::{DirtyPoint, Forecast, Link};

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
    /// What measuring cost, in total and in the last pass.
    pub cost: SamplingCost,
    pub last_pass_cost: SamplingCost,
}

/// One readiness answer with its evidence: the view behind
/// `hostprobe readiness` (text and `--json`) and the serve metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    pub target: TargetInfo,
    /// What the first pass sends.
    pub memory_bytes: f64,
    /// The pages the first pass covers (zero pages included).
    pub pages_bytes: f64,
    pub memory_method: MemoryMethod,
    pub method: SamplingMethod,
    /// What measuring cost.
    pub cost: SamplingCost,
    /// Measured d(w), with intervals.
    pub dirty: Vec<DirtyPoint>,
    pub link: Link,
    /// The outlook and the predictions at the estimates and both ends of
    /// their intervals (fields of the report in JSON).
    #[serde(flatten)]
    pub forecast: Forecast,
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

/// What measuring d(w) cost: passes over the samples, pages read, and the
/// CPU time of the reading and hashing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SamplingCost {
    pub passes: u64,
    pub pages_read: u64,
    pub cpu_seconds: f64,
}

impl SamplingCost {
    pub fn add(&mut self, other: &Self) {
        self.passes += other.passes;
        self.pages_read += other.pages_read;
        self.cpu_seconds += other.cpu_seconds;
    }
}

/// What the dirty-set figures are based on, reported with every figure.
#[derive(Debug, Clone, Serialize)]
pub struct SamplingMethod {
    pub method: &'static str,
    pub samples: usize,
    pub sampled_bytes: u64,
}
