//! QEMU virtual machines on this host, found from /proc: `qemu-system-*`
//! processes and the `qemu-kvm` of RHEL, CentOS and Fedora, their name
//! (`-name`, as libvirt passes it: `guest=NAME,debug-threads=on`) and RAM
//! size (`-m`). A guest's RAM is a mapping of its QEMU process, so its
//! dirtying is measured there.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::host::proc::{self, Mapping, MapsLine};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vm {
    pub pid: u32,
    /// `-name` (its `guest=` part), or `qemu-<pid>` when there is none.
    pub name: String,
    /// `-m` in bytes; QEMU's default is 128 MiB.
    pub ram_bytes: u64,
    /// Started with `-incoming`: the receiving end of a migration.
    pub incoming: bool,
    /// Started with `-name ...,debug-threads=on` (libvirt always does): its
    /// threads carry names, its migration thread among them.
    pub thread_names: bool,
}

/// Names of the migration threads of the sending side: QEMU 8.2 and later
/// (`mig/src/main`, `mig/src/send_N` for multifd, `mig/src/rp-thr` for the
/// return path), and before (`live_migration`, `multifdsend_N`).
const MIGRATION_THREADS: [&str; 3] = ["mig/src/", "live_migration", "multifdsend_"];

const MIB: u64 = 1024 * 1024;
const DEFAULT_RAM: u64 = 128 * MIB;

/// Every running QEMU system emulator.
pub fn find_vms() -> Vec<Vm> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut vms: Vec<Vm> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            // comm is cut at 15 bytes: "qemu-system-x86".
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            if !is_qemu(comm.trim_end(), exe.as_deref()) {
                return None;
            }
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some(from_args(pid, &args))
        })
        .collect();
    vms.sort_by_key(|v| v.pid);
    vms
}

/// Whether a thread name is a vCPU's: QEMU names them `CPU n/KVM`,
/// `CPU n/TCG` (or another accelerator) when it names threads.
pub fn is_vcpu_thread(comm: &str) -> bool {
    comm.strip_prefix("CPU ")
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(n, accel)| n.parse::<u32>().is_ok() && !accel.is_empty())
}

/// The vCPU threads of a QEMU process (empty if it names no threads).
pub fn vcpu_threads(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .is_ok_and(|c| is_vcpu_thread(c.trim_end()))
        })
        .collect();
    tids.sort_unstable();
    tids
}

/// Whether a process is a QEMU system emulator, by its name or its binary.
fn is_qemu(comm: &str, exe: Option<&std::path::Path>) -> bool {
    let qemu = |n: &str| n.starts_with("qemu-system-") || n == "qemu-kvm";
    qemu(comm)
        || exe
            .and_then(|e| e.file_name())
            .and_then(|n| n.to_str())
            .is_some_and(qemu)
}

/// The VM called `name`; the error lists the ones that exist.
pub fn find_vm(name: &str) -> Result<Vm> {
    let vms = find_vms();
    vms.iter()
        .find(|v| v.name == name)
        .cloned()
        .ok_or_else(|| Error::NoSuchVm {
            name: name.to_string(),
            running: if vms.is_empty() {
                "none".into()
            } else {
                vms.iter()
                    .map(|v| format!("{} (pid {})", v.name, v.pid))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// What `/proc/PID/cmdline` tells about a VM.
pub fn from_args(pid: u32, args: &[String]) -> Vm {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag || a.strip_prefix('-') == Some(flag))
            .and_then(|i| args.get(i + 1))
    };
    let name = value("-name")
        .and_then(|v| {
            v.split(',')
                .find_map(|p| p.strip_prefix("guest="))
                .or_else(|| v.split(',').next().filter(|p| !p.contains('=')))
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("qemu-{pid}"));
    let ram_bytes = value("-m")
        .and_then(|v| {
            let size = v
                .split(',')
                .find_map(|p| p.strip_prefix("size="))
                .or_else(|| v.split(',').next().filter(|p| !p.contains('=')))?;
            parse_size(size)
        })
        .unwrap_or(DEFAULT_RAM);
    let thread_names =
        value("-name").is_some_and(|v| v.split(',').any(|p| p == "debug-threads=on"));
    Vm {
        pid,
        name,
        ram_bytes,
        incoming: value("-incoming").is_some(),
        thread_names,
    }
}

/// QEMU's size syntax: a number with an optional K/M/G/T suffix; a bare
/// number means MiB for `-m`.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().ok()?;
    let factor = match unit.to_ascii_uppercase().as_str() {
        "" | "M" | "MB" => MIB,
        "K" | "KB" => 1024,
        "G" | "GB" => 1024 * MIB,
        "T" | "TB" => 1024 * 1024 * MIB,
        _ => return None,
    };
    Some((n * factor as f64) as u64)
}

/// The guest-RAM mappings of a QEMU process: its largest writable,
/// non-executable mappings, as many as add up to the RAM size. TCG's code
/// buffer is as large but executable (rwx), which tells them apart.
pub fn ram_mappings(maps: &[MapsLine], ram_bytes: u64) -> Vec<Mapping> {
    let mut candidates: Vec<Mapping> = maps
        .iter()
        .filter(|l| l.readable_writable() && !l.executable())
        .map(|l| l.mapping)
        .filter(|m| m.bytes() >= 16 * MIB)
        .collect();
    candidates.sort_by_key(|m| std::cmp::Reverse(m.bytes()));
    let mut total = 0;
    let mut out = Vec::new();
    for m in candidates {
        // QEMU may round a RAM block up to its alignment (2 MiB).
        if total >= ram_bytes || total.saturating_add(m.bytes()) > ram_bytes.saturating_add(4 * MIB)
        {
            continue;
        }
        total += m.bytes();
        out.push(m);
    }
    out
}

/// The RAM mappings of a running VM; an error if none can be told apart.
pub fn vm_ram(vm: &Vm) -> Result<Vec<Mapping>> {
    let ram = ram_mappings(&proc::maps(vm.pid)?, vm.ram_bytes);
    if ram.is_empty() {
        return Err(Error::Parse {
            path: PathBuf::from(format!("/proc/{}/maps", vm.pid)),
            reason: format!(
                "no writable mapping of up to {} MiB that could be the guest RAM of VM {}",
                vm.ram_bytes / MIB,
                vm.name
            ),
        });
    }
    Ok(ram)
}

/// Why a VM looks like it is migrating, if it does: it was started to
/// receive one (`-incoming`); or, where its threads carry names, a
/// migration thread of the sending side runs; or, where they do not, it
/// holds an established TCP connection that it opened (its local port is
/// not one it listens on), as an outgoing `migrate tcp:` does, but so does
/// storage on Ceph RBD, iSCSI or NBD: the thread names decide where they
/// can.
pub fn migration_suspected(vm: &Vm) -> Option<String> {
    if vm.incoming {
        return Some("it was started with -incoming (the receiving side)".into());
    }
    if vm.thread_names {
        return migration_thread(vm.pid).map(|t| format!("its migration thread {t:?} is running"));
    }
    let inodes = proc::socket_inodes(vm.pid);
    let ours: Vec<proc::TcpRow> = proc::tcp_sockets(vm.pid)
        .into_iter()
        .filter(|r| inodes.contains(&r.inode))
        .collect();
    let listening: Vec<u16> = ours
        .iter()
        .filter(|r| r.state == proc::TCP_LISTEN)
        .map(|r| r.local_port)
        .collect();
    ours.iter()
        .find(|r| r.state == proc::TCP_ESTABLISHED && !listening.contains(&r.local_port))
        .map(|r| {
            format!(
                "it has an outgoing TCP connection to {} (its threads are unnamed: \
                 start it with -name ...,debug-threads=on, as libvirt does, to tell)",
                r.remote
            )
        })
}

/// The name of a migration thread of process `pid`, if one runs.
fn migration_thread(pid: u32) -> Option<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim_end().to_string())
        .find(|c| MIGRATION_THREADS.iter().any(|m| c.starts_with(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_threads_are_told_by_name() {
        for name in ["CPU 0/KVM", "CPU 12/TCG", "CPU 3/HVF"] {
            assert!(is_vcpu_thread(name), "{name}");
        }
        for name in ["CPU", "CPU x/KVM", "CPU 1/", "qemu-system-x86", "worker"] {
            assert!(!is_vcpu_thread(name), "{name}");
        }
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn reads_name_ram_and_role_from_the_command_line() {
        let table = [
            (
                "qemu-system-x86_64 -accel tcg -m 1G -name guest=web1,debug-threads=on",
                "web1",
                1024 * MIB,
                false,
            ),
            (
                "qemu-system-x86_64 -name db -m 2048",
                "db",
                2048 * MIB,
                false,
            ),
            (
                "qemu-system-x86_64 -m size=4G,slots=2,maxmem=8G -incoming tcp:127.0.0.1:4444",
                "qemu-7",
                4096 * MIB,
                true,
            ),
            (
                "qemu-system-aarch64 --name a -m 512M",
                "a",
                512 * MIB,
                false,
            ),
            ("qemu-system-x86_64", "qemu-7", 128 * MIB, false),
        ];
        for (cmd, name, ram, incoming) in table {
            let vm = from_args(7, &args(cmd));
            assert_eq!(
                (vm.name.as_str(), vm.ram_bytes, vm.incoming),
                (name, ram, incoming),
                "{cmd}"
            );
            assert_eq!(vm.thread_names, cmd.contains("debug-threads=on"), "{cmd}");
        }
    }

    #[test]
    fn guest_ram_is_the_writable_non_executable_mapping_of_its_size() {
        // From a QEMU 10 TCG guest with -m 1G: guest RAM (rw-p) and TCG's
        // code buffer (rwxp), both about 1 GiB.
        let maps = "\
55d0c0002000-55d0c0004000 rw-p 00002000 08:01 123 /usr/bin/qemu-system-x86_64
7f0633e00000-7f0673e00000 rw-p 00000000 00:00 0
7f067c000000-7f06bbfff000 rwxp 00000000 00:00 0
7f06c0000000-7f06c4000000 rw-p 00000000 00:00 0
";
        assert_eq!(
            ram_mappings(&proc::parse_maps(maps), 1024 * MIB),
            vec![Mapping {
                start: 0x7f0633e00000,
                end: 0x7f0673e00000
            }]
        );
        // Two NUMA memory backends of 1 GiB each.
        let numa = "\
7f0000000000-7f0040000000 rw-p 00000000 00:00 0
7f0040000000-7f0080000000 rw-p 00000000 00:00 0
7f0080000000-7f00bffff000 rwxp 00000000 00:00 0
";
        assert_eq!(ram_mappings(&proc::parse_maps(numa), 2048 * MIB).len(), 2);
    }

    #[test]
    fn an_incoming_vm_is_suspected_and_this_process_is_not() {
        let me = |incoming, thread_names| Vm {
            pid: std::process::id(),
            name: "me".into(),
            ram_bytes: 0,
            incoming,
            thread_names,
        };
        assert!(migration_suspected(&me(true, false)).is_some());
        assert_eq!(migration_suspected(&me(false, false)), None);
        assert_eq!(migration_suspected(&me(false, true)), None);
    }

    #[test]
    fn qemu_is_known_by_its_name_or_its_binary() {
        use std::path::Path;
        assert!(is_qemu("qemu-system-x86", None));
        assert!(is_qemu(
            "qemu-kvm",
            Some(Path::new("/usr/libexec/qemu-kvm"))
        ));
        assert!(is_qemu(
            "CPU 0/KVM",
            Some(Path::new("/usr/libexec/qemu-kvm"))
        ));
        assert!(!is_qemu("bash", Some(Path::new("/usr/bin/bash"))));
        assert!(!is_qemu("qemu-img", Some(Path::new("/usr/bin/qemu-img"))));
    }
}
