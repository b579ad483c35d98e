//! `cargo xtask soak`: `hostprobe serve` for a long while on this host
//! under a rotating mix of what a busy host does to it: the messaging load;
//! process churn; cgroup churn among a tree of 2,000 idle cgroups; lock
//! contention over tens of thousands of distinct lock objects (unix socket
//! pairs kept open, each contended by two writers); file dirtying; a QEMU
//! guest started and stopped with readiness on; two scrapers (1 s and 15 s)
//! and a client that opens connections and never reads. A second `serve`,
//! scraped every 15 s only, runs beside it so that the top-K labels can be
//! compared. The targets scale with `--minutes` (30: the full soak, 3: the
//! version in `cargo xtask test`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// How long to run (the targets scale with it).
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Soak this hostprobe binary instead of building one (e.g. an older
    /// release, to compare).
    #[arg(long)]
    pub bin: Option<PathBuf>,
}

impl SoakArgs {
    pub fn minutes(minutes: f64) -> Self {
        Self { minutes, bin: None }
    }
}

const MAIN: &str = "127.0.0.1:19501";
const CONTROL: &str = "127.0.0.1:19502";
/// Families whose `workload` label is chosen by top-K.
const LABELLED: [&str; 3] = [
    "hostprobe_sched_switch_ins_total",
    "hostprobe_workload_lock_wait_seconds_total",
    "hostprobe_file_dirtied_bytes_total",
];
/// Share of its family below which a label may differ between agents.
const LABEL_NOISE: f64 = 0.01;

/// What the load threads did.
#[derive(Default)]
struct Done {
    processes: AtomicU64,
    cgroups: AtomicU64,
    vm_starts: AtomicU64,
}

/// A child killed with its process group when dropped.
struct Proc(Child);

impl Proc {
    fn spawn(cmd: &mut Command) -> Result<Self> {
        cmd.process_group(0);
        Ok(Self(
            cmd.spawn().with_context(|| format!("starting {cmd:?}"))?,
        ))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// The load threads: stopped and joined however the soak ends, so that
/// nothing they started (QEMU included) outlives it.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `GET path` with its latency; `None` when it failed.
fn get(addr: &str, path: &str) -> Option<(String, Duration)> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((body, t0.elapsed()))
}

/// `name{labels} value` samples of Prometheus text.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// SIGKILL to every process in cgroup `dir` and below, until none is left.
fn kill_all_in(dir: &Path) {
    for _ in 0..50 {
        let mut any = false;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    any = true;
                    // SAFETY: signalling a process of our own test cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            stack.extend(
                std::fs::read_dir(&d)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir()),
            );
        }
        if !any {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes the cgroup `dir` and every cgroup below it (empty of processes).
fn remove_tree(dir: &Path) {
    let subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    for s in subs {
        remove_tree(&s);
    }
    let _ = std::fs::remove_dir(dir);
}

fn cgroup2_root() -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount = pre.split_whitespace().nth(4)?;
            (post.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount))
        })
        .context("no cgroup v2 mount")
}

/// `sh -c SCRIPT` run inside cgroup directory `cg`.
fn in_cgroup(cg: &Path, script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "echo $$ > '{}/cgroup.procs' && {script}",
            cg.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn rss_kib(pid: u32) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn p99(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default()
}

pub fn run(bin: &Path, args: &SoakArgs) -> Result<()> {
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let scale = args.minutes / 30.0;
    // serve hands its start-up heap back (malloc_trim), and the first
    // minutes under load refill the allocator: RSS is judged from half time.
    let warm = total / 2;
    let window = Duration::from_secs_f64((30.0 * scale).max(10.0));
    let targets = (
        (100_000.0 * scale) as u64,
        (5_000.0 * scale) as u64,
        (20_000.0 * scale) as u64,
    );
    let cgroups = cgroup2_root()?;
    // What an interrupted soak left behind.
    for e in std::fs::read_dir(&cgroups)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("hostprobe-soak-") {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                kill_all_in(&e.path());
                remove_tree(&e.path());
                let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&name));
            }
        }
    }
    let root = cgroups.join(format!("hostprobe-soak-{}", std::process::id()));
    let dirs = ["idle", "churn", "messaging", "sockets", "dirty", "vm"];
    for d in dirs {
        std::fs::create_dir_all(root.join(d))?;
    }
    for i in 0..2000 {
        std::fs::create_dir_all(root.join("idle").join(format!("i{i}")))?;
    }
    let tmp = std::env::temp_dir().join(format!("hostprobe-soak-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let outcome = soak(bin, &root, &tmp, total, warm, window, targets);
    // Clean up whatever happened: processes first, then the cgroups.
    kill_all_in(&root);
    remove_tree(&root);
    let _ = std::fs::remove_dir_all(&tmp);
    outcome
}

#[allow(clippy::too_many_lines)]
fn soak(
    bin: &Path,
    root: &Path,
    tmp: &Path,
    total: Duration,
    warm: Duration,
    window: Duration,
    (want_procs, want_cgroups, want_locks): (u64, u64, u64),
) -> Result<()> {
    let log_path = tmp.join("serve.log");
    let main = Proc::spawn(
        Command::new(bin)
            .args(["serve", "--listen", MAIN, "--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?),
    )?;
    let control = Proc::spawn(
        Command::new(bin)
            .args(["serve", "--listen", CONTROL, "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    for addr in [MAIN, CONTROL] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(addr, "/healthz").is_none() {
            if Instant::now() > deadline {
                bail!("serve at {addr} did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let main_pid = main.0.id();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Done::default());
    let mut load = Load {
        stop: stop.clone(),
        threads: Vec::new(),
    };
    let threads = &mut load.threads;
    let running = |stop: &AtomicBool| !stop.load(Ordering::Relaxed);

    // The messaging load, run after run.
    {
        let (stop, cg) = (stop.clone(), root.join("messaging"));
        threads.push(std::thread::spawn(move || {
            while running(&stop) {
                let _ = in_cgroup(&cg, "exec perf bench sched messaging -g 2 -l 200").status();
            }
        }));
    }
    // Process and cgroup churn: a cgroup made, 20 processes run in it,
    // removed; about three a second.
    {
        let (stop, done, cg) = (stop.clone(), done.clone(), root.join("churn"));
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while running(&stop) {
                let t0 = Instant::now();
                let dir = cg.join(format!("c{n}"));
                if std::fs::create_dir(&dir).is_ok() {
                    let ok = in_cgroup(&dir, "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do /bin/true; done")
                        .status()
                        .is_ok_and(|s| s.success());
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if ok {
                        done.processes.fetch_add(21, Ordering::Relaxed);
                        done.cgroups.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                if let Some(left) = Duration::from_millis(300).checked_sub(t0.elapsed()) {
                    std::thread::sleep(left);
                }
            }
        }));
    }
    // Distinct lock objects: socket pairs kept open, each contended; in
    // as many processes as their open-file limit needs (raising it takes
    // CAP_SYS_RESOURCE, which a container may not have).
    let pairs = (want_locks as f64 * 1.05) as u64;
    let per_process = (files_limit()?.saturating_sub(256) / 2).min(8000);
    if per_process < 500 {
        bail!(
            "the open-file limit ({}) is too low for the socket load; raise it (ulimit -n)",
            files_limit()?
        );
    }
    let processes = pairs.div_ceil(per_process);
    let mut sockets = Vec::new();
    for i in 0..processes {
        let n = per_process.min(pairs - i * per_process);
        sockets.push(Proc::spawn(
            in_cgroup(
                &root.join("sockets"),
                &format!(
                    "exec {} soak-sockets --pairs {n} --seconds {} --report '{}'",
                    std::env::current_exe()?.display(),
                    (total.as_secs_f64() * 0.8) as u64,
                    tmp.join(format!("pairs.{i}")).display()
                ),
            )
            .stdout(Stdio::null()),
        )?);
    }
    // File dirtying.
    let dirty_file = tmp.join("dirty");
    let dirtier = Proc::spawn(&mut in_cgroup(
        &root.join("dirty"),
        &format!(
            "while :; do dd if=/dev/zero of='{0}' bs=1M count=8 conv=fsync 2>/dev/null; rm -f '{0}'; sleep 1; done",
            dirty_file.display()
        ),
    ))?;
    // A QEMU guest (firmware idling, 64 MiB of random RAM) started and
    // stopped: up a minute in every five, at least once.
    {
        let (stop, done, cg, dir) = (
            stop.clone(),
            done.clone(),
            root.join("vm"),
            tmp.to_path_buf(),
        );
        let period = (total / 2).min(Duration::from_secs(300));
        let up = Duration::from_secs(60).min(period / 2);
        threads.push(std::thread::spawn(move || {
            let ram = dir.join("vm.ram");
            let mut bytes = vec![0u8; 64 << 20];
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let _ = std::fs::write(&ram, bytes);
            let mut next = Instant::now() + period / 2;
            while running(&stop) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                next += period;
                let script = format!(
                    "exec qemu-system-x86_64 -accel tcg -m 64 -nodefaults -display none \
                     -name guest=soak-vm,debug-threads=on \
                     -object memory-backend-file,id=ram,size=64M,mem-path='{}',share=off \
                     -machine memory-backend=ram",
                    ram.display()
                );
                if let Ok(vm) = Proc::spawn(&mut in_cgroup(&cg, &script)) {
                    done.vm_starts.fetch_add(1, Ordering::Relaxed);
                    let until = Instant::now() + up;
                    while running(&stop) && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    drop(vm);
                }
            }
        }));
    }
    // Clients of the main serve: a scraper every second (with /healthz),
    // one every 15 s, one that connects and never reads.
    let latencies = Arc::new(Mutex::new((Vec::new(), Vec::new(), 0u64)));
    {
        let (stop, lat) = (stop.clone(), latencies.clone());
        threads.push(std::thread::spawn(move || {
            while running(&stop) {
                let t0 = Instant::now();
                let health = get(MAIN, "/healthz");
                let metrics = get(MAIN, "/metrics");
                let mut l = lat.lock().unwrap();
                match (health, metrics) {
                    (Some((_, h)), Some((_, m))) => {
                        l.0.push(h);
                        l.1.push(m);
                    }
                    _ => l.2 += 1,
                }
                drop(l);
                if let Some(left) = Duration::from_secs(1).checked_sub(t0.elapsed()) {
                    std::thread::sleep(left);
                }
            }
        }));
    }
    for addr in [MAIN, CONTROL] {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            while running(&stop) {
                let _ = get(addr, "/metrics");
                for _ in 0..75 {
                    if !running(&stop) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }));
    }
    {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut held: Vec<(Instant, TcpStream)> = Vec::new();
            let mut n = 0u64;
            while running(&stop) {
                if let Ok(mut s) = TcpStream::connect(MAIN) {
                    // Every other one sends a request it never reads; the
                    // rest send nothing at all.
                    if n.is_multiple_of(2) {
                        let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
                    }
                    held.push((Instant::now(), s));
                }
                n += 1;
                held.retain(|(t, _)| t.elapsed() < Duration::from_secs(60));
                std::thread::sleep(Duration::from_secs(2));
            }
        }));
    }
    // RSS of the main serve every 5 s.
    let rss = Arc::new(Mutex::new(Vec::<(Duration, f64)>::new()));
    {
        let (stop, rss) = (stop.clone(), rss.clone());
        threads.push(std::thread::spawn(move || {
            while running(&stop) {
                if let Some(kib) = rss_kib(main_pid) {
                    rss.lock().unwrap().push((started.elapsed(), kib));
                }
                std::thread::sleep(Duration::from_secs(5));
            }
        }));
    }

    // Until the window at the end, then lock contention against perf.
    let mut shown = Instant::now();
    while started.elapsed() + window + Duration::from_secs(5) < total {
        std::thread::sleep(Duration::from_secs(1));
        for s in &mut sockets {
            if let Some(status) = s.0.try_wait()? {
                bail!("the socket load exited early ({status}); its error is above");
            }
        }
        if shown.elapsed() >= Duration::from_secs(30) {
            shown = Instant::now();
            eprintln!(
                "soak: {:>5.0}/{:.0} s, {} processes, {} cgroups, {} socket pairs, RSS {:.1} MiB",
                started.elapsed().as_secs_f64(),
                total.as_secs_f64(),
                done.processes.load(Ordering::Relaxed),
                done.cgroups.load(Ordering::Relaxed),
                pairs_so_far(tmp),
                rss_kib(main_pid).unwrap_or(0.0) / 1024.0
            );
        }
    }
    // A failed window (e.g. a scrape unanswered) is a failed check, not
    // the end of the soak.
    let perf = perf_window(tmp, window);

    // The load stops; the labels are compared once both agents have had
    // two rounds (5 s apart) since: their rounds do not run in step.
    load.finish();
    let socket_pairs = pairs_so_far(tmp);
    drop(sockets);
    drop(dirtier);
    std::thread::sleep(Duration::from_secs(11));
    // Workload values with one scraper and with three, read at the same
    // moment: `family workload` -> (value, share of the family).
    let labels = |addr| -> Option<BTreeMap<String, (f64, f64)>> {
        let body = get(addr, "/metrics")?.0;
        let mut values = BTreeMap::new();
        let mut totals: BTreeMap<String, f64> = BTreeMap::new();
        for (k, v) in samples(&body) {
            let family = k.split('{').next().unwrap_or_default();
            if !LABELLED.contains(&family) {
                continue;
            }
            let Some(w) = k
                .split("workload=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            else {
                continue;
            };
            *totals.entry(family.to_string()).or_default() += v;
            if w != "other" {
                values.insert(format!("{family} {w}"), v);
            }
        }
        Some(
            values
                .into_iter()
                .map(|(k, v)| {
                    let total = totals[k.split(' ').next().unwrap_or_default()];
                    (k, (v, if total > 0.0 { v / total } else { 0.0 }))
                })
                .collect(),
        )
    };
    let (one, three) = (labels(CONTROL), labels(MAIN));
    let answered = one.is_some() && three.is_some();
    let (one, three) = (one.unwrap_or_default(), three.unwrap_or_default());
    // A workload at the edge of the top-K may be in or out depending on
    // where each agent's rounds fell; only a label carrying a real share
    // of its family must be in both.
    let only = |a: &BTreeMap<String, (f64, f64)>, b: &BTreeMap<String, (f64, f64)>| {
        a.iter()
            .filter(|(k, (_, share))| !b.contains_key(*k) && *share >= LABEL_NOISE)
            .map(|(k, (v, share))| format!("{k} = {v} ({:.2}%)", share * 100.0))
            .collect::<Vec<_>>()
    };
    let (only_one, only_three) = (only(&one, &three), only(&three, &one));
    let final_body = get(MAIN, "/metrics").map(|b| b.0);
    let answered = answered && final_body.is_some();
    let final_body = final_body.unwrap_or_default();

    // Still the same process, and it exits cleanly.
    let alive = std::fs::read_to_string(format!("/proc/{main_pid}/cmdline")).is_ok();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(main_pid as i32, libc::SIGTERM) };
    let mut main = main;
    let exit = main.0.wait()?;
    drop(control);

    let s = samples(&final_body);
    let drops: BTreeMap<&String, &f64> = s
        .iter()
        .filter(|(k, v)| k.starts_with("hostprobe_map_drops_total{") && **v > 0.0)
        .collect();
    let missed: BTreeMap<&String, &f64> = s
        .iter()
        .filter(|(k, v)| k.starts_with("hostprobe_probe_missed_total{") && **v > 0.0)
        .collect();
    let walks = s
        .get("hostprobe_cgroup_tree_walks_total")
        .copied()
        .unwrap_or(0.0);
    let readiness_errors = s
        .get("hostprobe_readiness_errors_total")
        .copied()
        .unwrap_or(0.0);
    let log = std::fs::read_to_string(&log_path)?;
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    let rss = rss.lock().unwrap().clone();
    let at_warm = rss
        .iter()
        .find(|(t, _)| *t >= warm)
        .map(|(_, k)| *k)
        .unwrap_or(0.0);
    let after: Vec<f64> = rss
        .iter()
        .filter(|(t, _)| *t >= warm)
        .map(|(_, k)| *k)
        .collect();
    let (lo, hi) = after
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), k| (lo.min(*k), hi.max(*k)));
    let mut l = latencies.lock().unwrap();
    let (h99, m99, failed) = (p99(&mut l.0), p99(&mut l.1), l.2);
    let scrapes = l.1.len();
    drop(l);

    println!(
        "\nhostprobe soak: {:.0} minutes of serve under load",
        total.as_secs_f64() / 60.0
    );
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures.push(what);
        }
    };
    let procs = done.processes.load(Ordering::Relaxed);
    let cgroups = done.cgroups.load(Ordering::Relaxed);
    check(
        procs >= want_procs,
        format!("{procs} short-lived processes (want >= {want_procs})"),
    );
    check(cgroups >= want_cgroups, format!("{cgroups} cgroups made, used and removed among 2000 idle ones (want >= {want_cgroups})"));
    check(
        socket_pairs >= want_locks,
        format!("{socket_pairs} unix socket pairs open at once, each contended by two writers: distinct lock objects (want >= {want_locks})"),
    );
    check(
        done.vm_starts.load(Ordering::Relaxed) >= 1,
        format!(
            "{} QEMU guest starts, readiness errors {readiness_errors}",
            done.vm_starts.load(Ordering::Relaxed)
        ),
    );
    check(
        hi <= at_warm * 1.05 && lo >= at_warm * 0.95 && hi < 64.0 * 1024.0,
        format!(
            "RSS after {:.1} min within 5% of {:.1} MiB: {:.1}..{:.1} MiB (< 64 MiB)",
            warm.as_secs_f64() / 60.0,
            at_warm / 1024.0,
            lo / 1024.0,
            hi / 1024.0
        ),
    );
    check(drops.is_empty(), format!("map drops: {drops:?}"));
    // A lock contended inside a lock program itself (its per-CPU hash's
    // bucket lock when it adds an entry, or in an interrupt while it runs)
    // cannot be timed by it: the kernel skips that nested run. Bounded by
    // the rate of new entries, a round's worth at most.
    let events = |p: &str| {
        s.get(&format!("hostprobe_probe_events_total{{probe=\"{p}\"}}"))
            .copied()
            .unwrap_or(0.0)
    };
    let skipped = |p: &str| {
        s.get(&format!("hostprobe_probe_missed_total{{probe=\"{p}\"}}"))
            .copied()
            .unwrap_or(0.0)
    };
    let lock_missed = skipped("contention_begin") + skipped("contention_end");
    let lock_events = events("contention_begin") + events("contention_end");
    check(
        lock_missed <= lock_events * 1e-4,
        format!("lock probe runs the kernel skipped (nested contention): {lock_missed} of {lock_events} (<= 1e-4)"),
    );
    check(
        missed.keys().all(|k| k.contains("contention")),
        format!("runs the kernel skipped: {missed:?}"),
    );
    println!("       cgroup tree walks {walks}");
    let (perf_types, inner, outer) = match perf {
        Ok(counts) => counts,
        Err(e) => {
            check(false, format!("lock contention against perf lock: {e:#}"));
            Default::default()
        }
    };
    for (ty, perf) in &perf_types {
        let (lo, hi) = (
            inner.get(ty).copied().unwrap_or(0.0),
            outer.get(ty).copied().unwrap_or(0.0),
        );
        if *perf >= 200.0 {
            check(
                lo <= perf * 1.10 && perf * 0.90 <= hi,
                format!(
                    "{ty} contentions over {:.0} s: perf lock {perf}, hostprobe {lo}..{hi} (inside..outside perf's window)",
                    window.as_secs_f64()
                ),
            );
        }
    }
    check(
        perf_types.values().any(|n| *n >= 200.0),
        format!("a lock type perf counted 200 times or more: {perf_types:?}"),
    );
    check(
        answered,
        "both agents answered the scrapes after the load".to_string(),
    );
    check(
        answered && only_one.is_empty() && only_three.is_empty(),
        format!(
            "the same top-K labels with one scraper and with three ({} and {} labels; above {}% of their family only with one: {only_one:?}, only with three: {only_three:?})",
            one.len(),
            three.len(),
            LABEL_NOISE * 100.0
        ),
    );
    check(
        failed == 0 && h99 <= Duration::from_millis(50) && m99 <= Duration::from_millis(500),
        format!("{scrapes} scrapes a second apart: /healthz p99 {h99:?} (<= 50 ms), /metrics p99 {m99:?} (<= 500 ms), {failed} failed"),
    );
    check(
        alive && exit.success(),
        format!("the same serve throughout, exit {exit}"),
    );
    check(
        warnings.is_empty(),
        format!("warnings in the log: {warnings:?}"),
    );
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("soak failed: {}", failures.join("; "))
    }
}

/// Lock contentions per type over `window`: `perf lock record -a` (started
/// disabled, enabled and disabled through its control FIFO, run SCHED_FIFO
/// so that the load does not delay it), and the main serve's counters read
/// just inside and just outside perf's window: (perf, inner, outer).
type Counts = BTreeMap<String, f64>;

fn perf_window(tmp: &Path, window: Duration) -> Result<(Counts, Counts, Counts)> {
    use std::io::BufRead;
    let per_type = |body: &str| -> Counts {
        samples(body)
            .into_iter()
            .filter_map(|(k, v)| {
                let ty = k.strip_prefix("hostprobe_lock_contentions_total{type=\"")?;
                Some((ty.trim_end_matches("\"}").to_string(), v))
            })
            .collect()
    };
    let scrape = || -> Result<Counts> {
        Ok(per_type(
            &get(MAIN, "/metrics")
                .context("a scrape of serve got no answer")?
                .0,
        ))
    };
    let (ctl, ack, data) = (tmp.join("ctl"), tmp.join("ack"), tmp.join("perf.data"));
    for fifo in [&ctl, &ack] {
        let c = std::ffi::CString::new(fifo.display().to_string())?;
        // SAFETY: a valid C string path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            bail!("mkfifo {}", fifo.display());
        }
    }
    let mut perf = Proc::spawn(
        Command::new("chrt")
            .args(["-f", "50", "perf", "lock", "record", "-a", "-o"])
            .arg(&data)
            .args(["-D", "-1", "--control"])
            .arg(format!("fifo:{},{}", ctl.display(), ack.display()))
            .args(["--", "sleep", &format!("{}", window.as_secs_f64() + 4.0)])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let mut ctl_w = std::fs::OpenOptions::new().write(true).open(&ctl)?;
    let mut ack_r = std::io::BufReader::new(std::fs::File::open(&ack)?);
    let mut command = |cmd: &str| -> Result<()> {
        writeln!(ctl_w, "{cmd}")?;
        let mut line = String::new();
        ack_r.read_line(&mut line)?;
        Ok(())
    };
    let outer = scrape()?;
    command("enable")?;
    let inner = scrape()?;
    std::thread::sleep(window);
    let inner_end = scrape()?;
    command("disable")?;
    let outer_end = scrape()?;
    if !perf.0.wait()?.success() {
        bail!("perf lock record failed");
    }
    let report = Command::new("perf")
        .args(["lock", "contention", "-E", "1000000", "-i"])
        .arg(&data)
        .output()?;
    let text = String::from_utf8_lossy(&report.stdout).into_owned()
        + &String::from_utf8_lossy(&report.stderr);
    let mut counts = Counts::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(count) = f.first().and_then(|c| c.parse::<f64>().ok()) else {
            continue;
        };
        // contended, total wait (value unit), max, avg, type, caller.
        if let Some(ty) = f.get(7) {
            *counts.entry(ty.to_string()).or_default() += count;
        }
    }
    let delta = |a: &Counts, b: &Counts| -> Counts {
        b.iter()
            .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
            .collect()
    };
    Ok((counts, delta(&inner, &inner_end), delta(&outer, &outer_end)))
}

/// Socket pairs the contention process has reported open (it writes the
/// count to a file as it goes).
/// Socket pairs the socket load processes have open (each reports to
/// `pairs.N` in `tmp`).
fn pairs_so_far(tmp: &Path) -> u64 {
    std::fs::read_dir(tmp)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pairs."))
        .filter_map(|e| {
            std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// This process's hard limit of open files.
fn files_limit() -> Result<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: writes into the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    Ok(l.rlim_max)
}

/// `xtask soak-sockets`: `pairs` unix socket pairs opened over `seconds`
/// and kept open, each written by two threads at once (their receiver's
/// queue lock contends), the count written to `report` as it grows. Run in
/// the soak's `sockets` cgroup.
pub fn sockets(pairs: u64, seconds: u64, report: &Path) -> Result<()> {
    use std::os::unix::net::UnixStream;
    let limit = libc::rlimit {
        rlim_cur: files_limit()?,
        rlim_max: files_limit()?,
    };
    // SAFETY: a valid rlimit for this process (the soft limit up to the hard).
    if limit.rlim_cur < 2 * pairs + 64
        || unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0
    {
        bail!(
            "cannot open {pairs} socket pairs within the open-file limit {}",
            limit.rlim_cur
        );
    }
    let start = Instant::now();
    let mut open = Vec::with_capacity(pairs as usize);
    for i in 0..pairs {
        let (a, b) = UnixStream::pair()?;
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let mut w = a.try_clone()?;
                Ok(std::thread::spawn(move || {
                    let msg = [7u8; 512];
                    for _ in 0..64 {
                        let _ = w.write_all(&msg);
                    }
                }))
            })
            .collect::<Result<_>>()?;
        let mut r = b.try_clone()?;
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let mut left = 2 * 64 * 512;
            while left > 0 {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left -= n,
                }
            }
        });
        for w in writers {
            let _ = w.join();
        }
        let _ = reader.join();
        open.push((a, b));
        if i.is_multiple_of(64) {
            std::fs::write(report, (i + 1).to_string())?;
        }
        // Spread over the time given.
        let due = start + Duration::from_secs_f64(seconds as f64 * (i + 1) as f64 / pairs as f64);
        if let Some(left) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
    }
    std::fs::write(report, pairs.to_string())?;
    // Kept open until killed.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
