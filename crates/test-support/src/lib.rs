//! Hand-made topologies for the tests and benches of every crate, so that each spec type is
//! written out once with the defaults the tests share.
//!
//! Each function returns one validated-looking spec value; a test that needs something else
//! changes it with struct update syntax (`PoolSpec { health, ..pool("main", rotation, members) }`)
//! rather than writing the whole literal again. The crates' own `tests/it/support.rs` builders
//! are thin layers over these; [`snapshot`] reads what a table reports afterwards. A
//! dev-dependency only: no library depends on it (`CRATE_DEV_EDGES` in xtask/src/rules.rs).

pub mod redis_server;
pub mod snapshot;

use core::time::Duration;
use std::sync::Arc;

use echelon_domain::instance::{InstancePolicy, InstanceState, SharedInstance};
use echelon_domain::name::{InstanceId, ModelRef, PoolName};
use echelon_domain::secret::Secret;
use echelon_domain::spec::{
    BreakerPolicy, Cost, EchelonSpec, EchelonTarget, FallbackStrategy, GroupFallback,
    HealthCheckSpec, HealthPolicy, InstanceSpec, Limits, ModelSpec, PoolFallback,
    PoolFallbackStrategy, PoolSpec, ProviderKind, ProviderSpec, RateAlgorithm, RequestDefaults,
    RotationStrategy, TaskGroupSpec,
};
use echelon_domain::time::Instant;

/// An in-process mock provider `name` with `keys` keys (`sk-NAME-0`, …): a 1 s connect and a
/// 600 s request timeout, so that the echelons' timeouts are the ones that count.
pub fn provider(name: &str, keys: usize) -> ProviderSpec {
    ProviderSpec {
        name: name.into(),
        kind: ProviderKind::Mock,
        base_url: format!("http://127.0.0.1:9/{name}"),
        api_keys: (0..keys)
            .map(|i| Secret::new(format!("sk-{name}-{i}")))
            .collect(),
        headers: Vec::new(),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(600),
        mock: None,
    }
}

/// Model `provider/model`, known upstream as `upstream`, without limits or cost.
pub fn model(model: &str, upstream: &str, context_window: Option<u32>) -> ModelSpec {
    ModelSpec {
        model: ModelRef::parse(model).unwrap(),
        upstream_name: upstream.to_owned(),
        context_window,
        limits: Limits::default(),
        cost: Cost::default(),
    }
}

/// Key `key` of `model` as a pool member of `weight`, with the model's limits and window.
pub fn instance(model: &ModelSpec, key: u16, weight: u32) -> InstanceSpec {
    InstanceSpec {
        id: InstanceId::new(model.model.clone(), key),
        upstream_name: model.upstream_name.clone(),
        weight,
        limits: model.limits,
        context_window: model.context_window,
    }
}

/// Pool `name` of `instances` under `rotation`, with default health, breaker and limits, and up
/// to three instances tried in rotation.
pub fn pool(name: &str, rotation: RotationStrategy, instances: Vec<InstanceSpec>) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        rotation,
        instances,
        health: HealthPolicy::default(),
        health_check: HealthCheckSpec::default(),
        breaker: BreakerPolicy::default(),
        max_ejection_percent: echelon_domain::defaults::pool::MAX_EJECTION_PERCENT,
        fallback: PoolFallback {
            strategy: PoolFallbackStrategy::InstanceRotation,
            max_instance_attempts: 3,
            fallback_pools: Vec::new(),
        },
        limits: Limits::default(),
        rate_algorithm: RateAlgorithm::TokenBucket,
    }
}

/// An echelon target written as in configuration: `pool:NAME` or `provider/model`.
pub fn target(text: &str) -> EchelonTarget {
    match text.strip_prefix("pool:") {
        Some(pool) => EchelonTarget::Pool(PoolName::new(pool)),
        None => EchelonTarget::Model(ModelRef::parse(text).unwrap()),
    }
}

/// Echelon `name` of `priority` over `targets`: 30 s an attempt, 10 s to the first token and
/// between chunks, no retries, Retry-After waited up to 5 s.
pub fn echelon(name: &str, priority: u32, targets: &[&str]) -> EchelonSpec {
    EchelonSpec {
        name: name.into(),
        priority,
        targets: targets.iter().map(|t| target(t)).collect(),
        breaker: None,
        concurrency_limit: None,
        rpm_limit: None,
        timeout: Duration::from_secs(30),
        first_token_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        max_retries: 0,
        retry_after_max_wait: Duration::from_secs(5),
        defaults: RequestDefaults::default(),
    }
}

/// A ladder of [`echelon`]s named `echelon1`, `echelon2`, … with priorities 1, 2, …
pub fn ladder(echelons: &[&[&str]]) -> Vec<EchelonSpec> {
    (1..)
        .zip(echelons)
        .map(|(n, targets)| echelon(&format!("echelon{n}"), n, targets))
        .collect()
}

/// Task group `name` over `echelons`: at most 10 attempts, 100 ms between them, 60 s a request,
/// no fallback groups.
pub fn group(name: &str, strategy: FallbackStrategy, echelons: Vec<EchelonSpec>) -> TaskGroupSpec {
    TaskGroupSpec {
        name: name.into(),
        fallback_strategy: strategy,
        breaker: BreakerPolicy::default(),
        fallback: GroupFallback {
            fallback_groups: Vec::new(),
            max_attempts: 10,
            retry_delay: Duration::from_millis(100),
            deadline: Duration::from_secs(60),
            content_filter_fallback: false,
        },
        echelons,
    }
}

/// `n` live instances `p/m#0`, `p/m#1`, … of weight one, for the rotation strategies alone.
pub fn members(n: usize) -> Vec<SharedInstance> {
    let model = model("p/m", "m", None);
    (0..n)
        .map(|i| {
            Arc::new(InstanceState::new(
                instance(&model, u16::try_from(i).unwrap(), 1),
                InstancePolicy::default(),
                Instant::ZERO,
            ))
        })
        .collect()
}
