//! Validated configuration values: providers, models, instances, pools, task groups and wrappers.
//!
//! `echelon-config` builds a [`Topology`] from the TOML tree after checking it completely; nothing
//! downstream sees half-checked input. Every value here is plain data. The live state that grows
//! from it (health, breakers, limiters) lives in the other modules.

use core::time::Duration;
use std::collections::BTreeMap;

use crate::defaults;
use crate::name::{
    EchelonName, GroupName, InstanceId, ModelName, ModelRef, PoolName, ProviderName, WrapperName,
};
use crate::secret::Secret;

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum ProviderKind {
    /// OpenAI chat completions and every compatible server (Azure OpenAI, vLLM, Ollama, DeepSeek,
    /// OpenRouter, …).
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
    /// The in-process mock provider, for offline runs and tests.
    Mock,
}

/// One provider account set (one `providers/*.toml` file).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ProviderSpec {
    /// The provider's name (file stem).
    pub name: ProviderName,
    /// Its protocol.
    pub kind: ProviderKind,
    /// The API root the adapters append endpoint paths to, version segment included:
    /// `https://api.openai.com/v1`, `https://api.anthropic.com/v1`,
    /// `https://generativelanguage.googleapis.com/v1beta`. echelon-config normalizes what users
    /// write to this form.
    pub base_url: String,
    /// Its keys; each becomes its own instance per model, labelled by index.
    pub api_keys: Vec<Secret>,
    /// Extra headers sent with every request (values may be secrets).
    pub headers: Vec<(String, Secret)>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Upper bound on a whole upstream request, as a backstop to the echelon's timeouts.
    pub request_timeout: Duration,
    /// Behaviour of a `mock` provider; ignored by the others.
    pub mock: Option<MockBehaviour>,
}

/// How an in-process `mock` provider answers.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MockBehaviour {
    /// Added latency before answering.
    pub latency: Duration,
    /// Share of requests (0..=1) that fail with a server error.
    pub error_rate: f64,
    /// A fixed reply; when absent the mock echoes the last user message.
    pub reply: Option<String>,
}

/// Price per million tokens, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Cost {
    /// Price of a million input tokens.
    pub input_per_mtok: f64,
    /// Price of a million output tokens.
    pub output_per_mtok: f64,
}

/// Rate and concurrency limits. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens per minute (input estimate plus output).
    pub tpm: Option<u32>,
    /// Requests in flight at once.
    pub max_concurrency: Option<u32>,
}

/// How rpm and tpm are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum RateAlgorithm {
    /// A bucket that refills continuously; allows short bursts up to the per-minute amount.
    #[default]
    TokenBucket,
    /// Counts over the last 60 seconds; no bursts beyond the limit in any window.
    SlidingWindow,
}

/// A model offered by a provider (`[models.<id>]`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ModelSpec {
    /// `provider/model`.
    pub model: ModelRef,
    /// The name the upstream API knows it by.
    pub upstream_name: String,
    /// Its context window in tokens, when known.
    pub context_window: Option<u32>,
    /// Limits per key for this model.
    pub limits: Limits,
    /// Prices.
    pub cost: Cost,
}

/// One instance of a pool: a model through one key, with its weight and limits.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct InstanceSpec {
    /// Which model through which key.
    pub id: InstanceId,
    /// The name the upstream API knows the model by.
    pub upstream_name: String,
    /// Share of traffic for weighted strategies (at least 1).
    pub weight: u32,
    /// Limits of this instance (the model's, tightened by the pool entry's).
    pub limits: Limits,
    /// Context window in tokens, when known.
    pub context_window: Option<u32>,
}

/// A pool's rotation strategy (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum RotationStrategy {
    /// Stable order; unavailable instances are skipped without reshuffling the others.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin: deterministic and evenly interleaved (earliest-deadline-first
    /// scheduling on virtual time, as Envoy does, so a pick costs O(log n)).
    WeightedRoundRobin,
    /// Random, in proportion to weight.
    WeightedRandom,
    /// Uniformly random.
    Random,
    /// Fewest requests in flight.
    LeastConnections,
    /// Longest since last use.
    LeastRecentlyUsed,
    /// Lowest latency average, once an instance has enough samples.
    FastestResponse,
    /// Power of two random choices on peak-EWMA latency × in-flight, with 429s and failures
    /// penalised.
    P2cEwma,
}

impl RotationStrategy {
    /// Every strategy, with its configuration name.
    pub const ALL: [(Self, &'static str); 8] = [
        (Self::RoundRobin, "round_robin"),
        (Self::WeightedRoundRobin, "weighted_round_robin"),
        (Self::WeightedRandom, "weighted_random"),
        (Self::Random, "random"),
        (Self::LeastConnections, "least_connections"),
        (Self::LeastRecentlyUsed, "least_recently_used"),
        (Self::FastestResponse, "fastest_response"),
        (Self::P2cEwma, "p2c_ewma"),
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("round_robin", |(_, name)| name)
    }

    /// Parses a configuration name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }
}

/// Thresholds of the health state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HealthPolicy {
    /// Consecutive failures that make an instance unhealthy (the first failure makes it degraded).
    pub failure_threshold: u32,
    /// Consecutive successes in `recovering` that make it healthy again.
    pub success_threshold: u32,
    /// How long an unhealthy instance rests before it may recover.
    pub recovery_time: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            failure_threshold: defaults::health::FAILURE_THRESHOLD,
            success_threshold: defaults::health::SUCCESS_THRESHOLD,
            recovery_time: defaults::health::RECOVERY_TIME,
        }
    }
}

/// What probes a health check sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum ProbeKind {
    /// List models: free on every provider.
    #[default]
    Models,
    /// A one-token completion: costs tokens; only when asked for.
    Completion,
}

/// Active health checking of a pool's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HealthCheckSpec {
    /// Whether probes run at all.
    pub enabled: bool,
    /// Time between probe rounds.
    pub interval: Duration,
    /// Timeout of one probe.
    pub timeout: Duration,
    /// What a probe sends.
    pub probe: ProbeKind,
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: defaults::health::CHECK_INTERVAL,
            timeout: defaults::health::CHECK_TIMEOUT,
            probe: ProbeKind::Models,
        }
    }
}

/// A failure-rate trigger for a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FailureRate {
    /// Share of failures (0..=1) that opens the breaker.
    pub threshold: f64,
    /// The window over which the rate is measured.
    pub window: Duration,
    /// Fewest calls in the window before the rate is trusted.
    pub min_calls: u32,
}

impl Default for FailureRate {
    fn default() -> Self {
        Self {
            threshold: defaults::breaker::FAILURE_RATE_THRESHOLD,
            window: defaults::breaker::FAILURE_RATE_WINDOW,
            min_calls: defaults::breaker::FAILURE_RATE_MIN_CALLS,
        }
    }
}

/// Circuit breaker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BreakerPolicy {
    /// Consecutive failures of distinct requests that open the breaker.
    pub failure_threshold: u32,
    /// The failure-rate trigger (`None`: streaks only).
    pub failure_rate: Option<FailureRate>,
    /// Time open before the first half-open trial.
    pub recovery_time: Duration,
    /// Cap on the open time, which grows with each repeated trip.
    pub max_recovery_time: Duration,
    /// Trial calls admitted while half-open.
    pub half_open_requests: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_threshold: defaults::breaker::FAILURE_THRESHOLD,
            failure_rate: Some(FailureRate::default()),
            recovery_time: defaults::breaker::RECOVERY_TIME,
            max_recovery_time: defaults::breaker::MAX_RECOVERY_TIME,
            half_open_requests: defaults::breaker::HALF_OPEN_REQUESTS,
        }
    }
}

/// What a pool does when an instance fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum PoolFallbackStrategy {
    /// Try other instances of the same pool.
    #[default]
    InstanceRotation,
    /// Then continue with the pool's `fallback_pools`.
    PoolFallback,
}

/// A pool's failover settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PoolFallback {
    /// Instance rotation only, or on to other pools.
    pub strategy: PoolFallbackStrategy,
    /// Instances tried per request before the pool gives up.
    pub max_instance_attempts: u32,
    /// Pools to continue with under [`PoolFallbackStrategy::PoolFallback`].
    pub fallback_pools: Vec<PoolName>,
}

/// A polling pool.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PoolSpec {
    /// Its name.
    pub name: PoolName,
    /// How it picks an instance.
    pub rotation: RotationStrategy,
    /// Its instances, in configuration order.
    pub instances: Vec<InstanceSpec>,
    /// Health thresholds.
    pub health: HealthPolicy,
    /// Active health checking.
    pub health_check: HealthCheckSpec,
    /// Per-instance circuit breaker.
    pub breaker: BreakerPolicy,
    /// Most of its members (in percent) breakers and health may eject at once.
    pub max_ejection_percent: u32,
    /// Failover settings.
    pub fallback: PoolFallback,
    /// Limits of the pool as a whole.
    pub limits: Limits,
    /// How rpm and tpm are counted.
    pub rate_algorithm: RateAlgorithm,
}

/// What an echelon lists: a model directly or a whole pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum EchelonTarget {
    /// `provider/model`: every key of the provider for that model.
    Model(ModelRef),
    /// `pool:NAME`.
    Pool(PoolName),
}

/// Request defaults an echelon applies when the client left them unset.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RequestDefaults {
    /// Default temperature.
    pub temperature: Option<f32>,
    /// Default token limit.
    pub max_tokens: Option<u32>,
}

/// One echelon (tier) of a task group.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct EchelonSpec {
    /// Its name, e.g. `echelon1`.
    pub name: EchelonName,
    /// Smaller goes first.
    pub priority: u32,
    /// Models and pools it serves from, in order.
    pub targets: Vec<EchelonTarget>,
    /// Its own breaker settings, over the group's (`[echelons.<name>.circuit_breaker]`).
    pub breaker: Option<BreakerPolicy>,
    /// Requests in flight in this echelon at once.
    pub concurrency_limit: Option<u32>,
    /// Requests per minute into this echelon.
    pub rpm_limit: Option<u32>,
    /// Timeout of one non-streaming attempt (and backstop for streams).
    pub timeout: Duration,
    /// Time to the first streamed token.
    pub first_token_timeout: Duration,
    /// Longest silence between streamed chunks.
    pub idle_timeout: Duration,
    /// Retries of the same instance for retryable server errors.
    pub max_retries: u32,
    /// Longest Retry-After worth waiting for instead of moving on.
    pub retry_after_max_wait: Duration,
    /// Request defaults.
    pub defaults: RequestDefaults,
}

/// How a task group walks its echelons (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum FallbackStrategy {
    /// Echelons by ascending priority, rotating within each.
    #[default]
    EchelonDown,
    /// Every model of every echelon once, in priority order.
    ModelRotate,
    /// Like `echelon_down`, but a provider-level failure skips that provider's other targets.
    ProviderFailover,
    /// After the group's own echelons, continue with `fallback_groups`.
    GroupFallback,
}

/// A reference to another group, or to one echelon of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct GroupRef {
    /// The group.
    pub group: GroupName,
    /// One of its echelons, or all of them.
    pub echelon: Option<EchelonName>,
}

/// A task group's fallback settings.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct GroupFallback {
    /// Groups to continue with under [`FallbackStrategy::GroupFallback`].
    pub fallback_groups: Vec<GroupRef>,
    /// Upper bound on upstream attempts per request, across everything.
    pub max_attempts: u32,
    /// Base delay between retries of the same instance (grows exponentially, full jitter).
    pub retry_delay: Duration,
    /// Overall deadline of one request.
    pub deadline: Duration,
    /// Whether a content-policy refusal (`content_filter`) moves the request on to the next
    /// echelon instead of being returned to the client. Off by default: a refusal is usually the
    /// answer. On, it is LiteLLM's `content_policy_fallbacks`: the echelon that refused is left
    /// at once (its other keys serve the same model, which would refuse again).
    pub content_filter_fallback: bool,
}

/// A task group: a ladder of echelons.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TaskGroupSpec {
    /// Its name.
    pub name: GroupName,
    /// How it walks its echelons.
    pub fallback_strategy: FallbackStrategy,
    /// Breaker settings for its echelons.
    pub breaker: BreakerPolicy,
    /// Fallback settings.
    pub fallback: GroupFallback,
    /// Its echelons, sorted by ascending priority.
    pub echelons: Vec<EchelonSpec>,
}

/// What a wrapper points at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum WrapperTarget {
    /// A task group.
    TaskGroup(GroupName),
    /// A pool.
    Pool(PoolName),
    /// A single model.
    Direct(ModelRef),
}

/// A wrapper: a stable client-facing name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WrapperSpec {
    /// The name clients send as `model`.
    pub name: WrapperName,
    /// What it resolves to.
    pub target: WrapperTarget,
    /// Free text for `/v1/models` and the admin API.
    pub description: Option<String>,
}

/// Settings for routes that have no echelon of their own: `pool:NAME`, `provider/model` and the
/// wrappers pointing at them (`[route_defaults]` of `llms/_registry.toml`; defaults in
/// [`defaults::route`]).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RouteDefaults {
    /// Upper bound on upstream attempts per request.
    pub max_attempts: u32,
    /// Base delay of the retry backoff.
    pub retry_delay: Duration,
    /// Overall deadline of one request.
    pub deadline: Duration,
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
}

impl Default for RouteDefaults {
    fn default() -> Self {
        use defaults::route;
        Self {
            max_attempts: route::MAX_ATTEMPTS,
            retry_delay: route::RETRY_DELAY,
            deadline: route::DEADLINE,
            timeout: route::TIMEOUT,
            first_token_timeout: route::FIRST_TOKEN_TIMEOUT,
            idle_timeout: route::IDLE_TIMEOUT,
            max_retries: route::MAX_RETRIES,
            retry_after_max_wait: route::RETRY_AFTER_MAX_WAIT,
        }
    }
}

/// The fleet-wide retry budget (`[retry_budget]` of `llms/_registry.toml`; defaults in
/// [`defaults::retry_budget`]; see [`crate::budget`]).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RetryBudgetPolicy {
    /// Retries allowed per request of the window.
    pub ratio: f64,
    /// Retries allowed per second of the window whatever the traffic.
    pub min_per_second: u32,
    /// How far back requests and retries are counted.
    pub window: Duration,
}

impl Default for RetryBudgetPolicy {
    fn default() -> Self {
        Self {
            ratio: defaults::retry_budget::RATIO,
            min_per_second: defaults::retry_budget::MIN_PER_SECOND,
            window: defaults::retry_budget::WINDOW,
        }
    }
}

/// The whole validated routing configuration.
///
/// Maps are ordered so that listings, plans and snapshots are deterministic.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Topology {
    /// Providers by name.
    pub providers: BTreeMap<ProviderName, ProviderSpec>,
    /// Models by `provider/model`.
    pub models: BTreeMap<ModelRef, ModelSpec>,
    /// Pools by name.
    pub pools: BTreeMap<PoolName, PoolSpec>,
    /// Task groups by name.
    pub task_groups: BTreeMap<GroupName, TaskGroupSpec>,
    /// Enabled wrappers by name.
    pub wrappers: BTreeMap<WrapperName, WrapperSpec>,
    /// Settings of routes without an echelon (`[route_defaults]` of the registry).
    pub route_defaults: RouteDefaults,
    /// The fleet-wide retry budget (`[retry_budget]` of the registry).
    pub retry_budget: RetryBudgetPolicy,
}

impl Topology {
    /// The model spec behind `provider/model`.
    pub fn model(&self, model: &ModelRef) -> Option<&ModelSpec> {
        self.models.get(model)
    }

    /// Every instance of a model: one per key of its provider.
    pub fn instances_of_model(&self, model: &ModelRef) -> Vec<InstanceSpec> {
        let (Some(spec), Some(provider)) =
            (self.models.get(model), self.providers.get(&model.provider))
        else {
            return Vec::new();
        };
        let keys = provider.api_keys.len().max(1);
        (0..keys)
            .map(|index| InstanceSpec {
                id: InstanceId::new(model.clone(), u16::try_from(index).unwrap_or(u16::MAX)),
                upstream_name: spec.upstream_name.clone(),
                weight: 1,
                limits: spec.limits,
                context_window: spec.context_window,
            })
            .collect()
    }
}

impl ModelName {
    /// Whether the name is a valid model id (non-empty, no whitespace).
    pub fn is_valid(&self) -> bool {
        !self.as_str().is_empty() && !self.as_str().chars().any(char::is_whitespace)
    }
}
