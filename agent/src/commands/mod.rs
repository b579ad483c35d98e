//! The subcommands: each turns its arguments into library options, runs,
//! and prints a view. Errors go up to `main`, which maps them to exit codes.

pub mod check;
pub mod diagnose;
pub mod readiness;
pub mod serve;

use std::process::ExitCode;
use std::time::Duration;

use crate::agent::{AgentOptions, Filter};
use crate::cli::{Command, ReadinessArgs, Tuning};
use crate::collectors::readiness::ReadinessOptions;
use crate::error::Result;
use crate::measure::assess::{Resolved, Target};
use crate::model::precopy::Link;

pub async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check(a) => check::run(a.json, a.btf.btf),
        Command::Readiness(a) => readiness::run(a),
        Command::Serve(a) => serve::run(a).await,
        Command::Diagnose(a) => diagnose::run(a).await,
    }
}

/// Prints one JSON document, or the human view of the same value.
fn print_view<T: serde::Serialize>(value: &T, json: bool, render: impl FnOnce(&T) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("serializable")
        );
    } else {
        print!("{}", render(value));
    }
}

fn agent_options(filter: Filter, t: &Tuning, lock_types: u64) -> AgentOptions {
    AgentOptions {
        filter,
        top_k: t.top_k,
        task_slots: t.task_slots,
        max_workloads: t.max_workloads,
        lock_types,
        spin_stacks_per_sec: t.lock_stacks,
        page_alloc: t.numa_page_alloc,
        btf: t.btf.btf.clone(),
        readiness: None,
    }
}

/// The readiness collector's options; named targets are checked now, so a
/// dead pid or a missing cgroup is an error at start, not a silent gap.
fn readiness_options(
    args: &ReadinessArgs,
    extra: Option<Target>,
    max_window: Option<Duration>,
) -> Result<ReadinessOptions> {
    let mut targets: Vec<Target> = args
        .readiness_pids
        .iter()
        .map(|&p| Target::Pid(p))
        .chain(
            args.readiness_cgroups
                .iter()
                .map(|c| Target::Cgroup(c.clone())),
        )
        .collect();
    targets.extend(extra);
    for t in &targets {
        Resolved::new(t)?;
    }
    let mut windows = args.readiness_windows.clone();
    if let Some(max) = max_window {
        windows.retain(|w| *w <= max);
        if windows.is_empty() {
            windows.push(max);
        }
    }
    Ok(ReadinessOptions {
        vms: !args.no_vm_readiness,
        targets,
        link: Link {
            bandwidth_bytes_per_second: args.migration_bandwidth,
            downtime_limit_seconds: args.migration_downtime.as_secs_f64(),
            switchover_bandwidth_bytes_per_second: args.migration_switchover_bandwidth,
            time_cap_seconds: None,
        },
        windows,
        samples_per_gib: args.readiness_samples_per_gib,
        refine_passes: args.readiness_refine_passes,
        interval: args.readiness_interval,
        max_targets: args.readiness_max_targets,
    })
}

/// A different sample of pages on every run.
fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
