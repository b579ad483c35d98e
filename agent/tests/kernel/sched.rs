//! The scheduler signal: migrations counted exactly (a spinner moved a
//! known number of times), by pid and by cgroup, and host-wide against
//! `perf stat`; a full workload table is counted and logged.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::common::*;

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

/// What the kernel keeps about one task: `/proc/PID/schedstat` (on-CPU ns,
/// run-queue wait ns, slices run) and the switch counters of
/// `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default)]
struct TaskCounters {
    oncpu_ns: f64,
    wait_ns: f64,
    slices: f64,
    voluntary: f64,
    involuntary: f64,
}

impl TaskCounters {
    fn read(pid: u32) -> Self {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
        let f: Vec<f64> = stat
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap()
        };
        Self {
            oncpu_ns: f[0],
            wait_ns: f[1],
            slices: f[2],
            voluntary: field("voluntary_ctxt_switches:"),
            involuntary: field("nonvoluntary_ctxt_switches:"),
        }
    }

    fn since(&self, e: &Self) -> Self {
        Self {
            oncpu_ns: self.oncpu_ns - e.oncpu_ns,
            wait_ns: self.wait_ns - e.wait_ns,
            slices: self.slices - e.slices,
            voluntary: self.voluntary - e.voluntary,
            involuntary: self.involuntary - e.involuntary,
        }
    }
}

/// hostprobe's series of one workload, from a scrape.
fn workload_series(body: &str, workload: &str) -> TaskCounters {
    let s = samples(body);
    let get = |series: String| s.get(&series).copied().unwrap_or(0.0);
    let w = format!("workload=\"{workload}\"");
    TaskCounters {
        oncpu_ns: get(format!("hostprobe_sched_oncpu_seconds_total{{{w}}}")) * 1e9,
        wait_ns: get(format!("hostprobe_runqueue_latency_seconds_sum{{{w}}}")) * 1e9,
        slices: get(format!("hostprobe_sched_slice_seconds_count{{{w}}}")),
        voluntary: get(format!(
            "hostprobe_sched_context_switches_total{{{w},type=\"voluntary\"}}"
        )),
        involuntary: get(format!(
            "hostprobe_sched_context_switches_total{{{w},type=\"involuntary\"}}"
        )),
    }
}

fn charged(body: &str, workload: &str, neighbour: &str) -> f64 {
    samples(body)
        .get(&format!(
            "hostprobe_runqueue_wait_by_neighbour_seconds_total{{workload=\"{workload}\",neighbour=\"{neighbour}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
}

/// One measured stretch: per workload (one process each), the kernel's
/// counters and hostprobe's over the same window, and the waits charged to
/// a neighbour.
struct Stretch {
    kernel: Vec<TaskCounters>,
    hostprobe: Vec<TaskCounters>,
    charged: Vec<f64>,
}

/// Measures `secs` of `tasks` (pid, workload); `charges` are (victim,
/// neighbour) workload pairs.
fn stretch(server: &Server, tasks: &[(u32, &str)], charges: &[(&str, &str)], secs: u64) -> Stretch {
    let scrape = || server.get("/metrics").unwrap().1;
    let read = || {
        tasks
            .iter()
            .map(|(p, _)| TaskCounters::read(*p))
            .collect::<Vec<_>>()
    };
    // Scrape, then read the kernel's counters at once, at both ends: the
    // two windows are offset by the same few milliseconds.
    let (b0, k0) = (scrape(), read());
    std::thread::sleep(Duration::from_secs(secs));
    let (b1, k1) = (scrape(), read());
    Stretch {
        kernel: k1.iter().zip(&k0).map(|(a, b)| a.since(b)).collect(),
        hostprobe: tasks
            .iter()
            .map(|(_, w)| workload_series(&b1, w).since(&workload_series(&b0, w)))
            .collect(),
        charged: charges
            .iter()
            .map(|(v, n)| (charged(&b1, v, n) - charged(&b0, v, n)) * 1e9)
            .collect(),
    }
}

/// Within 5% of the kernel's figure, or `floor` for tiny ones.
fn agrees(what: &str, kernel: f64, ours: f64, floor: f64) {
    eprintln!("{what}: kernel {kernel:.0}, hostprobe {ours:.0}");
    assert!(
        (ours - kernel).abs() <= (0.05 * kernel).max(floor),
        "{what}: the kernel counted {kernel:.0}, hostprobe {ours:.0}"
    );
}

/// Switches and slices agree with the kernel's counts whatever the load.
/// Times agree when the switches do not follow wake-ups (`timing`): the
/// kernel timestamps waits and runs with its run-queue clock, which it
/// updates lazily (after a wake-up that preempts, `rq_clock_skip_update`
/// skips the next update, so the switch is stamped with the wake-up's
/// time), where the tracepoints (hostprobe, bpftrace, `perf sched`) see
/// the time of the switch itself. At a few microseconds per switch this
/// shifts a ping-pong's times by a quarter (printed, not compared).
fn agree_with_the_kernel(name: &str, tasks: &[(u32, &str)], st: &Stretch, timing: bool) {
    for ((_, w), (k, ours)) in tasks.iter().zip(st.kernel.iter().zip(&st.hostprobe)) {
        let what = |x: &str| format!("{name}, {w}: {x}");
        agrees(
            &what("involuntary switches"),
            k.involuntary,
            ours.involuntary,
            3.0,
        );
        agrees(
            &what("voluntary switches"),
            k.voluntary,
            ours.voluntary,
            3.0,
        );
        agrees(&what("slices"), k.slices, ours.slices, 3.0);
        let times = [
            ("run-queue wait ns", k.wait_ns, ours.wait_ns),
            ("on-CPU ns", k.oncpu_ns, ours.oncpu_ns),
        ];
        for (x, kernel, ours) in times {
            if timing {
                agrees(&what(x), kernel, ours, 1e6);
            } else {
                eprintln!("{}: schedstat {kernel:.0}, hostprobe {ours:.0}", what(x));
            }
        }
    }
}

#[test]
fn two_spinners_on_one_cpu_agree_with_schedstat_and_delay_each_other() {
    let _k = KernelTest::start();
    let (a_cg, b_cg) = (TestCgroup::new("spin-a"), TestCgroup::new("spin-b"));
    let (a, b) = (Spinner::start(), Spinner::start());
    a_cg.add(a.pid());
    b_cg.add(b.pid());
    a.move_to(0);
    b.move_to(0);
    let server = Server::start_with(19492, &[], &[]);
    let (pa, pb) = (a_cg.path(), b_cg.path());
    let tasks = [(a.pid(), pa.as_str()), (b.pid(), pb.as_str())];
    std::thread::sleep(Duration::from_millis(500));
    let st = stretch(&server, &tasks, &[(&pa, &pb), (&pb, &pa)], 4);
    assert!(server.stop().success());
    // Each runs a slice while the other waits: only tick preemptions, no
    // wake-ups, so wait and run are split the same way as the kernel does.
    agree_with_the_kernel("two spinners", &tasks, &st, true);
    for (i, k) in st.kernel.iter().enumerate() {
        assert!(
            k.involuntary >= 100.0,
            "too few preemptions to compare: {k:?}"
        );
        agrees(
            &format!("{}'s wait charged to the other", tasks[i].1),
            k.wait_ns,
            st.charged[i],
            1e6,
        );
    }
}

#[test]
fn a_noisy_neighbour_is_charged_with_the_wait_it_causes() {
    assert!(two_cpus(), "this test needs two CPUs");
    let _k = KernelTest::start();
    let bin = tempfile::tempdir().unwrap();
    let pingpong = helper("pingpong", bin.path());
    let (victim, client, hog_cg) = (
        TestCgroup::new("victim"),
        TestCgroup::new("client"),
        TestCgroup::new("hog"),
    );
    // The victim: the server end of a ping-pong on CPU 0, its client on
    // CPU 1 in a workload of its own. The hog spins on CPU 0 with it.
    let mut pp = KillOnDrop::spawn(
        Command::new(&pingpong)
            .args(["0", "1"])
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(pp.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let server_pid: u32 = line.trim().parse().unwrap();
    client.add(pp.0.id());
    victim.add(server_pid);
    let hog = Spinner::start();
    hog_cg.add(hog.pid());
    hog.move_to(0);
    let server = Server::start_with(19491, &[], &[]);
    let (v, h) = (victim.path(), hog_cg.path());
    let tasks = [(server_pid, v.as_str()), (hog.pid(), h.as_str())];
    std::thread::sleep(Duration::from_millis(500));
    let shared = stretch(&server, &tasks, &[(&v, &h)], 3);
    hog.move_to(1);
    std::thread::sleep(Duration::from_millis(200));
    let apart = stretch(&server, &tasks, &[(&v, &h)], 3);
    assert!(server.stop().success());
    drop(hog);
    drop(pp);

    agree_with_the_kernel("hog beside the victim", &tasks, &shared, false);
    agree_with_the_kernel("hog apart", &tasks, &apart, false);
    // The hog is preempted by the wake-ups of the server it delays.
    assert!(
        shared.kernel[1].involuntary > 1000.0,
        "too few preemptions of the hog to compare: {:?}",
        shared.kernel[1]
    );
    let (wait, ours) = (shared.kernel[0].wait_ns, shared.hostprobe[0].wait_ns);
    eprintln!(
        "victim's wait: schedstat {wait:.0} ns, hostprobe {ours:.0} ns, charged to the hog {:.0} ns; apart: {:.0} ns, {:.0} ns",
        shared.charged[0], apart.kernel[0].wait_ns, apart.charged[0]
    );
    assert!(
        shared.charged[0] >= 0.8 * wait && shared.charged[0] >= 0.8 * ours,
        "the hog sharing its CPU was charged {:.0} ns of the victim's wait ({wait:.0} ns by schedstat, {ours:.0} ns by hostprobe)",
        shared.charged[0]
    );
    assert!(
        apart.kernel[0].wait_ns < 0.2 * wait && apart.charged[0] < 0.02 * wait,
        "with the hog on another CPU the victim still waited {:.0} ns ({:.0} charged to the hog), against {wait:.0} ns beside it",
        apart.kernel[0].wait_ns,
        apart.charged[0]
    );
}

/// Two spinning threads of one process: pinned to one CPU they can never
/// run together (co-scheduling ratio near 0), on two CPUs they nearly
/// always can (near 1; whatever else runs takes one of the CPUs now and
/// then). Either way two are runnable all the time, so the sampled
/// time adds up to the window between two scrapes, which the test times.
#[test]
fn two_threads_on_one_cpu_never_run_together_and_on_two_always() {
    assert!(two_cpus(), "this test needs two CPUs");
    let _k = KernelTest::start();
    let bin = tempfile::tempdir().unwrap();
    let spin_threads = helper("spin_threads", bin.path());
    let cg = TestCgroup::new("gang");
    let path = cg.path();
    let server = Server::start_with(19493, &[], &[]);
    let gang = |body: &str, state: &str| {
        samples(body)
            .get(&format!(
                "hostprobe_sched_gang_seconds_total{{workload=\"{path}\",state=\"{state}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    let measure = |cpus: [&str; 2]| {
        let mut p = KillOnDrop::spawn(
            Command::new(&spin_threads)
                .args(["2", cpus[0], cpus[1]])
                .stdout(Stdio::piped()),
        );
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(p.0.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        cg.add(p.0.id());
        std::thread::sleep(Duration::from_millis(300));
        let (b0, t0) = (server.get("/metrics").unwrap().1, std::time::Instant::now());
        std::thread::sleep(Duration::from_secs(3));
        let (b1, t1) = (server.get("/metrics").unwrap().1, std::time::Instant::now());
        drop(p);
        let together = gang(&b1, "together") - gang(&b0, "together");
        let split = gang(&b1, "split") - gang(&b0, "split");
        eprintln!("threads on CPUs {cpus:?}: together {together:.2} s, split {split:.2} s");
        (together, split, (t1 - t0).as_secs_f64())
    };
    let (t1, s1, w1) = measure(["0", "0"]);
    let (t2, s2, w2) = measure(["0", "1"]);
    assert!(server.stop().success());
    for (t, s, w) in [(t1, s1, w1), (t2, s2, w2)] {
        assert!(
            (t + s - w).abs() <= 0.15 * w,
            "two threads runnable all the window ({w:.2} s): sampled {:.2} s",
            t + s
        );
    }
    assert!(
        t1 / (t1 + s1) <= 0.05,
        "on one CPU: together {t1} s, split {s1} s"
    );
    // Typically 0.92-0.96 here: the agent and anything else that runs
    // takes one of the two CPUs now and then, which is split time.
    assert!(
        t2 / (t2 + s2) >= 0.75,
        "on two CPUs: together {t2} s, split {s2} s"
    );
}
