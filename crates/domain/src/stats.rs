//! Statistics counters for instances, pools, echelons and groups, and their snapshots.
//!
//! Counters are relaxed atomics: they are read for the admin API and metrics, never to make a
//! routing decision, so a slightly stale sum is fine and the hot path pays no fence.

use core::time::Duration;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::chat::Usage;

/// Monotonic counters of one routing element.
#[derive(Debug, Default)]
pub struct Counters {
    attempts: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    rate_limited: AtomicU64,
    cancelled: AtomicU64,
    latency_micros: AtomicU64,
    latency_samples: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    fallbacks: AtomicU64,
    skips: AtomicU64,
}

impl Counters {
    /// An attempt started.
    pub fn attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt succeeded after `latency`, using `usage` when reported.
    pub fn success(&self, latency: Duration, usage: Option<Usage>) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.latency(latency);
        if let Some(usage) = usage {
            self.input_tokens
                .fetch_add(u64::from(usage.input_tokens), Ordering::Relaxed);
            self.output_tokens
                .fetch_add(u64::from(usage.output_tokens), Ordering::Relaxed);
        }
    }

    /// An attempt failed after `latency`; `rate_limited` for a 429.
    pub fn failure(&self, latency: Duration, rate_limited: bool) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if rate_limited {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        self.latency(latency);
    }

    /// An attempt was cancelled before it had an outcome.
    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// A request moved on from this element to a fallback.
    pub fn fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// This element was skipped by the rotation.
    pub fn skip(&self) {
        self.skips.fetch_add(1, Ordering::Relaxed);
    }

    fn latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_micros.fetch_add(micros, Ordering::Relaxed);
        self.latency_samples.fetch_add(1, Ordering::Relaxed);
    }

    /// The current totals.
    pub fn snapshot(&self) -> Stats {
        let samples = self.latency_samples.load(Ordering::Relaxed);
        let micros = self.latency_micros.load(Ordering::Relaxed);
        Stats {
            attempts: self.attempts.load(Ordering::Relaxed),
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            avg_latency: (samples > 0).then(|| Duration::from_micros(micros / samples)),
            input_tokens: self.input_tokens.load(Ordering::Relaxed),
            output_tokens: self.output_tokens.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            skips: self.skips.load(Ordering::Relaxed),
        }
    }
}

/// Totals of one routing element since it was created (or carried over by a reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Stats {
    /// Upstream attempts started.
    pub attempts: u64,
    /// Attempts that succeeded.
    pub successes: u64,
    /// Attempts that failed, whatever the class.
    pub failures: u64,
    /// Of the failures, those that were rate limited (429).
    pub rate_limited: u64,
    /// Attempts dropped or cancelled before an outcome.
    pub cancelled: u64,
    /// Mean latency of finished attempts.
    pub avg_latency: Option<Duration>,
    /// Prompt tokens reported by upstreams.
    pub input_tokens: u64,
    /// Generated tokens reported by upstreams.
    pub output_tokens: u64,
    /// Times a request moved on from this element to a fallback.
    pub fallbacks: u64,
    /// Times this element was passed over as unavailable.
    pub skips: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_averages_latency_over_finished_attempts() {
        let c = Counters::default();
        c.attempt();
        c.attempt();
        c.success(Duration::from_millis(100), Some(Usage::new(10, 5)));
        c.failure(Duration::from_millis(300), true);
        let s = c.snapshot();
        assert_eq!(
            (s.attempts, s.successes, s.failures, s.rate_limited),
            (2, 1, 1, 1)
        );
        assert_eq!(s.avg_latency, Some(Duration::from_millis(200)));
        assert_eq!((s.input_tokens, s.output_tokens), (10, 5));
    }
}
