//! Live-migration readiness: will a pre-copy migration of this memory
//! converge over a link of a given bandwidth within a downtime limit, in how
//! many rounds, how long, with what downtime? Pure code over plain data.
//!
//! Pre-copy (QEMU's RAM migration) sends all memory `M`, then, round after
//! round, what was dirtied during the previous round, and stops the source
//! when what is left fits in `bandwidth x downtime_limit` (QEMU's threshold).
//! The number of distinct pages dirtied within a window, `d(w)`, saturates at
//! the writable working set, so the model takes `d` at several windows, not
//! one rate.

use serde::Serialize;

/// Distinct bytes dirtied within a window of `window_seconds`, measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DirtyPoint {
    pub window_seconds: f64,
    pub dirty_bytes: f64,
}

/// The dirty-set curve `d(w)`, from measured points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DirtyCurve {
    points: Vec<DirtyPoint>,
}

impl DirtyCurve {
    /// Points sorted by window; `d` is made non-decreasing (a longer window
    /// cannot dirty fewer distinct pages; sampling noise can say otherwise).
    pub fn new(mut points: Vec<DirtyPoint>) -> Self {
        points.retain(|p| p.window_seconds > 0.0 && p.dirty_bytes.is_finite());
        points.sort_by(|a, b| a.window_seconds.total_cmp(&b.window_seconds));
        let mut max = 0.0f64;
        for p in &mut points {
            max = max.max(p.dirty_bytes.max(0.0));
            p.dirty_bytes = max;
        }
        points.dedup_by(|b, a| b.window_seconds == a.window_seconds);
        Self { points }
    }

    pub fn points(&self) -> &[DirtyPoint] {
        &self.points
    }

    /// `d(w)`: linear in `w` below the first point (a constant rate), linear
    /// between points, and beyond the last at the last segment's rate: flat
    /// if the measured curve already saturated, still rising if not (the
    /// cautious guess; the caller caps it at the memory size).
    pub fn at(&self, w: f64) -> f64 {
        let Some(first) = self.points.first() else {
            return 0.0;
        };
        if w <= first.window_seconds {
            return first.dirty_bytes * w.max(0.0) / first.window_seconds;
        }
        for pair in self.points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if w <= b.window_seconds {
                let f = (w - a.window_seconds) / (b.window_seconds - a.window_seconds);
                return a.dirty_bytes + f * (b.dirty_bytes - a.dirty_bytes);
            }
        }
        let last = self.points[self.points.len() - 1];
        let slope = match self.points.len() {
            1 => last.dirty_bytes / last.window_seconds,
            n => {
                let a = self.points[n - 2];
                (last.dirty_bytes - a.dirty_bytes) / (last.window_seconds - a.window_seconds)
            }
        };
        last.dirty_bytes + slope * (w - last.window_seconds)
    }
}

/// Where a migration would run and what it may cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Link {
    pub bandwidth_bytes_per_second: f64,
    pub downtime_limit_seconds: f64,
    /// Give up after this many rounds after the first full pass.
    pub max_rounds: u32,
    /// Give up after this long, if set.
    pub time_cap_seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Converges,
    /// What is left stopped shrinking: the workload dirties as fast as the
    /// link sends.
    DoesNotShrink,
    RoundLimit,
    TimeCap,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub converges: bool,
    pub verdict: Verdict,
    /// Dirty-page rounds after the first full pass.
    pub rounds: u32,
    /// Until the destination runs (or until the model gave up).
    pub total_seconds: f64,
    /// Stop-and-copy time of the last remainder (when it converges).
    pub downtime_seconds: Option<f64>,
    /// Bytes sent in total (or until the model gave up).
    pub sent_bytes: f64,
}

/// Simulates pre-copy of `memory_bytes` under the dirty curve over `link`.
pub fn predict(memory_bytes: f64, curve: &DirtyCurve, link: &Link) -> Prediction {
    let b = link.bandwidth_bytes_per_second.max(f64::MIN_POSITIVE);
    let threshold = b * link.downtime_limit_seconds;
    let mut elapsed = memory_bytes / b;
    let mut sent = memory_bytes;
    // Dirtied while the previous pass ran, capped by what exists.
    let mut remaining = curve.at(elapsed).min(memory_bytes);
    let mut rounds = 0;
    let outcome = |verdict, rounds, elapsed, downtime, sent| Prediction {
        converges: verdict == Verdict::Converges,
        verdict,
        rounds,
        total_seconds: elapsed,
        downtime_seconds: downtime,
        sent_bytes: sent,
    };
    loop {
        if remaining <= threshold {
            let downtime = remaining / b;
            return outcome(
                Verdict::Converges,
                rounds,
                elapsed + downtime,
                Some(downtime),
                sent + remaining,
            );
        }
        if rounds >= link.max_rounds {
            return outcome(Verdict::RoundLimit, rounds, elapsed, None, sent);
        }
        if link.time_cap_seconds.is_some_and(|cap| elapsed >= cap) {
            return outcome(Verdict::TimeCap, rounds, elapsed, None, sent);
        }
        let duration = remaining / b;
        let next = curve.at(duration).min(memory_bytes);
        rounds += 1;
        elapsed += duration;
        sent += remaining;
        if next >= remaining {
            return outcome(Verdict::DoesNotShrink, rounds, elapsed, None, sent);
        }
        remaining = next;
    }
}

/// The lowest bandwidth (bytes/s, within 1%) at which pre-copy converges
/// for the link's downtime limit and round limit; `None` if even 1 TB/s
/// does not.
pub fn min_bandwidth(memory_bytes: f64, curve: &DirtyCurve, link: &Link) -> Option<f64> {
    let converges = |b: f64| {
        let l = Link {
            bandwidth_bytes_per_second: b,
            time_cap_seconds: None,
            ..*link
        };
        predict(memory_bytes, curve, &l).converges
    };
    let (mut lo, mut hi) = (1.0, 1e12);
    if !converges(hi) {
        return None;
    }
    while hi / lo > 1.01 {
        let mid = (lo * hi).sqrt();
        if converges(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;
    const GIB: f64 = 1024.0 * MIB;

    fn link(mib_per_s: f64) -> Link {
        Link {
            bandwidth_bytes_per_second: mib_per_s * MIB,
            downtime_limit_seconds: 0.3,
            max_rounds: 30,
            time_cap_seconds: Some(90.0),
        }
    }

    /// A workload dirtying `rate` MiB/s of distinct pages until it has
    /// touched its whole working set `wws` MiB (the round-robin dirtier).
    fn round_robin(rate: f64, wws: f64) -> DirtyCurve {
        let saturate = wws / rate;
        DirtyCurve::new(vec![
            DirtyPoint {
                window_seconds: saturate,
                dirty_bytes: wws * MIB,
            },
            DirtyPoint {
                window_seconds: saturate * 10.0,
                dirty_bytes: wws * MIB,
            },
        ])
    }

    #[test]
    fn the_curve_interpolates_and_saturates() {
        let c = DirtyCurve::new(vec![
            DirtyPoint {
                window_seconds: 4.0,
                dirty_bytes: 400.0,
            },
            DirtyPoint {
                window_seconds: 1.0,
                dirty_bytes: 150.0,
            },
            // Sampling noise: fewer at a longer window. Made monotonic.
            DirtyPoint {
                window_seconds: 16.0,
                dirty_bytes: 390.0,
            },
        ]);
        assert_eq!(c.at(0.5), 75.0);
        assert_eq!(c.at(2.5), 275.0);
        assert_eq!(c.at(16.0), 400.0);
        assert_eq!(c.at(1000.0), 400.0);
        assert_eq!(DirtyCurve::new(vec![]).at(3.0), 0.0);
        // Not saturated when measured: goes on at the last rate.
        let rising = DirtyCurve::new(vec![
            DirtyPoint {
                window_seconds: 1.0,
                dirty_bytes: 100.0,
            },
            DirtyPoint {
                window_seconds: 4.0,
                dirty_bytes: 250.0,
            },
        ]);
        assert_eq!(rising.at(10.0), 550.0);
        let one = DirtyCurve::new(vec![DirtyPoint {
            window_seconds: 2.0,
            dirty_bytes: 100.0,
        }]);
        assert_eq!((one.at(1.0), one.at(8.0)), (50.0, 400.0));
    }

    #[test]
    fn an_idle_workload_converges_after_one_pass() {
        let p = predict(GIB, &DirtyCurve::new(vec![]), &link(64.0));
        assert!(p.converges);
        assert_eq!((p.rounds, p.downtime_seconds), (0, Some(0.0)));
        assert_eq!(p.total_seconds, 16.0);
    }

    #[test]
    fn a_moderate_dirtier_converges_in_a_few_rounds() {
        // 15.6 MiB/s over a 512 MiB buffer, 1 GiB sent at 64 MiB/s:
        // 16 s pass -> 250 MiB dirty -> 3.9 s -> 61 MiB -> 0.95 s -> 14.9 MiB
        // <= 19.2 MiB (64 MiB/s x 0.3 s): stop and copy.
        let p = predict(GIB, &round_robin(15.625, 512.0), &link(64.0));
        assert!(p.converges, "{p:?}");
        assert_eq!(p.rounds, 2);
        let downtime = p.downtime_seconds.unwrap();
        assert!((downtime - 0.2328).abs() < 0.001, "{downtime}");
        assert!(
            (p.total_seconds - 21.09).abs() < 0.05,
            "{}",
            p.total_seconds
        );
    }

    #[test]
    fn dirtying_at_link_speed_does_not_converge() {
        // 93.8 MiB/s against 64 MiB/s: each round leaves more than it sent.
        let p = predict(GIB, &round_robin(93.75, 512.0), &link(64.0));
        assert_eq!(p.verdict, Verdict::DoesNotShrink);
        assert!(!p.converges && p.downtime_seconds.is_none());
    }

    #[test]
    fn a_buffer_dirtied_within_one_round_saturates() {
        // The whole 512 MiB is rewritten within 0.5 s: each round at 64 MiB/s
        // lasts 8 s and finds the full working set dirty again.
        let curve = round_robin(1024.0, 512.0);
        let p = predict(GIB, &curve, &link(64.0));
        assert_eq!(p.verdict, Verdict::DoesNotShrink);
        assert_eq!((p.rounds, p.sent_bytes), (1, GIB + 512.0 * MIB));
        // Rounds shrink only once the link outruns the dirtier (1024 MiB/s),
        // and then slowly: within 30 rounds it takes a little more.
        let b = min_bandwidth(GIB, &curve, &link(64.0)).unwrap() / MIB;
        assert!((1024.0..1100.0).contains(&b), "{b}");
    }

    #[test]
    fn limits_stop_slow_convergence() {
        // Dirties at 90% of the link's speed without saturating: what is left
        // shrinks by only 10% per round, from ~921 MiB after the first pass
        // to 19.2 MiB would take ~37 rounds.
        let slow = DirtyCurve::new(vec![
            DirtyPoint {
                window_seconds: 1.0,
                dirty_bytes: 0.9 * 64.0 * MIB,
            },
            DirtyPoint {
                window_seconds: 1000.0,
                dirty_bytes: 900.0 * 64.0 * MIB,
            },
        ]);
        let uncapped = Link {
            time_cap_seconds: None,
            ..link(64.0)
        };
        let p = predict(GIB, &slow, &uncapped);
        assert_eq!((p.verdict, p.rounds), (Verdict::RoundLimit, 30), "{p:?}");
        let capped = Link {
            time_cap_seconds: Some(20.0),
            ..link(64.0)
        };
        assert_eq!(predict(GIB, &slow, &capped).verdict, Verdict::TimeCap);
    }

    #[test]
    fn the_minimum_bandwidth_converges_and_one_percent_less_does_not() {
        let curve = round_robin(15.625, 512.0);
        let b = min_bandwidth(GIB, &curve, &link(64.0)).unwrap();
        let at = |bw: f64| {
            predict(
                GIB,
                &curve,
                &Link {
                    bandwidth_bytes_per_second: bw,
                    time_cap_seconds: None,
                    ..link(64.0)
                },
            )
        };
        assert!(at(b).converges);
        assert!(!at(b / 1.02).converges);
        assert!(b < 64.0 * MIB);
    }
}
