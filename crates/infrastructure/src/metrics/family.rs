//! Label-keyed series with a hard cap: lock-free lookups of existing series, copy-on-write
//! inserts of new ones, and an `other` series that takes every label set beyond the cap.

use core::borrow::Borrow;
use core::hash::Hash;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

/// Every series of a family with its key, and the overflow series when it was used.
pub(crate) type Listing<K, V> = (Vec<(K, Arc<V>)>, Option<Arc<V>>);

/// A set of series keyed by label values, at most `cap` of them plus one overflow series.
///
/// Looking up an existing series reads an [`ArcSwap`]'d map: no lock, no allocation. A new key
/// takes a mutex, copies the map with the new entry and swaps it in; this happens once per label
/// set, and at most `cap` times in the life of the family, after which every new key lands in the
/// overflow series (and is counted in [`Family::overflowed`]).
pub(crate) struct Family<K, V> {
    map: ArcSwap<HashMap<K, Arc<V>>>,
    insert: Mutex<()>,
    overflow: Arc<V>,
    overflowed: AtomicU64,
    cap: usize,
}

impl<K, V> std::fmt::Debug for Family<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("series", &self.map.load().len())
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone, V: Default> Family<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            map: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
            overflow: Arc::new(V::default()),
            overflowed: AtomicU64::new(0),
            cap,
        }
    }

    /// Runs `f` on the series of `key`, creating it (or using the overflow series) on first use.
    pub(crate) fn with<Q, R>(&self, key: &Q, make: impl FnOnce() -> K, f: impl FnOnce(&V) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(series) = self.map.load().get(key) {
            return f(series);
        }
        let series = self.insert(key, make);
        f(&series)
    }

    #[cold]
    fn insert<Q>(&self, key: &Q, make: impl FnOnce() -> K) -> Arc<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let _guard = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.map.load_full();
        if let Some(series) = current.get(key) {
            return Arc::clone(series);
        }
        if current.len() >= self.cap {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return Arc::clone(&self.overflow);
        }
        let mut next = HashMap::with_capacity(current.len() + 1);
        next.extend(current.iter().map(|(k, v)| (k.clone(), Arc::clone(v))));
        let series = Arc::new(V::default());
        next.insert(make(), Arc::clone(&series));
        self.map.store(Arc::new(next));
        series
    }

    /// Every series with its key, and the overflow series when it was used.
    pub(crate) fn series(&self) -> Listing<K, V> {
        let map = self.map.load();
        let series = map
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let overflow =
            (self.overflowed.load(Ordering::Relaxed) > 0).then(|| Arc::clone(&self.overflow));
        (series, overflow)
    }

    /// Observations that landed in the overflow series because the family was full.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// Upper bounds, in seconds, of the latency and time-to-first-token histograms.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// A histogram over [`LATENCY_BUCKETS`]: one relaxed atomic add per bucket and one for the sum.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Non-cumulative counts; the last slot is above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let slot = LATENCY_BUCKETS.partition_point(|&bound| bound < seconds);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Cumulative counts (`LATENCY_BUCKETS.len() + 1`, the last one the total) and the sum in
    /// seconds. The total is the sum of the buckets read, so `+Inf` always equals `_count`.
    pub(crate) fn read(&self) -> (Vec<u64>, f64) {
        let mut total = 0u64;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        #[allow(
            clippy::cast_precision_loss,
            reason = "a sum of microseconds far below 2^52 for years"
        )]
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Count(AtomicU64);

    #[test]
    fn keys_beyond_the_cap_share_the_overflow_series() {
        let family: Family<Arc<str>, Count> = Family::new(3);
        for i in 0..10 {
            let key = format!("k{}", i % 5);
            family.with(
                key.as_str(),
                || Arc::from(key.as_str()),
                |c| {
                    c.0.fetch_add(1, Ordering::Relaxed);
                },
            );
        }
        let (series, overflow) = family.series();
        assert_eq!(series.len(), 3);
        assert_eq!(
            series
                .iter()
                .map(|(_, c)| c.0.load(Ordering::Relaxed))
                .sum::<u64>(),
            6
        );
        assert_eq!(overflow.unwrap().0.load(Ordering::Relaxed), 4);
        assert_eq!(family.overflowed(), 4);
    }

    #[test]
    fn histogram_buckets_are_upper_bounds_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(6));
        h.observe(Duration::from_secs(1000));
        let (cumulative, sum) = h.read();
        assert_eq!(cumulative[0], 1, "5 ms is in the 0.005 bucket");
        assert_eq!(cumulative[1], 2);
        assert_eq!(cumulative[LATENCY_BUCKETS.len() - 1], 2);
        assert_eq!(cumulative[LATENCY_BUCKETS.len()], 3);
        assert!((sum - 1000.011).abs() < 1e-9);
    }
}
