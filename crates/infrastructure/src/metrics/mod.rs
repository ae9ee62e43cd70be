//! The Prometheus metrics registry: counters and histograms fed by the domain's events, the HTTP
//! layer, reloads, probes and alerts, and gauges read from the routing table at scrape time.
//!
//! [`Metrics`] implements the domain's [`EventSink`] (attempts, breaker and health transitions,
//! cooldowns, dead keys, skips, fallbacks), the application's [`ProbeObserver`] (probes) and
//! [`AlertNotifier`] (alerts firing), and [`ReadingSource`] (request-level readings for alert
//! rules). [`Metrics::render`] writes the text exposition format, with the live state of a
//! [`TableSnapshot`] when one is given. `docs/monitoring.md` lists every metric.
//!
//! # Cost and cardinality
//!
//! Recording is a lock-free map lookup (an [`arc_swap::ArcSwap`]'d hash map keyed by the
//! configured name, no allocation) and a few relaxed atomic adds. Label values only ever come
//! from configured names passed by the caller (a route the caller could not resolve is
//! `unknown`) and from closed sets (error classes, states, skip reasons). On top of that, every
//! labelled family holds at most [`MetricsOptions::max_series_per_metric`] label sets; further
//! ones are counted under the label value `other` and in
//! `echelon_metrics_label_overflow_total{metric}`, so no input can grow the exposition without
//! bound.

mod connections;
mod family;
mod render;

use core::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Arc, OnceLock};

use echelon_application::alerts::{
    AlertLevel, AlertMetric, AlertNotice, AlertNotifier, AlertStatus, HistogramSample, Reading,
    ReadingSource, Sample,
};
use echelon_application::health_check::{ProbeObserver, ProbeResult};
use echelon_domain::breaker::BreakerState;
use echelon_domain::error::ErrorClass;
use echelon_domain::events::{BreakerScope, Event, EventSink};
use echelon_domain::health::HealthState;
use echelon_domain::name::{EchelonName, GroupName, InstanceId};
use echelon_domain::routing::TableSnapshot;
use echelon_domain::time::Instant;

pub use self::connections::{ConnectionStats, ConnectionTimeout};
pub use self::family::LATENCY_BUCKETS;
use self::family::{Family, Histogram};
use crate::telemetry::ExportStats;
use crate::webhook::WebhookStats;
use echelon_application::shared_state::SharingStatus;

/// The label value of series folded together beyond the cap.
pub const OTHER: &str = "other";

/// The route label of requests whose model name did not resolve.
pub const UNKNOWN_ROUTE: &str = "unknown";

/// Settings of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsOptions {
    /// Most label sets per metric family (routes, instances, stages, alert rules); further ones
    /// are counted under `other`.
    pub max_series_per_metric: usize,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self {
            max_series_per_metric: 1_000,
        }
    }
}

/// Status codes counted under their own label; others are counted by class (`2xx`, `4xx`, …).
const STATUS_CODES: [u16; 14] = [
    200, 400, 401, 403, 404, 408, 413, 422, 429, 499, 500, 502, 503, 504,
];
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
const STATUS_SLOTS: usize = STATUS_CODES.len() + STATUS_CLASSES.len();

const CLASSES: usize = ErrorClass::ALL.len();

/// Every skip reason's name, in the order of their counters.
const SKIP_REASONS: [&str; 13] = [
    "key_dead",
    "cooling_down",
    "breaker_open",
    "unhealthy",
    "rpm_saturated",
    "tpm_saturated",
    "concurrency_saturated",
    "already_tried",
    "provider_failed",
    "context_window_too_small",
    "attempts_spent",
    "cycle",
    "no_instances",
];

const HEALTH_STATES: [HealthState; 4] = [
    HealthState::Healthy,
    HealthState::Degraded,
    HealthState::Unhealthy,
    HealthState::Recovering,
];

const BREAKER_STATES: [BreakerState; 3] = [
    BreakerState::Closed,
    BreakerState::Open,
    BreakerState::HalfOpen,
];

fn status_slot(status: u16) -> usize {
    match STATUS_CODES.iter().position(|&c| c == status) {
        Some(i) => i,
        None => {
            let class = match status {
                100..=199 => 0,
                200..=299 => 1,
                300..=399 => 2,
                400..=499 => 3,
                500..=599 => 4,
                _ => 5,
            };
            STATUS_CODES.len() + class
        }
    }
}

fn status_label(slot: usize) -> String {
    STATUS_CODES.get(slot).map_or_else(
        || STATUS_CLASSES[slot - STATUS_CODES.len()].to_owned(),
        ToString::to_string,
    )
}

fn class_slot(class: ErrorClass) -> usize {
    ErrorClass::ALL
        .iter()
        .position(|&c| c == class)
        .unwrap_or(0)
}

fn skip_slot(reason: &str) -> Option<usize> {
    SKIP_REASONS.iter().position(|&r| r == reason)
}

fn health_slot(state: HealthState) -> usize {
    HEALTH_STATES.iter().position(|&s| s == state).unwrap_or(0)
}

fn breaker_slot(state: BreakerState) -> usize {
    BREAKER_STATES.iter().position(|&s| s == state).unwrap_or(0)
}

fn counters<const N: usize>() -> [AtomicU64; N] {
    core::array::from_fn(|_| AtomicU64::new(0))
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Counters of one route (a configured client-facing name, or `unknown`).
#[derive(Debug)]
struct RouteSeries {
    statuses: [AtomicU64; STATUS_SLOTS],
    classes: [AtomicU64; CLASSES],
    latency: Histogram,
    ttft: Histogram,
}

impl Default for RouteSeries {
    fn default() -> Self {
        Self {
            statuses: counters(),
            classes: counters(),
            latency: Histogram::default(),
            ttft: Histogram::default(),
        }
    }
}

impl RouteSeries {
    /// Requests answered 5xx or 429, and all requests.
    fn failed_and_total(&self) -> (u64, u64) {
        let mut failed = 0;
        let mut total = 0;
        for (slot, c) in self.statuses.iter().enumerate() {
            let n = get(c);
            total += n;
            let is_failure = STATUS_CODES.get(slot).map_or_else(
                || STATUS_CLASSES[slot - STATUS_CODES.len()] == "5xx",
                |&code| code == 429 || code >= 500,
            );
            if is_failure {
                failed += n;
            }
        }
        (failed, total)
    }
}

/// Counters of one instance.
#[derive(Debug)]
struct InstanceSeries {
    /// Slot 0: success; then one per error class.
    outcomes: [AtomicU64; CLASSES + 1],
    latency: Histogram,
    cooldowns: AtomicU64,
    health_to: [AtomicU64; 4],
    breaker_to: [AtomicU64; 3],
    keys_dead: AtomicU64,
    keys_revived: AtomicU64,
    probes: [AtomicU64; ProbeResult::NAMES.len()],
    skips: [AtomicU64; SKIP_REASONS.len()],
}

impl Default for InstanceSeries {
    fn default() -> Self {
        Self {
            outcomes: counters(),
            latency: Histogram::default(),
            cooldowns: AtomicU64::new(0),
            health_to: counters(),
            breaker_to: counters(),
            keys_dead: AtomicU64::new(0),
            keys_revived: AtomicU64::new(0),
            probes: counters(),
            skips: counters(),
        }
    }
}

/// A stage: a task group's echelon, or a route without one (`none`).
type StageKey = (Option<GroupName>, Option<EchelonName>);

/// Counters of one stage.
#[derive(Debug)]
struct StageSeries {
    breaker_to: [AtomicU64; 3],
    fallbacks: AtomicU64,
    skips: [AtomicU64; SKIP_REASONS.len()],
}

impl Default for StageSeries {
    fn default() -> Self {
        Self {
            breaker_to: counters(),
            fallbacks: AtomicU64::new(0),
            skips: counters(),
        }
    }
}

/// State of one alert rule.
#[derive(Debug, Default)]
struct AlertSeries {
    /// [`AlertLevel`] as 0, 1, 2.
    level: AtomicU8,
    /// Targets firing now.
    firing: AtomicI64,
    fired: AtomicU64,
    resolved: AtomicU64,
}

/// What a scrape shows of the live routing table.
#[derive(Debug, Clone, Copy)]
pub struct LiveView<'a> {
    /// The live table's snapshot.
    pub snapshot: &'a TableSnapshot,
    /// The instant the snapshot was taken at, on the same clock (for cooldown remaining).
    pub now: Instant,
    /// The configuration generation serving.
    pub generation: u64,
}

/// The registry. See the module docs.
#[derive(Debug)]
pub struct Metrics {
    cap: usize,
    routes: Family<Arc<str>, RouteSeries>,
    instances: Family<InstanceId, InstanceSeries>,
    stages: Family<StageKey, StageSeries>,
    alerts: Family<Arc<str>, AlertSeries>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// 0: no reload yet, 1: the last one failed, 2: it succeeded.
    last_reload: AtomicU8,
    span_export: OnceLock<Arc<ExportStats>>,
    webhooks: OnceLock<Arc<WebhookStats>>,
    sharing: OnceLock<Arc<SharingStatus>>,
    connections: ConnectionStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(MetricsOptions::default())
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new(options: MetricsOptions) -> Self {
        let cap = options.max_series_per_metric.max(1);
        Self {
            cap,
            routes: Family::new(cap),
            instances: Family::new(cap),
            stages: Family::new(cap),
            alerts: Family::new(cap),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload: AtomicU8::new(0),
            span_export: OnceLock::new(),
            webhooks: OnceLock::new(),
            sharing: OnceLock::new(),
            connections: ConnectionStats::default(),
        }
    }

    /// Records one client request answered with `status` after `latency`.
    ///
    /// `route` must be a configured name — the wrapper, `group:NAME`, `pool:NAME` or
    /// `provider/model` the request resolved to — or [`UNKNOWN_ROUTE`] when it resolved to
    /// nothing; never the raw model name of the request. `class` is the error class of a failed
    /// request, `ttft` the time to first token of a stream.
    pub fn record_request(
        &self,
        route: &str,
        status: u16,
        class: Option<ErrorClass>,
        latency: Duration,
        ttft: Option<Duration>,
    ) {
        self.routes.with(
            route,
            || Arc::from(route),
            |s| {
                inc(&s.statuses[status_slot(status)]);
                if let Some(class) = class {
                    inc(&s.classes[class_slot(class)]);
                }
                s.latency.observe(latency);
                if let Some(ttft) = ttft {
                    s.ttft.observe(ttft);
                }
            },
        );
    }

    /// Records a configuration reload (`ok`: the new tree was swapped in).
    pub fn record_reload(&self, ok: bool) {
        if ok {
            inc(&self.reloads_ok);
        } else {
            inc(&self.reloads_failed);
        }
        self.last_reload
            .store(if ok { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// Shows the trace exporter's counters (spans exported and dropped) in the exposition.
    pub fn observe_span_export(&self, stats: Arc<ExportStats>) {
        let _ = self.span_export.set(stats);
    }

    /// Shows the webhook notifier's counters in the exposition.
    pub fn observe_webhooks(&self, stats: Arc<WebhookStats>) {
        let _ = self.webhooks.set(stats);
    }

    /// Shows the shared state sync's mode and counters in the exposition.
    pub fn observe_sharing(&self, status: Arc<SharingStatus>) {
        let _ = self.sharing.set(status);
    }

    /// The HTTP server's connection counters, which it updates itself.
    pub fn connections(&self) -> &ConnectionStats {
        &self.connections
    }

    /// The text exposition (format 0.0.4), with the live table's gauges when `live` is given.
    pub fn render(&self, live: Option<LiveView<'_>>) -> String {
        render::render(self, live)
    }

    /// The `Content-Type` of [`Metrics::render`]'s output.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    fn instance(&self, id: &InstanceId, f: impl FnOnce(&InstanceSeries)) {
        self.instances.with(id, || id.clone(), f);
    }

    fn stage(
        &self,
        group: Option<&GroupName>,
        echelon: Option<&EchelonName>,
        f: impl FnOnce(&StageSeries),
    ) {
        let key: StageKey = (group.cloned(), echelon.cloned());
        self.stages.with(&key, || key.clone(), f);
    }
}

impl EventSink for Metrics {
    fn record(&self, event: &Event) {
        match event {
            Event::Breaker { scope, to, .. } => match scope {
                BreakerScope::Instance(id) => {
                    self.instance(id, |s| inc(&s.breaker_to[breaker_slot(*to)]));
                }
                BreakerScope::Echelon { group, echelon } => {
                    self.stage(Some(group), Some(echelon), |s| {
                        inc(&s.breaker_to[breaker_slot(*to)])
                    });
                }
            },
            Event::Health { instance, to, .. } => {
                self.instance(instance, |s| inc(&s.health_to[health_slot(*to)]));
            }
            Event::Cooldown { instance, .. } => self.instance(instance, |s| inc(&s.cooldowns)),
            Event::KeyDead { instance } => self.instance(instance, |s| inc(&s.keys_dead)),
            Event::KeyRevived { instance } => self.instance(instance, |s| inc(&s.keys_revived)),
            Event::Skipped {
                group,
                echelon,
                instance,
                reason,
            } => {
                let Some(slot) = skip_slot(reason.as_str()) else {
                    return;
                };
                self.stage(group.as_ref(), echelon.as_ref(), |s| inc(&s.skips[slot]));
                if let Some(id) = instance {
                    self.instance(id, |s| inc(&s.skips[slot]));
                }
            }
            Event::Fallback { group, from, .. } => {
                self.stage(group.as_ref(), from.as_ref(), |s| inc(&s.fallbacks));
            }
            Event::AttemptFinished {
                instance,
                class,
                latency,
            } => self.instance(instance, |s| {
                let slot = class.map_or(0, |c| class_slot(c) + 1);
                inc(&s.outcomes[slot]);
                s.latency.observe(*latency);
            }),
        }
    }
}

impl ProbeObserver for Metrics {
    fn probe_finished(&self, instance: &InstanceId, result: ProbeResult, _latency: Duration) {
        let slot = ProbeResult::NAMES
            .iter()
            .position(|&n| n == result.as_str())
            .unwrap_or(0);
        self.instance(instance, |s| inc(&s.probes[slot]));
    }
}

impl AlertNotifier for Metrics {
    fn notify(&self, notice: &AlertNotice) {
        let rule = notice.rule.as_str();
        self.alerts.with(
            rule,
            || Arc::from(rule),
            |s| {
                let level = match notice.level {
                    AlertLevel::Info => 0,
                    AlertLevel::Warning => 1,
                    AlertLevel::Critical => 2,
                };
                s.level.store(level, Ordering::Relaxed);
                match notice.status {
                    AlertStatus::Firing => {
                        s.firing.fetch_add(1, Ordering::Relaxed);
                        inc(&s.fired);
                    }
                    AlertStatus::Resolved => {
                        // Never below zero, even if a resolve outlived a restart of the counters.
                        let _ = s
                            .firing
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                Some((n - 1).max(0))
                            });
                        inc(&s.resolved);
                    }
                }
            },
        );
    }
}

#[allow(clippy::cast_precision_loss, reason = "counters far below 2^52")]
impl ReadingSource for Metrics {
    fn read(&self, out: &mut Vec<Reading>) {
        let bounds: Arc<[f64]> = Arc::from(LATENCY_BUCKETS.as_slice());
        let (routes, other) = self.routes.series();
        let routes = routes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(other.map(|v| (OTHER.to_owned(), v)));
        for (route, s) in routes {
            let (failed, total) = s.failed_and_total();
            out.push(Reading {
                metric: AlertMetric::RequestErrorRate,
                target: route.clone(),
                sample: Sample::Ratio {
                    numerator: failed as f64,
                    denominator: total as f64,
                },
            });
            out.push(Reading {
                metric: AlertMetric::Requests,
                target: route.clone(),
                sample: Sample::Counter(total as f64),
            });
            for (metric, histogram) in [
                (AlertMetric::P95Latency, &s.latency),
                (AlertMetric::P95Ttft, &s.ttft),
            ] {
                out.push(Reading {
                    metric,
                    target: route.clone(),
                    sample: Sample::Histogram(HistogramSample {
                        bounds: Arc::clone(&bounds),
                        counts: histogram.read().0,
                    }),
                });
            }
        }
        let open = breaker_slot(BreakerState::Open);
        let (instances, _) = self.instances.series();
        for (id, s) in instances {
            out.push(Reading {
                metric: AlertMetric::BreakerTrips,
                target: id.to_string(),
                sample: Sample::Counter(get(&s.breaker_to[open]) as f64),
            });
        }
        let (stages, _) = self.stages.series();
        for ((group, echelon), s) in stages {
            if let (Some(group), Some(echelon)) = (group, echelon) {
                out.push(Reading {
                    metric: AlertMetric::BreakerTrips,
                    target: format!("group:{group}.{echelon}"),
                    sample: Sample::Counter(get(&s.breaker_to[open]) as f64),
                });
            }
        }
        out.push(Reading {
            metric: AlertMetric::ConfigReloadFailures,
            target: "config".to_owned(),
            sample: Sample::Counter(get(&self.reloads_failed) as f64),
        });
        if let Some(status) = self.sharing.get() {
            let falling_back = status.mode() == echelon_domain::shared::SharingMode::Fallback;
            out.push(Reading {
                metric: AlertMetric::SharedStateFallback,
                target: "shared_state".to_owned(),
                sample: Sample::Gauge(if falling_back { 1.0 } else { 0.0 }),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_slots_name_known_codes_and_classes() {
        assert_eq!(status_label(status_slot(200)), "200");
        assert_eq!(status_label(status_slot(429)), "429");
        assert_eq!(status_label(status_slot(201)), "2xx");
        assert_eq!(status_label(status_slot(418)), "4xx");
        assert_eq!(status_label(status_slot(599)), "5xx");
        assert_eq!(status_label(status_slot(999)), "other");
    }

    #[test]
    fn every_skip_reason_has_a_counter() {
        use echelon_domain::events::SkipReason;
        use echelon_domain::instance::Unavailable;
        use echelon_domain::limit::{LimitKind, Saturated};
        let reasons = [
            SkipReason::Instance(Unavailable::KeyDead),
            SkipReason::Instance(Unavailable::CoolingDown {
                until: Instant::ZERO,
            }),
            SkipReason::Instance(Unavailable::BreakerOpen { until: None }),
            SkipReason::Instance(Unavailable::Unhealthy {
                until: Instant::ZERO,
            }),
            SkipReason::Echelon(Unavailable::Saturated(Saturated {
                limit: LimitKind::Requests,
                retry_in: None,
            })),
            SkipReason::Echelon(Unavailable::Saturated(Saturated {
                limit: LimitKind::Tokens,
                retry_in: None,
            })),
            SkipReason::Echelon(Unavailable::Saturated(Saturated {
                limit: LimitKind::Concurrency,
                retry_in: None,
            })),
            SkipReason::AlreadyTried,
            SkipReason::ProviderFailed {
                provider: "p".into(),
            },
            SkipReason::ContextWindowTooSmall {
                required_above: 1,
                window: None,
            },
            SkipReason::AttemptsSpent,
            SkipReason::Cycle,
            SkipReason::NoInstances,
        ];
        let names: Vec<_> = reasons.iter().map(SkipReason::as_str).collect();
        assert_eq!(names, SKIP_REASONS);
    }

    #[test]
    fn request_error_rate_counts_5xx_and_429() {
        let m = Metrics::default();
        for status in [200, 200, 429, 503, 599, 404] {
            m.record_request("chat", status, None, Duration::from_millis(10), None);
        }
        let mut out = Vec::new();
        m.read(&mut out);
        let rate = out
            .iter()
            .find(|r| r.metric == AlertMetric::RequestErrorRate && r.target == "chat")
            .unwrap();
        assert_eq!(
            rate.sample,
            Sample::Ratio {
                numerator: 3.0,
                denominator: 6.0
            }
        );
    }
}
