//! Guest kernels of the matrix: Debian's images of the kernels fleets run,
//! downloaded with a private apt configuration (the host's sources and
//! /boot stay untouched), unpacked, and cached as the image plus the few
//! modules the guest tests load (design: KERNELS.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::setup;

/// One kernel of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    /// How the matrix names it.
    pub name: &'static str,
    /// The Debian release that serves it.
    pub suite: &'static str,
    /// The metapackage that depends on its image.
    pub meta: &'static str,
}

/// Debian 11, 12, 13 and 13's PREEMPT_RT build, amd64.
pub const MATRIX: [KernelSpec; 4] = [
    KernelSpec {
        name: "5.10",
        suite: "bullseye",
        meta: "linux-image-amd64",
    },
    KernelSpec {
        name: "6.1",
        suite: "bookworm",
        meta: "linux-image-amd64",
    },
    KernelSpec {
        name: "6.12",
        suite: "trixie",
        meta: "linux-image-amd64",
    },
    KernelSpec {
        name: "6.12-rt",
        suite: "trixie",
        meta: "linux-image-rt-amd64",
    },
];

/// Modules the guest loads (a RAM block device for the file-dirtying test:
/// Debian builds every disk filesystem and block driver as a module).
const MODULES: [&str; 1] = ["kernel/drivers/block/brd.ko"];

/// An unpacked kernel: its image, `uname -r`, and modules by guest path.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub spec: KernelSpec,
    pub vmlinuz: PathBuf,
    pub release: String,
    pub modules: Vec<(PathBuf, String)>,
}

pub fn find(name: &str) -> Result<KernelSpec> {
    MATRIX
        .iter()
        .find(|k| k.name == name)
        .copied()
        .with_context(|| {
            let names: Vec<&str> = MATRIX.iter().map(|k| k.name).collect();
            format!("unknown kernel {name}: one of {}", names.join(", "))
        })
}

/// An apt configuration: the host's own, or a private one for one Debian
/// release and architecture (its own sources, lists and cache under the
/// data directory).
pub struct Apt {
    options: Vec<String>,
}

impl Apt {
    /// The host's sources, as they are (no update).
    pub fn host() -> Self {
        Self {
            options: Vec::new(),
        }
    }

    pub fn new(suite: &str, arch: &str) -> Result<Self> {
        let dir = setup::data_dir()
            .join("kernels")
            .join(format!("apt-{suite}-{arch}"));
        for d in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let mirror = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("URIs:"))
                    .map(|u| u.trim().to_string())
            })
            .unwrap_or_else(|| "http://deb.debian.org/debian".into());
        std::fs::write(
            dir.join("sources.list"),
            format!("deb [arch={arch}] {mirror} {suite} main\n"),
        )?;
        let apt = Self {
            options: vec![
                format!(
                    "-o=Dir::Etc::sourcelist={}",
                    dir.join("sources.list").display()
                ),
                "-o=Dir::Etc::sourceparts=/dev/null".to_string(),
                format!("-o=Dir::State::Lists={}", dir.join("lists").display()),
                format!("-o=Dir::Cache={}", dir.join("cache").display()),
                format!("-o=APT::Architecture={arch}"),
                format!("-o=APT::Architectures::={arch}"),
            ],
        };
        setup::status(
            Command::new("apt-get")
                .args(&apt.options)
                .args(["update", "-q"]),
        )?;
        Ok(apt)
    }

    /// The kernel image package a metapackage depends on.
    pub fn image_of(&self, meta: &str) -> Result<String> {
        let depends = setup::output(
            Command::new("apt-cache")
                .args(&self.options)
                .args(["depends", meta]),
        )?;
        Ok(depends
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .with_context(|| format!("{meta} depends on no kernel image"))?
            .to_string())
    }

    /// Downloads `package` and unpacks it into `to`.
    pub fn unpack(&self, package: &str, to: &Path) -> Result<()> {
        let download = to.with_extension("download");
        let _ = std::fs::remove_dir_all(&download);
        std::fs::create_dir_all(&download)?;
        setup::status(
            Command::new("apt-get")
                .args(&self.options)
                .args(["download", package])
                .current_dir(&download),
        )?;
        let deb = std::fs::read_dir(&download)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb")?;
        setup::status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(to))?;
        std::fs::remove_dir_all(&download)?;
        Ok(())
    }
}

/// The kernel, downloaded and unpacked unless cached.
pub fn fetch(spec: KernelSpec) -> Result<Kernel> {
    let dir = setup::data_dir().join("kernels").join(spec.name);
    if let Ok(k) = cached(spec, &dir) {
        return Ok(k);
    }
    setup::ensure_packages(&["xz-utils"])?;
    let apt = Apt::new(spec.suite, "amd64")?;
    let package = apt.image_of(spec.meta)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let unpacked = dir.join("unpacked");
    apt.unpack(&package, &unpacked)?;
    // Keep the image, its config and the modules the tests load.
    let boot = unpacked.join("boot");
    let image = image_in(&boot).context("the package holds no /boot/vmlinuz-*")?;
    let release = release_of(&image)?;
    std::fs::rename(&image, dir.join(format!("vmlinuz-{release}")))?;
    let _ = std::fs::rename(
        boot.join(format!("config-{release}")),
        dir.join(format!("config-{release}")),
    );
    let modules = unpacked.join("lib/modules").join(&release);
    let modules = if modules.exists() {
        modules
    } else {
        unpacked.join("usr/lib/modules").join(&release)
    };
    for m in MODULES {
        let to = dir.join(Path::new(m).file_name().context("module name")?);
        let xz = modules.join(format!("{m}.xz"));
        if xz.exists() {
            let out = Command::new("xz")
                .args(["-dc"])
                .arg(&xz)
                .output()
                .context("xz")?;
            anyhow::ensure!(out.status.success(), "xz -d {}", xz.display());
            std::fs::write(&to, out.stdout)?;
        } else {
            std::fs::copy(modules.join(m), &to).with_context(|| format!("{m} of {release}"))?;
        }
    }
    std::fs::remove_dir_all(&unpacked)?;
    cached(spec, &dir)
}

pub fn image_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// `uname -r` of an image named `vmlinuz-RELEASE`.
fn release_of(image: &Path) -> Result<String> {
    image
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .map(str::to_string)
        .with_context(|| format!("{} is not vmlinuz-RELEASE", image.display()))
}

fn cached(spec: KernelSpec, dir: &Path) -> Result<Kernel> {
    let vmlinuz = image_in(dir).context("not cached")?;
    let release = release_of(&vmlinuz)?;
    let mut modules = Vec::new();
    for m in MODULES {
        let name = Path::new(m).file_name().context("module name")?;
        let host = dir.join(name);
        anyhow::ensure!(host.exists(), "not cached");
        modules.push((
            host,
            format!("/lib/modules/{release}/{}", name.to_string_lossy()),
        ));
    }
    Ok(Kernel {
        spec,
        vmlinuz,
        release,
        modules,
    })
}
