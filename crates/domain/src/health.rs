//! The health state machine of an instance: healthy, degraded, unhealthy, recovering.
//!
//! ```text
//! healthy ──failure──▶ degraded ──(failure_threshold consecutive failures)──▶ unhealthy
//!    ▲                    │ success                                             │
//!    │◀───────────────────┘                     (recovery_time passed, then a success or probe)
//!    │                                                                          ▼
//!    └──────────(success_threshold consecutive successes)──────────────── recovering
//!                                     a failure while recovering ──▶ unhealthy again
//! ```
//!
//! An unhealthy instance rests for `recovery_time` from its last failure; a success before that
//! (possible under the rotation's panic policy) is noted but does not end the rest.

use core::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::spec::HealthPolicy;
use crate::time::Instant;

/// Where an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum HealthState {
    /// No recent failures.
    Healthy,
    /// Failed recently, fewer than `failure_threshold` times in a row; still served.
    Degraded,
    /// Failed `failure_threshold` times in a row; skipped until `recovery_time` has passed.
    Unhealthy,
    /// Back in service after a rest, until `success_threshold` successes in a row.
    Recovering,
}

impl HealthState {
    /// The stable snake_case name for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
            Self::Recovering => "recovering",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTransition {
    /// Before.
    pub from: HealthState,
    /// After.
    pub to: HealthState,
}

#[derive(Debug)]
struct Inner {
    state: HealthState,
    consecutive_failures: u32,
    consecutive_successes: u32,
    last_failure: Instant,
}

/// The health of one instance under a [`HealthPolicy`].
#[derive(Debug)]
pub struct Health {
    policy: HealthPolicy,
    inner: Mutex<Inner>,
}

impl Health {
    /// A healthy instance.
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            inner: Mutex::new(Inner {
                state: HealthState::Healthy,
                consecutive_failures: 0,
                consecutive_successes: 0,
                last_failure: Instant::ZERO,
            }),
        }
    }

    /// The thresholds.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        self.lock().state
    }

    /// When an unhealthy instance's rest ends; `None` when it is not unhealthy.
    pub fn resting_until(&self) -> Option<Instant> {
        let inner = self.lock();
        (inner.state == HealthState::Unhealthy)
            .then(|| inner.last_failure + self.policy.recovery_time)
    }

    /// Whether the instance may take traffic at `now`: every state but an unhealthy one still
    /// resting. `Err` carries the end of the rest.
    pub fn check(&self, now: Instant) -> Result<(), Instant> {
        match self.resting_until() {
            Some(until) if now < until => Err(until),
            _ => Ok(()),
        }
    }

    /// Consecutive failures so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.lock().consecutive_failures
    }

    /// A successful call or probe at `now`.
    pub fn record_success(&self, now: Instant) -> Option<HealthTransition> {
        let mut inner = self.lock();
        let from = inner.state;
        inner.consecutive_failures = 0;
        inner.consecutive_successes = inner.consecutive_successes.saturating_add(1);
        let to = match from {
            HealthState::Healthy | HealthState::Degraded => HealthState::Healthy,
            HealthState::Unhealthy if now < inner.last_failure + self.policy.recovery_time => {
                // Still resting: the success counts towards nothing yet.
                inner.consecutive_successes = 0;
                HealthState::Unhealthy
            }
            HealthState::Unhealthy | HealthState::Recovering => {
                if from == HealthState::Unhealthy {
                    inner.consecutive_successes = 1;
                }
                if inner.consecutive_successes >= self.policy.success_threshold.max(1) {
                    HealthState::Healthy
                } else {
                    HealthState::Recovering
                }
            }
        };
        Self::finish(&mut inner, from, to)
    }

    /// A failed call or probe at `now` (only failures that are the upstream's fault).
    pub fn record_failure(&self, now: Instant) -> Option<HealthTransition> {
        let mut inner = self.lock();
        let from = inner.state;
        inner.consecutive_successes = 0;
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        inner.last_failure = now;
        let to = match from {
            HealthState::Recovering | HealthState::Unhealthy => HealthState::Unhealthy,
            HealthState::Healthy | HealthState::Degraded => {
                if inner.consecutive_failures >= self.policy.failure_threshold.max(1) {
                    HealthState::Unhealthy
                } else {
                    HealthState::Degraded
                }
            }
        };
        Self::finish(&mut inner, from, to)
    }

    /// Back to healthy, forgetting history (an operator's reset).
    pub fn reset(&self) -> Option<HealthTransition> {
        let mut inner = self.lock();
        let from = inner.state;
        inner.consecutive_failures = 0;
        inner.consecutive_successes = 0;
        Self::finish(&mut inner, from, HealthState::Healthy)
    }

    fn finish(inner: &mut Inner, from: HealthState, to: HealthState) -> Option<HealthTransition> {
        if to != HealthState::Unhealthy && to != HealthState::Recovering {
            inner.consecutive_successes = 0;
        }
        inner.state = to;
        (from != to).then_some(HealthTransition { from, to })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Updates are plain assignments; a poisoned lock still holds a consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::*;
    use core::time::Duration;

    fn secs(s: u64) -> Instant {
        Instant::from_elapsed(Duration::from_secs(s))
    }

    fn health() -> Health {
        Health::new(HealthPolicy {
            failure_threshold: 3,
            success_threshold: 2,
            recovery_time: Duration::from_secs(10),
        })
    }

    #[derive(Clone, Copy)]
    enum Ev {
        Ok(u64),
        Fail(u64),
    }

    /// Each row: events in order, then the state after each of them.
    #[test]
    fn table_of_transitions() {
        use Ev::*;
        let rows: &[(&[Ev], &[HealthState])] = &[
            (&[Fail(0)], &[Degraded]),
            (&[Fail(0), Ok(1)], &[Degraded, Healthy]),
            (
                &[Fail(0), Fail(1), Fail(2)],
                &[Degraded, Degraded, Unhealthy],
            ),
            // A success while resting changes nothing.
            (
                &[Fail(0), Fail(0), Fail(0), Ok(5)],
                &[Degraded, Degraded, Unhealthy, Unhealthy],
            ),
            (
                &[Fail(0), Fail(0), Fail(0), Ok(10), Ok(11)],
                &[Degraded, Degraded, Unhealthy, Recovering, Healthy],
            ),
            (
                &[Fail(0), Fail(0), Fail(0), Ok(10), Fail(11), Ok(15), Ok(21)],
                &[
                    Degraded, Degraded, Unhealthy, Recovering, Unhealthy, Unhealthy, Recovering,
                ],
            ),
            // Failures while unhealthy extend the rest.
            (
                &[Fail(0), Fail(0), Fail(0), Fail(8), Ok(12), Ok(18)],
                &[
                    Degraded, Degraded, Unhealthy, Unhealthy, Unhealthy, Recovering,
                ],
            ),
        ];
        for (events, states) in rows {
            let h = health();
            for (event, expected) in events.iter().zip(states.iter()) {
                match *event {
                    Ok(t) => h.record_success(secs(t)),
                    Fail(t) => h.record_failure(secs(t)),
                };
                assert_eq!(h.state(), *expected);
            }
        }
    }

    #[test]
    fn resting_blocks_until_recovery_time() {
        let h = health();
        for _ in 0..3 {
            h.record_failure(secs(4));
        }
        assert_eq!(h.check(secs(13)), Err(secs(14)));
        assert_eq!(h.check(secs(14)), Result::Ok(()));
        assert_eq!(h.resting_until(), Some(secs(14)));
    }

    #[test]
    fn threshold_of_one_goes_straight_to_unhealthy_and_back() {
        let h = Health::new(HealthPolicy {
            failure_threshold: 1,
            success_threshold: 1,
            recovery_time: Duration::ZERO,
        });
        let t = h.record_failure(secs(0)).unwrap();
        assert_eq!((t.from, t.to), (Healthy, Unhealthy));
        let t = h.record_success(secs(0)).unwrap();
        assert_eq!((t.from, t.to), (Unhealthy, Healthy));
    }
}
