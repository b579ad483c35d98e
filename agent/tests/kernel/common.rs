//! What every kernel test shares: the guard that serialises them and checks
//! that nothing stays loaded, running hostprobe, test processes and cgroups,
//! a scraped `serve`, and windows of perf counted alongside it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_hostprobe");

/// Program names as the kernel keeps them (at most 15 characters).
pub const OUR_PROGRAMS: [&str; 14] = [
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

pub static KERNEL: Mutex<()> = Mutex::new(());

/// Serialises kernel tests and, when the test ends, checks that none of
/// hostprobe's programs is still loaded.
pub struct KernelTest(#[allow(dead_code)] MutexGuard<'static, ()>);

impl KernelTest {
    pub fn start() -> Self {
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
pub fn programs_after_unload() -> Vec<String> {
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
pub fn our_loaded_programs() -> Vec<String> {
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

pub fn hostprobe(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run hostprobe")
}

pub fn json(out: &Output) -> Value {
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
pub struct Diagnose {
    pub child: Child,
    pub stderr: std::thread::JoinHandle<Vec<String>>,
}

/// Starts `hostprobe diagnose` and returns once every probe is attached.
pub fn start_diagnose(args: &[&str]) -> Diagnose {
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

pub fn finish(diag: Diagnose) -> Value {
    finish_with_log(diag).0
}

/// The JSON document and the log lines (stderr).
pub fn finish_with_log(diag: Diagnose) -> (Value, Vec<String>) {
    let out = diag.child.wait_with_output().expect("wait for hostprobe");
    (json(&out), diag.stderr.join().unwrap())
}

/// Builds a C helper from `agent/tests/helpers/` into `dir`.
pub fn helper(name: &str, dir: &std::path::Path) -> PathBuf {
    helper_built(name, dir, name, &["-O2"])
}

/// Builds C helper `name` into `dir/out` with these compiler flags.
pub fn helper_built(name: &str, dir: &std::path::Path, out: &str, flags: &[&str]) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/helpers/{name}.c"));
    let out = dir.join(out);
    let status = Command::new("gcc")
        .args(flags)
        .args(["-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc (cargo xtask setup installs it)");
    assert!(status.success(), "building {name}");
    out
}

/// A process that spins on one CPU; `sh` builtins only, so it never forks.
pub struct Spinner(pub KillOnDrop);

impl Spinner {
    pub fn start() -> Self {
        Spinner(KillOnDrop::spawn(
            Command::new("sh").args(["-c", "while :; do :; done"]),
        ))
    }

    pub fn pid(&self) -> u32 {
        self.0 .0.id()
    }

    /// Pins it to `cpu` (without waiting for it to run there).
    pub fn set_cpu(&self, cpu: usize) {
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
    pub fn move_to(&self, cpu: usize) {
        self.set_cpu(cpu);
        let deadline = Instant::now() + Duration::from_secs(5);
        while current_cpu(self.pid()) != Some(cpu) {
            assert!(Instant::now() < deadline, "spinner never ran on cpu {cpu}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills it and reaps it.
    pub fn stop(self) {
        drop(self.0);
    }
}

/// CPU a process last ran on (field 39 of /proc/PID/stat).
pub fn current_cpu(pid: u32) -> Option<usize> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(36)?
        .parse()
        .ok()
}

pub fn two_cpus() -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
}

/// A child process, leader of its own process group, that is killed with
/// all its descendants when dropped (also when a test fails half-way).
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn spawn(cmd: &mut Command) -> Self {
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

pub struct Server {
    pub child: KillOnDrop,
    pub addr: String,
}

impl Server {
    /// Starts serve with `extra` arguments, behind `wrapper` (e.g.
    /// `chrt -f 50`) if not empty.
    pub fn start_with(port: u16, wrapper: &[&str], extra: &[&str]) -> Self {
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
            .args(["serve", "--listen", &addr, "--log-level", "warn"])
            .args(extra);
        if !extra.contains(&"--interval") {
            child.args(["--interval", "100ms"]);
        }
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

    pub fn get(&self, path: &str) -> std::io::Result<(String, String)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((head.to_string(), body.to_string()))
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.0.id() as i32, libc::SIGTERM) };
        self.child.0.wait().expect("wait for serve")
    }
}

/// Every sample of Prometheus text: `name{labels}` -> value.
pub fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of all samples of one metric in Prometheus text.
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// hostprobe's counts over a window of perf's: `inner` from scrapes taken
/// inside perf's enable..disable, `outer` from scrapes just outside it.
pub struct Window {
    /// perf's counts by event (or lock type).
    pub perf: Vec<(String, f64)>,
    pub perf_stderr: String,
    pub inner: String,
    pub inner_end: String,
    pub outer: String,
    pub outer_end: String,
}

impl Window {
    pub fn perf(&self, event: &str) -> f64 {
        self.perf
            .iter()
            .find(|(e, _)| e == event)
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("perf did not count {event}"))
    }

    pub fn bracket(&self, metric: &str) -> (f64, f64) {
        (
            metric_sum(&self.inner_end, metric) - metric_sum(&self.inner, metric),
            metric_sum(&self.outer_end, metric) - metric_sum(&self.outer, metric),
        )
    }
}

/// Runs `perf ARGS -D -1 --control ... -- sleep 4` SCHED_FIFO, enables it
/// for 2 s between scrapes of hostprobe (see [`Window`]), and hands the
/// window to `parse` for perf's side.
pub fn perf_controlled(server: &Server, args: &[&str], parse: impl FnOnce(&mut Window)) -> Window {
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

/// A load that contends kernel locks of several types: unix-socket
/// messaging (spinlocks) and threads mapping and unmapping memory in one
/// address space (the mmap_lock rwsem, read and write).
pub fn lock_load() -> (
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

pub const PAGE: usize = 4096;

/// Anonymous memory outside THP (one fault per 4 KiB page), unmapped on drop.
pub struct Anon {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Anon {
    pub fn new(pages: usize) -> Self {
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

    pub fn page(&self, i: usize) -> *mut u8 {
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

/// A test cgroup under the v2 root, removed on drop (after its processes).
pub struct TestCgroup(pub PathBuf);

impl TestCgroup {
    pub fn new(tag: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = hostprobe::host::proc::cgroup2_mount(&mountinfo).expect("cgroup v2 mounted");
        let dir = root.join(format!("hostprobe-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("create test cgroup");
        Self(dir)
    }

    pub fn path(&self) -> String {
        format!("/{}", self.0.file_name().unwrap().to_string_lossy())
    }

    pub fn add(&self, pid: u32) {
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
