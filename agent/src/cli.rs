//! The command line: clap's types and the value parsers of durations,
//! bandwidths and lock types. What each command does is in [`crate::commands`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hostprobe_common::{
    lock::DEFAULT_SPIN_STACKS_PER_SEC, DEFAULT_MAX_WORKLOADS, DEFAULT_TASK_SLOTS,
};

use crate::probes::{lock_types, PageAlloc};

/// Default listen address: loopback, on a port outside the 9100-9999 range
/// that Prometheus' exporter port list has fully allocated.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:19477";

#[derive(Parser)]
#[command(
    name = "hostprobe",
    version,
    about = "eBPF host tracing agent: per workload, how the scheduler places it (migrations, run-queue latency, cache affinity), which kernel locks make it wait, what memory it dirties, how NUMA-local it runs, and whether its VM would live-migrate",
    after_help = "Examples:\n  hostprobe check\n  hostprobe diagnose --duration 10s\n  hostprobe diagnose --pid 1234 --json\n  hostprobe readiness --vm web1 --bandwidth 10Gbit/s\n  hostprobe serve --listen 0.0.0.0:19477 --interval 5s"
)]
pub struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a RUST_LOG directive); default: RUST_LOG, else `info` for serve and `warn` otherwise.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve Prometheus metrics at /metrics (and /healthz) until SIGINT/SIGTERM.
    #[command(
        after_help = "Examples:\n  hostprobe serve\n  hostprobe serve --listen 0.0.0.0:19477 --interval 10s --top-k 20"
    )]
    Serve(ServeArgs),
    /// Collect for a while, then print a report (or JSON).
    #[command(
        after_help = "Examples:\n  hostprobe diagnose\n  hostprobe diagnose --duration 30s --cgroup /system.slice/postgresql.service\n  hostprobe diagnose --pid 1234 --json | jq .sched"
    )]
    Diagnose(DiagnoseArgs),
    /// Predict whether a process, cgroup or QEMU VM would live-migrate by pre-copy: measures
    /// how fast it dirties memory (content sampling) and simulates the rounds.
    #[command(
        after_help = "Examples:\n  hostprobe readiness --pid 4242\n  hostprobe readiness --vm web1 --bandwidth 10Gbit/s --downtime 100ms --json\n  hostprobe readiness --cgroup /system.slice/db.service --windows 1s,4s,16s",
        group = clap::ArgGroup::new("target").required(true).args(["pid", "cgroup", "vm"])
    )]
    Readiness(ReadinessCommand),
    /// Check kernel support and privileges, and whether each probe loads.
    #[command(after_help = "Examples:\n  hostprobe check\n  hostprobe check --json")]
    Check(CheckArgs),
}

/// Arguments of `hostprobe serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default: expose it deliberately.
    #[arg(long, default_value = DEFAULT_LISTEN, value_parser = address)]
    pub listen: SocketAddr,
    /// How often kernel maps are read when nobody scrapes (every scrape reads them too).
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub interval: Duration,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub readiness: ReadinessArgs,
}

/// Arguments of `hostprobe diagnose`.
#[derive(Args)]
pub struct DiagnoseArgs {
    /// How long to collect.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// Print one JSON document on stdout instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Only this process (filtered in the kernel).
    #[arg(long, conflicts_with = "cgroup", value_parser = number::<u32, 1, { u32::MAX as u64 }>)]
    pub pid: Option<u32>,
    /// Only this cgroup v2 path, e.g. /system.slice/nginx.service (filtered in the kernel).
    #[arg(long)]
    pub cgroup: Option<String>,
    /// Only this lock type (filtered in the kernel): semaphore, spinlock, rwlock:R, rwlock:W,
    /// rwsem:R, rwsem:W, rt-mutex, rwlock-rt:R, rwlock-rt:W, pcpu-sem:R, pcpu-sem:W, mutex.
    #[arg(long, value_name = "TYPE", value_parser = parse_lock_type)]
    pub lock_type: Option<u64>,
    /// Print the full stacks of the top kernel and user-space lock waits.
    #[arg(long)]
    pub stacks: bool,
    /// Also write the user-space lock waits as a pprof profile (gzipped
    /// profile.proto, like Go's mutex profile) to this file, for `go tool pprof`.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub readiness: ReadinessArgs,
}

/// Arguments of `hostprobe readiness`.
#[derive(Args)]
pub struct ReadinessCommand {
    /// A process.
    #[arg(long, value_parser = number::<u32, 1, { u32::MAX as u64 }>)]
    pub pid: Option<u32>,
    /// A cgroup v2 path: all processes in it and below.
    #[arg(long)]
    pub cgroup: Option<String>,
    /// A QEMU VM by its `-name` (its guest RAM is measured in the QEMU process).
    #[arg(long)]
    pub vm: Option<String>,
    /// Bandwidth pre-copy may use (QEMU's max-bandwidth), e.g. 1Gbit/s, 125MB/s, 64MiB/s.
    #[arg(long, default_value = "1Gbit/s", value_parser = parse_bandwidth)]
    pub bandwidth: f64,
    /// The link's capacity, which the final stop-and-copy gets (QEMU lifts its rate limit
    /// for it); default: --bandwidth.
    #[arg(long, value_parser = parse_bandwidth)]
    pub switchover_bandwidth: Option<f64>,
    /// Downtime limit (QEMU's default is 300ms).
    #[arg(long, default_value = "300ms", value_parser = duration)]
    pub downtime: Duration,
    /// Windows at which the dirty set is measured (comma-separated); the longest is how
    /// long the measurement takes. d(w) is taken as linear between them, so they should be
    /// dense where a hot set saturates.
    #[arg(long, value_delimiter = ',', default_value = "100ms,250ms,500ms,1s,2s,4s,6s,8s,16s", value_parser = positive_duration)]
    pub windows: Vec<Duration>,
    /// Sampled pages per GiB of memory (QEMU samples 512); more samples, less noise.
    #[arg(long, default_value_t = 512, value_parser = number::<u32, 1, { u32::MAX as u64 }>)]
    pub samples_per_gib: u32,
    /// Extra passes over the samples when the verdict hangs on one window: that window is
    /// measured again until the verdict is certain (within the longest window's time).
    #[arg(long, default_value_t = 48, value_parser = number::<u32, 0, 10_000>)]
    pub refine_passes: u32,
    /// Give up (does not converge) after this long, like a migration time cap.
    #[arg(long, value_parser = duration)]
    pub max_time: Option<Duration>,
    /// Measure exactly: soft-dirty bits where the kernel has them, else a hash of every
    /// resident page. Slows the target; refused for a VM that looks like it is migrating.
    #[arg(long)]
    pub exact: bool,
    /// At most one exact measurement per process per this long.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub exact_min_interval: Duration,
    /// Where the time of the last exact measurement per process is kept.
    #[arg(long, default_value = "/run/hostprobe")]
    pub exact_state_dir: PathBuf,
    /// With --exact: the VM is not migrating, whatever its sockets suggest.
    #[arg(long, requires = "exact")]
    pub not_migrating: bool,
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hostprobe check`.
#[derive(Args)]
pub struct CheckArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub btf: BtfArg,
}

/// Where kernel BTF comes from.
#[derive(Args, Clone, Default)]
pub struct BtfArg {
    /// Kernel BTF to read offsets and tracepoint prototypes from instead of
    /// /sys/kernel/btf/vmlinux: a file of the running kernel's BTF (btfhub style) where
    /// sysfs does not show it (e.g. a container without /sys/kernel/btf). BTF tracepoints
    /// still need the kernel's own BTF (CONFIG_DEBUG_INFO_BTF).
    #[arg(long, value_name = "PATH", value_parser = readable_file)]
    pub btf: Option<PathBuf>,
}

/// Labels, kernel table sizes and cost knobs of `serve` and `diagnose`.
#[derive(Args)]
pub struct Tuning {
    /// Workloads with their own label; the rest are summed as `other`.
    #[arg(long, default_value_t = 10, value_parser = number::<usize, 0, 10_000>)]
    pub top_k: usize,
    /// Workloads (cgroups) the kernel table holds per CPU (a power of two; each costs 1032 bytes per CPU: its scheduler entry and four (workload, neighbour) pairs in two buffers).
    #[arg(long, default_value_t = DEFAULT_MAX_WORKLOADS, value_parser = number::<u32, 4, 65_536>)]
    pub max_workloads: u32,
    /// Stack walks per second per CPU for spinning lock waits (0: every one). A walk costs
    /// microseconds; waits beyond the budget are counted in full, under the caller
    /// "(stack not sampled)". Sleeping waits always get their stack.
    #[arg(long, default_value_t = DEFAULT_SPIN_STACKS_PER_SEC, value_parser = number::<u32, 0, 1_000_000>)]
    pub lock_stacks: u32,
    /// `mm_page_alloc` (remote page allocations per workload; every page allocation
    /// pays ~0.1 us for it): `auto` attaches it with two or more NUMA nodes, `always`
    /// also on one, `never` not at all (CPU time by node, balancing and residency stay).
    #[arg(long, value_enum, default_value = "auto")]
    pub numa_page_alloc: PageAlloc,
    /// Per-task slots in the kernel (a power of two; more slots, fewer collisions).
    #[arg(long, default_value_t = DEFAULT_TASK_SLOTS, value_parser = number::<u32, 2, { 1 << 22 }>)]
    pub task_slots: u32,
    #[command(flatten)]
    pub btf: BtfArg,
}

/// Live-migration readiness of QEMU VMs (found automatically) and of named processes and
/// cgroups, by content sampling.
#[derive(Args)]
pub struct ReadinessArgs {
    /// Link bandwidth the migration predictions assume, e.g. 10Gbit/s, 64MiB/s.
    #[arg(long, default_value = "1Gbit/s", value_parser = parse_bandwidth)]
    pub migration_bandwidth: f64,
    /// Downtime limit the migration predictions assume.
    #[arg(long, default_value = "300ms", value_parser = duration)]
    pub migration_downtime: Duration,
    /// The link's capacity, which the final stop-and-copy gets; default: --migration-bandwidth.
    #[arg(long, value_parser = parse_bandwidth)]
    pub migration_switchover_bandwidth: Option<f64>,
    /// Also assess this process (repeatable).
    #[arg(long = "readiness-pid", value_name = "PID", value_parser = number::<u32, 1, { u32::MAX as u64 }>)]
    pub readiness_pids: Vec<u32>,
    /// Also assess all processes of this cgroup v2 path (repeatable).
    #[arg(long = "readiness-cgroup", value_name = "PATH")]
    pub readiness_cgroups: Vec<String>,
    /// Do not assess the QEMU VMs running on the host.
    #[arg(long)]
    pub no_vm_readiness: bool,
    /// Windows of the dirty-set measurement (diagnose keeps those within --duration).
    #[arg(long, value_delimiter = ',', default_value = "100ms,250ms,500ms,1s,2s,4s,6s,8s,16s", value_parser = positive_duration)]
    pub readiness_windows: Vec<Duration>,
    /// Sampled pages per GiB (QEMU samples 512).
    #[arg(long, default_value_t = 512, value_parser = number::<u32, 1, { u32::MAX as u64 }>)]
    pub readiness_samples_per_gib: u32,
    /// Extra passes per target when its verdict hangs on one window (see `readiness --refine-passes`).
    #[arg(long, default_value_t = 48, value_parser = number::<u32, 0, 10_000>)]
    pub readiness_refine_passes: u32,
    /// Time between the starts of two passes over the targets (serve).
    #[arg(long, default_value = "60s", value_parser = positive_duration)]
    pub readiness_interval: Duration,
    /// Targets assessed per pass; more are counted in hostprobe_readiness_skipped_targets.
    #[arg(long, default_value_t = 16, value_parser = number::<usize, 1, 10_000>)]
    pub readiness_max_targets: usize,
}

/// A file that can be read (what is in it is checked where it is used).
pub fn readable_file(s: &str) -> Result<PathBuf, String> {
    std::fs::File::open(s).map(|_| PathBuf::from(s)).map_err(|e| {
        format!(
            "cannot read it ({e}): give the running kernel's BTF (e.g. from btfhub, or a copy of /sys/kernel/btf/vmlinux)"
        )
    })
}

/// A duration: `5s`, `250ms`, `2m`, `1h30m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("expected a duration such as 5s, 250ms or 2m ({e})"))
}

/// A duration that must not be zero (intervals: zero would spin or panic).
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be greater than zero (e.g. 5s)".into()),
        d => Ok(d),
    }
}

/// A whole number from `LO` to `HI`.
pub fn number<T: TryFrom<u64>, const LO: u64, const HI: u64>(s: &str) -> Result<T, String> {
    let expected = || format!("expected a whole number from {LO} to {HI}");
    let n: u64 = s.trim().parse().map_err(|_| expected())?;
    if !(LO..=HI).contains(&n) {
        return Err(expected());
    }
    T::try_from(n).map_err(|_| expected())
}

/// An address to listen on: `IP:PORT`.
pub fn address(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:19477, 0.0.0.0:19477 or [::]:19477".into())
}

/// A lock type name as `perf lock` prints it, as the kernel filter's mask.
pub fn parse_lock_type(name: &str) -> Result<u64, String> {
    lock_types::mask(name).ok_or_else(|| {
        format!(
            "unknown lock type; one of: {}",
            lock_types::names().join(", ")
        )
    })
}

/// Parses a bandwidth: `1Gbit/s`, `100Mbit/s`, `125MB/s`, `64MiB/s`, or a
/// plain number of bytes per second.
pub fn parse_bandwidth(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 1Gbit/s, 125MB/s or 64MiB/s"))?;
    let factor = match unit {
        "" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "kbit" | "Kbit" => 1e3 / 8.0,
        "Mbit" => 1e6 / 8.0,
        "Gbit" => 1e9 / 8.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (B, kB, MB, GB, KiB, MiB, GiB, kbit, Mbit, Gbit)"
            ))
        }
    };
    if value <= 0.0 {
        return Err(format!("{text:?}: bandwidth must be positive"));
    }
    Ok(value * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_bandwidths() {
        assert_eq!(parse_bandwidth("1Gbit/s"), Ok(125e6));
        assert_eq!(parse_bandwidth("64MiB/s"), Ok(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_bandwidth("125MB/s"), Ok(125e6));
        assert_eq!(parse_bandwidth("1000"), Ok(1000.0));
        assert!(parse_bandwidth("fast").is_err());
        assert!(parse_bandwidth("10Xb/s")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_bandwidth("0MB/s").is_err());
    }
}
