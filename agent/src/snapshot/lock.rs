//! The lock contention section, shaped like `perf lock contention`.

use serde::Serialize;

use super::LatencySummary;

/// Kernel lock contention, shaped like `perf lock contention`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LockSection {
    /// Per lock type (perf's names), most waited first.
    pub by_type: Vec<LockTypeStats>,
    /// Per (type, waiter stack), most waited first: perf's rows.
    pub callers: Vec<LockCaller>,
    /// Per (type, calling function), top-K + `other`: the metric labels.
    pub caller_totals: Vec<LockTotal>,
    /// Per lock (static locks by symbol), most waited first.
    pub locks: Vec<LockObject>,
    /// Per workload (cgroup of the waiter), top-K + `other`.
    pub workloads: Vec<LockTotal>,
    /// Waits on sleeping locks whose owner was known (mutexes, rwsems held
    /// for writing), per (waiter's workload, owner's workload, what the
    /// owner was doing when the wait began); top-K + `other`.
    pub owners: Vec<LockOwnerWaits>,
    /// Spinning waits counted without walking their stack (the per-CPU
    /// budget `--lock-stacks` was spent); their callers read
    /// `(stack not sampled)`.
    pub spin_waits_without_stack: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockTypeStats {
    pub lock_type: String,
    pub contentions: u64,
    pub wait_seconds: f64,
    pub max_wait_seconds: f64,
    pub wait: LatencySummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockCaller {
    pub lock_type: String,
    /// First frame outside the locking code, `function+0xoff`.
    pub caller: String,
    pub contentions: u64,
    pub wait_seconds: f64,
    pub max_wait_seconds: f64,
    pub avg_wait_seconds: f64,
    /// The waiter's kernel stack, innermost first.
    pub stack: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockObject {
    /// Symbol of a static lock, or `(dynamic)`.
    pub lock: String,
    pub address: String,
    pub lock_type: String,
    pub contentions: u64,
    pub wait_seconds: f64,
    pub max_wait_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockTotal {
    /// Empty for workloads.
    pub lock_type: String,
    /// Calling function, workload path, or `other`.
    pub name: String,
    pub contentions: u64,
    pub wait_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockOwnerWaits {
    /// The waiter's workload, or `other`.
    pub workload: String,
    /// The lock owner's workload.
    pub owner: String,
    /// `running` (on a CPU), `preempted` (runnable, not on a CPU: the
    /// waiter waits for the scheduler as much as for the lock) or
    /// `sleeping`, when the wait began.
    pub owner_state: String,
    pub contentions: u64,
    pub wait_seconds: f64,
}
