//! The routing table: live state for every instance, pool, echelon and group of a [`Topology`],
//! name resolution, and the precomputed stage lists that attempt plans walk.
//!
//! A table is built once per configuration ([`RoutingTable::build`]) and shared by every request.
//! On a hot reload the new table takes over the live state (health, breakers, limiters, latency,
//! statistics) of every instance and echelon whose identity and relevant settings did not change,
//! so a reload neither forgets an open breaker nor refills a drained bucket. Dead keys come back
//! to life on reload.

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::breaker::{BreakerPermit, BreakerState, CircuitBreaker};
use crate::events::{BreakerScope, Event, EventSink, NoopSink};
use crate::health::HealthState;
use crate::instance::{
    InstancePolicy, InstanceState, LatencySnapshot, SharedInstance, Unavailable,
};
use crate::limit::{ConcurrencyLimiter, ConcurrencyPermit, LimitKind, RateLimiter, Saturated};
use crate::name::{EchelonName, GroupName, InstanceId, ModelRef, PoolName, WrapperName};
use crate::rotation::Rotation;
use crate::secret::Secret;
use crate::spec::{
    BreakerPolicy, EchelonSpec, EchelonTarget, FallbackStrategy, InstanceSpec, Limits,
    PoolFallbackStrategy, RateAlgorithm, RequestDefaults, RotationStrategy, TaskGroupSpec,
    Topology, WrapperTarget,
};
use crate::stats::{Counters, Stats};
use crate::time::Instant;

/// Settings for routes that have no echelon of their own: `pool:NAME`, `provider/model` and the
/// wrappers pointing at them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteDefaults {
    /// Timeout of one non-streaming attempt.
    pub timeout: Duration,
    /// Time to the first streamed token.
    pub first_token_timeout: Duration,
    /// Longest silence between streamed chunks.
    pub idle_timeout: Duration,
    /// Retries of the same instance for retryable server errors.
    pub max_retries: u32,
    /// Longest Retry-After worth waiting for instead of moving on.
    pub retry_after_max_wait: Duration,
    /// Upper bound on upstream attempts per request.
    pub max_attempts: u32,
    /// Base delay of the retry backoff.
    pub retry_delay: Duration,
    /// Overall deadline of one request.
    pub deadline: Duration,
}

impl Default for RouteDefaults {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            first_token_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(30),
            max_retries: 1,
            retry_after_max_wait: Duration::from_secs(5),
            max_attempts: 3,
            retry_delay: Duration::from_millis(200),
            deadline: Duration::from_secs(120),
        }
    }
}

/// How a table is built: defaults, the cooldown after a 429 without Retry-After, the event sink.
#[derive(Clone)]
pub struct TableOptions {
    /// Settings of routes without an echelon.
    pub route_defaults: RouteDefaults,
    /// Cooldown after a 429 that did not say how long to wait.
    pub default_cooldown: Duration,
    /// Where events go.
    pub sink: Arc<dyn EventSink>,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            route_defaults: RouteDefaults::default(),
            default_cooldown: Duration::from_secs(5),
            sink: Arc::new(NoopSink),
        }
    }
}

impl fmt::Debug for TableOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableOptions")
            .field("route_defaults", &self.route_defaults)
            .field("default_cooldown", &self.default_cooldown)
            .finish_non_exhaustive()
    }
}

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

/// Live pool: its rotation over shared instance states.
#[derive(Debug)]
pub(crate) struct PoolRuntime {
    pub(crate) label: PoolLabel,
    pub(crate) rotation: Rotation,
    pub(crate) members: Box<[SharedInstance]>,
    /// Instances tried per request before the pool gives up.
    pub(crate) max_attempts: u32,
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
    key: (Limits, RateAlgorithm),
}

impl PoolLimits {
    fn new(limits: Limits, algorithm: RateAlgorithm, now: Instant) -> Option<Arc<Self>> {
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

/// The part of an echelon that outlives a reload.
#[derive(Debug)]
pub(crate) struct EchelonLive {
    breaker: CircuitBreaker,
    concurrency: ConcurrencyLimiter,
    rpm: Option<RateLimiter>,
    pub(crate) counters: Counters,
    /// Rotates the first target tried across requests.
    pub(crate) cursor: AtomicU64,
    /// The settings the live state was built for.
    key: (BreakerPolicy, Option<u32>, Option<u32>, RateAlgorithm),
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
        failure: Option<crate::error::ErrorClass>,
        now: Instant,
        rng: &dyn crate::random::Random,
    ) -> Option<crate::breaker::BreakerTransition> {
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
    pub(crate) fn scope(&self) -> BreakerScope {
        BreakerScope::Echelon {
            group: self.group.clone(),
            echelon: self.spec.name.clone(),
        }
    }

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

    pub(crate) fn acquire(
        &self,
        now: Instant,
        sink: &dyn EventSink,
    ) -> Result<EchelonPermit, Unavailable> {
        let slot = self
            .live
            .concurrency
            .try_acquire()
            .map_err(Unavailable::Saturated)?;
        let breaker = self.live.breaker.try_acquire(now)?;
        if let Some(rpm) = &self.live.rpm {
            rpm.try_acquire(now, 1).map_err(Unavailable::Saturated)?;
        }
        if let Some(t) = breaker.transition() {
            sink.record(&Event::Breaker {
                scope: self.scope(),
                from: t.from,
                to: t.to,
                open_until: t.open_until,
            });
        }
        Ok(EchelonPermit {
            breaker,
            _slot: slot,
            live: Arc::clone(&self.live),
            used: false,
        })
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

/// Request-wide settings of a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RouteSettings {
    pub(crate) max_attempts: u32,
    pub(crate) retry_delay: Duration,
    pub(crate) deadline: Duration,
    pub(crate) provider_failover: bool,
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

/// Why a name does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No wrapper, group, pool or model has this name.
    #[error("model `{name}` not found")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The group exists but has no such echelon.
    #[error("task group `{group}` has no echelon `{echelon}`")]
    UnknownEchelon {
        /// The group.
        group: GroupName,
        /// The echelon asked for.
        echelon: String,
    },
}

/// What an instance's live state was built from; a change means fresh live state on reload.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    spec: InstanceSpec,
    policy: InstancePolicy,
    base_url: String,
    key: Option<Secret>,
}

/// The routing table. See the module docs.
#[derive(Debug)]
pub struct RoutingTable {
    topology: Arc<Topology>,
    options: TableOptions,
    instances: BTreeMap<InstanceId, (SharedInstance, Fingerprint)>,
    pools: BTreeMap<PoolName, Arc<PoolRuntime>>,
    models: BTreeMap<ModelRef, Arc<PoolRuntime>>,
    groups: BTreeMap<GroupName, Arc<GroupRuntime>>,
    group_routes: BTreeMap<GroupName, Arc<RoutePlan>>,
    echelon_routes: BTreeMap<(GroupName, EchelonName), Arc<RoutePlan>>,
    pool_routes: BTreeMap<PoolName, Arc<RoutePlan>>,
    model_routes: BTreeMap<ModelRef, Arc<RoutePlan>>,
    built_at: Instant,
}

fn tighter(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl RoutingTable {
    /// Builds live state for `topology` at `now`, carrying over the live state of `previous` for
    /// every instance and echelon whose identity and relevant settings are unchanged.
    ///
    /// An instance listed in several places (several pools, or a pool and a direct model route)
    /// has one live state: it follows the health, breaker and rate-counting policy of the first
    /// pool listing it (by pool name; defaults when only routed directly) and the tightest limits
    /// of all its listings. Weights stay per pool.
    pub fn build(
        topology: Arc<Topology>,
        previous: Option<&RoutingTable>,
        options: TableOptions,
        now: Instant,
    ) -> Self {
        let instances = Self::build_instances(&topology, previous, now);
        let shared = |id: &InstanceId| instances.get(id).map(|(s, _)| Arc::clone(s));

        let mut pools = BTreeMap::new();
        for (name, spec) in &topology.pools {
            let members: Vec<_> = spec
                .instances
                .iter()
                .filter_map(|i| shared(&i.id))
                .collect();
            let weights: Vec<u32> = spec.instances.iter().map(|i| i.weight).collect();
            let previous_pool = previous.and_then(|p| p.pools.get(name));
            let counters = previous_pool.map_or_else(Default::default, |p| Arc::clone(&p.counters));
            let limits = match previous_pool.and_then(|p| p.limits.as_ref()) {
                Some(old) if old.key == (spec.limits, spec.rate_algorithm) => Some(Arc::clone(old)),
                _ => PoolLimits::new(spec.limits, spec.rate_algorithm, now),
            };
            pools.insert(
                name.clone(),
                Arc::new(PoolRuntime {
                    label: PoolLabel::Pool(name.clone()),
                    rotation: Rotation::new(spec.rotation, &weights),
                    max_attempts: spec.fallback.max_instance_attempts.max(1),
                    members: members.into(),
                    counters,
                    limits,
                }),
            );
        }
        let mut models = BTreeMap::new();
        for model in topology.models.keys() {
            let members: Vec<_> = topology
                .instances_of_model(model)
                .iter()
                .filter_map(|i| shared(&i.id))
                .collect();
            let counters = previous
                .and_then(|p| p.models.get(model))
                .map_or_else(Default::default, |p| Arc::clone(&p.counters));
            models.insert(
                model.clone(),
                Arc::new(PoolRuntime {
                    label: PoolLabel::Model(model.clone()),
                    rotation: Rotation::new(RotationStrategy::RoundRobin, &vec![1; members.len()]),
                    max_attempts: u32::try_from(members.len()).unwrap_or(u32::MAX).max(1),
                    members: members.into(),
                    counters,
                    limits: None,
                }),
            );
        }

        let mut groups = BTreeMap::new();
        for (name, spec) in &topology.task_groups {
            let prev = previous.and_then(|p| p.groups.get(name));
            let mut echelons: Vec<Arc<EchelonRuntime>> = spec
                .echelons
                .iter()
                .map(|e| {
                    let key = (
                        spec.breaker,
                        e.concurrency_limit,
                        e.rpm_limit,
                        RateAlgorithm::TokenBucket,
                    );
                    let carried = prev
                        .and_then(|g| g.echelons.iter().find(|x| x.spec.name == e.name))
                        .filter(|x| x.live.key == key)
                        .map(|x| Arc::clone(&x.live));
                    let live = carried.unwrap_or_else(|| {
                        Arc::new(EchelonLive {
                            breaker: CircuitBreaker::new(spec.breaker),
                            concurrency: ConcurrencyLimiter::new(e.concurrency_limit),
                            rpm: e.rpm_limit.map(|n| {
                                RateLimiter::new(
                                    LimitKind::Requests,
                                    n,
                                    RateAlgorithm::TokenBucket,
                                    now,
                                )
                            }),
                            counters: Counters::default(),
                            cursor: AtomicU64::new(0),
                            key,
                        })
                    });
                    Arc::new(EchelonRuntime {
                        group: name.clone(),
                        spec: e.clone(),
                        live,
                    })
                })
                .collect();
            echelons.sort_by_key(|e| e.spec.priority);
            groups.insert(
                name.clone(),
                Arc::new(GroupRuntime {
                    spec: spec.clone(),
                    echelons,
                    counters: prev.map_or_else(Default::default, |g| Arc::clone(&g.counters)),
                }),
            );
        }

        let mut table = Self {
            topology,
            options,
            instances,
            pools,
            models,
            groups,
            group_routes: BTreeMap::new(),
            echelon_routes: BTreeMap::new(),
            pool_routes: BTreeMap::new(),
            model_routes: BTreeMap::new(),
            built_at: now,
        };
        table.build_routes();
        table
    }

    fn build_instances(
        topology: &Topology,
        previous: Option<&RoutingTable>,
        now: Instant,
    ) -> BTreeMap<InstanceId, (SharedInstance, Fingerprint)> {
        // Every listing: pool members first (pools by name), then direct model routes.
        let mut merged: BTreeMap<InstanceId, (InstanceSpec, InstancePolicy)> = BTreeMap::new();
        let pool_listings = topology.pools.values().flat_map(|pool| {
            let policy = InstancePolicy {
                health: pool.health,
                breaker: pool.breaker,
                rate_algorithm: pool.rate_algorithm,
            };
            pool.instances.iter().map(move |i| (i.clone(), policy))
        });
        let model_listings = topology.models.keys().flat_map(|m| {
            topology
                .instances_of_model(m)
                .into_iter()
                .map(|i| (i, InstancePolicy::default()))
        });
        for (spec, policy) in pool_listings.chain(model_listings) {
            merged
                .entry(spec.id.clone())
                .and_modify(|(s, _)| {
                    s.limits = Limits {
                        rpm: tighter(s.limits.rpm, spec.limits.rpm),
                        tpm: tighter(s.limits.tpm, spec.limits.tpm),
                        max_concurrency: tighter(
                            s.limits.max_concurrency,
                            spec.limits.max_concurrency,
                        ),
                    };
                })
                .or_insert_with(|| (InstanceSpec { weight: 1, ..spec }, policy));
        }
        merged
            .into_iter()
            .map(|(id, (spec, policy))| {
                let provider = topology.providers.get(&id.model.provider);
                let fingerprint = Fingerprint {
                    spec: spec.clone(),
                    policy,
                    base_url: provider.map(|p| p.base_url.clone()).unwrap_or_default(),
                    key: provider.and_then(|p| p.api_keys.get(usize::from(id.key_index)).cloned()),
                };
                let carried = previous
                    .and_then(|p| p.instances.get(&id))
                    .filter(|(_, f)| *f == fingerprint)
                    .map(|(s, _)| {
                        s.revive_key();
                        Arc::clone(s)
                    });
                let state =
                    carried.unwrap_or_else(|| Arc::new(InstanceState::new(spec, policy, now)));
                (id, (state, fingerprint))
            })
            .collect()
    }

    fn build_routes(&mut self) {
        let defaults = self.options.route_defaults;
        let default_settings = RouteSettings {
            max_attempts: defaults.max_attempts.max(1),
            retry_delay: defaults.retry_delay,
            deadline: defaults.deadline,
            provider_failover: false,
        };
        for name in self.groups.keys().cloned().collect::<Vec<_>>() {
            let plan = self.group_plan(&name, None);
            self.group_routes.insert(name.clone(), Arc::new(plan));
            let echelons: Vec<_> = self.groups[&name]
                .echelons
                .iter()
                .map(|e| e.spec.name.clone())
                .collect();
            for echelon in echelons {
                let plan = self.group_plan(&name, Some(&echelon));
                self.echelon_routes
                    .insert((name.clone(), echelon), Arc::new(plan));
            }
        }
        for name in self.pools.keys().cloned().collect::<Vec<_>>() {
            let mut cycles = Vec::new();
            let targets = self.expand_pool(&name, &mut BTreeSet::new(), &mut cycles);
            let stage = self.plain_stage(Arc::from(format!("pool:{name}")), targets);
            self.pool_routes.insert(
                name,
                Arc::new(RoutePlan {
                    stages: Box::new([stage]),
                    settings: default_settings,
                    cycles: cycles.into(),
                }),
            );
        }
        for (model, pool) in &self.models {
            let stage = self.plain_stage(Arc::from(model.to_string()), vec![Arc::clone(pool)]);
            self.model_routes.insert(
                model.clone(),
                Arc::new(RoutePlan {
                    stages: Box::new([stage]),
                    settings: default_settings,
                    cycles: Box::new([]),
                }),
            );
        }
    }

    fn plain_stage(&self, label: Arc<str>, targets: Vec<Arc<PoolRuntime>>) -> Stage {
        let d = self.options.route_defaults;
        Stage {
            label,
            group: None,
            group_counters: None,
            echelon: None,
            targets: targets.into(),
            per_target: None,
            rotating: 0,
            timeouts: AttemptTimeouts {
                total: d.timeout,
                first_token: d.first_token_timeout,
                idle: d.idle_timeout,
            },
            max_retries: d.max_retries,
            retry_after_max_wait: d.retry_after_max_wait,
            defaults: RequestDefaults::default(),
        }
    }

    /// A pool followed by its fallback pools (transitively, each once).
    fn expand_pool(
        &self,
        name: &PoolName,
        seen: &mut BTreeSet<PoolName>,
        cycles: &mut Vec<Arc<str>>,
    ) -> Vec<Arc<PoolRuntime>> {
        if !seen.insert(name.clone()) {
            cycles.push(Arc::from(format!("pool:{name}")));
            return Vec::new();
        }
        let Some(pool) = self.pools.get(name) else {
            return Vec::new();
        };
        let mut out = vec![Arc::clone(pool)];
        if let Some(spec) = self.topology.pools.get(name)
            && spec.fallback.strategy == PoolFallbackStrategy::PoolFallback
        {
            for next in &spec.fallback.fallback_pools {
                out.extend(self.expand_pool(next, seen, cycles));
            }
        }
        out
    }

    fn echelon_stage(&self, group: &GroupRuntime, echelon: &Arc<EchelonRuntime>) -> Stage {
        let e = &echelon.spec;
        let mut seen = BTreeSet::new();
        let mut cycles = Vec::new();
        let mut targets = Vec::new();
        let mut fallbacks = Vec::new();
        for target in &e.targets {
            match target {
                EchelonTarget::Model(model) => {
                    if let Some(pool) = self.models.get(model) {
                        targets.push(Arc::clone(pool));
                    }
                }
                EchelonTarget::Pool(pool) => {
                    let mut expanded = self.expand_pool(pool, &mut seen, &mut cycles).into_iter();
                    targets.extend(expanded.next());
                    fallbacks.extend(expanded);
                }
            }
        }
        let rotating = targets.len();
        // A fallback pool that the echelon also lists itself is already a primary target.
        fallbacks.retain(|f| !targets.iter().any(|t| Arc::ptr_eq(t, f)));
        let mut unique: Vec<Arc<PoolRuntime>> = Vec::with_capacity(fallbacks.len());
        for f in fallbacks {
            if !unique.iter().any(|u| Arc::ptr_eq(u, &f)) {
                unique.push(f);
            }
        }
        targets.extend(unique);
        let model_rotate = group.spec.fallback_strategy == FallbackStrategy::ModelRotate;
        Stage {
            label: Arc::from(format!("{} › {}", group.spec.name, e.name)),
            group: Some(group.spec.name.clone()),
            group_counters: Some(Arc::clone(&group.counters)),
            echelon: Some(Arc::clone(echelon)),
            targets: targets.into(),
            per_target: model_rotate.then_some(1),
            rotating: if model_rotate { 0 } else { rotating },
            timeouts: AttemptTimeouts {
                total: e.timeout,
                first_token: e.first_token_timeout,
                idle: e.idle_timeout,
            },
            max_retries: if model_rotate { 0 } else { e.max_retries },
            retry_after_max_wait: e.retry_after_max_wait,
            defaults: e.defaults,
        }
    }

    /// The walk of a group (or one of its echelons), with `group_fallback` references followed
    /// transitively; a reference to a group or echelon already in the walk is dropped as a cycle.
    fn group_plan(&self, name: &GroupName, only: Option<&EchelonName>) -> RoutePlan {
        let root = &self.groups[name];
        let mut stages = Vec::new();
        let mut cycles = Vec::new();
        let mut seen_groups = BTreeSet::new();
        let mut seen_echelons = BTreeSet::new();
        let mut queue = std::collections::VecDeque::new();
        queue.push_back((name.clone(), only.cloned()));
        while let Some((group_name, echelon)) = queue.pop_front() {
            let Some(group) = self.groups.get(&group_name) else {
                continue;
            };
            let whole = echelon.is_none();
            if seen_groups.contains(&group_name)
                || echelon
                    .as_ref()
                    .is_some_and(|e| seen_echelons.contains(&(group_name.clone(), e.clone())))
            {
                let label = match &echelon {
                    Some(e) => format!("group:{group_name}.{e}"),
                    None => format!("group:{group_name}"),
                };
                cycles.push(Arc::from(label));
                continue;
            }
            if whole {
                seen_groups.insert(group_name.clone());
            }
            for e in &group.echelons {
                if echelon.as_ref().is_some_and(|only| *only != e.spec.name)
                    || !seen_echelons.insert((group_name.clone(), e.spec.name.clone()))
                {
                    continue;
                }
                stages.push(self.echelon_stage(group, e));
            }
            // Fallback groups are followed for whole groups only: `group:NAME.echelonN` is a
            // request for that one echelon.
            if whole && group.spec.fallback_strategy == FallbackStrategy::GroupFallback {
                for r in &group.spec.fallback.fallback_groups {
                    queue.push_back((r.group.clone(), r.echelon.clone()));
                }
            }
        }
        let f = &root.spec.fallback;
        RoutePlan {
            stages: stages.into(),
            settings: RouteSettings {
                max_attempts: f.max_attempts.max(1),
                retry_delay: f.retry_delay,
                deadline: f.deadline,
                provider_failover: root.spec.fallback_strategy
                    == FallbackStrategy::ProviderFailover,
            },
            cycles: cycles.into(),
        }
    }

    /// The topology this table was built from.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// The options it was built with.
    pub fn options(&self) -> &TableOptions {
        &self.options
    }

    /// When it was built.
    pub fn built_at(&self) -> Instant {
        self.built_at
    }

    /// The event sink.
    pub fn sink(&self) -> &dyn EventSink {
        &*self.options.sink
    }

    /// The live state of an instance.
    pub fn instance(&self, id: &InstanceId) -> Option<&SharedInstance> {
        self.instances.get(id).map(|(s, _)| s)
    }

    /// Every instance's live state, by id.
    pub fn instances(&self) -> impl Iterator<Item = &SharedInstance> {
        self.instances.values().map(|(s, _)| s)
    }

    /// Records an active probe's result for an instance (see
    /// [`InstanceState::record_probe`]); false when the instance is unknown.
    pub fn record_probe(&self, id: &InstanceId, now: Instant, ok: bool) -> bool {
        self.instance(id)
            .map(|i| i.record_probe(now, ok, self.sink()))
            .is_some()
    }

    /// Every instance to probe, with its pool's health-check settings (the first pool listing
    /// it, by name, whose checks are enabled). Instances only routed directly are not probed.
    pub fn probe_targets(&self) -> Vec<(SharedInstance, crate::spec::HealthCheckSpec)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for pool in self.topology.pools.values() {
            if !pool.health_check.enabled {
                continue;
            }
            for i in &pool.instances {
                if seen.insert(i.id.clone())
                    && let Some(state) = self.instance(&i.id)
                {
                    out.push((Arc::clone(state), pool.health_check));
                }
            }
        }
        out
    }

    /// Every name a client can send: wrappers, `group:NAME`, `group:NAME.echelonN`, `pool:NAME`
    /// and `provider/model`.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .topology
            .wrappers
            .keys()
            .map(ToString::to_string)
            .collect();
        for (group, runtime) in &self.groups {
            names.push(format!("group:{group}"));
            for e in &runtime.echelons {
                names.push(format!("group:{group}.{}", e.spec.name));
            }
        }
        names.extend(self.pools.keys().map(|p| format!("pool:{p}")));
        names.extend(self.models.keys().map(ToString::to_string));
        names
    }

    /// Resolves a client-facing name: `group:NAME`, `group:NAME.echelonN`, `pool:NAME`, a
    /// wrapper name, or `provider/model`, in that order.
    pub fn resolve(&self, name: &str) -> Result<Route, ResolveError> {
        let not_found = || ResolveError::NotFound {
            name: name.to_owned(),
        };
        if let Some(rest) = name.strip_prefix("group:") {
            return self.group_route(rest, None).ok_or_else(not_found)?;
        }
        if let Some(rest) = name.strip_prefix("pool:") {
            return self
                .pool_route(&PoolName::new(rest), None)
                .ok_or_else(not_found);
        }
        if let Some(wrapper) = self.topology.wrappers.get(name) {
            let w = Some(wrapper.name.clone());
            return match &wrapper.target {
                WrapperTarget::TaskGroup(group) => {
                    self.group_route(group.as_str(), w).ok_or_else(not_found)?
                }
                WrapperTarget::Pool(pool) => self.pool_route(pool, w).ok_or_else(not_found),
                WrapperTarget::Direct(model) => self.model_route(model, w).ok_or_else(not_found),
            };
        }
        ModelRef::parse(name)
            .and_then(|model| self.model_route(&model, None))
            .ok_or_else(not_found)
    }

    fn group_route(
        &self,
        text: &str,
        wrapper: Option<WrapperName>,
    ) -> Option<Result<Route, ResolveError>> {
        if let Some(plan) = self.group_routes.get(text) {
            return Some(Ok(Route {
                wrapper,
                target: RouteTarget::Group {
                    group: GroupName::new(text),
                    echelon: None,
                },
                plan: Arc::clone(plan),
            }));
        }
        let (group, echelon) = text.rsplit_once('.')?;
        let group = GroupName::new(group);
        self.groups.get(&group)?;
        let key = (group.clone(), EchelonName::new(echelon));
        let Some(plan) = self.echelon_routes.get(&key) else {
            return Some(Err(ResolveError::UnknownEchelon {
                group,
                echelon: echelon.to_owned(),
            }));
        };
        Some(Ok(Route {
            wrapper,
            target: RouteTarget::Group {
                group,
                echelon: Some(key.1),
            },
            plan: Arc::clone(plan),
        }))
    }

    fn pool_route(&self, pool: &PoolName, wrapper: Option<WrapperName>) -> Option<Route> {
        self.pool_routes.get(pool).map(|plan| Route {
            wrapper,
            target: RouteTarget::Pool(pool.clone()),
            plan: Arc::clone(plan),
        })
    }

    fn model_route(&self, model: &ModelRef, wrapper: Option<WrapperName>) -> Option<Route> {
        self.model_routes.get(model).map(|plan| Route {
            wrapper,
            target: RouteTarget::Model(model.clone()),
            plan: Arc::clone(plan),
        })
    }

    /// A snapshot of one instance at `now`.
    pub fn instance_snapshot(&self, id: &InstanceId, now: Instant) -> Option<InstanceSnapshot> {
        self.instance(id).map(|i| instance_snapshot(i, now))
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
}
