//! Every default of Echelon's configuration, written once.
//!
//! The configuration loader (echelon-config), the routing table, the request engine and
//! `docs/configuration.md` all read these constants; a test of echelon-config checks that the
//! documentation states the same values. Each module is named after the part of the configuration
//! whose keys it fills in, and each constant after its key.

use core::time::Duration;

/// `llms/providers/*.toml`.
pub mod provider {
    use core::time::Duration;

    /// `connect_timeout`: establishing the TCP (and TLS) connection.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// `request_timeout`: the HTTP client's backstop for one upstream call.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
}

/// `llms/pools/*.toml`: `[fallback]`.
pub mod pool {
    /// `fallback.max_instance_attempts`: instances one request tries in the pool.
    pub const MAX_INSTANCE_ATTEMPTS: u32 = 3;
    /// `max_ejection_percent`: most of a pool's members (not counting dead or cooling keys) its
    /// breakers and health may take out of rotation at once; at least one may always be out.
    /// One half: a dead member of two is still ejected, but a pool where every member fails a
    /// little keeps most of its capacity (Envoy's `max_ejection_percent`).
    pub const MAX_EJECTION_PERCENT: u32 = 50;
}

/// An instance's health (a pool's `[health_check]` thresholds).
pub mod health {
    use core::time::Duration;

    /// `failure_threshold`: consecutive failures that make an instance unhealthy. Ten, like the
    /// breaker's streak: at a 20 % random failure rate three in a row happen every ~125 calls,
    /// which took healthy-but-busy keys out of rotation (issue 10); ten in a row happen about once
    /// in ten million calls, while a key that fails everything is out after ten.
    pub const FAILURE_THRESHOLD: u32 = 10;
    /// `success_threshold`: consecutive successes that make a recovering instance healthy.
    pub const SUCCESS_THRESHOLD: u32 = 2;
    /// `recovery_time`: rest of an unhealthy instance before it may recover.
    pub const RECOVERY_TIME: Duration = Duration::from_secs(30);
    /// `interval`: time between active probes.
    pub const CHECK_INTERVAL: Duration = Duration::from_secs(30);
    /// `timeout`: one active probe.
    pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
}

/// `[circuit_breaker]` of pools (per instance) and task groups (per echelon).
pub mod breaker {
    use core::time::Duration;

    /// `failure_threshold`: consecutive failures of distinct requests that open the breaker.
    /// Ten: a streak of five happens every few thousand calls at a 20 % random failure rate, a
    /// streak of ten about once in ten million, and a member that fails everything still opens
    /// within ten calls.
    pub const FAILURE_THRESHOLD: u32 = 10;
    /// `recovery_time`: open time before the first half-open trial.
    pub const RECOVERY_TIME: Duration = Duration::from_secs(30);
    /// `max_recovery_time`: cap of the open time, which grows on repeated trips.
    pub const MAX_RECOVERY_TIME: Duration = Duration::from_secs(300);
    /// `half_open_requests`: trial calls admitted while half-open.
    pub const HALF_OPEN_REQUESTS: u32 = 1;
    /// `failure_rate.threshold`: share of failed calls in the window that opens the breaker.
    /// One half: a member failing 20 % of calls never gets near it, one failing most does.
    pub const FAILURE_RATE_THRESHOLD: f64 = 0.5;
    /// `failure_rate.window`: the window of the failure-rate trigger (recent evidence only).
    pub const FAILURE_RATE_WINDOW: Duration = Duration::from_secs(10);
    /// `failure_rate.min_calls`: calls the rate trigger needs to have seen, so that two failures
    /// out of three calls never open it.
    pub const FAILURE_RATE_MIN_CALLS: u32 = 20;
}

/// `[retry_budget]` of `llms/_registry.toml`: the fleet-wide bound on retries and fallbacks.
pub mod retry_budget {
    use core::time::Duration;

    /// `ratio`: retries allowed per request of the window. One half: in a total outage the
    /// upstreams see at most 1.5 attempts per request, while a fleet where every member fails
    /// 20 % (which needs about 25 % retries) still has them.
    pub const RATIO: f64 = 0.5;
    /// `min_per_second`: retries allowed per second of the window whatever the traffic, so a
    /// quiet gateway can still retry its few requests.
    pub const MIN_PER_SECOND: u32 = 10;
    /// `window`: how far back requests and retries are counted.
    pub const WINDOW: Duration = Duration::from_secs(10);
}

/// `llms/task-groups/*.toml`: `[fallback]`.
pub mod task_group {
    use core::time::Duration;

    /// `fallback.max_attempts`: upstream attempts per request, everything included.
    pub const MAX_ATTEMPTS: u32 = 5;
    /// `fallback.retry_delay`: base delay between retries of one instance.
    pub const RETRY_DELAY: Duration = Duration::from_millis(250);
    /// `fallback.deadline`: overall deadline of one request.
    pub const DEADLINE: Duration = Duration::from_secs(180);
    /// `fallback.content_filter_fallback`: a content-policy refusal is the client's answer.
    pub const CONTENT_FILTER_FALLBACK: bool = false;
}

/// `[echelons.<name>]` of a task group.
pub mod echelon {
    use core::time::Duration;

    /// `timeout`: one non-streaming attempt.
    pub const TIMEOUT: Duration = Duration::from_secs(60);
    /// `first_token_timeout`: time to the first streamed token.
    pub const FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
    /// `idle_timeout`: longest silence between streamed chunks.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    /// `max_retries`: retries of one instance for retryable server errors.
    pub const MAX_RETRIES: u32 = 1;
    /// `retry_after_max_wait`: longest Retry-After worth waiting for when no peer can serve.
    pub const RETRY_AFTER_MAX_WAIT: Duration = Duration::from_secs(5);
}

/// `[route_defaults]` of `llms/_registry.toml`: routes without an echelon (`pool:NAME`,
/// `provider/model`, and `pool` and `direct` wrappers). Shorter than a task group's: such a
/// route has one stage, so fewer attempts and an earlier deadline bound it as tightly.
pub mod route {
    use core::time::Duration;

    /// `max_attempts`: upstream attempts per request.
    pub const MAX_ATTEMPTS: u32 = 3;
    /// `retry_delay`: base delay between retries of one instance.
    pub const RETRY_DELAY: Duration = Duration::from_millis(200);
    /// `deadline`: overall deadline of one request.
    pub const DEADLINE: Duration = Duration::from_secs(120);
    /// `timeout`: one non-streaming attempt.
    pub const TIMEOUT: Duration = Duration::from_secs(60);
    /// `first_token_timeout`: time to the first streamed token.
    pub const FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(20);
    /// `idle_timeout`: longest silence between streamed chunks.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    /// `max_retries`: retries of one instance for retryable server errors.
    pub const MAX_RETRIES: u32 = 1;
    /// `retry_after_max_wait`: longest Retry-After worth waiting for when no peer can serve.
    pub const RETRY_AFTER_MAX_WAIT: Duration = Duration::from_secs(5);
}

/// `gateway.toml` `[server]`: the request engine's deadline and the HTTP server's limits.
pub mod server {
    use core::time::Duration;

    /// `request_timeout`: upper bound on one client request, streaming included.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
    /// `max_body_size`: largest request body accepted, in bytes (4 MiB).
    pub const MAX_BODY_SIZE: u64 = 4 * 1024 * 1024;
    /// `shutdown_grace`: how long a drain waits for requests in flight.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    /// `header_read_timeout`: a connection whose request head (request line and headers) is not
    /// complete this long after its first byte is closed. With TLS, the handshake must finish
    /// within it too.
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// `idle_timeout`: a keep-alive connection with no request in flight and no byte of a new
    /// one is closed after this long (also a new connection that sends nothing).
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// `body_read_timeout`: the whole request body must arrive within this long after its head.
    pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// `max_header_size`: largest request head (request line and headers), in bytes (32 KiB);
    /// a larger one is answered 431.
    pub const MAX_HEADER_SIZE: u64 = 32 * 1024;
    /// `max_connections`: client connections served at once; further ones are answered 503
    /// and closed.
    pub const MAX_CONNECTIONS: u32 = 1024;
}

/// `gateway.toml` `[state]`: state shared by the replicas of a fleet.
pub mod state {
    use core::time::Duration;

    /// `key_prefix`: the first part of every key the gateway writes to Redis.
    pub const KEY_PREFIX: &str = "echelon";
    /// `timeout`: bound on every Redis call (connecting included).
    pub const TIMEOUT: Duration = Duration::from_millis(250);
    /// `sync_interval`: time between two syncs of a replica with Redis.
    pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
    /// `retry_interval`: time between two attempts to reach Redis again while falling back.
    pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
    /// Failed syncs in a row that make a replica fall back to local state (the breaker around
    /// Redis; not configurable).
    pub const FAILURES_TO_FALL_BACK: u32 = 2;
    /// `replicas`: how many replicas share the limits; local limits are divided by it while
    /// Redis is unreachable.
    pub const REPLICAS: u32 = 1;
    /// The largest slice of a budget one replica holds, as a fraction of the limit divided by
    /// `replicas`: the bound on what the fleet holds unspent (not configurable).
    pub const LEASE_FRACTION: f64 = 0.05;
}

/// `gateway.toml` `[alerts]`.
pub mod alerts {
    use core::time::Duration;

    /// `evaluation_interval`: time between two evaluations of the alert rules.
    pub const EVALUATION_INTERVAL: Duration = Duration::from_secs(15);
    /// `rules[].cooldown`: least time between two firings of the same alert.
    pub const COOLDOWN: Duration = Duration::from_secs(600);
    /// `rules[].window` of a threshold rule.
    pub const THRESHOLD_WINDOW: Duration = Duration::from_secs(60);
    /// `rules[].window` of a trend rule.
    pub const TREND_WINDOW: Duration = Duration::from_secs(300);
}

/// Cooldown of an instance after a 429 that did not say how long to wait (no `Retry-After`).
pub const RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(5);
