//! Phase 1 schema: the raw shape of every file of the tree, as serde structs that refuse unknown
//! keys. Leaves are [`Val`]s (converted and range-checked in phase 2), and every key is optional
//! here so that one missing key never hides the other problems of a file; phase 2 reports the
//! required ones.

use core::time::Duration;
use std::collections::BTreeMap;

use echelon_domain::secret::Secret;
use serde::Deserialize;

use crate::de::{Here, Val};
use crate::value::ByteSize;

/// `llms/_registry.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistry {
    pub registry: Option<RawRegistryHeader>,
    pub global: Option<RawGlobal>,
    pub route_defaults: Option<RawRouteDefaults>,
    pub retry_budget: Option<RawRetryBudget>,
    pub providers: Option<BTreeMap<String, RawRegistryEntry>>,
    pub pools: Option<BTreeMap<String, RawRegistryEntry>>,
    pub task_groups: Option<BTreeMap<String, RawRegistryEntry>>,
    pub wrappers: Option<BTreeMap<String, RawRegistryEntry>>,
    pub strategies: Option<BTreeMap<String, RawRegistryEntry>>,
}

/// `[retry_budget]` of the registry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetryBudget {
    pub ratio: Option<Val<f64>>,
    pub min_per_second: Option<Val<u32>>,
    pub window: Option<Val<Duration>>,
}

/// `[registry]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistryHeader {
    pub version: Option<Val<u32>>,
}

/// `[global]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobal {
    pub validation: Option<Val<crate::ValidationMode>>,
    pub hot_reload: Option<Val<bool>>,
    pub debounce: Option<Val<Duration>>,
}

/// `[route_defaults]`: settings of routes without an echelon; the keys of a task group's
/// `[fallback]` and of an echelon.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteDefaults {
    pub max_attempts: Option<Val<u32>>,
    pub retry_delay: Option<Val<Duration>>,
    pub deadline: Option<Val<Duration>>,
    pub timeout: Option<Val<Duration>>,
    pub first_token_timeout: Option<Val<Duration>>,
    pub idle_timeout: Option<Val<Duration>>,
    pub max_retries: Option<Val<u32>>,
    pub retry_after_max_wait: Option<Val<Duration>>,
}

/// `name = { file = "...", enabled = true }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistryEntry {
    #[serde(rename = "$here", default)]
    pub here: Here,
    pub file: Option<Val<String>>,
    pub enabled: Option<Val<bool>>,
}

/// `llms/providers/<name>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    #[serde(rename = "$here", default)]
    pub here: Here,
    pub kind: Option<Val<echelon_domain::spec::ProviderKind>>,
    pub base_url: Option<Val<String>>,
    pub api_key: Option<Val<Secret>>,
    pub api_keys: Option<Vec<Val<Secret>>>,
    pub connect_timeout: Option<Val<Duration>>,
    pub request_timeout: Option<Val<Duration>>,
    pub headers: Option<BTreeMap<String, Val<Secret>>>,
    pub models: Option<BTreeMap<String, RawModel>>,
    pub mock: Option<RawMock>,
}

/// `[models.<id>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    #[serde(rename = "$here", default)]
    pub here: Here,
    pub upstream: Option<Val<String>>,
    pub context_window: Option<Val<u32>>,
    pub rpm_limit: Option<Val<u32>>,
    pub tpm_limit: Option<Val<u32>>,
    pub max_concurrency: Option<Val<u32>>,
    pub cost: Option<RawCost>,
}

/// `cost = { input = 0.15, output = 0.6 }`, per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCost {
    pub input: Option<Val<f64>>,
    pub output: Option<Val<f64>>,
}

/// `[mock]` of a `kind = "mock"` provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMock {
    #[serde(rename = "$here", default)]
    pub here: Here,
    pub latency: Option<Val<Duration>>,
    pub error_rate: Option<Val<f64>>,
    pub reply: Option<Val<String>>,
}

/// `llms/pools/<name>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    #[serde(rename = "$here", default)]
    pub here: Here,
    pub rotation: Option<Val<echelon_domain::spec::RotationStrategy>>,
    pub instances: Option<Vec<RawInstance>>,
    pub task_groups: Option<Vec<Val<String>>>,
    pub max_ejection_percent: Option<Val<u32>>,
    pub health_check: Option<RawHealthCheck>,
    pub fallback: Option<RawPoolFallback>,
    pub rate_limit: Option<RawRateLimit>,
    pub concurrency: Option<RawConcurrency>,
    pub circuit_breaker: Option<RawBreaker>,
}

/// `[[instances]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInstance {
    #[serde(rename = "$here", default)]
    pub here: Here,
    pub model: Option<Val<String>>,
    pub key: Option<Val<u16>>,
    pub weight: Option<Val<u32>>,
    pub rpm_limit: Option<Val<u32>>,
    pub tpm_limit: Option<Val<u32>>,
    pub max_concurrency: Option<Val<u32>>,
}

/// `[health_check]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub enabled: Option<Val<bool>>,
    pub interval: Option<Val<Duration>>,
    pub timeout: Option<Val<Duration>>,
    pub probe: Option<Val<echelon_domain::spec::ProbeKind>>,
    pub failure_threshold: Option<Val<u32>>,
    pub success_threshold: Option<Val<u32>>,
    pub recovery_time: Option<Val<Duration>>,
}

/// A pool's `[fallback]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPoolFallback {
    pub strategy: Option<Val<echelon_domain::spec::PoolFallbackStrategy>>,
    pub max_instance_attempts: Option<Val<u32>>,
    pub fallback_pools: Option<Vec<Val<String>>>,
}

/// `[rate_limit]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub rpm: Option<Val<u32>>,
    pub tpm: Option<Val<u32>>,
    pub algorithm: Option<Val<echelon_domain::spec::RateAlgorithm>>,
}

/// `[concurrency]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConcurrency {
    pub max: Option<Val<u32>>,
}

/// `[circuit_breaker]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub failure_threshold: Option<Val<u32>>,
    pub recovery_time: Option<Val<Duration>>,
    pub max_recovery_time: Option<Val<Duration>>,
    pub half_open_requests: Option<Val<u32>>,
    pub failure_rate: Option<RawFailureRate>,
}

/// `[circuit_breaker.failure_rate]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFailureRate {
    pub enabled: Option<Val<bool>>,
    pub threshold: Option<Val<f64>>,
    pub window: Option<Val<Duration>>,
    pub min_calls: Option<Val<u32>>,
}

/// `llms/task-groups/<name>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    #[serde(rename = "$here", default)]
    pub here: Here,
    pub fallback_strategy: Option<Val<echelon_domain::spec::FallbackStrategy>>,
    pub circuit_breaker: Option<RawBreaker>,
    pub fallback: Option<RawGroupFallback>,
    pub echelons: Option<BTreeMap<String, RawEchelon>>,
}

/// A task group's `[fallback]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroupFallback {
    pub fallback_groups: Option<Vec<Val<String>>>,
    pub max_attempts: Option<Val<u32>>,
    pub retry_delay: Option<Val<Duration>>,
    pub deadline: Option<Val<Duration>>,
    pub content_filter_fallback: Option<Val<bool>>,
}

/// `[echelons.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEchelon {
    #[serde(rename = "$here", default)]
    pub here: Here,
    pub models: Option<Vec<Val<String>>>,
    pub priority: Option<Val<u32>>,
    pub concurrency_limit: Option<Val<u32>>,
    pub rpm_limit: Option<Val<u32>>,
    pub circuit_breaker: Option<RawBreaker>,
    pub timeout: Option<Val<Duration>>,
    pub first_token_timeout: Option<Val<Duration>>,
    pub idle_timeout: Option<Val<Duration>>,
    pub max_retries: Option<Val<u32>>,
    pub retry_after_max_wait: Option<Val<Duration>>,
    pub defaults: Option<RawDefaults>,
}

/// `defaults = { temperature = 0.2, max_tokens = 1024 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    pub temperature: Option<Val<f32>>,
    pub max_tokens: Option<Val<u32>>,
}

/// `llms/wrappers/<file>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWrapperFile {
    #[serde(rename = "$here", default)]
    pub here: Here,
    pub wrappers: Option<BTreeMap<String, RawWrapper>>,
}

/// `[wrappers.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWrapper {
    #[serde(rename = "$here", default)]
    pub here: Here,
    #[serde(rename = "type")]
    pub kind: Option<Val<crate::topology::WrapperKind>>,
    pub target: Option<Val<String>>,
    pub description: Option<Val<String>>,
    pub enabled: Option<Val<bool>>,
}

/// `configs/gateway.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub server: Option<RawServer>,
    pub auth: Option<RawAuth>,
    pub telemetry: Option<RawTelemetry>,
    pub state: Option<RawState>,
    pub alerts: Option<RawAlerts>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<Val<String>>,
    pub max_body_size: Option<Val<ByteSize>>,
    pub request_timeout: Option<Val<Duration>>,
    pub shutdown_grace: Option<Val<Duration>>,
    pub header_read_timeout: Option<Val<Duration>>,
    pub idle_timeout: Option<Val<Duration>>,
    pub body_read_timeout: Option<Val<Duration>>,
    pub max_header_size: Option<Val<ByteSize>>,
    pub max_connections: Option<Val<u32>>,
    pub tls_cert: Option<Val<String>>,
    pub tls_key: Option<Val<String>>,
}

/// `[auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub api_keys: Option<Vec<Val<Secret>>>,
    pub admin_key: Option<Val<Secret>>,
}

/// `[telemetry]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    pub log_format: Option<Val<crate::gateway::LogFormat>>,
    pub log_level: Option<Val<String>>,
    pub otlp_endpoint: Option<Val<String>>,
    pub service_name: Option<Val<String>>,
}

/// `[state]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    #[serde(rename = "$here", default)]
    pub here: Here,
    pub backend: Option<Val<crate::gateway::StateBackendKind>>,
    pub redis_url: Option<Val<Secret>>,
    pub key_prefix: Option<Val<String>>,
    pub timeout: Option<Val<Duration>>,
    pub sync_interval: Option<Val<Duration>>,
    pub retry_interval: Option<Val<Duration>>,
    pub fail_mode: Option<Val<echelon_domain::shared::FailMode>>,
    pub replicas: Option<Val<u32>>,
}

/// `[alerts]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlerts {
    pub evaluation_interval: Option<Val<Duration>>,
    pub webhooks: Option<Vec<Val<Secret>>>,
    pub rules: Option<Vec<RawAlertRule>>,
}

/// `[[alerts.rules]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlertRule {
    #[serde(rename = "$here", default)]
    pub here: Here,
    pub name: Option<Val<String>>,
    pub kind: Option<Val<crate::gateway::AlertKind>>,
    pub metric: Option<Val<crate::gateway::AlertMetric>>,
    pub target: Option<Val<String>>,
    pub op: Option<Val<crate::gateway::Comparison>>,
    pub value: Option<Val<f64>>,
    pub window: Option<Val<Duration>>,
    pub rules: Option<Vec<Val<String>>>,
    pub combine: Option<Val<crate::gateway::Combine>>,
    pub level: Option<Val<crate::gateway::AlertLevel>>,
    pub cooldown: Option<Val<Duration>>,
    pub description: Option<Val<String>>,
}
