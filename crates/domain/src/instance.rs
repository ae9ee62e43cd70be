//! Live state of one instance (key × model): availability, permits, latency, cooldown, dead key.
//!
//! An [`InstanceState`] is shared by every pool, echelon and direct route that lists the same
//! [`InstanceId`]: a 429 or a dead key is a fact about the key, wherever the request came from.
//! All methods take `&self`; counters are atomics and the few compound updates sit behind short
//! `std::sync::Mutex` sections that never span anything slow.

use core::fmt;
use core::time::Duration;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::breaker::{Admission, BreakerPermit, BreakerRefusal, BreakerTransition, CircuitBreaker};
use crate::chat::Usage;
use crate::error::{ErrorClass, HealthEffect, UpstreamError};
use crate::events::{BreakerScope, Event, EventSink};
use crate::health::{Health, HealthTransition};
use crate::limit::{ConcurrencyLimiter, ConcurrencyPermit, LimitKind, RateLimiter, Saturated};
use crate::name::InstanceId;
use crate::random::Random;
use crate::spec::{BreakerPolicy, HealthPolicy, InstanceSpec, RateAlgorithm};
use crate::stats::{Counters, Stats};
use crate::time::Instant;
use crate::window::SlidingCounts;

/// Why an instance (or an echelon) cannot take a request right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "snake_case")
)]
pub enum Unavailable {
    /// The upstream refused the key (401/403); dead until a probe or a reload.
    #[error("key refused by the upstream")]
    KeyDead,
    /// Rate limited; cooling down until the given instant.
    #[error("cooling down after a rate limit")]
    CoolingDown {
        /// End of the cooldown.
        until: Instant,
    },
    /// The circuit breaker refuses calls.
    #[error("circuit breaker open")]
    BreakerOpen {
        /// When trials are admitted; `None` when half-open with every trial in flight.
        until: Option<Instant>,
    },
    /// Unhealthy and resting.
    #[error("unhealthy")]
    Unhealthy {
        /// End of the rest.
        until: Instant,
    },
    /// A limit is full.
    #[error("{0}")]
    Saturated(Saturated),
}

impl Unavailable {
    /// The stable snake_case name for metrics and logs.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::KeyDead => "key_dead",
            Self::CoolingDown { .. } => "cooling_down",
            Self::BreakerOpen { .. } => "breaker_open",
            Self::Unhealthy { .. } => "unhealthy",
            Self::Saturated(s) => match s.limit {
                LimitKind::Requests => "rpm_saturated",
                LimitKind::Tokens => "tpm_saturated",
                LimitKind::Concurrency => "concurrency_saturated",
            },
        }
    }

    /// Whether the reason is an ejection (an open breaker or a resting unhealthy instance), which
    /// a pool's ejection limit and panic mode may override; dead keys, cooldowns and full limits
    /// are hard exclusions.
    pub const fn is_ejection(&self) -> bool {
        matches!(self, Self::BreakerOpen { .. } | Self::Unhealthy { .. })
    }

    /// Whether the reason is a rate limit (a cooldown or a full limit): such candidates come
    /// back by themselves, so the answer is 429 rather than 503.
    pub const fn is_rate_limit(&self) -> bool {
        matches!(self, Self::CoolingDown { .. } | Self::Saturated(_))
    }

    /// When the candidate is expected back, if known.
    pub fn back_at(&self, now: Instant) -> Option<Instant> {
        match *self {
            Self::KeyDead => None,
            Self::CoolingDown { until } | Self::Unhealthy { until } => Some(until),
            Self::BreakerOpen { until } => until,
            Self::Saturated(s) => s.retry_in.map(|d| now + d),
        }
    }
}

impl From<BreakerRefusal> for Unavailable {
    fn from(refusal: BreakerRefusal) -> Self {
        match refusal {
            BreakerRefusal::Open { until } => Self::BreakerOpen { until: Some(until) },
            BreakerRefusal::TrialsInFlight => Self::BreakerOpen { until: None },
        }
    }
}

/// The policies an instance's live state follows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstancePolicy {
    /// Health thresholds.
    pub health: HealthPolicy,
    /// Breaker settings.
    pub breaker: BreakerPolicy,
    /// How rpm and tpm are counted.
    pub rate_algorithm: RateAlgorithm,
}

impl Default for InstancePolicy {
    fn default() -> Self {
        Self {
            health: HealthPolicy::default(),
            breaker: BreakerPolicy::default(),
            rate_algorithm: RateAlgorithm::TokenBucket,
        }
    }
}

/// How the planner admits an attempt to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Admit {
    /// Chosen past its ejection by the pool's ejection limit or panic mode: health is not asked
    /// and an open breaker lets it through.
    pub panic: bool,
    /// A retry of the same request on this instance (its failure does not lengthen the
    /// breaker's streak again).
    pub repeat: bool,
}

/// Where an instance stands in its pool's rotation, for the ejection limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ejection {
    /// In rotation (possibly saturated for a moment).
    InRotation,
    /// Out of rotation by its breaker or its health; the ejection limit may bring it back.
    Ejected {
        /// When it is expected back by itself; `None` while half-open trials are in flight.
        back_at: Option<Instant>,
        /// Share of its recent calls (last ten seconds) that succeeded; `None` without any.
        recent_success: Option<f64>,
    },
    /// A hard exclusion: dead key or cooldown. Never brought back early.
    Excluded,
}

/// Span of the recent outcomes behind [`InstanceState::recent_success`].
pub const RECENT_WINDOW: Duration = Duration::from_secs(10);

/// Decay time of the peak-EWMA latency and of the error penalty.
const DECAY: Duration = Duration::from_secs(10);
/// Weight of the plain latency average for new samples.
const EWMA_ALPHA: f64 = 0.3;
/// How much one recent 429 or failure multiplies an instance's p2c cost, on top of one.
const PENALTY_WEIGHT: f64 = 4.0;

#[derive(Debug, Default)]
struct Latency {
    ewma_ms: f64,
    peak_ms: f64,
    ttft_ms: Option<f64>,
    samples: u64,
    updated: Instant,
    penalty: f64,
    penalty_at: Instant,
}

impl Latency {
    fn decayed_penalty(&self, now: Instant) -> f64 {
        let dt = (now - self.penalty_at).as_secs_f64();
        self.penalty * 0.5f64.powf(dt / DECAY.as_secs_f64())
    }
}

/// Latency figures of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LatencySnapshot {
    /// Exponentially weighted mean latency.
    pub ewma: Option<Duration>,
    /// Peak-sensitive EWMA: jumps to a slower sample, decays over about ten seconds.
    pub peak_ewma: Option<Duration>,
    /// Mean time to first token of streamed answers.
    pub ttft: Option<Duration>,
    /// Samples taken.
    pub samples: u64,
    /// Current weight of recent 429s and failures in the p2c cost.
    pub penalty: f64,
}

/// The permits one attempt holds on an instance: its concurrency slot and its breaker admission.
///
/// Dropping it without an outcome releases the slot and returns a breaker trial slot.
#[derive(Debug)]
#[must_use = "the instance permit is released when dropped"]
pub struct InstancePermit {
    breaker: BreakerPermit,
    _slot: ConcurrencyPermit,
    tokens: u32,
}

impl InstancePermit {
    /// Whether the attempt is a half-open breaker trial.
    pub fn is_trial(&self) -> bool {
        self.breaker.is_trial()
    }

    /// Tokens charged to the tpm limit at admission (the estimate).
    pub fn estimated_tokens(&self) -> u32 {
        self.tokens
    }
}

/// Live state of one instance.
#[derive(Debug)]
pub struct InstanceState {
    spec: InstanceSpec,
    policy: InstancePolicy,
    health: Health,
    breaker: CircuitBreaker,
    rpm: Option<RateLimiter>,
    tpm: Option<RateLimiter>,
    concurrency: ConcurrencyLimiter,
    /// Nanoseconds since the clock's origin; zero when not cooling.
    cooldown_until: AtomicU64,
    key_dead: AtomicBool,
    /// Nanoseconds since the origin plus one; zero when never used.
    last_used: AtomicU64,
    latency: Mutex<Latency>,
    counters: Counters,
    /// Successes and upstream faults of the last ten seconds.
    recent: SlidingCounts,
}

fn nanos(at: Instant) -> u64 {
    u64::try_from(at.elapsed_since_origin().as_nanos()).unwrap_or(u64::MAX)
}

fn instant(nanos: u64) -> Instant {
    Instant::from_elapsed(Duration::from_nanos(nanos))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn from_ms(ms: f64) -> Duration {
    Duration::from_secs_f64((ms / 1_000.0).max(0.0))
}

impl InstanceState {
    /// Fresh live state for `spec` under `policy`, with full rate buckets at `now`.
    pub fn new(spec: InstanceSpec, policy: InstancePolicy, now: Instant) -> Self {
        let limiter = |kind, limit: Option<u32>| {
            limit.map(|n| RateLimiter::new(kind, n, policy.rate_algorithm, now))
        };
        Self {
            rpm: limiter(LimitKind::Requests, spec.limits.rpm),
            tpm: limiter(LimitKind::Tokens, spec.limits.tpm),
            concurrency: ConcurrencyLimiter::new(spec.limits.max_concurrency),
            health: Health::new(policy.health),
            breaker: CircuitBreaker::new(policy.breaker),
            spec,
            policy,
            cooldown_until: AtomicU64::new(0),
            key_dead: AtomicBool::new(false),
            last_used: AtomicU64::new(0),
            latency: Mutex::new(Latency::default()),
            counters: Counters::default(),
            recent: SlidingCounts::new(RECENT_WINDOW),
        }
    }

    /// Its id.
    pub fn id(&self) -> &InstanceId {
        &self.spec.id
    }

    /// Its spec (the tightest limits of every listing).
    pub fn spec(&self) -> &InstanceSpec {
        &self.spec
    }

    /// The policies it follows.
    pub fn policy(&self) -> &InstancePolicy {
        &self.policy
    }

    /// Its health state machine.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Its circuit breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Its statistics.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.concurrency.in_use()
    }

    /// What its rpm and tpm limits would admit at `now` (`None` for a limit it does not have).
    pub fn rate_available(&self, now: Instant) -> (Option<u32>, Option<u32>) {
        (
            self.rpm.as_ref().map(|l| l.available(now)),
            self.tpm.as_ref().map(|l| l.available(now)),
        )
    }

    /// Its requests-per-minute limiter, if it has an rpm limit.
    pub fn rpm_limiter(&self) -> Option<&RateLimiter> {
        self.rpm.as_ref()
    }

    /// Its tokens-per-minute limiter, if it has a tpm limit.
    pub fn tpm_limiter(&self) -> Option<&RateLimiter> {
        self.tpm.as_ref()
    }

    /// Makes its rpm and tpm limits admit only what their leases of the fleet-wide budgets
    /// hold (see [`crate::limit::Lease`]).
    pub fn share_budgets(&self) {
        for limiter in self.rpm.iter().chain(&self.tpm) {
            limiter.lease().activate();
        }
    }

    /// The end of its cooldown, if it is cooling at `now`.
    pub fn cooldown_until(&self, now: Instant) -> Option<Instant> {
        let until = self.cooldown_until.load(Ordering::Acquire);
        (until != 0 && instant(until) > now).then(|| instant(until))
    }

    /// Whether the key is dead.
    pub fn is_key_dead(&self) -> bool {
        self.key_dead.load(Ordering::Acquire)
    }

    /// When it last started an attempt.
    pub fn last_used(&self) -> Option<Instant> {
        match self.last_used.load(Ordering::Relaxed) {
            0 => None,
            n => Some(instant(n - 1)),
        }
    }

    /// Its latency figures at `now`.
    pub fn latency(&self, now: Instant) -> LatencySnapshot {
        let l = self.lock_latency();
        let some = |v: f64| (l.samples > 0).then(|| from_ms(v));
        LatencySnapshot {
            ewma: some(l.ewma_ms),
            peak_ewma: some(l.peak_ms),
            ttft: l.ttft_ms.map(from_ms),
            samples: l.samples,
            penalty: l.decayed_penalty(now),
        }
    }

    /// Latency samples taken so far.
    pub fn samples(&self) -> u64 {
        self.lock_latency().samples
    }

    /// The plain latency average in milliseconds, if sampled.
    pub(crate) fn ewma_ms(&self) -> Option<f64> {
        let l = self.lock_latency();
        (l.samples > 0).then_some(l.ewma_ms)
    }

    /// The p2c cost at `now`: peak-EWMA latency × (in flight + 1) × (1 + penalty weight × recent
    /// 429s and failures, halving every ten seconds). An unsampled instance counts as 1 ms, so new
    /// instances get explored, bounded by their in-flight count.
    pub fn p2c_cost(&self, now: Instant) -> f64 {
        let (peak, penalty) = {
            let l = self.lock_latency();
            (l.peak_ms.max(1.0), l.decayed_penalty(now))
        };
        peak * f64::from(self.in_flight() + 1) * (1.0 + PENALTY_WEIGHT * penalty)
    }

    /// Share of its recent calls (last ten seconds: successes and upstream faults) that
    /// succeeded, `None` without any.
    pub fn recent_success(&self, now: Instant) -> Option<f64> {
        let (calls, failures) = self.recent.totals(now);
        (calls > 0).then(|| (calls - failures.min(calls)) as f64 / calls as f64)
    }

    /// Where it stands in rotation at `now` (see [`Ejection`]).
    pub fn ejection(&self, now: Instant) -> Ejection {
        if self.is_key_dead() || self.cooldown_until(now).is_some() {
            return Ejection::Excluded;
        }
        let back_at = match (self.breaker.check(now), self.health.check(now)) {
            (Ok(()), Ok(())) => return Ejection::InRotation,
            (Err(BreakerRefusal::Open { until }), Err(rest)) => Some(until.max(rest)),
            (Err(BreakerRefusal::Open { until }), Ok(())) => Some(until),
            (Err(BreakerRefusal::TrialsInFlight), _) => None,
            (Ok(()), Err(rest)) => Some(rest),
        };
        Ejection::Ejected {
            back_at,
            recent_success: self.recent_success(now),
        }
    }

    /// Whether it can take a request of `tokens` estimated tokens at `now`, or why not.
    /// `panic` is the rotation's panic mode and ejection limit (see [`crate::rotation`]): it
    /// asks neither health nor the breaker, only the hard exclusions and the limits.
    pub fn availability(&self, now: Instant, tokens: u32, panic: bool) -> Result<(), Unavailable> {
        self.gate(now, panic)?;
        if !panic {
            self.breaker.check(now)?;
        }
        self.concurrency.check().map_err(Unavailable::Saturated)?;
        if let Some(rpm) = &self.rpm {
            rpm.check(now, 1).map_err(Unavailable::Saturated)?;
        }
        if let Some(tpm) = &self.tpm {
            tpm.check(now, tokens).map_err(Unavailable::Saturated)?;
        }
        Ok(())
    }

    /// Key, cooldown and health, the checks that take no permit.
    fn gate(&self, now: Instant, ignore_health: bool) -> Result<(), Unavailable> {
        if self.is_key_dead() {
            return Err(Unavailable::KeyDead);
        }
        if let Some(until) = self.cooldown_until(now) {
            return Err(Unavailable::CoolingDown { until });
        }
        if !ignore_health {
            self.health
                .check(now)
                .map_err(|until| Unavailable::Unhealthy { until })?;
        }
        Ok(())
    }

    /// Admits one attempt of `tokens` estimated tokens at `now`: takes a concurrency slot and a
    /// breaker admission and charges the rpm and tpm limits. On refusal nothing stays taken.
    /// A breaker transition caused by the admission (open → half-open) is reported to `sink`.
    /// `panic`: see [`InstanceState::availability`].
    pub fn acquire(
        &self,
        now: Instant,
        tokens: u32,
        panic: bool,
        sink: &dyn EventSink,
    ) -> Result<InstancePermit, Unavailable> {
        let admit = Admit {
            panic,
            repeat: false,
        };
        self.acquire_as(now, tokens, admit, sink)
    }

    /// [`InstanceState::acquire`], admitted as `admit` says.
    pub fn acquire_as(
        &self,
        now: Instant,
        tokens: u32,
        admit: Admit,
        sink: &dyn EventSink,
    ) -> Result<InstancePermit, Unavailable> {
        self.gate(now, admit.panic)?;
        let slot = self
            .concurrency
            .try_acquire()
            .map_err(Unavailable::Saturated)?;
        let admission = Admission {
            repeat: admit.repeat,
            forced: admit.panic,
        };
        let breaker = self.breaker.try_acquire_as(now, admission)?;
        if let Some(rpm) = &self.rpm {
            rpm.try_acquire(now, 1).map_err(Unavailable::Saturated)?;
        }
        if let Some(tpm) = &self.tpm
            && let Err(saturated) = tpm.try_acquire(now, tokens)
        {
            if let Some(rpm) = &self.rpm {
                rpm.adjust(now, -1);
            }
            return Err(Unavailable::Saturated(saturated));
        }
        if let Some(t) = breaker.transition() {
            self.emit_breaker(t, sink);
        }
        self.last_used.store(nanos(now) + 1, Ordering::Relaxed);
        self.counters.attempt();
        Ok(InstancePermit {
            breaker,
            _slot: slot,
            tokens,
        })
    }

    /// Records a successful attempt: health, breaker, latency, tpm correction, statistics.
    #[allow(clippy::too_many_arguments)]
    pub fn record_success(
        &self,
        permit: InstancePermit,
        now: Instant,
        latency: Duration,
        ttft: Option<Duration>,
        usage: Option<Usage>,
        sink: &dyn EventSink,
        rng: &dyn Random,
    ) {
        self.counters.success(latency, usage);
        self.recent.add(now, 1, 0);
        self.sample(now, latency, ttft);
        if let (Some(tpm), Some(usage)) = (&self.tpm, usage) {
            tpm.adjust(now, i64::from(usage.total()) - i64::from(permit.tokens));
        }
        if let Some(t) = self.health.record_success(now) {
            self.emit_health(t, sink);
        }
        if let Some(t) = permit.breaker.success(now, rng) {
            self.emit_breaker(t, sink);
        }
        sink.record(&Event::AttemptFinished {
            instance: self.id().clone(),
            class: None,
            latency,
        });
    }

    /// Records a failed attempt following the decision table of its class: upstream faults count
    /// against health and the breaker, a 429 starts a cooldown (the upstream's Retry-After or
    /// `default_cooldown`), an auth failure kills the key, anything else is neutral.
    #[allow(clippy::too_many_arguments)]
    pub fn record_failure(
        &self,
        permit: InstancePermit,
        now: Instant,
        error: &UpstreamError,
        latency: Duration,
        default_cooldown: Duration,
        sink: &dyn EventSink,
        rng: &dyn Random,
    ) {
        let class = error.class;
        self.counters
            .failure(latency, class == ErrorClass::RateLimited);
        match error.decision().health {
            HealthEffect::Failure => {
                self.recent.add(now, 1, 1);
                self.sample(now, latency, None);
                self.penalise(now);
                if let Some(t) = self.health.record_failure(now) {
                    self.emit_health(t, sink);
                }
            }
            HealthEffect::Cooldown => {
                self.penalise(now);
                let wait = error.retry_after.unwrap_or(default_cooldown);
                self.start_cooldown(now + wait, error.retry_after, sink);
            }
            HealthEffect::KeyDead => self.mark_key_dead(sink),
            HealthEffect::Neutral => {}
        }
        if let Some(t) = permit.breaker.failure(class, now, rng) {
            self.emit_breaker(t, sink);
        }
        sink.record(&Event::AttemptFinished {
            instance: self.id().clone(),
            class: Some(class),
            latency,
        });
    }

    /// Records an attempt that ended without an outcome (cancelled, dropped): it counts nothing
    /// and releases everything.
    pub fn record_cancelled(&self, permit: InstancePermit) {
        self.counters.cancelled();
        drop(permit);
    }

    /// Counts an attempt dropped without an outcome; its permit releases itself.
    pub(crate) fn count_cancelled(&self) {
        self.counters.cancelled();
    }

    /// Extends the cooldown to `until`; a deadline only ever moves later.
    pub fn start_cooldown(
        &self,
        until: Instant,
        retry_after: Option<Duration>,
        sink: &dyn EventSink,
    ) {
        let previous = self
            .cooldown_until
            .fetch_max(nanos(until), Ordering::AcqRel);
        let effective = instant(previous.max(nanos(until)));
        sink.record(&Event::Cooldown {
            instance: self.id().clone(),
            until: effective,
            retry_after,
        });
    }

    /// Marks the key dead (401/403).
    pub fn mark_key_dead(&self, sink: &dyn EventSink) {
        if !self.key_dead.swap(true, Ordering::AcqRel) {
            sink.record(&Event::KeyDead {
                instance: self.id().clone(),
            });
        }
    }

    /// Records an active probe's result: a success revives a dead key and counts as a success for
    /// health; a failure counts against health (never against the breaker, which only judges
    /// user traffic).
    pub fn record_probe(&self, now: Instant, ok: bool, sink: &dyn EventSink) {
        let transition = if ok {
            if self.key_dead.swap(false, Ordering::AcqRel) {
                sink.record(&Event::KeyRevived {
                    instance: self.id().clone(),
                });
            }
            self.health.record_success(now)
        } else {
            self.health.record_failure(now)
        };
        if let Some(t) = transition {
            self.emit_health(t, sink);
        }
    }

    /// Revives a dead key: on reload, or when another replica's probe revived it.
    pub fn revive_key(&self) {
        self.key_dead.store(false, Ordering::Release);
    }

    fn sample(&self, now: Instant, latency: Duration, ttft: Option<Duration>) {
        let x = ms(latency);
        let mut l = self.lock_latency();
        if l.samples == 0 {
            l.ewma_ms = x;
            l.peak_ms = x;
        } else {
            l.ewma_ms += EWMA_ALPHA * (x - l.ewma_ms);
            if x > l.peak_ms {
                l.peak_ms = x;
            } else {
                let w = (-(now - l.updated).as_secs_f64() / DECAY.as_secs_f64()).exp();
                l.peak_ms = l.peak_ms * w + x * (1.0 - w);
            }
        }
        if let Some(ttft) = ttft {
            let t = ms(ttft);
            l.ttft_ms = Some(l.ttft_ms.map_or(t, |old| old + EWMA_ALPHA * (t - old)));
        }
        l.samples += 1;
        l.updated = now;
    }

    fn penalise(&self, now: Instant) {
        let mut l = self.lock_latency();
        l.penalty = l.decayed_penalty(now) + 1.0;
        l.penalty_at = now;
    }

    fn emit_health(&self, t: HealthTransition, sink: &dyn EventSink) {
        sink.record(&Event::Health {
            instance: self.id().clone(),
            from: t.from,
            to: t.to,
        });
    }

    fn emit_breaker(&self, t: BreakerTransition, sink: &dyn EventSink) {
        sink.record(&Event::Breaker {
            scope: BreakerScope::Instance(self.id().clone()),
            from: t.from,
            to: t.to,
            open_until: t.open_until,
        });
    }

    fn lock_latency(&self) -> MutexGuard<'_, Latency> {
        // Latency figures are advisory; a poisoned lock still holds usable numbers.
        self.latency.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.id(), f)
    }
}

/// A shared handle to an instance's live state.
pub type SharedInstance = Arc<InstanceState>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{MemorySink, NoopSink};
    use crate::health::HealthState;
    use crate::name::ModelRef;
    use crate::random::SplitMix64;
    use crate::spec::Limits;

    fn secs(s: u64) -> Instant {
        Instant::from_elapsed(Duration::from_secs(s))
    }

    fn spec(limits: Limits) -> InstanceSpec {
        InstanceSpec {
            id: InstanceId::new(ModelRef::new("p", "m"), 0),
            upstream_name: "m".into(),
            weight: 1,
            limits,
            context_window: Some(8_000),
        }
    }

    fn instance(limits: Limits) -> InstanceState {
        InstanceState::new(
            spec(limits),
            InstancePolicy {
                health: HealthPolicy {
                    failure_threshold: 2,
                    success_threshold: 1,
                    recovery_time: Duration::from_secs(10),
                },
                breaker: BreakerPolicy {
                    failure_threshold: 5,
                    ..BreakerPolicy::default()
                },
                rate_algorithm: RateAlgorithm::TokenBucket,
            },
            secs(0),
        )
    }

    fn err(class: ErrorClass) -> UpstreamError {
        UpstreamError::new(class, "x")
    }

    static RNG: SplitMix64 = SplitMix64::new(1);

    #[test]
    fn cooldown_only_moves_later() {
        let i = instance(Limits::default());
        let sink = MemorySink::new();
        let p = i.acquire(secs(0), 1, false, &sink).unwrap();
        let e = err(ErrorClass::RateLimited).with_retry_after(Duration::from_secs(30));
        i.record_failure(
            p,
            secs(0),
            &e,
            Duration::ZERO,
            Duration::from_secs(5),
            &sink,
            &RNG,
        );
        assert_eq!(i.cooldown_until(secs(1)), Some(secs(30)));
        let p = i.acquire(secs(31), 1, false, &sink).unwrap();
        let e = err(ErrorClass::RateLimited).with_retry_after(Duration::from_secs(1));
        i.start_cooldown(secs(40), None, &sink);
        i.record_failure(
            p,
            secs(31),
            &e,
            Duration::ZERO,
            Duration::from_secs(5),
            &sink,
            &RNG,
        );
        assert_eq!(i.cooldown_until(secs(32)), Some(secs(40)));
        assert_eq!(
            i.availability(secs(35), 1, false),
            Err(Unavailable::CoolingDown { until: secs(40) })
        );
        assert!(i.availability(secs(40), 1, false).is_ok());
        // The shorter Retry-After reported the effective, later deadline.
        let cooldowns: Vec<_> = sink
            .take()
            .into_iter()
            .filter_map(|e| match e {
                Event::Cooldown { until, .. } => Some(until),
                _ => None,
            })
            .collect();
        assert_eq!(cooldowns, [secs(30), secs(40), secs(40)]);
    }

    #[test]
    fn rate_limit_without_retry_after_uses_default_cooldown() {
        let i = instance(Limits::default());
        let p = i.acquire(secs(0), 1, false, &NoopSink).unwrap();
        let e = err(ErrorClass::RateLimited);
        i.record_failure(
            p,
            secs(2),
            &e,
            Duration::ZERO,
            Duration::from_secs(5),
            &NoopSink,
            &RNG,
        );
        assert_eq!(i.cooldown_until(secs(2)), Some(secs(7)));
        assert_eq!(i.health().state(), HealthState::Healthy);
    }

    #[test]
    fn auth_kills_key_until_probe() {
        let i = instance(Limits::default());
        let sink = MemorySink::new();
        let p = i.acquire(secs(0), 1, false, &sink).unwrap();
        i.record_failure(
            p,
            secs(0),
            &err(ErrorClass::Auth),
            Duration::ZERO,
            Duration::ZERO,
            &sink,
            &RNG,
        );
        assert_eq!(
            i.availability(secs(100), 1, true),
            Err(Unavailable::KeyDead)
        );
        assert_eq!(i.health().state(), HealthState::Healthy);
        i.record_probe(secs(100), true, &sink);
        assert!(i.availability(secs(100), 1, false).is_ok());
        let events = sink.take();
        assert!(events.iter().any(|e| matches!(e, Event::KeyDead { .. })));
        assert!(events.iter().any(|e| matches!(e, Event::KeyRevived { .. })));
    }

    #[test]
    fn upstream_failures_make_it_unhealthy_and_neutral_ones_do_not() {
        let i = instance(Limits::default());
        for class in [
            ErrorClass::InvalidRequest,
            ErrorClass::ClientGone,
            ErrorClass::ContextLength,
        ] {
            let p = i.acquire(secs(0), 1, false, &NoopSink).unwrap();
            i.record_failure(
                p,
                secs(0),
                &err(class),
                Duration::ZERO,
                Duration::ZERO,
                &NoopSink,
                &RNG,
            );
        }
        assert_eq!(i.health().state(), HealthState::Healthy);
        for _ in 0..2 {
            let p = i.acquire(secs(1), 1, false, &NoopSink).unwrap();
            i.record_failure(
                p,
                secs(1),
                &err(ErrorClass::Timeout),
                Duration::from_secs(5),
                Duration::ZERO,
                &NoopSink,
                &RNG,
            );
        }
        assert_eq!(
            i.availability(secs(2), 1, false),
            Err(Unavailable::Unhealthy { until: secs(11) })
        );
        // Panic mode ignores health only.
        assert!(i.availability(secs(2), 1, true).is_ok());
        assert!(i.availability(secs(11), 1, false).is_ok());
    }

    #[test]
    fn limits_saturate_with_reason_and_release() {
        let i = instance(Limits {
            rpm: Some(2),
            tpm: Some(100),
            max_concurrency: Some(1),
        });
        let p = i.acquire(secs(0), 10, false, &NoopSink).unwrap();
        assert_eq!(i.in_flight(), 1);
        assert!(matches!(
            i.availability(secs(0), 10, false),
            Err(Unavailable::Saturated(Saturated {
                limit: LimitKind::Concurrency,
                ..
            }))
        ));
        drop(p);
        assert_eq!(i.in_flight(), 0);
        // tpm refuses 95 more; the rpm charge of the refused attempt is refunded.
        assert!(matches!(
            i.acquire(secs(0), 95, false, &NoopSink),
            Err(Unavailable::Saturated(Saturated {
                limit: LimitKind::Tokens,
                ..
            }))
        ));
        let p = i.acquire(secs(0), 10, false, &NoopSink).unwrap();
        drop(p);
        let e = i.availability(secs(0), 1, false).unwrap_err();
        assert_eq!(e.as_str(), "rpm_saturated");
        assert_eq!(e.back_at(secs(0)), Some(secs(30)));
        assert_eq!(i.in_flight(), 0);
    }

    #[test]
    fn p2c_cost_penalises_rate_limits_and_decays() {
        let fast = instance(Limits::default());
        let p = fast.acquire(secs(0), 1, false, &NoopSink).unwrap();
        fast.record_success(
            p,
            secs(0),
            Duration::from_millis(100),
            None,
            None,
            &NoopSink,
            &RNG,
        );
        let base = fast.p2c_cost(secs(0));
        let p = fast.acquire(secs(0), 1, false, &NoopSink).unwrap();
        fast.record_failure(
            p,
            secs(0),
            &err(ErrorClass::RateLimited),
            Duration::from_millis(5),
            Duration::from_millis(1),
            &NoopSink,
            &RNG,
        );
        assert!(fast.p2c_cost(secs(0)) >= base * 4.9);
        assert!(fast.p2c_cost(secs(60)) < base * 1.1);
        // The 429's quick answer did not lower the latency estimate.
        assert_eq!(fast.latency(secs(0)).samples, 1);
    }

    #[test]
    fn tpm_is_corrected_by_actual_usage() {
        let i = instance(Limits {
            tpm: Some(1_000),
            ..Limits::default()
        });
        let p = i.acquire(secs(0), 100, false, &NoopSink).unwrap();
        let usage = Usage::new(400, 500);
        i.record_success(
            p,
            secs(0),
            Duration::from_millis(10),
            None,
            Some(usage),
            &NoopSink,
            &RNG,
        );
        assert!(i.availability(secs(0), 100, false).is_ok());
        assert!(i.availability(secs(0), 101, false).is_err());
    }
}
