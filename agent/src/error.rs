//! Typed errors of the hostprobe library. Each message says what was wrong
//! and, where there is one, what to do about it.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: invalid BTF: {reason}")]
    Btf { path: PathBuf, reason: String },
    #[error("one NUMA node: nothing is remote here, so mm_page_alloc stays detached (--numa-page-alloc always attaches it)")]
    OneNode,
    #[error("turned off by --numa-page-alloc never")]
    PageAllocOff,
    #[error("dropping capabilities failed: {reason}")]
    Capabilities { reason: String },
    #[error("kernel BTF has no {what}")]
    BtfMissing { what: String },
    #[error("kernel BTF is missing ({path}): the kernel needs CONFIG_DEBUG_INFO_BTF=y for the BTF tracepoints, or give its BTF as a file with --btf")]
    NoKernelBtf { path: PathBuf },
    #[error("--btf {path}: {reason}: give the running kernel's BTF (e.g. from btfhub, or a copy of /sys/kernel/btf/vmlinux)")]
    BtfFile { path: PathBuf, reason: String },
    #[error("--pprof {path}: cannot write it ({source}): give a path in a writable directory")]
    PprofFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tracefs is not mounted: mount it with `mount -t tracefs nodev /sys/kernel/tracing` (as root)")]
    NoTracefs,
    #[error("{reason}")]
    BtfUnusable { reason: String },
    #[error("{what} only on x86-64 for now")]
    NotThisArch { what: &'static str },
    #[error("tracepoint {tracepoint} does not exist on this kernel")]
    TracepointMissing { tracepoint: String },
    #[error("{tracepoint} exists on x86 only: {arch} has no such tracepoint, so {lost}")]
    X86Only {
        tracepoint: &'static str,
        arch: &'static str,
        lost: &'static str,
    },
    #[error("tracepoint {tracepoint} has an unexpected layout: {reason}")]
    BadFormat { tracepoint: String, reason: String },
    #[error("tracepoint {tracepoint} has unexpected BTF arguments: {reason}")]
    BadTracepointArgs { tracepoint: String, reason: String },
    #[error(
        "missing privileges: hostprobe needs {missing} to load eBPF programs; run it as root, or grant \
         them with `setcap cap_bpf,cap_perfmon+ep $(command -v hostprobe)`"
    )]
    Privileges { missing: String },
    #[error("no process with pid {pid} (it may have exited)")]
    NoSuchProcess { pid: u32 },
    #[error(
        "cannot read the memory of pid {pid}: {source} (hostprobe needs CAP_SYS_PTRACE, and the process must have memory: not a kernel thread)"
    )]
    Unreadable { pid: u32, source: std::io::Error },
    #[error("pid {pid} has no writable memory to measure (a kernel thread?)")]
    NoMemory { pid: u32 },
    #[error(
        "cannot record the time of the exact measurement in {dir}: {source}; point --exact-state-dir at a writable directory"
    )]
    ExactState {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{tid} is a thread of process {tgid}: --pid filters whole processes; use --pid {tgid}"
    )]
    ThreadNotProcess { tid: u32, tgid: u32 },
    #[error("no QEMU VM named {name:?} is running (running: {running}); name one with `-name guest=NAME`")]
    NoSuchVm { name: String, running: String },
    #[error(
        "the exact measurement of pid {pid} ran {ago:.0?} ago; it runs at most once per {min_interval:?} \
         (--exact-min-interval): it slows the target down. Omit --exact for the estimate"
    )]
    ExactTooSoon {
        pid: u32,
        ago: std::time::Duration,
        min_interval: std::time::Duration,
    },
    #[error(
        "VM {name} looks like it is migrating ({reason}): the exact measurement would slow the \
         migration down. Omit --exact for the estimate, or pass --not-migrating if it is not"
    )]
    Migrating { name: String, reason: String },
    #[error("cgroup {path:?} has no processes to measure")]
    EmptyCgroup { path: String },
    #[error("cgroup {path:?} not found under the cgroup v2 mount {root}")]
    NoSuchCgroup { path: String, root: PathBuf },
    #[error("no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo)")]
    NoCgroup2,
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] Box<aya::EbpfError>),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("cannot listen on {addr}: {source} (pick another address with --listen)")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the embedded eBPF object breaks the agent's contract: {reason}")]
    Contract { reason: String },
    #[error("no probe could be attached: {reasons}")]
    NothingAttached { reasons: String },
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Exit code for the binary: 2 for problems the user fixes by running
    /// differently (privileges, arguments), 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Privileges { .. }
            | Error::NoSuchProcess { .. }
            | Error::Unreadable { .. }
            | Error::NoMemory { .. }
            | Error::ExactState { .. }
            | Error::ThreadNotProcess { .. }
            | Error::Listen { .. }
            | Error::NoSuchVm { .. }
            | Error::EmptyCgroup { .. }
            | Error::ExactTooSoon { .. }
            | Error::Migrating { .. }
            | Error::NoSuchCgroup { .. }
            | Error::BtfFile { .. }
            | Error::PprofFile { .. } => 2,
            _ => 1,
        }
    }
}
