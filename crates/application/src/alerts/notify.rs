//! Notices and where they go: the [`AlertNotifier`] port, the log notifier, and a fan-out to
//! several notifiers (webhooks and metrics implement the port in the infrastructure).

use std::sync::Arc;

use echelon_domain::alert::AlertLevel;
use echelon_domain::time::Instant;
use serde::Serialize;

/// Whether an alert started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition started to hold.
    Firing,
    /// The condition no longer holds (or its target is gone).
    Resolved,
}

impl AlertStatus {
    /// The stable snake_case name: `firing` or `resolved`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// A notice of an alert firing or resolving; what notifiers deliver and the history keeps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertNotice {
    /// The rule's name.
    pub rule: String,
    /// Its level.
    pub level: AlertLevel,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// What the alert is about; `None` for composite rules.
    pub target: Option<String>,
    /// The value read (for threshold and trend rules), when there was one.
    pub value: Option<f64>,
    /// One line for people: what holds or held.
    pub summary: String,
    /// The rule's description.
    pub description: Option<String>,
    /// When, on the engine's clock.
    pub at: Instant,
    /// When the alert started firing, on the engine's clock.
    pub since: Instant,
}

/// Where notices go: the log, webhooks, metrics. Called off the request path, after the
/// evaluation; implementations must still never block (queue and drop when full).
pub trait AlertNotifier: Send + Sync {
    /// Delivers one notice.
    fn notify(&self, notice: &AlertNotice);
}

/// Writes notices to the log: `critical` as errors, `warning` as warnings, `info` as info, and
/// resolve notices as info.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogNotifier;

impl AlertNotifier for LogNotifier {
    fn notify(&self, n: &AlertNotice) {
        let target = n.target.as_deref().unwrap_or("-");
        match (n.status, n.level) {
            (AlertStatus::Resolved, _) | (AlertStatus::Firing, AlertLevel::Info) => {
                let status = n.status.as_str();
                tracing::info!(alert = %n.rule, level = n.level.as_str(), status, target, summary = %n.summary, "alert {status}");
            }
            (AlertStatus::Firing, AlertLevel::Warning) => {
                tracing::warn!(alert = %n.rule, level = n.level.as_str(), status = "firing", target, summary = %n.summary, "alert firing");
            }
            (AlertStatus::Firing, AlertLevel::Critical) => {
                tracing::error!(alert = %n.rule, level = n.level.as_str(), status = "firing", target, summary = %n.summary, "alert firing");
            }
        }
    }
}

/// Delivers each notice to several notifiers, in order.
pub struct Notifiers(pub Vec<Arc<dyn AlertNotifier>>);

impl std::fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Notifiers").field(&self.0.len()).finish()
    }
}

impl AlertNotifier for Notifiers {
    fn notify(&self, notice: &AlertNotice) {
        for n in &self.0 {
            n.notify(notice);
        }
    }
}
