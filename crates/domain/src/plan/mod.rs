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
//!
//! # Layout
//!
//! - this module: [`Plan`], its stepping ([`Plan::next`]) and the request's facts;
//! - `select`: stage selection, with the one path that takes an attempt's permits;
//! - `record`: what an attempt's outcome does to live state and to the plan's course;
//! - `attempt`: [`Attempt`] and the attempt log; `label`: their labels, as parts;
//!   `trace`: skipped candidates;
//! - `verdict`: [`Verdict`] and the facts it is decided from; `explain`: the dry run.

use core::time::Duration;
use std::sync::Arc;

use crate::budget::RetryBudget;
use crate::chat::Usage;
use crate::error::UpstreamError;
use crate::events::{EventSink, SkipReason};
use crate::name::InstanceId;
use crate::random::Random;
use crate::routing::{Route, TableOptions};
use crate::time::Instant;

mod attempt;
mod explain;
mod label;
mod record;
mod select;
mod trace;
mod verdict;

pub use attempt::{Attempt, AttemptRecord, AttemptResult};
pub(crate) use explain::explain;
pub use explain::{
    CandidateExplanation, ExplainedVerdict, Explanation, StageExplanation, TargetExplanation,
};
pub use label::{AttemptLabel, RouteLabel, StageName};
pub use record::backoff;
pub use trace::Skip;
pub use verdict::Verdict;

use attempt::Position;
use select::{Memory, Walk};
use trace::Trace;
use verdict::VerdictFacts;

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

/// A retry of the same member that is due at a given time.
#[derive(Debug, Clone, Copy)]
struct Pending {
    at: Position,
    due: Instant,
    reason: WaitReason,
}

/// What a plan was started with and does not change.
struct Context {
    sink: Arc<dyn EventSink>,
    /// The fleet-wide retry budget every attempt after the first draws on.
    budget: Arc<RetryBudget>,
    default_cooldown: Duration,
    /// Estimated tokens, charged to tpm limits up front.
    tokens: u32,
    deadline: Instant,
}

/// The attempts of one request. See the module docs.
pub struct Plan {
    route: Route,
    context: Context,
    walk: Walk,
    memory: Memory,
    facts: VerdictFacts,
    trace: Trace,
    log: Vec<AttemptRecord>,
    finished: Option<Verdict>,
}

impl core::fmt::Debug for Plan {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Plan")
            .field("route", &self.route.label())
            .field("attempts", &self.log)
            .field("trace", &self.trace.skips)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Starts the attempt plan of one request on `route` (see
    /// [`crate::routing::RoutingTable::plan`]).
    pub(crate) fn start(
        route: &Route,
        facts: RequestFacts,
        options: &TableOptions,
        budget: &Arc<RetryBudget>,
    ) -> Self {
        budget.deposit(facts.now);
        let settings = route.plan.settings;
        let limit = if settings.deadline.is_zero() {
            Duration::from_secs(24 * 3_600)
        } else {
            settings.deadline
        };
        let deadline = facts
            .deadline
            .map_or(facts.now + limit, |d| d.min(facts.now + limit));
        let mut trace = Trace::default();
        for label in route.plan.cycles.iter() {
            trace.skips.push(Skip {
                stage: label.to_string(),
                instance: None,
                reason: SkipReason::Cycle,
            });
        }
        Self {
            route: route.clone(),
            context: Context {
                sink: Arc::clone(&options.sink),
                budget: Arc::clone(budget),
                default_cooldown: options.default_cooldown,
                tokens: facts.estimated_tokens,
                deadline,
            },
            walk: Walk::default(),
            memory: Memory::default(),
            facts: VerdictFacts::default(),
            trace,
            log: Vec::new(),
            finished: None,
        }
    }

    /// The route being served.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The request's deadline.
    pub fn deadline(&self) -> Instant {
        self.context.deadline
    }

    /// Attempts handed out so far.
    pub fn attempts_made(&self) -> u32 {
        self.memory.attempts
    }

    /// The hard cap on attempts.
    pub fn max_attempts(&self) -> u32 {
        self.route.plan.settings.max_attempts
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
        &self.trace.skips
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
        if now >= self.context.deadline {
            return self.finish(Verdict::DeadlineExceeded);
        }
        if self.memory.attempts >= self.route.plan.settings.max_attempts {
            return self.finish_unserved(now);
        }
        if self.memory.attempts == 0 {
            return self.step(now, rng);
        }
        // Every attempt after the first draws on the fleet-wide retry budget; a retry that
        // yields no attempt gives its share back.
        if !self.context.budget.try_withdraw(now) {
            self.memory.retry_refused = true;
            return self.finish_unserved(now);
        }
        let step = self.step(now, rng);
        if !matches!(step, Step::Attempt(_)) {
            self.context.budget.refund(now);
        }
        step
    }

    /// [`Plan::next`] once the attempt caps and the retry budget have let it go on.
    fn step(&mut self, now: Instant, rng: &dyn Random) -> Step {
        if let Some(p) = self.walk.retry.take() {
            if p.due > now {
                if p.due < self.context.deadline {
                    self.walk.retry = Some(p);
                    return self.wait(p);
                }
                // Waiting would pass the deadline: move on instead.
            } else if let Some(attempt) = self.retry_member(p, now) {
                return Step::Attempt(attempt);
            }
        }
        loop {
            if self.walk.stage >= self.route.plan.stages.len() {
                return self.finish_unserved(now);
            }
            if !self.walk.entered {
                self.enter_stage();
            }
            if let Some(attempt) = self.select_in_stage(now, rng) {
                return Step::Attempt(attempt);
            }
            if let Some(p) = self.walk.rate_wait.take()
                && p.at.stage == self.walk.stage
                && p.due < self.context.deadline
            {
                if p.due > now {
                    self.walk.retry = Some(p);
                    return self.wait(p);
                }
                if let Some(attempt) = self.retry_member(p, now) {
                    return Step::Attempt(attempt);
                }
            }
            self.leave_stage();
        }
    }

    fn wait(&self, p: Pending) -> Step {
        let pool = &self.route.plan.stages[p.at.stage].targets[p.at.target];
        Step::Wait {
            until: p.due,
            reason: p.reason,
            instance: pool.members[p.at.member].id().clone(),
        }
    }

    fn finish(&mut self, verdict: Verdict) -> Step {
        self.finished = Some(verdict.clone());
        Step::Done(verdict)
    }

    /// Ends a plan that ran out of attempts or stages without serving.
    fn finish_unserved(&mut self, now: Instant) -> Step {
        let verdict = match self.facts.verdict(self.memory.attempts, now) {
            Verdict::Exhausted { last_error } if self.memory.retry_refused => {
                Verdict::RetryBudgetSpent { last_error }
            }
            verdict => verdict,
        };
        self.finish(verdict)
    }

    /// Whether the retry budget refused this request a retry.
    pub fn retry_refused(&self) -> bool {
        self.memory.retry_refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::RoutingTable;

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
            let cap = base
                .saturating_mul(1 << (retry - 1))
                .min(record::MAX_BACKOFF);
            let draws: Vec<_> = (0..200).map(|_| backoff(base, retry, &rng)).collect();
            assert!(draws.iter().all(|d| *d <= cap));
            assert!(
                draws.iter().any(|d| *d < cap / 4),
                "full jitter reaches low values"
            );
        }
    }
}
