//! The circuit breaker: closed, open and half-open, with trial permits that cannot leak.
//!
//! A breaker opens on evidence, not on a streak that luck produces (DESIGN.md §2, issue 10):
//!
//! - **rate**: at least `failure_rate.min_calls` calls in the last `failure_rate.window` and at
//!   least `failure_rate.threshold` of them failed (the Hystrix and resilience4j model; on by
//!   default: 20 calls, 10 s, 50 %);
//! - **streak**: `failure_threshold` failures in a row, counted so that they stay evidence at high
//!   concurrency. A failure lengthens the streak only when its call was admitted after the
//!   latest-admitted call that succeeded (a slow failure of a call that started before a success
//!   says nothing new), and only once per request: the retry of a request the breaker already saw
//!   fail is admitted as a [`Admission::repeat`] and does not count again.
//!
//! At a 20 % random failure rate a streak of ten happens about once in ten million calls and the
//! rate never nears one half; a member that fails everything trips the streak in ten calls.
//!
//! It stays open for `recovery_time`, doubled on every repeated trip and jittered upwards by up
//! to a fifth, never beyond `max_recovery_time`. Then it admits exactly `half_open_requests`
//! trial calls: all of them succeeding closes it, any failing re-opens it. A pool's ejection
//! limit or panic mode may still send a call through an open breaker ([`Admission::forced`]): its
//! success closes the breaker, its failure changes nothing.
//!
//! The whole state is plain data (counters, instants, a bucket array), so a shared backend can
//! carry it.
//!
//! Calls go through a [`BreakerPermit`]. Only outcomes that are the upstream's fault
//! ([`ErrorClass::counts_against_upstream`]) count. A permit dropped without an outcome (the
//! caller cancelled) or with a neutral one gives its trial slot back, so the breaker never sticks
//! half-open. Permits taken before a transition are stale afterwards and change nothing.

use core::fmt;
use core::time::Duration;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::ErrorClass;
use crate::random::Random;
use crate::spec::BreakerPolicy;
use crate::time::Instant;

/// The three breaker states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum BreakerState {
    /// Calls flow; failures are counted.
    Closed,
    /// Calls are refused until the open time is over.
    Open,
    /// A limited number of trial calls decide whether to close or re-open.
    HalfOpen,
}

impl BreakerState {
    /// The stable snake_case name for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, for events and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerTransition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// When an open breaker will admit trials (set when `to` is [`BreakerState::Open`]).
    pub open_until: Option<Instant>,
}

/// Why a breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BreakerRefusal {
    /// Open until the given instant.
    #[error("circuit breaker open")]
    Open {
        /// When it admits trial calls.
        until: Instant,
    },
    /// Half-open with every trial slot taken.
    #[error("circuit breaker half-open with every trial in flight")]
    TrialsInFlight,
}

/// Number of buckets of the failure-rate window.
const RATE_BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    calls: u32,
    failures: u32,
}

/// How a call is admitted through a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Admission {
    /// Another attempt of a request whose failure this breaker already counted: its failure
    /// does not lengthen the streak (it still counts in the rate window).
    pub repeat: bool,
    /// Let through an open breaker by a pool's ejection limit or panic mode.
    pub forced: bool,
}

impl Admission {
    /// A request's first call through the breaker.
    pub const FIRST: Self = Self {
        repeat: false,
        forced: false,
    };
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Bumped on every transition; permits of an older generation are stale.
    generation: u64,
    /// Calls admitted so far: each permit's sequence number.
    admitted: u64,
    /// The sequence number of the latest-admitted call that succeeded.
    last_success: u64,
    consecutive_failures: u32,
    buckets: [Bucket; RATE_BUCKETS],
    /// Trips since the breaker last closed; the open time doubles with each.
    trips: u32,
    open_until: Instant,
    trials_admitted: u32,
    trials_succeeded: u32,
}

/// A circuit breaker. Cloning shares the state (permits keep a handle to it).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    inner: Arc<Mutex<Inner>>,
}

impl CircuitBreaker {
    /// A closed breaker with the given policy.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            inner: Arc::new(Mutex::new(Inner {
                state: BreakerState::Closed,
                generation: 0,
                admitted: 0,
                last_success: 0,
                consecutive_failures: 0,
                buckets: [Bucket::default(); RATE_BUCKETS],
                trips: 0,
                open_until: Instant::ZERO,
                trials_admitted: 0,
                trials_succeeded: 0,
            })),
        }
    }

    /// Its policy.
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// The state at `now` (an open breaker whose time is over reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open if now >= inner.open_until => BreakerState::HalfOpen,
            state => state,
        }
    }

    /// When an open breaker admits trials; `None` unless open at `now`.
    pub fn open_until(&self, now: Instant) -> Option<Instant> {
        let inner = self.lock();
        (inner.state == BreakerState::Open && now < inner.open_until).then_some(inner.open_until)
    }

    /// Trips since the breaker last closed.
    pub fn trips(&self) -> u32 {
        self.lock().trips
    }

    /// Whether a call would be admitted at `now`, without taking a permit.
    pub fn check(&self, now: Instant) -> Result<(), BreakerRefusal> {
        let inner = self.lock();
        match inner.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open if now < inner.open_until => Err(BreakerRefusal::Open {
                until: inner.open_until,
            }),
            BreakerState::Open => Ok(()),
            BreakerState::HalfOpen if inner.trials_admitted < self.trial_slots() => Ok(()),
            BreakerState::HalfOpen => Err(BreakerRefusal::TrialsInFlight),
        }
    }

    /// Consecutive failures counted towards the streak trigger.
    pub fn consecutive_failures(&self) -> u32 {
        self.lock().consecutive_failures
    }

    /// Calls and failures in the rate window at `now` (zero without a rate trigger).
    pub fn window(&self, now: Instant) -> (u32, u32) {
        let inner = self.lock();
        self.window_totals(&inner, now)
    }

    /// Admits a request's first call at `now`, or says why not. The returned permit reports the
    /// outcome.
    pub fn try_acquire(&self, now: Instant) -> Result<BreakerPermit, BreakerRefusal> {
        self.try_acquire_as(now, Admission::FIRST)
    }

    /// Admits a call at `now` as `admission` says, or says why not.
    pub fn try_acquire_as(
        &self,
        now: Instant,
        admission: Admission,
    ) -> Result<BreakerPermit, BreakerRefusal> {
        let mut inner = self.lock();
        let mut transition = None;
        let mut forced = false;
        if inner.state == BreakerState::Open {
            if now < inner.open_until {
                if !admission.forced {
                    return Err(BreakerRefusal::Open {
                        until: inner.open_until,
                    });
                }
                forced = true;
            } else {
                transition = Some(Self::enter(&mut inner, BreakerState::HalfOpen, None));
            }
        }
        let mut trial = false;
        if inner.state == BreakerState::HalfOpen && !forced {
            if inner.trials_admitted < self.trial_slots() {
                inner.trials_admitted += 1;
                trial = true;
            } else if admission.forced {
                forced = true;
            } else {
                return Err(BreakerRefusal::TrialsInFlight);
            }
        }
        inner.admitted += 1;
        Ok(BreakerPermit {
            breaker: self.clone(),
            generation: inner.generation,
            sequence: inner.admitted,
            repeat: admission.repeat,
            trial,
            forced,
            transition,
            settled: false,
        })
    }

    /// Holds the breaker open until `until` because the fleet's shared state says so (another
    /// replica's breaker for the same target is open, or holds the fleet's one half-open trial).
    /// An open breaker takes the new deadline as it is, so a hold can also be released early;
    /// the trip count is left alone. The transition, when it was not open before.
    pub fn hold_open(&self, until: Instant) -> Option<BreakerTransition> {
        let mut inner = self.lock();
        if inner.state == BreakerState::Open {
            inner.open_until = until;
            return None;
        }
        Some(Self::enter(&mut inner, BreakerState::Open, Some(until)))
    }

    /// Forces the breaker closed and forgets its history (an operator's reset).
    pub fn reset(&self) {
        let mut inner = self.lock();
        if inner.state != BreakerState::Closed {
            Self::enter(&mut inner, BreakerState::Closed, None);
        }
        inner.trips = 0;
        inner.consecutive_failures = 0;
        inner.buckets = [Bucket::default(); RATE_BUCKETS];
    }

    fn trial_slots(&self) -> u32 {
        self.policy.half_open_requests.max(1)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below keeps the state consistent between statements that could panic, so
        // a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enter(
        inner: &mut Inner,
        to: BreakerState,
        open_until: Option<Instant>,
    ) -> BreakerTransition {
        let from = inner.state;
        inner.state = to;
        inner.generation += 1;
        inner.trials_admitted = 0;
        inner.trials_succeeded = 0;
        inner.consecutive_failures = 0;
        inner.buckets = [Bucket::default(); RATE_BUCKETS];
        if let Some(until) = open_until {
            inner.open_until = until;
        }
        if to == BreakerState::Closed {
            inner.trips = 0;
        }
        BreakerTransition {
            from,
            to,
            open_until,
        }
    }

    /// The open time of the `trips`-th trip: doubled per trip, jittered up by at most a fifth,
    /// capped at `max_recovery_time` (or `recovery_time`, if that is larger).
    fn open_time(&self, trips: u32, rng: &dyn Random) -> Duration {
        let base = self.policy.recovery_time;
        let cap = self.policy.max_recovery_time.max(base);
        let factor = 1u32 << trips.saturating_sub(1).min(20);
        let grown = base.saturating_mul(factor).min(cap);
        let jitter = grown.mul_f64(rng.unit() * 0.2);
        (grown + jitter).min(cap)
    }

    fn open(&self, inner: &mut Inner, now: Instant, rng: &dyn Random) -> BreakerTransition {
        inner.trips = inner.trips.saturating_add(1);
        let until = now + self.open_time(inner.trips, rng);
        Self::enter(inner, BreakerState::Open, Some(until))
    }

    /// Calls and failures of the buckets still in the window at `now`.
    fn window_totals(&self, inner: &Inner, now: Instant) -> (u32, u32) {
        let Some((epoch, _)) = self.epoch(now) else {
            return (0, 0);
        };
        let oldest = epoch.saturating_sub(RATE_BUCKETS as u64 - 1);
        inner
            .buckets
            .iter()
            .filter(|b| b.epoch >= oldest && b.epoch <= epoch && b.calls > 0)
            .fold((0u32, 0u32), |(c, f), b| (c + b.calls, f + b.failures))
    }

    fn epoch(&self, now: Instant) -> Option<(u64, u128)> {
        let rate = self.policy.failure_rate?;
        let len = (rate.window.as_nanos() / RATE_BUCKETS as u128).max(1);
        Some((
            u64::try_from(now.elapsed_since_origin().as_nanos() / len).unwrap_or(u64::MAX),
            len,
        ))
    }

    /// Records a closed-state call in the failure-rate window; true when the rate trips.
    fn count_in_window(&self, inner: &mut Inner, now: Instant, failed: bool) -> bool {
        let (Some(rate), Some((epoch, _))) = (self.policy.failure_rate, self.epoch(now)) else {
            return false;
        };
        let slot = &mut inner.buckets[(epoch % RATE_BUCKETS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Bucket {
                epoch,
                calls: 0,
                failures: 0,
            };
        }
        slot.calls += 1;
        slot.failures += u32::from(failed);
        let (calls, failures) = self.window_totals(inner, now);
        failed
            && calls >= rate.min_calls.max(1)
            && f64::from(failures) >= rate.threshold * f64::from(calls)
    }

    fn settle(
        &self,
        permit: &BreakerPermit,
        result: Settle,
        now: Instant,
        rng: &dyn Random,
    ) -> Option<BreakerTransition> {
        let mut inner = self.lock();
        if inner.generation != permit.generation {
            // A permit from before the last transition: its outcome belongs to a past state.
            return None;
        }
        if permit.forced {
            // Let through an open breaker: a success is evidence enough to close it; a failure
            // only confirms what opened it.
            return (result == Settle::Success)
                .then(|| Self::enter(&mut inner, BreakerState::Closed, None));
        }
        match (permit.trial, result) {
            (true, Settle::Neutral) => {
                inner.trials_admitted = inner.trials_admitted.saturating_sub(1);
                None
            }
            (true, Settle::Failure) => Some(self.open(&mut inner, now, rng)),
            (true, Settle::Success) => {
                inner.trials_succeeded += 1;
                (inner.trials_succeeded >= self.trial_slots())
                    .then(|| Self::enter(&mut inner, BreakerState::Closed, None))
            }
            (false, Settle::Neutral) => None,
            (false, Settle::Success) => {
                if permit.sequence > inner.last_success {
                    inner.last_success = permit.sequence;
                    inner.consecutive_failures = 0;
                }
                self.count_in_window(&mut inner, now, false);
                None
            }
            (false, Settle::Failure) => {
                if !permit.repeat && permit.sequence > inner.last_success {
                    inner.consecutive_failures += 1;
                }
                let rate_tripped = self.count_in_window(&mut inner, now, true);
                (rate_tripped || inner.consecutive_failures >= self.policy.failure_threshold.max(1))
                    .then(|| self.open(&mut inner, now, rng))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Success,
    Failure,
    Neutral,
}

/// Admission of one call through a breaker. Report the outcome with [`BreakerPermit::success`] or
/// [`BreakerPermit::failure`]; dropping it unreported counts as a cancellation, which returns a
/// trial slot and counts nothing.
#[derive(Debug)]
#[must_use = "report the call's outcome; dropping the permit counts as a cancellation"]
pub struct BreakerPermit {
    breaker: CircuitBreaker,
    generation: u64,
    sequence: u64,
    repeat: bool,
    trial: bool,
    forced: bool,
    transition: Option<BreakerTransition>,
    settled: bool,
}

impl BreakerPermit {
    /// Whether this call is a half-open trial.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// Whether this call went through an open breaker (ejection limit or panic mode).
    pub fn is_forced(&self) -> bool {
        self.forced
    }

    /// The transition taking this permit caused (open → half-open), if any.
    pub fn transition(&self) -> Option<BreakerTransition> {
        self.transition
    }

    /// The call succeeded.
    pub fn success(mut self, now: Instant, rng: &dyn Random) -> Option<BreakerTransition> {
        self.settled = true;
        self.breaker.settle(&self, Settle::Success, now, rng)
    }

    /// The call failed with `class`; only upstream faults count, anything else is neutral.
    pub fn failure(
        mut self,
        class: ErrorClass,
        now: Instant,
        rng: &dyn Random,
    ) -> Option<BreakerTransition> {
        self.settled = true;
        let result = if class.counts_against_upstream() {
            Settle::Failure
        } else {
            Settle::Neutral
        };
        self.breaker.settle(&self, result, now, rng)
    }
}

/// A generator that is never read: neutral settlements draw no jitter.
struct NoJitter;

impl Random for NoJitter {
    fn next_u64(&self) -> u64 {
        0
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.settled {
            let breaker = self.breaker.clone();
            breaker.settle(self, Settle::Neutral, Instant::ZERO, &NoJitter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SplitMix64;
    use crate::spec::FailureRate;

    fn secs(s: u64) -> Instant {
        Instant::from_elapsed(Duration::from_secs(s))
    }

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failure_threshold: 3,
            failure_rate: None,
            recovery_time: Duration::from_secs(5),
            max_recovery_time: Duration::from_secs(40),
            half_open_requests: 2,
        }
    }

    /// A generator whose `unit()` is always zero, so open times are exact.
    struct Zero;
    impl Random for Zero {
        fn next_u64(&self) -> u64 {
            0
        }
    }

    fn fail(b: &CircuitBreaker, now: Instant) -> Option<BreakerTransition> {
        b.try_acquire(now)
            .unwrap()
            .failure(ErrorClass::Server, now, &Zero)
    }

    #[test]
    fn transitions_closed_open_half_open_closed() {
        let b = CircuitBreaker::new(policy());
        assert_eq!(fail(&b, secs(0)), None);
        assert_eq!(fail(&b, secs(0)), None);
        let t = fail(&b, secs(1)).unwrap();
        assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
        assert_eq!(t.open_until, Some(secs(6)));
        // Still open at +4 s, half-open at +5 s.
        assert_eq!(b.state(secs(5)), BreakerState::Open);
        assert_eq!(
            b.try_acquire(secs(5)).unwrap_err(),
            BreakerRefusal::Open { until: secs(6) }
        );
        assert_eq!(b.state(secs(6)), BreakerState::HalfOpen);
        let first = b.try_acquire(secs(6)).unwrap();
        assert!(first.is_trial());
        assert_eq!(first.transition().unwrap().to, BreakerState::HalfOpen);
        let second = b.try_acquire(secs(6)).unwrap();
        assert_eq!(
            b.try_acquire(secs(6)).unwrap_err(),
            BreakerRefusal::TrialsInFlight
        );
        assert_eq!(first.success(secs(7), &Zero), None);
        let closed = second.success(secs(7), &Zero).unwrap();
        assert_eq!(closed.to, BreakerState::Closed);
        assert_eq!(b.trips(), 0);
    }

    #[test]
    fn success_resets_consecutive_failures() {
        let b = CircuitBreaker::new(policy());
        fail(&b, secs(0));
        fail(&b, secs(0));
        assert_eq!(
            b.try_acquire(secs(0)).unwrap().success(secs(0), &Zero),
            None
        );
        fail(&b, secs(0));
        fail(&b, secs(0));
        assert_eq!(b.state(secs(0)), BreakerState::Closed);
    }

    #[test]
    fn trial_failure_reopens_with_doubled_capped_time() {
        let b = CircuitBreaker::new(policy());
        for _ in 0..3 {
            fail(&b, secs(0));
        }
        let mut now = secs(5);
        let mut expected = [10, 20, 40, 40].into_iter();
        for _ in 0..4 {
            let t = b
                .try_acquire(now)
                .unwrap()
                .failure(ErrorClass::Timeout, now, &Zero)
                .unwrap();
            let open_for = t.open_until.unwrap() - now;
            assert_eq!(open_for, Duration::from_secs(expected.next().unwrap()));
            now = t.open_until.unwrap();
        }
    }

    #[test]
    fn jitter_stays_within_a_fifth_and_the_cap() {
        let rng = SplitMix64::new(3);
        let b = CircuitBreaker::new(policy());
        for trips in 1..8 {
            let d = b.open_time(trips, &rng);
            let base = Duration::from_secs(5 * (1 << (trips - 1))).min(Duration::from_secs(40));
            assert!(d >= base && d <= base.mul_f64(1.2).min(Duration::from_secs(40)));
        }
    }

    #[test]
    fn neutral_outcomes_never_count() {
        let b = CircuitBreaker::new(policy());
        for class in [
            ErrorClass::ClientGone,
            ErrorClass::InvalidRequest,
            ErrorClass::RateLimited,
            ErrorClass::Auth,
            ErrorClass::ContextLength,
            ErrorClass::ContentFilter,
        ] {
            for _ in 0..5 {
                assert_eq!(
                    b.try_acquire(secs(0))
                        .unwrap()
                        .failure(class, secs(0), &Zero),
                    None
                );
            }
        }
        assert_eq!(b.state(secs(0)), BreakerState::Closed);
    }

    #[test]
    fn cancelled_trial_returns_its_slot() {
        let b = CircuitBreaker::new(BreakerPolicy {
            half_open_requests: 1,
            ..policy()
        });
        for _ in 0..3 {
            fail(&b, secs(0));
        }
        let trial = b.try_acquire(secs(5)).unwrap();
        assert!(b.try_acquire(secs(5)).is_err());
        drop(trial);
        let trial = b.try_acquire(secs(5)).unwrap();
        assert!(trial.is_trial());
        assert_eq!(
            trial.success(secs(5), &Zero).unwrap().to,
            BreakerState::Closed
        );
    }

    #[test]
    fn stale_permits_change_nothing() {
        let b = CircuitBreaker::new(policy());
        let old = b.try_acquire(secs(0)).unwrap();
        for _ in 0..3 {
            fail(&b, secs(0));
        }
        assert_eq!(old.failure(ErrorClass::Server, secs(1), &Zero), None);
        assert_eq!(b.open_until(secs(1)), Some(secs(5)));
    }

    #[test]
    fn failure_rate_trips_after_min_calls() {
        let b = CircuitBreaker::new(BreakerPolicy {
            failure_threshold: 100,
            failure_rate: Some(FailureRate {
                threshold: 0.5,
                window: Duration::from_secs(10),
                min_calls: 4,
            }),
            ..policy()
        });
        let ok = |t| b.try_acquire(t).unwrap().success(t, &Zero);
        ok(secs(0));
        fail(&b, secs(1));
        ok(secs(2));
        // Three calls so far, one failed: below min_calls.
        let t = fail(&b, secs(3)).unwrap();
        assert_eq!(t.to, BreakerState::Open);
    }

    #[test]
    fn failure_rate_forgets_calls_outside_the_window() {
        let b = CircuitBreaker::new(BreakerPolicy {
            failure_threshold: 100,
            failure_rate: Some(FailureRate {
                threshold: 0.5,
                window: Duration::from_secs(10),
                min_calls: 4,
            }),
            ..policy()
        });
        fail(&b, secs(0));
        fail(&b, secs(1));
        fail(&b, secs(2));
        // Twenty seconds later the old failures are out of the window.
        let ok = |t| b.try_acquire(t).unwrap().success(t, &Zero);
        ok(secs(30));
        ok(secs(30));
        ok(secs(30));
        assert_eq!(fail(&b, secs(31)), None);
        assert_eq!(b.state(secs(31)), BreakerState::Closed);
    }
}
