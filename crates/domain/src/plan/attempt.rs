//! One upstream attempt as the plan hands it out, the permits it holds, and the log of attempts.

use core::time::Duration;
use std::sync::Arc;

use crate::chat::ChatRequest;
use crate::error::ErrorClass;
use crate::instance::{InstancePermit, SharedInstance};
use crate::name::{EchelonName, GroupName, InstanceId};
use crate::ports::Call;
use crate::routing::{
    AttemptTimeouts, EchelonPermit, EchelonRuntime, PoolLabel, PoolPermit, PoolRuntime,
};
use crate::spec::RequestDefaults;
use crate::stats::Counters;
use crate::time::Instant;

use super::label::AttemptLabel;

/// Counts a cancellation when an attempt is dropped without [`super::Plan::record`]; disarmed
/// by it.
pub(super) struct CancelOnDrop {
    pub(super) instance: SharedInstance,
    pub(super) pool: Arc<Counters>,
    pub(super) group: Option<Arc<Counters>>,
    pub(super) echelon: Option<Arc<EchelonRuntime>>,
    pub(super) armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.instance.count_cancelled();
        self.pool.cancelled();
        if let Some(group) = &self.group {
            group.cancelled();
        }
        if let Some(echelon) = &self.echelon {
            echelon.live.counters.cancelled();
        }
    }
}

/// Where an attempt came from: its stage, target and member, by position in the route's walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) stage: usize,
    pub(super) target: usize,
    pub(super) member: usize,
}

/// What an attempt holds until it is recorded or dropped.
pub(super) struct Held {
    /// Declared first so that it runs before the permits below are released.
    pub(super) cancel_on_drop: CancelOnDrop,
    pub(super) instance: SharedInstance,
    pub(super) permit: InstancePermit,
    /// The pool's own limits, released when the attempt ends.
    pub(super) _pool_permit: Option<PoolPermit>,
    pub(super) echelon: Option<(Arc<EchelonRuntime>, EchelonPermit)>,
    pub(super) pool: Arc<PoolRuntime>,
    pub(super) group_counters: Option<Arc<Counters>>,
    pub(super) at: Position,
}

impl core::fmt::Debug for Held {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Held")
            .field("instance", self.instance.id())
            .field("stage", &self.at.stage)
            .finish_non_exhaustive()
    }
}

/// One upstream attempt, holding its permits until recorded or dropped.
///
/// Dropping an attempt without [`super::Plan::record`] releases every permit (instance and
/// echelon concurrency, breaker trials) and counts as a cancellation.
#[derive(Debug)]
#[must_use = "execute the attempt and record its outcome; dropping it cancels it"]
pub struct Attempt {
    /// 1-based number within the request.
    pub number: u32,
    /// The instance to call.
    pub instance: InstanceId,
    /// The model name the upstream knows.
    pub upstream_model: String,
    /// The group of the stage, if any.
    pub group: Option<GroupName>,
    /// The echelon of the stage, if any.
    pub echelon: Option<EchelonName>,
    /// The pool (or the model's implicit pool) the instance was picked from.
    pub pool: PoolLabel,
    /// `group › echelon › instance` (or `pool:NAME › instance`, or the instance alone), as parts.
    pub label: AttemptLabel,
    /// Timeouts, already clipped to the request's remaining time.
    pub timeouts: AttemptTimeouts,
    /// Request defaults of the echelon.
    pub defaults: RequestDefaults,
    /// The instance's context window, when known.
    pub context_window: Option<u32>,
    /// Whether this is a half-open breaker trial (instance or echelon).
    pub trial: bool,
    /// Whether the instance was picked under the panic policy (every candidate unhealthy).
    pub panic: bool,
    /// When the attempt was handed out.
    pub started: Instant,
    pub(super) held: Held,
}

impl Attempt {
    /// The chat port call for `request`.
    pub fn call<'a>(&'a self, request: &'a ChatRequest) -> Call<'a> {
        Call {
            instance: &self.instance,
            upstream_model: &self.upstream_model,
            request,
        }
    }
}

/// How an attempt in the log ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "result", rename_all = "snake_case")
)]
pub enum AttemptResult {
    /// Handed out, not recorded yet.
    Pending,
    /// Succeeded.
    Success,
    /// Failed.
    Failed {
        /// The failure's class.
        class: ErrorClass,
        /// The upstream's HTTP status, if it answered.
        status: Option<u16>,
    },
    /// Cancelled by the caller.
    Cancelled,
}

/// One line of a plan's attempt log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AttemptRecord {
    /// 1-based number.
    pub number: u32,
    /// `group › echelon › instance`, as parts (serialized as that text).
    pub label: AttemptLabel,
    /// The instance.
    pub instance: InstanceId,
    /// How it ended.
    pub result: AttemptResult,
    /// How long it took, once recorded.
    pub duration: Option<Duration>,
}
