//! The QEMU rig (see the design's VMRIG.md): QEMU 10 from bookworm-backports
//! under TCG, Debian's 6.1 guest kernel, a busybox initramfs with static
//! test programs, guests driven over QMP.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::kernels::{image_in, Apt};
use crate::setup;

/// bookworm's QEMU 7.2 corrupts a guest that writes memory while migrating
/// under TCG (fixed in 9.0); backports has 10.
const MIN_QEMU_MAJOR: u32 = 9;
const BACKPORTS: &str = "/etc/apt/sources.list.d/hostprobe-bookworm-backports.sources";

pub struct Rig {
    pub kernel: PathBuf,
    pub dir: PathBuf,
}

/// Installs QEMU and the guest's parts, builds the static guest programs.
pub fn prepare() -> Result<Rig> {
    ensure_qemu()?;
    setup::ensure_packages(&["busybox-static", "cpio", "gcc", "libc6-dev"])?;
    let dir = setup::data_dir().join("vm");
    std::fs::create_dir_all(&dir)?;
    let kernel = guest_kernel(&dir)?;
    Ok(Rig { kernel, dir })
}

fn qemu_major() -> Option<u32> {
    let out = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(3)?;
    version.split('.').next()?.parse().ok()
}

/// Whether QEMU comes from bookworm-backports here (a bookworm host).
pub fn backports() -> bool {
    std::fs::read_to_string("/etc/os-release").is_ok_and(|t| {
        t.lines()
            .any(|l| l.strip_prefix("VERSION_CODENAME=") == Some("bookworm"))
    })
}

fn ensure_qemu() -> Result<()> {
    if qemu_major().is_some_and(|m| m >= MIN_QEMU_MAJOR) {
        return Ok(());
    }
    if backports() && !Path::new(BACKPORTS).exists() {
        std::fs::write(
            BACKPORTS,
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .with_context(|| format!("writing {BACKPORTS} (needs root)"))?;
    }
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "-q", "--no-install-recommends"]);
    if backports() {
        install.args(["-t", "bookworm-backports"]);
    }
    install
        .arg("qemu-system-x86")
        .env("DEBIAN_FRONTEND", "noninteractive");
    setup::status(Command::new("apt-get").args(["update", "-q"]))?;
    setup::status(&mut install)?;
    match qemu_major() {
        Some(m) if m >= MIN_QEMU_MAJOR => Ok(()),
        found => bail!(
            "QEMU >= {MIN_QEMU_MAJOR} is needed for live migration under TCG, found {found:?}; \
             install qemu-system-x86 from bookworm-backports"
        ),
    }
}

/// Debian 6.1's kernel image, unpacked from its package (not installed:
/// the host's /boot stays untouched).
fn guest_kernel(dir: &Path) -> Result<PathBuf> {
    if let Some(k) = find_vmlinuz(dir) {
        return Ok(k);
    }
    let apt = Apt::host();
    let pkg = apt.image_of("linux-image-amd64")?;
    anyhow::ensure!(
        pkg.starts_with("linux-image-6.1"),
        "linux-image-amd64 depends on {pkg}, not a 6.1 kernel: is this Debian bookworm?"
    );
    apt.unpack(&pkg, &dir.join("kernel"))?;
    find_vmlinuz(dir).context("the kernel package holds no /boot/vmlinuz-*")
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    image_in(&dir.join("kernel/boot")).filter(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-6.1"))
    })
}

impl Rig {
    /// Compiles a static C program from `xtask/rig/` for the guest.
    pub fn static_program(&self, name: &str) -> Result<PathBuf> {
        let src = crate::workspace_root().join(format!("xtask/rig/{name}.c"));
        let out = self.dir.join(name);
        setup::status(
            Command::new("gcc")
                // Frame pointers in the loads' own code, as an application
                // that wants its stacks read has them.
                .args([
                    "-O2",
                    "-fno-omit-frame-pointer",
                    "-static",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-o",
                ])
                .arg(&out)
                .arg(&src),
        )?;
        Ok(out)
    }

    /// An initramfs of busybox, the given files (host path, guest path) and
    /// `/init` running `init_script` after mounting /proc and /sys.
    pub fn initramfs(
        &self,
        name: &str,
        files: &[(PathBuf, &str)],
        init_script: &str,
    ) -> Result<PathBuf> {
        self.initramfs_with(name, Path::new("/bin/busybox"), files, init_script)
    }

    /// The same with another (e.g. arm64) static busybox.
    pub fn initramfs_with(
        &self,
        name: &str,
        busybox: &Path,
        files: &[(PathBuf, &str)],
        init_script: &str,
    ) -> Result<PathBuf> {
        let stage = self.dir.join(format!("{name}.d"));
        let _ = std::fs::remove_dir_all(&stage);
        for d in ["bin", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(stage.join(d))?;
        }
        std::fs::copy(busybox, stage.join("bin/busybox"))
            .with_context(|| format!("copying {} (package busybox-static)", busybox.display()))?;
        for (src, dst) in files {
            let to = stage.join(dst.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().expect("guest paths have a parent"))?;
            std::fs::copy(src, &to).with_context(|| format!("copying {}", src.display()))?;
        }
        let init = format!(
            "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\n\
             mount -t sysfs sys /sys\nmount -t devtmpfs dev /dev 2>/dev/null\n{init_script}\n"
        );
        let init_path = stage.join("init");
        std::fs::write(&init_path, init)?;
        setup::status(Command::new("chmod").arg("+x").arg(&init_path))?;
        let out = self.dir.join(format!("{name}.cpio.gz"));
        setup::status(
            Command::new("sh")
                .arg("-c")
                .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$0\"")
                .arg(&out)
                .current_dir(&stage),
        )?;
        Ok(out)
    }
}

/// The emulator of the amd64 guests.
pub const X86_64: &str = "qemu-system-x86_64";

/// A running QEMU, killed when dropped.
pub struct Qemu {
    child: Child,
    pub name: String,
    pub serial: PathBuf,
    pub qmp_path: PathBuf,
}

pub struct QemuSpec<'a> {
    /// `qemu-system-x86_64` ([`X86_64`]) or another system emulator.
    pub system: &'a str,
    pub name: &'a str,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub append: &'a str,
    /// Machine arguments (accelerator, CPUs, memory, NUMA).
    pub machine: &'a [&'a str],
    pub incoming: Option<String>,
    pub run_dir: &'a Path,
    /// `-name ...,debug-threads=on`, as libvirt starts every VM: QEMU names
    /// its threads (`CPU n/TCG`, ...).
    pub thread_names: bool,
}

impl Qemu {
    pub fn start(spec: &QemuSpec) -> Result<Self> {
        let serial = spec.run_dir.join(format!("{}.serial", spec.name));
        let qmp_path = spec.run_dir.join(format!("{}.qmp", spec.name));
        let _ = std::fs::remove_file(&serial);
        let _ = std::fs::remove_file(&qmp_path);
        let mut c = Command::new(spec.system);
        c.args(spec.machine)
            .arg("-kernel")
            .arg(spec.kernel)
            .arg("-initrd")
            .arg(spec.initrd)
            .args(["-append", spec.append])
            .args(["-display", "none", "-no-reboot", "-nodefaults"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .args([
                "-name",
                &if spec.thread_names {
                    format!("guest={},debug-threads=on", spec.name)
                } else {
                    format!("guest={}", spec.name)
                },
            ]);
        if let Some(uri) = &spec.incoming {
            c.args(["-incoming", uri]);
        }
        // QEMU's own messages (e.g. the receiving side of a cancelled
        // migration) go to a log beside the console, not into the table.
        let log = std::fs::File::create(spec.run_dir.join(format!("{}.log", spec.name)))?;
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = c
            .spawn()
            .with_context(|| format!("starting {}", spec.system))?;
        Ok(Self {
            child,
            name: spec.name.to_string(),
            serial,
            qmp_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn serial_text(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Waits until the guest prints `pattern` on its console.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.serial_text().contains(pattern) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}); console:\n{}",
                    self.name,
                    self.serial_text()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "{} did not print {pattern:?} within {timeout:?}; console:\n{}",
            self.name,
            self.serial_text()
        )
    }

    /// Waits until QEMU exits (or the user stops it).
    pub fn wait(&mut self) -> Result<()> {
        let status = self.child.wait()?;
        bail!("{} exited: {status}", self.name)
    }

    pub fn qmp(&self) -> Result<Qmp> {
        Qmp::connect(&self.qmp_path, Duration::from_secs(20))
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A QMP session: JSON lines on a unix socket.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let t0 = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if t0.elapsed() > timeout => {
                    return Err(e).with_context(|| format!("connecting to QMP {}", path.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut q = Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        q.read()?; // greeting
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QMP connection closed");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// Runs a command and returns its `return` value; events are skipped.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let msg = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{msg}")?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {command}: {e}");
            }
        }
    }
}
