//! The plan's trace: every candidate passed over, once per stage, with its reason.

use std::collections::HashSet;

use crate::events::{Event, SkipReason};
use crate::instance::SharedInstance;
use crate::name::InstanceId;
use crate::routing::{InstanceIndex, PoolIndex, Stage};
use crate::time::Instant;

use super::Plan;

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

/// Why a whole target of a stage was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum TargetSkip {
    /// It has no instances.
    Empty,
    /// Its attempts for this request are spent.
    Spent,
    /// The pool's own limits are saturated.
    Saturated,
}

/// What was passed over, by position in the current stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Passed {
    /// The stage has no targets at all.
    Stage,
    /// The stage's echelon as a whole.
    Echelon,
    /// One target (pool) of the stage.
    Target(usize, TargetSkip),
    /// A member of a target, while picking.
    Member {
        /// The target.
        target: usize,
        /// The member within the target.
        member: usize,
    },
    /// A member of a target, when its retry (after a backoff or a Retry-After) came due.
    Retried {
        /// The target.
        target: usize,
        /// The member within the target.
        member: usize,
    },
}

/// The identity a skip is recorded once under, within one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SkipKey {
    Stage,
    Echelon,
    Target(PoolIndex, TargetSkip),
    Member(InstanceIndex),
    Retried(InstanceIndex),
}

impl Passed {
    /// The key it is recorded under and the instance it names, if any.
    fn resolve(self, stage: &Stage) -> (SkipKey, Option<&SharedInstance>) {
        match self {
            Self::Stage => (SkipKey::Stage, None),
            Self::Echelon => (SkipKey::Echelon, None),
            Self::Target(t, why) => (SkipKey::Target(stage.targets[t].index, why), None),
            Self::Member { target, member } => {
                let pool = &stage.targets[target];
                (
                    SkipKey::Member(pool.member_index[member]),
                    Some(&pool.members[member]),
                )
            }
            Self::Retried { target, member } => {
                let pool = &stage.targets[target];
                (
                    SkipKey::Retried(pool.member_index[member]),
                    Some(&pool.members[member]),
                )
            }
        }
    }
}

/// Skips so far, and which ones were already noted.
#[derive(Debug, Default)]
pub(super) struct Trace {
    seen: HashSet<(usize, SkipKey)>,
    pub(super) skips: Vec<Skip>,
}

impl Plan {
    /// Notes a skipped candidate once per stage: trace, event, counters, verdict facts.
    pub(super) fn skip(&mut self, stage: usize, passed: Passed, reason: SkipReason, now: Instant) {
        let s = &self.route.plan.stages[stage];
        let (key, instance) = passed.resolve(s);
        if !self.trace.seen.insert((stage, key)) {
            return;
        }
        if let SkipReason::Instance(u) | SkipReason::Echelon(u) = &reason {
            self.facts.note(u, now);
        }
        if let Some(i) = instance {
            i.counters().skip();
        }
        self.context.sink.record(&Event::Skipped {
            group: s.group.clone(),
            echelon: s.echelon.as_ref().map(|e| e.spec.name.clone()),
            instance: instance.map(|i| i.id().clone()),
            reason: reason.clone(),
        });
        self.trace.skips.push(Skip {
            stage: s.label.to_string(),
            instance: instance.map(|i| i.id().clone()),
            reason,
        });
    }
}
