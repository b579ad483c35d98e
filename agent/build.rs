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
    if let Some(dir) = std::env::var_os("HOSTPROBE_BPF_LINKER_DIR") {
        let mut paths = vec![PathBuf::from(dir)];
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
    // aya-build watches the probes crate; the shared types live beside it.
    let common = root.join("../common");
    println!("cargo:rerun-if-changed={common}");
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

fn which_bpf_linker() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}
