//! A pool at run time: its rotation over shared instance states and its own limits.

use core::fmt;
use std::sync::Arc;

use crate::instance::SharedInstance;
use crate::limit::{ConcurrencyLimiter, ConcurrencyPermit, LimitKind, RateLimiter, Saturated};
use crate::name::{ModelRef, PoolName};
use crate::rotation::Rotation;
use crate::spec::{Limits, RateAlgorithm};
use crate::stats::Counters;
use crate::time::Instant;

use super::instances::InstanceIndex;

/// A pool as the planner sees it: a named pool, or the implicit pool of every key of a model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum PoolLabel {
    /// `pool:NAME`.
    Pool(PoolName),
    /// `provider/model`: one instance per key.
    Model(ModelRef),
}

impl fmt::Display for PoolLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pool(name) => write!(f, "pool:{name}"),
            Self::Model(model) => write!(f, "{model}"),
        }
    }
}

/// A pool's position in its table (named pools, then the implicit pools of models): its identity
/// within one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolIndex(pub(crate) u32);

/// Live pool: its rotation over shared instance states.
#[derive(Debug)]
pub(crate) struct PoolRuntime {
    pub(crate) index: PoolIndex,
    pub(crate) label: PoolLabel,
    pub(crate) rotation: Rotation,
    /// Live states in rotation order (what [`Rotation::pick`] walks).
    pub(crate) members: Box<[SharedInstance]>,
    /// The table index of each member, in the same order.
    pub(crate) member_index: Box<[InstanceIndex]>,
    /// Instances tried per request before the pool gives up.
    pub(crate) max_attempts: u32,
    /// Most of its members (in percent) breakers and health may eject at once.
    pub(crate) max_ejection_percent: u32,
    pub(crate) counters: Arc<Counters>,
    /// The pool's own limits (`[rate_limit]`, `[concurrency]`), on top of each instance's.
    pub(crate) limits: Option<Arc<PoolLimits>>,
}

/// A pool's own rpm, tpm and concurrency limits; outlives a reload while they are unchanged.
#[derive(Debug)]
pub(crate) struct PoolLimits {
    concurrency: ConcurrencyLimiter,
    rpm: Option<RateLimiter>,
    tpm: Option<RateLimiter>,
    /// The settings the limiters were built for.
    pub(crate) key: (Limits, RateAlgorithm),
}

impl PoolLimits {
    /// The limiters of `limits`; `None` when the pool has none of its own.
    pub(crate) fn new(limits: Limits, algorithm: RateAlgorithm, now: Instant) -> Option<Arc<Self>> {
        if limits == Limits::default() {
            return None;
        }
        Some(Arc::new(Self {
            concurrency: ConcurrencyLimiter::new(limits.max_concurrency),
            rpm: limits
                .rpm
                .map(|n| RateLimiter::new(LimitKind::Requests, n, algorithm, now)),
            tpm: limits
                .tpm
                .map(|n| RateLimiter::new(LimitKind::Tokens, n, algorithm, now)),
            key: (limits, algorithm),
        }))
    }
}

/// Permits one attempt holds on a pool's own limits.
#[derive(Debug)]
pub(crate) struct PoolPermit {
    _slot: ConcurrencyPermit,
    limits: Arc<PoolLimits>,
    tokens: u32,
    at: Instant,
    used: bool,
}

impl PoolPermit {
    /// Marks the permit as used by an attempt (its rpm and tpm charges stand).
    pub(crate) fn mark_used(&mut self) {
        self.used = true;
    }
}

impl Drop for PoolPermit {
    fn drop(&mut self) {
        // A permit no attempt used gives its rate charges back; the concurrency slot is
        // released by its own guard either way.
        if self.used {
            return;
        }
        if let Some(rpm) = &self.limits.rpm {
            rpm.adjust(self.at, -1);
        }
        if let Some(tpm) = &self.limits.tpm {
            tpm.adjust(self.at, -i64::from(self.tokens));
        }
    }
}

impl PoolRuntime {
    /// Takes the pool's own permits for one attempt of `tokens` estimated tokens.
    pub(crate) fn acquire(
        &self,
        now: Instant,
        tokens: u32,
    ) -> Result<Option<PoolPermit>, Saturated> {
        let Some(limits) = &self.limits else {
            return Ok(None);
        };
        let slot = limits.concurrency.try_acquire()?;
        if let Some(rpm) = &limits.rpm {
            rpm.try_acquire(now, 1)?;
        }
        if let Some(tpm) = &limits.tpm
            && let Err(saturated) = tpm.try_acquire(now, tokens)
        {
            if let Some(rpm) = &limits.rpm {
                rpm.adjust(now, -1);
            }
            return Err(saturated);
        }
        Ok(Some(PoolPermit {
            _slot: slot,
            limits: Arc::clone(limits),
            tokens,
            at: now,
            used: false,
        }))
    }
}
