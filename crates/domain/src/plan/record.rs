//! Recording how an attempt ended: into the live state it touched, and into the plan's course
//! (retry the same instance, move on, or stop).

use core::time::Duration;

use crate::error::{ErrorClass, HealthEffect, NextTarget, RetrySame, UpstreamError};
use crate::instance::SharedInstance;
use crate::random::Random;
use crate::stats::Counters;
use crate::time::Instant;

use super::attempt::{Attempt, AttemptResult, Held, Position};
use super::{Outcome, Pending, Plan, Verdict, WaitReason};

/// Longest single backoff between retries of the same instance.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Exponential backoff with full jitter: uniform in `[0, base × 2^(retry-1)]`, capped at 30 s.
pub fn backoff(base: Duration, retry: u32, rng: &dyn Random) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    ceiling.mul_f64(rng.unit())
}

impl Plan {
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
            at,
        } = held;
        cancel_on_drop.armed = false;
        let sink = &*self.context.sink;
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
                if let Some((e, p)) = echelon
                    && let Some(t) = p.settle(None, now, rng)
                {
                    e.report(t, sink);
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
                    self.context.default_cooldown,
                    sink,
                    rng,
                );
                counters()
                    .iter()
                    .for_each(|c| c.failure(latency, rate_limited));
                if let Some((e, p)) = echelon
                    && let Some(t) = p.settle(Some(error.class), now, rng)
                {
                    e.report(t, sink);
                }
                let result = AttemptResult::Failed {
                    class: error.class,
                    status: error.status,
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

    /// The plan's course after a failed attempt from `at`, by the decision table of
    /// [`crate::error`].
    fn after_failure(
        &mut self,
        instance: &SharedInstance,
        context_window: Option<u32>,
        error: UpstreamError,
        at: Position,
        now: Instant,
        rng: &dyn Random,
    ) {
        let decision = error.decision();
        let stage = &self.route.plan.stages[at.stage];
        let key = stage.targets[at.target].member_index[at.member];
        let memory = &mut self.memory;
        if self.route.plan.settings.provider_failover && error.class.counts_against_upstream() {
            let provider = &instance.id().model.provider;
            if !memory.failed_providers.contains(provider) {
                memory.failed_providers.push(provider.clone());
            }
        }
        if decision.stop {
            self.finished = Some(Verdict::ClientGone);
        } else {
            match decision.next {
                NextTarget::None
                    if error.class == ErrorClass::ContentFilter
                        && self.route.plan.settings.content_filter_fallback =>
                {
                    // The whole stage serves the model that refused: spend its targets so the
                    // walk moves on to the next stage.
                    if self.walk.stage == at.stage {
                        self.walk.target_attempts.fill(u32::MAX);
                    }
                }
                NextTarget::None => self.finished = Some(Verdict::Rejected(error.clone())),
                NextTarget::LargerContext => {
                    let window = context_window.unwrap_or(0);
                    memory.context_above =
                        Some(memory.context_above.map_or(window, |c| c.max(window)));
                }
                NextTarget::Any => {}
            }
        }
        match decision.retry_same {
            RetrySame::WithBackoff => {
                let used = memory
                    .retries
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or(0, |r| r.1);
                if used < stage.max_retries {
                    let delay = backoff(self.route.plan.settings.retry_delay, used + 1, rng);
                    match memory.retries.iter_mut().find(|(k, _)| *k == key) {
                        Some(r) => r.1 += 1,
                        None => memory.retries.push((key, 1)),
                    }
                    self.walk.retry = Some(Pending {
                        at,
                        due: now + delay,
                        reason: WaitReason::Backoff,
                    });
                }
            }
            RetrySame::AfterRetryAfter => {
                let until = instance.cooldown_until(now).unwrap_or(now);
                if !memory.rate_waited.contains(&key) && until - now <= stage.retry_after_max_wait {
                    memory.rate_waited.push(key);
                    self.walk.rate_wait = Some(Pending {
                        at,
                        due: until,
                        reason: WaitReason::RetryAfter,
                    });
                }
            }
            RetrySame::Never => {}
        }
        let cooldown = (decision.health == HealthEffect::Cooldown)
            .then(|| instance.cooldown_until(now))
            .flatten();
        self.facts.failed(error, cooldown);
    }
}
