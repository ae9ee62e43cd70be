//! The dry run of a route: every candidate and whether it is in or out, with the reason, and
//! what a request would get at once when nothing can serve.

use core::time::Duration;

use crate::breaker::BreakerState;
use crate::events::SkipReason;
use crate::health::HealthState;
use crate::instance::Unavailable;
use crate::name::InstanceId;
use crate::routing::{PoolLabel, Route};
use crate::spec::RotationStrategy;
use crate::time::Instant;

use super::verdict::{Verdict, VerdictFacts};

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

/// A dry run of `route` at `now` (see [`crate::routing::RoutingTable::explain`]).
pub(crate) fn explain(route: &Route, now: Instant) -> Explanation {
    let mut stages = Vec::new();
    let mut any_in = false;
    let mut facts = VerdictFacts::default();
    for stage in route.plan.stages.iter() {
        let echelon_skip = stage
            .echelon
            .as_ref()
            .and_then(|e| e.availability(now).err());
        if let Some(u) = &echelon_skip {
            facts.note(u, now);
        }
        let mut targets = Vec::new();
        for (t, pool) in stage.targets.iter().enumerate() {
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
                        Some(u) => facts.note(u, now),
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
                attempts: stage.target_budget(t),
                candidates,
            });
        }
        stages.push(StageExplanation {
            label: stage.label.to_string(),
            echelon_skip: echelon_skip.map(SkipReason::Echelon),
            targets,
        });
    }
    // With no attempt made, the facts give a 429 (rate limited or saturated) or a 503 verdict.
    let verdict = (!any_in).then(|| {
        let verdict = facts.verdict(0, now);
        let status = match verdict {
            Verdict::RateLimited { .. } => 429,
            _ => 503,
        };
        ExplainedVerdict {
            status,
            retry_after: verdict.retry_after(),
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
