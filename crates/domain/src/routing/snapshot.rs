//! Snapshots of a table's live state at one instant, for the admin API, `echelon status` and
//! alert rules.

use crate::breaker::BreakerState;
use crate::budget::RetryBudgetSnapshot;
use crate::health::HealthState;
use crate::instance::{InstanceState, LatencySnapshot, Unavailable};
use crate::name::{EchelonName, GroupName, InstanceId, PoolName};
use crate::spec::{EchelonTarget, FallbackStrategy, Limits, RotationStrategy};
use crate::stats::Stats;
use crate::time::Instant;

use super::RoutingTable;
use super::pool::{PoolLabel, PoolRuntime};

impl RoutingTable {
    /// A snapshot of one instance at `now`.
    pub fn instance_snapshot(&self, id: &InstanceId, now: Instant) -> Option<InstanceSnapshot> {
        self.instances.get(id).map(|i| instance_snapshot(i, now))
    }

    /// A snapshot of a pool at `now`.
    pub fn pool_snapshot(&self, name: &PoolName, now: Instant) -> Option<PoolSnapshot> {
        self.pools.get(name).map(|p| pool_snapshot(p, now))
    }

    /// A snapshot of a task group at `now`.
    pub fn group_snapshot(&self, name: &GroupName, now: Instant) -> Option<GroupSnapshot> {
        let g = self.groups.get(name)?;
        Some(GroupSnapshot {
            name: name.clone(),
            fallback_strategy: g.spec.fallback_strategy,
            stats: g.counters.snapshot(),
            echelons: g
                .echelons
                .iter()
                .map(|e| EchelonSnapshot {
                    name: e.spec.name.clone(),
                    priority: e.spec.priority,
                    breaker: e.live.breaker.state(now),
                    open_until: e.live.breaker.open_until(now),
                    in_flight: e.live.concurrency.in_use(),
                    concurrency_limit: e.spec.concurrency_limit,
                    rpm_limit: e.spec.rpm_limit,
                    rpm_available: e.live.rpm.as_ref().map(|r| r.available(now)),
                    targets: e
                        .spec
                        .targets
                        .iter()
                        .map(|t| match t {
                            EchelonTarget::Model(m) => m.to_string(),
                            EchelonTarget::Pool(p) => format!("pool:{p}"),
                        })
                        .collect(),
                    stats: e.live.counters.snapshot(),
                })
                .collect(),
        })
    }

    /// A snapshot of everything at `now`, for `/admin/status` and `echelon status`.
    pub fn snapshot(&self, now: Instant) -> TableSnapshot {
        TableSnapshot {
            pools: self.pools.values().map(|p| pool_snapshot(p, now)).collect(),
            models: self
                .models
                .values()
                .map(|p| pool_snapshot(p, now))
                .collect(),
            groups: self
                .groups
                .keys()
                .filter_map(|g| self.group_snapshot(g, now))
                .collect(),
            retry_budget: self.budget.snapshot(now),
        }
    }
}

fn instance_snapshot(i: &InstanceState, now: Instant) -> InstanceSnapshot {
    let (rpm_available, tpm_available) = i.rate_available(now);
    InstanceSnapshot {
        id: i.id().clone(),
        upstream_model: i.spec().upstream_name.clone(),
        context_window: i.spec().context_window,
        health: i.health().state(),
        breaker: i.breaker().state(now),
        open_until: i.breaker().open_until(now),
        cooldown_until: i.cooldown_until(now),
        key_dead: i.is_key_dead(),
        in_flight: i.in_flight(),
        rpm_available,
        tpm_available,
        limits: i.spec().limits,
        latency: i.latency(now),
        stats: i.stats(),
        unavailable: i.availability(now, 1, false).err(),
    }
}

fn pool_snapshot(p: &PoolRuntime, now: Instant) -> PoolSnapshot {
    let members: Vec<PoolMemberSnapshot> = p
        .members
        .iter()
        .enumerate()
        .map(|(k, i)| PoolMemberSnapshot {
            weight: p.rotation.weight(k),
            instance: instance_snapshot(i, now),
        })
        .collect();
    PoolSnapshot {
        pool: p.label.clone(),
        rotation: p.rotation.strategy(),
        available: members
            .iter()
            .filter(|m| m.instance.unavailable.is_none())
            .count(),
        healthy: members
            .iter()
            .filter(|m| m.instance.health == HealthState::Healthy)
            .count(),
        members,
        stats: p.counters.snapshot(),
    }
}

/// One instance's state, for the admin API.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct InstanceSnapshot {
    /// Its id (`provider/model#key`).
    pub id: InstanceId,
    /// The model name the upstream knows.
    pub upstream_model: String,
    /// Its context window, when known.
    pub context_window: Option<u32>,
    /// Health state.
    pub health: HealthState,
    /// Breaker state.
    pub breaker: BreakerState,
    /// When an open breaker admits trials.
    pub open_until: Option<Instant>,
    /// End of a running cooldown.
    pub cooldown_until: Option<Instant>,
    /// Whether the key is dead.
    pub key_dead: bool,
    /// Requests in flight.
    pub in_flight: u32,
    /// Requests its rpm limit admits now, when it has one.
    pub rpm_available: Option<u32>,
    /// Tokens its tpm limit admits now, when it has one.
    pub tpm_available: Option<u32>,
    /// Effective limits.
    pub limits: Limits,
    /// Latency figures.
    pub latency: LatencySnapshot,
    /// Totals.
    pub stats: Stats,
    /// Why it would be skipped now, if it would.
    pub unavailable: Option<Unavailable>,
}

/// A pool member: weight and state.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PoolMemberSnapshot {
    /// Its weight in this pool.
    pub weight: u64,
    /// Its state.
    pub instance: InstanceSnapshot,
}

/// A pool's state, for the admin API.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PoolSnapshot {
    /// The pool (or the model, for a direct route's implicit pool).
    pub pool: PoolLabel,
    /// Its rotation strategy.
    pub rotation: RotationStrategy,
    /// Members that would be picked now.
    pub available: usize,
    /// Members in the healthy state.
    pub healthy: usize,
    /// Members in order.
    pub members: Vec<PoolMemberSnapshot>,
    /// Totals of attempts through this pool.
    pub stats: Stats,
}

/// An echelon's state.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct EchelonSnapshot {
    /// Its name.
    pub name: EchelonName,
    /// Its priority.
    pub priority: u32,
    /// Its breaker's state.
    pub breaker: BreakerState,
    /// When an open breaker admits trials.
    pub open_until: Option<Instant>,
    /// Requests in flight.
    pub in_flight: u32,
    /// Its concurrency limit.
    pub concurrency_limit: Option<u32>,
    /// Its rpm limit.
    pub rpm_limit: Option<u32>,
    /// Requests its rpm limit admits now.
    pub rpm_available: Option<u32>,
    /// Its targets as configured.
    pub targets: Vec<String>,
    /// Totals.
    pub stats: Stats,
}

/// A task group's state.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct GroupSnapshot {
    /// Its name.
    pub name: GroupName,
    /// How it walks its echelons.
    pub fallback_strategy: FallbackStrategy,
    /// Echelons in priority order.
    pub echelons: Vec<EchelonSnapshot>,
    /// Totals of attempts through this group.
    pub stats: Stats,
}

/// Everything, for `/admin/status`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TableSnapshot {
    /// Named pools.
    pub pools: Vec<PoolSnapshot>,
    /// The implicit pools of direct model routes.
    pub models: Vec<PoolSnapshot>,
    /// Task groups.
    pub groups: Vec<GroupSnapshot>,
    /// The fleet-wide retry budget.
    pub retry_budget: RetryBudgetSnapshot,
}
