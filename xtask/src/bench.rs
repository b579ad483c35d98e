//! Overhead benchmark: scheduler-heavy loads with no agent, with `hostprobe
//! serve`, and with a bpftrace runqlat-style script; a page-fault load with no
//! agent, with `serve` with and without `mm_page_alloc`, and with a bpftrace
//! page-allocation count. Rounds run the modes in random order (see
//! shared/design/PERF.md for why: the noise here is large and drifts, so only
//! differences within a round and their medians over many rounds mean
//! anything).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Pipe round trips per run (`perf bench sched pipe -l`).
    #[arg(long, default_value_t = 50_000)]
    pipe_loops: u32,
    /// Stop when the 95% interval of the added pipe cost is this narrow (+- us/op).
    #[arg(long, default_value_t = 0.25)]
    target_us: f64,
    #[arg(long, default_value_t = 20)]
    min_rounds: usize,
    #[arg(long, default_value_t = 90)]
    max_rounds: usize,
    /// Rounds of the messaging load.
    #[arg(long, default_value_t = 30)]
    messaging_rounds: usize,
    /// Rounds of each futex load (`perf bench futex lock-pi` and `hash`, 1 s each).
    #[arg(long, default_value_t = 15)]
    futex_rounds: usize,
    /// Rounds of the page-fault load (`xtask fault-load`).
    #[arg(long, default_value_t = 30)]
    fault_rounds: usize,
    /// Skip the bpftrace comparison.
    #[arg(long)]
    no_bpftrace: bool,
    /// Start-ups of `serve` measured (spawn to the first /healthz answer:
    /// BTF, kallsyms, load, attach, the first collection).
    #[arg(long, default_value_t = 10)]
    startup_rounds: usize,
    /// Measure only the start-up.
    #[arg(long)]
    startup_only: bool,
    /// Another hostprobe binary (e.g. a build of an earlier commit) run in
    /// the same rounds of the pipe and messaging loads and of the start-up,
    /// with the difference to this one paired within rounds.
    #[arg(long, value_name = "BIN")]
    compare: Option<std::path::PathBuf>,
}

const LISTEN: &str = "127.0.0.1:19499";

/// The peer a user would reach for: runqlat in bpftrace (as in bpftrace's
/// tools/runqlat.bt, with TASK_RUNNING = 0 spelled out).
const BPFTRACE_RUNQLAT: &str = r#"
tracepoint:sched:sched_wakeup, tracepoint:sched:sched_wakeup_new { @qtime[args->pid] = nsecs; }
tracepoint:sched:sched_switch {
  if (args->prev_state == 0) { @qtime[args->prev_pid] = nsecs; }
  $ns = @qtime[args->next_pid];
  if ($ns) { @usecs = hist((nsecs - $ns) / 1000); }
  delete(@qtime[args->next_pid]);
}
"#;

/// The peer for the page-fault load: what a user would type to count page
/// allocations per cgroup. (bpftrace 0.17's rawtracepoint probes do not
/// attach here, so the cheaper raw form cannot be offered.)
const BPFTRACE_PAGE_ALLOC: &str = "tracepoint:kmem:mm_page_alloc { @[cgroup] = count(); }";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Baseline,
    /// `hostprobe serve --numa-page-alloc always`: every program.
    Hostprobe,
    /// `hostprobe serve --numa-page-alloc never`: all but `mm_page_alloc`.
    HostprobeNoPageAlloc,
    /// `--compare`'s binary, run as `Hostprobe`.
    Compare,
    Bpftrace(&'static str),
}

struct Load {
    name: &'static str,
    cmd: Vec<String>,
    ops: f64,
}

/// Agent resource use seen over the hostprobe runs: CPU time of the whole
/// process (start, attach, one load run, one scrape) and peak RSS.
#[derive(Default)]
struct AgentUse {
    cpu_seconds: Vec<f64>,
    peak_rss_kib: Vec<f64>,
}

pub fn run(hostprobe: &Path, args: &BenchArgs) -> Result<()> {
    let mut rng = Rng::seeded();
    if args.startup_only {
        return startup(hostprobe, args, &mut rng);
    }
    let pipe = Load {
        name: "pipe",
        cmd: [
            "taskset",
            "-c",
            "0",
            "perf",
            "bench",
            "sched",
            "pipe",
            "-l",
            &args.pipe_loops.to_string(),
        ]
        .map(String::from)
        .to_vec(),
        ops: f64::from(args.pipe_loops),
    };
    let messaging = Load {
        name: "messaging",
        cmd: [
            "perf",
            "bench",
            "sched",
            "messaging",
            "-g",
            "2",
            "-l",
            "300",
        ]
        .map(String::from)
        .to_vec(),
        ops: 1.0,
    };
    const FAULT_PAGES: u64 = 1 << 20;
    let faults = Load {
        name: "faults",
        cmd: vec![
            std::env::current_exe()?.display().to_string(),
            "fault-load".into(),
            "--pages".into(),
            FAULT_PAGES.to_string(),
        ],
        ops: FAULT_PAGES as f64,
    };
    // Futex-heavy loads: threads sleeping in FUTEX_LOCK_PI (every sleep
    // records a user stack), and FUTEX_WAIT calls that return at once
    // (no sleep: the syscall path only). Time per operation.
    let futex = |name: &'static str, op: &str| Load {
        name,
        cmd: ["perf", "bench", "futex", op, "-r", "1", "-t", "4"]
            .map(String::from)
            .to_vec(),
        ops: 1.0,
    };
    // And a program sleeping on a contended pthread mutex as often as it
    // can (4 threads, 2 us holds): every sleep walks and searches a stack.
    let helpers = std::env::temp_dir().join(format!("hostprobe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&helpers).with_context(|| format!("creating {}", helpers.display()))?;
    let contend = helpers.join("mutex_contend");
    let built = Command::new("gcc")
        .args(["-O2", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&contend)
        .arg(crate::workspace_root().join("agent/tests/helpers/mutex_contend.c"))
        .status()
        .context("gcc")?;
    if !built.success() {
        bail!("building mutex_contend failed");
    }
    let futex_loads = [
        futex("futex lock-pi", "lock-pi"),
        futex("futex hash", "hash"),
        Load {
            name: "pthread mutex",
            cmd: vec![
                contend.display().to_string(),
                "4".into(),
                "1".into(),
                "2".into(),
            ],
            ops: 1.0,
        },
    ];
    let mut modes = vec![Mode::Baseline, Mode::Hostprobe];
    let mut fault_modes = vec![Mode::Baseline, Mode::Hostprobe, Mode::HostprobeNoPageAlloc];
    if args.compare.is_some() {
        modes.push(Mode::Compare);
    }
    if !args.no_bpftrace {
        modes.push(Mode::Bpftrace(BPFTRACE_RUNQLAT));
        fault_modes.push(Mode::Bpftrace(BPFTRACE_PAGE_ALLOC));
    }

    let events_per_op = measure_events_per_op(hostprobe, &pipe)?;
    let mut agent_use = AgentUse::default();

    let mut pipe_rounds: Vec<Vec<(Mode, f64)>> = Vec::new();
    let started = Instant::now();
    while pipe_rounds.len() < args.max_rounds {
        pipe_rounds.push(round(
            hostprobe,
            args,
            &pipe,
            &modes,
            &mut rng,
            &mut agent_use,
        )?);
        let added = diffs(&pipe_rounds, Mode::Hostprobe, |m, b| {
            (m - b) / pipe.ops * 1e6
        });
        let (lo, mid, hi) = median_ci(&added);
        eprint!(
            "\rbench pipe: round {:>3}, hostprobe adds {mid:.2} us/op [{lo:.2}, {hi:.2}]   ",
            pipe_rounds.len()
        );
        if pipe_rounds.len() >= args.min_rounds && (hi - lo) / 2.0 <= args.target_us {
            break;
        }
    }
    eprintln!();
    let pipe_secs = started.elapsed().as_secs_f64();
    let mut msg_rounds = Vec::new();
    for i in 0..args.messaging_rounds {
        msg_rounds.push(round(
            hostprobe,
            args,
            &messaging,
            &modes,
            &mut rng,
            &mut agent_use,
        )?);
        eprint!(
            "\rbench messaging: round {:>3}/{}   ",
            i + 1,
            args.messaging_rounds
        );
    }
    eprintln!();
    let mut futex_rounds: Vec<Vec<Vec<(Mode, f64)>>> = vec![Vec::new(); futex_loads.len()];
    for (load, rounds) in futex_loads.iter().zip(futex_rounds.iter_mut()) {
        for i in 0..args.futex_rounds {
            rounds.push(round(
                hostprobe,
                args,
                load,
                &[Mode::Baseline, Mode::Hostprobe],
                &mut rng,
                &mut agent_use,
            )?);
            eprint!(
                "\rbench {}: round {:>3}/{}   ",
                load.name,
                i + 1,
                args.futex_rounds
            );
        }
        eprintln!();
    }
    let mut fault_rounds = Vec::new();
    for i in 0..args.fault_rounds {
        fault_rounds.push(round(
            hostprobe,
            args,
            &faults,
            &fault_modes,
            &mut rng,
            &mut agent_use,
        )?);
        eprint!(
            "\rbench faults: round {:>3}/{}   ",
            i + 1,
            args.fault_rounds
        );
    }
    eprintln!();

    println!("\nhostprobe overhead benchmark ({} pipe rounds in {:.0} s, {} messaging rounds; modes in random order within each round)", pipe_rounds.len(), pipe_secs, msg_rounds.len());
    let columns: Vec<Mode> = modes
        .iter()
        .copied()
        .filter(|m| *m != Mode::Baseline)
        .collect();
    let header: String = columns
        .iter()
        .map(|m| {
            let name = match m {
                Mode::Hostprobe => "hostprobe",
                Mode::Compare => "compare",
                _ => "bpftrace runqlat",
            };
            format!(" {name:>24}")
        })
        .collect();
    println!("{:<34} {:>12}{header}", "", "baseline");
    let base_us: Vec<f64> = pipe_rounds
        .iter()
        .filter_map(|r| value(r, Mode::Baseline))
        .map(|s| s / pipe.ops * 1e6)
        .collect();
    let row = |label: &str, base: String, f: &dyn Fn(Mode) -> String| {
        let cells: String = columns.iter().map(|m| format!(" {:>24}", f(*m))).collect();
        println!("{label:<34} {base:>12}{cells}");
    };
    row(
        "pipe, us/op (median)",
        format!("{:.2}", median(&base_us)),
        &|m| {
            let v: Vec<f64> = pipe_rounds
                .iter()
                .filter_map(|r| value(r, m))
                .map(|s| s / pipe.ops * 1e6)
                .collect();
            format!("{:.2}", median(&v))
        },
    );
    row("pipe, added us/op [95% CI]", "-".into(), &|m| {
        let (lo, mid, hi) = median_ci(&diffs(&pipe_rounds, m, |x, b| (x - b) / pipe.ops * 1e6));
        format!("{mid:+.2} [{lo:+.2}, {hi:+.2}]")
    });
    row("pipe, ratio [95% CI]", "1".into(), &|m| {
        let (lo, mid, hi) = median_ci(&diffs(&pipe_rounds, m, |x, b| x / b));
        format!("{mid:.3} [{lo:.3}, {hi:.3}]")
    });
    row("messaging, ratio [95% CI]", "1".into(), &|m| {
        let (lo, mid, hi) = median_ci(&diffs(&msg_rounds, m, |x, b| x / b));
        format!("{mid:.3} [{lo:.3}, {hi:.3}]")
    });
    if let Some(other) = &args.compare {
        let paired: Vec<f64> = pipe_rounds
            .iter()
            .filter_map(|r| {
                Some((value(r, Mode::Hostprobe)? - value(r, Mode::Compare)?) / pipe.ops * 1e6)
            })
            .collect();
        let (lo, mid, hi) = median_ci(&paired);
        println!(
            "{:<34} {:>12} {mid:+.3} us/op [{lo:+.3}, {hi:+.3}] (paired within rounds; compare = {})",
            "pipe, hostprobe - compare", "", other.display()
        );
    }
    for (load, rounds) in futex_loads.iter().zip(&futex_rounds) {
        let (lo, mid, hi) = median_ci(&diffs(rounds, Mode::Hostprobe, |x, b| x / b));
        println!(
            "{:<34} {:>12} {:>24}",
            format!("{}, time/op ratio [95% CI]", load.name),
            "1",
            format!("{mid:.3} [{lo:.3}, {hi:.3}]")
        );
    }
    println!("{:<34} {:>12.2}", "probe events per pipe op", events_per_op);
    print_faults(&fault_rounds, &fault_modes, faults.ops);
    println!(
        "{:<34} {:>12.1} ms CPU per run (start, attach, load, one scrape; median), peak RSS {:.1} MiB (max)",
        "agent",
        median(&agent_use.cpu_seconds.iter().map(|c| c * 1e3).collect::<Vec<_>>()),
        agent_use.peak_rss_kib.iter().cloned().fold(0.0, f64::max) / 1024.0
    );
    startup(hostprobe, args, &mut rng)
}

/// Start-up of `serve`: wall time from spawn to the first /healthz answer
/// and the CPU time spent by then, for this binary and `--compare`'s in
/// random order within each round.
fn startup(hostprobe: &Path, args: &BenchArgs, rng: &mut Rng) -> Result<()> {
    let mut bins = vec![hostprobe.to_path_buf()];
    bins.extend(args.compare.clone());
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); bins.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); bins.len()];
    for round in 0..args.startup_rounds {
        let mut order: Vec<usize> = (0..bins.len()).collect();
        rng.shuffle(&mut order);
        for i in order {
            let t0 = Instant::now();
            let agent = Agent::start(&bins[i], "5s", "auto")?;
            wall[i].push(t0.elapsed().as_secs_f64());
            cpu[i].push(agent.cpu_seconds()?);
            agent.stop()?;
        }
        eprint!(
            "\rbench start-up: round {:>3}/{}   ",
            round + 1,
            args.startup_rounds
        );
    }
    eprintln!();
    println!(
        "\nstart-up of serve, spawn to first /healthz answer ({} rounds; median [95% CI])",
        args.startup_rounds
    );
    for (i, bin) in bins.iter().enumerate() {
        let (lo, mid, hi) = median_ci(&wall[i]);
        let (clo, cmid, chi) = median_ci(&cpu[i]);
        println!(
            "  {:<40} {:>6.0} ms [{:.0}, {:.0}] wall, {:>6.0} ms [{:.0}, {:.0}] CPU",
            bin.display(),
            mid * 1e3,
            lo * 1e3,
            hi * 1e3,
            cmid * 1e3,
            clo * 1e3,
            chi * 1e3
        );
    }
    Ok(())
}

/// The page-fault load: every 4 KiB write fault also allocates a page, so
/// `page_fault_user` and `mm_page_alloc` each run once per fault. The
/// `always - never` row is mm_page_alloc's own cost, paired within rounds.
fn print_faults(rounds: &[Vec<(Mode, f64)>], modes: &[Mode], ops: f64) {
    let base: Vec<f64> = rounds
        .iter()
        .filter_map(|r| value(r, Mode::Baseline))
        .map(|s| s / ops * 1e9)
        .collect();
    println!(
        "\npage-fault load ({} rounds of {ops} faults; baseline {:.0} ns/fault, median)",
        rounds.len(),
        median(&base)
    );
    println!(
        "{:<62} {:>22} {:>22}",
        "", "added ns/fault [95% CI]", "ratio [95% CI]"
    );
    let line = |label: &str, added: Vec<f64>, ratio: Vec<f64>| {
        let (alo, amid, ahi) = median_ci(&added);
        let (rlo, rmid, rhi) = median_ci(&ratio);
        println!(
            "{label:<62} {:>22} {:>22}",
            format!("{amid:+.0} [{alo:+.0}, {ahi:+.0}]"),
            format!("{rmid:.3} [{rlo:.3}, {rhi:.3}]")
        );
    };
    for &m in modes.iter().filter(|m| **m != Mode::Baseline) {
        let label = match m {
            Mode::Hostprobe => "hostprobe, every program (--numa-page-alloc always)".into(),
            Mode::HostprobeNoPageAlloc => {
                "hostprobe, without mm_page_alloc (--numa-page-alloc never)".into()
            }
            Mode::Bpftrace(script) => format!("bpftrace `{script}`"),
            Mode::Baseline | Mode::Compare => unreachable!(),
        };
        line(
            &label,
            diffs(rounds, m, |x, b| (x - b) / ops * 1e9),
            diffs(rounds, m, |x, b| x / b),
        );
    }
    let paired = |f: fn(f64, f64) -> f64| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| {
                Some(f(
                    value(r, Mode::Hostprobe)?,
                    value(r, Mode::HostprobeNoPageAlloc)?,
                ))
            })
            .collect()
    };
    line(
        "mm_page_alloc alone (always vs never, same round)",
        paired(|a, n| a - n).iter().map(|d| d / ops * 1e9).collect(),
        paired(|a, n| a / n),
    );
}

fn value(round: &[(Mode, f64)], m: Mode) -> Option<f64> {
    round.iter().find(|(x, _)| *x == m).map(|(_, v)| *v)
}

fn diffs(rounds: &[Vec<(Mode, f64)>], m: Mode, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    rounds
        .iter()
        .filter_map(|r| Some(f(value(r, m)?, value(r, Mode::Baseline)?)))
        .collect()
}

/// One round: every mode once, in random order, alternating which goes first.
fn round(
    hostprobe: &Path,
    args: &BenchArgs,
    load: &Load,
    modes: &[Mode],
    rng: &mut Rng,
    agent_use: &mut AgentUse,
) -> Result<Vec<(Mode, f64)>> {
    let mut order = modes.to_vec();
    rng.shuffle(&mut order);
    let mut out = Vec::new();
    for m in order {
        let secs = match m {
            Mode::Baseline => run_load(load)?,
            Mode::Hostprobe | Mode::HostprobeNoPageAlloc => {
                let page_alloc = if m == Mode::Hostprobe {
                    "always"
                } else {
                    "never"
                };
                let agent = Agent::start(hostprobe, "5s", page_alloc)?;
                let secs = run_load(load)?;
                // One scrape, as Prometheus would do, before reading its use.
                agent.events()?;
                agent_use.cpu_seconds.push(agent.cpu_seconds()?);
                agent_use.peak_rss_kib.push(agent.peak_rss_kib()?);
                agent.stop()?;
                secs
            }
            Mode::Compare => {
                let other = args.compare.as_deref().context("no --compare binary")?;
                let agent = Agent::start(other, "5s", "always")?;
                let secs = run_load(load)?;
                agent.events()?;
                agent.stop()?;
                secs
            }
            Mode::Bpftrace(script) => {
                let bt = Bpftrace::start(script)?;
                let secs = run_load(load)?;
                bt.stop();
                secs
            }
        };
        out.push((m, secs));
    }
    Ok(out)
}

/// The page-fault load: maps 4 MiB of anonymous memory (no THP), writes
/// every page (one write fault each), unmaps, until `pages` faults ran.
/// Prints its time as `perf bench` does.
pub fn fault_load(pages: u64) -> Result<()> {
    const CHUNK: usize = 1024;
    const PAGE: usize = 4096;
    let t0 = Instant::now();
    let mut done = 0;
    while done < pages {
        // SAFETY: a fresh private anonymous mapping, written inside its
        // bounds and unmapped before the next.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                CHUNK * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                bail!("mmap: {}", std::io::Error::last_os_error());
            }
            libc::madvise(p, CHUNK * PAGE, libc::MADV_NOHUGEPAGE);
            let base = p.cast::<u8>();
            for i in 0..CHUNK {
                base.add(i * PAGE).write_volatile(1);
            }
            libc::munmap(p, CHUNK * PAGE);
        }
        done += CHUNK as u64;
    }
    println!("Total time: {:.6} [sec]", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Runs a load and returns its own reported time ("Total time: X [sec]").
fn run_load(load: &Load) -> Result<f64> {
    let out = Command::new(&load.cmd[0])
        .args(&load.cmd[1..])
        .output()
        .with_context(|| format!("running {:?}", load.cmd))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            load.cmd,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // `perf bench sched`: "Total time: 1.234 [sec]"; `perf bench futex`:
    // "Averaged N operations/sec": seconds per operation.
    let total = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Total time:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok());
    let averaged = || {
        text.lines()
            .find_map(|l| l.trim().strip_prefix("Averaged "))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .filter(|ops| *ops > 0.0)
            .map(|ops| 1.0 / ops)
    };
    total.or_else(averaged).with_context(|| {
        format!(
            "no `Total time` or `Averaged` in the output of {}: {text}",
            load.name
        )
    })
}

fn measure_events_per_op(hostprobe: &Path, pipe: &Load) -> Result<f64> {
    let agent = Agent::start(hostprobe, "100ms", "always")?;
    std::thread::sleep(Duration::from_millis(300));
    let before = agent.events()?;
    run_load(pipe)?;
    std::thread::sleep(Duration::from_millis(300));
    let after = agent.events()?;
    agent.stop()?;
    Ok((after - before) / pipe.ops)
}

struct Agent {
    child: Child,
}

impl Agent {
    /// `page_alloc`: the `--numa-page-alloc` value.
    fn start(bin: &Path, interval: &str, page_alloc: &str) -> Result<Self> {
        let child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                LISTEN,
                "--interval",
                interval,
                "--log-level",
                "warn",
                "--numa-page-alloc",
                page_alloc,
            ])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let agent = Agent { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get("/healthz").is_err() {
            if Instant::now() > deadline {
                bail!("hostprobe serve did not answer /healthz within 20 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(agent)
    }

    fn events(&self) -> Result<f64> {
        let body = http_get("/metrics")?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with("hostprobe_probe_events_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    fn proc_file(&self, name: &str) -> Result<String> {
        let p = format!("/proc/{}/{name}", self.child.id());
        std::fs::read_to_string(&p).with_context(|| format!("reading {p}"))
    }

    fn cpu_seconds(&self) -> Result<f64> {
        let stat = self.proc_file("stat")?;
        let after_comm = stat.rsplit_once(')').context("bad /proc/PID/stat")?.1;
        let f: Vec<&str> = after_comm.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime), counted from after the comm field.
        let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        Ok(ticks / clock_ticks())
    }

    fn peak_rss_kib(&self) -> Result<f64> {
        let status = self.proc_file("status")?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmHWM in /proc/PID/status")
    }

    fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("hostprobe serve exited with {status}");
        }
        Ok(())
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

struct Bpftrace {
    child: Child,
}

impl Bpftrace {
    fn start(script: &str) -> Result<Self> {
        let mut child = Command::new("bpftrace")
            .args(["-e", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace")?;
        let stdout = child.stdout.take().context("bpftrace stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // bpftrace prints "Attaching N probes..." once its programs are attached.
        match lines.next() {
            Some(Ok(l)) if l.starts_with("Attaching") => {}
            other => bail!("bpftrace did not attach: {other:?}"),
        }
        // Keep draining so bpftrace never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child })
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn http_get(path: &str) -> Result<String> {
    let mut s = TcpStream::connect(LISTEN)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

fn median(v: &[f64]) -> f64 {
    median_ci(v).1
}

/// Median with a distribution-free 95% interval (order statistics of the
/// binomial(n, 1/2) distribution, normal approximation).
fn median_ci(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let mid = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    // 1-based ranks r = n/2 - z*sqrt(n)/2 and s = 1 + n/2 + z*sqrt(n)/2 (Conover).
    let half = 1.96 * (n as f64).sqrt() / 2.0;
    let r = (n as f64 / 2.0 - half).round().max(1.0) as usize;
    let k = ((1.0 + n as f64 / 2.0 + half).round() as usize).min(n);
    (s[r - 1], mid, s[k - 1])
}

/// xorshift64*: enough randomness to order modes, without a dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(t | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_interval_brackets_the_median() {
        let v: Vec<f64> = (1..=61).map(f64::from).collect();
        let (lo, mid, hi) = median_ci(&v);
        assert_eq!(mid, 31.0);
        assert!(lo < mid && mid < hi);
        assert!(
            (23.0..=25.0).contains(&lo) && (37.0..=39.0).contains(&hi),
            "{lo} {hi}"
        );
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut r = Rng(42);
        let mut v = vec![1, 2, 3];
        r.shuffle(&mut v);
        v.sort();
        assert_eq!(v, [1, 2, 3]);
    }
}
