//! The attempt planner: the attempts of one request, one step at a time.
//!
//! ```text
//! let mut plan = table.plan(&route, RequestFacts { estimated_tokens, now, deadline: None });
//! loop {
//!     match plan.next(clock.now(), &rng) {
//!         Step::Attempt(attempt) => {
//!             let outcome = /* call attempt.call(&request) within attempt.timeouts */;
//!             plan.record(attempt, outcome, clock.now(), &rng);
//!         }
//!         Step::Wait { until, .. } => /* sleep until `until` */,
//!         Step::Done(verdict) => break verdict,
//!     }
//! }
//! ```
//!
//! The planner walks the route's stages (echelons in priority order, then `group_fallback`
//! targets; or a pool and its fallback pools), asks each stage's targets' rotations for an
//! instance, and takes every permit the attempt needs before handing it out: the instance's
//! concurrency slot and breaker admission, its rpm/tpm charge, and the echelon's. The decision
//! table of [`crate::error`] decides what each failure does next. Every candidate passed over is
//! kept in the plan's trace with a [`SkipReason`] and reported to the event sink.
//!
//! A plan never yields more than the route's `max_attempts` attempts, never waits past its
//! deadline, and answers at once when nothing can serve: 429 with the earliest time capacity
//! returns when everything is rate limited or saturated, 503 when everything is open, unhealthy
//! or dead.

use core::time::Duration;
use std::collections::HashSet;
use std::sync::Arc;

use crate::breaker::BreakerState;
use crate::chat::{ChatRequest, Usage};
use crate::error::{ErrorClass, HealthEffect, NextTarget, RetrySame, UpstreamError};
use crate::events::{Event, EventSink, SkipReason};
use crate::health::HealthState;
use crate::instance::{InstancePermit, SharedInstance, Unavailable};
use crate::name::{EchelonName, GroupName, InstanceId, ProviderName};
use crate::ports::Call;
use crate::random::Random;
use crate::routing::{
    AttemptTimeouts, EchelonPermit, EchelonRuntime, PoolLabel, PoolPermit, PoolRuntime, Route,
    RoutePlan, RoutingTable, Stage,
};
use crate::spec::{RequestDefaults, RotationStrategy};
use crate::stats::Counters;
use crate::time::Instant;

/// Longest single backoff between retries of the same instance.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Shortest Retry-After a 429 verdict announces.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Times a pick is repeated when its permits were taken by a concurrent request in between.
const RACE_RETRIES: usize = 3;

/// What the planner needs to know about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts {
    /// Estimated tokens (input plus expected output), charged to tpm limits up front.
    pub estimated_tokens: u32,
    /// When the request arrived.
    pub now: Instant,
    /// The caller's own deadline, if earlier than the route's.
    pub deadline: Option<Instant>,
}

/// Why the plan asks the caller to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum WaitReason {
    /// Backoff (exponential, full jitter) before retrying the same instance after a server error.
    Backoff,
    /// The upstream's Retry-After, short enough to wait out because nothing else in the echelon
    /// can serve.
    RetryAfter,
}

/// The next thing to do.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "an attempt is moved out at once; boxing it would cost an allocation per attempt"
)]
pub enum Step {
    /// Call this upstream now.
    Attempt(Attempt),
    /// Sleep until `until`, then call [`Plan::next`] again.
    Wait {
        /// When to ask again.
        until: Instant,
        /// Why.
        reason: WaitReason,
        /// The instance that will be retried.
        instance: InstanceId,
    },
    /// The request is over.
    Done(Verdict),
}

/// How a request ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// An attempt succeeded.
    Served,
    /// Everything is rate limited or saturated: 429, come back after `retry_after`.
    RateLimited {
        /// When capacity returns (at least one second).
        retry_after: Duration,
    },
    /// Everything is open, unhealthy or dead: 503.
    Unavailable {
        /// When something is expected back, if known.
        retry_after: Option<Duration>,
    },
    /// The upstream rejected the request itself (invalid request, content filter, or a context
    /// length no larger target can take): returned to the client as it is.
    Rejected(UpstreamError),
    /// Every attempt failed: 502 with the last error.
    Exhausted {
        /// The last failure, if any attempt had an outcome.
        last_error: Option<UpstreamError>,
    },
    /// The request's deadline passed: 504.
    DeadlineExceeded,
    /// The caller went away.
    ClientGone,
}

impl Verdict {
    /// The HTTP status that fits (499 for a caller that went away).
    pub fn status(&self) -> u16 {
        match self {
            Self::Served => 200,
            Self::RateLimited { .. } => 429,
            Self::Unavailable { .. } => 503,
            Self::Rejected(e) => e.status.unwrap_or(400),
            Self::Exhausted { .. } => 502,
            Self::DeadlineExceeded => 504,
            Self::ClientGone => 499,
        }
    }

    /// The Retry-After to announce, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            Self::Unavailable { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The stable snake_case name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Served => "served",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::Rejected(_) => "rejected",
            Self::Exhausted { .. } => "exhausted",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::ClientGone => "client_gone",
        }
    }
}

/// How an attempt ended, as the caller observed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The upstream answered (for a stream: it finished cleanly).
    Success {
        /// Time from the attempt's start to the end of the answer.
        latency: Duration,
        /// Time to the first content token, for streams.
        ttft: Option<Duration>,
        /// Reported token usage.
        usage: Option<Usage>,
    },
    /// The upstream failed, classified by the adapter (timeouts included).
    Failure {
        /// The failure.
        error: UpstreamError,
        /// Time until it failed.
        latency: Duration,
    },
    /// The caller stopped the attempt (its own cancellation or deadline): nothing counts against
    /// the upstream and the plan may continue.
    Cancelled,
}

/// Counts a cancellation when an attempt is dropped without [`Plan::record`]; disarmed by it.
struct CancelOnDrop {
    instance: SharedInstance,
    pool: Arc<Counters>,
    group: Option<Arc<Counters>>,
    echelon: Option<Arc<EchelonRuntime>>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.instance.count_cancelled();
        self.pool.cancelled();
        if let Some(group) = &self.group {
            group.cancelled();
        }
        if let Some(echelon) = &self.echelon {
            echelon.live.counters.cancelled();
        }
    }
}

struct Held {
    /// Declared first so that it runs before the permits below are released.
    cancel_on_drop: CancelOnDrop,
    instance: SharedInstance,
    permit: InstancePermit,
    /// The pool's own limits, released when the attempt ends.
    _pool_permit: Option<PoolPermit>,
    echelon: Option<(Arc<EchelonRuntime>, EchelonPermit)>,
    pool: Arc<PoolRuntime>,
    group_counters: Option<Arc<Counters>>,
    stage: usize,
    target: usize,
    member: usize,
}

impl core::fmt::Debug for Held {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Held")
            .field("instance", self.instance.id())
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

/// One upstream attempt, holding its permits until recorded or dropped.
///
/// Dropping an attempt without [`Plan::record`] releases every permit (instance and echelon
/// concurrency, breaker trials) and counts as a cancellation.
#[derive(Debug)]
#[must_use = "execute the attempt and record its outcome; dropping it cancels it"]
pub struct Attempt {
    /// 1-based number within the request.
    pub number: u32,
    /// The instance to call.
    pub instance: InstanceId,
    /// The model name the upstream knows.
    pub upstream_model: String,
    /// The group of the stage, if any.
    pub group: Option<GroupName>,
    /// The echelon of the stage, if any.
    pub echelon: Option<EchelonName>,
    /// The pool (or the model's implicit pool) the instance was picked from.
    pub pool: PoolLabel,
    /// `group › echelon › instance` (or `pool:NAME › instance`, or the instance alone).
    pub label: String,
    /// Timeouts, already clipped to the request's remaining time.
    pub timeouts: AttemptTimeouts,
    /// Request defaults of the echelon.
    pub defaults: RequestDefaults,
    /// The instance's context window, when known.
    pub context_window: Option<u32>,
    /// Whether this is a half-open breaker trial (instance or echelon).
    pub trial: bool,
    /// Whether the instance was picked under the panic policy (every candidate unhealthy).
    pub panic: bool,
    /// When the attempt was handed out.
    pub started: Instant,
    held: Held,
}

impl Attempt {
    /// The chat port call for `request`.
    pub fn call<'a>(&'a self, request: &'a ChatRequest) -> Call<'a> {
        Call {
            instance: &self.instance,
            upstream_model: &self.upstream_model,
            request,
        }
    }
}

/// How an attempt in the log ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "result", rename_all = "snake_case")
)]
pub enum AttemptResult {
    /// Handed out, not recorded yet.
    Pending,
    /// Succeeded.
    Success,
    /// Failed.
    Failed {
        /// The failure's class.
        class: ErrorClass,
        /// The upstream's HTTP status, if it answered.
        status: Option<u16>,
    },
    /// Cancelled by the caller.
    Cancelled,
}

/// One line of a plan's attempt log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AttemptRecord {
    /// 1-based number.
    pub number: u32,
    /// `group › echelon › instance`.
    pub label: String,
    /// The instance.
    pub instance: InstanceId,
    /// How it ended.
    pub result: AttemptResult,
    /// How long it took, once recorded.
    pub duration: Option<Duration>,
}

/// A candidate the plan passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Skip {
    /// The stage (`group › echelon`, `pool:NAME`, `provider/model`).
    pub stage: String,
    /// The instance, unless a whole echelon or target was skipped.
    pub instance: Option<InstanceId>,
    /// Why.
    pub reason: SkipReason,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    stage: usize,
    target: usize,
    member: usize,
    at: Instant,
    reason: WaitReason,
}

/// The attempts of one request. See the module docs.
pub struct Plan {
    route: Route,
    plan: Arc<RoutePlan>,
    sink: Arc<dyn EventSink>,
    default_cooldown: Duration,
    tokens: u32,
    deadline: Instant,
    stage: usize,
    stage_entered: bool,
    stage_start: usize,
    target_attempts: Vec<u32>,
    attempts: u32,
    /// Instances tried, by live-state address.
    tried: Vec<usize>,
    /// Retries of the same instance so far, by live-state address.
    retries: Vec<(usize, u32)>,
    /// Instances already waited for after a 429.
    rate_waited: Vec<usize>,
    failed_providers: Vec<ProviderName>,
    context_above: Option<u32>,
    retry: Option<Pending>,
    rate_wait: Option<Pending>,
    last_error: Option<UpstreamError>,
    only_rate_limited: bool,
    rate_limited_until: Option<Instant>,
    rate_limited_unknown: bool,
    other_until: Option<Instant>,
    seen: HashSet<(usize, usize, u8)>,
    trace: Vec<Skip>,
    log: Vec<AttemptRecord>,
    finished: Option<Verdict>,
}

impl core::fmt::Debug for Plan {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Plan")
            .field("route", &self.route.label())
            .field("attempts", &self.log)
            .field("trace", &self.trace)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// `stage › instance`, or the instance alone, written into one allocation of about the right
/// size (`format!` would start small and grow on every request).
fn attempt_label(stage: Option<&str>, instance: &InstanceId) -> String {
    use core::fmt::Write as _;
    let model = &instance.model;
    let capacity = stage.map_or(0, |s| s.len() + " › ".len())
        + model.provider.as_str().len()
        + model.model.as_str().len()
        + "/#65535".len();
    let mut label = String::with_capacity(capacity);
    if let Some(stage) = stage {
        label.push_str(stage);
        label.push_str(" › ");
    }
    // Writing into a `String` cannot fail.
    let _ = write!(label, "{instance}");
    label
}

fn address(instance: &SharedInstance) -> usize {
    Arc::as_ptr(instance) as usize
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl RoutingTable {
    /// Starts the attempt plan of one request on `route`.
    pub fn plan(&self, route: &Route, facts: RequestFacts) -> Plan {
        let plan = Arc::clone(&route.plan);
        let limit = if plan.settings.deadline.is_zero() {
            Duration::from_secs(24 * 3_600)
        } else {
            plan.settings.deadline
        };
        let deadline = facts
            .deadline
            .map_or(facts.now + limit, |d| d.min(facts.now + limit));
        let mut out = Plan {
            route: route.clone(),
            sink: Arc::clone(&self.options().sink),
            default_cooldown: self.options().default_cooldown,
            tokens: facts.estimated_tokens,
            deadline,
            stage: 0,
            stage_entered: false,
            stage_start: 0,
            target_attempts: Vec::new(),
            attempts: 0,
            tried: Vec::new(),
            retries: Vec::new(),
            rate_waited: Vec::new(),
            failed_providers: Vec::new(),
            context_above: None,
            retry: None,
            rate_wait: None,
            last_error: None,
            only_rate_limited: true,
            rate_limited_until: None,
            rate_limited_unknown: false,
            other_until: None,
            seen: HashSet::new(),
            trace: Vec::new(),
            log: Vec::new(),
            finished: None,
            plan,
        };
        for label in out.plan.cycles.iter() {
            out.trace.push(Skip {
                stage: label.to_string(),
                instance: None,
                reason: SkipReason::Cycle,
            });
        }
        out
    }
}

impl Plan {
    /// The route being served.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The request's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Attempts handed out so far.
    pub fn attempts_made(&self) -> u32 {
        self.attempts
    }

    /// The hard cap on attempts.
    pub fn max_attempts(&self) -> u32 {
        self.plan.settings.max_attempts
    }

    /// The attempt log.
    pub fn attempts(&self) -> &[AttemptRecord] {
        &self.log
    }

    /// The attempt log, taken out of a plan that is done with.
    pub fn into_attempts(self) -> Vec<AttemptRecord> {
        self.log
    }

    /// Every candidate passed over so far, with its reason.
    pub fn trace(&self) -> &[Skip] {
        &self.trace
    }

    /// The verdict, once the plan is done.
    pub fn verdict(&self) -> Option<&Verdict> {
        self.finished.as_ref()
    }

    /// The next step at `now`.
    pub fn next(&mut self, now: Instant, rng: &dyn Random) -> Step {
        if let Some(v) = &self.finished {
            return Step::Done(v.clone());
        }
        if now >= self.deadline {
            return self.finish(Verdict::DeadlineExceeded);
        }
        if self.attempts >= self.plan.settings.max_attempts {
            let v = self.final_verdict(now);
            return self.finish(v);
        }
        if let Some(p) = self.retry.take() {
            if p.at > now {
                if p.at < self.deadline {
                    self.retry = Some(p);
                    let instance = self.plan.stages[p.stage].targets[p.target].members[p.member]
                        .id()
                        .clone();
                    return Step::Wait {
                        until: p.at,
                        reason: p.reason,
                        instance,
                    };
                }
                // Waiting would pass the deadline: move on instead.
            } else if let Some(attempt) = self.retry_member(p, now) {
                return Step::Attempt(attempt);
            }
        }
        loop {
            if self.stage >= self.plan.stages.len() {
                let v = self.final_verdict(now);
                return self.finish(v);
            }
            if !self.stage_entered {
                self.enter_stage();
            }
            if let Some(attempt) = self.select_in_stage(now, rng) {
                return Step::Attempt(attempt);
            }
            if let Some(p) = self.rate_wait.take()
                && p.stage == self.stage
                && p.at < self.deadline
            {
                self.retry = Some(p);
                if p.at <= now {
                    if let Some(attempt) = self.retry_member(p, now) {
                        self.retry = None;
                        return Step::Attempt(attempt);
                    }
                    self.retry = None;
                } else {
                    let instance = self.plan.stages[p.stage].targets[p.target].members[p.member]
                        .id()
                        .clone();
                    return Step::Wait {
                        until: p.at,
                        reason: p.reason,
                        instance,
                    };
                }
            }
            self.leave_stage();
        }
    }

    /// Records how `attempt` ended at `now`: into the instance's health, breaker, limiters,
    /// latency and statistics, the echelon's breaker, and the plan's own course.
    pub fn record(&mut self, attempt: Attempt, outcome: Outcome, now: Instant, rng: &dyn Random) {
        let Attempt {
            number,
            held,
            started,
            context_window,
            ..
        } = attempt;
        let Held {
            mut cancel_on_drop,
            instance,
            permit,
            _pool_permit: _,
            echelon,
            pool,
            group_counters,
            stage,
            target,
            member,
        } = held;
        cancel_on_drop.armed = false;
        let sink = Arc::clone(&self.sink);
        let sink = &*sink;
        let index = usize::try_from(number.saturating_sub(1)).unwrap_or(usize::MAX);
        let duration = now - started;
        let counters = || {
            [Some(&pool.counters), group_counters.as_ref()]
                .into_iter()
                .flatten()
                .map(|c| &**c)
                .chain(echelon.as_ref().map(|(e, _)| &e.live.counters))
                .collect::<Vec<&Counters>>()
        };
        let result = match outcome {
            Outcome::Success {
                latency,
                ttft,
                usage,
            } => {
                instance.record_success(permit, now, latency, ttft, usage, sink, rng);
                counters().iter().for_each(|c| c.success(latency, usage));
                if let Some((e, p)) = echelon {
                    Self::settle_echelon(&e, p, None, now, rng, sink);
                }
                self.finished = Some(Verdict::Served);
                AttemptResult::Success
            }
            Outcome::Cancelled => {
                instance.record_cancelled(permit);
                counters().iter().for_each(|c| c.cancelled());
                AttemptResult::Cancelled
            }
            Outcome::Failure { error, latency } => {
                let rate_limited = error.class == ErrorClass::RateLimited;
                instance.record_failure(
                    permit,
                    now,
                    &error,
                    latency,
                    self.default_cooldown,
                    sink,
                    rng,
                );
                counters()
                    .iter()
                    .for_each(|c| c.failure(latency, rate_limited));
                if let Some((e, p)) = echelon {
                    Self::settle_echelon(&e, p, Some(error.class), now, rng, sink);
                }
                let result = AttemptResult::Failed {
                    class: error.class,
                    status: error.status,
                };
                let at = Pending {
                    stage,
                    target,
                    member,
                    at: now,
                    reason: WaitReason::Backoff,
                };
                self.after_failure(&instance, context_window, error, at, now, rng);
                result
            }
        };
        if let Some(entry) = self.log.get_mut(index) {
            entry.result = result;
            entry.duration = Some(duration);
        }
    }

    fn settle_echelon(
        e: &EchelonRuntime,
        permit: EchelonPermit,
        failure: Option<ErrorClass>,
        now: Instant,
        rng: &dyn Random,
        sink: &dyn EventSink,
    ) {
        if let Some(t) = permit.settle(failure, now, rng) {
            sink.record(&Event::Breaker {
                scope: e.scope(),
                from: t.from,
                to: t.to,
                open_until: t.open_until,
            });
        }
    }

    fn after_failure(
        &mut self,
        instance: &SharedInstance,
        context_window: Option<u32>,
        error: UpstreamError,
        at: Pending,
        now: Instant,
        rng: &dyn Random,
    ) {
        let decision = error.decision();
        let key = address(instance);
        if error.class != ErrorClass::RateLimited {
            self.only_rate_limited = false;
        }
        if decision.health == HealthEffect::Cooldown {
            self.rate_limited_until =
                earliest(self.rate_limited_until, instance.cooldown_until(now));
        }
        if self.plan.settings.provider_failover && error.class.counts_against_upstream() {
            let provider = &instance.id().model.provider;
            if !self.failed_providers.contains(provider) {
                self.failed_providers.push(provider.clone());
            }
        }
        if decision.stop {
            self.finished = Some(Verdict::ClientGone);
        } else {
            match decision.next {
                NextTarget::None => self.finished = Some(Verdict::Rejected(error.clone())),
                NextTarget::LargerContext => {
                    let window = context_window.unwrap_or(0);
                    self.context_above = Some(self.context_above.map_or(window, |c| c.max(window)));
                }
                NextTarget::Any => {}
            }
        }
        let stage = &self.plan.stages[at.stage];
        match decision.retry_same {
            RetrySame::WithBackoff => {
                let used = self
                    .retries
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or(0, |r| r.1);
                if used < stage.max_retries {
                    let delay = backoff(self.plan.settings.retry_delay, used + 1, rng);
                    match self.retries.iter_mut().find(|(k, _)| *k == key) {
                        Some(r) => r.1 += 1,
                        None => self.retries.push((key, 1)),
                    }
                    self.retry = Some(Pending {
                        at: now + delay,
                        reason: WaitReason::Backoff,
                        ..at
                    });
                }
            }
            RetrySame::AfterRetryAfter => {
                let until = instance.cooldown_until(now).unwrap_or(now);
                if !self.rate_waited.contains(&key) && until - now <= stage.retry_after_max_wait {
                    self.rate_waited.push(key);
                    self.rate_wait = Some(Pending {
                        at: until,
                        reason: WaitReason::RetryAfter,
                        ..at
                    });
                }
            }
            RetrySame::Never => {}
        }
        self.last_error = Some(error);
    }

    fn finish(&mut self, verdict: Verdict) -> Step {
        self.finished = Some(verdict.clone());
        Step::Done(verdict)
    }

    fn final_verdict(&self, now: Instant) -> Verdict {
        let rate_limited = || {
            let after = self
                .rate_limited_until
                .map_or(MIN_RETRY_AFTER, |t| (t - now).max(MIN_RETRY_AFTER));
            Verdict::RateLimited { retry_after: after }
        };
        if let Some(error) = &self.last_error {
            if error.class == ErrorClass::ContextLength {
                return Verdict::Rejected(error.clone());
            }
            if self.only_rate_limited {
                return rate_limited();
            }
            return Verdict::Exhausted {
                last_error: Some(error.clone()),
            };
        }
        if self.attempts > 0 {
            return Verdict::Exhausted { last_error: None };
        }
        if self.rate_limited_until.is_some() || self.rate_limited_unknown {
            return rate_limited();
        }
        Verdict::Unavailable {
            retry_after: self.other_until.map(|t| t - now),
        }
    }

    fn enter_stage(&mut self) {
        let stage = &self.plan.stages[self.stage];
        let n = stage.targets.len();
        self.target_attempts = vec![0; n];
        self.stage_start = match &stage.echelon {
            Some(e) if stage.rotating > 1 => {
                (e.live
                    .cursor
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    % stage.rotating as u64) as usize
            }
            _ => 0,
        };
        self.stage_entered = true;
    }

    fn leave_stage(&mut self) {
        let plan = Arc::clone(&self.plan);
        let stage = &plan.stages[self.stage];
        self.stage += 1;
        self.stage_entered = false;
        self.rate_wait = None;
        if let Some(next) = plan.stages.get(self.stage) {
            if let Some(e) = &stage.echelon {
                e.live.counters.fallback();
            }
            for target in stage.targets.iter() {
                target.counters.fallback();
            }
            self.sink.record(&Event::Fallback {
                group: stage.group.clone(),
                from: stage.echelon.as_ref().map(|e| e.spec.name.clone()),
                to: next.label.to_string(),
            });
        }
    }

    /// Notes a skipped candidate once per stage: trace, event, counters, verdict facts.
    fn skip(
        &mut self,
        stage: usize,
        key: (usize, u8),
        instance: Option<&SharedInstance>,
        reason: SkipReason,
        now: Instant,
    ) {
        if !self.seen.insert((stage, key.0, key.1)) {
            return;
        }
        if let SkipReason::Instance(u) | SkipReason::Echelon(u) = &reason {
            if u.is_rate_limit() {
                match u.back_at(now) {
                    Some(t) => self.rate_limited_until = earliest(self.rate_limited_until, Some(t)),
                    None => self.rate_limited_unknown = true,
                }
            } else {
                self.other_until = earliest(self.other_until, u.back_at(now));
            }
        }
        if let Some(i) = instance {
            i.counters().skip();
        }
        let s = &self.plan.stages[stage];
        self.sink.record(&Event::Skipped {
            group: s.group.clone(),
            echelon: s.echelon.as_ref().map(|e| e.spec.name.clone()),
            instance: instance.map(|i| i.id().clone()),
            reason: reason.clone(),
        });
        self.trace.push(Skip {
            stage: s.label.to_string(),
            instance: instance.map(|i| i.id().clone()),
            reason,
        });
    }

    fn select_in_stage(&mut self, now: Instant, rng: &dyn Random) -> Option<Attempt> {
        let plan = Arc::clone(&self.plan);
        let index = self.stage;
        let stage = &plan.stages[index];
        if let Some(e) = &stage.echelon
            && let Err(u) = e.availability(now)
        {
            e.live.counters.skip();
            self.skip(
                index,
                (Arc::as_ptr(e) as usize, 1),
                None,
                SkipReason::Echelon(u),
                now,
            );
            return None;
        }
        if stage.targets.is_empty() {
            self.skip(index, (0, 2), None, SkipReason::NoInstances, now);
            return None;
        }
        let n = stage.targets.len();
        let rotating = stage.rotating.min(n);
        for k in 0..n {
            // The echelon's own targets in rotated order, then the fallback pools in order.
            let t = if k < rotating {
                (self.stage_start + k) % rotating
            } else {
                k
            };
            let pool = &stage.targets[t];
            let pool_key = Arc::as_ptr(pool) as usize;
            if pool.members.is_empty() {
                self.skip(index, (pool_key, 2), None, SkipReason::NoInstances, now);
                continue;
            }
            let budget = stage.per_target.unwrap_or(pool.max_attempts);
            if self.target_attempts[t] >= budget {
                self.skip(index, (pool_key, 3), None, SkipReason::AttemptsSpent, now);
                continue;
            }
            let mut pool_permit = match pool.acquire(now, self.tokens) {
                Ok(permit) => permit,
                Err(saturated) => {
                    self.skip(
                        index,
                        (pool_key, 5),
                        None,
                        SkipReason::Pool(Unavailable::Saturated(saturated)),
                        now,
                    );
                    continue;
                }
            };
            let mut echelon_permit = match &stage.echelon {
                Some(e) => match e.acquire(now, &*self.sink) {
                    Ok(p) => Some(p),
                    Err(u) => {
                        self.skip(
                            index,
                            (Arc::as_ptr(e) as usize, 1),
                            None,
                            SkipReason::Echelon(u),
                            now,
                        );
                        return None;
                    }
                },
                None => None,
            };
            let mut raced: Vec<usize> = Vec::new();
            for _ in 0..RACE_RETRIES {
                let mut skips: Vec<(usize, SkipReason)> = Vec::new();
                let picked = {
                    let tried = &self.tried;
                    let failed = &self.failed_providers;
                    let context_above = self.context_above;
                    let tokens = self.tokens;
                    let members = &pool.members;
                    let raced = &raced;
                    let mut check = |i: usize, ignore_health: bool| {
                        let m = &members[i];
                        if raced.contains(&i) {
                            return Err(SkipReason::AlreadyTried);
                        }
                        if tried.contains(&address(m)) {
                            return Err(SkipReason::AlreadyTried);
                        }
                        let provider = &m.id().model.provider;
                        if failed.contains(provider) {
                            return Err(SkipReason::ProviderFailed {
                                provider: provider.clone(),
                            });
                        }
                        if let Some(above) = context_above {
                            match m.spec().context_window {
                                Some(w) if w > above => {}
                                window => {
                                    return Err(SkipReason::ContextWindowTooSmall {
                                        required_above: above,
                                        window,
                                    });
                                }
                            }
                        }
                        m.availability(now, tokens, ignore_health)
                            .map_err(SkipReason::Instance)
                    };
                    pool.rotation.pick_with_panic(
                        &pool.members,
                        now,
                        rng,
                        &mut check,
                        &mut |i, reason| skips.push((i, reason)),
                    )
                };
                for (i, reason) in skips {
                    let m = &pool.members[i];
                    self.skip(index, (address(m), 0), Some(m), reason, now);
                }
                let Some((member, panic)) = picked else {
                    break;
                };
                match self.admit(
                    index,
                    t,
                    member,
                    panic,
                    now,
                    &mut echelon_permit,
                    &mut pool_permit,
                ) {
                    Ok(attempt) => return Some(attempt),
                    Err(u) => {
                        let m = &pool.members[member];
                        self.skip(
                            index,
                            (address(m), 0),
                            Some(m),
                            SkipReason::Instance(u),
                            now,
                        );
                        raced.push(member);
                    }
                }
            }
            if let Some(p) = echelon_permit {
                p.release_unused(now);
            }
        }
        None
    }

    /// Retries a member after a wait; `None` (with a skip noted) when it can no longer serve.
    fn retry_member(&mut self, p: Pending, now: Instant) -> Option<Attempt> {
        let plan = Arc::clone(&self.plan);
        let stage = &plan.stages[p.stage];
        let pool = &stage.targets[p.target];
        let mut pool_permit = match pool.acquire(now, self.tokens) {
            Ok(permit) => permit,
            Err(saturated) => {
                self.skip(
                    p.stage,
                    (Arc::as_ptr(pool) as usize, 5),
                    None,
                    SkipReason::Pool(Unavailable::Saturated(saturated)),
                    now,
                );
                return None;
            }
        };
        let mut echelon_permit = match &stage.echelon {
            Some(e) => match e.acquire(now, &*self.sink) {
                Ok(permit) => Some(permit),
                Err(u) => {
                    self.skip(
                        p.stage,
                        (Arc::as_ptr(e) as usize, 1),
                        None,
                        SkipReason::Echelon(u),
                        now,
                    );
                    return None;
                }
            },
            None => None,
        };
        match self.admit(
            p.stage,
            p.target,
            p.member,
            false,
            now,
            &mut echelon_permit,
            &mut pool_permit,
        ) {
            Ok(attempt) => Some(attempt),
            Err(u) => {
                if let Some(permit) = echelon_permit {
                    permit.release_unused(now);
                }
                let m = &stage.targets[p.target].members[p.member];
                self.skip(
                    p.stage,
                    (address(m), 4),
                    Some(m),
                    SkipReason::Instance(u),
                    now,
                );
                None
            }
        }
    }

    /// Takes the instance's permits and hands out the attempt.
    #[allow(
        clippy::too_many_arguments,
        reason = "the permits already taken travel with the pick; a struct would only rename them"
    )]
    fn admit(
        &mut self,
        index: usize,
        target: usize,
        member: usize,
        panic: bool,
        now: Instant,
        echelon_permit: &mut Option<EchelonPermit>,
        pool_permit: &mut Option<PoolPermit>,
    ) -> Result<Attempt, Unavailable> {
        let plan = Arc::clone(&self.plan);
        let stage: &Stage = &plan.stages[index];
        let pool = &stage.targets[target];
        let instance = &pool.members[member];
        let permit = instance.acquire(now, self.tokens, panic, &*self.sink)?;
        let echelon = match (&stage.echelon, echelon_permit.take()) {
            (Some(e), Some(mut p)) => {
                p.mark_used();
                Some((Arc::clone(e), p))
            }
            _ => None,
        };
        self.attempts += 1;
        if let Some(count) = self.target_attempts.get_mut(target) {
            *count += 1;
        }
        let key = address(instance);
        if !self.tried.contains(&key) {
            self.tried.push(key);
        }
        pool.counters.attempt();
        if let Some(c) = &stage.group_counters {
            c.attempt();
        }
        if let Some((e, _)) = &echelon {
            e.live.counters.attempt();
        }
        let label = match (&pool.label, &stage.echelon) {
            (PoolLabel::Model(_), None) => attempt_label(None, instance.id()),
            _ => attempt_label(Some(&stage.label), instance.id()),
        };
        let remaining = self.deadline - now;
        let total = stage.timeouts.total.min(remaining);
        self.log.push(AttemptRecord {
            number: self.attempts,
            label: label.clone(),
            instance: instance.id().clone(),
            result: AttemptResult::Pending,
            duration: None,
        });
        Ok(Attempt {
            number: self.attempts,
            instance: instance.id().clone(),
            upstream_model: instance.spec().upstream_name.clone(),
            group: stage.group.clone(),
            echelon: stage.echelon.as_ref().map(|e| e.spec.name.clone()),
            pool: pool.label.clone(),
            label,
            timeouts: AttemptTimeouts {
                total,
                first_token: stage.timeouts.first_token.min(total),
                idle: stage.timeouts.idle,
            },
            defaults: stage.defaults,
            context_window: instance.spec().context_window,
            trial: permit.is_trial() || echelon.as_ref().is_some_and(|(_, p)| p.is_trial()),
            panic,
            started: now,
            held: Held {
                cancel_on_drop: CancelOnDrop {
                    instance: Arc::clone(instance),
                    pool: Arc::clone(&pool.counters),
                    group: stage.group_counters.clone(),
                    echelon: echelon.as_ref().map(|(e, _)| Arc::clone(e)),
                    armed: true,
                },
                instance: Arc::clone(instance),
                permit,
                _pool_permit: pool_permit.take().map(|mut p| {
                    p.mark_used();
                    p
                }),
                echelon,
                pool: Arc::clone(pool),
                group_counters: stage.group_counters.clone(),
                stage: index,
                target,
                member,
            },
        })
    }
}

/// Exponential backoff with full jitter: uniform in `[0, base × 2^(retry-1)]`, capped at 30 s.
pub fn backoff(base: Duration, retry: u32, rng: &dyn Random) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    ceiling.mul_f64(rng.unit())
}

/// A dry run of a route: every candidate and whether it is in or out, with the reason.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Explanation {
    /// `wrapper › target`.
    pub route: String,
    /// The hard cap on attempts.
    pub max_attempts: u32,
    /// Stages in the order a plan walks them.
    pub stages: Vec<StageExplanation>,
    /// Fallback references dropped as cycles.
    pub cycles: Vec<String>,
    /// What a request would get at once, when no candidate could serve it now.
    pub verdict: Option<ExplainedVerdict>,
}

/// The immediate answer of a route that cannot serve now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ExplainedVerdict {
    /// 429 or 503.
    pub status: u16,
    /// The Retry-After it would carry.
    pub retry_after: Option<Duration>,
}

/// One stage of an [`Explanation`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StageExplanation {
    /// `group › echelon`, `pool:NAME` or `provider/model`.
    pub label: String,
    /// Why the echelon as a whole would be skipped, if it would.
    pub echelon_skip: Option<SkipReason>,
    /// Its targets in configured order.
    pub targets: Vec<TargetExplanation>,
}

/// One target (pool or model) of a stage.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TargetExplanation {
    /// The pool or model.
    pub target: PoolLabel,
    /// Its rotation.
    pub rotation: RotationStrategy,
    /// Instances it may try per request.
    pub attempts: u32,
    /// Its instances.
    pub candidates: Vec<CandidateExplanation>,
}

/// One instance of a target.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CandidateExplanation {
    /// The instance.
    pub instance: InstanceId,
    /// Its weight in the pool.
    pub weight: u64,
    /// Health state.
    pub health: HealthState,
    /// Breaker state.
    pub breaker: BreakerState,
    /// Requests in flight.
    pub in_flight: u32,
    /// Why it would be skipped now; `None` when it is in.
    pub skip: Option<SkipReason>,
}

impl RoutingTable {
    /// A dry run of `route` at `now`: takes no permits and moves no rotation. Unhealthy
    /// candidates are listed as skipped even where the panic policy would still try them; the
    /// verdict accounts for that.
    pub fn explain(&self, route: &Route, now: Instant) -> Explanation {
        let mut stages = Vec::new();
        let mut any_in = false;
        let mut rate_until: Option<Instant> = None;
        let mut rate_unknown = false;
        let mut other_until: Option<Instant> = None;
        let mut note = |u: &Unavailable| {
            if u.is_rate_limit() {
                match u.back_at(now) {
                    Some(t) => rate_until = earliest(rate_until, Some(t)),
                    None => rate_unknown = true,
                }
            } else {
                other_until = earliest(other_until, u.back_at(now));
            }
        };
        for stage in route.plan.stages.iter() {
            let echelon_skip = stage
                .echelon
                .as_ref()
                .and_then(|e| e.availability(now).err());
            if let Some(u) = &echelon_skip {
                note(u);
            }
            let mut targets = Vec::new();
            for pool in stage.targets.iter() {
                let candidates: Vec<_> = pool
                    .members
                    .iter()
                    .enumerate()
                    .map(|(k, m)| {
                        let skip = m.availability(now, 1, false).err();
                        match &skip {
                            None => any_in |= echelon_skip.is_none(),
                            Some(Unavailable::Unhealthy { .. })
                                if m.availability(now, 1, true).is_ok() =>
                            {
                                any_in |= echelon_skip.is_none();
                            }
                            Some(u) => note(u),
                        }
                        CandidateExplanation {
                            instance: m.id().clone(),
                            weight: pool.rotation.weight(k),
                            health: m.health().state(),
                            breaker: m.breaker().state(now),
                            in_flight: m.in_flight(),
                            skip: skip.map(SkipReason::Instance),
                        }
                    })
                    .collect();
                targets.push(TargetExplanation {
                    target: pool.label.clone(),
                    rotation: pool.rotation.strategy(),
                    attempts: stage.per_target.unwrap_or(pool.max_attempts),
                    candidates,
                });
            }
            stages.push(StageExplanation {
                label: stage.label.to_string(),
                echelon_skip: echelon_skip.map(SkipReason::Echelon),
                targets,
            });
        }
        let verdict = (!any_in).then(|| {
            if rate_until.is_some() || rate_unknown {
                ExplainedVerdict {
                    status: 429,
                    retry_after: Some(
                        rate_until.map_or(MIN_RETRY_AFTER, |t| (t - now).max(MIN_RETRY_AFTER)),
                    ),
                }
            } else {
                ExplainedVerdict {
                    status: 503,
                    retry_after: other_until.map(|t| t - now),
                }
            }
        });
        Explanation {
            route: route.label(),
            max_attempts: route.max_attempts(),
            stages,
            cycles: route.plan.cycles.iter().map(ToString::to_string).collect(),
            verdict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn plans_and_attempts_cross_await_points() {
        // The request engine holds them across awaits on a multi-threaded runtime.
        send::<Plan>();
        send::<Attempt>();
        send_sync::<RoutingTable>();
        send_sync::<Route>();
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_cap() {
        let rng = crate::random::SplitMix64::new(5);
        let base = Duration::from_millis(100);
        for retry in 1..12 {
            let cap = base.saturating_mul(1 << (retry - 1)).min(MAX_BACKOFF);
            let draws: Vec<_> = (0..200).map(|_| backoff(base, retry, &rng)).collect();
            assert!(draws.iter().all(|d| *d <= cap));
            assert!(
                draws.iter().any(|d| *d < cap / 4),
                "full jitter reaches low values"
            );
        }
    }

    #[test]
    fn verdicts_map_to_statuses() {
        let e = UpstreamError::new(ErrorClass::ContentFilter, "no").with_status(400);
        let rows = [
            (Verdict::Served, 200),
            (
                Verdict::RateLimited {
                    retry_after: MIN_RETRY_AFTER,
                },
                429,
            ),
            (Verdict::Unavailable { retry_after: None }, 503),
            (Verdict::Rejected(e), 400),
            (Verdict::Exhausted { last_error: None }, 502),
            (Verdict::DeadlineExceeded, 504),
            (Verdict::ClientGone, 499),
        ];
        for (verdict, status) in rows {
            assert_eq!(verdict.status(), status, "{}", verdict.as_str());
        }
    }
}
