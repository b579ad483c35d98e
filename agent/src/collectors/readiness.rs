//! Migration readiness of the VMs on the host (found automatically) and of
//! named processes and cgroups, re-assessed on an interval in a thread of
//! its own: a measurement lasts as long as its longest window, far longer
//! than a scrape may take. Scrapes read the latest results.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::error::Result;
use crate::host::{privileges, qemu};
use crate::measure::assess::{self, Resolved, Sampling, Target};
use crate::model::precopy::{Link, QEMU_OVERHEADS};
use crate::snapshot::{DirtySection, ReadinessSection, SamplingCost};

#[derive(Debug, Clone)]
pub struct ReadinessOptions {
    /// Assess every QEMU VM found (receiving ends of a migration excepted).
    pub vms: bool,
    /// Processes and cgroups named on the command line.
    pub targets: Vec<Target>,
    pub link: Link,
    pub windows: Vec<Duration>,
    pub samples_per_gib: u32,
    /// Extra passes per target when its verdict hangs on one window.
    pub refine_passes: u32,
    /// Time from the start of one pass over the targets to the next.
    pub interval: Duration,
    /// At most this many targets per pass (the rest are counted, not assessed).
    pub max_targets: usize,
}

pub struct ReadinessCollector {
    latest: Arc<Mutex<ReadinessSection>>,
}

impl ReadinessCollector {
    /// Starts the assessment thread; it stops when the collector is dropped.
    pub fn start(opts: ReadinessOptions) -> Self {
        let latest = Arc::new(Mutex::new(ReadinessSection {
            link: Some(opts.link),
            ..Default::default()
        }));
        let weak = Arc::downgrade(&latest);
        std::thread::Builder::new()
            .name("readiness".into())
            .spawn(move || {
                // This thread's own capabilities (they are per thread).
                if let Err(e) = privileges::drop_unneeded() {
                    warn!("readiness thread keeps its capabilities: {e}");
                }
                let mut seed = 0x9e37_79b9_7f4a_7c15u64;
                loop {
                    let t0 = Instant::now();
                    let Some(shared) = weak.upgrade() else {
                        return;
                    };
                    let (targets, skipped) = resolve(&opts);
                    drop(shared);
                    let mut reports = Vec::new();
                    let mut errors = 0;
                    let mut pass_cost = SamplingCost::default();
                    for t in targets {
                        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        let sampling = Sampling {
                            windows: opts.windows.clone(),
                            samples_per_gib: opts.samples_per_gib,
                            refine_passes: opts.refine_passes,
                            seed,
                            exact: None,
                        };
                        match t.and_then(|t| {
                            assess::assess(&t, &sampling, &opts.link, &QEMU_OVERHEADS)
                        }) {
                            Ok(r) => {
                                pass_cost.add(&r.cost);
                                reports.push(r);
                            }
                            Err(e) => {
                                debug!("readiness assessment failed: {e}");
                                errors += 1;
                            }
                        }
                    }
                    let Some(shared) = weak.upgrade() else {
                        return;
                    };
                    {
                        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                        s.targets = reports;
                        s.errors += errors;
                        s.skipped = skipped as u64;
                        s.passes += 1;
                        s.cost.add(&pass_cost);
                        s.last_pass_cost = pass_cost;
                    }
                    drop(shared);
                    if let Some(left) = opts.interval.checked_sub(t0.elapsed()) {
                        std::thread::sleep(left);
                    }
                }
            })
            .map_err(|e| warn!("readiness thread not started: {e}"))
            .ok();
        Self { latest }
    }

    pub fn collect(&self) -> ReadinessSection {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits (polling) until a first pass over the targets has completed.
    pub async fn first_pass(&self, timeout: Duration) {
        let t0 = Instant::now();
        while self.collect().passes == 0 && t0.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Assesses the `n` most dirtying workloads of `dirty` (cgroups other than
/// the root, not already assessed) with a one-second window: what
/// `diagnose` adds to its readiness section after the collection.
pub fn assess_top_dirtying(
    dirty: &DirtySection,
    section: &mut ReadinessSection,
    opts: &ReadinessOptions,
    n: usize,
) {
    let assessed: Vec<String> = section
        .targets
        .iter()
        .map(|t| t.target.workload())
        .collect();
    let top = dirty
        .workloads
        .iter()
        .filter(|w| w.workload.starts_with('/') && w.workload != "/")
        .filter(|w| w.file_dirtied_bytes + w.write_faults_new + w.write_faults_present > 0)
        .filter(|w| !assessed.contains(&w.workload))
        .take(n);
    for (i, w) in top.enumerate() {
        let sampling = Sampling {
            windows: vec![Duration::from_secs(1)],
            samples_per_gib: opts.samples_per_gib,
            refine_passes: opts.refine_passes,
            seed: 0x5851_f42d_4c95_7f2d ^ i as u64,
            exact: None,
        };
        match Resolved::new(&Target::Cgroup(w.workload.clone()))
            .and_then(|t| assess::assess(&t, &sampling, &opts.link, &QEMU_OVERHEADS))
        {
            Ok(r) => {
                section.cost.add(&r.cost);
                section.targets.push(r);
            }
            Err(e) => {
                debug!("readiness of {} failed: {e}", w.workload);
                section.errors += 1;
            }
        }
    }
}

/// This pass's targets: named ones first, then VMs; beyond `max_targets`
/// only counted.
fn resolve(opts: &ReadinessOptions) -> (Vec<Result<Resolved>>, usize) {
    let mut all: Vec<Result<Resolved>> = opts.targets.iter().map(Resolved::new).collect();
    if opts.vms {
        all.extend(
            qemu::find_vms()
                .iter()
                .filter(|v| !v.incoming)
                .map(Resolved::vm),
        );
    }
    let skipped = all.len().saturating_sub(opts.max_targets);
    all.truncate(opts.max_targets);
    (all, skipped)
}
