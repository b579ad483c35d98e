//! `hostprobe readiness` against a process whose dirtying rate the test
//! sets exactly: this test process, with a thread writing a never-repeating
//! value into a fixed number of distinct pages per second.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hostprobe");
const PAGE: usize = 4096;
const PAGES: usize = 65536; // 256 MiB
const RATE: f64 = 4000.0; // distinct pages per second

/// One dirtier at a time: the measurements see the whole test process.
static DIRTYING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes `RATE` pages per second round-robin over a 256 MiB buffer, each
/// with a new counter value (rewriting equal bytes would fool sampling).
fn dirtier(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![1u8; PAGES * PAGE];
        let start = Instant::now();
        let mut written: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let due = (start.elapsed().as_secs_f64() * RATE) as u64;
            while written < due {
                let page = (written as usize % PAGES) * PAGE;
                buf[page..page + 8].copy_from_slice(&written.to_le_bytes());
                written += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::hint::black_box(&buf);
    })
}

#[test]
fn the_estimate_measures_a_known_dirty_rate_within_15_percent() {
    let _one = DIRTYING.lock().unwrap_or_else(|p| p.into_inner());
    let stop = Arc::new(AtomicBool::new(false));
    let worker = dirtier(stop.clone());
    // Let the buffer be allocated and touched first.
    std::thread::sleep(Duration::from_millis(500));
    let pid = std::process::id().to_string();
    let out = Command::new(BIN)
        .args([
            "readiness",
            "--pid",
            &pid,
            "--windows",
            "1s,2s",
            "--samples-per-gib",
            "16384",
            "--json",
        ])
        .output()
        .expect("run hostprobe readiness");
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(r["method"]["method"], "content sampling (estimate)");
    for d in r["dirty"].as_array().unwrap() {
        let w = d["window_seconds"].as_f64().unwrap();
        let pages_per_s = d["dirty_bytes"].as_f64().unwrap() / PAGE as f64 / w;
        eprintln!("window {w:.2} s: {pages_per_s:.0} pages/s (set: {RATE})");
        assert!(
            (pages_per_s - RATE).abs() / RATE <= 0.15,
            "measured {pages_per_s:.0} pages/s in {w:.2} s, set {RATE}"
        );
    }
    assert!(r["memory_bytes"].as_f64().unwrap() >= (PAGES * PAGE) as f64);
    assert!(r["prediction"]["converges"].is_boolean());
}

#[test]
fn the_exact_path_measures_the_known_rate_and_runs_once_per_interval() {
    let _one = DIRTYING.lock().unwrap_or_else(|p| p.into_inner());
    let stop = Arc::new(AtomicBool::new(false));
    let worker = dirtier(stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let pid = std::process::id().to_string();
    let state = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(BIN)
            .args(["readiness", "--pid", &pid, "--exact", "--json"])
            .args(["--windows", "1s,2s", "--exact-state-dir"])
            .arg(state.path())
            .output()
            .expect("run hostprobe readiness --exact")
    };
    let out = run();
    let again = run();
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let method = r["method"]["method"].as_str().unwrap();
    assert!(method.ends_with("(exact)"), "{method}");
    for d in r["dirty"].as_array().unwrap() {
        let w = d["window_seconds"].as_f64().unwrap();
        let pages_per_s = d["dirty_bytes"].as_f64().unwrap() / PAGE as f64 / w;
        eprintln!("exact, window {w:.2} s: {pages_per_s:.0} pages/s (set: {RATE})");
        // The rest of this process dirties a little too.
        assert!(
            (pages_per_s - RATE).abs() / RATE <= 0.05,
            "measured {pages_per_s:.0} pages/s in {w:.2} s, set {RATE}"
        );
    }
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("--exact-min-interval"), "{err}");
}

#[test]
fn a_dead_pid_gets_a_clear_error() {
    let out = Command::new(BIN)
        .args(["readiness", "--pid", "4194304"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no process with pid 4194304"));
}

#[test]
fn a_cgroup_target_measures_all_its_processes() {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = hostprobe::host::proc::cgroup2_mount(&mountinfo).expect("cgroup v2 mounted");
    let name = format!("hostprobe-readiness-{}", std::process::id());
    let dir = root.join(&name);
    std::fs::create_dir(&dir).expect("create test cgroup");
    let mut sleepers: Vec<std::process::Child> = (0..2)
        .map(|_| Command::new("sleep").arg("30").spawn().unwrap())
        .collect();
    for s in &sleepers {
        std::fs::write(dir.join("cgroup.procs"), s.id().to_string()).unwrap();
    }
    let out = Command::new(BIN)
        .args(["readiness", "--cgroup", &format!("/{name}"), "--json"])
        .args(["--windows", "200ms"])
        .output()
        .unwrap();
    let mut pids: Vec<u64> = sleepers.iter().map(|s| u64::from(s.id())).collect();
    for s in &mut sleepers {
        s.kill().unwrap();
        s.wait().unwrap();
    }
    std::fs::remove_dir(&dir).expect("remove test cgroup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["target"]["kind"], "cgroup");
    let mut seen: Vec<u64> = r["target"]["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    pids.sort_unstable();
    seen.sort_unstable();
    assert_eq!(seen, pids);
    assert_eq!(r["memory_method"], "resident");
    assert!(r["memory_bytes"].as_f64().unwrap() > 0.0);
    // Two idle sleeps dirty next to nothing.
    assert!(r["dirty"][0]["dirty_bytes"].as_f64().unwrap() < 1e6);
}

#[test]
fn unknown_targets_get_clear_errors() {
    for (args, needle) in [
        (
            vec!["--vm", "no-such-vm-here"],
            "no QEMU VM named \"no-such-vm-here\"",
        ),
        (vec!["--cgroup", "/no/such/cgroup"], "not found"),
    ] {
        let out = Command::new(BIN)
            .arg("readiness")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// A cgroup target measured while one of its processes exits: the estimate
/// and the exact path both finish on the ones left, and a process that
/// exited is not counted as dirty memory.
#[test]
fn a_cgroup_target_survives_one_of_its_processes_exiting() {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = hostprobe::host::proc::cgroup2_mount(&mountinfo).expect("cgroup v2 mounted");
    let name = format!("hostprobe-exiting-{}", std::process::id());
    let dir = root.join(&name);
    std::fs::create_dir(&dir).expect("create test cgroup");
    let state = tempfile::tempdir().unwrap();
    for extra in [&[][..], &["--exact", "--exact-state-dir"][..]] {
        let mut stays = Command::new("sleep").arg("30").spawn().unwrap();
        // A process with memory of its own that exits mid-window.
        let mut leaves = Command::new("python3")
            .args([
                "-c",
                "b = bytearray(64 << 20)\nimport time; time.sleep(0.6)",
            ])
            .spawn()
            .unwrap();
        for c in [&stays, &leaves] {
            std::fs::write(dir.join("cgroup.procs"), c.id().to_string()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut cmd = Command::new(BIN);
        cmd.args(["readiness", "--cgroup", &format!("/{name}"), "--json"])
            .args(["--windows", "1s"])
            .args(extra);
        if !extra.is_empty() {
            cmd.arg(state.path());
        }
        let out = cmd.output().unwrap();
        leaves.wait().unwrap();
        stays.kill().unwrap();
        stays.wait().unwrap();
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        let dirty = r["dirty"][0]["dirty_bytes"].as_f64().unwrap();
        assert!(dirty < 8e6, "{extra:?}: {dirty} bytes dirty");
    }
    std::fs::remove_dir(&dir).expect("remove test cgroup");
}
