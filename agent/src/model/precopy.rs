//! Live-migration readiness: will QEMU's pre-copy migration of this memory
//! converge over a link of a given bandwidth within a downtime limit, how
//! long will it take, with what downtime, and how sure is that? Pure code
//! over plain data.
//!
//! The model runs the loop QEMU 8-10 runs (`migration_thread` and
//! `migration_iteration_run` in migration/migration.c, the RAM side in
//! migration/ram.c), not a textbook one of whole rounds:
//! - Setup marks every page dirty and starts dirty logging (one bitmap sync).
//! - Data goes out in windows of 100 ms (`BUFFER_DELAY`), max-bandwidth / 10
//!   bytes each. Each window's bytes over its duration is the measured
//!   bandwidth, and the switchover threshold is that times the downtime
//!   limit: 0 until the first window (which includes setup) is measured.
//! - Each iteration takes the cheap estimate of what is pending: dirty
//!   pages not yet sent, as of the last bitmap sync. Only when that is below
//!   the threshold does QEMU sync the bitmap (the exact figure: pages
//!   dirtied since the last sync are added). If the exact figure is below
//!   the threshold it stops the VM and sends the rest unthrottled with the
//!   device state (one last sync); otherwise it sends on.
//!
//! So pending pages drain to the threshold, a sync adds what was dirtied
//! meanwhile, and near the threshold that happens every window. What was
//! dirtied since the last sync comes from the dirty-set curve d(w): distinct
//! bytes written within a window of w, measured, saturating at the writable
//! working set. It merges with the pending pages as a union, taking the
//! pending pages to be the most recently dirtied (see `Run::sync`): for a
//! workload writing at random the overlap is random, for one sweeping its
//! memory in order there is none, and d(w)'s shape tells them apart.

use serde::{Deserialize, Serialize};

use super::concave::concave_fit;

/// QEMU's rate-limit window (`BUFFER_DELAY`, migration/migration.h).
pub const BUFFER_DELAY_SECONDS: f64 = 0.1;
const PAGE: f64 = 4096.0;
/// Wire bytes per byte of a zero page in the first pass: an 8-byte header
/// and one byte for 4 KiB.
const ZERO_PAGE_WIRE: f64 = 9.0 / PAGE;
/// How long one `ram_save_iterate` sends at most (`MAX_WAIT`, ram.c).
const MAX_WAIT_SECONDS: f64 = 0.05;
/// Simulation steps before giving up as if the time cap had been reached
/// (hours of windows hovering at the threshold).
const MAX_STEPS: u32 = 400_000;

/// Distinct bytes dirtied within a window of `window_seconds`, measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DirtyPoint {
    pub window_seconds: f64,
    pub dirty_bytes: f64,
    /// The 95% interval of `dirty_bytes` (both equal to it when every page
    /// was read).
    pub dirty_bytes_low: f64,
    pub dirty_bytes_high: f64,
    /// Samples found changed, summed over `windows` windows of this length
    /// (`None` when every page was read).
    pub changed_samples: Option<u64>,
    pub windows: u32,
}

impl DirtyPoint {
    /// A figure from reading every page: no interval.
    pub fn exact(window_seconds: f64, dirty_bytes: f64) -> Self {
        Self {
            window_seconds,
            dirty_bytes,
            dirty_bytes_low: dirty_bytes,
            dirty_bytes_high: dirty_bytes,
            changed_samples: None,
            windows: 1,
        }
    }

    fn at_end(&self, end: End) -> f64 {
        match end {
            End::Low => self.dirty_bytes_low,
            End::Estimate => self.dirty_bytes,
            End::High => self.dirty_bytes_high,
        }
    }
}

/// Which end of each point's interval a curve goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Low,
    Estimate,
    High,
}

/// The dirty-set curve `d(w)`, from measured points.
#[derive(Debug, Clone, PartialEq)]
pub struct DirtyCurve {
    /// (window, bytes), by window, non-decreasing and concave.
    points: Vec<(f64, f64)>,
}

impl DirtyCurve {
    /// Through the estimates.
    pub fn new(points: &[DirtyPoint]) -> Self {
        Self::through(points, End::Estimate)
    }

    /// Through one end of every interval: the concave, non-decreasing
    /// curve through the origin closest to those values, each weighed by
    /// its precision (`concave::concave_fit`). The working set of a steady
    /// workload grows ever more slowly with the window, so points off such
    /// a curve are sampling noise; and the model reads the curve's slope
    /// (what a sync adds), which noise in separately sampled points would
    /// otherwise make rise and fall.
    pub fn through(points: &[DirtyPoint], end: End) -> Self {
        let mut measured: Vec<(f64, f64, f64)> = points
            .iter()
            .map(|p| {
                // The 95% interval's half-width over 1.96: the standard
                // error (a byte for a point measured exactly).
                let sigma = ((p.dirty_bytes_high - p.dirty_bytes_low) / (2.0 * 1.96)).max(1.0);
                (p.window_seconds, p.at_end(end).max(0.0), sigma)
            })
            .filter(|(w, d, sigma)| *w > 0.0 && d.is_finite() && sigma.is_finite())
            .collect();
        measured.sort_by(|a, b| a.0.total_cmp(&b.0));
        measured.dedup_by(|b, a| b.0 == a.0);
        let x: Vec<f64> = measured.iter().map(|m| m.0).collect();
        let y: Vec<f64> = measured.iter().map(|m| m.1).collect();
        let sigma: Vec<f64> = measured.iter().map(|m| m.2).collect();
        let fit = concave_fit(&x, &y, &sigma);
        Self {
            points: x.into_iter().zip(fit).collect(),
        }
    }

    /// `d(w)`: below the first point along the power law through the first
    /// two (linear for a steady rate, flat for a set already saturated at
    /// the first window: near the threshold QEMU syncs more often than the
    /// shortest window), linear between points, and beyond the last at the
    /// last segment's rate: flat if the measured curve already saturated,
    /// still rising if not (the cautious guess; the model caps it at the
    /// memory size).
    pub fn at(&self, w: f64) -> f64 {
        let Some(&(w0, d0)) = self.points.first() else {
            return 0.0;
        };
        if w <= w0 {
            let exponent = match self.points.get(1) {
                Some(&(w1, d1)) if d0 > 0.0 => ((d1 / d0).ln() / (w1 / w0).ln()).clamp(0.0, 1.0),
                _ => 1.0,
            };
            return d0 * (w.max(0.0) / w0).powf(exponent);
        }
        for pair in self.points.windows(2) {
            let ((wa, da), (wb, db)) = (pair[0], pair[1]);
            if w <= wb {
                return da + (w - wa) / (wb - wa) * (db - da);
            }
        }
        let (wl, dl) = self.points[self.points.len() - 1];
        let slope = match self.points.len() {
            1 => dl / wl,
            n => {
                let (wa, da) = self.points[n - 2];
                (dl - da) / (wl - wa)
            }
        };
        dl + slope * (w - wl)
    }

    /// The shortest window within which `bytes` distinct bytes are dirtied;
    /// infinite when the curve never gets there.
    pub fn inverse(&self, bytes: f64) -> f64 {
        if bytes <= 0.0 {
            return 0.0;
        }
        let mut hi = self.points.last().map_or(1.0, |p| p.0).max(1.0);
        while self.at(hi) < bytes {
            hi *= 2.0;
            if hi > 1e9 {
                return f64::INFINITY;
            }
        }
        let mut lo = 0.0;
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if self.at(mid) < bytes {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    /// The working set the curve has levelled off at: the last value, when
    /// the last segment rises at under a tenth of the rate up to the first
    /// point; `None` while it still rises (or from a single point).
    pub fn plateau(&self) -> Option<f64> {
        let n = self.points.len();
        if n < 2 {
            return None;
        }
        let (w0, d0) = self.points[0];
        let ((wa, da), (wl, dl)) = (self.points[n - 2], self.points[n - 1]);
        ((dl - da) / (wl - wa) <= 0.1 * d0 / w0).then_some(dl)
    }
}

/// What a migration sends first.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// The pages of the first pass (QEMU's bitmap starts with all of them
    /// dirty), in bytes: guest RAM, or a process's resident set.
    pub pages_bytes: f64,
    /// What the first pass puts on the wire: non-zero pages in full, a zero
    /// page as a 9-byte flag.
    pub first_pass_bytes: f64,
}

/// Where a migration would run and what it may cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// What pre-copy may use (QEMU's `max-bandwidth`).
    pub bandwidth_bytes_per_second: f64,
    pub downtime_limit_seconds: f64,
    /// The link's capacity: each window's budget goes out in a burst at
    /// this speed, and so does the stop-and-copy (QEMU lifts its rate limit
    /// for it); `None`: the bandwidth.
    pub switchover_bandwidth_bytes_per_second: Option<f64>,
    /// Give up after this long, if set.
    pub time_cap_seconds: Option<f64>,
}

/// QEMU's fixed costs around the pages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Overheads {
    /// From the start to the first page: dirty logging started, bitmaps
    /// allocated (`setup-time` of query-migrate).
    pub setup_seconds: f64,
    /// The stop-and-copy beyond its pages: the VM stopped, its device state
    /// saved and sent.
    pub switchover_seconds: f64,
}

/// QEMU 10's fixed costs for a guest of the rig's kind (1 GiB, TCG, a
/// serial console and no disks), from `query-migrate` on loopback:
/// `setup-time`, and the downtime of migrations whose last pending set was
/// near zero.
pub const QEMU_OVERHEADS: Overheads = Overheads {
    setup_seconds: 0.004,
    switchover_seconds: 0.002,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Converges,
    /// What is pending stopped shrinking: the workload dirties as fast as
    /// the link sends.
    DoesNotShrink,
    /// The time cap (or hours at the threshold without converging).
    TimeCap,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub converges: bool,
    pub verdict: Verdict,
    /// Dirty-bitmap syncs as QEMU counts them (`dirty-sync-count`: setup,
    /// each exact check, the last one), until the end or the model gave up.
    pub syncs: u32,
    /// Until the destination runs (or until the model gave up).
    pub total_seconds: f64,
    /// The stop-and-copy (when it converges): an upper bound, as the
    /// pending pages are at their largest when the threshold is first met.
    pub downtime_seconds: Option<f64>,
    /// Bytes sent in total (or until the model gave up).
    pub sent_bytes: f64,
}

/// The simulation's state.
struct Run {
    t: f64,
    /// First-pass pages not yet sent, and pages dirtied again, synced and
    /// not yet sent (bytes of pages).
    first: f64,
    again: f64,
    last_sync: f64,
    syncs: u32,
    threshold: f64,
    window_start: f64,
    window_sent: f64,
    sent: f64,
}

impl Run {
    /// A bitmap sync: the pages dirtied since the last one join the pending
    /// ones as a union. Pending pages are taken to be the most recently
    /// dirtied (older ones had more time to be sent): those dirtied within
    /// the window `age` in which that many distinct pages get dirtied. So
    /// after the sync, pending are the pages dirtied within `age` plus the
    /// time since the last sync. For a workload writing at random that
    /// union adds d(since) x (1 - pending / working set); for one sweeping
    /// its memory in order (whose pending pages are a gap QEMU chases) it
    /// adds all of d(since).
    fn sync(&mut self, curve: &DirtyCurve, working_set: f64) {
        let age = curve.inverse(self.again);
        let union = curve.at(age + (self.t - self.last_sync)).min(working_set);
        self.again = self.again.max(union);
        self.last_sync = self.t;
        self.syncs += 1;
    }

    /// QEMU's window measurement (`migration_update_counters`): bytes per
    /// whole millisecond of the window, times the downtime limit in ms.
    fn close_window(&mut self, downtime_limit_seconds: f64) {
        let ms = ((self.t - self.window_start) * 1e3).round().max(1.0);
        self.threshold = (self.window_sent / ms * (downtime_limit_seconds * 1e3).round()).floor();
        self.window_start = self.t;
        self.window_sent = 0.0;
    }
}

/// Simulates QEMU's pre-copy of `memory` under the dirty curve over `link`.
pub fn predict(memory: &Memory, curve: &DirtyCurve, link: &Link, costs: &Overheads) -> Prediction {
    let b = link.bandwidth_bytes_per_second.max(1.0);
    // The link's capacity: what a burst goes out at, and the stop-and-copy.
    let capacity = link
        .switchover_bandwidth_bytes_per_second
        .unwrap_or(b)
        .max(1.0);
    let budget = b * BUFFER_DELAY_SECONDS;
    // What a window carries: its budget, or what the link carries in it.
    let per_window = budget.min(capacity * BUFFER_DELAY_SECONDS);
    let ram = memory.pages_bytes.max(0.0);
    // Wire bytes per byte of first-pass pages: non-zero ones in full, zero
    // ones as flags.
    let first_cost = if ram > 0.0 {
        let nonzero = (memory.first_pass_bytes / ram).clamp(0.0, 1.0);
        nonzero + (1.0 - nonzero) * ZERO_PAGE_WIRE
    } else {
        1.0
    };
    let working_set = curve.plateau().unwrap_or(ram).min(ram).max(PAGE);
    let mut r = Run {
        t: costs.setup_seconds,
        first: ram,
        again: 0.0,
        last_sync: costs.setup_seconds,
        syncs: 1,
        threshold: 0.0,
        // QEMU starts its first window before setup.
        window_start: 0.0,
        window_sent: 0.0,
        sent: 0.0,
    };
    let gave_up = |verdict, r: &Run| Prediction {
        converges: false,
        verdict,
        syncs: r.syncs,
        total_seconds: r.t,
        downtime_seconds: None,
        sent_bytes: r.sent,
    };
    // The smallest pending set after a sync, and when it was seen.
    let mut best = (f64::INFINITY, r.t);
    for _ in 0..MAX_STEPS {
        // One `migration_iteration_run`: the estimate, the exact figure
        // when the estimate is below the threshold, completion when that is.
        let pending = r.first + r.again;
        if pending == 0.0 || pending < r.threshold {
            if pending < r.threshold {
                r.sync(curve, working_set);
            }
            let pending = r.first + r.again;
            if pending == 0.0 || pending < r.threshold {
                // Switchover: the last sync (what was dirtied since the
                // previous one), then the rest goes out unthrottled with the
                // device state.
                r.sync(curve, working_set);
                let wire = r.first * first_cost + r.again;
                let downtime = costs.switchover_seconds + wire / capacity;
                return Prediction {
                    converges: true,
                    verdict: Verdict::Converges,
                    syncs: r.syncs,
                    total_seconds: r.t + downtime,
                    downtime_seconds: Some(downtime),
                    sent_bytes: r.sent + wire,
                };
            }
            if pending < best.0 * (1.0 - 1e-3) {
                best = (pending, r.t);
            } else if r.t - best.1 > 2.0 * pending / per_window * BUFFER_DELAY_SECONDS + 1.0 {
                return gave_up(Verdict::DoesNotShrink, &r);
            }
        }
        if link.time_cap_seconds.is_some_and(|cap| r.t >= cap) {
            return gave_up(Verdict::TimeCap, &r);
        }
        // Far above the threshold nothing but sending happens: whole
        // windows at once, stopping a window short of where the threshold
        // after a full window could be met (a window drains at most
        // `per_window / first_cost` bytes of pages).
        if r.threshold > 0.0 && r.window_sent == 0.0 {
            let full = (per_window / BUFFER_DELAY_SECONDS * link.downtime_limit_seconds).floor();
            let far = (r.first + r.again - r.threshold.max(full)) / (per_window / first_cost) - 1.0;
            let until_cap = link.time_cap_seconds.map_or(f64::INFINITY, |cap| {
                ((cap - r.t) / BUFFER_DELAY_SECONDS).ceil()
            });
            let k = far.min(until_cap).floor();
            if k >= 1.0 {
                send(&mut r, k * per_window, first_cost);
                r.t = r.window_start + k * BUFFER_DELAY_SECONDS;
                r.window_start = r.t;
                r.threshold = full;
                continue;
            }
        }
        // `ram_save_iterate`: a burst at the link's speed until the
        // window's budget is spent, nothing is pending, or MAX_WAIT passed.
        let burst = (budget - r.window_sent).min(capacity * MAX_WAIT_SECONDS);
        let wire = send(&mut r, burst, first_cost);
        r.t += wire / capacity;
        r.window_sent += wire;
        // `migration_rate_limit`: a spent budget waits for the window's end;
        // a window whose 100 ms are over is measured.
        if r.window_sent >= budget * (1.0 - 1e-9) {
            r.t = r.t.max(r.window_start + BUFFER_DELAY_SECONDS);
        }
        if r.t >= r.window_start + BUFFER_DELAY_SECONDS * (1.0 - 1e-9) {
            r.close_window(link.downtime_limit_seconds);
        }
    }
    // Hours at the threshold without converging: as good as a time cap.
    gave_up(Verdict::TimeCap, &r)
}

/// Sends up to `budget` wire bytes of pending pages, first-pass ones first;
/// returns the wire bytes sent.
fn send(r: &mut Run, budget: f64, first_cost: f64) -> f64 {
    let from_first = r.first.min(budget / first_cost);
    let wire_first = from_first * first_cost;
    let from_again = r.again.min(budget - wire_first);
    r.first -= from_first;
    r.again -= from_again;
    r.sent += wire_first + from_again;
    wire_first + from_again
}

/// The lowest bandwidth (bytes/s, within 1%) at which pre-copy converges
/// for the link's downtime limit, with no time cap; `None` if even 1 TB/s
/// does not.
pub fn min_bandwidth(
    memory: &Memory,
    curve: &DirtyCurve,
    link: &Link,
    costs: &Overheads,
) -> Option<f64> {
    let converges = |b: f64| {
        let l = Link {
            bandwidth_bytes_per_second: b,
            time_cap_seconds: None,
            ..*link
        };
        predict(memory, curve, &l, costs).converges
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

/// The verdict with its uncertainty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outlook {
    Converges,
    DoesNotConverge,
    /// Converges at one end of the measured intervals and not at the
    /// other, or with d(w) steeper or flatter between two windows than the
    /// estimates within their intervals.
    Uncertain,
}

/// The prediction through the estimates and through both ends of their
/// intervals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    pub outlook: Outlook,
    /// Which way an uncertain outlook leans: the estimates' verdict.
    pub leans: Option<Outlook>,
    /// What an uncertain outlook hangs on.
    pub uncertain_because: Option<String>,
    /// Through the estimates.
    pub prediction: Prediction,
    /// Every d(w) at the low end of its interval.
    pub optimistic: Prediction,
    /// Every d(w) at the high end of its interval.
    pub pessimistic: Prediction,
    /// The measured window to measure again (an index into the points),
    /// for an uncertain outlook or a time uncertain by more than
    /// `TIME_SPREAD`: see `forecast`.
    #[serde(skip)]
    pub decisive: Option<usize>,
}

/// How far apart the optimistic and pessimistic total times of a
/// converging forecast may be before the window that spreads them most is
/// worth measuring again: 20% either side of their middle.
pub const TIME_SPREAD: f64 = 1.5;

/// How far toward the ends of their intervals two neighbouring points
/// move in opposite directions for the steepest and flattest slopes: the
/// 95% interval of a difference of two independent estimates is the root
/// of the sum of their squared half-widths, 1/sqrt(2) of the sum of the
/// half-widths when they are alike.
const SLOPE_SHARE: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// Predicts at the estimates and at both ends of their intervals: the
/// outlook is certain when both ends agree, and so does every curve that
/// is steeper (or flatter) between two neighbouring windows within the
/// intervals: the points up to the first moved toward one end, the rest
/// toward the other (by `SLOPE_SHARE`).
/// All points at one end move d(w) but hardly its slope, and what a sync
/// adds near the threshold is the slope: a rate within a few percent of
/// the link, or a hot set saturating between two windows, is decided by
/// the slope alone.
pub fn forecast(
    memory: &Memory,
    points: &[DirtyPoint],
    link: &Link,
    costs: &Overheads,
) -> Forecast {
    let at = |end| predict(memory, &DirtyCurve::through(points, end), link, costs);
    let (prediction, optimistic, pessimistic) = (at(End::Estimate), at(End::Low), at(End::High));
    let mut outlook = match (optimistic.converges, pessimistic.converges) {
        (true, true) => Outlook::Converges,
        (false, false) => Outlook::DoesNotConverge,
        _ => Outlook::Uncertain,
    };
    // The first pair of neighbouring windows (indices into the points)
    // whose slope flips a certain verdict.
    let mut slope = None;
    if outlook != Outlook::Uncertain {
        let converges = outlook == Outlook::Converges;
        let mut order: Vec<usize> = (0..points.len()).collect();
        order.sort_by(|&a, &b| {
            points[a]
                .window_seconds
                .total_cmp(&points[b].window_seconds)
        });
        let stepped = |edge: f64, up_to: End, after: End| {
            let p: Vec<DirtyPoint> = points
                .iter()
                .map(|q| {
                    let end = q.at_end(if q.window_seconds <= edge {
                        up_to
                    } else {
                        after
                    });
                    DirtyPoint {
                        dirty_bytes: q.dirty_bytes + (end - q.dirty_bytes) * SLOPE_SHARE,
                        ..*q
                    }
                })
                .collect();
            predict(memory, &DirtyCurve::new(&p), link, costs).converges
        };
        slope = order
            .windows(2)
            .find(|pair| {
                let edge = points[pair[0]].window_seconds;
                [(End::Low, End::High), (End::High, End::Low)]
                    .iter()
                    .any(|&(a, b)| stepped(edge, a, b) != converges)
            })
            .map(|pair| (pair[0], pair[1]));
        if slope.is_some() {
            outlook = Outlook::Uncertain;
        }
    }
    let mut f = Forecast {
        outlook,
        leans: None,
        uncertain_because: None,
        prediction,
        optimistic,
        pessimistic,
        decisive: None,
    };
    // The estimates with one point moved to one end of its interval.
    let moved = |i: usize, end| {
        let mut p = points.to_vec();
        p[i].dirty_bytes = p[i].at_end(end);
        predict(memory, &DirtyCurve::new(&p), link, costs)
    };
    if outlook == Outlook::Converges {
        // Near the link's rate the time hangs on the rate: the window whose
        // interval alone spreads it most.
        if f.pessimistic.total_seconds > TIME_SPREAD * f.optimistic.total_seconds {
            let spread =
                |i: usize| moved(i, End::High).total_seconds - moved(i, End::Low).total_seconds;
            f.decisive = (0..points.len()).max_by(|&a, &b| spread(a).total_cmp(&spread(b)));
        }
        return f;
    }
    if outlook != Outlook::Uncertain {
        return f;
    }
    f.leans = Some(if f.prediction.converges {
        Outlook::Converges
    } else {
        Outlook::DoesNotConverge
    });
    const MIB: f64 = 1024.0 * 1024.0;
    let describe = |p: &DirtyPoint| {
        format!(
            "d({}) = {:.1} MiB ({:.1}..{:.1} MiB, {} changed samples in {} windows)",
            seconds(p.window_seconds),
            p.dirty_bytes / MIB,
            p.dirty_bytes_low / MIB,
            p.dirty_bytes_high / MIB,
            p.changed_samples.unwrap_or(0),
            p.windows
        )
    };
    let fewest = |candidates: Vec<usize>| {
        candidates
            .into_iter()
            .min_by_key(|&i| points[i].changed_samples.unwrap_or(u64::MAX))
    };
    if let Some((a, b)) = slope {
        // Of the slope's two windows, the one on fewer samples.
        f.decisive = fewest(vec![a, b]);
        f.uncertain_because = Some(format!(
            "it depends on the slope of d(w) between {} and {}",
            describe(&points[a]),
            describe(&points[b])
        ));
        return f;
    }
    // The window to measure again: one whose interval alone flips the
    // verdict; else one whose end alone moves the estimates' verdict; else
    // the widest interval. Among several, the one resting on the fewest
    // changed samples.
    let converges_with = |i: usize, end| moved(i, end).converges;
    let alone = fewest(
        (0..points.len())
            .filter(|&i| converges_with(i, End::Low) != converges_with(i, End::High))
            .collect(),
    );
    let moves = || {
        fewest(
            (0..points.len())
                .filter(|&i| {
                    [End::Low, End::High]
                        .iter()
                        .any(|&end| converges_with(i, end) != f.prediction.converges)
                })
                .collect(),
        )
    };
    let widest = || {
        (0..points.len()).max_by(|&a, &b| {
            let width =
                |p: &DirtyPoint| (p.dirty_bytes_high - p.dirty_bytes_low) / p.dirty_bytes.max(1.0);
            width(&points[a]).total_cmp(&width(&points[b]))
        })
    };
    f.decisive = alone.or_else(moves).or_else(widest);
    f.uncertain_because = f.decisive.map(|i| {
        format!(
            "{} {}",
            if alone.is_some() {
                "it depends on"
            } else {
                "d(w) is uncertain at several windows, most at"
            },
            describe(&points[i])
        )
    });
    f
}

/// A window length as people write it: `250ms`, `4s`.
pub fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0}ms", s * 1e3)
    } else if (s - s.round()).abs() < 0.05 {
        format!("{:.0}s", s)
    } else {
        format!("{s:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;
    const GIB: f64 = 1024.0 * MIB;
    /// No fixed costs: the arithmetic of the loop alone.
    const FREE: Overheads = Overheads {
        setup_seconds: 0.0,
        switchover_seconds: 0.0,
    };

    fn link(mib_per_s: f64, downtime: f64) -> Link {
        Link {
            bandwidth_bytes_per_second: mib_per_s * MIB,
            downtime_limit_seconds: downtime,
            switchover_bandwidth_bytes_per_second: None,
            time_cap_seconds: Some(90.0),
        }
    }

    fn all(bytes: f64) -> Memory {
        Memory {
            pages_bytes: bytes,
            first_pass_bytes: bytes,
        }
    }

    fn exact(points: &[(f64, f64)]) -> Vec<DirtyPoint> {
        points
            .iter()
            .map(|&(w, d)| DirtyPoint::exact(w, d))
            .collect()
    }

    /// A workload dirtying `rate` MiB/s of distinct pages round-robin over
    /// a working set of `wws` MiB (the rig's dirtier), measured exactly.
    fn round_robin(rate: f64, wws: f64) -> Vec<DirtyPoint> {
        [0.1, 0.25, 1.0, 4.0, 16.0]
            .iter()
            .map(|&w| DirtyPoint::exact(w, (rate * w).min(wws) * MIB))
            .collect()
    }

    #[test]
    fn the_curve_interpolates_saturates_and_knows_its_plateau() {
        let c = DirtyCurve::new(&exact(&[(4.0, 400.0), (1.0, 150.0), (16.0, 390.0)]));
        let near = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.max(1.0);
        // Sampling noise (fewer at a longer window) is made monotonic: the
        // two equally precise points that disagree meet at their mean.
        assert!(
            near(c.at(16.0), 395.0) && near(c.at(1000.0), 395.0),
            "{c:?}"
        );
        assert!(c.plateau().is_some_and(|p| near(p, 395.0)), "{c:?}");
        // Below the first point along the power law through the first two.
        let below = 150.0 * 0.5f64.powf((395.0f64 / 150.0).ln() / 4.0f64.ln());
        assert!(near(c.at(0.5), below), "{}", c.at(0.5));
        assert!(near(c.at(2.5), 272.5), "{}", c.at(2.5));
        assert_eq!(DirtyCurve::new(&[]).at(3.0), 0.0);
        // Not saturated when measured: goes on at the last rate.
        let rising = DirtyCurve::new(&exact(&[(1.0, 100.0), (4.0, 250.0)]));
        assert!(near(rising.at(10.0), 550.0) && rising.plateau().is_none());
        let one = DirtyCurve::new(&exact(&[(2.0, 100.0)]));
        assert!(near(one.at(1.0), 50.0) && near(one.at(8.0), 400.0));
        assert_eq!(one.plateau(), None);
        // A steady rate stays linear below the first point; a set
        // saturated there stays flat.
        let steady = DirtyCurve::new(&exact(&[(1.0, 10.0), (2.0, 20.0)]));
        let saturated = DirtyCurve::new(&exact(&[(1.0, 10.0), (2.0, 10.0)]));
        assert!(near(steady.at(0.5), 5.0) && near(saturated.at(0.5), 10.0));
    }

    #[test]
    fn an_idle_guest_converges_after_one_pass() {
        // 1 GiB at 64 MiB/s, threshold 19.2 MiB: with the link no faster
        // than the rate limit, a window's 6.4 MiB take two 50 ms bursts, so
        // the estimate is checked every 3.2 MiB and first found below the
        // threshold at 16 MiB; one exact sync finds nothing new, and 16 MiB
        // go in the stop-and-copy.
        let p = predict(&all(GIB), &DirtyCurve::new(&[]), &link(64.0, 0.3), &FREE);
        assert!(p.converges);
        assert_eq!(p.syncs, 3, "setup, the exact check, the last: {p:?}");
        assert!((p.downtime_seconds.unwrap() - 0.25).abs() < 1e-9, "{p:?}");
        assert!((p.total_seconds - 16.0).abs() < 1e-9, "{p:?}");
        // Zero pages cost a flag, and fixed costs add up.
        let half_zero = Memory {
            pages_bytes: GIB,
            first_pass_bytes: GIB / 2.0,
        };
        let costs = Overheads {
            setup_seconds: 0.05,
            switchover_seconds: 0.01,
        };
        let p = predict(&half_zero, &DirtyCurve::new(&[]), &link(64.0, 0.3), &costs);
        assert!((7.5..8.5).contains(&p.total_seconds), "{p:?}");
    }

    #[test]
    fn near_the_threshold_qemu_syncs_every_window_and_converges() {
        // The case a round-based model got wrong: 512 MiB rewritten at 19.5
        // MiB/s over 32 MiB/s, 300 ms. Rounds shrink by 0.61 each until the
        // remainder fits; QEMU completed it in 45.6 s (both runs).
        let memory = Memory {
            pages_bytes: GIB,
            first_pass_bytes: 560.0 * MIB,
        };
        let p = predict(
            &memory,
            &DirtyCurve::new(&round_robin(19.53, 512.0)),
            &link(32.0, 0.3),
            &FREE,
        );
        assert!(p.converges, "{p:?}");
        assert!((40.0..50.0).contains(&p.total_seconds), "{p:?}");
        // Near the threshold a sync per 100 ms window, not one per round.
        assert!(p.syncs > 10, "{p:?}");
    }

    #[test]
    fn the_same_rate_converges_when_random_and_not_when_sweeping() {
        // 38.4 MiB/s of writes over 32 MiB, 32 MiB/s, threshold 9.6 MiB.
        // Sweeping in order, QEMU chases a gap that grows by 0.64 MiB a
        // window. At random, a write lands on a page still pending more
        // and more often as the pending set grows: it levels off at 3.7 MiB.
        let (rate, set) = (38.4, 32.0);
        let windows = [0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 16.0];
        let random: Vec<DirtyPoint> = windows
            .iter()
            .map(|&w: &f64| DirtyPoint::exact(w, set * (1.0 - (-w * rate / set).exp()) * MIB))
            .collect();
        let sweeping: Vec<DirtyPoint> = windows
            .iter()
            .map(|&w| DirtyPoint::exact(w, (rate * w).min(set) * MIB))
            .collect();
        let at = |points: &[DirtyPoint]| {
            predict(&all(GIB), &DirtyCurve::new(points), &link(32.0, 0.3), &FREE)
        };
        assert!(at(&random).converges, "{:?}", at(&random));
        assert!(!at(&sweeping).converges, "{:?}", at(&sweeping));
    }

    #[test]
    fn the_inverse_finds_the_window_of_a_dirty_size() {
        let c = DirtyCurve::new(&round_robin(100.0, 512.0));
        assert!((c.inverse(10.0 * MIB) - 0.1).abs() < 1e-9);
        assert!((c.inverse(100.0 * MIB) - 1.0).abs() < 1e-9);
        assert_eq!(c.inverse(0.0), 0.0);
        // Levelled off at 100 MiB: more is never dirtied.
        let flat = DirtyCurve::new(&exact(&[(1.0, 100.0 * MIB), (2.0, 100.0 * MIB)]));
        assert_eq!(flat.inverse(200.0 * MIB), f64::INFINITY);
    }

    #[test]
    fn windows_must_be_dense_where_a_hot_set_saturates() {
        // The rig's two-vCPU case: 44.8 MiB/s swept over 256 MiB of a 1 GiB
        // guest (324 MiB non-zero), 64 MiB/s, 300 ms; QEMU took 16.1 s, 15
        // syncs. d(w) is linear between windows, so 4 s to 16 s misses the
        // knee at 5.7 s and what each sync adds there.
        let memory = Memory {
            pages_bytes: GIB,
            first_pass_bytes: 324.0 * MIB,
        };
        let link = Link {
            switchover_bandwidth_bytes_per_second: Some(2.0 * GIB),
            ..link(64.0, 0.3)
        };
        let at = |windows: &[f64]| {
            let points: Vec<DirtyPoint> = windows
                .iter()
                .map(|&w| DirtyPoint::exact(w, (44.8 * w).min(256.0) * MIB))
                .collect();
            predict(&memory, &DirtyCurve::new(&points), &link, &QEMU_OVERHEADS)
        };
        let sparse = at(&[0.1, 0.25, 1.0, 4.0, 16.0]);
        let default = at(&[0.1, 0.25, 1.0, 2.0, 4.0, 6.0, 8.0, 16.0]);
        assert!((13.5..14.5).contains(&sparse.total_seconds), "{sparse:?}");
        assert!((15.2..16.2).contains(&default.total_seconds), "{default:?}");
        assert_eq!(default.syncs, 15);
    }

    #[test]
    fn dirtying_faster_than_the_link_does_not_converge() {
        let p = predict(
            &all(GIB),
            &DirtyCurve::new(&round_robin(93.75, 512.0)),
            &link(64.0, 0.3),
            &FREE,
        );
        assert_eq!(p.verdict, Verdict::DoesNotShrink, "{p:?}");
        assert!(!p.converges && p.downtime_seconds.is_none());
        // Without a time cap, too.
        let uncapped = Link {
            time_cap_seconds: None,
            ..link(64.0, 0.3)
        };
        let p = predict(
            &all(GIB),
            &DirtyCurve::new(&round_robin(93.75, 512.0)),
            &uncapped,
            &FREE,
        );
        assert_eq!(p.verdict, Verdict::DoesNotShrink, "{p:?}");
    }

    #[test]
    fn a_hot_set_below_the_threshold_converges_right_after_the_first_pass() {
        // 16 MiB rewritten at 200 MiB/s: faster than the link, but all of
        // it fits in the 19.2 MiB threshold.
        let p = predict(
            &all(GIB),
            &DirtyCurve::new(&round_robin(200.0, 16.0)),
            &link(64.0, 0.3),
            &FREE,
        );
        assert!(p.converges, "{p:?}");
        assert!(p.total_seconds < 16.0 + 1.0, "{p:?}");
        // 64 MiB is not.
        let p = predict(
            &all(GIB),
            &DirtyCurve::new(&round_robin(200.0, 64.0)),
            &link(64.0, 0.3),
            &FREE,
        );
        assert!(!p.converges, "{p:?}");
    }

    #[test]
    fn the_time_cap_stops_slow_convergence() {
        // 90% of the link over a working set of all memory: converges, but
        // only after minutes.
        let slow = round_robin(57.6, 1024.0);
        let capped = Link {
            time_cap_seconds: Some(30.0),
            ..link(64.0, 0.3)
        };
        let p = predict(&all(GIB), &DirtyCurve::new(&slow), &capped, &FREE);
        assert_eq!(p.verdict, Verdict::TimeCap, "{p:?}");
        assert!((30.0..30.2).contains(&p.total_seconds), "{p:?}");
        let uncapped = Link {
            time_cap_seconds: None,
            ..link(64.0, 0.3)
        };
        assert!(predict(&all(GIB), &DirtyCurve::new(&slow), &uncapped, &FREE).converges);
    }

    #[test]
    fn the_switchover_runs_at_the_link_capacity() {
        let fast = Link {
            switchover_bandwidth_bytes_per_second: Some(1024.0 * MIB),
            ..link(64.0, 0.3)
        };
        let slow = predict(&all(GIB), &DirtyCurve::new(&[]), &link(64.0, 0.3), &FREE);
        let p = predict(&all(GIB), &DirtyCurve::new(&[]), &fast, &FREE);
        assert!((p.downtime_seconds.unwrap() - 0.0125).abs() < 1e-9, "{p:?}");
        assert!((slow.total_seconds - p.total_seconds - 0.1875).abs() < 1e-9);
    }

    #[test]
    fn the_minimum_bandwidth_converges_and_two_percent_less_does_not() {
        let curve = DirtyCurve::new(&round_robin(15.625, 512.0));
        let b = min_bandwidth(&all(GIB), &curve, &link(64.0, 0.3), &FREE).unwrap();
        let at = |bw: f64| {
            let l = Link {
                bandwidth_bytes_per_second: bw,
                time_cap_seconds: None,
                ..link(64.0, 0.3)
            };
            predict(&all(GIB), &curve, &l, &FREE)
        };
        assert!(at(b).converges);
        assert!(!at(b / 1.02).converges);
        // Just above the dirty rate: near the threshold QEMU gains on the
        // dirtier window by window.
        assert!((15.625 * MIB..20.0 * MIB).contains(&b), "{}", b / MIB);
        // A working set rewritten within every window converges only once
        // the threshold holds all of it: from bandwidth x 0.3 s > 512 MiB.
        let hot = DirtyCurve::new(&round_robin(1e9, 512.0));
        let b = min_bandwidth(&all(GIB), &hot, &link(64.0, 0.3), &FREE).unwrap() / MIB;
        assert!((512.0 / 0.3..1024.0 / 0.3).contains(&b), "{b}");
    }

    /// `round_robin` measured by sampling 1 GiB: `changed` samples behind
    /// d(0.1 s), proportionally more behind the longer windows.
    fn sampled(rate: f64, wws: f64, changed_at_100ms: f64) -> Vec<DirtyPoint> {
        let points = round_robin(rate, wws);
        let per_byte = changed_at_100ms / points[0].dirty_bytes;
        points
            .into_iter()
            .map(|mut p| {
                let changed = (p.dirty_bytes * per_byte).round();
                let (lo, hi) = crate::model::interval::wilson(
                    changed,
                    changed * GIB / p.dirty_bytes,
                    crate::model::interval::Z95,
                );
                p.changed_samples = Some(changed as u64);
                p.dirty_bytes_low = lo * GIB;
                p.dirty_bytes_high = hi * GIB;
                p
            })
            .collect()
    }

    #[test]
    fn the_outlook_is_uncertain_when_the_decisive_window_rests_on_few_samples() {
        let memory = Memory {
            pages_bytes: GIB,
            first_pass_bytes: 560.0 * MIB,
        };
        // 28 MiB/s swept over 64 MiB, 32 MiB/s, threshold 9.6 MiB: near it
        // the pending pages are those dirtied within the last 0.34 s, so
        // what each sync adds is the slope of d(w) between 250 ms and 1 s.
        // From 4 changed samples at 100 ms (10 at 250 ms, 40 at 1 s) that
        // slope's interval spans both sides of the link.
        let few = forecast(&memory, &sampled(28.0, 64.0, 4.0), &link(32.0, 0.3), &FREE);
        assert_eq!(few.outlook, Outlook::Uncertain, "{few:?}");
        assert_eq!(few.leans, Some(Outlook::Converges));
        assert!(few.optimistic.converges && !few.pessimistic.converges);
        let decisive = few.decisive.unwrap();
        assert!([1, 2].contains(&decisive), "{few:?}");
        let why = few.uncertain_because.unwrap();
        let window = seconds(round_robin(28.0, 64.0)[decisive].window_seconds);
        assert!(
            why.contains(&format!("d({window})")) && why.contains("changed samples"),
            "{why}"
        );
        // The same from 400 changed samples at 100 ms: certain.
        let many = forecast(
            &memory,
            &sampled(28.0, 64.0, 400.0),
            &link(32.0, 0.3),
            &FREE,
        );
        assert_eq!(
            (many.outlook, many.leans),
            (Outlook::Converges, None),
            "{many:?}"
        );
        // Measured exactly: the interval is the point.
        let exact = forecast(&memory, &round_robin(48.0, 512.0), &link(32.0, 0.3), &FREE);
        assert_eq!(exact.outlook, Outlook::DoesNotConverge);
        assert_eq!(exact.optimistic, exact.pessimistic);
    }

    #[test]
    fn a_converging_time_that_hangs_on_one_window_names_it() {
        let memory = Memory {
            pages_bytes: GIB,
            first_pass_bytes: 560.0 * MIB,
        };
        // 20 MiB/s swept over 256 MiB, 32 MiB/s, measured exactly but at
        // 4 s and 16 s (where the hot set saturates, at 12.8 s), whose
        // intervals are +-40%: converges at both ends, and the time of
        // draining the hot set hangs on those windows.
        let wide = |share: f64| {
            let mut points = round_robin(20.0, 256.0);
            for p in &mut points[3..] {
                p.dirty_bytes_low = p.dirty_bytes * (1.0 - share);
                p.dirty_bytes_high = p.dirty_bytes * (1.0 + share);
                p.changed_samples = Some(20);
            }
            forecast(&memory, &points, &link(32.0, 0.3), &FREE)
        };
        let f = wide(0.4);
        assert_eq!(f.outlook, Outlook::Converges, "{f:?}");
        assert!(
            f.pessimistic.total_seconds > TIME_SPREAD * f.optimistic.total_seconds,
            "{f:?}"
        );
        assert!(
            matches!(f.decisive, Some(3 | 4)) && f.uncertain_because.is_none(),
            "{f:?}"
        );
        // +-5%: the ends are close, nothing to measure again.
        let f = wide(0.05);
        assert_eq!((f.outlook, f.decisive), (Outlook::Converges, None), "{f:?}");
    }

    #[test]
    fn window_lengths_read_as_people_write_them() {
        assert_eq!(seconds(0.25), "250ms");
        assert_eq!(seconds(4.01), "4s");
        assert_eq!(seconds(1.5), "1.5s");
    }
}
