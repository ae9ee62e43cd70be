//! Routes: what a client-facing name resolves to, and the precomputed walk of stages a plan
//! follows on it.

use core::fmt;
use core::time::Duration;
use std::sync::Arc;

use crate::name::{EchelonName, GroupName, ModelRef, PoolName, WrapperName};
use crate::plan::StageName;
use crate::spec::RequestDefaults;
use crate::stats::Counters;

use super::echelon::EchelonRuntime;
use super::pool::PoolRuntime;

/// Timeouts of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTimeouts {
    /// The whole attempt (already clipped to the request's remaining deadline).
    pub total: Duration,
    /// Time to the first streamed token.
    pub first_token: Duration,
    /// Longest silence between streamed chunks.
    pub idle: Duration,
}

/// One step of a route: an echelon (or a pool/model route) with its targets.
#[derive(Debug)]
pub(crate) struct Stage {
    /// `group › echelon`, `pool:NAME` or `provider/model`.
    pub(crate) label: Arc<str>,
    /// The stage part of its attempts' labels; `None` for a direct model route.
    pub(crate) name: Option<Arc<StageName>>,
    pub(crate) group: Option<GroupName>,
    pub(crate) group_counters: Option<Arc<Counters>>,
    pub(crate) echelon: Option<Arc<EchelonRuntime>>,
    pub(crate) targets: Box<[Arc<PoolRuntime>]>,
    /// Attempts per target; `None`: the pool's `max_instance_attempts`.
    pub(crate) per_target: Option<u32>,
    /// How many of the first targets rotate across requests (echelon cursor): the targets the
    /// echelon lists itself. Fallback pools reached through them follow in order and never
    /// rotate to the front, so they only take traffic after the pools they back up.
    pub(crate) rotating: usize,
    pub(crate) timeouts: AttemptTimeouts,
    pub(crate) max_retries: u32,
    pub(crate) retry_after_max_wait: Duration,
    pub(crate) defaults: RequestDefaults,
}

impl Stage {
    /// Attempts target `t` may take per request.
    pub(crate) fn target_budget(&self, t: usize) -> u32 {
        self.per_target.unwrap_or(self.targets[t].max_attempts)
    }
}

/// Request-wide settings of a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RouteSettings {
    pub(crate) max_attempts: u32,
    pub(crate) retry_delay: Duration,
    pub(crate) deadline: Duration,
    pub(crate) provider_failover: bool,
    /// A content-filter refusal leaves the stage instead of ending the request.
    pub(crate) content_filter_fallback: bool,
}

/// What a route points at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum RouteTarget {
    /// A task group, or one echelon of it.
    Group {
        /// The group.
        group: GroupName,
        /// One echelon only (`group:NAME.echelonN`).
        echelon: Option<EchelonName>,
    },
    /// A pool.
    Pool(PoolName),
    /// One model through every key of its provider.
    Model(ModelRef),
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Group {
                group,
                echelon: None,
            } => write!(f, "group:{group}"),
            Self::Group {
                group,
                echelon: Some(e),
            } => write!(f, "group:{group}.{e}"),
            Self::Pool(pool) => write!(f, "pool:{pool}"),
            Self::Model(model) => write!(f, "{model}"),
        }
    }
}

/// The precomputed walk of a route.
#[derive(Debug)]
pub(crate) struct RoutePlan {
    pub(crate) stages: Box<[Stage]>,
    pub(crate) settings: RouteSettings,
    /// Fallback references dropped because they would loop, with the stage label they name.
    pub(crate) cycles: Box<[Arc<str>]>,
}

/// A resolved client-facing name, ready to plan. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Route {
    /// The wrapper the client named, if it named one.
    pub wrapper: Option<WrapperName>,
    /// What the route points at.
    pub target: RouteTarget,
    pub(crate) plan: Arc<RoutePlan>,
}

impl Route {
    /// `wrapper › target`, or the target alone.
    pub fn label(&self) -> String {
        match &self.wrapper {
            Some(w) => format!("{w} › {}", self.target),
            None => self.target.to_string(),
        }
    }

    /// The hard cap on upstream attempts of one request on this route.
    pub fn max_attempts(&self) -> u32 {
        self.plan.settings.max_attempts
    }
}
