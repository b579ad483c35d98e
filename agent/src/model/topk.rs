//! Bounded labels: the K busiest keys (workloads, callers) get their own
//! label, everything else is summed into `other`.
//!
//! Busyness is a score that decays with time (halved every `HALF_LIFE`,
//! however often rounds run) plus each round's activity, so a key that goes
//! quiet fades and a newcomer that is busy now rises, and which keys are
//! labelled depends on what the workloads do, not on how often anybody
//! looks. Labels change only with hysteresis: a key takes the weakest label
//! only when its score is more than twice that label's, so series do not
//! flap. A key keeps adding to one series while it holds its label; one
//! that loses it stops growing (Prometheus sees the series end), and its
//! later activity goes to `other`. Scrapes between rounds see the deltas
//! read so far under the labels in force; when a round then labels a key,
//! what scrapes already showed of it under `other` stays there, so no
//! exported counter ever goes down.

use std::collections::BTreeMap;
use std::time::Duration;

pub const OTHER: &str = "other";
/// A newcomer must beat the weakest label's score by this factor.
pub const TAKEOVER_FACTOR: f64 = 2.0;
/// Scores below this are forgotten for unlabelled keys (bounds memory).
const FORGET_BELOW: f64 = 0.5;
/// Scores halve over this much time.
pub const HALF_LIFE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct TopK<K> {
    k: usize,
    /// Decayed activity of every key seen recently.
    scores: BTreeMap<K, f64>,
    labeled: std::collections::BTreeSet<K>,
}

impl<K: Ord + Clone> TopK<K> {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            scores: BTreeMap::new(),
            labeled: Default::default(),
        }
    }

    pub fn is_labeled(&self, key: &K) -> bool {
        self.labeled.contains(key)
    }

    /// Drops a key that no longer exists.
    pub fn forget(&mut self, key: &K) {
        self.labeled.remove(key);
        self.scores.remove(key);
    }

    /// Takes one round of activity (key, events since the last round,
    /// `elapsed` ago) and updates which keys are labelled.
    pub fn update(&mut self, activity: &[(K, u64)], elapsed: Duration) {
        let decay = 0.5f64.powf(elapsed.as_secs_f64() / HALF_LIFE.as_secs_f64());
        for score in self.scores.values_mut() {
            *score *= decay;
        }
        for (key, a) in activity {
            *self.scores.entry(key.clone()).or_default() += *a as f64;
        }
        let labeled = &self.labeled;
        self.scores
            .retain(|k, s| *s >= FORGET_BELOW || labeled.contains(k));
        let mut candidates: Vec<(K, f64)> = self
            .scores
            .iter()
            .filter(|(k, s)| **s > 0.0 && !self.labeled.contains(*k))
            .map(|(k, s)| (k.clone(), *s))
            .collect();
        // Busiest first; ties by key so the result does not depend on order.
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (key, score) in candidates {
            if self.labeled.len() >= self.k {
                let weakest = self
                    .labeled
                    .iter()
                    .map(|k| (k, self.scores.get(k).copied().unwrap_or(0.0)))
                    .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0)))
                    .map(|(k, s)| (k.clone(), s));
                match weakest {
                    Some((victim, s)) if score > s * TAKEOVER_FACTOR => {
                        self.labeled.remove(&victim);
                    }
                    _ => break,
                }
            }
            self.labeled.insert(key);
        }
    }
}

/// The key of a label made of several parts (a pair of workloads, ...):
/// joined with NUL, which no cgroup path holds.
pub fn compound_key(parts: &[&str]) -> String {
    parts.join("\0")
}

/// The parts of a `compound_key`; a part it lacks (`other` has one) reads
/// `other`.
pub fn key_parts<const N: usize>(key: &str) -> [String; N] {
    let mut f = key.split('\0');
    std::array::from_fn(|_| f.next().unwrap_or(OTHER).to_string())
}

/// Counters of one label that can be summed and ranked.
pub trait Totals: Default {
    /// How busy: the top-K ranking key.
    fn activity(&self) -> u64;
    fn add(&mut self, other: &Self);
    /// What was added since an `earlier` reading of the same counters.
    fn since(&self, earlier: &Self) -> Self;
}

/// Per-key deltas folded into monotonic totals per exported label: the K
/// busiest keys (sticky, see [`TopK`]) and `other`. Pure bookkeeping, so
/// the label rules are unit-tested apart from the kernel.
#[derive(Debug, Clone)]
pub struct Labels<T> {
    topk: TopK<String>,
    totals: BTreeMap<String, T>,
    /// What previews since the last round showed under `other` of keys
    /// without a label, by key.
    shown_as_other: BTreeMap<String, T>,
}

impl<T: Totals + Clone> Labels<T> {
    pub fn new(k: usize) -> Self {
        Self {
            topk: TopK::new(k),
            totals: BTreeMap::new(),
            shown_as_other: BTreeMap::new(),
        }
    }

    fn label<'a>(&self, key: &'a str) -> &'a str {
        if self.topk.is_labeled(&key.to_string()) {
            key
        } else {
            OTHER
        }
    }

    /// One round, `elapsed` after the last: the labels move with `deltas`
    /// (per key since then), which then count under them, but for what
    /// previews already showed under `other`; `gone` keys (that no longer
    /// exist; their last delta counted) free their labels.
    pub fn round(&mut self, deltas: &[(String, T)], gone: &[String], elapsed: Duration) {
        let activity: Vec<(String, u64)> = deltas
            .iter()
            .map(|(k, d)| (k.clone(), d.activity()))
            .collect();
        self.topk.update(&activity, elapsed);
        let shown = std::mem::take(&mut self.shown_as_other);
        for (key, d) in deltas {
            let label = self.label(key).to_string();
            match shown.get(key).filter(|_| label != OTHER) {
                Some(s) => {
                    self.totals.entry(OTHER.to_string()).or_default().add(s);
                    self.totals.entry(label).or_default().add(&d.since(s));
                }
                None => self.totals.entry(label).or_default().add(d),
            }
        }
        for key in gone {
            self.topk.forget(key);
        }
        // Series of keys that lost their label stop; `other` stays.
        let topk = &self.topk;
        self.totals
            .retain(|label, _| label == OTHER || topk.is_labeled(label));
    }

    /// The totals with `deltas` (per key since the last round) added under
    /// the labels in force, labels unchanged: what a scrape shows.
    pub fn preview(&mut self, deltas: &[(String, T)]) -> Vec<(String, T)> {
        let mut ahead = self.totals.clone();
        for (key, d) in deltas {
            let label = self.label(key);
            if label == OTHER {
                self.shown_as_other.insert(key.clone(), d.clone());
            }
            ahead.entry(label.to_string()).or_default().add(d);
        }
        Self::sorted(&ahead)
    }

    /// Busiest first, `other` last.
    pub fn view(&self) -> Vec<(String, T)> {
        Self::sorted(&self.totals)
    }

    fn sorted(totals: &BTreeMap<String, T>) -> Vec<(String, T)> {
        let mut named: Vec<(String, T)> = totals
            .iter()
            .filter(|(l, _)| *l != OTHER)
            .map(|(l, t)| (l.clone(), t.clone()))
            .collect();
        named.sort_by(|a, b| {
            b.1.activity()
                .cmp(&a.1.activity())
                .then_with(|| a.0.cmp(&b.0))
        });
        named.extend(totals.get(OTHER).map(|t| (OTHER.to_string(), t.clone())));
        named
    }
}

/// At most `capacity` keys with totals since they entered, the busiest
/// kept; the rest summed in `evicted`. For report tables whose keys come
/// from objects without bound (lock addresses): a key evicted and seen again
/// starts afresh, so a total is a lower bound once anything was evicted.
#[derive(Debug, Clone)]
pub struct TopTable<K, T> {
    capacity: usize,
    rows: BTreeMap<K, T>,
    pub evicted: T,
    /// Keys evicted so far.
    pub evictions: u64,
}

impl<K: Ord + Clone, T: Totals + Clone> TopTable<K, T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            rows: BTreeMap::new(),
            evicted: T::default(),
            evictions: 0,
        }
    }

    /// Adds a round's deltas; if there are then more keys than room, the
    /// least active go to `evicted`.
    pub fn add(&mut self, deltas: impl IntoIterator<Item = (K, T)>) {
        for (k, d) in deltas {
            self.rows.entry(k).or_default().add(&d);
        }
        if self.rows.len() <= self.capacity {
            return;
        }
        let mut all: Vec<(K, T)> = std::mem::take(&mut self.rows).into_iter().collect();
        all.sort_by_key(|(_, t)| std::cmp::Reverse(t.activity()));
        for (_, t) in all.drain(self.capacity..) {
            self.evicted.add(&t);
            self.evictions += 1;
        }
        self.rows = all.into_iter().collect();
    }

    /// The `n` most active rows, most first.
    pub fn top(&self, n: usize) -> Vec<(&K, &T)> {
        let mut v: Vec<(&K, &T)> = self.rows.iter().collect();
        v.sort_by(|a, b| {
            b.1.activity()
                .cmp(&a.1.activity())
                .then_with(|| a.0.cmp(b.0))
        });
        v.truncate(n);
        v
    }

    pub fn get(&self, key: &K) -> Option<&T> {
        self.rows.get(key)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_keys_split_back_and_other_fills_every_part() {
        let k = compound_key(&["/a\u{1f}b", "/c"]);
        assert_eq!(key_parts::<2>(&k), ["/a\u{1f}b", "/c"]);
        assert_eq!(key_parts::<3>(OTHER), [OTHER, OTHER, OTHER]);
    }

    /// One half-life between rounds.
    const R: Duration = HALF_LIFE;

    #[test]
    fn labels_the_busiest_up_to_k() {
        let mut t = TopK::new(2);
        t.update(&[(1, 10), (2, 50), (3, 30), (4, 0)], R);
        assert!(t.is_labeled(&2) && t.is_labeled(&3));
        assert!(!t.is_labeled(&1) && !t.is_labeled(&4));
    }

    #[test]
    fn labels_do_not_flap_between_comparable_keys() {
        let mut t = TopK::new(1);
        t.update(&[(1, 10)], R);
        // Busier, but not twice as busy as the holder's decayed score.
        t.update(&[(1, 10), (2, 25)], R);
        assert!(t.is_labeled(&1) && !t.is_labeled(&2));
    }

    #[test]
    fn a_much_busier_newcomer_takes_the_weakest_label_at_once() {
        let mut t = TopK::new(1);
        t.update(&[(1, 10)], R);
        t.update(&[(1, 1), (2, 1000)], R);
        assert!(t.is_labeled(&2) && !t.is_labeled(&1));
    }

    #[test]
    fn idle_labels_fade_and_give_way() {
        let mut t = TopK::new(1);
        t.update(&[(1, 100)], R);
        t.update(&[(2, 30)], R);
        assert!(t.is_labeled(&1), "50 vs 30: not yet");
        t.update(&[(2, 30)], R);
        t.update(&[(2, 30)], R);
        assert!(t.is_labeled(&2) && !t.is_labeled(&1), "12.5 vs 52.5");
    }

    #[test]
    fn forgotten_keys_free_their_place() {
        let mut t = TopK::new(1);
        t.update(&[(1, 10)], R);
        t.forget(&1);
        t.update(&[(2, 1)], R);
        assert!(t.is_labeled(&2));
    }

    #[test]
    fn zero_k_labels_nothing() {
        let mut t = TopK::new(0);
        t.update(&[(1, 10)], R);
        assert!(!t.is_labeled(&1));
    }

    #[test]
    fn scores_decay_with_time_not_with_rounds() {
        // The same activity over 10 s, in one round or in ten: the same
        // labels, whoever scraped how often.
        let (mut one, mut ten) = (TopK::new(1), TopK::new(1));
        one.update(&[(1, 100)], R);
        ten.update(&[(1, 100)], R);
        one.update(&[(2, 1000)], Duration::from_secs(10));
        for _ in 0..10 {
            ten.update(&[(2, 100)], Duration::from_secs(1));
        }
        assert_eq!((one.is_labeled(&2), ten.is_labeled(&2)), (true, true));
        // An idle label fades by time alone.
        let mut t = TopK::new(1);
        t.update(&[(1, 100)], R);
        t.update(&[(2, 30)], Duration::from_secs(20));
        assert!(t.is_labeled(&2), "100/16 < 30/2");
    }

    #[derive(Debug, Default, Clone, Copy, PartialEq)]
    struct N(u64);

    impl Totals for N {
        fn activity(&self) -> u64 {
            self.0
        }
        fn add(&mut self, o: &Self) {
            self.0 += o.0;
        }
        fn since(&self, e: &Self) -> Self {
            N(self.0 - e.0)
        }
    }

    #[test]
    fn a_top_table_keeps_the_busiest_and_sums_the_rest() {
        let mut t = TopTable::new(2);
        t.add([(1, N(5)), (2, N(1)), (3, N(3))]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.top(5), vec![(&1, &N(5)), (&3, &N(3))]);
        assert_eq!((t.evicted, t.evictions), (N(1), 1));
        // Existing keys keep adding; a newcomer must beat the weakest.
        t.add([(3, N(1)), (4, N(2))]);
        assert_eq!(t.top(5), vec![(&1, &N(5)), (&3, &N(4))]);
        assert_eq!((t.evicted, t.evictions), (N(3), 2));
        assert_eq!(t.top(1).len(), 1);
    }

    #[test]
    fn what_a_scrape_showed_as_other_stays_there() {
        let mut l = Labels::<N>::new(1);
        l.round(&[("/a".into(), N(10))], &[], R);
        assert_eq!(l.view(), vec![("/a".into(), N(10))]);
        // /b is far busier: a scrape shows its first 600 under `other`...
        assert_eq!(
            l.preview(&[("/b".into(), N(600))]),
            vec![("/a".into(), N(10)), ("other".into(), N(600))]
        );
        // ...which keeps them when the round gives /b the label.
        l.round(&[("/b".into(), N(1000))], &[], R);
        assert_eq!(
            l.view(),
            vec![("/b".into(), N(400)), ("other".into(), N(600))]
        );
        // Unscraped, a newly labelled key's whole delta is its own.
        let mut quiet = Labels::<N>::new(1);
        quiet.round(&[("/b".into(), N(1000))], &[], R);
        assert_eq!(quiet.view(), vec![("/b".into(), N(1000))]);
        // A preview changes nothing a round would count.
        let before = quiet.view();
        quiet.preview(&[("/c".into(), N(1))]);
        assert_eq!(quiet.view(), before);
    }
}
