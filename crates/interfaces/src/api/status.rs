//! `GET /admin/status` and its parts (`/admin/pools/NAME`, `/admin/task-groups/NAME`).

use std::time::Duration;

use echelon_application::health_check::{ProbeResult, ProbeStatus};
use echelon_application::history::HistoryEntry;
use echelon_application::shared_state::SharingSnapshot;
use echelon_domain::routing::{
    EchelonSnapshot, GroupSnapshot, InstanceSnapshot, PoolMemberSnapshot, PoolSnapshot,
    TableSnapshot,
};
use echelon_domain::shared::{FailMode, SharingMode};
use echelon_domain::spec::{FallbackStrategy, Limits};
use echelon_domain::stats::Stats;
use serde::{Deserialize, Serialize};

use super::explain::SkipDto;
use super::{API_VERSION, LabelKind, seconds, unversioned};
use crate::app::{ReloadRecord, ReloadStatus};

/// Everything the gateway knows of its routing state now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDto {
    /// The wire format's version.
    #[serde(default = "unversioned")]
    pub api_version: u32,
    /// The configuration generation serving.
    #[serde(default)]
    pub generation: u64,
    /// The gateway's clock: the timeline of every instant in this document.
    #[serde(default)]
    pub now: Option<f64>,
    /// Reloads.
    #[serde(default)]
    pub config: ReloadsDto,
    /// Named pools.
    #[serde(default)]
    pub pools: Vec<PoolDto>,
    /// Implicit pools of direct model routes.
    #[serde(default)]
    pub models: Vec<PoolDto>,
    /// Task groups.
    #[serde(default)]
    pub groups: Vec<GroupDto>,
    /// Recent fallbacks and breaker transitions, oldest first.
    #[serde(default)]
    pub history: Vec<HistoryDto>,
    /// The last active probe of each probed instance.
    #[serde(default)]
    pub probes: Vec<ProbeDto>,
    /// Where state shared by replicas lives and whether this replica shares it now (absent
    /// from gateways older than the field).
    #[serde(default)]
    pub shared_state: Option<SharedStateDto>,
}

/// The parts of a status document, as the gateway has them.
#[derive(Debug)]
pub struct StatusParts<'a> {
    /// The configuration generation serving.
    pub generation: u64,
    /// The gateway's clock.
    pub now: echelon_domain::time::Instant,
    /// Reloads.
    pub config: &'a ReloadStatus,
    /// The routing table.
    pub table: &'a TableSnapshot,
    /// Recent history, oldest first.
    pub history: &'a [HistoryEntry],
    /// Last probes.
    pub probes: &'a [ProbeStatus],
    /// The shared state sync's status; `None` with `[state] backend = "memory"`.
    pub sharing: Option<SharingSnapshot>,
}

impl StatusDto {
    /// The wire form of a gateway's state.
    pub fn new(parts: &StatusParts<'_>) -> Self {
        Self {
            api_version: API_VERSION,
            generation: parts.generation,
            now: Some(seconds(parts.now)),
            config: ReloadsDto::from(parts.config),
            pools: parts.table.pools.iter().map(PoolDto::from).collect(),
            models: parts.table.models.iter().map(PoolDto::from).collect(),
            groups: parts.table.groups.iter().map(GroupDto::from).collect(),
            history: parts.history.iter().map(HistoryDto::from).collect(),
            probes: parts.probes.iter().map(ProbeDto::from).collect(),
            shared_state: Some(SharedStateDto::of(parts.sharing.as_ref())),
        }
    }

    /// A status of the routing table alone (an in-process gateway: the demo).
    pub fn of_table(table: &TableSnapshot, now: echelon_domain::time::Instant) -> Self {
        Self::new(&StatusParts {
            generation: 0,
            now,
            config: &ReloadStatus::default(),
            table,
            history: &[],
            probes: &[],
            sharing: None,
        })
    }
}

/// `[state] backend`: where state shared by replicas lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateBackendDto {
    /// This process only.
    Memory,
    /// Shared with every replica using the same Redis and `key_prefix`.
    Redis,
    /// A backend this version of the reader does not know.
    #[serde(other)]
    Other,
}

/// Whether a replica shares state right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharingModeDto {
    /// Nothing to share (`backend = "memory"`).
    Memory,
    /// Syncing with Redis.
    Shared,
    /// Redis unreachable: local state, following the fail mode, until a retry succeeds.
    Fallback,
    /// A mode this version of the reader does not know.
    #[serde(other)]
    Other,
}

impl From<SharingMode> for SharingModeDto {
    fn from(mode: SharingMode) -> Self {
        match mode {
            SharingMode::Memory => Self::Memory,
            SharingMode::Shared => Self::Shared,
            SharingMode::Fallback => Self::Fallback,
        }
    }
}

/// `[state] fail_mode`: what budgets do while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailModeDto {
    /// Local budgets of the limit divided by `replicas`.
    Local,
    /// Rate-limited keys refuse until Redis is back.
    Closed,
    /// A fail mode this version of the reader does not know.
    #[serde(other)]
    Other,
}

impl From<FailMode> for FailModeDto {
    fn from(mode: FailMode) -> Self {
        match mode {
            FailMode::Local => Self::Local,
            FailMode::Closed => Self::Closed,
        }
    }
}

/// `shared_state` of a status: the shared state backend and this replica's sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedStateDto {
    /// `memory` or `redis`.
    pub backend: StateBackendDto,
    /// `memory`, `shared` or `fallback`.
    pub mode: SharingModeDto,
    /// `local` or `closed`; `null` with the memory backend.
    #[serde(default)]
    pub fail_mode: Option<FailModeDto>,
    /// The `replicas` hint; `null` with the memory backend.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Syncs with Redis that succeeded since start.
    #[serde(default)]
    pub syncs: u64,
    /// Syncs that failed since start.
    #[serde(default)]
    pub failures: u64,
    /// Times this replica fell back to local state since start.
    #[serde(default)]
    pub fallbacks: u64,
    /// The last failure, free of secrets.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl SharedStateDto {
    /// The wire form of the sync's status, or of the memory backend when there is no sync.
    pub fn of(sharing: Option<&SharingSnapshot>) -> Self {
        let Some(s) = sharing else {
            return Self {
                backend: StateBackendDto::Memory,
                mode: SharingModeDto::Memory,
                fail_mode: None,
                replicas: None,
                syncs: 0,
                failures: 0,
                fallbacks: 0,
                last_error: None,
            };
        };
        Self {
            backend: StateBackendDto::Redis,
            mode: s.mode.into(),
            fail_mode: Some(s.fail_mode.into()),
            replicas: Some(s.replicas),
            syncs: s.syncs,
            failures: s.failures,
            fallbacks: s.fallbacks,
            last_error: s.last_error.as_deref().map(str::to_owned),
        }
    }
}

/// Totals of a routing element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsDto {
    /// Upstream attempts started.
    pub attempts: u64,
    /// Attempts that succeeded.
    pub successes: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Of the failures, the 429s.
    pub rate_limited: u64,
    /// Attempts the caller abandoned.
    pub cancelled: u64,
    /// Mean latency of finished attempts.
    #[serde(with = "super::option_duration_text")]
    pub avg_latency: Option<Duration>,
    /// Prompt tokens reported by the upstreams.
    pub input_tokens: u64,
    /// Completion tokens reported by the upstreams.
    pub output_tokens: u64,
    /// Times a request moved on from here to a fallback.
    pub fallbacks: u64,
    /// Times this element was passed over.
    pub skips: u64,
}

impl From<&Stats> for StatsDto {
    fn from(s: &Stats) -> Self {
        Self {
            attempts: s.attempts,
            successes: s.successes,
            failures: s.failures,
            rate_limited: s.rate_limited,
            cancelled: s.cancelled,
            avg_latency: s.avg_latency,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            fallbacks: s.fallbacks,
            skips: s.skips,
        }
    }
}

/// Latency figures of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyDto {
    /// Exponentially weighted mean latency.
    #[serde(with = "super::option_duration_text")]
    pub ewma: Option<Duration>,
    /// Peak-sensitive EWMA (what `p2c_ewma` compares).
    #[serde(with = "super::option_duration_text")]
    pub peak_ewma: Option<Duration>,
    /// Mean time to the first token of streams.
    #[serde(with = "super::option_duration_text")]
    pub ttft: Option<Duration>,
    /// Samples taken.
    pub samples: u64,
    /// Penalty factor from recent failures (1 is none).
    pub penalty: f64,
}

/// An instance's effective limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsDto {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens per minute.
    pub tpm: Option<u32>,
    /// Requests at once.
    pub max_concurrency: Option<u32>,
}

impl From<&Limits> for LimitsDto {
    fn from(l: &Limits) -> Self {
        Self {
            rpm: l.rpm,
            tpm: l.tpm,
            max_concurrency: l.max_concurrency,
        }
    }
}

/// One instance's live state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceDto {
    /// `provider/model#key`.
    pub id: String,
    /// The model name the upstream knows.
    #[serde(default)]
    pub upstream_model: String,
    /// Its context window, when known.
    #[serde(default)]
    pub context_window: Option<u32>,
    /// Health state: `healthy`, `degraded`, `unhealthy`, `recovering`.
    pub health: String,
    /// Breaker state: `closed`, `open`, `half_open`.
    pub breaker: String,
    /// When an open breaker admits trials, on the gateway's clock.
    #[serde(default)]
    pub open_until: Option<f64>,
    /// End of a running cooldown, on the gateway's clock.
    #[serde(default)]
    pub cooldown_until: Option<f64>,
    /// Whether the upstream refused the key (401/403).
    #[serde(default)]
    pub key_dead: bool,
    /// Requests in flight.
    #[serde(default)]
    pub in_flight: u32,
    /// Requests its rpm limit admits now, when it has one.
    #[serde(default)]
    pub rpm_available: Option<u32>,
    /// Tokens its tpm limit admits now, when it has one.
    #[serde(default)]
    pub tpm_available: Option<u32>,
    /// Effective limits.
    #[serde(default)]
    pub limits: LimitsDto,
    /// Latency figures.
    #[serde(default)]
    pub latency: LatencyDto,
    /// Totals.
    #[serde(default)]
    pub stats: StatsDto,
    /// Why it would be skipped now, if it would.
    #[serde(default)]
    pub unavailable: Option<SkipDto>,
}

impl From<&InstanceSnapshot> for InstanceDto {
    fn from(i: &InstanceSnapshot) -> Self {
        let l = &i.latency;
        Self {
            id: i.id.to_string(),
            upstream_model: i.upstream_model.clone(),
            context_window: i.context_window,
            health: i.health.as_str().to_owned(),
            breaker: i.breaker.as_str().to_owned(),
            open_until: i.open_until.map(seconds),
            cooldown_until: i.cooldown_until.map(seconds),
            key_dead: i.key_dead,
            in_flight: i.in_flight,
            rpm_available: i.rpm_available,
            tpm_available: i.tpm_available,
            limits: LimitsDto::from(&i.limits),
            latency: LatencyDto {
                ewma: l.ewma,
                peak_ewma: l.peak_ewma,
                ttft: l.ttft,
                samples: l.samples,
                penalty: l.penalty,
            },
            stats: StatsDto::from(&i.stats),
            unavailable: i
                .unavailable
                .as_ref()
                .map(|u| SkipDto::unavailable(u, None)),
        }
    }
}

/// A pool member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberDto {
    /// Its weight in the pool.
    pub weight: u64,
    /// Its state.
    pub instance: InstanceDto,
}

impl From<&PoolMemberSnapshot> for MemberDto {
    fn from(m: &PoolMemberSnapshot) -> Self {
        Self {
            weight: m.weight,
            instance: InstanceDto::from(&m.instance),
        }
    }
}

/// A pool's live state (or a direct model route's implicit pool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolDto {
    /// A named pool or a direct model.
    pub kind: LabelKind,
    /// The pool's name or the `provider/model`.
    pub name: String,
    /// Its rotation strategy.
    pub rotation: String,
    /// Members that would be picked now.
    pub available: usize,
    /// Members in the healthy state.
    pub healthy: usize,
    /// Its members, in order.
    pub members: Vec<MemberDto>,
    /// Totals of attempts through this pool.
    #[serde(default)]
    pub stats: StatsDto,
}

impl From<&PoolSnapshot> for PoolDto {
    fn from(p: &PoolSnapshot) -> Self {
        let (kind, name) = LabelKind::of(&p.pool);
        Self {
            kind,
            name,
            rotation: p.rotation.as_str().to_owned(),
            available: p.available,
            healthy: p.healthy,
            members: p.members.iter().map(MemberDto::from).collect(),
            stats: StatsDto::from(&p.stats),
        }
    }
}

/// An echelon's live state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchelonDto {
    /// Its name.
    pub name: String,
    /// Its priority.
    pub priority: u32,
    /// Its breaker: `closed`, `open`, `half_open`.
    pub breaker: String,
    /// When an open breaker admits trials, on the gateway's clock.
    #[serde(default)]
    pub open_until: Option<f64>,
    /// Requests in flight.
    #[serde(default)]
    pub in_flight: u32,
    /// Its concurrency limit.
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
    /// Its rpm limit.
    #[serde(default)]
    pub rpm_limit: Option<u32>,
    /// Requests its rpm limit admits now.
    #[serde(default)]
    pub rpm_available: Option<u32>,
    /// Its targets as configured.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Totals.
    #[serde(default)]
    pub stats: StatsDto,
}

impl From<&EchelonSnapshot> for EchelonDto {
    fn from(e: &EchelonSnapshot) -> Self {
        Self {
            name: e.name.to_string(),
            priority: e.priority,
            breaker: e.breaker.as_str().to_owned(),
            open_until: e.open_until.map(seconds),
            in_flight: e.in_flight,
            concurrency_limit: e.concurrency_limit,
            rpm_limit: e.rpm_limit,
            rpm_available: e.rpm_available,
            targets: e.targets.clone(),
            stats: StatsDto::from(&e.stats),
        }
    }
}

/// A task group's live state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupDto {
    /// Its name.
    pub name: String,
    /// How it walks its echelons: `echelon_down`, `model_rotate`, `provider_failover`,
    /// `group_fallback`.
    pub fallback_strategy: String,
    /// Echelons in priority order.
    pub echelons: Vec<EchelonDto>,
    /// Totals of attempts through this group.
    #[serde(default)]
    pub stats: StatsDto,
}

impl From<&GroupSnapshot> for GroupDto {
    fn from(g: &GroupSnapshot) -> Self {
        Self {
            name: g.name.to_string(),
            fallback_strategy: fallback_strategy(g.fallback_strategy).to_owned(),
            echelons: g.echelons.iter().map(EchelonDto::from).collect(),
            stats: StatsDto::from(&g.stats),
        }
    }
}

const fn fallback_strategy(s: FallbackStrategy) -> &'static str {
    match s {
        FallbackStrategy::EchelonDown => "echelon_down",
        FallbackStrategy::ModelRotate => "model_rotate",
        FallbackStrategy::ProviderFailover => "provider_failover",
        FallbackStrategy::GroupFallback => "group_fallback",
    }
}

/// One configuration reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadDto {
    /// What started it: `watch`, `admin` or `startup`.
    pub trigger: String,
    /// Whether the new tree is serving.
    pub applied: bool,
    /// Seconds since the Unix epoch.
    pub at_unix: u64,
    /// The generation serving after it.
    #[serde(default)]
    pub generation: u64,
    /// Problems that refused it (file, line, key, reason).
    #[serde(default)]
    pub errors: Vec<String>,
    /// Warnings.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Settings that changed but take effect only after a restart.
    #[serde(default)]
    pub restart_needed: Vec<String>,
}

impl From<&ReloadRecord> for ReloadDto {
    fn from(r: &ReloadRecord) -> Self {
        Self {
            trigger: r.trigger.to_owned(),
            applied: r.applied,
            at_unix: r.at_unix,
            generation: r.generation,
            errors: r.errors.clone(),
            warnings: r.warnings.clone(),
            restart_needed: r.restart_needed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Reload counters and the last result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadsDto {
    /// Reloads applied since start.
    pub applied: u64,
    /// Reloads refused since start.
    pub rejected: u64,
    /// The most recent one.
    pub last: Option<ReloadDto>,
}

impl From<&ReloadStatus> for ReloadsDto {
    fn from(s: &ReloadStatus) -> Self {
        Self {
            applied: s.applied,
            rejected: s.rejected,
            last: s.last.as_ref().map(ReloadDto::from),
        }
    }
}

/// One entry of the gateway's recent history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryDto {
    /// A request moved on from one stage to the next.
    Fallback {
        /// When, on the gateway's clock.
        at: f64,
        /// The group it left.
        #[serde(default)]
        group: Option<String>,
        /// The echelon it left.
        #[serde(default)]
        from: Option<String>,
        /// The stage it moved to.
        to: String,
        /// Why, as far as the gateway can tell.
        #[serde(default)]
        reason: String,
    },
    /// A breaker changed state.
    Breaker {
        /// When, on the gateway's clock.
        at: f64,
        /// An instance, or `group › echelon`.
        scope: String,
        /// Before: `closed`, `open`, `half_open`.
        from: String,
        /// After.
        to: String,
        /// When an opened breaker admits trials.
        #[serde(default)]
        open_until: Option<f64>,
        /// Why, as far as the gateway can tell.
        #[serde(default)]
        reason: String,
    },
    /// An entry this version of the reader does not know.
    #[serde(other)]
    Other,
}

impl From<&HistoryEntry> for HistoryDto {
    fn from(h: &HistoryEntry) -> Self {
        match h {
            HistoryEntry::Fallback {
                at,
                group,
                from,
                to,
                reason,
            } => Self::Fallback {
                at: seconds(*at),
                group: group.as_ref().map(ToString::to_string),
                from: from.as_ref().map(ToString::to_string),
                to: to.clone(),
                reason: reason.clone(),
            },
            HistoryEntry::Breaker {
                at,
                scope,
                from,
                to,
                open_until,
                reason,
            } => Self::Breaker {
                at: seconds(*at),
                scope: scope.clone(),
                from: from.as_str().to_owned(),
                to: to.as_str().to_owned(),
                open_until: open_until.map(seconds),
                reason: reason.clone(),
            },
        }
    }
}

/// The last active probe of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeDto {
    /// `provider/model#key`.
    pub instance: String,
    /// `ok`, `refused`, `failed`, `timeout` or `rate_limited`.
    pub result: String,
    /// For `refused` and `failed`: the error class (`server`, `auth`, `connect`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// When it started, on the gateway's clock.
    pub at: f64,
    /// How long it took.
    #[serde(with = "super::duration_text")]
    pub latency: Duration,
    /// Probes in a row without a healthy verdict.
    pub consecutive_failures: u32,
    /// Probes sent to this instance since the checker started.
    pub probes: u64,
}

impl From<&ProbeStatus> for ProbeDto {
    fn from(p: &ProbeStatus) -> Self {
        let class = match p.result {
            ProbeResult::Refused(c) | ProbeResult::Failed(c) => Some(c.as_str().to_owned()),
            ProbeResult::Ok | ProbeResult::TimedOut | ProbeResult::RateLimited => None,
        };
        Self {
            instance: p.instance.to_string(),
            result: p.result.as_str().to_owned(),
            class,
            at: seconds(p.at),
            latency: p.latency,
            consecutive_failures: p.consecutive_failures,
            probes: p.probes,
        }
    }
}
