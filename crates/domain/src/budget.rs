//! The fleet-wide retry budget (Finagle's `RetryBudget`, gRPC's retry throttling): retries and
//! fallback attempts are bounded across every request, not only per request.
//!
//! Every request deposits into a sliding window; every attempt after a request's first one (a
//! retry of the same instance, the next instance, the next echelon) withdraws. A withdrawal is
//! allowed while the retries of the window stay within `ratio` × the requests of the window plus
//! `min_per_second` × the window's seconds. In a total outage the upstreams then see at most
//! `1 + ratio` attempts per request (1.5 with the defaults); in a partial one (every member
//! failing 20 %, which needs about 25 % retries) retries still rescue requests; and a quiet
//! gateway can still retry its few requests thanks to the floor.
//!
//! The state is two windowed counts and a refusal counter, plain data a shared backend can carry.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::spec::RetryBudgetPolicy;
use crate::time::Instant;
use crate::window::SlidingCounts;

/// The retry budget of one routing table (kept across reloads while its policy is unchanged).
#[derive(Debug)]
pub struct RetryBudget {
    policy: RetryBudgetPolicy,
    /// Requests and retries in the window.
    window: SlidingCounts,
    refused: AtomicU64,
}

/// What the budget holds at a moment, for the admin API and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RetryBudgetSnapshot {
    /// Its policy.
    pub policy: RetryBudgetPolicy,
    /// Requests in the window.
    pub requests: u64,
    /// Retries in the window.
    pub retries: u64,
    /// Retries the window still allows.
    pub left: u64,
    /// Retries refused since the budget was created.
    pub refused: u64,
}

impl RetryBudget {
    /// An empty budget under `policy`.
    pub fn new(policy: RetryBudgetPolicy) -> Self {
        Self {
            window: SlidingCounts::new(policy.window),
            policy,
            refused: AtomicU64::new(0),
        }
    }

    /// Its policy.
    pub fn policy(&self) -> &RetryBudgetPolicy {
        &self.policy
    }

    /// A request started at `now`.
    pub fn deposit(&self, now: Instant) {
        self.window.add(now, 1, 0);
    }

    /// Retries allowed in a window holding `requests` requests.
    fn allowance(&self, requests: u64) -> u64 {
        let floor = self.policy.min_per_second as f64 * self.policy.window.as_secs_f64();
        (self.policy.ratio * requests as f64 + floor) as u64
    }

    /// Takes one retry at `now` if the budget allows it; a refusal is counted.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let (requests, retries) = self.window.totals(now);
        if retries >= self.allowance(requests) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.window.add(now, 0, 1);
        true
    }

    /// Gives back a retry taken at `now` that no attempt used.
    pub fn refund(&self, now: Instant) {
        self.window.sub(now, 0, 1);
    }

    /// Its state at `now`.
    pub fn snapshot(&self, now: Instant) -> RetryBudgetSnapshot {
        let (requests, retries) = self.window.totals(now);
        RetryBudgetSnapshot {
            policy: self.policy,
            requests,
            retries,
            left: self.allowance(requests).saturating_sub(retries),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(RetryBudgetPolicy::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn at(ms: u64) -> Instant {
        Instant::from_elapsed(Duration::from_millis(ms))
    }

    fn budget(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetPolicy {
            ratio,
            min_per_second,
            window: Duration::from_secs(10),
        })
    }

    #[test]
    fn retries_stay_within_the_ratio_of_recent_requests() {
        let b = budget(0.5, 0);
        for _ in 0..10 {
            b.deposit(at(0));
        }
        let granted = (0..10).filter(|_| b.try_withdraw(at(1))).count();
        assert_eq!(granted, 5);
        let s = b.snapshot(at(1));
        assert_eq!((s.requests, s.retries, s.left, s.refused), (10, 5, 0, 5));
        // Once the window has moved past them, the old requests no longer pay for retries.
        assert!(!b.try_withdraw(at(10_500)));
        b.deposit(at(10_500));
        b.deposit(at(10_500));
        assert!(b.try_withdraw(at(10_500)));
    }

    #[test]
    fn the_floor_lets_a_quiet_gateway_retry_and_refunds_give_back() {
        let b = budget(0.0, 1);
        // One retry per second of a 10 s window, with no requests at all.
        let granted = (0..20).filter(|_| b.try_withdraw(at(0))).count();
        assert_eq!(granted, 10);
        b.refund(at(0));
        assert!(b.try_withdraw(at(0)));
        assert!(!b.try_withdraw(at(0)));
    }
}
