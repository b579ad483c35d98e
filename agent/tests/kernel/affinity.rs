//! The affinity model on real placements: a pinned workload scores high, a
//! bouncing one gets a recommendation.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::common::*;

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

/// CPUs of a `0-2,5` list.
fn cpu_list(s: &str) -> Vec<u64> {
    s.trim()
        .split(',')
        .flat_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            a.parse().unwrap()..=b.parse().unwrap()
        })
        .collect()
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
    // Its placement is fine; but the bouncing threads land on its CPU half
    // the time and delay it: the one advice it may get is to keep apart.
    let apart = format!("separate {} from {}", pinned_cg.path(), bouncing_cg.path());
    assert!(
        p["recommendation"].is_null()
            || p["recommendation"]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with(&apart)),
        "pinned: {p}"
    );
    assert!(b["score"].as_f64().unwrap() <= 0.7, "bouncing: {b}");
    let r = &b["recommendation"];
    assert!(r.is_object(), "bouncing gets a recommendation: {b}");
    // The command does what it says, whichever way this host's cgroups
    // allow (cpuset in cgroup v2, or the processes' affinity).
    let command = r["command"].as_str().unwrap();
    let status = Command::new("sh")
        .args(["-c", command])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{command}");
    let want: Vec<u64> = r["cpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    let tasks = std::fs::read_dir(format!("/proc/{}/task", bouncing.0.id())).unwrap();
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        assert_eq!(cpu_list(allowed), want, "after `{command}`");
    }
    drop(bouncing);
    let text = render_diagnose_summary(&s);
    assert!(
        text.is_empty() || text.contains("keep") || text.contains("separate"),
        "{text}"
    );
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
