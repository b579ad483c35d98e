//! Project tasks cargo cannot do alone: set-up from zero, building with the
//! eBPF toolchain, running, testing, benchmarking.

mod arm64;
mod bench;
mod kernels;
mod matrix;
mod migration;
mod setup;
mod soak;
mod vcpus;
mod vm;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "hostprobe project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: nightly rust-src, bpf-linker for the nightly's LLVM, Debian packages; mount tracefs.
    Setup,
    /// Set up, then build hostprobe (release) with the eBPF object embedded.
    Build,
    /// Build, then run hostprobe as root; default `diagnose --duration 5s`, or the given arguments.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every check and test: fmt, clippy, unit and kernel tests, the kernel matrix.
    Test,
    /// Measure the agent's overhead on scheduler-heavy loads (see README).
    Bench(bench::BenchArgs),
    /// The QEMU rig: install QEMU 10, fetch the guest kernel, build the initramfs; or boot a guest.
    Vm {
        #[command(subcommand)]
        task: VmTask,
    },
    /// The benchmark's page-fault load (run by `bench`).
    #[command(hide = true)]
    FaultLoad {
        #[arg(long)]
        pages: u64,
    },
    /// Predict with hostprobe, then live-migrate real QEMU guests on loopback and compare (32 cases, ~75 min; --cases quick: 3).
    ValidateMigration(migration::MigrationArgs),
    /// serve under process, cgroup and lock churn, scrapers and a stuck client, checked throughout (30 min; 3 in `test`).
    Soak(soak::SoakArgs),
    /// The soak's lock-object load (run by `soak`).
    #[command(hide = true)]
    SoakSockets {
        #[arg(long)]
        pairs: u64,
        #[arg(long)]
        seconds: u64,
        #[arg(long)]
        report: PathBuf,
    },
    /// Coverage-guided fuzzing of the parsers (cargo-fuzz, libFuzzer) from the checked-in corpus.
    Fuzz {
        /// How long to run.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
}

#[derive(Subcommand)]
enum VmTask {
    /// Install and build everything the rig needs.
    Build,
    /// Boot a 1 GiB guest whose dirtier writes RATE distinct pages/s, until Ctrl-C.
    Dirtier {
        #[arg(long, default_value_t = 4000)]
        rate: u32,
        /// The VM's name, for `hostprobe readiness --vm NAME`.
        #[arg(long, default_value = "hostprobe-demo")]
        name: String,
    },
    /// Run hostprobe in two-node NUMA guests on the kernels fleets run (Debian's 5.10, 6.1,
    /// 6.12, 6.12-rt), check each and print a table kernel x program.
    Matrix {
        /// Kernels (comma-separated): 5.10, 6.1, 6.12, 6.12-rt, or all.
        #[arg(long, value_delimiter = ',', default_value = "all")]
        kernels: Vec<String>,
    },
    /// Cross-build hostprobe for aarch64 and run `check` and the scheduler test on Debian's
    /// arm64 kernel under qemu-system-aarch64 (TCG).
    Arm64,
    /// A two-vCPU guest spinning on both vCPUs, its vCPU threads pinned to one host CPU, then
    /// to two: hostprobe's per-VM vCPU wait and co-scheduling ratio against the pinning.
    Vcpus,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::run().map(drop),
        Task::Build => build().map(drop),
        Task::Run { args } => {
            let bin = build()?;
            let args = if args.is_empty() {
                vec!["diagnose".to_string(), "--duration".into(), "5s".into()]
            } else {
                args
            };
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test => test(),
        Task::Bench(args) => {
            let bin = build()?;
            bench::run(&bin, &args)
        }
        Task::Vm { task } => match task {
            VmTask::Build => migration::initramfs(&vm::prepare()?).map(drop),
            VmTask::Dirtier { rate, name } => migration::demo(rate, &name),
            VmTask::Matrix { kernels } => matrix::run(&build()?, &kernels),
            VmTask::Arm64 => arm64::run(),
            VmTask::Vcpus => vcpus::run(&build()?),
        },
        Task::FaultLoad { pages } => bench::fault_load(pages),
        Task::ValidateMigration(args) => {
            let bin = build()?;
            migration::run(&bin, &args)
        }
        Task::Fuzz { seconds } => fuzz(seconds),
        Task::Soak(args) => {
            let bin = match &args.bin {
                Some(bin) => bin.clone(),
                None => build()?,
            };
            soak::run(&bin, &args)
        }
        Task::SoakSockets {
            pairs,
            seconds,
            report,
        } => soak::sockets(pairs, seconds, &report),
    }
}

/// Runs the `parsers` fuzz target on a copy of the checked-in corpus; a
/// crash stops it, its input is in agent/fuzz/artifacts/parsers (add it to
/// agent/tests/parsers/corpus once fixed, so that the default suite keeps it).
fn fuzz(seconds: u64) -> Result<()> {
    let tools = setup::run()?;
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        let mut install = Command::new("cargo");
        install.args(["install", "cargo-fuzz", "--locked"]);
        run_ok(install)?;
    }
    let agent = workspace_root().join("agent");
    let corpus = std::env::temp_dir().join("hostprobe-fuzz-corpus");
    std::fs::create_dir_all(&corpus)?;
    for seed in std::fs::read_dir(agent.join("tests/parsers/corpus"))? {
        let seed = seed?.path();
        std::fs::copy(&seed, corpus.join(seed.file_name().context("a seed")?))?;
    }
    let mut c = Command::new("cargo");
    c.current_dir(&agent)
        .env("HOSTPROBE_BPF_LINKER_DIR", &tools.bpf_linker_dir)
        .args(["+nightly", "fuzz", "run", "parsers"])
        .arg(&corpus)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-max_len=65536",
        ]);
    run_ok(c)
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// A cargo command with the environment the agent's build script needs.
fn cargo(tools: &setup::Tools) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c.env("HOSTPROBE_BPF_LINKER_DIR", &tools.bpf_linker_dir);
    c
}

fn run_ok(mut c: Command) -> Result<()> {
    eprintln!("xtask: running {c:?}");
    let status = c.status().with_context(|| format!("starting {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed: {status}");
    }
    Ok(())
}

fn build() -> Result<PathBuf> {
    let tools = setup::run()?;
    let mut c = cargo(&tools);
    c.args(["build", "--release", "--package", "hostprobe"]);
    run_ok(c)?;
    Ok(target_dir().join("release/hostprobe"))
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn test() -> Result<()> {
    let tools = setup::run()?;
    let mut fmt = cargo(&tools);
    fmt.args(["fmt", "--all", "--check"]);
    run_ok(fmt)?;
    // One profile (release) for clippy, build and tests: switching profiles
    // rebuilds the eBPF object and `core`.
    let mut clippy = cargo(&tools);
    clippy.args([
        "clippy",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run_ok(clippy)?;
    // QEMU 10 for the tests that start real guests (and the guest rigs).
    vm::prepare()?;
    let mut test = cargo(&tools);
    test.args([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "hostprobe-probes",
    ]);
    run_ok(test)?;
    // The kernels users run, in 2-node guests, one after the other; then
    // arm64 (cross-built, under TCG: about 2 minutes).
    let bin = build()?;
    matrix::run(&bin, &[])?;
    arm64::run()?;
    vcpus::run(&bin)?;
    // Readiness against three real migrations (one that converges, one
    // that does not, two vCPUs).
    migration::run(&bin, &migration::MigrationArgs::quick())?;
    // Always-on: three minutes of churn, scrapers and a stuck client.
    soak::run(&bin, &soak::SoakArgs::minutes(3.0))
}
