//! Bad input: clear errors and exit codes.

use std::process::Command;

use super::common::*;

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
