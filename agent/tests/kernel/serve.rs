//! `serve` and the outputs: metrics that promtool accepts, the documented
//! JSON fields, rules and dashboards that use only exposed metrics, and a
//! real Prometheus scraping it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use serde_json::Value;

use super::common::*;

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
    has(
        busiest,
        &[
            "runqueue_latency",
            "oncpu_seconds",
            "preemptions",
            "voluntary_switches",
            "slices",
            "gang",
        ],
        "workload",
    );
    has(
        &s["sched"],
        &["neighbours", "neighbour_attribution", "vms"],
        "sched",
    );
    has(
        &s["sched"]["neighbours"],
        &["pairs", "victims"],
        "neighbours",
    );
    let pair = &s["sched"]["neighbours"]["pairs"][0];
    has(
        pair,
        &[
            "workload",
            "neighbour",
            "wait_seconds",
            "waits",
            "share_of_wait",
        ],
        "neighbour pair",
    );
    assert!(s["lock"]["owners"].is_array(), "lock.owners");
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
    // contention, a migrating spinner, and a VM's vCPU threads (a process
    // named like QEMU with threads named like its vCPUs, found at start).
    let bin = tempfile::tempdir().unwrap();
    let qemu = bin.path().join("qemu-system-x86_64");
    std::fs::rename(helper("spin_threads", bin.path()), &qemu).unwrap();
    let vm = KillOnDrop::spawn(
        Command::new(&qemu)
            .args(["2", "0", "1"])
            .stdout(std::process::Stdio::null()),
    );
    // Waits on a lock whose owner the lock names (an inode's rwsem).
    let writers = KillOnDrop::spawn(&mut Command::new(helper("inode_writers", bin.path())));
    std::thread::sleep(Duration::from_millis(200));
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
    drop(vm);
    drop(writers);
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

/// Series present in both scrapes whose counter went down.
fn decreased(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<String> {
    before
        .iter()
        .filter(|(k, _)| k.contains("_total{") || k.contains("_bucket{") || k.contains("_count"))
        .filter_map(|(k, v)| {
            let now = after.get(k)?;
            (now < v).then(|| format!("{k}: {v} -> {now}"))
        })
        .collect()
}

/// Scrapes read fresh counters but never move the top-K labels: a busy new
/// workload stays in `other` however often `serve` is scraped until a
/// round (every `--interval`) labels it, as it does at once where rounds
/// run; and no counter goes down, also across label changes.
#[test]
fn scrapes_do_not_move_labels_and_counters_never_go_down() {
    let _k = KernelTest::start();
    // Rounds only at start (1 h apart), and every 200 ms.
    let quiet = Server::start_with(19461, &[], &["--interval", "1h", "--top-k", "1"]);
    let active = Server::start_with(19462, &[], &["--interval", "200ms", "--top-k", "1"]);
    let cg = TestCgroup::new("scrapes");
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec perf bench sched pipe -l 100000000",
        cg.0.display()
    );
    let load = KillOnDrop::spawn(
        Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let label = format!("workload=\"{}\"", cg.path());
    let (mut last_quiet, mut last_active) = (BTreeMap::new(), BTreeMap::new());
    let mut labelled_active = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        let q = samples(&quiet.get("/metrics").expect("scrape").1);
        let a = samples(&active.get("/metrics").expect("scrape").1);
        assert!(
            !q.keys().any(|k| k.contains(&label)),
            "a scrape labelled {}: {:?}",
            cg.path(),
            q.keys()
                .filter(|k| k.contains(&label))
                .take(3)
                .collect::<Vec<_>>()
        );
        labelled_active |= a.keys().any(|k| k.contains(&label));
        for (name, (before, after)) in
            [("quiet", (&last_quiet, &q)), ("active", (&last_active, &a))]
        {
            let down = decreased(before, after);
            assert!(down.is_empty(), "{name}: counters went down: {down:?}");
        }
        (last_quiet, last_active) = (q, a);
    }
    assert!(
        labelled_active,
        "rounds every 200 ms never labelled the busy {}",
        cg.path()
    );
    drop(load);
    assert!(quiet.stop().success() && active.stop().success());
}

/// Cgroup churn among many idle cgroups: new cgroups are named by handle,
/// not by walking the tree, so scrapes stay fast.
#[test]
fn cgroup_churn_keeps_scrapes_fast_and_walks_no_tree() {
    let _k = KernelTest::start();
    let server = Server::start_with(19463, &[], &["--interval", "1s"]);
    let idle: Vec<TestCgroup> = (0..1500)
        .map(|i| TestCgroup::new(&format!("idle{i}")))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churned = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let cg = TestCgroup::new(&format!("churn{n}"));
                let script = format!("echo $$ > {}/cgroup.procs && exec true", cg.0.display());
                let _ = Command::new("sh").args(["-c", &script]).status();
                drop(cg);
                n += 1;
            }
            n
        })
    };
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let t0 = Instant::now();
        server.get("/metrics").expect("scrape");
        times.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let churned = churned.join().unwrap();
    times.sort();
    let p99 = times[times.len() * 99 / 100];
    let body = server.get("/metrics").unwrap().1;
    let walks = metric_sum(&body, "hostprobe_cgroup_tree_walks_total");
    eprintln!(
        "{churned} cgroups churned among {}: {} scrapes, median {:?}, p99 {p99:?}, max {:?}; tree walks {walks}",
        idle.len(),
        times.len(),
        times[times.len() / 2],
        times.last().unwrap()
    );
    assert!(churned >= 100, "only {churned} cgroups churned");
    assert!(p99 < Duration::from_millis(500), "p99 scrape {p99:?}");
    assert_eq!(walks, 0.0, "the cgroup tree was walked");
    drop(idle);
    assert!(server.stop().success());
}

/// Label values from outside (cgroup directory names) are escaped: a cgroup
/// named with a quote and a backslash scrapes clean through promtool.
#[test]
fn odd_cgroup_names_are_escaped_in_labels() {
    let _k = KernelTest::start();
    let server = Server::start_with(19464, &[], &["--top-k", "100"]);
    let cg = TestCgroup::new("we\"ird\\name");
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && exec perf bench sched pipe -l 20000",
        cg.0.display()
    );
    let status = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    let body = server.get("/metrics").unwrap().1;
    let escaped = format!(
        "workload=\"{}\"",
        cg.path().replace('\\', "\\\\").replace('"', "\\\"")
    );
    assert!(body.contains(&escaped), "no {escaped} in /metrics");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(cg);
    assert!(server.stop().success());
}
