//! How a routing table is built: the settings of routes without an echelon, the cooldown after a
//! 429 that did not say how long to wait, and the event sink.

use core::fmt;
use core::time::Duration;
use std::sync::Arc;

use crate::events::{EventSink, NoopSink};

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
