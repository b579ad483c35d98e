//! User-space lock waits against a program that times its own
//! `pthread_mutex_lock` calls, with and without frame pointers, and the
//! pprof profile against `go tool pprof`.

use std::process::Command;

use serde_json::Value;

use super::common::*;

/// `mutex_contend` built into a fresh directory as `name` with `flag`.
fn mutex_contend(name: &str, flag: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bin = helper_built("mutex_contend", dir.path(), name, &["-O2", flag]);
    (dir, bin)
}

/// A test cgroup with a process in it (`diagnose --cgroup` wants one to
/// start), which the test moves its load into later.
fn occupied_cgroup(tag: &str) -> (TestCgroup, KillOnDrop) {
    let cgroup = TestCgroup::new(tag);
    let placeholder = KillOnDrop::spawn(Command::new("sleep").arg("30"));
    cgroup.add(placeholder.0.id());
    (cgroup, placeholder)
}

/// Runs `sh -c COMMAND` moved into `cgroup` first (before it starts any
/// thread); its stdout.
fn run_in(cgroup: &TestCgroup, command: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && {command}",
            cgroup.0.join("cgroup.procs").display()
        ))
        .output()
        .expect("run the load");
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The program's own timings (s): its threads' lock waits, and its main
/// thread's joins (the other futex sleeps it makes).
struct Own {
    lock: f64,
    join: f64,
}

/// Runs `mutex_contend` (4 threads, 3 s, 300 us holds) in its own cgroup
/// under `diagnose` for longer than it runs: returns the program's own
/// timings and hostprobe's JSON.
fn contend(binary: &std::path::Path, pprof: Option<&std::path::Path>) -> (Own, Value, TestCgroup) {
    let (cgroup, placeholder) = occupied_cgroup("ulock");
    let path = cgroup.path();
    let mut args = vec!["--cgroup", &path, "--duration", "6s"];
    let pprof_arg;
    if let Some(p) = pprof {
        pprof_arg = p.to_str().unwrap().to_string();
        args.extend(["--pprof", &pprof_arg]);
    }
    let diag = start_diagnose(&args);
    // The program moves itself into the cgroup before it starts threads.
    let text = run_in(&cgroup, &format!("exec {} 4 3 300", binary.display()));
    let field = |i: usize| -> f64 {
        text.split_whitespace()
            .nth(i)
            .and_then(|w| w.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("mutex_contend prints its waits: {text}"))
            / 1e9
    };
    let own = Own {
        lock: field(0),
        join: field(2),
    };
    let v = finish(diag);
    drop(placeholder);
    (own, v, cgroup)
}

/// The names of a stack row's frames, innermost first.
fn frame_names(row: &Value) -> Vec<&str> {
    row["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect()
}

/// The wait hostprobe puts on `function` in workload `path`.
fn function_wait(v: &Value, path: &str, function: &str) -> f64 {
    v["user_lock"]["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["workload"] == path && f["function"] == function)
        .map(|f| f["wait_seconds"].as_f64().unwrap())
        .sum()
}

fn workload<'a>(v: &'a Value, path: &str) -> &'a Value {
    v["user_lock"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"] == path)
        .unwrap_or_else(|| panic!("no user lock waits for {path}: {}", v["user_lock"]))
}

#[test]
fn user_lock_waits_agree_with_the_programs_own_timing_and_go_tool_pprof() {
    let _k = KernelTest::start();
    let (dir, bin) = mutex_contend("mutex_contend", "-fno-omit-frame-pointer");
    let profile = dir.path().join("ulock.pb.gz");
    let (own, v, cgroup) = contend(&bin, Some(&profile));
    let w = workload(&v, &cgroup.path());
    let seen = w["wait_seconds"].as_f64().unwrap();
    let locked = function_wait(&v, &cgroup.path(), "update_shared_counter");
    println!(
        "futex sleeps: program {:.3} s locking + {:.3} s joining; hostprobe {seen:.3} s in {} waits, {locked:.3} s in update_shared_counter",
        own.lock, own.join, w["contentions"]
    );
    assert!(own.lock > 1.0, "too little contention: {} s", own.lock);
    let all = own.lock + own.join;
    assert!(
        (seen - all).abs() <= 0.15 * all,
        "hostprobe {seen:.3} s vs the program's own {all:.3} s"
    );
    assert!(
        (locked - own.lock).abs() <= 0.15 * own.lock,
        "hostprobe {locked:.3} s in the contending function vs the program's own {:.3} s",
        own.lock
    );
    let top = &v["user_lock"]["functions"][0];
    assert_eq!(
        top["function"], "update_shared_counter",
        "{}",
        v["user_lock"]
    );
    assert_eq!(top["workload"], cgroup.path());
    // Whole stacks: thread start, worker, the contending function.
    let rows = v["user_lock"]["stacks"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["workload"] == cgroup.path())
        .unwrap();
    let names = frame_names(row);
    assert!(
        names
            .windows(2)
            .any(|w| w == ["update_shared_counter", "worker"]),
        "{names:?}"
    );
    assert_eq!(row["truncated"], false, "{names:?}");
    let stacks_total: f64 = rows
        .iter()
        .filter(|r| r["workload"] == cgroup.path())
        .map(|r| r["wait_seconds"].as_f64().unwrap())
        .sum();

    // go tool pprof reads the profile: the same top function and total.
    let out = Command::new("go")
        .args(["tool", "pprof", "-top", "-sample_index=delay"])
        .arg(&profile)
        .output()
        .expect("go tool pprof (golang-go; cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        first.trim_end().ends_with("update_shared_counter"),
        "{text}"
    );
    let total = text
        .lines()
        .find_map(|l| l.split("Total samples = ").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .expect("pprof prints a total");
    let total = parse_go_duration(total);
    assert!(
        (total - stacks_total).abs() <= 0.01 * stacks_total + 0.01,
        "pprof total {total} s vs the stacks' {stacks_total} s: {text}"
    );
}

#[test]
fn without_frame_pointers_the_caller_is_found_and_the_truncation_reported() {
    let _k = KernelTest::start();
    let (_dir, bin) = mutex_contend("mutex_contend_nofp", "-fomit-frame-pointer");
    let (own, v, cgroup) = contend(&bin, None);
    let locked = function_wait(&v, &cgroup.path(), "update_shared_counter");
    assert!(
        (locked - own.lock).abs() <= 0.15 * own.lock,
        "hostprobe {locked:.3} s vs the program's own {:.3} s",
        own.lock
    );
    assert_eq!(
        v["user_lock"]["functions"][0]["function"],
        "update_shared_counter"
    );
    let truncated = v["user_lock"]["truncated"].as_array().unwrap();
    assert!(
        truncated
            .iter()
            .any(|t| t["binary"] == "mutex_contend_nofp"),
        "{}",
        v["user_lock"]
    );
    // Never a wrong frame: the C library's, and the function that called
    // it (the contending one; main's for its joins).
    for row in v["user_lock"]["stacks"].as_array().unwrap() {
        if row["workload"] != cgroup.path() {
            continue;
        }
        assert_eq!(row["truncated"], true);
        for f in row["frames"].as_array().unwrap() {
            let module = f["module"].as_str().unwrap();
            assert!(
                module.starts_with("libc") || f["name"] == row["function"],
                "unexpected frame {f} in {row}"
            );
        }
    }
}

/// A Go duration as pprof prints it (`6.61s`, `950ms`, `1.20mins`).
fn parse_go_duration(t: &str) -> f64 {
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let v: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "ns" => v / 1e9,
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "mins" => v * 60.0,
        "hrs" => v * 3600.0,
        _ => f64::NAN,
    }
}

/// A Go program contending a `sync.Mutex` (8 goroutines, 2 threads, 3 s):
/// Go parks the waiting goroutines in its own scheduler, so, as README
/// says, hostprobe does not measure that contention; what it sees of the
/// program are its idle threads' futex sleeps (`runtime.notesleep`), whose
/// frames, through `mcall`, may end in the goroutine that parked, and waits
/// for the runtime's own locks (`runtime.lock2`).
#[test]
fn of_a_go_program_only_idle_threads_are_seen_as_readme_says() {
    let _k = KernelTest::start();
    let dir = tempfile::tempdir().unwrap();
    let src =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/go_mutex.go");
    let bin = dir.path().join("go_mutex");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src)
        .env("HOME", dir.path())
        .env("GOCACHE", dir.path().join("cache"))
        .env("GOFLAGS", "")
        .output()
        .expect("go (golang-go; cargo xtask setup installs it)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let (cgroup, placeholder) = occupied_cgroup("ulock-go");
    let path = cgroup.path();
    let diag = start_diagnose(&["--cgroup", &path, "--duration", "6s"]);
    let text = run_in(
        &cgroup,
        &format!("GOMAXPROCS=2 exec {} 8 3 200", bin.display()),
    );
    let own: f64 = text
        .trim()
        .parse::<f64>()
        .expect("go_mutex prints its wait")
        / 1e9;
    let v = finish(diag);
    drop(placeholder);
    let seen = function_wait(&v, &path, "main.updateShared");
    println!("Go Mutex.Lock waits: the program's own {own:.2} s, hostprobe {seen:.2} s in main.updateShared");
    assert!(own > 2.0, "too little contention: {own} s");
    assert!(
        seen < 0.5 * own,
        "hostprobe is not meant to measure Go's Mutex waits: {seen} s of {own} s"
    );
    for row in v["user_lock"]["stacks"].as_array().unwrap() {
        if row["workload"] != path {
            continue;
        }
        let names = frame_names(row);
        assert!(
            names.iter().any(
                |n| ["runtime.notesleep", "runtime.futexsleep", "runtime.lock2"]
                    .iter()
                    .any(|p| n.starts_with(p))
            ),
            "a Go futex sleep neither of an idle thread nor on a runtime lock: {names:?}"
        );
    }
}
