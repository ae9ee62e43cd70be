//! Limits: requests or tokens per minute (token bucket or sliding window) and concurrency permits.
//!
//! Rate limiters are checked before an attempt and charged when it starts; a tokens-per-minute
//! limiter is charged with an estimate first and corrected with the upstream's reported usage
//! afterwards. Concurrency is a permit count whose permits are drop guards, so a slot returns on
//! every path: normal completion, an error, a cancelled future or a panic unwinding through it.
//!
//! When several replicas share one budget, a rate limiter also holds a [`Lease`]: the slice of
//! the fleet-wide budget this replica may spend before it asks the shared store for more. The
//! lease is checked and charged with the local limit, in memory; only the background sync of
//! `echelon-application` talks to the store.

use core::fmt;
use core::time::Duration;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::spec::RateAlgorithm;
use crate::time::Instant;

/// The window every per-minute limit is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The tighter of two optional bounds (a limit, a deadline): the smaller one, or the one that
/// is set.
pub fn tighter<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Which limit is saturated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Requests in flight at once.
    Concurrency,
}

impl LimitKind {
    /// The stable snake_case name for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "rpm",
            Self::Tokens => "tpm",
            Self::Concurrency => "concurrency",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A limit is full: the request must go elsewhere or wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[error("{limit} limit saturated{}", retry_in.map(|d| format!(", capacity returns in {d:?}")).unwrap_or_default())]
pub struct Saturated {
    /// Which limit.
    pub limit: LimitKind,
    /// When enough capacity returns; `None` for concurrency, which frees up when a request ends.
    pub retry_in: Option<Duration>,
}

/// Micro-units per token: the bucket counts in integers so that rounding can only under-admit.
const SCALE: i128 = 1_000_000;

#[derive(Debug)]
enum RateState {
    Bucket {
        /// Micro-tokens available; negative after usage beyond the estimate (a debt).
        micros: i128,
        updated: Instant,
    },
    Window {
        /// Admitted amounts with their time, oldest first.
        entries: VecDeque<(Instant, u64)>,
        sum: u64,
    },
}

/// How long a limiter whose lease is spent says to wait: about the interval of the background
/// sync that brings a new slice.
pub const LEASE_RETRY: Duration = Duration::from_millis(250);

/// The slice of a fleet-wide budget this replica holds (see the module docs).
///
/// Inactive, it admits everything and counts nothing (one replica alone). Active, it admits
/// while its balance is positive and charges every admission to it; a charge larger than the
/// balance leaves a debt that the next sync pays to the shared budget before it asks for more.
#[derive(Debug, Default)]
pub struct Lease {
    active: AtomicBool,
    /// Units this replica may still spend; negative after a charge beyond the balance.
    balance: AtomicI64,
    /// Units charged since the last [`Lease::take_demand`], net of refunds.
    spent: AtomicI64,
    /// Whether an admission was refused for want of balance since the last take.
    starved: AtomicBool,
}

/// What a lease saw since the last sync: the demand its next slice is sized by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseDemand {
    /// The balance now (negative: a debt).
    pub balance: i64,
    /// Units charged since the last sync, net of refunds.
    pub spent: i64,
    /// Whether an admission was refused for want of balance.
    pub starved: bool,
}

impl Lease {
    /// Starts gating admissions on the balance (empty until the first grant).
    pub fn activate(&self) {
        self.active.store(true, Ordering::Release);
    }

    /// Whether admissions are gated on the balance.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The balance: units this replica may still spend.
    pub fn balance(&self) -> i64 {
        self.balance.load(Ordering::Acquire)
    }

    /// Adds `units` granted by the shared budget (negative: units handed back).
    pub fn credit(&self, units: i64) {
        self.balance.fetch_add(units, Ordering::AcqRel);
    }

    /// The demand since the last call, which it resets.
    pub fn take_demand(&self) -> LeaseDemand {
        LeaseDemand {
            balance: self.balance(),
            spent: self.spent.swap(0, Ordering::AcqRel),
            starved: self.starved.swap(false, Ordering::AcqRel),
        }
    }

    fn admits(&self) -> bool {
        !self.is_active() || self.balance() > 0
    }

    /// Charges `amount` if the balance is positive; refuses (and notes the want) otherwise.
    fn try_charge(&self, amount: u32) -> bool {
        if !self.is_active() {
            return true;
        }
        let amount = i64::from(amount);
        let charged = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b > 0).then_some(b - amount)
            })
            .is_ok();
        if charged {
            self.spent.fetch_add(amount, Ordering::AcqRel);
        } else {
            self.starved.store(true, Ordering::Release);
        }
        charged
    }

    /// Charges (positive) or refunds (negative) a correction, whatever the balance.
    fn adjust(&self, delta: i64) {
        if self.is_active() {
            self.balance.fetch_sub(delta, Ordering::AcqRel);
            self.spent.fetch_add(delta, Ordering::AcqRel);
        }
    }
}

/// A per-minute limit of requests or tokens.
///
/// The token bucket holds up to `per_minute` units and refills continuously at `per_minute` per
/// minute, so in any interval `t` it admits at most `per_minute + per_minute × t / 60 s`. The
/// sliding window admits at most `per_minute` in any 60-second window. A single charge larger than
/// the whole limit is clamped to the limit, so it waits for a full bucket instead of starving.
#[derive(Debug)]
pub struct RateLimiter {
    kind: LimitKind,
    per_minute: u32,
    state: Mutex<RateState>,
    lease: Lease,
}

impl RateLimiter {
    /// A limiter of `per_minute` units of `kind`, counted with `algorithm`; it starts full.
    pub fn new(kind: LimitKind, per_minute: u32, algorithm: RateAlgorithm, now: Instant) -> Self {
        let state = match algorithm {
            RateAlgorithm::TokenBucket => RateState::Bucket {
                micros: i128::from(per_minute) * SCALE,
                updated: now,
            },
            RateAlgorithm::SlidingWindow => RateState::Window {
                entries: VecDeque::new(),
                sum: 0,
            },
        };
        Self {
            kind,
            per_minute,
            state: Mutex::new(state),
            lease: Lease::default(),
        }
    }

    /// Its slice of the fleet-wide budget (inactive unless the budget is shared).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The configured amount per minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// What the limiter counts.
    pub fn kind(&self) -> LimitKind {
        self.kind
    }

    /// Whether `amount` would be admitted now, without charging it.
    pub fn check(&self, now: Instant, amount: u32) -> Result<(), Saturated> {
        let mut state = self.lock();
        self.refresh(&mut state, now);
        if let Some(retry_in) = self.wait_for(&state, now, amount) {
            return Err(self.saturated(retry_in));
        }
        if !self.lease.admits() {
            return Err(self.saturated(LEASE_RETRY));
        }
        Ok(())
    }

    /// Charges `amount` if it fits; otherwise charges nothing and says when it would fit.
    pub fn try_acquire(&self, now: Instant, amount: u32) -> Result<(), Saturated> {
        let mut state = self.lock();
        self.refresh(&mut state, now);
        if let Some(retry_in) = self.wait_for(&state, now, amount) {
            return Err(self.saturated(retry_in));
        }
        let amount = amount.min(self.per_minute);
        if !self.lease.try_charge(amount) {
            return Err(self.saturated(LEASE_RETRY));
        }
        match &mut *state {
            RateState::Bucket { micros, .. } => *micros -= i128::from(amount) * SCALE,
            RateState::Window { entries, sum } => {
                entries.push_back((now, u64::from(amount)));
                *sum += u64::from(amount);
            }
        }
        Ok(())
    }

    /// Corrects an earlier charge: a positive `delta` charges more (usage above the estimate, which
    /// may leave the bucket in debt), a negative one refunds (never above the limit).
    pub fn adjust(&self, now: Instant, delta: i64) {
        let mut state = self.lock();
        self.refresh(&mut state, now);
        self.lease.adjust(delta);
        let cap = i128::from(self.per_minute) * SCALE;
        match &mut *state {
            RateState::Bucket { micros, .. } => {
                *micros = (*micros - i128::from(delta) * SCALE).min(cap);
            }
            RateState::Window { entries, sum } => {
                if delta >= 0 {
                    let delta = delta.unsigned_abs();
                    entries.push_back((now, delta));
                    *sum += delta;
                } else {
                    // Refund from the newest charges, never below zero, so that a refund cannot
                    // outlive the charge it corrects and open room the window never had.
                    let mut refund = delta.unsigned_abs();
                    for (_, amount) in entries.iter_mut().rev() {
                        let take = refund.min(*amount);
                        *amount -= take;
                        *sum -= take;
                        refund -= take;
                        if refund == 0 {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Units available now (zero when in debt; no more than the lease holds when the budget is
    /// shared); for snapshots and metrics.
    pub fn available(&self, now: Instant) -> u32 {
        let local = self.available_locally(now);
        if self.lease.is_active() {
            local.min(u32::try_from(self.lease.balance().max(0)).unwrap_or(u32::MAX))
        } else {
            local
        }
    }

    fn available_locally(&self, now: Instant) -> u32 {
        let mut state = self.lock();
        self.refresh(&mut state, now);
        match &*state {
            RateState::Bucket { micros, .. } => {
                u32::try_from((*micros / SCALE).max(0)).unwrap_or(u32::MAX)
            }
            RateState::Window { sum, .. } => {
                u32::try_from(u64::from(self.per_minute).saturating_sub(*sum)).unwrap_or(0)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RateState> {
        // A panic elsewhere cannot leave the counts inconsistent (every update is one statement),
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn saturated(&self, retry_in: Duration) -> Saturated {
        Saturated {
            limit: self.kind,
            retry_in: Some(retry_in),
        }
    }

    fn refresh(&self, state: &mut RateState, now: Instant) {
        match state {
            RateState::Bucket { micros, updated } => {
                if now <= *updated {
                    return;
                }
                let elapsed = (now - *updated).as_nanos();
                // per_minute units per 60e9 ns = per_minute / 60_000 micro-units per ns; the
                // floor only ever under-credits.
                let credit = elapsed.saturating_mul(u128::from(self.per_minute)) / 60_000;
                let cap = i128::from(self.per_minute) * SCALE;
                let credit = i128::try_from(credit).unwrap_or(i128::MAX);
                *micros = micros.saturating_add(credit).min(cap);
                *updated = now;
            }
            RateState::Window { entries, sum } => {
                while let Some(&(at, amount)) = entries.front() {
                    if at + RATE_WINDOW > now {
                        break;
                    }
                    entries.pop_front();
                    *sum -= amount;
                }
            }
        }
    }

    /// `None` when `amount` fits now, otherwise how long until it does.
    fn wait_for(&self, state: &RateState, now: Instant, amount: u32) -> Option<Duration> {
        let amount = amount.min(self.per_minute);
        match state {
            RateState::Bucket { micros, .. } => {
                let need = i128::from(amount) * SCALE - *micros;
                if need <= 0 {
                    return None;
                }
                let per_minute = i128::from(self.per_minute.max(1));
                // ceil(need × 60_000 / per_minute) nanoseconds.
                let nanos = (need * 60_000 + per_minute - 1) / per_minute;
                Some(Duration::from_nanos(
                    u64::try_from(nanos).unwrap_or(u64::MAX),
                ))
            }
            RateState::Window { entries, sum } => {
                let limit = u64::from(self.per_minute);
                if sum + u64::from(amount) <= limit {
                    return None;
                }
                let mut remaining = *sum;
                for &(at, charged) in entries {
                    remaining -= charged;
                    if remaining + u64::from(amount) <= limit {
                        return Some((at + RATE_WINDOW) - now);
                    }
                }
                Some(RATE_WINDOW)
            }
        }
    }
}

#[derive(Debug)]
struct ConcurrencyInner {
    max: Option<u32>,
    in_use: AtomicU32,
}

/// A count of requests in flight, optionally bounded. Cloning shares the count.
///
/// Permits are drop guards: the slot returns when the [`ConcurrencyPermit`] is dropped, whatever
/// the path (completion, error, cancellation of the future holding it, panic unwinding).
#[derive(Debug, Clone)]
pub struct ConcurrencyLimiter {
    inner: Arc<ConcurrencyInner>,
}

impl ConcurrencyLimiter {
    /// A limiter admitting at most `max` at once (`None`: unbounded, still counted).
    pub fn new(max: Option<u32>) -> Self {
        Self {
            inner: Arc::new(ConcurrencyInner {
                max,
                in_use: AtomicU32::new(0),
            }),
        }
    }

    /// The bound, if any.
    pub fn max(&self) -> Option<u32> {
        self.inner.max
    }

    /// Permits currently held.
    pub fn in_use(&self) -> u32 {
        self.inner.in_use.load(Ordering::Acquire)
    }

    /// Whether a permit would be granted now.
    pub fn check(&self) -> Result<(), Saturated> {
        match self.inner.max {
            Some(max) if self.in_use() >= max => Err(Self::saturated()),
            _ => Ok(()),
        }
    }

    /// Takes a permit if one is free.
    pub fn try_acquire(&self) -> Result<ConcurrencyPermit, Saturated> {
        let max = self.inner.max.unwrap_or(u32::MAX);
        self.inner
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Self::saturated())?;
        Ok(ConcurrencyPermit {
            inner: Arc::clone(&self.inner),
        })
    }

    fn saturated() -> Saturated {
        Saturated {
            limit: LimitKind::Concurrency,
            retry_in: None,
        }
    }
}

/// One slot of a [`ConcurrencyLimiter`], returned on drop.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct ConcurrencyPermit {
    inner: Arc<ConcurrencyInner>,
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.inner.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> Instant {
        Instant::from_elapsed(Duration::from_secs_f64(secs))
    }

    #[test]
    fn bucket_admits_burst_then_refills_continuously() {
        let rl = RateLimiter::new(LimitKind::Requests, 60, RateAlgorithm::TokenBucket, at(0.0));
        for _ in 0..60 {
            rl.try_acquire(at(0.0), 1).unwrap();
        }
        let err = rl.try_acquire(at(0.0), 1).unwrap_err();
        assert_eq!(err.limit, LimitKind::Requests);
        assert_eq!(err.retry_in, Some(Duration::from_secs(1)));
        assert!(rl.try_acquire(at(0.5), 1).is_err());
        rl.try_acquire(at(1.0), 1).unwrap();
        assert!(rl.try_acquire(at(1.0), 1).is_err());
    }

    #[test]
    fn bucket_debt_delays_and_refund_restores() {
        let rl = RateLimiter::new(LimitKind::Tokens, 600, RateAlgorithm::TokenBucket, at(0.0));
        rl.try_acquire(at(0.0), 100).unwrap();
        rl.adjust(at(0.0), 600);
        assert_eq!(rl.available(at(0.0)), 0);
        // 100 tokens of debt plus 10 wanted at 10 tokens a second.
        assert_eq!(
            rl.check(at(0.0), 10).unwrap_err().retry_in,
            Some(Duration::from_secs(11))
        );
        rl.adjust(at(0.0), -700);
        assert_eq!(rl.available(at(0.0)), 600);
    }

    #[test]
    fn oversized_charge_waits_for_full_bucket() {
        let rl = RateLimiter::new(LimitKind::Tokens, 100, RateAlgorithm::TokenBucket, at(0.0));
        rl.try_acquire(at(0.0), 1_000).unwrap();
        assert_eq!(rl.available(at(0.0)), 0);
        assert!(rl.try_acquire(at(30.0), 1_000).is_err());
        rl.try_acquire(at(60.0), 1_000).unwrap();
    }

    #[test]
    fn window_admits_limit_per_sixty_seconds_and_reports_expiry() {
        let rl = RateLimiter::new(
            LimitKind::Requests,
            3,
            RateAlgorithm::SlidingWindow,
            at(0.0),
        );
        rl.try_acquire(at(0.0), 1).unwrap();
        rl.try_acquire(at(10.0), 1).unwrap();
        rl.try_acquire(at(20.0), 1).unwrap();
        let err = rl.try_acquire(at(30.0), 1).unwrap_err();
        assert_eq!(err.retry_in, Some(Duration::from_secs(30)));
        assert!(rl.try_acquire(at(59.9), 1).is_err());
        rl.try_acquire(at(60.0), 1).unwrap();
        assert!(rl.try_acquire(at(60.0), 1).is_err());
    }

    #[test]
    fn window_refund_takes_from_newest_and_never_below_zero() {
        let rl = RateLimiter::new(
            LimitKind::Tokens,
            100,
            RateAlgorithm::SlidingWindow,
            at(0.0),
        );
        rl.try_acquire(at(0.0), 50).unwrap();
        rl.try_acquire(at(1.0), 30).unwrap();
        rl.adjust(at(2.0), -1_000);
        assert_eq!(rl.available(at(2.0)), 100);
        rl.adjust(at(2.0), 40);
        assert_eq!(rl.available(at(2.0)), 60);
    }

    #[test]
    fn an_active_lease_gates_on_its_balance_and_keeps_debts() {
        let rl = RateLimiter::new(
            LimitKind::Tokens,
            1_000,
            RateAlgorithm::TokenBucket,
            at(0.0),
        );
        // Inactive: the local limit alone.
        rl.try_acquire(at(0.0), 10).unwrap();
        assert_eq!(rl.lease().take_demand().spent, 0);
        rl.lease().activate();
        assert_eq!(
            rl.check(at(0.0), 1).unwrap_err().retry_in,
            Some(LEASE_RETRY)
        );
        assert!(rl.try_acquire(at(0.0), 1).is_err());
        rl.lease().credit(50);
        assert_eq!(rl.available(at(0.0)), 50);
        // A positive balance admits a larger charge, which leaves a debt.
        rl.try_acquire(at(0.0), 80).unwrap();
        assert!(rl.try_acquire(at(0.0), 1).is_err());
        rl.adjust(at(0.0), -20);
        assert_eq!(
            rl.lease().take_demand(),
            LeaseDemand {
                balance: -10,
                spent: 60,
                starved: true
            }
        );
        assert_eq!(
            rl.lease().take_demand(),
            LeaseDemand {
                balance: -10,
                spent: 0,
                starved: false
            }
        );
        // The local limit still applies with a full lease.
        rl.lease().credit(10_000);
        assert!(rl.try_acquire(at(0.0), 1_000).is_err());
    }

    #[test]
    fn concurrency_permits_return_on_drop() {
        let limiter = ConcurrencyLimiter::new(Some(2));
        let a = limiter.try_acquire().unwrap();
        let b = limiter.try_acquire().unwrap();
        assert_eq!(
            limiter.try_acquire().unwrap_err().limit,
            LimitKind::Concurrency
        );
        drop(a);
        assert_eq!(limiter.in_use(), 1);
        let c = limiter.try_acquire().unwrap();
        drop((b, c));
        assert_eq!(limiter.in_use(), 0);
    }

    #[test]
    fn concurrency_permit_returns_when_a_panic_unwinds() {
        let limiter = ConcurrencyLimiter::new(Some(1));
        let held = limiter.clone();
        let result = std::panic::catch_unwind(move || {
            let _permit = held.try_acquire().unwrap();
            panic!("boom");
        });
        assert!(result.is_err());
        assert_eq!(limiter.in_use(), 0);
    }
}
