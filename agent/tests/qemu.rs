//! QEMU as distributions run it: found under the `qemu-kvm` name of RHEL,
//! CentOS and Fedora, and a migration told from QEMU's own migration thread
//! (libvirt names threads with `debug-threads=on`), with an outgoing TCP
//! connection the sign only where threads are unnamed. Real QEMU guests
//! (TCG, no kernel: the firmware idles) with RAM filled from a file of
//! random bytes, so that a migration takes a while at a low bandwidth.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hostprobe");

/// A QEMU guest, killed on drop.
struct Guest {
    child: Child,
    qmp: PathBuf,
}

impl Guest {
    /// `exe`: the QEMU binary; `extra`: more arguments.
    fn start(exe: &Path, dir: &Path, name: &str, extra: &[&str]) -> Self {
        let ram = dir.join(format!("{name}.ram"));
        if !ram.exists() {
            let mut bytes = vec![0u8; 64 << 20];
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            std::fs::write(&ram, bytes).unwrap();
        }
        let qmp = dir.join(format!("{name}.qmp"));
        let backend = format!(
            "memory-backend-file,id=ram,size=64M,mem-path={},share=off",
            ram.display()
        );
        let child = Command::new(exe)
            .args([
                "-accel",
                "tcg",
                "-m",
                "64",
                "-nodefaults",
                "-display",
                "none",
            ])
            .args(["-object", &backend, "-machine", "memory-backend=ram"])
            .args([
                "-qmp",
                &format!("unix:{},server=on,wait=off", qmp.display()),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start QEMU (cargo xtask test installs QEMU 10)");
        let g = Guest { child, qmp };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !g.qmp.exists() {
            assert!(Instant::now() < deadline, "QEMU did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }

    /// Runs QMP commands (after the capabilities handshake).
    fn qmp(&self, commands: &[&str]) {
        let s = UnixStream::connect(&self.qmp).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        for c in
            std::iter::once(r#"{"execute":"qmp_capabilities"}"#).chain(commands.iter().copied())
        {
            writeln!(w, "{c}").unwrap();
            // The reply (events may come first).
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                if line.contains("\"return\"") || line.contains("\"error\"") {
                    assert!(!line.contains("\"error\""), "{c}: {line}");
                    break;
                }
            }
        }
    }

    fn threads(&self) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .map(|d| {
                d.flatten()
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .map(|c| c.trim_end().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn qemu() -> PathBuf {
    PathBuf::from("/usr/bin/qemu-system-x86_64")
}

fn exact(vm: &str, state: &Path) -> Output {
    Command::new(BIN)
        .args([
            "readiness",
            "--vm",
            vm,
            "--exact",
            "--windows",
            "250ms",
            "--json",
        ])
        .arg("--exact-state-dir")
        .arg(state)
        .output()
        .unwrap()
}

#[test]
fn a_vm_run_by_a_binary_named_qemu_kvm_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let kvm = dir.path().join("qemu-kvm");
    std::fs::copy(qemu(), &kvm).unwrap();
    let name = format!("kvm-{}", std::process::id());
    let _g = Guest::start(
        &kvm,
        dir.path(),
        &name,
        &["-name", &format!("guest={name},debug-threads=on")],
    );
    let out = Command::new(BIN)
        .args(["readiness", "--vm", &name, "--windows", "250ms", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["target"]["kind"].as_str(), r["target"]["name"].as_str()),
        (Some("vm"), Some(name.as_str()))
    );
    // Its 64 MiB of random bytes: all of it non-zero guest RAM.
    let memory = r["memory_bytes"].as_f64().unwrap();
    assert!(memory > 60.0 * 1024.0 * 1024.0, "{memory}");
}

#[test]
fn a_migration_is_told_by_qemus_migration_thread() {
    let dir = tempfile::tempdir().unwrap();
    let id = std::process::id();
    let (src, dst) = (format!("src-{id}"), format!("dst-{id}"));
    let port = 20000 + id % 10000;
    let names = |n: &str| format!("guest={n},debug-threads=on");
    let source = Guest::start(&qemu(), dir.path(), &src, &["-name", &names(&src)]);
    let _dest = Guest::start(
        &qemu(),
        dir.path(),
        &dst,
        &[
            "-name",
            &names(&dst),
            "-incoming",
            &format!("tcp:127.0.0.1:{port}"),
        ],
    );
    let state = tempfile::tempdir().unwrap();
    // Before: not migrating, the exact path runs.
    let before = exact(&src, state.path());
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    // 64 MiB of random bytes at 1 MiB/s: a minute of migration.
    source.qmp(&[
        r#"{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":1048576}}"#,
        &format!(r#"{{"execute":"migrate","arguments":{{"uri":"tcp:127.0.0.1:{port}"}}}}"#),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !source
        .threads()
        .iter()
        .any(|t| t.starts_with("mig/src/") || t == "live_migration")
    {
        assert!(
            Instant::now() < deadline,
            "no migration thread: {:?}",
            source.threads()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = exact(&src, tempfile::tempdir().unwrap().path());
    let err = String::from_utf8_lossy(&during.stderr);
    assert_eq!(during.status.code(), Some(2), "{err}");
    assert!(err.contains("migration thread"), "{err}");
    // The receiving side is refused too (started with -incoming).
    let recv = exact(&dst, tempfile::tempdir().unwrap().path());
    assert!(String::from_utf8_lossy(&recv.stderr).contains("-incoming"));
}

/// A guest whose serial port is a TCP client (as network storage would
/// be): not a migration where threads are named; the sign of one where they
/// are not.
#[test]
fn an_outgoing_connection_is_a_migration_only_where_threads_are_unnamed() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let serial = format!("socket,id=s0,host=127.0.0.1,port={port}");
    let id = std::process::id();
    for (name, named_threads) in [
        (format!("named-{id}"), true),
        (format!("plain-{id}"), false),
    ] {
        let arg = if named_threads {
            format!("guest={name},debug-threads=on")
        } else {
            format!("guest={name}")
        };
        let _g = Guest::start(
            &qemu(),
            dir.path(),
            &name,
            &["-name", &arg, "-chardev", &serial, "-serial", "chardev:s0"],
        );
        let (_conn, _) = listener.accept().unwrap();
        let out = exact(&name, tempfile::tempdir().unwrap().path());
        let err = String::from_utf8_lossy(&out.stderr);
        if named_threads {
            assert!(out.status.success(), "{err}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.contains("outgoing TCP connection"), "{err}");
        }
    }
}

fn get(addr: &str, path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// `serve` assessing a VM that exits in the middle of its sampling: the
/// failed assessment is counted, the VM's gauges go, serve goes on.
#[test]
fn a_vm_exiting_mid_sampling_is_counted_and_serve_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("leaving-{}", std::process::id());
    let guest = Guest::start(
        &qemu(),
        dir.path(),
        &name,
        &["-name", &format!("guest={name}")],
    );
    let addr = "127.0.0.1:19481";
    let mut serve = Command::new(BIN)
        .args(["serve", "--listen", addr, "--log-level", "warn"])
        .args(["--readiness-windows", "2s", "--readiness-interval", "1s"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let converges = format!("hostprobe_migration_converges{{workload=\"vm:{name}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(addr, "/metrics").is_some_and(|b| b.contains(&converges)) {
        assert!(Instant::now() < deadline, "the VM was never assessed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Passes run back to back (2 s windows, 1 s apart): one is sampling.
    std::thread::sleep(Duration::from_millis(1000));
    drop(guest);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = get(addr, "/metrics").expect("serve answers");
        let errors = sample(&body, "hostprobe_readiness_errors_total").unwrap_or(0.0);
        if errors >= 1.0 && !body.contains(&converges) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "errors {errors}; gauges still there: {}",
            body.contains(&converges)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get(addr, "/healthz").as_deref(), Some("ok\n"));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    assert!(serve.wait().unwrap().success());
}
