//! `cargo xtask vm numa`: hostprobe inside a two-node QEMU guest running
//! Debian's 6.1 kernel. The guest's /init runs `hostprobe check`, then the
//! scenarios, and prints every result between markers on the serial
//! console; this side checks them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

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

const SCENARIO: &str = include_str!("../rig/numa-init.sh");

pub fn run(hostprobe: &Path) -> Result<()> {
    setup::ensure_packages(&["numactl"])?;
    let rig = crate::vm::prepare()?;
    let dirtier = rig.static_program("dirtier")?;
    let mut files: Vec<(PathBuf, String)> = vec![(dirtier, "/bin/dirtier".into())];
    files.extend(with_libraries(hostprobe, "/bin/hostprobe")?);
    files.extend(with_libraries(
        Path::new("/usr/bin/numactl"),
        "/bin/numactl",
    )?);
    let refs: Vec<(PathBuf, &str)> = files.iter().map(|(p, g)| (p.clone(), g.as_str())).collect();
    let initrd = rig.initramfs("numa", &refs, SCENARIO)?;
    let run_dir = std::env::temp_dir().join(format!("hostprobe-numa-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let mut vm = Qemu::start(&QemuSpec {
        name: "hostprobe-numa",
        kernel: &rig.kernel,
        initrd: &initrd,
        append: "console=ttyS0 panic=-1 quiet transparent_hugepage=never",
        machine: &MACHINE,
        incoming: None,
        run_dir: &run_dir,
    })?;
    vm.wait_for("=== done", Duration::from_secs(600))?;
    let console = vm.serial_text().replace("\r\n", "\n");
    drop(vm);
    std::fs::write(run_dir.join("console.txt"), &console)?;
    eprintln!(
        "vm numa: guest console saved in {}",
        run_dir.join("console.txt").display()
    );
    check(&console)
}

/// The text between `=== NAME` and `=== end NAME`.
fn section<'a>(console: &'a str, name: &str) -> Result<&'a str> {
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

fn json_section(console: &str, name: &str) -> Result<Value> {
    let text = section(console, name)?;
    serde_json::from_str(text.trim())
        .with_context(|| format!("section {name} is not JSON:\n{text}"))
}

fn check(console: &str) -> Result<()> {
    let mut failures = Vec::new();
    let check = json_section(console, "check")?;
    println!("guest kernel {}", check["kernel"]);
    for p in check["probes"].as_array().context("probes")? {
        println!(
            "  {:<22} {}",
            p["probe"].as_str().unwrap_or("?"),
            if p["attached"] == true {
                "ok".to_string()
            } else {
                format!("UNAVAILABLE: {}", p["reason"].as_str().unwrap_or("?"))
            }
        );
        if p["attached"] != true {
            failures.push(format!(
                "probe {} does not load on the guest kernel",
                p["probe"]
            ));
        }
    }
    match json_section(console, "sched") {
        Ok(sched) => {
            let moves: u64 = sched["sched"]["workloads"]
                .as_array()
                .context("sched.workloads")?
                .iter()
                .flat_map(|w| {
                    ["same_core", "same_llc", "same_node", "other_node"]
                        .map(|d| w["migrations"][d].as_u64().unwrap_or(0))
                })
                .sum();
            println!("scheduler test on the guest kernel: 20 moves set, {moves} counted");
            if moves.abs_diff(20) > 1 {
                failures.push(format!(
                    "scheduler test: 20 moves set, hostprobe counted {moves}"
                ));
            }
        }
        Err(e) => failures.push(format!(
            "scheduler test: {e:#}; log:\n{}",
            section(console, "sched log").unwrap_or("")
        )),
    }
    match (
        json_section(console, "numa"),
        json_section(console, "counters"),
    ) {
        (Ok(numa), Ok(counters)) => failures.extend(check_numa(&numa, &counters)?),
        (Err(e), _) | (_, Err(e)) => failures.push(format!(
            "NUMA scenarios: {e:#}; log:\n{}",
            section(console, "numa log").unwrap_or("")
        )),
    }
    match json_section(console, "never") {
        Ok(s) => failures.extend(check_never(&s)),
        Err(e) => failures.push(format!(
            "--numa-page-alloc never: {e:#}; log:\n{}",
            section(console, "never log").unwrap_or("")
        )),
    }
    // Issue 4's exact path where the kernel has soft-dirty bits.
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
            println!("readiness --exact in the guest: {method}, pages/s {rates:.0?} (dirtier set to 20000)");
            if method != "soft-dirty (exact)" {
                failures.push(format!(
                    "the 6.1 guest has soft-dirty, readiness --exact used {method}"
                ));
            }
            // 32768 pages, round-robin: distinct pages per second stay at
            // the set rate until the buffer wraps (1.6 s).
            if rates.is_empty() || rates.iter().any(|r| (r - 20000.0).abs() > 0.2 * 20000.0) {
                failures.push(format!("soft-dirty rates {rates:.0?}, want 20000 +- 20%"));
            }
        }
        Err(e) => failures.push(format!(
            "readiness --exact: {e:#}; log:\n{}",
            section(console, "exact log").unwrap_or("")
        )),
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
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
    let migrated = s["numa"]["pages_migrated"]["numa_misplaced"]
        .as_u64()
        .unwrap_or(0);
    let vmstat = counters["numa_pages_migrated"]
        .as_u64()
        .context("numa_pages_migrated")?;
    println!("  (d) pages migrated by NUMA balancing: hostprobe {migrated}, vmstat numa_pages_migrated {vmstat}");
    expect(
        "(d) hostprobe numa_misplaced / vmstat",
        (vmstat > 1000).then(|| migrated as f64 / vmstat as f64),
        &|r| (0.95..=1.05).contains(&r),
        "1 +- 0.05, over > 1000 pages",
    );
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
