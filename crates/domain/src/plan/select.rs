//! Stage selection: which instance of the current stage serves the next attempt, and the one
//! path that takes every permit an attempt needs.
//!
//! Selection runs in layers, each a function with one job, so that a policy has one obvious place:
//!
//! - [`Plan::echelon_gate`]: the stage's echelon as a whole (its breaker and limits). Echelon-wide
//!   exclusion policies (an ejection limit, panic mode across the echelons of a group) go here.
//! - [`Plan::target_gate`]: one target (pool) of the stage: empty, or its share of attempts spent.
//! - [`Plan::stage_permits`]: the pool's own limits, then the echelon's permits, taken once per
//!   target and handed on to every pick in it; the retry of a member takes the same path.
//! - [`Plan::pick_member`]: the pool's rotation with its panic policy, asking
//!   [`Memory::admits`] (what this request already learned: tried instances, failed providers,
//!   context windows) and each member's live availability. Pool-wide ejection limits go here;
//!   per-candidate filters (such as the endpoint a target serves) go in [`Memory::admits`].
//! - [`Plan::admit`]: the instance's own permits, then the attempt is counted and handed out.
//!   Request-wide and fleet-wide budgets on attempts (a retry budget) go here.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::events::SkipReason;
use crate::instance::{Admit, InstanceState, Unavailable};
use crate::name::ProviderName;
use crate::random::Random;
use crate::routing::{AttemptTimeouts, EchelonPermit, InstanceIndex, PoolPermit};
use crate::time::Instant;

use super::attempt::{Attempt, AttemptRecord, AttemptResult, CancelOnDrop, Held, Position};
use super::label::AttemptLabel;
use super::trace::{Passed, TargetSkip};
use super::{Pending, Plan};

/// Times a pick is repeated when its permits were taken by a concurrent request in between.
const RACE_RETRIES: usize = 3;

/// What one request has learned so far that rules candidates out.
#[derive(Debug, Default)]
pub(super) struct Memory {
    /// Attempts handed out.
    pub(super) attempts: u32,
    /// Instances tried.
    pub(super) tried: Vec<InstanceIndex>,
    /// Retries of the same instance so far.
    pub(super) retries: Vec<(InstanceIndex, u32)>,
    /// Instances already waited for after a 429.
    pub(super) rate_waited: Vec<InstanceIndex>,
    /// `provider_failover`: providers that failed for this request.
    pub(super) failed_providers: Vec<ProviderName>,
    /// After a context-length error: the window candidates must exceed.
    pub(super) context_above: Option<u32>,
    /// The fleet-wide retry budget refused a retry.
    pub(super) retry_refused: bool,
}

impl Memory {
    /// Whether this request may still try `instance` (table index `index`), or why not.
    pub(super) fn admits(
        &self,
        index: InstanceIndex,
        instance: &InstanceState,
    ) -> Result<(), SkipReason> {
        if self.tried.contains(&index) {
            return Err(SkipReason::AlreadyTried);
        }
        let provider = &instance.id().model.provider;
        if self.failed_providers.contains(provider) {
            return Err(SkipReason::ProviderFailed {
                provider: provider.clone(),
            });
        }
        if let Some(above) = self.context_above {
            match instance.spec().context_window {
                Some(w) if w > above => {}
                window => {
                    return Err(SkipReason::ContextWindowTooSmall {
                        required_above: above,
                        window,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Where the walk through the route's stages is.
#[derive(Debug, Default)]
pub(super) struct Walk {
    /// The current stage.
    pub(super) stage: usize,
    /// Whether the current stage was entered (its cursor drawn).
    pub(super) entered: bool,
    /// The first rotating target this request tries in the current stage.
    pub(super) start: usize,
    /// Attempts per target of the current stage.
    pub(super) target_attempts: Vec<u32>,
    /// A retry of the same instance after a backoff.
    pub(super) retry: Option<Pending>,
    /// A retry of the same instance after a short Retry-After, once the stage has nothing else.
    pub(super) rate_wait: Option<Pending>,
}

/// The permits a target's attempt takes before its instance is picked: the pool's own limits and
/// the echelon's. Taken once per target and reused across picks that lose a race.
pub(super) struct StagePermits {
    pool: Option<PoolPermit>,
    echelon: Option<EchelonPermit>,
}

impl StagePermits {
    /// Gives back permits no attempt used (a pool permit refunds itself when dropped).
    fn release_unused(self, now: Instant) {
        if let Some(p) = self.echelon {
            p.release_unused(now);
        }
    }
}

/// Why a stage's permits were refused.
enum Refused {
    /// The pool is saturated: try the stage's next target.
    Target,
    /// The echelon refused: the stage cannot serve.
    Stage,
}

/// What one target of a stage gave.
#[allow(
    clippy::large_enum_variant,
    reason = "an attempt is moved out at once; boxing it would cost an allocation per attempt"
)]
enum FromTarget {
    Attempt(Attempt),
    Nothing,
    StageClosed,
}

impl Plan {
    pub(super) fn enter_stage(&mut self) {
        let stage = &self.route.plan.stages[self.walk.stage];
        self.walk.target_attempts.clear();
        self.walk.target_attempts.resize(stage.targets.len(), 0);
        self.walk.start = match &stage.echelon {
            Some(e) if stage.rotating > 1 => {
                (e.live.cursor.fetch_add(1, Ordering::Relaxed) % stage.rotating as u64) as usize
            }
            _ => 0,
        };
        self.walk.entered = true;
    }

    pub(super) fn leave_stage(&mut self) {
        let stages = &self.route.plan.stages;
        let stage = &stages[self.walk.stage];
        self.walk.stage += 1;
        self.walk.entered = false;
        self.walk.rate_wait = None;
        if let Some(next) = stages.get(self.walk.stage) {
            if let Some(e) = &stage.echelon {
                e.live.counters.fallback();
            }
            for target in stage.targets.iter() {
                target.counters.fallback();
            }
            self.context.sink.record(&crate::events::Event::Fallback {
                group: stage.group.clone(),
                from: stage.echelon.as_ref().map(|e| e.spec.name.clone()),
                to: next.label.to_string(),
            });
        }
    }

    /// The next attempt from the current stage, if it can give one.
    pub(super) fn select_in_stage(&mut self, now: Instant, rng: &dyn Random) -> Option<Attempt> {
        let s = self.walk.stage;
        if !self.echelon_gate(s, now) {
            return None;
        }
        let stage = &self.route.plan.stages[s];
        let n = stage.targets.len();
        if n == 0 {
            self.skip(s, Passed::Stage, SkipReason::NoInstances, now);
            return None;
        }
        let rotating = stage.rotating.min(n);
        for k in 0..n {
            // The echelon's own targets in rotated order, then the fallback pools in order.
            let t = if k < rotating {
                (self.walk.start + k) % rotating
            } else {
                k
            };
            match self.select_in_target(s, t, now, rng) {
                FromTarget::Attempt(attempt) => return Some(attempt),
                FromTarget::Nothing => {}
                FromTarget::StageClosed => return None,
            }
        }
        None
    }

    /// Whether the stage's echelon (if it has one) can take a request at `now`; a skip is noted
    /// when it cannot.
    fn echelon_gate(&mut self, s: usize, now: Instant) -> bool {
        let Some(e) = &self.route.plan.stages[s].echelon else {
            return true;
        };
        match e.availability(now) {
            Ok(()) => true,
            Err(u) => {
                e.live.counters.skip();
                self.skip(s, Passed::Echelon, SkipReason::Echelon(u), now);
                false
            }
        }
    }

    /// Whether target `t` of stage `s` may give an attempt at all, or why not.
    fn target_gate(&self, s: usize, t: usize) -> Result<(), (TargetSkip, SkipReason)> {
        let stage = &self.route.plan.stages[s];
        if stage.targets[t].members.is_empty() {
            return Err((TargetSkip::Empty, SkipReason::NoInstances));
        }
        if self.walk.target_attempts[t] >= stage.target_budget(t) {
            return Err((TargetSkip::Spent, SkipReason::AttemptsSpent));
        }
        Ok(())
    }

    fn select_in_target(
        &mut self,
        s: usize,
        t: usize,
        now: Instant,
        rng: &dyn Random,
    ) -> FromTarget {
        if let Err((why, reason)) = self.target_gate(s, t) {
            self.skip(s, Passed::Target(t, why), reason, now);
            return FromTarget::Nothing;
        }
        let mut permits = match self.stage_permits(s, t, now) {
            Ok(permits) => permits,
            Err(Refused::Target) => return FromTarget::Nothing,
            Err(Refused::Stage) => return FromTarget::StageClosed,
        };
        let mut raced: Vec<usize> = Vec::new();
        for _ in 0..RACE_RETRIES {
            let Some((member, panic)) = self.pick_member(s, t, &raced, now, rng) else {
                break;
            };
            let at = Position {
                stage: s,
                target: t,
                member,
            };
            let admit = Admit {
                panic,
                repeat: false,
            };
            match self.admit(at, admit, now, &mut permits) {
                Ok(attempt) => return FromTarget::Attempt(attempt),
                Err(u) => {
                    self.skip(
                        s,
                        Passed::Member { target: t, member },
                        SkipReason::Instance(u),
                        now,
                    );
                    raced.push(member);
                }
            }
        }
        permits.release_unused(now);
        FromTarget::Nothing
    }

    /// Takes the permits of target `t` of stage `s` that do not depend on the instance: the
    /// pool's own limits, then the echelon's. A refusal is noted as a skip.
    fn stage_permits(&mut self, s: usize, t: usize, now: Instant) -> Result<StagePermits, Refused> {
        let stage = &self.route.plan.stages[s];
        let pool = match stage.targets[t].acquire(now, self.context.tokens) {
            Ok(permit) => permit,
            Err(saturated) => {
                let reason = SkipReason::Pool(Unavailable::Saturated(saturated));
                self.skip(s, Passed::Target(t, TargetSkip::Saturated), reason, now);
                return Err(Refused::Target);
            }
        };
        // Another attempt of this request in the same echelon: its breaker already saw it.
        let repeat = self.walk.target_attempts.iter().any(|&n| n > 0);
        let echelon = match &stage.echelon {
            Some(e) => match e.acquire(now, repeat, &*self.context.sink) {
                Ok(permit) => Some(permit),
                Err(u) => {
                    self.skip(s, Passed::Echelon, SkipReason::Echelon(u), now);
                    return Err(Refused::Stage);
                }
            },
            None => None,
        };
        Ok(StagePermits { pool, echelon })
    }

    /// Asks target `t`'s rotation for a member (`raced`: members that lost their permits to a
    /// concurrent request during this pick); returns it and whether the panic policy chose it.
    fn pick_member(
        &mut self,
        s: usize,
        t: usize,
        raced: &[usize],
        now: Instant,
        rng: &dyn Random,
    ) -> Option<(usize, bool)> {
        let pool = &self.route.plan.stages[s].targets[t];
        let memory = &self.memory;
        let tokens = self.context.tokens;
        let mut skips: Vec<(usize, SkipReason)> = Vec::new();
        let picked = pool.rotation.pick_with_panic(
            &pool.members,
            now,
            rng,
            pool.max_ejection_percent,
            &mut |i, panic| {
                if raced.contains(&i) {
                    return Err(SkipReason::AlreadyTried);
                }
                let m = &pool.members[i];
                memory.admits(pool.member_index[i], m)?;
                m.availability(now, tokens, panic)
                    .map_err(SkipReason::Instance)
            },
            &mut |i, reason| skips.push((i, reason)),
        );
        for (member, reason) in skips {
            self.skip(s, Passed::Member { target: t, member }, reason, now);
        }
        picked
    }

    /// Retries a member after a wait; `None` (with a skip noted) when it can no longer serve.
    pub(super) fn retry_member(&mut self, p: Pending, now: Instant) -> Option<Attempt> {
        let mut permits = self.stage_permits(p.at.stage, p.at.target, now).ok()?;
        let admit = Admit {
            panic: false,
            repeat: true,
        };
        match self.admit(p.at, admit, now, &mut permits) {
            Ok(attempt) => Some(attempt),
            Err(u) => {
                permits.release_unused(now);
                let passed = Passed::Retried {
                    target: p.at.target,
                    member: p.at.member,
                };
                self.skip(p.at.stage, passed, SkipReason::Instance(u), now);
                None
            }
        }
    }

    /// Takes the instance's permits and hands out the attempt, with the stage's `permits`; on
    /// refusal they stay with the caller for the next pick.
    fn admit(
        &mut self,
        at: Position,
        admit: Admit,
        now: Instant,
        permits: &mut StagePermits,
    ) -> Result<Attempt, Unavailable> {
        let stage = &self.route.plan.stages[at.stage];
        let pool = &stage.targets[at.target];
        let instance = &pool.members[at.member];
        let permit = instance.acquire_as(now, self.context.tokens, admit, &*self.context.sink)?;
        let panic = admit.panic;
        let echelon = match (&stage.echelon, permits.echelon.take()) {
            (Some(e), Some(mut p)) => {
                p.mark_used();
                Some((Arc::clone(e), p))
            }
            _ => None,
        };
        let memory = &mut self.memory;
        memory.attempts += 1;
        if let Some(count) = self.walk.target_attempts.get_mut(at.target) {
            *count += 1;
        }
        let index = pool.member_index[at.member];
        if !memory.tried.contains(&index) {
            memory.tried.push(index);
        }
        pool.counters.attempt();
        if let Some(c) = &stage.group_counters {
            c.attempt();
        }
        if let Some((e, _)) = &echelon {
            e.live.counters.attempt();
        }
        let label = AttemptLabel {
            stage: stage.name.clone(),
            instance: instance.id().clone(),
        };
        let remaining = self.context.deadline - now;
        let total = stage.timeouts.total.min(remaining);
        let number = memory.attempts;
        self.log.push(AttemptRecord {
            number,
            label: label.clone(),
            instance: instance.id().clone(),
            result: AttemptResult::Pending,
            duration: None,
        });
        Ok(Attempt {
            number,
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
                _pool_permit: permits.pool.take().map(|mut p| {
                    p.mark_used();
                    p
                }),
                echelon,
                pool: Arc::clone(pool),
                group_counters: stage.group_counters.clone(),
                at,
            },
        })
    }
}
