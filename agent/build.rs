//! Builds the kernel programs (`ebpf-probes/probes`) for bpfel-unknown-none
//! on the nightly toolchain through aya-build, so that the `hostprobe`
//! binary can embed the object. bpf-linker must be on PATH; `cargo xtask
//! setup` installs it in a per-nightly directory that is added here too.
use std::path::PathBuf;

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let probes = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == "hostprobe-probes")
        .ok_or_else(|| anyhow!("hostprobe-probes package not found"))?;
    let root = probes
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent of {}", probes.manifest_path))?;

    println!("cargo:rerun-if-env-changed=HOSTPROBE_BPF_LINKER_DIR");
    let linker_dir = std::env::var_os("HOSTPROBE_BPF_LINKER_DIR")
        .map(PathBuf::from)
        .or_else(setup_linker_dir);
    if let Some(dir) = linker_dir {
        let mut paths = vec![dir];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        // aya-build runs cargo and bpf-linker with this process's PATH.
        std::env::set_var("PATH", std::env::join_paths(paths)?);
    }
    if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker not found on PATH: run `cargo xtask setup` (it builds one for this nightly) \
             or build through `cargo xtask build`"
        ));
    }
    // Watch every source file of the kernel programs and the shared types:
    // a directory in rerun-if-changed only tracks the directory's own mtime.
    let probes_dir = PathBuf::from(root.as_str());
    for dir in [probes_dir.clone(), probes_dir.join("../common")] {
        watch(&dir)?;
    }
    // aya-build relays the nested cargo's progress lines as warnings.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [Package {
            name: "hostprobe-probes",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

fn watch(dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            watch(&path)?;
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Ok(())
}

/// Where `cargo xtask setup` keeps the bpf-linker built for the current
/// nightly: `$XDG_DATA_HOME/hostprobe/bpf-linker/<nightly commit>/bin`.
fn setup_linker_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("rustc")
        .args(["+nightly", "-vV"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let commit: String = text
        .lines()
        .find_map(|l| l.strip_prefix("commit-hash:"))?
        .trim()
        .chars()
        .take(12)
        .collect();
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    let dir = data.join("hostprobe/bpf-linker").join(commit).join("bin");
    dir.join("bpf-linker").is_file().then_some(dir)
}

fn which_bpf_linker() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}
