//! Tests that load the real probes into the running kernel (they need root,
//! as CI has) and compare what hostprobe reports with counts the test
//! controls exactly or with `perf`. They share the kernel, so they run one at
//! a time, and each checks that no hostprobe program stays loaded after it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hostprobe");
/// Program names as the kernel keeps them (at most 15 characters).
const OUR_PROGRAMS: [&str; 14] = [
    "sched_switch",
    "sched_wakeup",
    "sched_wakeup_ne",
    "sched_migrate_t",
    "contention_begi",
    "contention_end",
    "writeback_dirty",
    "balance_dirty_p",
    "page_fault_user",
    "mm_page_alloc",
    "sched_move_numa",
    "sched_swap_numa",
    "sched_stick_num",
    "mm_migrate_page",
];

static KERNEL: Mutex<()> = Mutex::new(());

/// Serialises kernel tests and, when the test ends, checks that none of
/// hostprobe's programs is still loaded.
struct KernelTest(#[allow(dead_code)] MutexGuard<'static, ()>);

impl KernelTest {
    fn start() -> Self {
        let guard = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(
            programs_after_unload(),
            Vec::<String>::new(),
            "programs left over before the test"
        );
        KernelTest(guard)
    }
}

impl Drop for KernelTest {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_eq!(
                programs_after_unload(),
                Vec::<String>::new(),
                "hostprobe left programs loaded"
            );
        }
    }
}

/// The kernel frees a program shortly after its last fd closes (deferred
/// work), so a program that is still listed after a few seconds has leaked.
fn programs_after_unload() -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = our_loaded_programs();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Names of loaded BPF programs that are ours, from bpftool (not from aya,
/// so the check does not trust the code under test).
fn our_loaded_programs() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| OUR_PROGRAMS.contains(n))
        .map(String::from)
        .collect()
}

fn hostprobe(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run hostprobe")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "hostprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A running `hostprobe diagnose --json`, and its stderr lines.
struct Diagnose {
    child: Child,
    stderr: std::thread::JoinHandle<Vec<String>>,
}

/// Starts `hostprobe diagnose` and returns once every probe is attached.
fn start_diagnose(args: &[&str]) -> Diagnose {
    let mut child = Command::new(BIN)
        .args(["diagnose", "--json", "--log-level", "info"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hostprobe diagnose");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // A probe is settled when attached or disabled (mm_page_alloc
            // stays detached on a one-node host).
            let settled = |l: &str| l.contains("probe ready") || l.contains("probe disabled");
            if settled(&line) {
                let ready = lines.iter().filter(|l: &&String| settled(l)).count() + 1;
                if ready == OUR_PROGRAMS.len() {
                    let _ = tx.send(());
                }
            }
            lines.push(line);
        }
        lines
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("hostprobe diagnose did not attach its probes within 30 s");
    Diagnose { child, stderr }
}

fn finish(diag: Diagnose) -> Value {
    finish_with_log(diag).0
}

/// The JSON document and the log lines (stderr).
fn finish_with_log(diag: Diagnose) -> (Value, Vec<String>) {
    let out = diag.child.wait_with_output().expect("wait for hostprobe");
    (json(&out), diag.stderr.join().unwrap())
}

/// A process that spins on one CPU; `sh` builtins only, so it never forks.
struct Spinner(KillOnDrop);

impl Spinner {
    fn start() -> Self {
        Spinner(KillOnDrop::spawn(
            Command::new("sh").args(["-c", "while :; do :; done"]),
        ))
    }

    fn pid(&self) -> u32 {
        self.0 .0.id()
    }

    /// Pins it to `cpu` (without waiting for it to run there).
    fn set_cpu(&self, cpu: usize) {
        // SAFETY: plain syscall on a zeroed, correctly sized cpu_set_t.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(
                libc::sched_setaffinity(
                    self.pid() as i32,
                    std::mem::size_of::<libc::cpu_set_t>(),
                    &set
                ),
                0
            );
        }
    }

    /// Pins it to `cpu` and waits until it runs there.
    fn move_to(&self, cpu: usize) {
        self.set_cpu(cpu);
        let deadline = Instant::now() + Duration::from_secs(5);
        while current_cpu(self.pid()) != Some(cpu) {
            assert!(Instant::now() < deadline, "spinner never ran on cpu {cpu}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills it and reaps it.
    fn stop(self) {
        drop(self.0);
    }
}

/// CPU a process last ran on (field 39 of /proc/PID/stat).
fn current_cpu(pid: u32) -> Option<usize> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(36)?
        .parse()
        .ok()
}

fn total_migrations(snapshot: &Value) -> u64 {
    snapshot["sched"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            ["same_core", "same_llc", "same_node", "other_node"]
                .iter()
                .map(|d| w["migrations"][d].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum()
}

const FLIPS: usize = 20;

/// Moves the spinner between CPU 0 and 1 exactly FLIPS times.
fn flip(spinner: &Spinner) {
    for i in 0..FLIPS {
        spinner.move_to((i + 1) % 2);
    }
}

fn two_cpus() -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
}

#[test]
fn check_reports_every_sched_probe_available() {
    let _k = KernelTest::start();
    let out = hostprobe(&["check", "--json"]);
    let r = json(&out);
    for p in r["probes"].as_array().unwrap() {
        assert_eq!(p["attached"], true, "probe not available: {p}");
    }
    assert_eq!(r["privileges"]["ok"], true);
    assert_eq!(r["btf"]["ok"], true);
    let text = hostprobe(&["check"]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("hostprobe can run here."));
}

#[test]
fn diagnose_counts_exactly_the_migrations_of_a_pid() {
    assert!(two_cpus(), "this test needs two CPUs");
    let _k = KernelTest::start();
    let spinner = Spinner::start();
    spinner.move_to(0);
    let pid = spinner.pid().to_string();
    let diag = start_diagnose(&["--duration", "8s", "--pid", &pid]);
    flip(&spinner);
    // Exiting switches the task out a last time, which attributes the rest.
    spinner.stop();
    let s = finish(diag);
    assert_eq!(s["filter"], format!("pid {pid}"));
    let n = total_migrations(&s);
    assert!(
        n.abs_diff(FLIPS as u64) <= 1,
        "expected {FLIPS} ± 1 migrations for pid {pid}, hostprobe saw {n}: {s}"
    );
}

#[test]
fn diagnose_attributes_migrations_to_the_cgroup() {
    assert!(two_cpus(), "this test needs two CPUs");
    let _k = KernelTest::start();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = hostprobe::host::proc::cgroup2_mount(&mountinfo).expect("cgroup v2 mounted");
    let name = format!("hostprobe-test-{}", std::process::id());
    let dir: PathBuf = root.join(&name);
    std::fs::create_dir(&dir).expect("create test cgroup");
    let spinner = Spinner::start();
    std::fs::write(dir.join("cgroup.procs"), spinner.pid().to_string())
        .expect("move spinner into the cgroup");
    spinner.move_to(0);
    let path = format!("/{name}");
    let diag = start_diagnose(&["--duration", "8s", "--cgroup", &path]);
    flip(&spinner);
    spinner.stop();
    let s = finish(diag);
    std::fs::remove_dir(&dir).expect("remove test cgroup");
    let ours: Vec<&Value> = s["sched"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["workload"] == path.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "workload {path} missing: {s}");
    let n = total_migrations(&s);
    assert!(
        n.abs_diff(FLIPS as u64) <= 1,
        "expected {FLIPS} ± 1 migrations in {path}, hostprobe saw {n}: {s}"
    );
    // Every workload is inside the filter: the kernel did the filtering.
    assert!(s["sched"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["workload"] == path.as_str()));
}

#[test]
fn a_full_workload_table_is_counted_and_logged_once() {
    let _k = KernelTest::start();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = hostprobe::host::proc::cgroup2_mount(&mountinfo).expect("cgroup v2 mounted");
    let dirs: Vec<PathBuf> = (0..8)
        .map(|i| root.join(format!("hostprobe-full-{}-{i}", std::process::id())))
        .collect();
    // Four entries per CPU, so eight busy cgroups cannot all fit.
    let diag = start_diagnose(&["--duration", "3s", "--max-workloads", "4"]);
    for dir in &dirs {
        std::fs::create_dir(dir).unwrap();
        let script = format!(
            "echo $$ > {}/cgroup.procs && for i in 1 2 3 4 5; do sleep 0.01; done",
            dir.display()
        );
        let status = Command::new("sh").args(["-c", &script]).status().unwrap();
        assert!(status.success());
    }
    let (s, log) = finish_with_log(diag);
    for dir in &dirs {
        std::fs::remove_dir(dir).unwrap();
    }
    let drops = s["map_drops"]["SCHED_WORKLOADS"].as_u64().unwrap();
    assert!(
        drops > 0,
        "no drops counted with 8 cgroups in a 4-entry table: {s}"
    );
    // Logged by the kernel program through aya-log: once per CPU at most
    // (the once-flag is not atomic across CPUs), never per event.
    let warnings = log
        .iter()
        .filter(|l| l.contains("SCHED_WORKLOADS is full"))
        .count();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(
        (1..=cpus).contains(&warnings),
        "{warnings} warnings for {drops} drops:\n{}",
        log.join("\n")
    );
}

#[test]
fn diagnose_json_has_the_documented_fields() {
    let _k = KernelTest::start();
    let diag = start_diagnose(&["--duration", "2s"]);
    let load = Command::new("perf")
        .args(["bench", "sched", "messaging", "-g", "1", "-l", "100"])
        .output()
        .expect("perf bench");
    assert!(load.status.success());
    let s = finish(diag);
    let has = |v: &Value, keys: &[&str], what: &str| {
        for key in keys {
            assert!(v.get(key).is_some(), "missing {what} field {key}: {v}");
        }
    };
    has(
        &s,
        &[
            "hostprobe_version",
            "kernel",
            "window_seconds",
            "topology",
            "filter",
        ],
        "top-level",
    );
    has(
        &s,
        &["probes", "sched", "map_drops", "collection_seconds"],
        "top-level",
    );
    for key in ["online_cpus", "cores", "llcs", "nodes"] {
        assert!(s["topology"][key].as_u64().unwrap() >= 1, "topology.{key}");
    }
    for key in ["same_core", "same_llc", "same_node", "other_node"] {
        assert!(s["sched"]["host_migrations"][key].is_u64());
    }
    assert!(s["sched"]["host_migrated_switch_ins"].is_u64());
    let w = &s["sched"]["workloads"];
    assert!(
        !w.as_array().unwrap().is_empty(),
        "no workloads despite a messaging load"
    );
    let busiest = &w[0];
    has(
        busiest,
        &["workload", "migrations", "switch_ins", "placement_ratios"],
        "workload",
    );
    has(busiest, &["runqueue_latency", "oncpu_seconds"], "workload");
    for key in ["same_cpu", "same_llc", "same_node", "other_node"] {
        assert!(busiest["switch_ins"][key].is_u64());
    }
    let rq = &busiest["runqueue_latency"];
    assert!(
        rq["count"].as_u64().unwrap() > 0,
        "no run-queue latencies measured"
    );
    let (p50, p99) = (
        rq["p50_seconds"].as_f64().unwrap(),
        rq["p99_seconds"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");
    assert!(s["probes"]
        .as_array()
        .unwrap()
        .iter()
        // The others fire only on rarer events (a task created, a file
        // page dirtied, a writer throttled, NUMA balancing) or stay
        // detached on a one-node host (mm_page_alloc).
        .filter(|p| {
            [
                "sched_switch",
                "sched_wakeup",
                "contention_begin",
                "contention_end",
                "page_fault_user",
            ]
            .contains(&p["probe"].as_str().unwrap())
        })
        .all(|p| p["events"].as_u64().unwrap() > 0));
}

/// A child process, leader of its own process group, that is killed with
/// all its descendants when dropped (also when a test fails half-way).
struct KillOnDrop(Child);

impl KillOnDrop {
    fn spawn(cmd: &mut Command) -> Self {
        KillOnDrop(
            cmd.process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
        )
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling the process group we created.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

struct Server {
    child: KillOnDrop,
    addr: String,
}

impl Server {
    /// Starts serve with `extra` arguments, behind `wrapper` (e.g.
    /// `chrt -f 50`) if not empty.
    fn start_with(port: u16, wrapper: &[&str], extra: &[&str]) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let mut child = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        child
            .args([
                "serve",
                "--listen",
                &addr,
                "--interval",
                "100ms",
                "--log-level",
                "warn",
            ])
            .args(extra);
        let s = Server {
            child: KillOnDrop::spawn(&mut child),
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.get("/healthz").is_err() {
            assert!(Instant::now() < deadline, "serve did not answer /healthz");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn get(&self, path: &str) -> std::io::Result<(String, String)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((head.to_string(), body.to_string()))
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.0.id() as i32, libc::SIGTERM) };
        self.child.0.wait().expect("wait for serve")
    }
}

/// Sum of all samples of one metric in Prometheus text.
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn serve_exposes_metrics_that_promtool_accepts_and_exits_cleanly() {
    let _k = KernelTest::start();
    let me = std::process::id().to_string();
    let server = Server::start_with(
        19488,
        &[],
        &[
            "--readiness-pid",
            &me,
            "--readiness-windows",
            "100ms,300ms",
            "--readiness-interval",
            "1s",
        ],
    );
    // The first readiness pass (0.3 s) lands in a later scrape.
    let converges = format!("hostprobe_migration_converges{{workload=\"pid:{me}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (head, body) = loop {
        let (head, body) = server.get("/metrics").unwrap();
        if body.contains(&converges) || Instant::now() > deadline {
            break (head, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    for name in [
        "hostprobe_build_info",
        "hostprobe_probe_attached",
        "hostprobe_probe_events_total",
        "hostprobe_map_drops_total",
        "hostprobe_sched_migrations_total",
        "hostprobe_sched_switch_ins_total",
        "hostprobe_runqueue_latency_seconds_bucket",
        "hostprobe_write_faults_total",
        "hostprobe_file_dirtied_bytes_total",
        &converges,
        "hostprobe_migration_memory_bytes{workload=\"pid:",
        "hostprobe_dirty_bytes_per_second{workload=\"pid:",
        "hostprobe_migration_predicted_duration_seconds{workload=\"pid:",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs the prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.get("/healthz").unwrap().1, "ok\n");
    // Attached, every thread keeps only CAP_BPF, CAP_SYS_PTRACE and
    // CAP_DAC_READ_SEARCH, and the scrapes above still worked.
    let kept: u64 = (1 << 39) | (1 << 19) | (1 << 2);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.child.0.id())).unwrap();
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap();
        assert_eq!(eff, kept, "thread {:?} kept {eff:x}", task.file_name());
    }
    let status = server.stop();
    assert!(status.success(), "serve exited with {status}");
}

/// hostprobe's counts over a window of perf's: `inner` from scrapes taken
/// inside perf's enable..disable, `outer` from scrapes just outside it.
struct Window {
    /// perf's counts by event (or lock type).
    perf: Vec<(String, f64)>,
    perf_stderr: String,
    inner: String,
    inner_end: String,
    outer: String,
    outer_end: String,
}

impl Window {
    fn perf(&self, event: &str) -> f64 {
        self.perf
            .iter()
            .find(|(e, _)| e == event)
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("perf did not count {event}"))
    }

    fn bracket(&self, metric: &str) -> (f64, f64) {
        (
            metric_sum(&self.inner_end, metric) - metric_sum(&self.inner, metric),
            metric_sum(&self.outer_end, metric) - metric_sum(&self.outer, metric),
        )
    }
}

/// Counts 2 s of a running load with `perf stat -a` (started disabled,
/// enabled and disabled through its control FIFO) while scraping hostprobe
/// just before and after each command. perf and the scraping server run
/// SCHED_FIFO so that the load does not delay them.
fn perf_window(server: &Server) -> Window {
    perf_controlled(
        server,
        &[
            "stat",
            "-a",
            "-x,",
            "-e",
            "sched:sched_migrate_task",
            "-e",
            "cpu-migrations",
        ],
        |w| {
            w.perf = w
                .perf_stderr
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(',').collect();
                    Some((f.get(2)?.to_string(), f.first()?.trim().parse().ok()?))
                })
                .collect();
        },
    )
}

/// Runs `perf ARGS -D -1 --control ... -- sleep 4` SCHED_FIFO, enables it
/// for 2 s between scrapes of hostprobe (see [`Window`]), and hands the
/// window to `parse` for perf's side.
fn perf_controlled(server: &Server, args: &[&str], parse: impl FnOnce(&mut Window)) -> Window {
    let dir = tempfile::tempdir().unwrap();
    let (ctl, ack) = (dir.path().join("ctl"), dir.path().join("ack"));
    for fifo in [&ctl, &ack] {
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
    let control = format!("fifo:{},{}", ctl.display(), ack.display());
    let perf = Command::new("chrt")
        .args(["-f", "50", "perf"])
        .args(args)
        .args(["-D", "-1", "--control", &control, "--", "sleep", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chrt + perf");
    let mut ctl_w = std::fs::OpenOptions::new().write(true).open(&ctl).unwrap();
    let mut ack_r = BufReader::new(std::fs::File::open(&ack).unwrap());
    let mut command = |cmd: &str| {
        writeln!(ctl_w, "{cmd}").unwrap();
        let mut line = String::new();
        ack_r.read_line(&mut line).unwrap();
        // perf terminates each ack with a NUL byte.
        let ack = line.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        assert_eq!(ack, "ack", "perf did not acknowledge {cmd}");
    };
    let scrape = || server.get("/metrics").unwrap().1;
    // perf marks a task for `cpu-migrations` only while its events exist, so
    // a task moved before perf started and first run inside the window
    // would count for hostprobe alone (seen: +9% with 400 queued tasks).
    // Every queued task runs within this wait before the window opens.
    std::thread::sleep(Duration::from_millis(1500));
    let outer = scrape();
    command("enable");
    let inner = scrape();
    std::thread::sleep(Duration::from_secs(2));
    let inner_end = scrape();
    command("disable");
    let outer_end = scrape();
    let out = perf.wait_with_output().unwrap();
    let perf_stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "perf {args:?}: {perf_stderr}");
    let mut w = Window {
        perf: Vec::new(),
        perf_stderr,
        inner,
        inner_end,
        outer,
        outer_end,
    };
    parse(&mut w);
    w
}

#[test]
fn host_migrations_agree_with_perf_stat() {
    let _k = KernelTest::start();
    let server = Server::start_with(19489, &["chrt", "-f", "50"], &[]);
    // A steady load that migrates tasks, running before and after the window.
    let _load = KillOnDrop::spawn(
        Command::new("perf")
            .args(["bench", "sched", "messaging", "-g", "10", "-l", "100000"])
            .stdout(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let pairs = [
        // The same kernel event, counted by perf and by hostprobe's program.
        (
            "sched:sched_migrate_task",
            "hostprobe_probe_events_total{probe=\"sched_migrate_task\"}",
        ),
        // Moves to another CPU (the events with orig_cpu != dest_cpu).
        (
            "sched:sched_migrate_task",
            "hostprobe_sched_host_migrations_total",
        ),
        // perf's software event, emitted at switch-in when the task moved
        // since it last ran (once however often it moved).
        (
            "cpu-migrations",
            "hostprobe_sched_host_migrated_switch_ins_total",
        ),
    ];
    // hostprobe's count over perf's exact window lies in [inner, outer]; the
    // check has teeth only when that bracket is narrow, so a window in which
    // the machine stalled a scrape or perf for long is measured again.
    let narrow = |w: &Window| {
        pairs.iter().all(|(event, metric)| {
            let (inner, outer) = w.bracket(metric);
            (outer - inner) / w.perf(event) <= 0.10
        })
    };
    let mut attempt = 0;
    let w = loop {
        attempt += 1;
        let w = perf_window(&server);
        if narrow(&w) || attempt == 5 {
            break w;
        }
        eprintln!("a bracket is too wide, measuring again");
    };
    assert!(server.stop().success());
    for (event, metric) in pairs {
        let perf = w.perf(event);
        let (inner, outer) = w.bracket(metric);
        eprintln!("{metric}: perf {event} {perf}, hostprobe {inner}..{outer}");
        assert!(
            perf >= 500.0,
            "{event}: the load made too few events ({perf}) to compare"
        );
        assert!(
            (outer - inner) / perf <= 0.10,
            "{metric}: bracket {inner}..{outer} too wide to compare with {perf}"
        );
        // Within 5% of perf: some count in hostprobe's bracket is.
        assert!(
            inner <= perf * 1.05 && perf * 0.95 <= outer,
            "{metric}: perf counted {perf} {event}, hostprobe {inner}..{outer}"
        );
    }
}

/// Parses `perf lock contention` rows: (contended, total wait s, type, caller).
fn perf_lock_rows(text: &str) -> Vec<(f64, f64, String, String)> {
    let seconds = |v: &str, unit: &str| -> Option<f64> {
        let v: f64 = v.parse().ok()?;
        Some(match unit {
            "ns" => v / 1e9,
            "us" => v / 1e6,
            "ms" => v / 1e3,
            "s" => v,
            "m" => v * 60.0,
            _ => return None,
        })
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // contended, total (value unit), max (2), avg (2), type, caller
            if f.len() < 9 {
                return None;
            }
            let count: f64 = f[0].parse().ok()?;
            Some((
                count,
                seconds(f[1], f[2])?,
                f[7].to_string(),
                f[8].to_string(),
            ))
        })
        .collect()
}

/// A load that contends kernel locks of several types: unix-socket
/// messaging (spinlocks) and threads mapping and unmapping memory in one
/// address space (the mmap_lock rwsem, read and write).
fn lock_load() -> (
    KillOnDrop,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    Vec<std::thread::JoinHandle<()>>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let messaging = KillOnDrop::spawn(
        Command::new("perf")
            .args(["bench", "sched", "messaging", "-g", "4", "-l", "100000"])
            .stdout(Stdio::null()),
    );
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let threads = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: anonymous private mapping, touched then unmapped.
                    unsafe {
                        let len = 1 << 16;
                        let p = libc::mmap(
                            std::ptr::null_mut(),
                            len,
                            libc::PROT_READ | libc::PROT_WRITE,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                            -1,
                            0,
                        );
                        assert_ne!(p, libc::MAP_FAILED);
                        *(p as *mut u8) = 1;
                        libc::munmap(p, len);
                    }
                }
            })
        })
        .collect();
    (messaging, stop, threads)
}

#[test]
fn lock_contention_agrees_with_perf_lock() {
    use std::sync::atomic::Ordering;
    let _k = KernelTest::start();
    let server = Server::start_with(19490, &["chrt", "-f", "50"], &[]);
    let (messaging, stop, threads) = lock_load();
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("perf.data");
    let data_arg = data.to_str().unwrap().to_string();
    let w = perf_controlled(&server, &["lock", "record", "-a", "-o", &data_arg], |_| {});
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    drop(messaging);
    assert!(server.stop().success());
    assert!(
        !w.perf_stderr.to_lowercase().contains("lost"),
        "perf lock record lost events: {}",
        w.perf_stderr
    );
    let report = Command::new("perf")
        // perf skips 3 frames before looking for the first one outside the
        // locking code (made for stacks that start inside tracing code);
        // hostprobe's stacks start at the lock function, and on this kernel
        // the default lands 1-2 frames further out (do_syscall_64 instead of
        // vm_mmap_pgoff). With no skip, both apply the same rule.
        .args([
            "lock",
            "contention",
            "-i",
            &data_arg,
            "-E",
            "100000",
            "--stack-skip",
            "0",
        ])
        .output()
        .expect("perf lock contention");
    let text = String::from_utf8_lossy(&report.stdout).into_owned()
        + &String::from_utf8_lossy(&report.stderr);
    let rows = perf_lock_rows(&text);
    assert!(
        !rows.is_empty(),
        "perf lock contention printed no rows: {text}"
    );

    // Contentions per type.
    let mut perf_types: BTreeMap<String, f64> = BTreeMap::new();
    for (count, _, ty, _) in &rows {
        *perf_types.entry(ty.clone()).or_default() += count;
    }
    for (ty, &perf) in &perf_types {
        let metric = format!("hostprobe_lock_contentions_total{{type=\"{ty}\"}}");
        let (inner, outer) = w.bracket(&metric);
        eprintln!("{ty}: perf lock {perf}, hostprobe {inner}..{outer}");
        if perf < 200.0 {
            continue; // too few to compare in percent
        }
        assert!(
            inner <= perf * 1.10 && perf * 0.90 <= outer,
            "{ty}: perf lock counted {perf} contentions, hostprobe {inner}..{outer}"
        );
    }
    assert!(
        perf_types.values().filter(|&&n| n >= 200.0).count() >= 1,
        "no lock type with enough contentions: {perf_types:?}"
    );

    // Top caller by total wait, callers aggregated by function.
    let mut perf_callers: BTreeMap<String, f64> = BTreeMap::new();
    for (_, wait, _, caller) in &rows {
        let function = caller.split('+').next().unwrap_or(caller).to_string();
        *perf_callers.entry(function).or_default() += wait;
    }
    let mut perf_rank: Vec<(&String, &f64)> = perf_callers.iter().collect();
    perf_rank.sort_by(|a, b| b.1.total_cmp(a.1));
    let ours = caller_waits(&w);
    let our_top = ours.first().map(|(c, _)| c.clone()).unwrap_or_default();
    eprintln!(
        "top callers: perf {:?}, hostprobe {:?}",
        &perf_rank[..perf_rank.len().min(3)],
        &ours[..ours.len().min(3)]
    );
    // Callers within 10% of perf's top are a tie: either may lead.
    let top_wait = *perf_rank[0].1;
    let ties: Vec<&String> = perf_rank
        .iter()
        .take_while(|(_, w)| **w >= top_wait * 0.9)
        .map(|(c, _)| *c)
        .collect();
    assert!(
        ties.contains(&&our_top),
        "hostprobe's top caller {our_top} is not perf's {ties:?}"
    );
}

#[test]
fn lock_type_filter_applies_in_the_kernel() {
    use std::sync::atomic::Ordering;
    let _k = KernelTest::start();
    let diag = start_diagnose(&["--duration", "3s", "--lock-type", "rwsem:W"]);
    let (messaging, stop, threads) = lock_load();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    drop(messaging);
    let s = finish(diag);
    let types: Vec<&str> = s["lock"]["by_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["lock_type"].as_str().unwrap())
        .collect();
    // The load contends spinlocks thousands of times a second; none pass.
    assert_eq!(types, ["rwsem:W"], "{}", s["lock"]);
    let callers = s["lock"]["callers"].as_array().unwrap();
    assert!(callers.iter().all(|c| c["lock_type"] == "rwsem:W"));
    assert!(
        callers
            .iter()
            .any(|c| c["caller"].as_str().unwrap().contains("munmap")),
        "{callers:?}"
    );
}

/// hostprobe's wait per calling function over the outer window, most first.
fn caller_waits(w: &Window) -> Vec<(String, f64)> {
    let parse = |body: &str| -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for l in body
            .lines()
            .filter(|l| l.starts_with("hostprobe_lock_wait_seconds_total{"))
        {
            let Some(caller) = l
                .split("caller=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            else {
                continue;
            };
            let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            *m.entry(caller.to_string()).or_default() += v;
        }
        m
    };
    let (start, end) = (parse(&w.outer), parse(&w.outer_end));
    let mut v: Vec<(String, f64)> = end
        .iter()
        .filter(|(c, _)| c.as_str() != "other")
        .map(|(c, e)| (c.clone(), e - start.get(c).copied().unwrap_or(0.0)))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

#[test]
fn bad_input_gets_clear_errors_and_exit_codes() {
    let _k = KernelTest::start();
    let dead = hostprobe(&["diagnose", "--pid", "4194304", "--duration", "1s"]);
    assert_eq!(dead.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dead.stderr).contains("no process with pid 4194304"));

    let no_cgroup = hostprobe(&[
        "diagnose",
        "--cgroup",
        "/no/such/cgroup",
        "--duration",
        "1s",
    ]);
    assert_eq!(no_cgroup.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&no_cgroup.stderr).contains("cgroup \"/no/such/cgroup\" not found")
    );

    let bad_duration = hostprobe(&["diagnose", "--duration", "ten seconds"]);
    assert_eq!(bad_duration.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_duration.stderr).contains("--duration"));

    let bad_addr = hostprobe(&["serve", "--listen", "localhost"]);
    assert_eq!(bad_addr.status.code(), Some(2));

    // A taken port fails before anything is loaded.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let busy = hostprobe(&["serve", "--listen", &addr]);
    let err = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {addr}")) && !err.contains("probe ready"),
        "{err}"
    );

    let zero = hostprobe(&["serve", "--interval", "0s"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("greater than zero"));

    // A thread id is not a process: the kernel filters on the process id.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let _ = done_rx.recv();
    });
    let tid = tid_rx.recv().unwrap().to_string();
    let me = std::process::id().to_string();
    let out = hostprobe(&["diagnose", "--pid", &tid, "--duration", "1s"]);
    drop(done_tx);
    thread.join().unwrap();
    let thread = out;
    let err = String::from_utf8_lossy(&thread.stderr);
    assert_eq!(thread.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("is a thread of process {me}")),
        "{err}"
    );

    // Without privileges: one clear line naming the capabilities, exit 2.
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                BIN,
            ])
            .args(args)
            .output()
            .expect("setpriv (util-linux)")
    };
    let unprivileged = as_nobody(&["diagnose", "--duration", "1s"]);
    let err = String::from_utf8_lossy(&unprivileged.stderr);
    assert_eq!(unprivileged.status.code(), Some(2), "{err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "{err}"
    );
    let check = as_nobody(&["check"]);
    assert_eq!(
        check.status.code(),
        Some(1),
        "check without privileges must fail"
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("privileges  FAIL"));
}

const PAGE: usize = 4096;

/// Anonymous memory outside THP (one fault per 4 KiB page), unmapped on drop.
struct Anon {
    ptr: *mut u8,
    len: usize,
}

impl Anon {
    fn new(pages: usize) -> Self {
        let len = pages * PAGE;
        // SAFETY: a fresh private anonymous mapping; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        // SAFETY: the mapping just created.
        assert_eq!(unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) }, 0);
        Self {
            ptr: ptr.cast(),
            len,
        }
    }

    fn page(&self, i: usize) -> *mut u8 {
        assert!(i * PAGE < self.len);
        self.ptr.wrapping_add(i * PAGE)
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn dirty_sum(s: &Value, field: &str) -> u64 {
    s["dirty"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[field].as_u64().unwrap())
        .sum()
}

#[test]
fn dirty_probes_count_exactly_the_pages_the_test_dirties() {
    let _k = KernelTest::start();
    const FILE_BYTES: usize = 8 << 20;
    const PAGES: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let me = std::process::id().to_string();
    // Allocated (and faulted in) before the window opens.
    let data = vec![7u8; FILE_BYTES];
    let diag = start_diagnose(&[
        "--duration",
        "3s",
        "--pid",
        &me,
        "--no-vm-readiness",
        "--readiness-windows",
        "1s",
    ]);
    // A new file: every folio goes from clean to dirty once.
    let mut f = std::fs::File::create(dir.path().join("dirtied")).unwrap();
    f.write_all(&data).unwrap();
    // Write faults on unmapped pages: one per page.
    let fresh = Anon::new(PAGES);
    for i in 0..PAGES {
        // SAFETY: inside the mapping.
        unsafe { fresh.page(i).write_volatile(1) };
    }
    // Read first (maps the shared zero page, read-only), then write: one
    // fault per page on a present, write-protected page.
    let cow = Anon::new(PAGES);
    for i in 0..PAGES {
        // SAFETY: inside the mapping.
        unsafe {
            std::hint::black_box(cow.page(i).read_volatile());
            cow.page(i).write_volatile(1);
        }
    }
    let s = finish(diag);
    drop(f);
    let bytes = dirty_sum(&s, "file_dirtied_bytes");
    assert!(
        (FILE_BYTES as u64..FILE_BYTES as u64 + 64 * 1024).contains(&bytes),
        "wrote {FILE_BYTES} bytes to a new file, hostprobe saw {bytes} dirtied: {}",
        s["dirty"]
    );
    let new = dirty_sum(&s, "write_faults_new");
    let present = dirty_sum(&s, "write_faults_present");
    eprintln!(
        "file: wrote {FILE_BYTES}, saw {bytes} bytes in {} folios; new-page faults {new}, \
         present-page faults {present} (set {PAGES} each)",
        dirty_sum(&s, "file_dirtied_folios")
    );
    // The rest of this process (the harness, pipes to hostprobe) faults a
    // little too.
    assert!(
        (PAGES as u64..PAGES as u64 + 256).contains(&new),
        "touched {PAGES} new pages, hostprobe saw {new} write faults on unmapped pages"
    );
    assert!(
        (PAGES as u64..PAGES as u64 + 64).contains(&present),
        "wrote {PAGES} zero-page-mapped pages, hostprobe saw {present} write faults on present pages"
    );
    let devices = s["dirty"]["devices"].as_array().unwrap();
    assert!(
        devices
            .iter()
            .any(|d| d["file_dirtied_bytes"].as_u64() >= Some(FILE_BYTES as u64)),
        "no device holds the file's dirtied bytes: {devices:?}"
    );
}

/// Low global dirty limits for one test, so that a plain `dd` gets
/// throttled; the previous settings come back on drop.
struct LowDirtyLimits(Vec<(&'static str, String)>);

impl LowDirtyLimits {
    const VM: &'static str = "/proc/sys/vm/";

    fn set() -> Self {
        let read = |k: &str| std::fs::read_to_string(format!("{}{k}", Self::VM)).unwrap();
        // Writing a *_bytes knob zeroes its *_ratio twin and vice versa:
        // restore whichever was in force.
        let pick = |bytes: &'static str, ratio: &'static str| {
            let b = read(bytes);
            if b.trim() != "0" {
                (bytes, b)
            } else {
                (ratio, read(ratio))
            }
        };
        let saved = vec![
            pick("dirty_bytes", "dirty_ratio"),
            pick("dirty_background_bytes", "dirty_background_ratio"),
        ];
        for (k, v) in [
            ("dirty_bytes", "4194304"),
            ("dirty_background_bytes", "2097152"),
        ] {
            std::fs::write(format!("{}{k}", Self::VM), v).unwrap();
        }
        Self(saved)
    }
}

impl Drop for LowDirtyLimits {
    fn drop(&mut self) {
        for (k, v) in &self.0 {
            let _ = std::fs::write(format!("{}{k}", Self::VM), v.trim());
        }
    }
}

/// `mm_page_alloc` counts exactly the pages the test allocates when asked
/// to attach (on this one-node host they are all local), and
/// `--numa-page-alloc never` leaves it detached with the reason while the
/// rest goes on.
#[test]
fn numa_page_alloc_counts_the_pages_the_test_allocates_and_can_be_turned_off() {
    let _k = KernelTest::start();
    const PAGES: usize = 4096;
    let me = std::process::id().to_string();
    let window = |mode: &str| {
        let diag = start_diagnose(&[
            "--duration",
            "2s",
            "--pid",
            &me,
            "--no-vm-readiness",
            "--numa-page-alloc",
            mode,
        ]);
        let fresh = Anon::new(PAGES);
        for i in 0..PAGES {
            // SAFETY: inside the mapping.
            unsafe { fresh.page(i).write_volatile(1) };
        }
        let s = finish(diag);
        let probe = s["probes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["probe"] == "mm_page_alloc")
            .cloned()
            .expect("mm_page_alloc in the probe list");
        let sum = |field: &str| -> u64 {
            s["numa"]["workloads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w[field].as_u64().unwrap())
                .sum()
        };
        (probe, sum("local_pages"), sum("remote_pages"), s)
    };

    let (probe, local, remote, s) = window("always");
    assert_eq!(probe["attached"], true, "{probe}");
    eprintln!("touched {PAGES} new pages: mm_page_alloc saw {local} local, {remote} remote");
    // Page tables for the mapping and the harness's own allocations come on top.
    assert!(
        (PAGES as u64..PAGES as u64 + 512).contains(&(local + remote)),
        "touched {PAGES} new pages, hostprobe saw {local} local + {remote} remote allocations"
    );
    if s["topology"]["nodes"] == 1 {
        assert_eq!(remote, 0, "one node: nothing can be remote");
    }

    let (probe, local, remote, s) = window("never");
    assert_eq!(probe["attached"], false, "{probe}");
    assert!(
        probe["reason"]
            .as_str()
            .is_some_and(|r| r.contains("--numa-page-alloc never")),
        "{probe}"
    );
    assert_eq!(local + remote, 0);
    assert!(
        s["probes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["probe"] != "mm_page_alloc")
            .all(|p| p["attached"] == true),
        "turning mm_page_alloc off must leave the others: {}",
        s["probes"]
    );
}

#[test]
fn dirty_throttling_agrees_with_perf() {
    let _k = KernelTest::start();
    let dir = tempfile::tempdir().unwrap();
    let diag = start_diagnose(&["--duration", "6s", "--no-vm-readiness"]);
    let perf = {
        let _limits = LowDirtyLimits::set();
        Command::new("perf")
            .args(["stat", "-x,", "-e", "writeback:balance_dirty_pages"])
            .args(["--filter", "pause > 0", "--", "dd", "if=/dev/zero"])
            .arg(format!("of={}", dir.path().join("f").display()))
            .args(["bs=1M", "count=256"])
            .output()
            .expect("perf (cargo xtask setup installs linux-perf)")
    };
    let s = finish(diag);
    let stderr = String::from_utf8_lossy(&perf.stderr);
    let perf_pauses: u64 = stderr
        .lines()
        .find(|l| l.contains("writeback:balance_dirty_pages"))
        .and_then(|l| l.split(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no perf count in: {stderr}"));
    let ours = dirty_sum(&s, "throttle_pauses");
    let seconds: f64 = s["dirty"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["throttle_seconds"].as_f64().unwrap())
        .sum();
    eprintln!("throttle pauses: perf {perf_pauses}, hostprobe {ours} ({seconds:.3} s)");
    assert!(perf_pauses > 0, "dd was not throttled: {stderr}");
    // Other writers on the host may be throttled too, never fewer.
    assert!(
        ours >= perf_pauses && ours <= perf_pauses + perf_pauses / 20 + 2,
        "perf counted {perf_pauses} throttling pauses of dd, hostprobe {ours}"
    );
    assert!(seconds > 0.0);
}

#[test]
fn diagnose_assesses_the_readiness_of_the_top_dirtying_cgroup() {
    let _k = KernelTest::start();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = hostprobe::host::proc::cgroup2_mount(&mountinfo).expect("cgroup v2 mounted");
    let name = format!("hostprobe-dirtier-{}", std::process::id());
    let dir: PathBuf = root.join(&name);
    std::fs::create_dir(&dir).expect("create test cgroup");
    let files = tempfile::tempdir().unwrap();
    // A shell appending to a file without end: file pages dirtied all along.
    let writer = KillOnDrop::spawn(
        Command::new("sh")
            .arg("-c")
            .arg("sleep 0.5; while :; do echo 0123456789abcdef0123456789abcdef; done > \"$0\"")
            .arg(files.path().join("grows")),
    );
    std::fs::write(dir.join("cgroup.procs"), writer.0.id().to_string()).unwrap();
    let s = finish(start_diagnose(&["--duration", "3s", "--no-vm-readiness"]));
    drop(writer);
    std::fs::remove_dir(&dir).expect("remove test cgroup");
    let path = format!("/{name}");
    let dirty = s["dirty"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"] == path.as_str())
        .unwrap_or_else(|| panic!("{path} not among the dirtying workloads: {}", s["dirty"]));
    assert!(dirty["file_dirtied_bytes"].as_u64().unwrap() > 0);
    let assessed = s["readiness"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"]["name"] == path.as_str())
        .unwrap_or_else(|| panic!("{path} not assessed: {}", s["readiness"]));
    assert_eq!(assessed["target"]["kind"], "cgroup");
    assert!(assessed["prediction"]["converges"].is_boolean());
}

/// A test cgroup under the v2 root, removed on drop (after its processes).
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(tag: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = hostprobe::host::proc::cgroup2_mount(&mountinfo).expect("cgroup v2 mounted");
        let dir = root.join(format!("hostprobe-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("create test cgroup");
        Self(dir)
    }

    fn path(&self) -> String {
        format!("/{}", self.0.file_name().unwrap().to_string_lossy())
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Builds a C helper from `agent/tests/helpers/` into `dir`.
fn helper(name: &str, dir: &std::path::Path) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/helpers/{name}.c"));
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc (cargo xtask setup installs it)");
    assert!(status.success(), "building {name}");
    out
}

/// Pins the threads of `pid` to CPUs `first`, `first + 1`, ... (mod 2),
/// so that two threads run side by side.
fn pin_threads(pid: u32, first: usize) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for (n, t) in tasks.flatten().enumerate() {
        let cpu = (first + n) % 2;
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: plain syscall on a zeroed, correctly sized cpu_set_t.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

#[test]
fn a_pinned_workload_scores_high_and_a_bouncing_one_gets_a_recommendation() {
    assert!(two_cpus(), "this test needs two CPUs");
    let _k = KernelTest::start();
    let bin = tempfile::tempdir().unwrap();
    let contend = helper("mmap_contend", bin.path());
    let pinned_cg = TestCgroup::new("pinned");
    let bouncing_cg = TestCgroup::new("bouncing");
    // Pinned: two processes ping-ponging through a pipe on CPU 1 only (many
    // switch-ins, all on the CPU the task last ran on; no forks).
    let pinned = KillOnDrop::spawn(
        Command::new("taskset")
            .args([
                "-c",
                "1",
                "sh",
                "-c",
                "sleep 0.3; exec perf bench sched pipe -l 1000000000",
            ])
            .stdout(Stdio::null()),
    );
    pinned_cg.add(pinned.0.id());
    // Bouncing and lock-heavy: two threads contending for their mmap_lock
    // side by side, swapped between the CPUs every millisecond.
    let bouncing = KillOnDrop::spawn(&mut Command::new(&contend));
    bouncing_cg.add(bouncing.0.id());
    let diag = start_diagnose(&["--duration", "5s", "--no-vm-readiness"]);
    for i in 0..3000 {
        pin_threads(bouncing.0.id(), i % 2);
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = finish(diag);
    drop(pinned);
    drop(bouncing);
    let find = |path: &str| {
        s["affinity"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["workload"] == path)
            .unwrap_or_else(|| panic!("{path} not scored: {}", s["affinity"]))
            .clone()
    };
    let p = find(&pinned_cg.path());
    let b = find(&bouncing_cg.path());
    let waited = s["lock"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == bouncing_cg.path().as_str())
        .map_or(0.0, |w| w["wait_seconds"].as_f64().unwrap());
    eprintln!("pinned: {p}\nbouncing: {b}\nbouncing lock wait: {waited:.3} s");
    assert!(waited > 0.0, "the bouncing workload waited on no lock");
    assert!(p["score"].as_f64().unwrap() >= 0.9, "pinned: {p}");
    assert!(p["recommendation"].is_null(), "pinned: {p}");
    assert!(b["score"].as_f64().unwrap() <= 0.7, "bouncing: {b}");
    let r = &b["recommendation"];
    assert!(r.is_object(), "bouncing gets a recommendation: {b}");
    assert!(r["command"]
        .as_str()
        .unwrap()
        .contains(&format!("/sys/fs/cgroup{}/cpuset.cpus", bouncing_cg.path())));
    let text = render_diagnose_summary(&s);
    assert!(text.is_empty() || text.contains("keep"), "{text}");
}

/// The recommendation texts of the snapshot, as diagnose's summary lists them.
fn render_diagnose_summary(s: &Value) -> String {
    s["affinity"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["recommendation"]["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `hostprobe_*` metric names used in a rules or dashboard file (histogram
/// series suffixes folded to their family where the family has them).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("hostprobe_") {
        // Recorded series (`workload:hostprobe_...:rate5m`) are not ours.
        let recorded = i > 0 && rest.as_bytes()[i - 1] == b':';
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !recorded && !tail[end..].starts_with(':') {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn rules_pass_promtool_and_use_only_metrics_serve_exposes() {
    let _k = KernelTest::start();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    for args in [
        vec!["check", "rules", "rules.yml"],
        vec!["test", "rules", "rules_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool (cargo xtask setup installs the prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut used = metric_names(&std::fs::read_to_string(dir.join("rules.yml")).unwrap());
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "json") {
            used.extend(metric_names(
                &std::fs::read_to_string(entry.path()).unwrap(),
            ));
        }
    }
    assert!(used.len() >= 5, "{used:?}");
    // A scrape with every kind of series present: a readiness target, lock
    // contention, a migrating spinner.
    let me = std::process::id().to_string();
    let server = Server::start_with(
        19491,
        &[],
        &[
            "--readiness-pid",
            &me,
            "--readiness-windows",
            "200ms",
            "--readiness-interval",
            "1s",
            "--numa-page-alloc",
            "always",
        ],
    );
    let (messaging, stop, threads) = lock_load();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    drop(messaging);
    // A workload bouncing between CPUs (now idle enough to take a
    // recommendation), for the recommendation series.
    let cg = TestCgroup::new("rules");
    let spinner = Spinner::start();
    cg.add(spinner.pid());
    for i in 0..750 {
        spinner.set_cpu(i % 2);
        std::thread::sleep(Duration::from_millis(4));
    }
    let (_, body) = server.get("/metrics").unwrap();
    spinner.stop();
    let exposed: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !exposed.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "used by dashboards/rules but not exposed: {missing:?}"
    );
    assert!(server.stop().success());
}

#[test]
fn a_real_prometheus_scrapes_serve() {
    let _k = KernelTest::start();
    let server = Server::start_with(19492, &[], &["--no-vm-readiness"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hostprobe\n    static_configs:\n      - targets: ['127.0.0.1:19492']\n",
    )
    .unwrap();
    let _prometheus = KillOnDrop::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .args(["--web.listen-address=127.0.0.1:19493", "--log.level=warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let query = |q: &str| -> Option<Value> {
        let mut s = TcpStream::connect("127.0.0.1:19493").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /api/v1/query?query={q} HTTP/1.0\r\nHost: localhost\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        if let Some(v) = query("hostprobe_build_info") {
            if v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never stored a hostprobe sample"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(result["status"], "success");
    let sample = &result["data"]["result"][0];
    assert_eq!(sample["metric"]["job"], "hostprobe");
    assert_eq!(sample["value"][1], "1");
    assert!(server.stop().success());
}
