//! A bounded recent history of fallbacks and breaker transitions with their reasons, kept by an
//! [`EventSink`] decorator for `GET /admin/status`.
//!
//! The domain reports a fallback as "left echelon A for stage B" and a breaker transition as
//! "closed → open"; neither event says why. The history pieces the reason together from the
//! events around it: the skip reasons recorded for a stage since its last fallback, and the
//! class of the last failed attempt of an instance. Under concurrent requests these are the
//! most recent facts about that stage or instance, not necessarily those of the very request
//! that moved on, which is what an operator reading a status page wants to know anyway.
//!
//! The decorator takes its lock only for the events it keeps or reasons from (failed attempts,
//! skips, fallbacks, breaker transitions), never for successful attempts, and the lock is held
//! for a few pushes at most.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use echelon_domain::breaker::BreakerState;
use echelon_domain::error::ErrorClass;
use echelon_domain::events::{BreakerScope, Event, EventSink};
use echelon_domain::name::{EchelonName, GroupName, InstanceId};
use echelon_domain::time::{Clock, Instant};
use serde::Serialize;

/// How many entries the history keeps by default.
pub const DEFAULT_HISTORY: usize = 100;

/// Most distinct skip reasons remembered per stage between two fallbacks.
const MAX_REASONS_PER_STAGE: usize = 8;

/// Most stages and instances whose recent reasons are remembered; beyond it the oldest facts are
/// forgotten, so a configuration with many instances cannot grow the history's memory.
const MAX_REMEMBERED: usize = 4096;

/// One remembered event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryEntry {
    /// A request moved on from one stage to the next.
    Fallback {
        /// When, on the engine's clock.
        at: Instant,
        /// The group it left, if any.
        group: Option<GroupName>,
        /// The echelon it left, if any.
        from: Option<EchelonName>,
        /// The label of the stage it moved to.
        to: String,
        /// Why, as far as the events tell.
        reason: String,
    },
    /// A breaker changed state.
    Breaker {
        /// When, on the engine's clock.
        at: Instant,
        /// Whose breaker: an instance id, or `group › echelon`.
        scope: String,
        /// The state before.
        from: BreakerState,
        /// The state after.
        to: BreakerState,
        /// When an opened breaker admits trials.
        open_until: Option<Instant>,
        /// Why, as far as the events tell.
        reason: String,
    },
}

impl HistoryEntry {
    /// When it happened.
    pub fn at(&self) -> Instant {
        match self {
            Self::Fallback { at, .. } | Self::Breaker { at, .. } => *at,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    entries: VecDeque<HistoryEntry>,
    /// Skip reasons per `(group, echelon)` stage since its last fallback.
    stage_reasons: HashMap<(Option<GroupName>, Option<EchelonName>), Vec<&'static str>>,
    /// The class of each instance's last failed attempt.
    last_failure: HashMap<InstanceId, ErrorClass>,
}

/// An [`EventSink`] that keeps the last fallbacks and breaker transitions, then passes every
/// event on to the next sink.
pub struct EventHistory {
    next: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    capacity: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for EventHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHistory")
            .field("capacity", &self.capacity)
            .field("entries", &self.lock().entries.len())
            .finish_non_exhaustive()
    }
}

impl EventHistory {
    /// A history of at most `capacity` entries (at least one) in front of `next`, stamping
    /// entries with `clock` (the engine's clock, so times compare with snapshot instants).
    pub fn new(next: Arc<dyn EventSink>, clock: Arc<dyn Clock>, capacity: usize) -> Self {
        Self {
            next,
            clock,
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// The entries kept, oldest first.
    pub fn entries(&self) -> Vec<HistoryEntry> {
        self.lock().entries.iter().cloned().collect()
    }

    /// The most recent `n` entries, newest first.
    pub fn latest(&self, n: usize) -> Vec<HistoryEntry> {
        self.lock().entries.iter().rev().take(n).cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, state: &mut State, entry: HistoryEntry) {
        if state.entries.len() == self.capacity {
            state.entries.pop_front();
        }
        state.entries.push_back(entry);
    }

    fn keep(&self, event: &Event) {
        match event {
            Event::AttemptFinished {
                instance,
                class: Some(class),
                ..
            } => {
                let mut state = self.lock();
                if state.last_failure.len() >= MAX_REMEMBERED
                    && !state.last_failure.contains_key(instance)
                {
                    state.last_failure.clear();
                }
                state.last_failure.insert(instance.clone(), *class);
            }
            Event::Skipped {
                group,
                echelon,
                reason,
                ..
            } => {
                let mut state = self.lock();
                let key = (group.clone(), echelon.clone());
                if state.stage_reasons.len() >= MAX_REMEMBERED
                    && !state.stage_reasons.contains_key(&key)
                {
                    state.stage_reasons.clear();
                }
                let reasons = state.stage_reasons.entry(key).or_default();
                let name = reason.as_str();
                if !reasons.contains(&name) && reasons.len() < MAX_REASONS_PER_STAGE {
                    reasons.push(name);
                }
            }
            Event::Fallback { group, from, to } => {
                let at = self.clock.now();
                let mut state = self.lock();
                let reasons = state
                    .stage_reasons
                    .remove(&(group.clone(), from.clone()))
                    .unwrap_or_default();
                let reason = if reasons.is_empty() {
                    "attempts of the stage failed or were spent".to_owned()
                } else {
                    format!("candidates skipped: {}", reasons.join(", "))
                };
                let entry = HistoryEntry::Fallback {
                    at,
                    group: group.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    reason,
                };
                self.push(&mut state, entry);
            }
            Event::Breaker {
                scope,
                from,
                to,
                open_until,
            } => {
                let at = self.clock.now();
                let mut state = self.lock();
                let last_failure = match scope {
                    BreakerScope::Instance(id) => state.last_failure.get(id).copied(),
                    BreakerScope::Echelon { .. } => None,
                };
                let entry = HistoryEntry::Breaker {
                    at,
                    scope: scope.to_string(),
                    from: *from,
                    to: *to,
                    open_until: *open_until,
                    reason: breaker_reason(*from, *to, last_failure),
                };
                self.push(&mut state, entry);
            }
            _ => {}
        }
    }
}

impl EventSink for EventHistory {
    fn record(&self, event: &Event) {
        self.keep(event);
        self.next.record(event);
    }
}

fn breaker_reason(from: BreakerState, to: BreakerState, last: Option<ErrorClass>) -> String {
    let failure = last.map_or_else(String::new, |c| format!(" (last failure: {c})"));
    match (from, to) {
        (BreakerState::HalfOpen, BreakerState::Open) => {
            format!("a half-open trial failed{failure}")
        }
        (_, BreakerState::Open) => format!("failures reached the breaker's threshold{failure}"),
        (_, BreakerState::HalfOpen) => "recovery time passed; admitting trial calls".to_owned(),
        (_, BreakerState::Closed) => "trial calls succeeded".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use echelon_domain::events::{MemorySink, SkipReason};
    use echelon_domain::instance::Unavailable;
    use echelon_domain::name::ModelRef;
    use echelon_domain::time::ManualClock;

    use super::*;

    fn id(k: u16) -> InstanceId {
        InstanceId::new(ModelRef::new("openai", "gpt-4o"), k)
    }

    fn history(capacity: usize) -> (EventHistory, Arc<MemorySink>, Arc<ManualClock>) {
        let next = Arc::new(MemorySink::new());
        let clock = Arc::new(ManualClock::new());
        let history = EventHistory::new(next.clone(), clock.clone(), capacity);
        (history, next, clock)
    }

    fn skipped(group: &str, echelon: &str, reason: SkipReason) -> Event {
        Event::Skipped {
            group: Some(GroupName::new(group)),
            echelon: Some(EchelonName::new(echelon)),
            instance: Some(id(0)),
            reason,
        }
    }

    fn fallback(group: &str, from: &str) -> Event {
        Event::Fallback {
            group: Some(GroupName::new(group)),
            from: Some(EchelonName::new(from)),
            to: format!("{group} › echelon2"),
        }
    }

    #[test]
    fn fallback_reason_lists_the_stage_skips_once_each() {
        let (history, next, clock) = history(10);
        let cooling = SkipReason::Instance(Unavailable::CoolingDown {
            until: Instant::from_elapsed(Duration::from_secs(9)),
        });
        history.record(&skipped("chat", "echelon1", cooling.clone()));
        history.record(&skipped("chat", "echelon1", cooling));
        history.record(&skipped("chat", "echelon1", SkipReason::AttemptsSpent));
        history.record(&skipped("other", "echelon1", SkipReason::Cycle));
        clock.advance(Duration::from_secs(2));
        history.record(&fallback("chat", "echelon1"));
        // A second fallback of the same stage has no skips of its own any more.
        history.record(&fallback("chat", "echelon1"));

        let entries = history.entries();
        assert_eq!(entries.len(), 2);
        let HistoryEntry::Fallback { at, reason, to, .. } = &entries[0] else {
            panic!("expected a fallback, got {:?}", entries[0]);
        };
        assert_eq!(*at, Instant::from_elapsed(Duration::from_secs(2)));
        assert_eq!(reason, "candidates skipped: cooling_down, attempts_spent");
        assert_eq!(to, "chat › echelon2");
        let HistoryEntry::Fallback { reason, .. } = &entries[1] else {
            panic!("expected a fallback");
        };
        assert_eq!(reason, "attempts of the stage failed or were spent");
        // Every event went on to the next sink.
        assert_eq!(next.take().len(), 6);
    }

    #[test]
    fn breaker_reason_names_the_last_failure_of_the_instance() {
        let (history, _, _) = history(10);
        history.record(&Event::AttemptFinished {
            instance: id(1),
            class: Some(ErrorClass::Timeout),
            latency: Duration::from_secs(1),
        });
        history.record(&Event::AttemptFinished {
            instance: id(1),
            class: None,
            latency: Duration::from_secs(1),
        });
        history.record(&Event::Breaker {
            scope: BreakerScope::Instance(id(1)),
            from: BreakerState::Closed,
            to: BreakerState::Open,
            open_until: Some(Instant::from_elapsed(Duration::from_secs(30))),
        });
        history.record(&Event::Breaker {
            scope: BreakerScope::Echelon {
                group: GroupName::new("chat"),
                echelon: EchelonName::new("echelon1"),
            },
            from: BreakerState::Open,
            to: BreakerState::HalfOpen,
            open_until: None,
        });
        let entries = history.entries();
        let HistoryEntry::Breaker { scope, reason, .. } = &entries[0] else {
            panic!("expected a breaker entry");
        };
        assert_eq!(scope, "openai/gpt-4o#1");
        assert_eq!(
            reason,
            "failures reached the breaker's threshold (last failure: timeout)"
        );
        let HistoryEntry::Breaker { scope, reason, .. } = &entries[1] else {
            panic!("expected a breaker entry");
        };
        assert_eq!(scope, "chat › echelon1");
        assert_eq!(reason, "recovery time passed; admitting trial calls");
    }

    #[test]
    fn keeps_only_the_most_recent_entries() {
        let (history, _, clock) = history(DEFAULT_HISTORY);
        for _ in 0..250 {
            clock.advance(Duration::from_millis(10));
            history.record(&fallback("chat", "echelon1"));
        }
        let entries = history.entries();
        assert_eq!(entries.len(), DEFAULT_HISTORY);
        assert_eq!(
            entries.last().map(HistoryEntry::at),
            Some(Instant::from_elapsed(Duration::from_millis(2500)))
        );
        assert_eq!(
            entries.first().map(HistoryEntry::at),
            Some(Instant::from_elapsed(Duration::from_millis(1510)))
        );
        let latest = history.latest(3);
        assert_eq!(latest.len(), 3);
        assert!(latest[0].at() > latest[1].at());
    }
}
