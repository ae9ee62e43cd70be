//! A sliding window of two counts (calls and failures, requests and retries) over the last few
//! seconds, in ten buckets: what "recent" means for the least-bad ranking of a pool's panic mode
//! and for the fleet-wide retry budget.
//!
//! The state is plain data (bucket epochs and counts) behind one short mutex section per update,
//! so a shared backend can carry it.

use core::time::Duration;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::time::Instant;

/// Buckets of a window.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    epoch: u64,
    a: u64,
    b: u64,
}

/// Two counts over a sliding window of `span`, kept in ten buckets of `span / 10` each.
#[derive(Debug)]
pub struct SlidingCounts {
    bucket_nanos: u128,
    buckets: Mutex<[Bucket; BUCKETS]>,
}

impl SlidingCounts {
    /// An empty window of `span` (at least ten nanoseconds).
    pub fn new(span: Duration) -> Self {
        Self {
            bucket_nanos: (span.as_nanos() / BUCKETS as u128).max(1),
            buckets: Mutex::new([Bucket::default(); BUCKETS]),
        }
    }

    /// The span the window covers.
    pub fn span(&self) -> Duration {
        let nanos = self.bucket_nanos.saturating_mul(BUCKETS as u128);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn epoch(&self, now: Instant) -> u64 {
        // Epoch 0 marks an unused bucket, so real epochs start at 1.
        u64::try_from(now.elapsed_since_origin().as_nanos() / self.bucket_nanos)
            .unwrap_or(u64::MAX - 1)
            + 1
    }

    /// Adds `a` and `b` at `now`.
    pub fn add(&self, now: Instant, a: u64, b: u64) {
        let epoch = self.epoch(now);
        let mut buckets = self.lock();
        let slot = &mut buckets[(epoch % BUCKETS as u64) as usize];
        if slot.epoch != epoch {
            if slot.epoch > epoch {
                // A late update for a bucket that has already been reused: drop it.
                return;
            }
            *slot = Bucket { epoch, a: 0, b: 0 };
        }
        slot.a = slot.a.saturating_add(a);
        slot.b = slot.b.saturating_add(b);
    }

    /// Takes `a` and `b` back from the bucket of `now` (never below zero): an addition at `now`
    /// that turned out not to happen.
    pub fn sub(&self, now: Instant, a: u64, b: u64) {
        let epoch = self.epoch(now);
        let mut buckets = self.lock();
        let slot = &mut buckets[(epoch % BUCKETS as u64) as usize];
        if slot.epoch == epoch {
            slot.a = slot.a.saturating_sub(a);
            slot.b = slot.b.saturating_sub(b);
        }
    }

    /// The two counts of the window ending at `now`.
    pub fn totals(&self, now: Instant) -> (u64, u64) {
        let epoch = self.epoch(now);
        let oldest = epoch.saturating_sub(BUCKETS as u64 - 1);
        self.lock()
            .iter()
            .filter(|b| b.epoch >= oldest && b.epoch <= epoch)
            .fold((0, 0), |(a, b), bucket| (a + bucket.a, b + bucket.b))
    }

    fn lock(&self) -> MutexGuard<'_, [Bucket; BUCKETS]> {
        // Updates are plain assignments; a poisoned lock still holds usable counts.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_elapsed(Duration::from_millis(ms))
    }

    #[test]
    fn counts_slide_out_bucket_by_bucket() {
        let w = SlidingCounts::new(Duration::from_secs(10));
        w.add(at(0), 1, 0);
        w.add(at(4_500), 2, 1);
        assert_eq!(w.totals(at(9_999)), (3, 1));
        // At 10 s the first bucket (0..1 s) has left the window.
        assert_eq!(w.totals(at(10_000)), (2, 1));
        assert_eq!(w.totals(at(13_999)), (2, 1));
        assert_eq!(w.totals(at(14_000)), (0, 0));
        // A reused slot starts from zero.
        w.add(at(20_100), 5, 5);
        assert_eq!(w.totals(at(20_100)), (5, 5));
    }

    #[test]
    fn late_updates_for_a_reused_bucket_are_dropped() {
        let w = SlidingCounts::new(Duration::from_secs(10));
        w.add(at(10_000), 1, 0);
        w.add(at(0), 7, 7);
        assert_eq!(w.totals(at(10_000)), (1, 0));
        assert_eq!(w.span(), Duration::from_secs(10));
    }
}
