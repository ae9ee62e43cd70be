//! The domain's routing events as `tracing` events, so that a request's trace shows why it went
//! where it went: breaker transitions, health changes, cooldowns, dead keys, skipped candidates
//! with their reason, and fallbacks. Each event lands on the span that was current when the
//! domain reported it (the request's `chat` span, or the `attempt` span of the attempt that
//! caused it).

use echelon_domain::events::{Event, EventSink};

/// An [`echelon_domain::events::EventSink`] that emits `tracing` events (target
/// `echelon::routing`). Skips are at `debug`, everything else at `info` or `warn`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanEvents;

impl EventSink for SpanEvents {
    fn record(&self, event: &Event) {
        match event {
            Event::Breaker {
                scope,
                from,
                to,
                open_until,
            } => {
                let open_for = open_until.map(|t| t.elapsed_since_origin());
                tracing::warn!(target: "echelon::routing", %scope, from = from.as_str(), to = to.as_str(), ?open_for, "breaker transition");
            }
            Event::Health { instance, from, to } => {
                tracing::info!(target: "echelon::routing", %instance, from = from.as_str(), to = to.as_str(), "health transition");
            }
            Event::Cooldown {
                instance,
                retry_after,
                ..
            } => {
                tracing::info!(target: "echelon::routing", %instance, ?retry_after, "cooldown");
            }
            Event::KeyDead { instance } => {
                tracing::warn!(target: "echelon::routing", %instance, "key refused by the upstream");
            }
            Event::KeyRevived { instance } => {
                tracing::info!(target: "echelon::routing", %instance, "key revived");
            }
            Event::Skipped {
                group,
                echelon,
                instance,
                reason,
            } => {
                let group = group.as_ref().map(|g| g.as_str());
                let echelon = echelon.as_ref().map(|e| e.as_str());
                let instance = instance.as_ref().map(ToString::to_string);
                tracing::debug!(target: "echelon::routing", group, echelon, instance, reason = reason.as_str(), detail = %reason, "candidate skipped");
            }
            Event::Fallback { group, from, to } => {
                let group = group.as_ref().map(|g| g.as_str());
                let from = from.as_ref().map(|e| e.as_str());
                tracing::info!(target: "echelon::routing", group, from, to = %to, "fallback");
            }
            Event::AttemptFinished { .. } => {}
        }
    }
}
