//! The `hostprobe` binary: argument parsing, logging, exit codes. The work
//! happens in the library.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use hostprobe::agent::{Agent, AgentOptions, Target};
use hostprobe::collectors::readiness::{assess_top_dirtying, ReadinessOptions};
use hostprobe::commands::{check, serve};
use hostprobe::error::Error;
use hostprobe::measure::assess;
use hostprobe::measure::sampling as dirty;
use hostprobe::model::precopy::Link;
use hostprobe::output::report;
use hostprobe::probes::lock_types;
use hostprobe::probes::PageAlloc;
use hostprobe_common::{DEFAULT_MAX_WORKLOADS, DEFAULT_TASK_SLOTS};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "hostprobe",
    version,
    about = "eBPF host tracing agent: CPU migrations by topology distance, run-queue latency and cache placement per workload",
    after_help = "Examples:\n  hostprobe check\n  hostprobe diagnose --duration 10s\n  hostprobe diagnose --pid 1234 --json\n  hostprobe serve --listen 0.0.0.0:19477 --interval 5s"
)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a RUST_LOG directive); default: RUST_LOG, else `info` for serve and `warn` otherwise.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Prometheus metrics at /metrics (and /healthz) until SIGINT/SIGTERM.
    #[command(
        after_help = "Examples:\n  hostprobe serve\n  hostprobe serve --listen 0.0.0.0:19477 --interval 10s --top-k 20"
    )]
    Serve {
        /// Address to listen on. Loopback by default: expose it deliberately.
        #[arg(long, default_value = serve::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// How often kernel maps are read when nobody scrapes (every scrape reads them too).
        #[arg(long, default_value = "5s", value_parser = positive_duration)]
        interval: Duration,
        #[command(flatten)]
        tuning: Tuning,
        #[command(flatten)]
        readiness: ReadinessArgs,
    },
    /// Collect for a while, then print a report (or JSON).
    #[command(
        after_help = "Examples:\n  hostprobe diagnose\n  hostprobe diagnose --duration 30s --cgroup /system.slice/postgresql.service\n  hostprobe diagnose --pid 1234 --json | jq .sched"
    )]
    Diagnose {
        /// How long to collect.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Print one JSON document on stdout instead of the report.
        #[arg(long)]
        json: bool,
        /// Only this process (filtered in the kernel).
        #[arg(long, conflicts_with = "cgroup")]
        pid: Option<u32>,
        /// Only this cgroup v2 path, e.g. /system.slice/nginx.service (filtered in the kernel).
        #[arg(long)]
        cgroup: Option<String>,
        /// Only this lock type (filtered in the kernel): semaphore, spinlock, rwlock:R, rwlock:W,
        /// rwsem:R, rwsem:W, rt-mutex, rwlock-rt:R, rwlock-rt:W, pcpu-sem:R, pcpu-sem:W, mutex.
        #[arg(long, value_name = "TYPE", value_parser = parse_lock_type)]
        lock_type: Option<u64>,
        /// Print the full kernel stack of the top lock contention entries.
        #[arg(long)]
        stacks: bool,
        #[command(flatten)]
        tuning: Tuning,
        #[command(flatten)]
        readiness: ReadinessArgs,
    },
    /// Predict whether a process, cgroup or QEMU VM would live-migrate by pre-copy: measures
    /// how fast it dirties memory (content sampling) and simulates the rounds.
    #[command(
        after_help = "Examples:\n  hostprobe readiness --pid 4242\n  hostprobe readiness --vm web1 --bandwidth 10Gbit/s --downtime 100ms --json\n  hostprobe readiness --cgroup /system.slice/db.service --windows 1s,4s,16s",
        group = clap::ArgGroup::new("target").required(true).args(["pid", "cgroup", "vm"])
    )]
    Readiness {
        /// A process.
        #[arg(long)]
        pid: Option<u32>,
        /// A cgroup v2 path: all processes in it and below.
        #[arg(long)]
        cgroup: Option<String>,
        /// A QEMU VM by its `-name` (its guest RAM is measured in the QEMU process).
        #[arg(long)]
        vm: Option<String>,
        /// Link bandwidth, e.g. 1Gbit/s, 125MB/s, 64MiB/s.
        #[arg(long, default_value = "1Gbit/s", value_parser = dirty::parse_bandwidth)]
        bandwidth: f64,
        /// Downtime limit (QEMU's default is 300ms).
        #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
        downtime: Duration,
        /// Windows at which the dirty set is measured (comma-separated); the longest is how
        /// long the measurement takes.
        #[arg(long, value_delimiter = ',', default_value = "250ms,1s,4s,16s", value_parser = humantime::parse_duration)]
        windows: Vec<Duration>,
        /// Sampled pages per GiB of memory (QEMU samples 512); more samples, less noise.
        #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
        samples_per_gib: u32,
        /// Rounds after the first pass before giving up.
        #[arg(long, default_value_t = 30)]
        max_rounds: u32,
        /// Give up (does not converge) after this long, like a migration time cap.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_time: Option<Duration>,
        /// Measure exactly: soft-dirty bits where the kernel has them, else a hash of every
        /// resident page. Slows the target; refused for a VM that looks like it is migrating.
        #[arg(long)]
        exact: bool,
        /// At most one exact measurement per process per this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        exact_min_interval: Duration,
        /// Where the time of the last exact measurement per process is kept.
        #[arg(long, default_value = "/run/hostprobe")]
        exact_state_dir: std::path::PathBuf,
        /// With --exact: the VM is not migrating, whatever its sockets suggest.
        #[arg(long, requires = "exact")]
        not_migrating: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check kernel support and privileges, and whether each probe loads.
    #[command(after_help = "Examples:\n  hostprobe check\n  hostprobe check --json")]
    Check {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct Tuning {
    /// Workloads with their own label; the rest are summed as `other`.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Workloads (cgroups) the kernel table holds per CPU (a power of two; each entry is 424 bytes per CPU).
    #[arg(long, default_value_t = DEFAULT_MAX_WORKLOADS, value_parser = clap::value_parser!(u32).range(4..=65_536))]
    max_workloads: u32,
    /// Stack walks per second per CPU for spinning lock waits (0: every one). A walk costs
    /// microseconds; waits beyond the budget are counted in full, under the caller
    /// "(stack not sampled)". Sleeping waits always get their stack.
    #[arg(long, default_value_t = hostprobe_common::lock::DEFAULT_SPIN_STACKS_PER_SEC)]
    lock_stacks: u32,
    /// `mm_page_alloc` (remote page allocations per workload; every page allocation
    /// pays ~0.1 us for it): `auto` attaches it with two or more NUMA nodes, `always`
    /// also on one, `never` not at all (CPU time by node, balancing and residency stay).
    #[arg(long, value_enum, default_value = "auto")]
    numa_page_alloc: PageAlloc,
    /// Per-task slots in the kernel (a power of two; more slots, fewer collisions).
    #[arg(long, default_value_t = DEFAULT_TASK_SLOTS, value_parser = clap::value_parser!(u32).range(2..=(1 << 22)))]
    task_slots: u32,
}

/// Live-migration readiness of QEMU VMs (found automatically) and of named processes and
/// cgroups, by content sampling.
#[derive(Args)]
struct ReadinessArgs {
    /// Link bandwidth the migration predictions assume, e.g. 10Gbit/s, 64MiB/s.
    #[arg(long, default_value = "1Gbit/s", value_parser = dirty::parse_bandwidth)]
    migration_bandwidth: f64,
    /// Downtime limit the migration predictions assume.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    migration_downtime: Duration,
    /// Also assess this process (repeatable).
    #[arg(long = "readiness-pid", value_name = "PID")]
    readiness_pids: Vec<u32>,
    /// Also assess all processes of this cgroup v2 path (repeatable).
    #[arg(long = "readiness-cgroup", value_name = "PATH")]
    readiness_cgroups: Vec<String>,
    /// Do not assess the QEMU VMs running on the host.
    #[arg(long)]
    no_vm_readiness: bool,
    /// Windows of the dirty-set measurement (diagnose keeps those within --duration).
    #[arg(long, value_delimiter = ',', default_value = "250ms,1s,4s,16s", value_parser = humantime::parse_duration)]
    readiness_windows: Vec<Duration>,
    /// Sampled pages per GiB (QEMU samples 512).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    readiness_samples_per_gib: u32,
    /// Time between the starts of two passes over the targets (serve).
    #[arg(long, default_value = "60s", value_parser = positive_duration)]
    readiness_interval: Duration,
    /// Targets assessed per pass; more are counted in hostprobe_readiness_skipped_targets.
    #[arg(long, default_value_t = 16)]
    readiness_max_targets: usize,
}

impl ReadinessArgs {
    /// The collector's options; named targets are checked now, so a dead
    /// pid or a missing cgroup is an error at start, not a silent gap.
    fn options(
        &self,
        extra: Option<assess::Target>,
        max_window: Option<Duration>,
    ) -> Result<ReadinessOptions, Error> {
        let mut targets: Vec<assess::Target> = self
            .readiness_pids
            .iter()
            .map(|&p| assess::Target::Pid(p))
            .chain(
                self.readiness_cgroups
                    .iter()
                    .map(|c| assess::Target::Cgroup(c.clone())),
            )
            .collect();
        targets.extend(extra);
        for t in &targets {
            assess::Resolved::new(t)?;
        }
        let mut windows = self.readiness_windows.clone();
        if let Some(max) = max_window {
            windows.retain(|w| *w <= max);
            if windows.is_empty() {
                windows.push(max);
            }
        }
        Ok(ReadinessOptions {
            vms: !self.no_vm_readiness,
            targets,
            link: Link {
                bandwidth_bytes_per_second: self.migration_bandwidth,
                downtime_limit_seconds: self.migration_downtime.as_secs_f64(),
                max_rounds: 30,
                time_cap_seconds: None,
            },
            windows,
            samples_per_gib: self.readiness_samples_per_gib,
            interval: self.readiness_interval,
            max_targets: self.readiness_max_targets,
        })
    }
}

/// A duration that must not be zero (intervals: zero would spin or panic).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be greater than zero (e.g. 5s)".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    let filter = match &cli.log_level {
        Some(l) => EnvFilter::try_new(l),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(default_level)),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: bad --log-level/RUST_LOG: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Check { json } => {
            let r = check::run();
            print_view(&r, json, check::render);
            Ok(if r.usable() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Readiness {
            pid,
            cgroup,
            vm,
            bandwidth,
            downtime,
            windows,
            samples_per_gib,
            max_rounds,
            max_time,
            exact,
            exact_min_interval,
            exact_state_dir,
            not_migrating,
            json,
        } => {
            let target = match (pid, cgroup, vm) {
                (Some(pid), _, _) => assess::Target::Pid(pid),
                (_, Some(path), _) => assess::Target::Cgroup(path),
                (_, _, Some(name)) => assess::Target::Vm(name),
                _ => unreachable!("clap requires one target"),
            };
            let sampling = assess::Sampling {
                windows,
                samples_per_gib,
                seed: seed(),
                exact: exact.then_some(assess::ExactGuard {
                    min_interval: exact_min_interval,
                    state_dir: exact_state_dir,
                    not_migrating,
                }),
            };
            let link = Link {
                bandwidth_bytes_per_second: bandwidth,
                downtime_limit_seconds: downtime.as_secs_f64(),
                max_rounds,
                time_cap_seconds: max_time.map(|d| d.as_secs_f64()),
            };
            let resolved = assess::Resolved::new(&target)?;
            let report = assess::assess(&resolved, &sampling, &link)?;
            print_view(&report, json, report::render_readiness);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            listen,
            interval,
            tuning,
            readiness,
        } => {
            let mut opts = options(Target::default(), &tuning, 0);
            opts.readiness = Some(readiness.options(None, None)?);
            let listener = serve::bind(listen).await?;
            let agent = Agent::start(&opts)?;
            // Attached: what loading needed is not needed any more.
            let dropped = hostprobe::host::privileges::drop_unneeded()?;
            tracing::info!(?dropped, "capabilities dropped after attaching");
            serve::run(agent, listener, interval).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diagnose {
            duration,
            json,
            pid,
            cgroup,
            lock_type,
            stacks,
            tuning,
            readiness,
        } => {
            let extra = match (pid, &cgroup) {
                (Some(p), _) => Some(assess::Target::Pid(p)),
                (None, Some(c)) => Some(assess::Target::Cgroup(c.clone())),
                _ => None,
            };
            let readiness = readiness.options(extra, Some(duration))?;
            let pass_timeout = duration
                + readiness.windows.iter().max().copied().unwrap_or_default()
                    * readiness.max_targets as u32;
            let target = Target { pid, cgroup };
            let mut opts = options(target, &tuning, lock_type.unwrap_or(0));
            opts.readiness = Some(readiness.clone());
            let mut agent = Agent::start(&opts)?;
            collect_for(duration).await;
            if let Some(r) = agent.readiness() {
                r.first_pass(pass_timeout).await;
            }
            let mut snapshot = agent.snapshot()?;
            assess_top_dirtying(&snapshot.dirty, &mut snapshot.readiness, &readiness, 3);
            drop(agent);
            print_view(&snapshot, json, |v| report::render(v, stacks));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn options(target: Target, t: &Tuning, lock_types: u64) -> AgentOptions {
    AgentOptions {
        target,
        top_k: t.top_k,
        task_slots: t.task_slots,
        max_workloads: t.max_workloads,
        lock_types,
        spin_stacks_per_sec: t.lock_stacks,
        page_alloc: t.numa_page_alloc,
        readiness: None,
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

fn parse_lock_type(name: &str) -> Result<u64, String> {
    lock_types::mask(name).ok_or_else(|| {
        format!(
            "unknown lock type; one of: {}",
            lock_types::names().join(", ")
        )
    })
}

/// Waits for `duration` (or Ctrl-C, which ends collection early), drawing a
/// progress bar on stderr when it is a terminal.
async fn collect_for(duration: Duration) {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick(), if tty => {
                let done = start.elapsed().as_secs_f64() / duration.as_secs_f64().max(1e-9);
                let filled = ((done.min(1.0)) * 30.0) as usize;
                eprint!("\rcollecting [{}{}] {:>5.1}/{:.1} s", "#".repeat(filled), " ".repeat(30 - filled), start.elapsed().as_secs_f64(), duration.as_secs_f64());
                let _ = std::io::stderr().flush();
            }
        }
    }
    if tty {
        eprint!("\r{}\r", " ".repeat(60));
    }
}

/// A different sample of pages on every run.
fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
