//! `hostprobe readiness`: one assessment of one target, printed.

use std::process::ExitCode;

use crate::cli::ReadinessCommand;
use crate::error::Result;
use crate::measure::assess::{self, ExactGuard, Resolved, Sampling, Target};
use crate::model::precopy::{self, Link};
use crate::output::report;

pub fn run(a: ReadinessCommand) -> Result<ExitCode> {
    let target = match (a.pid, a.cgroup, a.vm) {
        (Some(pid), _, _) => Target::Pid(pid),
        (_, Some(path), _) => Target::Cgroup(path),
        (_, _, Some(name)) => Target::Vm(name),
        _ => unreachable!("clap requires one target"),
    };
    let sampling = Sampling {
        windows: a.windows,
        samples_per_gib: a.samples_per_gib,
        refine_passes: a.refine_passes,
        seed: super::seed(),
        exact: a.exact.then_some(ExactGuard {
            min_interval: a.exact_min_interval,
            state_dir: a.exact_state_dir,
            not_migrating: a.not_migrating,
        }),
    };
    let link = Link {
        bandwidth_bytes_per_second: a.bandwidth,
        downtime_limit_seconds: a.downtime.as_secs_f64(),
        switchover_bandwidth_bytes_per_second: a.switchover_bandwidth,
        time_cap_seconds: a.max_time.map(|d| d.as_secs_f64()),
    };
    let resolved = Resolved::new(&target)?;
    let r = assess::assess(&resolved, &sampling, &link, &precopy::QEMU_OVERHEADS)?;
    super::print_view(&r, a.json, report::render_readiness);
    Ok(ExitCode::SUCCESS)
}
