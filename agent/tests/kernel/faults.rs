//! Faults: hostprobe killed at the worst moments leaves nothing loaded; a
//! missing tracefs or unreadable BTF disables the probes that need them
//! (with the reason, in `check`, the JSON and the log) and the rest runs;
//! bad state directories and memory-less targets get a clear error.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::*;

/// `hostprobe ARGS` in a private mount namespace after `setup` (shell).
fn in_namespace(setup: &str, args: &str) -> Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("{setup} && exec {BIN} {args}"))
        .output()
        .expect("unshare (util-linux)")
}

fn probe<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["probe"] == name)
        .unwrap_or_else(|| panic!("no probe {name}"))
}

#[test]
fn killed_mid_scrape_or_during_start_up_leaves_nothing_loaded() {
    let _k = KernelTest::start();
    let server = Server::start_with(19471, &[], &[]);
    let addr = "127.0.0.1:19471";
    let scraping = std::thread::spawn(move || {
        for _ in 0..200 {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                use std::io::{Read, Write};
                let _ = write!(s, "GET /metrics HTTP/1.0\r\n\r\n");
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.child.0.id() as i32, libc::SIGKILL) };
    drop(server);
    scraping.join().unwrap();
    assert_eq!(
        programs_after_unload(),
        Vec::<String>::new(),
        "after SIGKILL"
    );

    // SIGTERM while the programs load: seen loading once any is ours.
    let mut serve = KillOnDrop::spawn(
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:19472",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while our_loaded_programs().is_empty() {
        assert!(Instant::now() < deadline, "serve loaded nothing");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(serve.0.id() as i32, libc::SIGTERM) };
    serve.0.wait().unwrap();
    assert_eq!(
        programs_after_unload(),
        Vec::<String>::new(),
        "after SIGTERM"
    );
}

#[test]
fn without_tracefs_the_classic_tracepoints_are_disabled_and_the_rest_runs() {
    let _k = KernelTest::start();
    let setup = "umount /sys/kernel/tracing; umount -l /sys/kernel/debug 2>/dev/null; true";
    let out = in_namespace(setup, "diagnose --duration 1s --json --log-level info");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    for classic in ["balance_dirty_pages", "sched_move_numa", "mm_migrate_pages"] {
        let p = probe(&doc, classic);
        assert_eq!(p["attached"], false, "{p}");
        assert!(
            p["reason"]
                .as_str()
                .unwrap()
                .contains("tracefs is not mounted"),
            "{p}"
        );
        assert!(
            log.contains(classic) && log.contains("probe disabled"),
            "{log}"
        );
    }
    for btf in ["sched_switch", "contention_begin", "page_fault_user"] {
        assert_eq!(probe(&doc, btf)["attached"], true, "{btf}");
    }
    assert!(probe(&doc, "sched_switch")["events"].as_u64().unwrap() > 0);
}

#[test]
fn with_unreadable_btf_lock_contention_falls_back_to_classic_tracepoints() {
    let _k = KernelTest::start();
    let (load, stop, threads) = lock_load();
    let out = in_namespace(
        "mount --bind /dev/null /sys/kernel/btf/vmlinux",
        "diagnose --duration 2s --json",
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    drop(load);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let begin = probe(&doc, "contention_begin");
    assert_eq!(
        (&begin["attached"], &begin["attach_type"]),
        (&Value::Bool(true), &Value::from("tracepoint"))
    );
    let switch = probe(&doc, "sched_switch");
    assert_eq!(switch["attached"], false);
    assert!(
        switch["reason"].as_str().unwrap().contains("invalid BTF"),
        "{switch}"
    );
    let contended: u64 = doc["lock"]["by_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["contentions"].as_u64().unwrap())
        .sum();
    assert!(
        contended > 100,
        "classic fallback counted {contended} contentions"
    );
    let check = in_namespace("mount --bind /dev/null /sys/kernel/btf/vmlinux", "check");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("BTF         FAIL") && text.contains("invalid BTF"),
        "{text}"
    );
}

#[test]
fn btf_from_a_file_replaces_the_one_sysfs_does_not_show() {
    let _k = KernelTest::start();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("vmlinux.btf");
    std::fs::copy("/sys/kernel/btf/vmlinux", &copy).unwrap();
    let hide = "mount --bind /dev/null /sys/kernel/btf/vmlinux";
    let out = in_namespace(
        hide,
        &format!("diagnose --duration 1s --json --btf {}", copy.display()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in ["sched_switch", "writeback_dirty_folio", "contention_begin"] {
        let p = probe(&doc, name);
        assert_eq!(
            (&p["attached"], &p["attach_type"]),
            (&Value::Bool(true), &Value::from("tp_btf")),
            "{p}"
        );
    }
    let check = in_namespace(hide, &format!("check --btf {}", copy.display()));
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && text.contains(&format!("{} present", copy.display())),
        "{text}"
    );
    // A --btf that is not there is the user's mistake: exit 2, saying so.
    let missing = dir.path().join("missing.btf");
    let out = Command::new(BIN)
        .args(["check", "--btf", missing.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--btf") && stderr.contains("missing.btf") && stderr.contains("btfhub"),
        "{stderr}"
    );
    // A file that is not BTF: the same, saying what is wrong with it.
    let out = Command::new(BIN)
        .args(["check", "--btf", "/proc/self/status"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid BTF"), "{stderr}");
}

#[test]
fn bad_state_directories_and_memoryless_targets_get_clear_errors() {
    let _k = KernelTest::start();
    let me = std::process::id();
    let out = in_namespace(
        "mkdir -p /tmp/hostprobe-ro && mount -t tmpfs -o ro tmpfs /tmp/hostprobe-ro",
        &format!("readiness --pid {me} --exact --windows 100ms --exact-state-dir /tmp/hostprobe-ro/state"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot record the time of the exact measurement")
            && err.contains("--exact-state-dir"),
        "{err}"
    );
    // kthreadd has no memory of its own.
    let kthread = hostprobe(&["readiness", "--pid", "2"]);
    let err = String::from_utf8_lossy(&kthread.stderr);
    assert_eq!(kthread.status.code(), Some(2), "{err}");
    assert!(err.contains("no writable memory"), "{err}");
}
