//! Echelons and task groups at run time: each echelon's breaker, limits and counters (the part
//! that outlives a reload) and the permits an attempt holds on them.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::breaker::{Admission, BreakerPermit, BreakerTransition, CircuitBreaker};
use crate::error::ErrorClass;
use crate::events::{BreakerScope, Event, EventSink};
use crate::instance::Unavailable;
use crate::limit::{ConcurrencyLimiter, ConcurrencyPermit, LimitKind, RateLimiter};
use crate::name::GroupName;
use crate::random::Random;
use crate::spec::{BreakerPolicy, EchelonSpec, RateAlgorithm, TaskGroupSpec};
use crate::stats::Counters;
use crate::time::Instant;

/// The settings an echelon's live state is built for; a change means fresh state on reload.
pub(crate) type EchelonKey = (BreakerPolicy, Option<u32>, Option<u32>, RateAlgorithm);

/// The part of an echelon that outlives a reload.
#[derive(Debug)]
pub(crate) struct EchelonLive {
    pub(crate) breaker: CircuitBreaker,
    pub(crate) concurrency: ConcurrencyLimiter,
    pub(crate) rpm: Option<RateLimiter>,
    pub(crate) counters: Counters,
    /// Rotates the first target tried across requests.
    pub(crate) cursor: AtomicU64,
    /// The settings the live state was built for.
    pub(crate) key: EchelonKey,
}

impl EchelonLive {
    /// What live state built for `echelon` of a group with `breaker` is keyed by.
    pub(crate) fn key(breaker: BreakerPolicy, echelon: &EchelonSpec) -> EchelonKey {
        (
            breaker,
            echelon.concurrency_limit,
            echelon.rpm_limit,
            RateAlgorithm::TokenBucket,
        )
    }

    /// Fresh live state for `echelon` of a group with `breaker`.
    pub(crate) fn new(breaker: BreakerPolicy, echelon: &EchelonSpec, now: Instant) -> Self {
        Self {
            breaker: CircuitBreaker::new(breaker),
            concurrency: ConcurrencyLimiter::new(echelon.concurrency_limit),
            rpm: echelon
                .rpm_limit
                .map(|n| RateLimiter::new(LimitKind::Requests, n, RateAlgorithm::TokenBucket, now)),
            counters: Counters::default(),
            cursor: AtomicU64::new(0),
            key: Self::key(breaker, echelon),
        }
    }
}

/// Live echelon: its spec and shared live state.
#[derive(Debug)]
pub(crate) struct EchelonRuntime {
    pub(crate) group: GroupName,
    pub(crate) spec: EchelonSpec,
    pub(crate) live: Arc<EchelonLive>,
}

/// Permits one attempt holds on an echelon.
#[derive(Debug)]
pub(crate) struct EchelonPermit {
    breaker: BreakerPermit,
    _slot: ConcurrencyPermit,
    live: Arc<EchelonLive>,
    used: bool,
}

impl EchelonPermit {
    /// Marks the permit as used by an attempt (its rpm charge stands).
    pub(crate) fn mark_used(&mut self) {
        self.used = true;
    }

    /// Whether the attempt is a half-open trial of the echelon's breaker.
    pub(crate) fn is_trial(&self) -> bool {
        self.breaker.is_trial()
    }

    /// Settles the echelon's breaker with the attempt's result (`None`: success).
    pub(crate) fn settle(
        self,
        failure: Option<ErrorClass>,
        now: Instant,
        rng: &dyn Random,
    ) -> Option<BreakerTransition> {
        match failure {
            None => self.breaker.success(now, rng),
            Some(class) => self.breaker.failure(class, now, rng),
        }
    }

    /// Gives back a permit no attempt used, refunding its rpm charge.
    pub(crate) fn release_unused(self, now: Instant) {
        if !self.used
            && let Some(rpm) = &self.live.rpm
        {
            rpm.adjust(now, -1);
        }
    }
}

impl EchelonRuntime {
    /// What its breaker guards, for events.
    pub(crate) fn scope(&self) -> BreakerScope {
        BreakerScope::Echelon {
            group: self.group.clone(),
            echelon: self.spec.name.clone(),
        }
    }

    /// Whether it can take a request at `now`, or why not; takes nothing.
    pub(crate) fn availability(&self, now: Instant) -> Result<(), Unavailable> {
        self.live.breaker.check(now)?;
        self.live
            .concurrency
            .check()
            .map_err(Unavailable::Saturated)?;
        if let Some(rpm) = &self.live.rpm {
            rpm.check(now, 1).map_err(Unavailable::Saturated)?;
        }
        Ok(())
    }

    /// Takes its permits for one attempt; a breaker transition caused by the admission (open →
    /// half-open) goes to `sink`.
    /// `repeat`: the request already made an attempt in this echelon (see
    /// [`crate::breaker::Admission::repeat`]).
    pub(crate) fn acquire(
        &self,
        now: Instant,
        repeat: bool,
        sink: &dyn EventSink,
    ) -> Result<EchelonPermit, Unavailable> {
        let slot = self
            .live
            .concurrency
            .try_acquire()
            .map_err(Unavailable::Saturated)?;
        let admission = Admission {
            repeat,
            forced: false,
        };
        let breaker = self.live.breaker.try_acquire_as(now, admission)?;
        if let Some(rpm) = &self.live.rpm {
            rpm.try_acquire(now, 1).map_err(Unavailable::Saturated)?;
        }
        if let Some(t) = breaker.transition() {
            self.report(t, sink);
        }
        Ok(EchelonPermit {
            breaker,
            _slot: slot,
            live: Arc::clone(&self.live),
            used: false,
        })
    }

    /// Reports a transition of its breaker.
    pub(crate) fn report(&self, t: BreakerTransition, sink: &dyn EventSink) {
        sink.record(&Event::Breaker {
            scope: self.scope(),
            from: t.from,
            to: t.to,
            open_until: t.open_until,
        });
    }
}

/// Live task group.
#[derive(Debug)]
pub(crate) struct GroupRuntime {
    pub(crate) spec: TaskGroupSpec,
    /// Echelons in ascending priority.
    pub(crate) echelons: Vec<Arc<EchelonRuntime>>,
    pub(crate) counters: Arc<Counters>,
}
