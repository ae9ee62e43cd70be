//! Events the domain reports as it routes: breaker and health transitions, cooldowns, dead keys,
//! skipped candidates and fallbacks, delivered through the [`EventSink`] port.
//!
//! Metrics, trace events and the demo's live view are all built from these. A sink is called on
//! the request path, so it must be cheap and never block (count, or push to a bounded channel and
//! drop on overflow).

use core::time::Duration;

use crate::breaker::BreakerState;
use crate::error::ErrorClass;
use crate::health::HealthState;
use crate::instance::Unavailable;
use crate::name::ProviderName;
use crate::name::{EchelonName, GroupName, InstanceId};
use crate::time::Instant;

/// Why a candidate was passed over. Every skip in a plan's trace, in `explain` and in
/// [`Event::Skipped`] carries one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "snake_case")
)]
pub enum SkipReason {
    /// The instance cannot take a request now.
    #[error("instance {0}")]
    Instance(Unavailable),
    /// The echelon as a whole cannot take a request now (its breaker or limits).
    #[error("echelon {0}")]
    Echelon(Unavailable),
    /// The pool as a whole is at its own limits (`[rate_limit]`, `[concurrency]`).
    #[error("pool {0}")]
    Pool(Unavailable),
    /// The instance was already tried by this request.
    #[error("already tried by this request")]
    AlreadyTried,
    /// `provider_failover`: this provider already failed for this request.
    #[error("provider {provider} already failed for this request")]
    ProviderFailed {
        /// The provider.
        provider: ProviderName,
    },
    /// After a context-length error, only larger context windows may help.
    #[error("context window too small (needs more than {required_above} tokens)")]
    ContextWindowTooSmall {
        /// The window that was too small; candidates need a larger one.
        required_above: u32,
        /// This candidate's window, when known.
        window: Option<u32>,
    },
    /// The target's share of attempts for this request is spent.
    #[error("attempts for this target spent")]
    AttemptsSpent,
    /// The fallback target is already part of this plan (a reference cycle).
    #[error("already part of this plan (fallback cycle)")]
    Cycle,
    /// The target has no instances (an unknown model or an empty pool).
    #[error("no instances")]
    NoInstances,
}

impl SkipReason {
    /// The stable snake_case name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Instance(u) | Self::Echelon(u) | Self::Pool(u) => u.as_str(),
            Self::AlreadyTried => "already_tried",
            Self::ProviderFailed { .. } => "provider_failed",
            Self::ContextWindowTooSmall { .. } => "context_window_too_small",
            Self::AttemptsSpent => "attempts_spent",
            Self::Cycle => "cycle",
            Self::NoInstances => "no_instances",
        }
    }
}

/// What a breaker guards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum BreakerScope {
    /// One instance (key × model).
    Instance(InstanceId),
    /// One echelon of a task group.
    Echelon {
        /// The group.
        group: GroupName,
        /// The echelon.
        echelon: EchelonName,
    },
}

impl core::fmt::Display for BreakerScope {
    /// `provider/model#k` for an instance, `group › echelon` for an echelon (as in stage labels).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Instance(id) => write!(f, "{id}"),
            Self::Echelon { group, echelon } => write!(f, "{group} › {echelon}"),
        }
    }
}

/// Something that happened while routing.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A breaker changed state.
    Breaker {
        /// Whose breaker.
        scope: BreakerScope,
        /// Before.
        from: BreakerState,
        /// After.
        to: BreakerState,
        /// When an opened breaker admits trials.
        open_until: Option<Instant>,
    },
    /// An instance's health changed.
    Health {
        /// The instance.
        instance: InstanceId,
        /// Before.
        from: HealthState,
        /// After.
        to: HealthState,
    },
    /// An instance was rate limited and rests until `until` (deadlines only move later).
    Cooldown {
        /// The instance.
        instance: InstanceId,
        /// The end of the cooldown after this event.
        until: Instant,
        /// The wait the upstream asked for, if it said.
        retry_after: Option<Duration>,
    },
    /// An instance's key was refused (401/403) and is dead until a probe or reload.
    KeyDead {
        /// The instance.
        instance: InstanceId,
    },
    /// A dead key answered a probe and is back.
    KeyRevived {
        /// The instance.
        instance: InstanceId,
    },
    /// A candidate was passed over.
    Skipped {
        /// Group of the stage, if any.
        group: Option<GroupName>,
        /// Echelon of the stage, if any.
        echelon: Option<EchelonName>,
        /// The instance, when an instance (not a whole echelon) was skipped.
        instance: Option<InstanceId>,
        /// Why.
        reason: SkipReason,
    },
    /// A request moved on from one stage (echelon, pool, group) to the next.
    Fallback {
        /// Group it left, if any.
        group: Option<GroupName>,
        /// Echelon it left, if any.
        from: Option<EchelonName>,
        /// The label of the stage it moves to.
        to: String,
    },
    /// An upstream attempt ended.
    AttemptFinished {
        /// The instance.
        instance: InstanceId,
        /// `None` on success, the failure's class otherwise.
        class: Option<ErrorClass>,
        /// How long it took.
        latency: Duration,
    },
}

/// The event and metrics sink port. Called synchronously on the request path: implementations
/// must be cheap and never block.
pub trait EventSink: Send + Sync {
    /// Takes one event.
    fn record(&self, event: &Event);
}

/// A sink that drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSink;

impl EventSink for NoopSink {
    fn record(&self, _event: &Event) {}
}

/// A sink that passes every event to each of its sinks, in order (metrics, spans, a history).
pub struct FanOut {
    sinks: Vec<std::sync::Arc<dyn EventSink>>,
}

impl core::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FanOut")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl FanOut {
    /// A sink feeding `sinks`.
    pub fn new(sinks: Vec<std::sync::Arc<dyn EventSink>>) -> Self {
        Self { sinks }
    }
}

impl EventSink for FanOut {
    fn record(&self, event: &Event) {
        for sink in &self.sinks {
            sink.record(event);
        }
    }
}

/// A sink that keeps every event in memory; for tests, examples and `route explain`.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: std::sync::Mutex<Vec<Event>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes every event recorded so far.
    pub fn take(&self) -> Vec<Event> {
        core::mem::take(
            &mut *self
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl EventSink for MemorySink {
    fn record(&self, event: &Event) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::name::ModelRef;

    #[test]
    fn fan_out_feeds_every_sink_in_order() {
        let a = Arc::new(MemorySink::new());
        let b = Arc::new(MemorySink::new());
        let fan = FanOut::new(vec![a.clone(), b.clone()]);
        let instance = InstanceId::new(ModelRef::new("openai", "gpt-4o"), 0);
        fan.record(&Event::KeyDead { instance });
        assert_eq!(a.take().len(), 1);
        assert_eq!(b.take().len(), 1);
    }
}
