//! `cargo xtask vm arm64`: hostprobe cross-built for aarch64 and run in a
//! QEMU (TCG) guest on Debian 12's arm64 kernel: `check`, and the
//! scheduler's exact-count test (a spinner moved between two CPUs 20
//! times). The eBPF object is the same as on amd64 (bpfel bytecode).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::kernels::{image_in, Apt};
use crate::setup;
use crate::vm::{Qemu, QemuSpec};

const TARGET: &str = "aarch64-unknown-linux-gnu";
const SYSROOT: &str = "/usr/aarch64-linux-gnu";

const INIT: &str = concat!(
    include_str!("../rig/guest-init.sh"),
    "echo \"=== done\"\npoweroff -f\n"
);

pub fn run() -> Result<()> {
    setup::ensure_packages(&["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "cpio"])?;
    ensure_emulator()?;
    setup::status(Command::new("rustup").args(["target", "add", TARGET]))?;
    let started = Instant::now();
    let bin = cross_build()?;
    eprintln!(
        "vm arm64: cross-built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let dir = setup::data_dir().join("arm64");
    let (kernel, busybox) = guest_parts(&dir)?;
    let rig = crate::vm::Rig {
        kernel: kernel.clone(),
        dir: dir.clone(),
    };
    let mut files = vec![(bin.clone(), "/bin/hostprobe".to_string())];
    files.extend(libraries(&bin)?);
    let refs: Vec<(PathBuf, &str)> = files.iter().map(|(p, g)| (p.clone(), g.as_str())).collect();
    let initrd = rig.initramfs_with("arm64", &busybox, &refs, INIT)?;
    let run_dir = std::env::temp_dir().join(format!("hostprobe-arm64-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let booting = Instant::now();
    let mut vm = Qemu::start(&QemuSpec {
        system: "qemu-system-aarch64",
        name: "hostprobe-arm64",
        kernel: &kernel,
        initrd: &initrd,
        append: "console=ttyAMA0 panic=-1 quiet",
        machine: &[
            "-M",
            "virt",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "1G",
            "-accel",
            "tcg,thread=multi",
        ],
        incoming: None,
        run_dir: &run_dir,
        thread_names: false,
    })?;
    vm.wait_for("=== end kernel", Duration::from_secs(300))?;
    let boot = booting.elapsed().as_secs_f64();
    vm.wait_for("=== done", Duration::from_secs(600))?;
    let total = booting.elapsed().as_secs_f64();
    let console = vm.serial_text().replace("\r\n", "\n");
    drop(vm);
    std::fs::write(run_dir.join("console.txt"), &console)?;
    println!(
        "arm64 guest: {} booted in {boot:.0} s, done in {total:.0} s (console: {})",
        crate::matrix::section(&console, "kernel")?.trim(),
        run_dir.join("console.txt").display()
    );
    let mut failures = Vec::new();
    let check = crate::matrix::json_section(&console, "check")?;
    for p in check["probes"].as_array().context("probes")? {
        let name = p["probe"].as_str().unwrap_or("?");
        println!(
            "  {name:<22} {}",
            if p["attached"] == true {
                format!(
                    "{} ({})",
                    p["attach_type"].as_str().unwrap_or("?"),
                    p["tracepoint"].as_str().unwrap_or("?")
                )
            } else {
                format!("- ({})", p["reason"].as_str().unwrap_or("?"))
            }
        );
        // page_fault_user is x86's, and so (for now) is ulock, which reads
        // x86-64 registers and call encodings; mm_page_alloc stays off on
        // one node.
        let expected_off = name == "page_fault_user"
            || name == "mm_page_alloc"
            || (name == "ulock" && p["reason"].as_str().is_some_and(|r| r.contains("x86-64")));
        if p["attached"] != true && !expected_off {
            failures.push(format!("{name} does not attach on arm64: {}", p["reason"]));
        }
        if name == "page_fault_user"
            && !p["reason"].as_str().is_some_and(|r| r.contains("x86 only"))
        {
            failures.push(format!("page_fault_user on arm64: {p}"));
        }
    }
    match crate::matrix::json_section(&console, "sched") {
        Ok(s) => {
            let moves = crate::matrix::moves(&s)?;
            println!("  scheduler: 20 moves set, {moves} counted");
            if moves.abs_diff(20) > 1 {
                failures.push(format!("scheduler: 20 moves set, {moves} counted"));
            }
        }
        Err(e) => failures.push(format!(
            "scheduler test: {e:#}; log:\n{}",
            crate::matrix::section(&console, "sched log").unwrap_or("")
        )),
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

/// qemu-system-aarch64 (bookworm-backports' QEMU 10 where the x86 one
/// comes from there too).
fn ensure_emulator() -> Result<()> {
    if Command::new("qemu-system-aarch64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    crate::vm::prepare()?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    if crate::vm::backports() {
        install.args(["-t", "bookworm-backports"]);
    }
    setup::status(install.arg("qemu-system-arm"))
}

fn cross_build() -> Result<PathBuf> {
    let tools = setup::run()?;
    let mut c = crate::cargo(&tools);
    c.args([
        "build",
        "--release",
        "--package",
        "hostprobe",
        "--target",
        TARGET,
    ])
    .env(
        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
        "aarch64-linux-gnu-gcc",
    );
    crate::run_ok(c)?;
    Ok(crate::target_dir().join(TARGET).join("release/hostprobe"))
}

/// Debian 12's arm64 kernel image and static busybox, unless cached.
fn guest_parts(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let busybox = dir.join("busybox");
    if let (Some(k), true) = (image_in(dir), busybox.exists()) {
        return Ok((k, busybox));
    }
    std::fs::create_dir_all(dir)?;
    let apt = Apt::new("bookworm", "arm64")?;
    let unpacked = dir.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    apt.unpack(&apt.image_of("linux-image-arm64")?, &unpacked)?;
    apt.unpack("busybox-static", &unpacked)?;
    let image =
        image_in(&unpacked.join("boot")).context("no /boot/vmlinuz-* in the arm64 kernel")?;
    let kernel = dir.join(image.file_name().context("image name")?);
    std::fs::rename(&image, &kernel)?;
    std::fs::rename(unpacked.join("bin/busybox"), &busybox)?;
    std::fs::remove_dir_all(&unpacked)?;
    Ok((kernel, busybox))
}

/// The shared libraries the cross-built binary needs (its NEEDED entries
/// and the dynamic loader), from the cross toolchain's sysroot, at the
/// guest's /lib.
fn libraries(bin: &Path) -> Result<Vec<(PathBuf, String)>> {
    let dynamic = setup::output(Command::new("aarch64-linux-gnu-readelf").arg("-d").arg(bin))?;
    let mut names: Vec<String> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_string))
        .collect();
    names.push("ld-linux-aarch64.so.1".into());
    names
        .into_iter()
        .map(|n| {
            let host = Path::new(SYSROOT).join("lib").join(&n);
            anyhow::ensure!(
                host.exists(),
                "{} missing (libc6-dev-arm64-cross)",
                host.display()
            );
            Ok((host, format!("/lib/{n}")))
        })
        .collect()
}
