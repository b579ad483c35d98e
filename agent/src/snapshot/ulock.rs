//! The user-space lock section: futex waits per workload, per function and
//! per symbolised stack (the rows `diagnose` prints like `pprof -top` and
//! writes as a pprof profile).

use serde::Serialize;

use super::LatencySummary;

#[derive(Debug, Clone, Default, Serialize)]
pub struct UserLockSection {
    /// Per workload (cgroup of the waiter), top-K + `other`.
    pub workloads: Vec<UserLockWorkload>,
    /// Per (workload, innermost application function), top-K + `other`:
    /// the metric labels.
    pub functions: Vec<UserLockFunction>,
    /// Per (workload, stack), most waited first.
    pub stacks: Vec<UserLockStack>,
    /// Binaries whose stacks end early (no frame pointers), with how many
    /// of the rows above end in them.
    pub truncated: Vec<TruncatedBinary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserLockWorkload {
    pub workload: String,
    pub contentions: u64,
    pub wait_seconds: f64,
    pub wait: LatencySummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserLockFunction {
    pub workload: String,
    /// The innermost function outside the C library and the runtime's
    /// lock code, `(unknown)` or `other`.
    pub function: String,
    pub contentions: u64,
    pub wait_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserLockStack {
    pub workload: String,
    /// The process the stack was seen in (its last, for a shared row).
    pub pid: u32,
    pub contentions: u64,
    pub wait_seconds: f64,
    pub max_wait_seconds: f64,
    /// The innermost application function (as `functions` labels it).
    pub function: String,
    /// Innermost first.
    pub frames: Vec<UserFrame>,
    /// The walk ended before the thread's first function: a binary on the
    /// way lacks frame pointers (see `truncated`).
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserFrame {
    pub address: u64,
    /// The function, or `file+0xoffset` when the file does not name it.
    pub name: String,
    pub module: String,
    /// The address in the file (ELF virtual address).
    pub file_address: u64,
    pub build_id: Option<String>,
    pub path: Option<String>,
    /// The mapping the address was in: start, end, file offset.
    pub mapping: Option<(u64, u64, u64)>,
    /// Not from the frame-pointer walk: the caller of a library without
    /// frame pointers, found on the stack after a call instruction.
    pub recovered: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TruncatedBinary {
    pub binary: String,
    pub stacks: u64,
    /// What it means and what to do.
    pub hint: String,
}
