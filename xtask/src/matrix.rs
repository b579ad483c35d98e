//! `cargo xtask vm matrix`: hostprobe inside two-node QEMU guests running
//! the kernels fleets run (Debian's 5.10, 6.1, 6.12 and 6.12 PREEMPT_RT),
//! one at a time, from one initramfs. Each guest's /init runs `hostprobe
//! check` (also with its BTF from a file), then the exact-count tests and
//! the NUMA scenarios, and prints every result between markers on the
//! serial console; this side checks them and prints a table kernel x
//! program.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::kernels::{self, Kernel};
use crate::setup;
use crate::vm::{Qemu, QemuSpec};

/// Two nodes of 1 GiB with two CPUs each, as VMRIG.md measured.
const MACHINE: [&str; 18] = [
    "-accel",
    "tcg,thread=multi",
    "-cpu",
    "max",
    "-smp",
    "4",
    "-m",
    "2G",
    "-object",
    "memory-backend-ram,id=m0,size=1G",
    "-object",
    "memory-backend-ram,id=m1,size=1G",
    "-numa",
    "node,nodeid=0,cpus=0-1,memdev=m0",
    "-numa",
    "node,nodeid=1,cpus=2-3,memdev=m1",
    "-numa",
    "dist,src=0,dst=1,val=20",
];

/// Files a dynamically linked binary needs: itself and what `ldd` lists.
fn with_libraries(bin: &Path, guest_path: &'static str) -> Result<Vec<(PathBuf, String)>> {
    let mut files = vec![(bin.to_path_buf(), guest_path.to_string())];
    let ldd = setup::output(Command::new("ldd").arg(bin))?;
    for line in ldd.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            files.push((PathBuf::from(p), p.to_string()));
        }
    }
    Ok(files)
}

const SCENARIO: &str = concat!(
    include_str!("../rig/guest-init.sh"),
    include_str!("../rig/matrix-init.sh")
);

/// Probes that attach another way on a kernel than on the newest: checked
/// to attach exactly that way (probe, attach type).
fn fallbacks(kernel: &str) -> &'static [(&'static str, &'static str)] {
    match kernel {
        // No lock:contention_* (5.19+): the sleeping locks' slow paths.
        "5.10" => &[("contention_begin", "fentry"), ("contention_end", "fexit")],
        _ => &[],
    }
}

/// Probes a kernel cannot offer, and a word its reason must name.
fn unavailable(kernel: &str) -> &'static [(&'static str, &'static str)] {
    match kernel {
        // User lock waits read a sleeping thread's registers through
        // bpf_task_pt_regs (5.15+).
        "5.10" => &[("ulock", "bpf_task_pt_regs")],
        _ => &[],
    }
}

/// What one kernel's guest showed.
struct Outcome {
    kernel: String,
    release: String,
    boot_seconds: f64,
    /// Probe -> how it attached (`tp_btf`, `tracepoint`) or `-`.
    probes: BTreeMap<String, String>,
    passed: Vec<String>,
    failures: Vec<String>,
}

pub fn run(hostprobe: &Path, names: &[String]) -> Result<()> {
    setup::ensure_packages(&["numactl"])?;
    let rig = crate::vm::prepare()?;
    let specs = if names.is_empty() || names.iter().any(|n| n == "all") {
        kernels::MATRIX.to_vec()
    } else {
        names
            .iter()
            .map(|n| kernels::find(n))
            .collect::<Result<_>>()?
    };
    let kernels: Vec<Kernel> = specs
        .into_iter()
        .map(kernels::fetch)
        .collect::<Result<_>>()?;
    let dirtier = rig.static_program("dirtier")?;
    let mut files: Vec<(PathBuf, String)> = vec![(dirtier, "/bin/dirtier".into())];
    for load in ["dirtyload", "lockload", "ulockload"] {
        files.push((rig.static_program(load)?, format!("/bin/{load}")));
    }
    files.extend(with_libraries(hostprobe, "/bin/hostprobe")?);
    files.extend(with_libraries(
        Path::new("/usr/bin/numactl"),
        "/bin/numactl",
    )?);
    for k in &kernels {
        files.extend(k.modules.iter().cloned());
    }
    let refs: Vec<(PathBuf, &str)> = files.iter().map(|(p, g)| (p.clone(), g.as_str())).collect();
    let initrd = rig.initramfs("matrix", &refs, SCENARIO)?;
    let run_dir = std::env::temp_dir().join(format!("hostprobe-matrix-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let mut outcomes = Vec::new();
    for k in &kernels {
        eprintln!("vm matrix: booting {} ({})", k.spec.name, k.release);
        let started = Instant::now();
        let mut vm = Qemu::start(&QemuSpec {
            system: crate::vm::X86_64,
            name: "hostprobe-matrix",
            kernel: &k.vmlinuz,
            initrd: &initrd,
            append: "console=ttyS0 panic=-1 quiet transparent_hugepage=never",
            machine: &MACHINE,
            incoming: None,
            run_dir: &run_dir,
            thread_names: false,
        })?;
        let booted = vm.wait_for("=== end kernel", Duration::from_secs(600));
        let boot_seconds = started.elapsed().as_secs_f64();
        let done = booted.and_then(|()| vm.wait_for("=== done", Duration::from_secs(900)));
        let console = vm.serial_text().replace("\r\n", "\n");
        drop(vm);
        let saved = run_dir.join(format!("console-{}.txt", k.spec.name));
        std::fs::write(&saved, &console)?;
        eprintln!(
            "vm matrix: {} console saved in {}",
            k.spec.name,
            saved.display()
        );
        let mut o = Outcome {
            kernel: k.spec.name.to_string(),
            release: k.release.clone(),
            boot_seconds,
            probes: BTreeMap::new(),
            passed: Vec::new(),
            failures: Vec::new(),
        };
        match done {
            Ok(()) => check(&console, &mut o)?,
            Err(e) => o.failures.push(format!("the guest did not finish: {e:#}")),
        }
        outcomes.push(o);
    }
    let table = render(&outcomes);
    print!("{table}");
    let out = crate::target_dir().join("vm-matrix");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("table.md"), &table)?;
    let failures: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.failures.iter().map(move |f| format!("{}: {f}", o.kernel)))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

/// Markdown: kernel x program (how it attached), then the checks passed.
fn render(outcomes: &[Outcome]) -> String {
    let probes: Vec<&String> = outcomes
        .iter()
        .flat_map(|o| o.probes.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut t = String::from("| program |");
    for o in outcomes {
        t += &format!(" {} |", o.kernel);
    }
    t += "\n| --- |";
    t += &" --- |".repeat(outcomes.len());
    t += "\n";
    for p in probes {
        t += &format!("| {p} |");
        for o in outcomes {
            t += &format!(" {} |", o.probes.get(p).map_or("?", String::as_str));
        }
        t += "\n";
    }
    t += "\n";
    for o in outcomes {
        t += &format!(
            "{} ({}, booted in {:.0} s): {} checks passed{}\n",
            o.kernel,
            o.release,
            o.boot_seconds,
            o.passed.len(),
            if o.failures.is_empty() {
                String::new()
            } else {
                format!(", {} FAILED", o.failures.len())
            }
        );
        for p in &o.passed {
            t += &format!("  ok: {p}\n");
        }
        for f in &o.failures {
            t += &format!("  FAILED: {f}\n");
        }
    }
    t
}

/// The text between `=== NAME` and `=== end NAME`.
pub fn section<'a>(console: &'a str, name: &str) -> Result<&'a str> {
    let start = format!("=== {name}\n");
    let end = format!("=== end {name}");
    let a = console
        .find(&start)
        .with_context(|| format!("no section {name} in the guest console"))?
        + start.len();
    let b = console[a..]
        .find(&end)
        .with_context(|| format!("section {name} not closed"))?;
    Ok(&console[a..a + b])
}

pub fn json_section(console: &str, name: &str) -> Result<Value> {
    let text = section(console, name)?;
    serde_json::from_str(text.trim())
        .with_context(|| format!("section {name} is not JSON:\n{text}"))
}

fn check(console: &str, o: &mut Outcome) -> Result<()> {
    let fallbacks = fallbacks(&o.kernel);
    let unavailable = unavailable(&o.kernel);
    for (name, flag) in [("check", ""), ("check btf", " --btf")] {
        let doc = match json_section(console, name) {
            Ok(d) => d,
            Err(e) => {
                o.failures.push(format!("hostprobe check{flag}: {e:#}"));
                continue;
            }
        };
        let mut bad = Vec::new();
        for p in doc["probes"].as_array().context("probes")? {
            let probe = p["probe"].as_str().unwrap_or("?").to_string();
            let reason = p["reason"].as_str().unwrap_or("");
            let how = if p["attached"] == true {
                format!(
                    "{} ({})",
                    p["attach_type"].as_str().unwrap_or("?"),
                    p["tracepoint"].as_str().unwrap_or("?")
                )
            } else {
                "-".to_string()
            };
            let way = fallbacks.iter().find(|(n, _)| *n == probe).map(|(_, w)| *w);
            let missing = unavailable
                .iter()
                .find(|(n, _)| *n == probe)
                .map(|(_, w)| *w);
            match (way, missing) {
                (_, Some(word)) if p["attached"] == true || !reason.contains(word) => {
                    bad.push(format!(
                        "{probe} should be unavailable for want of {word}: attached {}, {reason}",
                        p["attached"]
                    ))
                }
                (_, Some(_)) => {}
                _ if p["attached"] != true => bad.push(format!("{probe}: {reason}")),
                (Some(w), _) if p["attach_type"] != w => {
                    bad.push(format!("{probe} should attach by {w}, got {how}"))
                }
                _ => {}
            }
            if flag.is_empty() {
                o.probes.insert(probe, how);
            }
        }
        if bad.is_empty() {
            o.passed.push(format!(
                "check{flag}: all {} programs attached{}{}",
                o.probes.len() - unavailable.len(),
                if fallbacks.is_empty() {
                    String::new()
                } else {
                    format!(" ({} by their fallback)", fallbacks.len())
                },
                if unavailable.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = unavailable.iter().map(|(n, _)| *n).collect();
                    format!("; {} unavailable here, as expected", names.join(", "))
                }
            ));
        } else {
            o.failures.push(format!("check{flag}: {}", bad.join("; ")));
        }
    }
    match json_section(console, "sched") {
        Ok(sched) => {
            let moves = moves(&sched)?;
            if moves.abs_diff(20) > 1 {
                o.failures.push(format!(
                    "scheduler test: 20 moves set, hostprobe counted {moves}"
                ));
            } else {
                o.passed
                    .push(format!("scheduler: 20 moves set, {moves} counted"));
            }
        }
        Err(e) => o.failures.push(format!(
            "scheduler test: {e:#}; log:\n{}",
            section(console, "sched log").unwrap_or("")
        )),
    }
    let ulock_expected = !unavailable.iter().any(|(n, _)| *n == "ulock");
    for (name, check) in [
        ("dirty", check_dirty as fn(&Value) -> Result<String>),
        ("lock", check_lock),
        ("ulock", check_ulock),
    ] {
        if name == "ulock" && !ulock_expected {
            continue;
        }
        match json_section(console, name).and_then(|d| check(&d)) {
            Ok(pass) => o.passed.push(pass),
            Err(e) => o.failures.push(format!(
                "{name}: {e:#}; log:\n{}",
                section(console, &format!("{name} log")).unwrap_or("")
            )),
        }
    }
    match (
        json_section(console, "numa"),
        json_section(console, "counters"),
    ) {
        (Ok(numa), Ok(counters)) => {
            let f = check_numa(&numa, &counters)?;
            if f.is_empty() {
                o.passed.push(if counters["numa_balancing"] == true {
                    "NUMA scenarios (a)-(d) against numastat and vmstat".into()
                } else {
                    "NUMA scenarios (a)-(c) against numastat; (d): no NUMA balancing in this kernel, none counted".into()
                });
            }
            o.failures.extend(f);
        }
        (Err(e), _) | (_, Err(e)) => o.failures.push(format!(
            "NUMA scenarios: {e:#}; log:\n{}",
            section(console, "numa log").unwrap_or("")
        )),
    }
    match json_section(console, "never") {
        Ok(s) => {
            let f = check_never(&s);
            if f.is_empty() {
                o.passed
                    .push("--numa-page-alloc never keeps residency and the estimate".into());
            }
            o.failures.extend(f);
        }
        Err(e) => o.failures.push(format!(
            "--numa-page-alloc never: {e:#}; log:\n{}",
            section(console, "never log").unwrap_or("")
        )),
    }
    // The exact path of readiness where the kernel has soft-dirty bits
    // (every Debian kernel does).
    match json_section(console, "exact") {
        Ok(r) => {
            let method = r["method"]["method"].as_str().unwrap_or("?");
            let rates: Vec<f64> = r["dirty"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .filter_map(|p| {
                            Some(
                                p["dirty_bytes"].as_f64()?
                                    / 4096.0
                                    / p["window_seconds"].as_f64()?,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            // 32768 pages, round-robin: distinct pages per second stay at
            // the set rate until the buffer wraps (1.6 s).
            if method != "soft-dirty (exact)" {
                o.failures.push(format!(
                    "Debian's kernels have soft-dirty, readiness --exact used {method}"
                ));
            } else if rates.is_empty() || rates.iter().any(|r| (r - 20000.0).abs() > 0.2 * 20000.0)
            {
                o.failures
                    .push(format!("soft-dirty rates {rates:.0?}, want 20000 +- 20%"));
            } else {
                o.passed.push(format!(
                    "readiness --exact: soft-dirty, pages/s {rates:.0?} (set 20000)"
                ));
            }
        }
        Err(e) => o.failures.push(format!(
            "readiness --exact: {e:#}; log:\n{}",
            section(console, "exact log").unwrap_or("")
        )),
    }
    Ok(())
}

/// Migrations of the scheduler test's spinner, every distance.
pub fn moves(s: &Value) -> Result<u64> {
    Ok(s["sched"]["workloads"]
        .as_array()
        .context("sched.workloads")?
        .iter()
        .flat_map(|w| {
            ["same_core", "same_llc", "same_node", "other_node"]
                .map(|d| w["migrations"][d].as_u64().unwrap_or(0))
        })
        .sum())
}

/// The user-lock load's waits: 20 of 50 ms for a pthread mutex, in
/// `wait_for_holder` (a static binary: its C library is inside it).
fn check_ulock(s: &Value) -> Result<String> {
    const WAITS: u64 = 20;
    const HOLD: f64 = 0.05;
    let stacks = s["user_lock"]["stacks"]
        .as_array()
        .context("user_lock.stacks")?;
    let ours: Vec<&Value> = stacks
        .iter()
        .filter(|r| r["function"] == "wait_for_holder")
        .collect();
    let count: u64 = ours.iter().filter_map(|r| r["contentions"].as_u64()).sum();
    let wait: f64 = ours.iter().filter_map(|r| r["wait_seconds"].as_f64()).sum();
    let expected = WAITS as f64 * HOLD;
    let summary = format!(
        "user-space locks: {count} futex waits in wait_for_holder, {wait:.3} s waited (set {WAITS} of {HOLD} s: {expected:.1} s)"
    );
    if count == WAITS && (0.9 * expected..=1.3 * expected).contains(&wait) {
        Ok(summary)
    } else {
        bail!("{summary}: {}", s["user_lock"])
    }
}

/// The lock load's waits: 20 for a pipe's mutex (an rt-mutex on
/// PREEMPT_RT) whose owner sleeps 50 ms in a userfaultfd fault, the waiter
/// in `pipe_write` (or 6.18's `anon_pipe_write`). Other contention of the
/// load (on PREEMPT_RT its spinlocks sleep too) is not the test's.
fn check_lock(s: &Value) -> Result<String> {
    const WAITS: u64 = 20;
    const HOLD: f64 = 0.05;
    let callers = s["lock"]["callers"].as_array().context("lock.callers")?;
    let pipe: Vec<&Value> = callers
        .iter()
        .filter(|c| {
            c["caller"]
                .as_str()
                .is_some_and(|c| c.contains("pipe_write"))
        })
        .collect();
    let count: u64 = pipe.iter().filter_map(|c| c["contentions"].as_u64()).sum();
    let wait: f64 = pipe.iter().filter_map(|c| c["wait_seconds"].as_f64()).sum();
    let types: Vec<&str> = pipe
        .iter()
        .filter_map(|c| c["lock_type"].as_str())
        .collect();
    let expected = WAITS as f64 * HOLD;
    let summary = format!(
        "sleeping locks: {count} contentions in pipe_write ({}), {wait:.3} s waited (set {WAITS} of {HOLD} s: {expected:.1} s)",
        types.join(", ")
    );
    if count == WAITS && (0.95 * expected..=1.3 * expected).contains(&wait) {
        Ok(summary)
    } else {
        bail!("{summary}: {callers:?}")
    }
}

/// The dirtying load's exact counts: 8 MiB of a block device's page cache,
/// 4096 write faults on new pages and 4096 on present ones.
fn check_dirty(s: &Value) -> Result<String> {
    const FILE_BYTES: u64 = 8 << 20;
    const PAGES: u64 = 4096;
    let sum = |field: &str| -> u64 {
        s["dirty"]["workloads"]
            .as_array()
            .map(|w| w.iter().filter_map(|w| w[field].as_u64()).sum())
            .unwrap_or(0)
    };
    let bytes = sum("file_dirtied_bytes");
    let (new, present) = (sum("write_faults_new"), sum("write_faults_present"));
    // diagnose's readiness sampler reads pages of the load; a read of a
    // never-touched page maps the zero page, so its first write counts as
    // a fault on a present page: at most as many as it read move over.
    let read = s["readiness"]["cost"]["pages_read"].as_u64().unwrap_or(0);
    let moved = PAGES - new.min(PAGES);
    let summary = format!(
        "dirtying: {bytes} bytes dirtied (wrote {FILE_BYTES}), write faults {new} new + {present} present (set {PAGES} + {PAGES}, sampler read {read})"
    );
    let ok = (FILE_BYTES..FILE_BYTES + 64 * 1024).contains(&bytes)
        && moved <= read
        && (PAGES..PAGES + 256).contains(&(new + moved))
        && (PAGES..PAGES + 64).contains(&present.saturating_sub(moved));
    if ok {
        Ok(summary)
    } else {
        bail!("{summary}: {}", s["dirty"])
    }
}

/// With `--numa-page-alloc never`, a busy task on node 0's CPUs whose
/// memory is on node 1 still gets its residency and the remote-access
/// estimate (it is ranked by the scheduler signal, not by allocations).
fn check_never(s: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    let page_alloc = s["probes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["probe"] == "mm_page_alloc"));
    if page_alloc.is_none_or(|p| p["attached"] != false) {
        failures.push(format!(
            "--numa-page-alloc never left mm_page_alloc attached: {page_alloc:?}"
        ));
    }
    let w = s["numa"]["workloads"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["workload"] == "/unranked"));
    let estimate = w.and_then(|w| w["estimated_remote_access_ratio"].as_f64());
    let on_node1 = w
        .and_then(|w| w["resident_bytes_by_node"][1].as_u64())
        .unwrap_or(0);
    println!(
        "  never: /unranked (CPU node 0, 32 MiB on node 1): resident on node 1 {} MiB, estimated remote access {}",
        on_node1 >> 20,
        estimate.map_or("missing".into(), |e| format!("{e:.3}"))
    );
    if on_node1 < 32 << 20 || !estimate.is_some_and(|e| e >= 0.8) {
        failures.push(format!(
            "--numa-page-alloc never: /unranked wants >= 32 MiB on node 1 and an estimate >= 0.8, got {w:?}"
        ));
    }
    failures
}

/// Acceptance (a)-(d) of the NUMA scenarios; the failures, if any.
fn check_numa(s: &Value, counters: &Value) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let workloads = s["numa"]["workloads"]
        .as_array()
        .context("numa.workloads")?;
    let find = |name: &str| workloads.iter().find(|w| w["workload"] == name);
    let ratio = |w: Option<&Value>, key: &str| w.and_then(|w| w[key].as_f64());
    println!(
        "NUMA scenarios in the guest ({} nodes):",
        s["numa"]["nodes"]
    );
    let mut expect = |what: &str, got: Option<f64>, ok: &dyn Fn(f64) -> bool, want: &str| {
        let shown = got.map_or("missing".to_string(), |g| format!("{g:.3}"));
        println!("  {what:<48} {shown:>8}  (want {want})");
        if !got.is_some_and(ok) {
            failures.push(format!("{what}: {shown}, want {want}"));
        }
    };
    let remote = find("/remote");
    let local = find("/local");
    expect(
        "(a) remote task: remote allocation share",
        ratio(remote, "remote_allocation_ratio"),
        &|r| r >= 0.95,
        ">= 0.95",
    );
    expect(
        "(a) remote task: estimated remote access share",
        ratio(remote, "estimated_remote_access_ratio"),
        &|r| r >= 0.8,
        ">= 0.8",
    );
    expect(
        "(b) local task: remote allocation share",
        ratio(local, "remote_allocation_ratio"),
        &|r| r <= 0.05,
        "<= 0.05",
    );
    expect(
        "(b) local task: estimated remote access share",
        ratio(local, "estimated_remote_access_ratio"),
        &|r| r <= 0.2,
        "<= 0.2",
    );
    let remote_pages: u64 = workloads
        .iter()
        .filter_map(|w| w["remote_pages"].as_u64())
        .sum();
    let other_node = counters["other_node"].as_u64().context("other_node")?;
    println!(
        "  (c) remote page allocations: hostprobe {remote_pages}, numastat other_node {other_node}"
    );
    expect(
        "(c) hostprobe remote pages / numastat other_node",
        (other_node > 0).then(|| remote_pages as f64 / other_node as f64),
        &|r| (0.95..=1.05).contains(&r),
        "1 +- 0.05",
    );
    let balancing = counters["numa_balancing"] == true;
    let migrated = s["numa"]["pages_migrated"]["numa_misplaced"]
        .as_u64()
        .unwrap_or(0);
    let vmstat = counters["numa_pages_migrated"]
        .as_u64()
        .context("numa_pages_migrated")?;
    println!("  (d) pages migrated by NUMA balancing: hostprobe {migrated}, vmstat numa_pages_migrated {vmstat}");
    if balancing {
        expect(
            "(d) hostprobe numa_misplaced / vmstat",
            (vmstat > 1000).then(|| migrated as f64 / vmstat as f64),
            &|r| (0.95..=1.05).contains(&r),
            "1 +- 0.05, over > 1000 pages",
        );
    } else {
        // PREEMPT_RT excludes CONFIG_NUMA_BALANCING: nothing may move.
        expect(
            "(d) no NUMA balancing here: pages migrated",
            Some((migrated + vmstat) as f64),
            &|n| n == 0.0,
            "0",
        );
    }
    // Issue 6: the misplaced task is told to move to its memory's node.
    let advice = s["affinity"]
        .as_array()
        .and_then(|a| a.iter().find(|w| w["workload"] == "/remote"))
        .map(|w| w["recommendation"].clone())
        .unwrap_or(Value::Null);
    println!(
        "  affinity advice for /remote: {}",
        advice["text"].as_str().unwrap_or("none")
    );
    if advice["cpus"] != serde_json::json!([2, 3]) {
        failures.push(format!("/remote (CPU on node 0, memory on node 1) was not told to move to node 1's CPUs 2-3: {advice}"));
    }
    let balance = find("/balance");
    println!(
        "  (d) balancing events of the moved task: {}",
        balance.map_or("missing".into(), |b| b["balancing"].to_string())
    );
    Ok(failures)
}
