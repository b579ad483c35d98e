//! How sure an estimate from samples is: the Wilson score interval of a
//! binomial proportion. Unlike the normal approximation it stays inside
//! [0, 1] and is honest with few or no successes, which is exactly where a
//! short window of content sampling lives (a handful of changed samples).

/// Standard deviations of a two-sided 95% interval.
pub const Z95: f64 = 1.959_964;

/// The interval of a proportion from `k` successes in `n` trials at `z`
/// standard deviations; `(0, 1)` without trials.
pub fn wilson(k: f64, n: f64, z: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let p = (k / n).clamp(0.0, 1.0);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: (f64, f64), b: (f64, f64)) -> bool {
        (a.0 - b.0).abs() < 5e-4 && (a.1 - b.1).abs() < 5e-4
    }

    #[test]
    fn matches_published_wilson_intervals() {
        // Newcombe (1998), Statistics in Medicine 17, table I: 81/263,
        // 15/148, 0/20, 1/29 at 95%.
        let table = [
            (81.0, 263.0, (0.2553, 0.3662)),
            (15.0, 148.0, (0.0624, 0.1605)),
            (0.0, 20.0, (0.0, 0.1611)),
            (1.0, 29.0, (0.0061, 0.1718)),
        ];
        for (k, n, want) in table {
            let got = wilson(k, n, Z95);
            assert!(close(got, want), "{k}/{n}: {got:?} want {want:?}");
        }
    }

    #[test]
    fn narrows_with_more_trials_and_stays_in_bounds() {
        let (a, b) = wilson(5.0, 100.0, Z95);
        let (c, d) = wilson(50.0, 1000.0, Z95);
        assert!(b - a > d - c);
        assert!(a < 0.05 && 0.05 < b && c < 0.05 && 0.05 < d);
        assert_eq!(wilson(3.0, 0.0, Z95), (0.0, 1.0));
        let (lo, hi) = wilson(10.0, 10.0, Z95);
        assert!(lo > 0.6 && (hi - 1.0).abs() < 1e-12, "{lo} {hi}");
    }

    #[test]
    fn covers_the_true_share_about_95_times_in_100() {
        // Binomial draws from a fixed generator: what sampling pages does.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for (p, n) in [(0.002, 2048), (0.01, 512), (0.05, 2048), (0.3, 512)] {
            let trials = 1000;
            let covered = (0..trials)
                .filter(|_| {
                    let k = (0..n).filter(|_| uniform() < p).count();
                    let (lo, hi) = wilson(k as f64, n as f64, Z95);
                    lo <= p && p <= hi
                })
                .count();
            let share = covered as f64 / trials as f64;
            assert!((0.92..=0.99).contains(&share), "p {p}, n {n}: {share}");
        }
    }
}
