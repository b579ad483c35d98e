//! Page dirtying: exact file bytes and write faults of pages the test
//! dirties, dirty throttling against perf, and diagnose's readiness of the
//! top dirtying cgroup.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::common::*;

fn dirty_sum(s: &Value, field: &str) -> u64 {
    s["dirty"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[field].as_u64().unwrap())
        .sum()
}

#[test]
fn dirty_probes_count_exactly_the_pages_the_test_dirties() {
    let _k = KernelTest::start();
    const FILE_BYTES: usize = 8 << 20;
    const PAGES: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let me = std::process::id().to_string();
    // Allocated (and faulted in) before the window opens.
    let data = vec![7u8; FILE_BYTES];
    let diag = start_diagnose(&[
        "--duration",
        "3s",
        "--pid",
        &me,
        "--no-vm-readiness",
        "--readiness-windows",
        "1s",
    ]);
    // A new file: every folio goes from clean to dirty once.
    let mut f = std::fs::File::create(dir.path().join("dirtied")).unwrap();
    f.write_all(&data).unwrap();
    // Write faults on unmapped pages: one per page.
    let fresh = Anon::new(PAGES);
    for i in 0..PAGES {
        // SAFETY: inside the mapping.
        unsafe { fresh.page(i).write_volatile(1) };
    }
    // Read first (maps the shared zero page, read-only), then write: one
    // fault per page on a present, write-protected page.
    let cow = Anon::new(PAGES);
    for i in 0..PAGES {
        // SAFETY: inside the mapping.
        unsafe {
            std::hint::black_box(cow.page(i).read_volatile());
            cow.page(i).write_volatile(1);
        }
    }
    let s = finish(diag);
    drop(f);
    let bytes = dirty_sum(&s, "file_dirtied_bytes");
    assert!(
        (FILE_BYTES as u64..FILE_BYTES as u64 + 64 * 1024).contains(&bytes),
        "wrote {FILE_BYTES} bytes to a new file, hostprobe saw {bytes} dirtied: {}",
        s["dirty"]
    );
    let new = dirty_sum(&s, "write_faults_new");
    let present = dirty_sum(&s, "write_faults_present");
    eprintln!(
        "file: wrote {FILE_BYTES}, saw {bytes} bytes in {} folios; new-page faults {new}, \
         present-page faults {present} (set {PAGES} each)",
        dirty_sum(&s, "file_dirtied_folios")
    );
    // The readiness assessment of this process in the same run reads
    // sampled pages of it: reading a never-touched page maps the zero page,
    // so its first write faults on a present page instead. At most as many
    // as it read move from one count to the other.
    let read = s["readiness"]["cost"]["pages_read"].as_u64().unwrap();
    let moved = PAGES as u64 - new.min(PAGES as u64);
    assert!(
        moved <= read,
        "touched {PAGES} new pages, hostprobe saw {new} write faults on unmapped pages \
         (the readiness sampler read {read})"
    );
    // The rest of this process (the harness, pipes to hostprobe) faults a
    // little too.
    assert!(
        (PAGES as u64..PAGES as u64 + 256).contains(&(new + moved)),
        "touched {PAGES} new pages, hostprobe saw {new} write faults on unmapped pages"
    );
    assert!(
        (PAGES as u64..PAGES as u64 + 64).contains(&(present - moved)),
        "wrote {PAGES} zero-page-mapped pages, hostprobe saw {present} write faults on \
         present pages ({moved} of them on new pages the sampler had read)"
    );
    let devices = s["dirty"]["devices"].as_array().unwrap();
    assert!(
        devices
            .iter()
            .any(|d| d["file_dirtied_bytes"].as_u64() >= Some(FILE_BYTES as u64)),
        "no device holds the file's dirtied bytes: {devices:?}"
    );
}

/// Low global dirty limits for one test, so that a plain `dd` gets
/// throttled; the previous settings come back on drop.
struct LowDirtyLimits(Vec<(&'static str, String)>);

impl LowDirtyLimits {
    const VM: &'static str = "/proc/sys/vm/";

    fn set() -> Self {
        let read = |k: &str| std::fs::read_to_string(format!("{}{k}", Self::VM)).unwrap();
        // Writing a *_bytes knob zeroes its *_ratio twin and vice versa:
        // restore whichever was in force.
        let pick = |bytes: &'static str, ratio: &'static str| {
            let b = read(bytes);
            if b.trim() != "0" {
                (bytes, b)
            } else {
                (ratio, read(ratio))
            }
        };
        let saved = vec![
            pick("dirty_bytes", "dirty_ratio"),
            pick("dirty_background_bytes", "dirty_background_ratio"),
        ];
        for (k, v) in [
            ("dirty_bytes", "4194304"),
            ("dirty_background_bytes", "2097152"),
        ] {
            std::fs::write(format!("{}{k}", Self::VM), v).unwrap();
        }
        Self(saved)
    }
}

impl Drop for LowDirtyLimits {
    fn drop(&mut self) {
        for (k, v) in &self.0 {
            let _ = std::fs::write(format!("{}{k}", Self::VM), v.trim());
        }
    }
}

#[test]
fn dirty_throttling_agrees_with_perf() {
    let _k = KernelTest::start();
    let dir = tempfile::tempdir().unwrap();
    let diag = start_diagnose(&["--duration", "6s", "--no-vm-readiness"]);
    let perf = {
        let _limits = LowDirtyLimits::set();
        Command::new("perf")
            .args(["stat", "-x,", "-e", "writeback:balance_dirty_pages"])
            .args(["--filter", "pause > 0", "--", "dd", "if=/dev/zero"])
            .arg(format!("of={}", dir.path().join("f").display()))
            .args(["bs=1M", "count=256"])
            .output()
            .expect("perf (cargo xtask setup installs linux-perf)")
    };
    let s = finish(diag);
    let stderr = String::from_utf8_lossy(&perf.stderr);
    let perf_pauses: u64 = stderr
        .lines()
        .find(|l| l.contains("writeback:balance_dirty_pages"))
        .and_then(|l| l.split(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no perf count in: {stderr}"));
    let ours = dirty_sum(&s, "throttle_pauses");
    let seconds: f64 = s["dirty"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["throttle_seconds"].as_f64().unwrap())
        .sum();
    eprintln!("throttle pauses: perf {perf_pauses}, hostprobe {ours} ({seconds:.3} s)");
    assert!(perf_pauses > 0, "dd was not throttled: {stderr}");
    // Other writers on the host may be throttled too, never fewer.
    assert!(
        ours >= perf_pauses && ours <= perf_pauses + perf_pauses / 20 + 2,
        "perf counted {perf_pauses} throttling pauses of dd, hostprobe {ours}"
    );
    assert!(seconds > 0.0);
}

#[test]
fn diagnose_assesses_the_readiness_of_the_top_dirtying_cgroup() {
    let _k = KernelTest::start();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = hostprobe::host::proc::cgroup2_mount(&mountinfo).expect("cgroup v2 mounted");
    let name = format!("hostprobe-dirtier-{}", std::process::id());
    let dir: PathBuf = root.join(&name);
    std::fs::create_dir(&dir).expect("create test cgroup");
    let files = tempfile::tempdir().unwrap();
    // A shell appending to a file without end: file pages dirtied all along.
    let writer = KillOnDrop::spawn(
        Command::new("sh")
            .arg("-c")
            .arg("sleep 0.5; while :; do echo 0123456789abcdef0123456789abcdef; done > \"$0\"")
            .arg(files.path().join("grows")),
    );
    std::fs::write(dir.join("cgroup.procs"), writer.0.id().to_string()).unwrap();
    let s = finish(start_diagnose(&["--duration", "3s", "--no-vm-readiness"]));
    drop(writer);
    std::fs::remove_dir(&dir).expect("remove test cgroup");
    let path = format!("/{name}");
    let dirty = s["dirty"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"] == path.as_str())
        .unwrap_or_else(|| panic!("{path} not among the dirtying workloads: {}", s["dirty"]));
    assert!(dirty["file_dirtied_bytes"].as_u64().unwrap() > 0);
    let assessed = s["readiness"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"]["name"] == path.as_str())
        .unwrap_or_else(|| panic!("{path} not assessed: {}", s["readiness"]));
    assert_eq!(assessed["target"]["kind"], "cgroup");
    assert!(assessed["prediction"]["converges"].is_boolean());
}
