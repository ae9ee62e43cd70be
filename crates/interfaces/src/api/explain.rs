//! `GET /admin/route?model=NAME`: the dry run of a route.

use std::time::Duration;

use echelon_domain::events::SkipReason;
use echelon_domain::instance::Unavailable;
use echelon_domain::plan::{
    CandidateExplanation, ExplainedVerdict, Explanation, StageExplanation, TargetExplanation,
};
use serde::{Deserialize, Serialize};

use super::{API_VERSION, LabelKind, seconds, unversioned};

/// A dry run of a route: every candidate and whether it is in or out, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationDto {
    /// The wire format's version.
    #[serde(default = "unversioned")]
    pub api_version: u32,
    /// `wrapper › target`.
    pub route: String,
    /// The hard cap on upstream attempts.
    pub max_attempts: u32,
    /// Stages in the order a plan walks them.
    pub stages: Vec<StageDto>,
    /// Fallback references dropped as cycles.
    #[serde(default)]
    pub cycles: Vec<String>,
    /// The immediate answer when nothing could serve now.
    #[serde(default)]
    pub verdict: Option<VerdictDto>,
    /// The gateway's clock when the plan was made.
    #[serde(default)]
    pub now: Option<f64>,
}

impl ExplanationDto {
    /// The wire form of `explanation`, made when the gateway's clock read `now`.
    pub fn new(explanation: &Explanation, now: echelon_domain::time::Instant) -> Self {
        Self {
            api_version: API_VERSION,
            route: explanation.route.clone(),
            max_attempts: explanation.max_attempts,
            stages: explanation.stages.iter().map(StageDto::from).collect(),
            cycles: explanation.cycles.clone(),
            verdict: explanation.verdict.as_ref().map(VerdictDto::from),
            now: Some(seconds(now)),
        }
    }
}

/// One stage of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageDto {
    /// `group › echelon`, `pool:NAME` or `provider/model`.
    pub label: String,
    /// Why the whole echelon is out, if it is.
    #[serde(default)]
    pub echelon_skip: Option<SkipDto>,
    /// Its pools and models.
    pub targets: Vec<TargetDto>,
}

impl From<&StageExplanation> for StageDto {
    fn from(stage: &StageExplanation) -> Self {
        Self {
            label: stage.label.clone(),
            echelon_skip: stage.echelon_skip.as_ref().map(SkipDto::from),
            targets: stage.targets.iter().map(TargetDto::from).collect(),
        }
    }
}

/// One pool or model of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetDto {
    /// A named pool or a direct model.
    pub kind: LabelKind,
    /// The pool's name or the `provider/model`.
    pub name: String,
    /// Its rotation strategy.
    pub rotation: String,
    /// Instances it tries per request.
    pub attempts: u32,
    /// Its instances.
    pub candidates: Vec<CandidateDto>,
}

impl From<&TargetExplanation> for TargetDto {
    fn from(target: &TargetExplanation) -> Self {
        let (kind, name) = LabelKind::of(&target.target);
        Self {
            kind,
            name,
            rotation: target.rotation.as_str().to_owned(),
            attempts: target.attempts,
            candidates: target.candidates.iter().map(CandidateDto::from).collect(),
        }
    }
}

/// One instance of a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateDto {
    /// `provider/model#key`.
    pub instance: String,
    /// Its weight in the pool.
    pub weight: u64,
    /// Health state: `healthy`, `degraded`, `unhealthy`, `recovering`.
    pub health: String,
    /// Breaker state: `closed`, `open`, `half_open`.
    pub breaker: String,
    /// Requests in flight.
    pub in_flight: u32,
    /// Why it is out; `None` when it is in.
    #[serde(default)]
    pub skip: Option<SkipDto>,
}

impl From<&CandidateExplanation> for CandidateDto {
    fn from(c: &CandidateExplanation) -> Self {
        Self {
            instance: c.instance.to_string(),
            weight: c.weight,
            health: c.health.as_str().to_owned(),
            breaker: c.breaker.as_str().to_owned(),
            in_flight: c.in_flight,
            skip: c.skip.as_ref().map(SkipDto::from),
        }
    }
}

/// The immediate answer of a route that cannot serve now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictDto {
    /// 429 or 503.
    pub status: u16,
    /// The Retry-After it would carry.
    #[serde(default, with = "super::option_duration_text")]
    pub retry_after: Option<Duration>,
}

impl From<&ExplainedVerdict> for VerdictDto {
    fn from(v: &ExplainedVerdict) -> Self {
        Self {
            status: v.status,
            retry_after: v.retry_after,
        }
    }
}

/// Why a candidate, a pool or an echelon is out (the domain's `SkipReason` and `Unavailable`,
/// flattened).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SkipDto {
    /// The stable name: `cooling_down`, `breaker_open`, `unhealthy`, `key_dead`, `saturated`,
    /// `already_tried`, `provider_failed`, `context_window_too_small`, `attempts_spent`, `cycle`,
    /// `no_instances`.
    pub kind: String,
    /// What is out: `instance`, `pool` or `echelon`; absent for reasons about the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// End of a cooldown, rest or open breaker, on the gateway's clock. An open breaker
    /// without it is half-open, its trial calls in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<f64>,
    /// For `saturated`: `rpm`, `tpm` or `concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// For `saturated`: when capacity returns.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::option_duration_text"
    )]
    pub retry_in: Option<Duration>,
    /// For `provider_failed`: the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// For `context_window_too_small`: the request needs more tokens than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_above: Option<u32>,
    /// For `context_window_too_small`: the window, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
}

impl SkipDto {
    /// The reason of an unavailable instance, pool or echelon.
    pub fn unavailable(u: &Unavailable, scope: Option<&str>) -> Self {
        let kind = match u {
            // One kind for every full limit; `limit` says which.
            Unavailable::Saturated(_) => "saturated",
            other => other.as_str(),
        };
        let mut dto = Self {
            kind: kind.to_owned(),
            scope: scope.map(str::to_owned),
            ..Self::default()
        };
        match u {
            Unavailable::KeyDead => {}
            Unavailable::CoolingDown { until } | Unavailable::Unhealthy { until } => {
                dto.until = Some(seconds(*until));
            }
            Unavailable::BreakerOpen { until } => {
                dto.until = until.map(seconds);
            }
            Unavailable::Saturated(s) => {
                dto.limit = Some(s.limit.as_str().to_owned());
                dto.retry_in = s.retry_in;
            }
        }
        dto
    }
}

impl From<&SkipReason> for SkipDto {
    fn from(reason: &SkipReason) -> Self {
        match reason {
            SkipReason::Instance(u) => Self::unavailable(u, Some("instance")),
            SkipReason::Echelon(u) => Self::unavailable(u, Some("echelon")),
            SkipReason::Pool(u) => Self::unavailable(u, Some("pool")),
            SkipReason::ProviderFailed { provider } => Self {
                kind: reason.as_str().to_owned(),
                provider: Some(provider.to_string()),
                ..Self::default()
            },
            SkipReason::ContextWindowTooSmall {
                required_above,
                window,
            } => Self {
                kind: reason.as_str().to_owned(),
                required_above: Some(*required_above),
                window: *window,
                ..Self::default()
            },
            SkipReason::AlreadyTried
            | SkipReason::AttemptsSpent
            | SkipReason::Cycle
            | SkipReason::NoInstances => Self {
                kind: reason.as_str().to_owned(),
                ..Self::default()
            },
        }
    }
}
