//! One readiness assessment of one target: resolve the target to processes
//! and memory, measure d(w), run the pre-copy model. Shared by
//! `hostprobe readiness` and `serve`.

use std::time::Duration;

use serde::Serialize;

use crate::cgroup::CgroupResolver;
use crate::dirty::{self, Region, Sampler, SamplingMethod};
use crate::error::{Error, Result};
use crate::qemu;
use crate::readiness::{self, DirtyCurve, DirtyPoint, Link, Prediction};

/// What to assess, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    /// A cgroup v2 path: all processes in it and below.
    Cgroup(String),
    /// A QEMU VM by its `-name`.
    Vm(String),
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

/// A target resolved to the memory to measure.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub kind: &'static str,
    pub name: String,
    pub pids: Vec<u32>,
    #[serde(skip)]
    regions: Vec<Region>,
    #[serde(skip)]
    guest_ram_bytes: Option<u64>,
}

impl Resolved {
    pub fn new(target: &Target) -> Result<Self> {
        match target {
            Target::Pid(pid) => Ok(Self {
                kind: "pid",
                name: pid.to_string(),
                pids: vec![*pid],
                regions: vec![Region::process(*pid)?],
                guest_ram_bytes: None,
            }),
            Target::Cgroup(path) => {
                let pids = CgroupResolver::system()?.procs(path)?;
                // Processes may exit while being listed; keep the live ones.
                let regions: Vec<Region> = pids
                    .iter()
                    .filter_map(|&p| Region::process(p).ok())
                    .collect();
                if regions.is_empty() {
                    return Err(Error::EmptyCgroup { path: path.clone() });
                }
                Ok(Self {
                    kind: "cgroup",
                    name: path.clone(),
                    pids: regions.iter().map(|r| r.pid).collect(),
                    regions,
                    guest_ram_bytes: None,
                })
            }
            Target::Vm(name) => Self::vm(&qemu::find_vm(name)?),
        }
    }

    pub fn vm(vm: &qemu::Vm) -> Result<Self> {
        Ok(Self {
            kind: "vm",
            name: vm.name.clone(),
            pids: vec![vm.pid],
            regions: vec![Region {
                pid: vm.pid,
                mappings: qemu::vm_ram(vm)?,
            }],
            guest_ram_bytes: Some(vm.ram_bytes),
        })
    }
}

/// Sampling settings of the estimate.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub windows: Vec<Duration>,
    pub samples_per_gib: u32,
    pub seed: u64,
}

/// One readiness answer with its evidence: the view behind
/// `hostprobe readiness` (text and `--json`) and the serve metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    pub target: Resolved,
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

/// Measures the target for `max(windows)` and models its migration.
pub fn assess(target: &Resolved, sampling: &Sampling, link: &Link) -> Result<ReadinessReport> {
    let sampler = Sampler::new(&target.regions, sampling.samples_per_gib, sampling.seed)?;
    let m = sampler.measure(&sampling.windows)?;
    let (memory_bytes, memory_method) = match target.guest_ram_bytes {
        Some(ram) => (
            ram as f64 * (1.0 - m.zero_share),
            MemoryMethod::GuestRamNonZero,
        ),
        None => {
            let mut rss = 0;
            for &pid in &target.pids {
                rss += dirty::resident_bytes(pid)?;
            }
            (rss as f64, MemoryMethod::Resident)
        }
    };
    let curve = DirtyCurve::new(m.points.clone());
    Ok(ReadinessReport {
        target: target.clone(),
        memory_bytes,
        memory_method,
        method: sampler.method(),
        dirty: m.points,
        link: *link,
        prediction: readiness::predict(memory_bytes, &curve, link),
        min_bandwidth_bytes_per_second: readiness::min_bandwidth(memory_bytes, &curve, link),
    })
}
