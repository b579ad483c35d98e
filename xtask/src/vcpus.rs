//! `cargo xtask vm vcpus`: what hostprobe says of a VM's vCPU threads,
//! against what the test controls. A two-vCPU TCG guest (its threads named
//! as libvirt has QEMU name them) spins on both vCPUs; with both vCPU
//! threads pinned to one host CPU they wait half the time and never run
//! together; pinned to two CPUs they run together and hardly wait.
//! hostprobe's vCPU wait is checked against the threads' schedstat read
//! around its window, the co-scheduling ratio against the pinning.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::vm::{Qemu, QemuSpec};

const NAME: &str = "hostprobe-vcpus";
const INIT: &str = "echo '=== spinning'\n\
    (while :; do :; done) &\n(while :; do :; done) &\nwhile :; do sleep 3600; done";

pub fn run(bin: &Path) -> Result<()> {
    let rig = crate::vm::prepare()?;
    let initrd = rig.initramfs("vcpus", &[], INIT)?;
    let run_dir = std::env::temp_dir().join(format!("hostprobe-vcpus-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let booting = Instant::now();
    let mut vm = Qemu::start(&QemuSpec {
        system: crate::vm::X86_64,
        name: NAME,
        kernel: &rig.kernel,
        initrd: &initrd,
        append: "console=ttyS0 panic=-1 quiet",
        machine: &["-smp", "2", "-m", "256M", "-accel", "tcg,thread=multi"],
        incoming: None,
        run_dir: &run_dir,
        thread_names: true,
    })?;
    vm.wait_for("=== spinning", Duration::from_secs(300))?;
    eprintln!(
        "vm vcpus: guest spinning on 2 vCPUs after {:.0} s",
        booting.elapsed().as_secs_f64()
    );
    let vcpus = vcpu_threads(vm.pid())?;
    if vcpus.len() != 2 {
        bail!("expected 2 vCPU threads named CPU n/TCG, found {vcpus:?}");
    }
    let mut failures = Vec::new();
    for (cpus, apart) in [(["0", "0"], false), (["0", "1"], true)] {
        for (tid, cpu) in vcpus.iter().zip(cpus) {
            let out = Command::new("taskset")
                .args(["-p", "-c", cpu, &tid.to_string()])
                .output()
                .context("taskset")?;
            if !out.status.success() {
                bail!(
                    "pinning vCPU thread {tid}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        let before = wait_ns(vm.pid(), &vcpus)?;
        let started = Instant::now();
        let out = Command::new(bin)
            .args([
                "diagnose",
                "--duration",
                "5s",
                "--json",
                "--no-vm-readiness",
            ])
            .output()
            .context("running hostprobe diagnose")?;
        let bracket = started.elapsed().as_secs_f64();
        let after = wait_ns(vm.pid(), &vcpus)?;
        if !out.status.success() {
            bail!("diagnose failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let s: Value = serde_json::from_slice(&out.stdout)?;
        let window = s["window_seconds"].as_f64().context("window_seconds")?;
        let v = s["sched"]["vms"]
            .as_array()
            .context("sched.vms")?
            .iter()
            .find(|v| v["vm"] == format!("vm:{NAME}"))
            .with_context(|| format!("vm:{NAME} missing from {}", s["sched"]["vms"]))?
            .clone();
        let wait = v["vcpu_wait_seconds"]
            .as_f64()
            .context("vcpu_wait_seconds")?;
        let ratio = v["gang"]["coscheduled_ratio"].as_f64();
        let kernel = (after - before) as f64 / 1e9;
        let how = if apart { "two CPUs" } else { "one CPU" };
        println!(
            "  vCPUs on {how}: vCPU wait {wait:.2} s in a {window:.1} s window (schedstat over the {bracket:.1} s around it: {kernel:.2} s), co-scheduled {}, {} preemptions",
            ratio.map_or("-".into(), |r| format!("{:.0}%", 100.0 * r)),
            v["vcpu_preemptions"]
        );
        // hostprobe's window lies inside the bracket the kernel's counter
        // was read around; on one CPU the vCPUs wait at a steady rate, so
        // the window has its share of it (on two, most of the little they
        // wait is for the agent starting up, outside the window).
        let steady_share = kernel * window / bracket * 0.8;
        if wait > kernel * 1.02 + 0.01 || (!apart && wait < steady_share) {
            failures.push(format!(
                "{how}: hostprobe's vCPU wait {wait:.2} s outside what schedstat allows ({kernel:.2} s over {bracket:.1} s)"
            ));
        }
        match (apart, ratio) {
            (false, Some(r)) if r <= 0.1 && wait >= 0.3 * window => {}
            (true, Some(r)) if r >= 0.8 && wait <= 0.2 * window => {}
            _ => failures.push(format!(
                "{how}: co-scheduled {ratio:?}, vCPU wait {wait:.2} s in {window:.1} s"
            )),
        }
    }
    drop(vm);
    if !failures.is_empty() {
        bail!("vm vcpus:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// The vCPU threads of QEMU `pid` (named `CPU n/TCG`), in vCPU order.
fn vcpu_threads(pid: u32) -> Result<Vec<u32>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))?;
        if let Some(n) = comm
            .trim_end()
            .strip_prefix("CPU ")
            .and_then(|r| r.split_once('/'))
            .and_then(|(n, _)| n.parse::<u32>().ok())
        {
            found.push((n, tid));
        }
    }
    found.sort_unstable();
    Ok(found.into_iter().map(|(_, tid)| tid).collect())
}

/// The vCPU threads' run-queue wait so far (schedstat's second field).
fn wait_ns(pid: u32, tids: &[u32]) -> Result<u64> {
    let mut sum = 0;
    for tid in tids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))?;
        sum += text
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse::<u64>().ok())
            .context("schedstat")?;
    }
    Ok(sum)
}
