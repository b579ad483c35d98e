//! Readers of `/proc`: each file's parser is a pure function over its text
//! (unit-tested on captured samples), next to the reader that fetches it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

pub const PAGE: u64 = 4096;

/// The running kernel's release, e.g. `6.18.0-1-amd64`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The process a thread id belongs to (`Tgid:` of `/proc/TID/status`).
pub fn tgid(tid: u32) -> Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .map_err(|_| Error::NoSuchProcess { pid: tid })?;
    Ok(status_field(&status, "Tgid").unwrap_or(tid))
}

/// A numeric `Name:\tvalue` field of a `/proc/PID/status` or fdinfo file.
pub fn status_field(text: &str, name: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// `/proc/PID/task/TID/schedstat`: on-CPU ns, run-queue wait ns (what
/// KVM reports to a guest as steal time for a vCPU thread), slices run.
pub fn parse_schedstat(text: &str) -> Option<(u64, u64, u64)> {
    let mut f = text.split_whitespace().map(|x| x.parse::<u64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

/// A `name:\tvalue` line of a `/proc/PID/fdinfo/FD` file, as u64.
pub fn fdinfo_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// The start time of a process (field 22 of `/proc/PID/stat`, in clock
/// ticks since boot): with the pid, it names one process for good.
pub fn start_time(pid: u32) -> Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_start_time(&s))
        .ok_or(Error::NoSuchProcess { pid })
}

fn stat_start_time(stat: &str) -> Option<String> {
    // The command name may hold spaces and parentheses: fields count from
    // the last ')'.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_string)
}

/// Per-CPU (busy, total) jiffies from `/proc/stat`.
pub fn cpu_times() -> Vec<(u64, u64)> {
    parse_cpu_times(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
}

/// Per-CPU (busy, total) jiffies from the `cpuN` lines of `/proc/stat`.
pub fn parse_cpu_times(stat: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        let Some(cpu) = f.next().and_then(|c| c.strip_prefix("cpu")) else {
            continue;
        };
        let Ok(i) = cpu.parse::<usize>() else {
            continue;
        };
        // A CPU number far beyond any machine is not a CPU line.
        if i >= 1 << 16 {
            continue;
        }
        let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal ...
        let total = v.iter().take(8).fold(0u64, |a, x| a.saturating_add(*x));
        let idle = v
            .get(3)
            .copied()
            .unwrap_or(0)
            .saturating_add(v.get(4).copied().unwrap_or(0));
        if out.len() <= i {
            out.resize(i + 1, (0, 0));
        }
        out[i] = (total - idle.min(total), total);
    }
    out
}

/// Resident memory of a process (`Rss` of `/proc/PID/smaps_rollup`).
pub fn resident_bytes(pid: u32) -> Result<u64> {
    let path = PathBuf::from(format!("/proc/{pid}/smaps_rollup"));
    let text = std::fs::read_to_string(&path).map_err(|_| Error::NoSuchProcess { pid })?;
    text.lines()
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| Error::Parse {
            path,
            reason: "no Rss line".into(),
        })
}

/// Bytes of a process resident on each NUMA node (`None`: unreadable,
/// e.g. the process exited).
pub fn resident_by_node(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")).ok()?;
    Some(parse_numa_maps(&text))
}

/// Bytes resident on each node, from `/proc/PID/numa_maps` text: each
/// mapping's `N<node>=<pages>` counts times its `kernelpagesize_kB`.
pub fn parse_numa_maps(text: &str) -> Vec<u64> {
    let mut by_node: Vec<u64> = Vec::new();
    for line in text.lines() {
        let mut pages: Vec<(usize, u64)> = Vec::new();
        let mut page_kib = 4u64;
        for field in line.split_whitespace() {
            if let Some(v) = field.strip_prefix("kernelpagesize_kB=") {
                page_kib = v.parse().unwrap_or(4);
            } else if let Some((n, count)) = field.strip_prefix('N').and_then(|f| f.split_once('='))
            {
                if let (Ok(n), Ok(c)) = (n.parse::<usize>(), count.parse::<u64>()) {
                    // Node ids are small; a huge one is not a node.
                    if n < 1 << 12 {
                        pages.push((n, c));
                    }
                }
            }
        }
        for (n, c) in pages {
            if by_node.len() <= n {
                by_node.resize(n + 1, 0);
            }
            by_node[n] = by_node[n].saturating_add(c.saturating_mul(page_kib.saturating_mul(1024)));
        }
    }
    by_node
}

/// A mapping of a process, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
}

impl Mapping {
    pub fn bytes(&self) -> u64 {
        self.end - self.start
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsLine {
    pub mapping: Mapping,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// Offset in the mapped file.
    pub offset: u64,
    /// Inode of the mapped file, 0 for anonymous memory.
    pub inode: u64,
    /// The path (with ` (deleted)` if the file was removed) or pseudo-name
    /// (`[stack]`), empty for anonymous memory.
    pub name: String,
}

impl MapsLine {
    pub fn readable_writable(&self) -> bool {
        self.perms.starts_with("rw")
    }

    pub fn executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }
}

/// `/proc/PID/maps` of a process.
pub fn maps(pid: u32) -> Result<Vec<MapsLine>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|_| Error::NoSuchProcess { pid })?;
    Ok(parse_maps(&text))
}

/// Lines of `/proc/PID/maps` text: `start-end perms offset dev inode
/// [name]`, the name being the rest of the line (paths may hold spaces).
pub fn parse_maps(text: &str) -> Vec<MapsLine> {
    text.lines()
        .filter_map(|l| {
            let mut rest = l;
            let mut field = || {
                let t = rest.trim_start();
                let end = t.find(' ').unwrap_or(t.len());
                let (f, r) = t.split_at(end);
                rest = r;
                f
            };
            let (range, perms, offset, _dev, inode) = (field(), field(), field(), field(), field());
            let (a, b) = range.split_once('-')?;
            let mapping = Mapping {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
            };
            (mapping.end > mapping.start).then(|| MapsLine {
                mapping,
                perms: perms.to_string(),
                offset: u64::from_str_radix(offset, 16).unwrap_or(0),
                inode: inode.parse().unwrap_or(0),
                name: rest.trim_start().to_string(),
            })
        })
        .collect()
}

/// Readable, writable mappings that hold a process's data: everything but
/// the kernel's special ones (`[vvar]`, `[vsyscall]`, `[vdso]`).
pub fn writable_mappings(lines: &[MapsLine]) -> Vec<Mapping> {
    lines
        .iter()
        .filter(|l| l.readable_writable() && !l.name.starts_with("[v"))
        .map(|l| l.mapping)
        .collect()
}

/// `/proc/PID/pagemap` bits.
pub const PM_PRESENT: u64 = 1 << 63;
pub const PM_SWAP: u64 = 1 << 62;
pub const PM_SOFT_DIRTY: u64 = 1 << 55;

/// Largest single read of pagemap entries.
const PAGEMAP_CHUNK: u64 = 64;

/// Pagemap entries of every page of `m` (0 where the read failed: an
/// unmapped range reads as absent).
pub fn pagemap_entries(pagemap: &File, m: &Mapping) -> Vec<u64> {
    let pages = m.bytes() / PAGE;
    let mut out = Vec::with_capacity(pages as usize);
    let mut buf = vec![0u8; (PAGEMAP_CHUNK * 8) as usize];
    let mut p = 0;
    while p < pages {
        let n = (pages - p).min(PAGEMAP_CHUNK);
        let b = &mut buf[..(n * 8) as usize];
        if pagemap.read_exact_at(b, (m.start / PAGE + p) * 8).is_err() {
            out.extend(std::iter::repeat_n(0, n as usize));
        } else {
            out.extend(
                b.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
            );
        }
        p += n;
    }
    out
}

/// This process's `/proc/self/mountinfo`.
pub fn self_mountinfo() -> Result<String> {
    let path = Path::new("/proc/self/mountinfo");
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Mount point of the cgroup2 filesystem in `/proc/self/mountinfo` text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mount_point = pre.split_whitespace().nth(4)?;
        (post.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// The kernel's internal dev_t (`MAJOR << 20 | MINOR`) of each mounted
/// filesystem -> its source (e.g. `/dev/vda`), or `fstype:major:minor`
/// when the source is not a device path.
pub fn mount_devices(mountinfo: &str) -> std::collections::HashMap<u32, String> {
    let mut out = std::collections::HashMap::new();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(sep) = f.iter().position(|&x| x == "-") else {
            continue;
        };
        let (Some(devno), Some(source)) = (f.get(2), f.get(sep + 2)) else {
            continue;
        };
        let Some((major, minor)) = devno.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            continue;
        };
        // dev_t holds 12 bits of major and 20 of minor.
        if major >= 1 << 12 || minor >= 1 << 20 {
            continue;
        }
        let fstype = f.get(sep + 1).copied().unwrap_or("");
        let name = if source.starts_with('/') {
            (*source).to_string()
        } else {
            format!("{fstype}:{devno}")
        };
        out.entry(major << 20 | minor).or_insert(name);
    }
    out
}

/// A row of `/proc/PID/net/tcp` (or `tcp6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRow {
    pub local_port: u16,
    /// `address:port`; IPv4 in dotted form, IPv6 as the kernel's hex.
    pub remote: String,
    /// The kernel's TCP state (`0x01` established, `0x0A` listen).
    pub state: u8,
    pub inode: u64,
}

pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_LISTEN: u8 = 0x0A;

/// The TCP sockets of a process's network namespace, IPv4 and IPv6.
pub fn tcp_sockets(pid: u32) -> Vec<TcpRow> {
    ["tcp", "tcp6"]
        .iter()
        .flat_map(|t| {
            parse_tcp(&std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).unwrap_or_default())
        })
        .collect()
}

/// Rows of `/proc/net/tcp` text (the header line is skipped).
pub fn parse_tcp(text: &str) -> Vec<TcpRow> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let (raddr, rport) = f.get(2)?.split_once(':')?;
            let remote = format!("{}:{}", hex_ip(raddr), u16::from_str_radix(rport, 16).ok()?);
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            let inode = f.get(9)?.parse().ok()?;
            Some(TcpRow {
                local_port,
                remote,
                state,
                inode,
            })
        })
        .collect()
}

/// An IPv4 address as /proc/net/tcp prints it (little-endian hex); IPv6
/// stays hex.
fn hex_ip(h: &str) -> String {
    match u32::from_str_radix(h, 16) {
        Ok(v) if h.len() == 8 => std::net::Ipv4Addr::from(v.swap_bytes()).to_string(),
        _ => h.to_string(),
    }
}

/// Inodes of the sockets a process holds open (`/proc/PID/fd` links).
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// HZ, measured: jiffies advanced over a short sleep by the
/// `/proc/timer_list` clock, snapped to the configurable values.
pub fn kernel_hz() -> Option<f64> {
    let read = || -> Option<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/timer_list").ok()?;
        parse_timer_list(&text)
    };
    let (ns0, j0) = read()?;
    std::thread::sleep(Duration::from_millis(60));
    let (ns1, j1) = read()?;
    let measured = j1.checked_sub(j0)? as f64 / (ns1.checked_sub(ns0)? as f64 / 1e9);
    snap_hz(measured)
}

/// (`now at N nsecs`, first `jiffies: N`) of `/proc/timer_list` text.
pub fn parse_timer_list(text: &str) -> Option<(u64, u64)> {
    let now = text
        .lines()
        .find_map(|l| l.strip_prefix("now at "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let jiffies = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("jiffies: "))?
        .trim()
        .parse()
        .ok()?;
    Some((now, jiffies))
}

/// The configurable HZ value a measured rate is, if it is one.
fn snap_hz(measured: f64) -> Option<f64> {
    [100.0, 250.0, 300.0, 1000.0]
        .into_iter()
        .min_by(|a: &f64, b: &f64| (a - measured).abs().total_cmp(&(b - measured).abs()))
        .filter(|hz| (hz - measured).abs() < 0.2 * hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_stat() {
        let a = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\nintr 1\n";
        assert_eq!(parse_cpu_times(a), vec![(10, 50), (10, 50)]);
        assert_eq!(parse_cpu_times("cpu99999999999 1 2\n"), vec![]);
    }

    #[test]
    fn reads_numa_maps() {
        let text = "\
7f0000000000 bind:1 anon=65536 dirty=65536 N1=65536 kernelpagesize_kB=4
7f1000000000 default file=/usr/lib/libc.so.6 mapped=100 mapmax=20 N0=60 N1=40 kernelpagesize_kB=4
7f2000000000 default anon=2 dirty=2 N0=2 kernelpagesize_kB=2048
";
        let b = parse_numa_maps(text);
        assert_eq!(b, vec![60 * 4096 + 2 * 2048 * 1024, (65536 + 40) * 4096]);
        assert_eq!(parse_numa_maps(""), Vec::<u64>::new());
    }

    #[test]
    fn keeps_readable_writable_mappings_only() {
        let maps = "\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 123 /usr/bin/qemu
55d0c0001000-55d0c0002000 r-xp 00001000 08:01 123 /usr/bin/qemu
55d0c0002000-55d0c0004000 rw-p 00002000 08:01 123 /usr/bin/qemu
7f0000000000-7f0040000000 rw-s 00000000 00:01 9 /memfd:pc.ram (deleted)
7f0040000000-7f0040001000 ---p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
7ffd00022000-7ffd00024000 r--p 00000000 00:00 0 [vvar]
";
        let lines = parse_maps(maps);
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[3].name, "/memfd:pc.ram (deleted)");
        assert_eq!((lines[1].offset, lines[1].inode), (0x1000, 123));
        assert_eq!(lines[4].name, "");
        let spaced = parse_maps("7f00-7f10 r-xp 00002000 08:01 77    /opt/my app/lib x.so\n");
        assert_eq!(spaced[0].name, "/opt/my app/lib x.so");
        assert_eq!(spaced[0].offset, 0x2000);
        let m = writable_mappings(&lines);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1],
            Mapping {
                start: 0x7f0000000000,
                end: 0x7f0040000000
            }
        );
    }

    #[test]
    fn finds_the_cgroup2_mount_in_unified_and_hybrid_layouts() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
                      32 30 0:28 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_mount("22 1 0:5 / /proc rw - proc proc rw\n"), None);
    }

    #[test]
    fn names_devices_from_mountinfo() {
        let text = "\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
31 22 0:40 / /tmp rw - tmpfs tmpfs rw
";
        let d = mount_devices(text);
        assert_eq!(d[&(253 << 20)], "/dev/vda");
        assert_eq!(d[&40], "tmpfs:0:40");
    }

    #[test]
    fn reads_tcp_tables() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:115C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D2F0 0100007F:115C 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1
";
        let row = |local_port, remote: &str, state, inode| TcpRow {
            local_port,
            remote: remote.into(),
            state,
            inode,
        };
        assert_eq!(
            parse_tcp(text),
            vec![
                row(4444, "0.0.0.0:0", TCP_LISTEN, 1111),
                row(0xD2F0, "127.0.0.1:4444", TCP_ESTABLISHED, 2222)
            ]
        );
    }

    #[test]
    fn reads_timer_list_and_snaps_hz() {
        let text = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 1234567 nsecs\n\
                    cpu: 0\n  .idle_jiffies   : 4297413804\njiffies: 4297413900\n";
        assert_eq!(parse_timer_list(text), Some((1_234_567, 4_297_413_900)));
        assert_eq!(snap_hz(1013.0), Some(1000.0));
        assert_eq!(snap_hz(262.0), Some(250.0));
        assert_eq!(snap_hz(290.0), Some(300.0));
        assert_eq!(snap_hz(96.0), Some(100.0));
        assert_eq!(snap_hz(600.0), None);
    }

    #[test]
    fn this_kernel_hz_is_measurable() {
        if std::fs::read_to_string("/proc/timer_list").is_ok() {
            assert!(kernel_hz().is_some());
        }
    }

    #[test]
    fn reads_status_fdinfo_and_stat_fields() {
        let info = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nrun_cnt:\t0\nrecursion_misses:\t163\nverified_insns:\t60\n";
        assert_eq!(fdinfo_field(info, "recursion_misses"), Some(163));
        assert_eq!(fdinfo_field(info, "run_cnt"), Some(0));
        assert_eq!(fdinfo_field(info, "recursion"), None);
        assert_eq!(fdinfo_field("", "recursion_misses"), None);
        assert_eq!(
            status_field("Name:\tx\nTgid:\t42\nPid:\t43\n", "Tgid"),
            Some(42)
        );
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        assert_eq!(stat_start_time(stat).as_deref(), Some("777"));
        assert_eq!(tgid(std::process::id()).unwrap(), std::process::id());
        assert!(start_time(std::process::id()).is_ok());
    }
}
