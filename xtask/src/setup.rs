//! Set-up from zero, idempotent and quick when everything is in place.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// bpf-linker release known to work with the pinned aya versions.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and benchmarks use: perf (reference counts and
/// loads), prometheus (promtool, and the end-to-end scrape), bpftool (no
/// programs left loaded), bpftrace (the benchmark's peer), gcc and libc6-dev
/// (test helpers in C), systemd (systemd-analyze verify), golang-go (`go tool
/// pprof` reads the profiles `diagnose --pprof` writes).
const PACKAGES: [&str; 8] = [
    "linux-perf",
    "prometheus",
    "bpftool",
    "bpftrace",
    "gcc",
    "libc6-dev",
    "systemd",
    "golang-go",
];

pub struct Tools {
    /// Directory holding the `bpf-linker` built for the current nightly.
    pub bpf_linker_dir: PathBuf,
}

pub fn run() -> Result<Tools> {
    ensure_nightly()?;
    let bpf_linker_dir = ensure_bpf_linker()?;
    ensure_packages(&PACKAGES)?;
    ensure_tracefs()?;
    Ok(Tools { bpf_linker_dir })
}

pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn status(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask setup: {cmd:?}");
    let s = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !s.success() {
        bail!("{cmd:?} failed: {s}");
    }
    Ok(())
}

/// The eBPF crate builds on nightly with `-Z build-std=core`, which needs
/// the nightly's `rust-src`.
fn ensure_nightly() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        status(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

struct Nightly {
    commit: String,
    llvm_major: String,
    libllvm: PathBuf,
}

fn nightly() -> Result<Nightly> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let field = |name: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("no {name} in `rustc +nightly -vV`"))
    };
    let commit: String = field("commit-hash:")?.chars().take(12).collect();
    let llvm = field("LLVM version:")?;
    let llvm_major = llvm.split('.').next().unwrap_or_default().to_string();
    let sysroot = PathBuf::from(
        output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim(),
    );
    let lib = sysroot.join("lib");
    let libllvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM") && n.contains(".so"))
        })
        .with_context(|| format!("no libLLVM shared library in {}", lib.display()))?;
    Ok(Nightly {
        commit,
        llvm_major,
        libllvm,
    })
}

pub fn data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
        .join("hostprobe")
}

/// bpf-linker links against the nightly's own libLLVM, so it is built once
/// per nightly (keyed by its commit) and kept where its rpath points.
fn ensure_bpf_linker() -> Result<PathBuf> {
    let n = nightly()?;
    let root = data_dir().join("bpf-linker").join(&n.commit);
    let bin = root.join("bin");
    let linker = bin.join("bpf-linker");
    if linker.is_file()
        && Command::new(&linker)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Ok(bin);
    }
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} for nightly {} (LLVM {}), about 2 minutes",
        n.commit, n.llvm_major
    );
    let llvm_lib = root.join("llvm/lib");
    std::fs::create_dir_all(&llvm_lib)?;
    let file_name = n.libllvm.file_name().context("libLLVM has no file name")?;
    // `libLLVM.so` for the linker, the SONAME for the loader at run time.
    for name in [Path::new("libLLVM.so"), Path::new(file_name)] {
        let link = llvm_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&n.libllvm, &link)
            .with_context(|| format!("symlink {}", link.display()))?;
    }
    status(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{}", n.llvm_major),
            ])
            .arg("--root")
            .arg(&root)
            .env("LLVM_PREFIX", root.join("llvm")),
    )?;
    output(Command::new(&linker).arg("--version"))
        .context("the freshly built bpf-linker does not start")?;
    Ok(bin)
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "Debian packages missing: {}; run as root or `sudo apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    status(Command::new("apt-get").args(["update", "-q"]))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn ensure_tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    if !is_root() {
        bail!("tracefs is not mounted and mounting it needs root: `sudo mount -t tracefs nodev /sys/kernel/tracing`");
    }
    status(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() == "0")
}
