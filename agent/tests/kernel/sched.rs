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
