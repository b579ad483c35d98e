//! Log2 latency histograms as the kernel fills them: bucket `i` counts values
//! in `[2^i, 2^(i+1))` nanoseconds (bucket 0 also holds 0), the last bucket
//! everything above.

use hostprobe_common::HIST_BUCKETS;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Log2Hist {
    /// Counts per bucket; `buckets[i]` covers `[2^i, 2^(i+1))` ns.
    pub buckets: Vec<u64>,
    pub sum_ns: u64,
}

impl Default for Log2Hist {
    fn default() -> Self {
        Self {
            buckets: vec![0; HIST_BUCKETS],
            sum_ns: 0,
        }
    }
}

impl Log2Hist {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn add(&mut self, other: &Log2Hist) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
    }

    /// `self - earlier`, for counters that only grow.
    pub fn delta(&self, earlier: &Log2Hist) -> Log2Hist {
        Log2Hist {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
        }
    }

    /// The `q` quantile (0..=1) in nanoseconds, interpolating linearly inside
    /// the bucket that holds it; `None` when empty. Exact to within one
    /// bucket (a factor of 2), like any log2 histogram.
    pub fn quantile_ns(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { (1u64 << i) as f64 };
                let hi = (1u64 << (i + 1)) as f64;
                let within = ((rank - seen as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lo + within * (hi - lo));
            }
            seen += n;
        }
        None
    }

    /// Cumulative counts at the upper bounds `2^k` ns for each `k` in
    /// `bounds_log2`: exact, because every bound is a bucket edge. A value
    /// equal to a bound lands in the next bucket (the kernel's buckets are
    /// half-open), a difference Prometheus' `le` cannot see at ns resolution.
    pub fn cumulative_at(&self, bounds_log2: &[u32]) -> Vec<u64> {
        bounds_log2
            .iter()
            .map(|&k| self.buckets.iter().take(k as usize).sum())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(usize, u64)]) -> Log2Hist {
        let mut h = Log2Hist::default();
        for &(i, n) in pairs {
            h.buckets[i] = n;
        }
        h
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        // 100 values in [1024, 2048): p50 sits half way.
        let h = hist(&[(10, 100)]);
        assert_eq!(h.quantile_ns(0.5), Some(1536.0));
        assert_eq!(h.quantile_ns(1.0), Some(2048.0));
        assert_eq!(h.quantile_ns(0.0), Some(1024.0));
        assert_eq!(Log2Hist::default().quantile_ns(0.5), None);
    }

    #[test]
    fn quantiles_cross_buckets() {
        // 90 fast (bucket 10), 10 slow (bucket 20): p50 fast, p99 slow.
        let h = hist(&[(10, 90), (20, 10)]);
        let p50 = h.quantile_ns(0.5).unwrap();
        let p90 = h.quantile_ns(0.9).unwrap();
        let p99 = h.quantile_ns(0.99).unwrap();
        assert!((1024.0..2048.0).contains(&p50), "{p50}");
        assert_eq!(p90, 2048.0);
        assert!(
            ((1u64 << 20) as f64..(1u64 << 21) as f64).contains(&p99),
            "{p99}"
        );
        assert!(p50 <= p90 && p90 <= p99);
    }

    #[test]
    fn cumulative_counts_at_bucket_edges() {
        let h = hist(&[(0, 1), (9, 2), (10, 3), (12, 4), (39, 5)]);
        assert_eq!(h.cumulative_at(&[10, 11, 13, 39]), vec![3, 6, 10, 10]);
        assert_eq!(h.count(), 15);
    }

    #[test]
    fn deltas_and_sums() {
        let mut a = hist(&[(3, 5)]);
        a.sum_ns = 50;
        let mut b = hist(&[(3, 7), (4, 1)]);
        b.sum_ns = 90;
        let d = b.delta(&a);
        assert_eq!(d, {
            let mut x = hist(&[(3, 2), (4, 1)]);
            x.sum_ns = 40;
            x
        });
        a.add(&d);
        assert_eq!(a, b);
    }
}
