//! Bounded workload labels: the K most active workloads get their own label,
//! everything else is summed into `other`.
//!
//! Labels are sticky so that exported counters stay monotonic: a workload
//! keeps its label while it is alive and not idle, and its activity is only
//! ever added to one series at a time. A labelled workload idle for
//! `EVICT_AFTER_IDLE_ROUNDS` collection rounds gives its place to a busier
//! newcomer; its series simply stops growing.

use std::collections::BTreeMap;

pub const OTHER: &str = "other";
pub const EVICT_AFTER_IDLE_ROUNDS: u32 = 3;

#[derive(Debug)]
pub struct TopK<K> {
    k: usize,
    /// Labelled keys and how many rounds in a row each has been idle.
    labeled: BTreeMap<K, u32>,
}

impl<K: Ord + Clone> TopK<K> {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            labeled: BTreeMap::new(),
        }
    }

    pub fn is_labeled(&self, key: &K) -> bool {
        self.labeled.contains_key(key)
    }

    /// Drops a key whose workload no longer exists.
    pub fn forget(&mut self, key: &K) {
        self.labeled.remove(key);
    }

    /// Takes one round of activity (key, events since the last round) and
    /// updates which keys are labelled.
    pub fn update(&mut self, activity: &[(K, u64)]) {
        let active: BTreeMap<&K, u64> = activity.iter().map(|(k, a)| (k, *a)).collect();
        for (key, idle) in self.labeled.iter_mut() {
            *idle = if active.get(key).copied().unwrap_or(0) == 0 {
                *idle + 1
            } else {
                0
            };
        }
        let mut candidates: Vec<(&K, u64)> = active
            .iter()
            .filter(|(k, a)| **a > 0 && !self.labeled.contains_key(**k))
            .map(|(k, a)| (*k, *a))
            .collect();
        // Busiest first; ties by key so the result does not depend on order.
        candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (key, _) in candidates {
            if self.labeled.len() >= self.k {
                let idle = self
                    .labeled
                    .iter()
                    .filter(|(_, idle)| **idle >= EVICT_AFTER_IDLE_ROUNDS)
                    .max_by_key(|(_, idle)| **idle)
                    .map(|(k, _)| k.clone());
                match idle {
                    Some(victim) => {
                        self.labeled.remove(&victim);
                    }
                    None => break,
                }
            }
            self.labeled.insert(key.clone(), 0);
        }
    }
}

/// Counters of one label that can be summed and ranked.
pub trait Totals: Default {
    /// How busy: the top-K ranking key.
    fn activity(&self) -> u64;
    fn add(&mut self, other: &Self);
}

/// Per-key deltas folded into monotonic totals per exported label: the K
/// busiest keys (sticky, see [`TopK`]) and `other`. Pure bookkeeping, so
/// the label rules are unit-tested apart from the kernel.
#[derive(Debug)]
pub struct Labels<T> {
    topk: TopK<String>,
    totals: BTreeMap<String, T>,
}

impl<T: Totals> Labels<T> {
    pub fn new(k: usize) -> Self {
        Self {
            topk: TopK::new(k),
            totals: BTreeMap::new(),
        }
    }

    /// One round: `deltas` per key since the last round, `gone` the keys
    /// that no longer exist (their last delta counts).
    pub fn round(&mut self, deltas: &[(String, T)], gone: &[String]) {
        let activity: Vec<(String, u64)> = deltas
            .iter()
            .map(|(k, d)| (k.clone(), d.activity()))
            .collect();
        self.topk.update(&activity);
        for (key, d) in deltas {
            let label = if self.topk.is_labeled(key) {
                key.as_str()
            } else {
                OTHER
            };
            self.totals.entry(label.to_string()).or_default().add(d);
        }
        for key in gone {
            self.topk.forget(key);
        }
        // Series of keys that lost their label stop; `other` stays.
        let topk = &self.topk;
        self.totals
            .retain(|label, _| label == OTHER || topk.is_labeled(label));
    }

    /// Busiest first, `other` last.
    pub fn view(&self) -> Vec<(&str, &T)> {
        let mut named: Vec<(&str, &T)> = self
            .totals
            .iter()
            .filter(|(l, _)| *l != OTHER)
            .map(|(l, t)| (l.as_str(), t))
            .collect();
        named.sort_by(|a, b| {
            b.1.activity()
                .cmp(&a.1.activity())
                .then_with(|| a.0.cmp(b.0))
        });
        named.extend(self.totals.get(OTHER).map(|t| (OTHER, t)));
        named
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_the_busiest_up_to_k() {
        let mut t = TopK::new(2);
        t.update(&[(1, 10), (2, 50), (3, 30), (4, 0)]);
        assert!(t.is_labeled(&2) && t.is_labeled(&3));
        assert!(!t.is_labeled(&1) && !t.is_labeled(&4));
    }

    #[test]
    fn labels_are_sticky_while_active() {
        let mut t = TopK::new(1);
        t.update(&[(1, 10)]);
        // A busier newcomer does not steal an active workload's label.
        t.update(&[(1, 1), (2, 1000)]);
        assert!(t.is_labeled(&1) && !t.is_labeled(&2));
    }

    #[test]
    fn idle_labels_are_evicted_for_busy_newcomers() {
        let mut t = TopK::new(1);
        t.update(&[(1, 10)]);
        for _ in 0..EVICT_AFTER_IDLE_ROUNDS - 1 {
            t.update(&[(2, 5)]);
            assert!(t.is_labeled(&1), "evicted too early");
        }
        t.update(&[(2, 5)]);
        assert!(t.is_labeled(&2) && !t.is_labeled(&1));
    }

    #[test]
    fn forgotten_keys_free_their_place() {
        let mut t = TopK::new(1);
        t.update(&[(1, 10)]);
        t.forget(&1);
        t.update(&[(2, 1)]);
        assert!(t.is_labeled(&2));
    }

    #[test]
    fn zero_k_labels_nothing() {
        let mut t = TopK::new(0);
        t.update(&[(1, 10)]);
        assert!(!t.is_labeled(&1));
    }
}
