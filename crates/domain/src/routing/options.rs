//! How a routing table is built: the cooldown after a 429 that did not say how long to wait, and
//! the event sink. (Settings of routes without an echelon come with the topology:
//! [`crate::spec::RouteDefaults`].)

use core::fmt;
use core::time::Duration;
use std::sync::Arc;

use crate::events::{EventSink, NoopSink};

/// How a table is built: the cooldown after a 429 without Retry-After, the event sink.
#[derive(Clone)]
pub struct TableOptions {
    /// Cooldown after a 429 that did not say how long to wait.
    pub default_cooldown: Duration,
    /// Where events go.
    pub sink: Arc<dyn EventSink>,
    /// Whether the rpm and tpm budgets of instances are shared with other replicas: their
    /// limiters then admit only what their [`crate::limit::Lease`] holds, from the start.
    pub shared_budgets: bool,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            default_cooldown: crate::defaults::RATE_LIMIT_COOLDOWN,
            sink: Arc::new(NoopSink),
            shared_budgets: false,
        }
    }
}

impl fmt::Debug for TableOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableOptions")
            .field("default_cooldown", &self.default_cooldown)
            .field("shared_budgets", &self.shared_budgets)
            .finish_non_exhaustive()
    }
}
