//! What every signal's tables share: log2 histograms, the per-CPU
//! workload tables keyed by cgroup id, and the per-task slot arrays.

/// Number of log2 buckets in a latency histogram: bucket `i` counts values in
/// `[2^i, 2^(i+1))` nanoseconds (bucket 0 also holds 0). 2^40 ns is ~18 min,
/// far beyond any run-queue wait, so the last bucket is an overflow bucket.
pub const HIST_BUCKETS: usize = 40;

/// Histogram bucket of a value in nanoseconds: `floor(log2(v))`, with 0 in
/// bucket 0 and everything from 2^(HIST_BUCKETS-1) in the last bucket.
#[inline(always)]
pub fn log2_bucket(v: u64) -> usize {
    let b = (63 - (v | 1).leading_zeros()) as usize;
    if b >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        b
    }
}

/// Map sizes used when the agent does not override them.
pub const DEFAULT_TASK_SLOTS: u32 = 1 << 15;
/// Entries per CPU of `SCHED_WORKLOADS` (a power of two).
pub const DEFAULT_MAX_WORKLOADS: u32 = 256;
/// Entries looked at for one cgroup before giving up (linear probing).
pub const WORKLOAD_PROBES: u32 = 4;
/// Default size of the set of cgroup ids the agent found removed, whose
/// entries the kernel reuses (on its own CPU, so without racing the agent);
/// the agent sizes it to hold every id the tables can hold.
pub const DEAD_CGROUPS: u32 = 1024;

/// First table index probed for `cgroup` (Fibonacci hashing).
#[inline(always)]
pub fn workload_index(cgroup: u64, mask: u32) -> u32 {
    (cgroup.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32 & mask
}

/// CPUs the topology table can describe.
pub const MAX_CPUS: u32 = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_buckets() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(1023), 9);
        assert_eq!(log2_bucket(1024), 10);
        assert_eq!(log2_bucket(u64::MAX), HIST_BUCKETS - 1);
    }
}
