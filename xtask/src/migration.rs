//! `cargo xtask validate-migration`: hostprobe's readiness prediction
//! against real QEMU live migrations on loopback. For each dirty rate: boot
//! a guest whose dirtier writes that many distinct pages per second, run
//! `hostprobe readiness --vm` on the host (content sampling of the QEMU
//! process), ask QEMU for its own estimate (`calc-dirty-rate`), then migrate
//! to a second QEMU with the same bandwidth and downtime limit, and compare.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::vm::{Qemu, QemuSpec, Rig};

const PAGE: f64 = 4096.0;
const MIB: f64 = 1024.0 * 1024.0;
/// The dirtier's buffer (MiB) inside a 1 GiB guest.
const BUFFER_MIB: u32 = 512;
/// The window whose d(w)/w is compared as "the dirty rate": long enough for
/// hundreds of changed samples, short enough not to saturate 512 MiB at the
/// highest rate (24000 pages/s x 4 s < 131072 pages).
const RATE_WINDOW: f64 = 4.0;

#[derive(clap::Args)]
pub struct MigrationArgs {
    /// Guest dirty rates in distinct 4 KiB pages per second, one run each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,4000,6000,8000,10000,12000,16000,20000,24000"
    )]
    rates: Vec<u32>,
    /// Migration bandwidth (QEMU max-bandwidth), MiB/s.
    #[arg(long, default_value_t = 64)]
    bandwidth_mib: u32,
    /// Downtime limit (QEMU downtime-limit), ms.
    #[arg(long, default_value_t = 300)]
    downtime_ms: u32,
    /// A migration still running after this long is cancelled: does not converge.
    #[arg(long, default_value_t = 90)]
    cap_seconds: u32,
    /// hostprobe's sampled pages per GiB.
    #[arg(long, default_value_t = 16384)]
    samples_per_gib: u32,
}

struct Run {
    rate: u32,
    measured_pages: f64,
    qemu_calc_pages: f64,
    qemu_migration_pages: Option<f64>,
    predicted: Outcome,
    actual: Outcome,
    destination_running: Option<bool>,
    /// `readiness --exact` against the source while it migrates was refused.
    exact_refused: bool,
}

#[derive(Clone, Copy)]
struct Outcome {
    converges: bool,
    total_seconds: f64,
    downtime_ms: Option<f64>,
}

/// The guest's initramfs: the dirtier at the rate given on the kernel
/// command line (`dirty_rate=N`).
pub fn initramfs(rig: &Rig) -> Result<PathBuf> {
    let dirtier = rig.static_program("dirtier")?;
    rig.initramfs(
        "migration",
        &[(dirtier, "/bin/dirtier")],
        &format!(
            "rate=$(sed -n 's/.*dirty_rate=\\([0-9]*\\).*/\\1/p' /proc/cmdline)\n\
             exec /bin/dirtier \"$rate\" {BUFFER_MIB}"
        ),
    )
}

const MACHINE: [&str; 8] = ["-accel", "tcg", "-cpu", "qemu64", "-smp", "1", "-m", "1G"];

/// `cargo xtask vm dirtier`: one guest to try hostprobe against by hand.
pub fn demo(rate: u32, name: &str) -> Result<()> {
    let rig = crate::vm::prepare()?;
    let initrd = initramfs(&rig)?;
    let run_dir = tempdir()?;
    let mut vm = Qemu::start(&QemuSpec {
        name,
        kernel: &rig.kernel,
        initrd: &initrd,
        append: &format!("console=ttyS0 panic=-1 quiet dirty_rate={rate}"),
        machine: &MACHINE,
        incoming: None,
        run_dir: &run_dir,
    })?;
    vm.wait_for("dirtier: steady", Duration::from_secs(120))?;
    println!(
        "VM {name} (QEMU pid {}) dirties {rate} pages/s; QMP at {}. Try:\n  \
         hostprobe readiness --vm {name} --bandwidth 64MiB/s\nCtrl-C stops it.",
        vm.pid(),
        vm.qmp_path.display()
    );
    vm.wait()
}

pub fn run(hostprobe: &Path, args: &MigrationArgs) -> Result<()> {
    let rig = crate::vm::prepare()?;
    let initrd = initramfs(&rig)?;
    let run_dir = tempdir()?;
    let mut runs = Vec::new();
    for &rate in &args.rates {
        eprintln!("validate-migration: {rate} pages/s");
        let r = one_run(hostprobe, &rig, &initrd, &run_dir, rate, args)
            .with_context(|| format!("run at {rate} pages/s"))?;
        eprintln!("{}", row(&r));
        runs.push(r);
    }
    let _ = std::fs::remove_dir_all(&run_dir);
    report(&runs, args)
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("hostprobe-migration-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn one_run(
    hostprobe: &Path,
    rig: &Rig,
    initrd: &Path,
    run_dir: &Path,
    rate: u32,
    args: &MigrationArgs,
) -> Result<Run> {
    let machine = MACHINE;
    let append = format!("console=ttyS0 panic=-1 quiet dirty_rate={rate}");
    let name = format!("hp-src-{rate}");
    let mut src = Qemu::start(&QemuSpec {
        name: &name,
        kernel: &rig.kernel,
        initrd,
        append: &append,
        machine: &machine,
        incoming: None,
        run_dir,
    })?;
    src.wait_for("dirtier: steady", Duration::from_secs(120))?;
    std::thread::sleep(Duration::from_secs(3));
    let mut qmp = src.qmp()?;

    // hostprobe and QEMU's own page sampling, over the same seconds.
    let probe = Command::new(hostprobe)
        .args(["readiness", "--vm", &name, "--json"])
        .args(["--bandwidth", &format!("{}MiB/s", args.bandwidth_mib)])
        .args(["--downtime", &format!("{}ms", args.downtime_ms)])
        .args(["--max-time", &format!("{}s", args.cap_seconds)])
        .args(["--samples-per-gib", &args.samples_per_gib.to_string()])
        .args(["--windows", "250ms,1s,4s,16s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting hostprobe readiness")?;
    qmp.execute(
        "calc-dirty-rate",
        json!({ "calc-time": RATE_WINDOW as u64, "sample-pages": 4096 }),
    )?;
    let qemu_calc_pages = loop {
        std::thread::sleep(Duration::from_millis(500));
        let q = qmp.execute("query-dirty-rate", json!({}))?;
        if q["status"] == "measured" {
            break q["dirty-rate"].as_f64().context("dirty-rate")? * MIB / PAGE;
        }
    };
    let out = probe.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "hostprobe readiness failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: Value = serde_json::from_slice(&out.stdout).context("readiness JSON")?;
    let measured_pages = report["dirty"]
        .as_array()
        .context("dirty")?
        .iter()
        .find(|p| (p["window_seconds"].as_f64().unwrap_or(0.0) - RATE_WINDOW).abs() < 0.5)
        .and_then(|p| Some(p["dirty_bytes"].as_f64()? / PAGE / p["window_seconds"].as_f64()?))
        .context("no 4 s window in the readiness report")?;
    let p = &report["prediction"];
    let predicted = Outcome {
        converges: p["converges"].as_bool().context("converges")?,
        total_seconds: p["total_seconds"].as_f64().context("total_seconds")?,
        downtime_ms: p["downtime_seconds"].as_f64().map(|s| s * 1e3),
    };

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let uri = format!("tcp:127.0.0.1:{port}");
    let dst = Qemu::start(&QemuSpec {
        name: &format!("hp-dst-{rate}"),
        kernel: &rig.kernel,
        initrd,
        append: &append,
        machine: &machine,
        incoming: Some(uri.clone()),
        run_dir,
    })?;
    let mut dst_qmp = dst.qmp()?;
    qmp.execute(
        "migrate-set-parameters",
        json!({
            "max-bandwidth": u64::from(args.bandwidth_mib) * 1024 * 1024,
            "downtime-limit": args.downtime_ms,
        }),
    )?;
    qmp.execute("migrate", json!({ "uri": uri }))?;
    let t0 = Instant::now();
    // The exact path must refuse a VM that is migrating.
    let guard = Command::new(hostprobe)
        .args(["readiness", "--vm", &name, "--exact", "--windows", "100ms"])
        .arg("--exact-state-dir")
        .arg(run_dir)
        .output()?;
    let exact_refused = guard.status.code() == Some(2)
        && String::from_utf8_lossy(&guard.stderr).contains("looks like it is migrating");
    let mut qemu_migration_pages = None;
    let actual = loop {
        std::thread::sleep(Duration::from_millis(250));
        let q = qmp.execute("query-migrate", json!({}))?;
        if let Some(r) = q["ram"]["dirty-pages-rate"].as_f64().filter(|&r| r > 0.0) {
            qemu_migration_pages = Some(r);
        }
        match q["status"].as_str().unwrap_or("") {
            "completed" => {
                break Outcome {
                    converges: true,
                    total_seconds: q["total-time"].as_f64().context("total-time")? / 1e3,
                    downtime_ms: q["downtime"].as_f64(),
                }
            }
            "failed" => bail!("migration failed: {q}"),
            _ if t0.elapsed() > Duration::from_secs(args.cap_seconds.into()) => {
                qmp.execute("migrate_cancel", json!({}))?;
                break Outcome {
                    converges: false,
                    total_seconds: t0.elapsed().as_secs_f64(),
                    downtime_ms: None,
                };
            }
            _ => {}
        }
    };
    // A completed migration counts only if the destination keeps running
    // (QEMU 7.2 reported "completed" and the guest oopsed seconds later).
    let destination_running = if actual.converges {
        std::thread::sleep(Duration::from_secs(3));
        let s = dst_qmp.execute("query-status", json!({}))?;
        Some(s["running"] == true && !dst.serial_text().contains("Oops"))
    } else {
        None
    };
    Ok(Run {
        rate,
        measured_pages,
        qemu_calc_pages,
        qemu_migration_pages,
        predicted,
        actual,
        destination_running,
        exact_refused,
    })
}

fn outcome(o: &Outcome) -> String {
    match (o.converges, o.downtime_ms) {
        (true, Some(d)) => format!("yes {:>6.1} s {:>4.0} ms", o.total_seconds, d),
        (true, None) => format!("yes {:>6.1} s    -   ", o.total_seconds),
        (false, _) => format!("no  {:>6.1} s    -   ", o.total_seconds),
    }
}

const HEADER: &str = "pages/s  MiB/s | hostprobe  QEMU calc  QEMU mig | predicted             | actual                | dest | --exact";

fn row(r: &Run) -> String {
    format!(
        "{:>7} {:>6.1} | {:>9.0} {:>10.0} {:>9} | {} | {} | {} | {}",
        r.rate,
        f64::from(r.rate) * PAGE / MIB,
        r.measured_pages,
        r.qemu_calc_pages,
        r.qemu_migration_pages
            .map_or("-".into(), |p| format!("{p:.0}")),
        outcome(&r.predicted),
        outcome(&r.actual),
        match r.destination_running {
            Some(true) => "runs",
            Some(false) => "DEAD",
            None => "-   ",
        },
        if r.exact_refused { "refused" } else { "RAN" }
    )
}

fn within(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * b.abs()
}

/// Prints the table and checks the targets of issue 4.
fn report(runs: &[Run], args: &MigrationArgs) -> Result<()> {
    println!(
        "\nhostprobe readiness vs QEMU 10 live migration (TCG, loopback), max-bandwidth {} MiB/s, \
         downtime-limit {} ms, cap {} s; dirty rates in pages/s (hostprobe: d({RATE_WINDOW} s)/{RATE_WINDOW} s; \
         QEMU calc: calc-dirty-rate page sampling; QEMU mig: dirty-pages-rate during migration)\n",
        args.bandwidth_mib, args.downtime_ms, args.cap_seconds
    );
    println!("{HEADER}");
    for r in runs {
        println!("{}", row(r));
    }
    let n = runs.len();
    let verdicts = runs
        .iter()
        .filter(|r| r.predicted.converges == r.actual.converges)
        .count();
    let converged: Vec<&Run> = runs.iter().filter(|r| r.actual.converges).collect();
    let times = converged
        .iter()
        .filter(|r| within(r.predicted.total_seconds, r.actual.total_seconds, 0.30))
        .count();
    let vs_set = runs
        .iter()
        .filter(|r| within(r.measured_pages, f64::from(r.rate), 0.25))
        .count();
    let vs_calc = runs
        .iter()
        .filter(|r| within(r.measured_pages, r.qemu_calc_pages, 0.25))
        .count();
    let dead = runs
        .iter()
        .filter(|r| r.destination_running == Some(false))
        .count();
    let refused = runs.iter().filter(|r| r.exact_refused).count();
    println!(
        "\nconverge/not predicted right: {verdicts}/{n} (target >= 90%)\n\
         total time within 30% (converged runs): {times}/{}\n\
         dirty rate within 25% of the set rate: {vs_set}/{n}; of QEMU's calc-dirty-rate: {vs_calc}/{n}\n\
         destinations dead after a completed migration: {dead}\n\
         `readiness --exact` refused during the migration: {refused}/{n}",
        converged.len()
    );
    let ok = verdicts * 10 >= n * 9
        && times == converged.len()
        && vs_set == n
        && dead == 0
        && refused == n;
    if !ok {
        bail!("validation targets not met (see the table above)");
    }
    if vs_calc < n {
        println!(
            "note: QEMU's calc-dirty-rate disagrees by more than 25% in {} runs; VMRIG.md measured \
             its page sampling scattering widely (e.g. 44..79 MiB/s for a set 62.5)",
            n - vs_calc
        );
    }
    Ok(())
}
