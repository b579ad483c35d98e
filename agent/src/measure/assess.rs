//! One readiness assessment of one target: resolve the target to processes
//! and memory, measure d(w), run the pre-copy model. Shared by
//! `hostprobe readiness` and `serve`.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::host::cgroup::CgroupResolver;
use crate::host::{proc, qemu};
use crate::measure::exact;
use crate::measure::sampling::{Region, Sampler};
use crate::model::precopy::{self, DirtyCurve, Link, Memory, Overheads};
use crate::snapshot::{MemoryMethod, ReadinessReport, SamplingCost, TargetInfo};

/// What to assess, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    /// A cgroup v2 path: all processes in it and below.
    Cgroup(String),
    /// A QEMU VM by its `-name`.
    Vm(String),
}

/// A target resolved to the memory to measure.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub info: TargetInfo,
    regions: Vec<Region>,
    guest_ram_bytes: Option<u64>,
    /// The VM, for a VM target.
    vm: Option<qemu::Vm>,
}

impl Resolved {
    pub fn new(target: &Target) -> Result<Self> {
        match target {
            Target::Pid(pid) => {
                let region = Region::process(*pid)?;
                if region.mappings.is_empty() {
                    return Err(Error::NoMemory { pid: *pid });
                }
                Ok(Self {
                    info: TargetInfo {
                        kind: "pid",
                        name: pid.to_string(),
                        pids: vec![*pid],
                    },
                    regions: vec![region],
                    guest_ram_bytes: None,
                    vm: None,
                })
            }
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
                    info: TargetInfo {
                        kind: "cgroup",
                        name: path.clone(),
                        pids: regions.iter().map(|r| r.pid).collect(),
                    },
                    regions,
                    guest_ram_bytes: None,
                    vm: None,
                })
            }
            Target::Vm(name) => Self::vm(&qemu::find_vm(name)?),
        }
    }

    pub fn vm(vm: &qemu::Vm) -> Result<Self> {
        Ok(Self {
            info: TargetInfo {
                kind: "vm",
                name: vm.name.clone(),
                pids: vec![vm.pid],
            },
            regions: vec![Region {
                pid: vm.pid,
                mappings: qemu::vm_ram(vm)?,
            }],
            guest_ram_bytes: Some(vm.ram_bytes),
            vm: Some(vm.clone()),
        })
    }
}

/// Sampling settings of the estimate.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub windows: Vec<Duration>,
    pub samples_per_gib: u32,
    /// Extra passes allowed for windows an uncertain verdict hangs on (0:
    /// none); they also take at most the longest window's time.
    pub refine_passes: u32,
    pub seed: u64,
    /// Measure exactly instead (soft-dirty or a hash of every page).
    pub exact: Option<ExactGuard>,
}

/// The limits of the exact path.
#[derive(Debug, Clone)]
pub struct ExactGuard {
    /// At most one exact measurement per process per this long.
    pub min_interval: Duration,
    /// Where the time of the last one is kept.
    pub state_dir: PathBuf,
    /// The user vouches that no migration is running.
    pub not_migrating: bool,
}

/// Measures the target for `max(windows)` (and, when the verdict hangs on
/// a window, measures that window again within the budget) and models its
/// migration.
pub fn assess(
    target: &Resolved,
    sampling: &Sampling,
    link: &Link,
    costs: &Overheads,
) -> Result<ReadinessReport> {
    // What the memory figures are, once d(w) is known.
    let memory = |zero_share: f64| -> Result<(Memory, MemoryMethod)> {
        match target.guest_ram_bytes {
            Some(ram) => Ok((
                Memory {
                    pages_bytes: ram as f64,
                    first_pass_bytes: ram as f64 * (1.0 - zero_share),
                },
                MemoryMethod::GuestRamNonZero,
            )),
            None => {
                // What the processes still running hold; an error only when
                // every one has exited.
                let resident: Vec<u64> = target
                    .info
                    .pids
                    .iter()
                    .filter_map(|&pid| proc::resident_bytes(pid).ok())
                    .collect();
                if resident.is_empty() {
                    return Err(Error::NoSuchProcess {
                        pid: target.info.pids[0],
                    });
                }
                let bytes = resident.iter().sum::<u64>() as f64;
                Ok((
                    Memory {
                        pages_bytes: bytes,
                        first_pass_bytes: bytes,
                    },
                    MemoryMethod::Resident,
                ))
            }
        }
    };
    let (m, method, cost, (mem, memory_method)) = match &sampling.exact {
        None => {
            let mut sampler =
                Sampler::new(&target.regions, sampling.samples_per_gib, sampling.seed)?;
            let (mut m, mut tallies) = sampler.measure(&sampling.windows)?;
            let mem = memory(m.zero_share)?;
            // Measure again the window an uncertain verdict (or a widely
            // uncertain time) hangs on, until it is certain or the budget
            // is spent: page reads (`refine_passes` passes' worth) and the
            // longest window's time again (and a quarter for the passes).
            let mut windows = sampling.windows.clone();
            windows.sort();
            windows.dedup();
            let longest = windows.last().copied().unwrap_or_default();
            let budget = longest + longest / 4;
            let refining = std::time::Instant::now();
            let base = sampler.method().samples as u64;
            let mut reads_left = u64::from(sampling.refine_passes) * base;
            loop {
                let f = precopy::forecast(&mem.0, &m.points, link, costs);
                let Some(i) = f.decisive else {
                    break;
                };
                let w = windows[i];
                let time_left = budget.saturating_sub(refining.elapsed());
                let fit = (time_left.as_secs_f64() / w.as_secs_f64()) as u32;
                // Windows of the same pages that change independently: more
                // windows, doubling them. Pages that change in every window
                // (a saturated hot set), or a window too long to repeat
                // much: one window over as many fresh pages as the budget
                // allows (up to 16 times the first set).
                let (count, scale) = if tallies[i].windows > 1 && tallies[i].design_effect() <= 2.0
                {
                    (tallies[i].windows.min(fit), 1)
                } else {
                    (fit.min(1), 16)
                };
                let scale = scale.min(reads_left / ((u64::from(count) + 1) * base));
                if count == 0 || scale == 0 {
                    break;
                }
                sampler.repeat(w, count, (scale * base) as usize, &mut tallies[i])?;
                reads_left -= (u64::from(count) + 1) * scale * base;
                m.points = sampler.points(&tallies);
            }
            (m, sampler.method(), sampler.cost(), mem)
        }
        Some(guard) => {
            if let Some(vm) = target.vm.as_ref().filter(|_| !guard.not_migrating) {
                if let Some(reason) = qemu::migration_suspected(vm) {
                    return Err(Error::Migrating {
                        name: target.info.name.clone(),
                        reason,
                    });
                }
            }
            for &pid in &target.info.pids {
                match exact::rate_limit(&guard.state_dir, pid, guard.min_interval) {
                    // Exited since the target was listed: nothing to limit.
                    Err(Error::NoSuchProcess { .. }) if target.info.pids.len() > 1 => {}
                    r => r?,
                }
            }
            let e = exact::Exact::new(&target.regions)?;
            let (m, pages) = e.measure(&sampling.windows)?;
            let mem = memory(m.zero_share)?;
            (m, e.method(pages), SamplingCost::default(), mem)
        }
    };
    let f = precopy::forecast(&mem, &m.points, link, costs);
    Ok(ReadinessReport {
        target: target.info.clone(),
        memory_bytes: mem.first_pass_bytes,
        pages_bytes: mem.pages_bytes,
        memory_method,
        method,
        cost,
        min_bandwidth_bytes_per_second: precopy::min_bandwidth(
            &mem,
            &DirtyCurve::new(&m.points),
            link,
            costs,
        ),
        dirty: m.points,
        link: *link,
        forecast: f,
    })
}
