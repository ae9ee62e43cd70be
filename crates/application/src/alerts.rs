//! The alert engine: threshold, trend and composite rules over readings of the gateway's state,
//! with levels, de-duplication per rule and target, cooldown, resolve notices, a bounded
//! history for `GET /admin/alerts`, and delivery through the [`AlertNotifier`] port.
//!
//! # Readings
//!
//! Each evaluation takes [`Reading`]s — a metric name, a target and a [`Sample`] — from its
//! [`ReadingSource`]s: [`SnapshotReadings`] turns the routing table's snapshot into readings
//! (pool health, upstream error rates, breakers, limiter saturation, fallbacks), and the metrics
//! registry of the infrastructure adds request-level readings (error rates and latency
//! percentiles per route). [`METRICS`] lists every metric a rule may name.
//!
//! The engine keeps a short series of samples per `(metric, target)` that some rule watches, long
//! enough for the longest window, and reads each rule's value from it:
//!
//! | sample kind | threshold over `window` | trend over `window` |
//! |---|---|---|
//! | gauge | mean of the samples in the window | last sample minus the first one of the window |
//! | counter | increase over the window | increase over the window |
//! | ratio (cumulative numerator / denominator) | Δnumerator / Δdenominator over the window | ratio over the last window minus ratio over the window before (no traffic before counts as 0) |
//! | histogram (cumulative buckets) | the metric's quantile of the observations in the window | quantile over the last window minus quantile over the window before |
//!
//! Counters that go down (a reload built fresh state) are treated as restarted from zero. A series
//! that appears after the first evaluation starts from zero at the evaluation before it appeared,
//! so the first requests of a new route count.
//!
//! # Firing, de-duplication, cooldown, resolving
//!
//! A threshold or trend rule is evaluated for its target, or for every target of its metric
//! when it names none; each `(rule, target)` is one alert. When its condition starts to hold, the
//! alert fires and a notice goes out — unless the same alert fired less than `cooldown` ago, in
//! which case it is held back until the cooldown is over (if the condition still holds then).
//! While it keeps holding, nothing more is sent. When it stops holding (or its target
//! disappears), a resolve notice goes out. A composite rule combines other rules by name: with
//! `all`, it holds when every listed rule holds for at least one target; with `any`, when one
//! does. Rules listed by a composite rule are evaluated but do not notify on their own: the
//! composite speaks for them, and its notice names the targets they hold for.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use echelon_domain::breaker::BreakerState;
use echelon_domain::health::HealthState;
use echelon_domain::routing::{PoolSnapshot, TableSnapshot};
use echelon_domain::stats::Stats;
use echelon_domain::time::{Clock, Instant};
use serde::Serialize;

use crate::gateway::Gateway;
use crate::health_check::BackgroundTask;

pub use echelon_domain::alert::{AlertCondition, AlertLevel, AlertRule, Combine, Comparison};

/// How samples of a metric combine over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// A value at a moment (averaged over a window).
    Gauge,
    /// A monotonic count (its increase over a window).
    Counter,
    /// A cumulative numerator over a cumulative denominator (their increases' ratio).
    Ratio,
    /// Cumulative histogram buckets, read as the given quantile (0–1).
    Quantile(f64),
}

/// A metric rules may name.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetricInfo {
    /// The name rules use.
    pub name: &'static str,
    /// How its samples combine.
    pub kind: MetricKind,
    /// What it measures, with its unit.
    pub meaning: &'static str,
    /// The targets it has.
    pub targets: &'static str,
}

/// Every metric alert rules may name.
pub const METRICS: &[MetricInfo] = &[
    MetricInfo {
        name: "pool_healthy_ratio",
        kind: MetricKind::Gauge,
        meaning: "share of a pool's instances in the healthy state (0–1)",
        targets: "`pool:NAME`, and `provider/model` for the implicit pool of a model",
    },
    MetricInfo {
        name: "pool_available_ratio",
        kind: MetricKind::Gauge,
        meaning: "share of a pool's instances that would take a request now (0–1)",
        targets: "`pool:NAME`, `provider/model`",
    },
    MetricInfo {
        name: "keys_dead",
        kind: MetricKind::Gauge,
        meaning: "instances of a pool whose key the upstream refused (401/403)",
        targets: "`pool:NAME`, `provider/model`",
    },
    MetricInfo {
        name: "upstream_error_rate",
        kind: MetricKind::Ratio,
        meaning: "failed upstream attempts / finished attempts (0–1), 429s included",
        targets: "instance `provider/model#K`, `pool:NAME`, `provider/model`, `group:NAME`, `group:NAME.ECHELON`",
    },
    MetricInfo {
        name: "rate_limited_ratio",
        kind: MetricKind::Ratio,
        meaning: "attempts answered 429 / finished attempts (0–1)",
        targets: "as for `upstream_error_rate`",
    },
    MetricInfo {
        name: "attempts",
        kind: MetricKind::Counter,
        meaning: "upstream attempts started",
        targets: "as for `upstream_error_rate`",
    },
    MetricInfo {
        name: "upstream_failures",
        kind: MetricKind::Counter,
        meaning: "failed upstream attempts",
        targets: "as for `upstream_error_rate`",
    },
    MetricInfo {
        name: "fallbacks",
        kind: MetricKind::Counter,
        meaning: "requests that moved on from a target to the next stage",
        targets: "`group:NAME`, `group:NAME.ECHELON`, `pool:NAME`, `provider/model`",
    },
    MetricInfo {
        name: "breaker_open",
        kind: MetricKind::Gauge,
        meaning: "1 while a breaker is open or half-open, else 0",
        targets: "instance `provider/model#K`, `group:NAME.ECHELON`",
    },
    MetricInfo {
        name: "limiter_saturation",
        kind: MetricKind::Gauge,
        meaning: "the fullest configured limit: in-flight / max concurrency, or used / rpm limit (0–1)",
        targets: "instance `provider/model#K` (concurrency), `group:NAME.ECHELON` (concurrency and rpm)",
    },
    MetricInfo {
        name: "request_error_rate",
        kind: MetricKind::Ratio,
        meaning: "client requests answered 5xx or 429 / all requests (0–1)",
        targets: "route: a wrapper, `group:NAME`, `pool:NAME`, `provider/model`, or `unknown`",
    },
    MetricInfo {
        name: "requests",
        kind: MetricKind::Counter,
        meaning: "client requests answered",
        targets: "route",
    },
    MetricInfo {
        name: "p95_latency",
        kind: MetricKind::Quantile(0.95),
        meaning: "95th percentile of request latency, in seconds",
        targets: "route",
    },
    MetricInfo {
        name: "p95_ttft",
        kind: MetricKind::Quantile(0.95),
        meaning: "95th percentile of time to first token of streamed requests, in seconds",
        targets: "route",
    },
    MetricInfo {
        name: "breaker_trips",
        kind: MetricKind::Counter,
        meaning: "times a breaker opened",
        targets: "instance `provider/model#K`, `group:NAME.ECHELON`",
    },
    MetricInfo {
        name: "config_reload_failures",
        kind: MetricKind::Counter,
        meaning: "configuration reloads refused",
        targets: "`config`",
    },
];

/// The metric of that name.
pub fn metric(name: &str) -> Option<&'static MetricInfo> {
    METRICS.iter().find(|m| m.name == name)
}

/// Cumulative histogram buckets: `counts[i]` observations at most `bounds[i]`, and the last
/// count (one more than `bounds`) every observation.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample {
    /// Upper bounds of the finite buckets, ascending.
    pub bounds: Arc<[f64]>,
    /// Cumulative counts, `bounds.len() + 1` of them.
    pub counts: Vec<u64>,
}

impl HistogramSample {
    /// The `q` quantile (0–1) with linear interpolation inside a bucket, as Prometheus's
    /// `histogram_quantile` does; `None` without observations. Observations above the last
    /// bound are placed at the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = *self.counts.last()?;
        if total == 0 || self.counts.len() != self.bounds.len() + 1 {
            return None;
        }
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (i, &count) in self.counts.iter().enumerate() {
            let Some(&upper) = self.bounds.get(i) else {
                return self.bounds.last().copied();
            };
            #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            if count as f64 >= rank && count > below {
                let inside = (count - below) as f64;
                let into = (rank - below as f64).max(0.0);
                return Some(lower + (upper - lower) * (into / inside));
            }
            below = count;
            lower = upper;
        }
        self.bounds.last().copied()
    }

    fn minus(&self, earlier: &Self) -> Self {
        let reset =
            earlier.counts.len() != self.counts.len() || self.counts.last() < earlier.counts.last();
        let counts = if reset {
            self.counts.clone()
        } else {
            self.counts
                .iter()
                .zip(&earlier.counts)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect()
        };
        Self {
            bounds: Arc::clone(&self.bounds),
            counts,
        }
    }
}

/// One reading of a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A value at this moment.
    Gauge(f64),
    /// A cumulative count.
    Counter(f64),
    /// Cumulative numerator and denominator.
    Ratio {
        /// E.g. failed attempts so far.
        numerator: f64,
        /// E.g. finished attempts so far.
        denominator: f64,
    },
    /// Cumulative histogram buckets.
    Histogram(HistogramSample),
}

impl Sample {
    fn fits(&self, kind: MetricKind) -> bool {
        matches!(
            (self, kind),
            (Self::Gauge(_), MetricKind::Gauge)
                | (Self::Counter(_), MetricKind::Counter)
                | (Self::Ratio { .. }, MetricKind::Ratio)
                | (Self::Histogram(_), MetricKind::Quantile(_))
        )
    }

    fn zero_like(&self) -> Self {
        match self {
            Self::Gauge(_) => Self::Gauge(0.0),
            Self::Counter(_) => Self::Counter(0.0),
            Self::Ratio { .. } => Self::Ratio {
                numerator: 0.0,
                denominator: 0.0,
            },
            Self::Histogram(h) => Self::Histogram(HistogramSample {
                bounds: Arc::clone(&h.bounds),
                counts: vec![0; h.counts.len()],
            }),
        }
    }
}

/// A metric's value for one target at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// A name from [`METRICS`].
    pub metric: &'static str,
    /// What it is about.
    pub target: String,
    /// The value.
    pub sample: Sample,
}

/// Something that reads metrics for the alert engine (the routing table's snapshot, the metrics
/// registry). Called once per evaluation, off the request path.
pub trait ReadingSource: Send + Sync {
    /// Appends the current readings to `out`.
    fn read(&self, out: &mut Vec<Reading>);
}

/// Readings of a routing table snapshot (see [`METRICS`] for what each metric means).
pub fn snapshot_readings(snapshot: &TableSnapshot, out: &mut Vec<Reading>) {
    let mut instances = BTreeMap::new();
    for pool in snapshot.pools.iter().chain(&snapshot.models) {
        let target = pool.pool.to_string();
        pool_readings(pool, &target, out);
        for member in &pool.members {
            instances
                .entry(member.instance.id.to_string())
                .or_insert(&member.instance);
        }
    }
    for (target, i) in instances {
        stats_readings(&i.stats, &target, out);
        out.push(Reading {
            metric: "breaker_open",
            target: target.clone(),
            sample: Sample::Gauge(breaker_open(i.breaker)),
        });
        if let Some(max) = i.limits.max_concurrency.filter(|m| *m > 0) {
            out.push(Reading {
                metric: "limiter_saturation",
                target,
                sample: Sample::Gauge(f64::from(i.in_flight) / f64::from(max)),
            });
        }
    }
    for group in &snapshot.groups {
        let target = format!("group:{}", group.name);
        stats_readings(&group.stats, &target, out);
        for e in &group.echelons {
            let target = format!("group:{}.{}", group.name, e.name);
            stats_readings(&e.stats, &target, out);
            out.push(Reading {
                metric: "breaker_open",
                target: target.clone(),
                sample: Sample::Gauge(breaker_open(e.breaker)),
            });
            let concurrency = e
                .concurrency_limit
                .filter(|m| *m > 0)
                .map(|m| f64::from(e.in_flight) / f64::from(m));
            let rpm = e.rpm_limit.filter(|m| *m > 0).map(|m| {
                let available = f64::from(e.rpm_available.unwrap_or(m).min(m));
                1.0 - available / f64::from(m)
            });
            if let Some(saturation) = concurrency.into_iter().chain(rpm).reduce(f64::max) {
                out.push(Reading {
                    metric: "limiter_saturation",
                    target,
                    sample: Sample::Gauge(saturation),
                });
            }
        }
    }
}

fn breaker_open(state: BreakerState) -> f64 {
    if state == BreakerState::Closed {
        0.0
    } else {
        1.0
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "instance counts and counters far below 2^52"
)]
fn pool_readings(pool: &PoolSnapshot, target: &str, out: &mut Vec<Reading>) {
    let total = pool.members.len();
    if total > 0 {
        let healthy = pool
            .members
            .iter()
            .filter(|m| m.instance.health == HealthState::Healthy)
            .count();
        out.push(Reading {
            metric: "pool_healthy_ratio",
            target: target.to_owned(),
            sample: Sample::Gauge(healthy as f64 / total as f64),
        });
        out.push(Reading {
            metric: "pool_available_ratio",
            target: target.to_owned(),
            sample: Sample::Gauge(pool.available as f64 / total as f64),
        });
    }
    let dead = pool.members.iter().filter(|m| m.instance.key_dead).count();
    out.push(Reading {
        metric: "keys_dead",
        target: target.to_owned(),
        sample: Sample::Gauge(dead as f64),
    });
    stats_readings(&pool.stats, target, out);
}

#[allow(clippy::cast_precision_loss, reason = "counters far below 2^52")]
fn stats_readings(stats: &Stats, target: &str, out: &mut Vec<Reading>) {
    let finished = (stats.successes + stats.failures) as f64;
    let readings = [
        (
            "upstream_error_rate",
            Sample::Ratio {
                numerator: stats.failures as f64,
                denominator: finished,
            },
        ),
        (
            "rate_limited_ratio",
            Sample::Ratio {
                numerator: stats.rate_limited as f64,
                denominator: finished,
            },
        ),
        ("attempts", Sample::Counter(stats.attempts as f64)),
        ("upstream_failures", Sample::Counter(stats.failures as f64)),
        ("fallbacks", Sample::Counter(stats.fallbacks as f64)),
    ];
    for (metric, sample) in readings {
        out.push(Reading {
            metric,
            target: target.to_owned(),
            sample,
        });
    }
}

/// A [`ReadingSource`] over the gateway's live routing table.
#[derive(Debug, Clone)]
pub struct SnapshotReadings {
    gateway: Arc<Gateway>,
}

impl SnapshotReadings {
    /// Readings of `gateway`'s live table.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

impl ReadingSource for SnapshotReadings {
    fn read(&self, out: &mut Vec<Reading>) {
        snapshot_readings(&self.gateway.snapshot(), out);
    }
}

/// Whether an alert started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition started to hold.
    Firing,
    /// The condition no longer holds (or its target is gone).
    Resolved,
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

/// An alert firing now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveAlert {
    /// The rule's name.
    pub rule: String,
    /// Its level.
    pub level: AlertLevel,
    /// What it is about; `None` for composite rules.
    pub target: Option<String>,
    /// The latest value read.
    pub value: Option<f64>,
    /// The latest summary.
    pub summary: String,
    /// When it started firing.
    pub since: Instant,
}

/// What `GET /admin/alerts` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertsView {
    /// Alerts firing now, by rule and target.
    pub active: Vec<ActiveAlert>,
    /// Recent notices, newest first.
    pub recent: Vec<AlertNotice>,
    /// Notices held back by a cooldown since the engine started.
    pub suppressed: u64,
    /// The rules, as loaded.
    pub rules: Vec<AlertRule>,
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
                let status = status_word(n.status);
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

fn status_word(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
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

/// A rule set that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertRuleError {
    /// The metric is not one of [`METRICS`].
    #[error("alert rule `{rule}`: unknown metric `{metric}` (known: {known})")]
    UnknownMetric {
        /// The rule.
        rule: String,
        /// The metric it names.
        metric: String,
        /// The known metric names, comma-separated.
        known: String,
    },
    /// A composite rule names a rule that does not exist or is itself composite.
    #[error("alert rule `{rule}`: `{member}` is not a threshold or trend rule")]
    BadMember {
        /// The composite rule.
        rule: String,
        /// The listed name.
        member: String,
    },
    /// A composite rule lists nothing.
    #[error("alert rule `{rule}`: a composite rule needs at least one rule")]
    EmptyComposite {
        /// The composite rule.
        rule: String,
    },
    /// Two rules share a name.
    #[error("alert rule `{rule}` is defined twice")]
    Duplicate {
        /// The name.
        rule: String,
    },
    /// A window of zero, or a threshold that is not a number.
    #[error("alert rule `{rule}`: {reason}")]
    Invalid {
        /// The rule.
        rule: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// How often the background task evaluates the rules, unless told otherwise.
pub const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(15);

/// Bounds of the engine's memory and history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertEngineOptions {
    /// Notices kept for `GET /admin/alerts`.
    pub history: usize,
    /// Most targets tracked per metric; readings of further targets are ignored.
    pub max_targets_per_metric: usize,
    /// Most samples kept per series (older ones are dropped first).
    pub max_samples_per_series: usize,
}

impl Default for AlertEngineOptions {
    fn default() -> Self {
        Self {
            history: 200,
            max_targets_per_metric: 1_000,
            max_samples_per_series: 2_048,
        }
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    rule: AlertRule,
    kind: MetricKind,
    /// Whether a composite rule speaks for it.
    silent: bool,
}

#[derive(Debug, Default)]
struct Series {
    samples: VecDeque<(Instant, Sample)>,
}

#[derive(Debug, Clone)]
struct AlertState {
    firing: bool,
    since: Instant,
    last_fired: Option<Instant>,
    value: Option<f64>,
    summary: String,
}

#[derive(Debug, Default)]
struct EngineState {
    series: HashMap<(&'static str, String), Series>,
    targets_per_metric: HashMap<&'static str, usize>,
    alerts: BTreeMap<(usize, Option<String>), AlertState>,
    history: VecDeque<AlertNotice>,
    suppressed: u64,
    last_evaluation: Option<Instant>,
}

/// The alert engine. See the module docs.
pub struct AlertEngine {
    rules: Vec<Compiled>,
    /// Indexes of threshold and trend rules by metric.
    watched: HashMap<&'static str, Vec<usize>>,
    retention: Duration,
    options: AlertEngineOptions,
    notifier: Arc<dyn AlertNotifier>,
    state: Mutex<EngineState>,
}

impl std::fmt::Debug for AlertEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertEngine")
            .field("rules", &self.rules.len())
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// What a rule held for in one evaluation: target → value.
type Holding = BTreeMap<Option<String>, (Option<f64>, String)>;

impl AlertEngine {
    /// An engine for `rules`, delivering through `notifier`.
    ///
    /// # Errors
    /// When a rule names an unknown metric, a composite rule lists a missing or composite rule,
    /// two rules share a name, or a window is zero.
    pub fn new(
        rules: &[AlertRule],
        notifier: Arc<dyn AlertNotifier>,
        options: AlertEngineOptions,
    ) -> Result<Self, AlertRuleError> {
        let mut seen = HashSet::new();
        for rule in rules {
            if !seen.insert(rule.name.as_str()) {
                return Err(AlertRuleError::Duplicate {
                    rule: rule.name.clone(),
                });
            }
        }
        let mut compiled = Vec::with_capacity(rules.len());
        let mut watched: HashMap<&'static str, Vec<usize>> = HashMap::new();
        let mut retention = Duration::ZERO;
        for (index, rule) in rules.iter().enumerate() {
            let kind = match &rule.condition {
                AlertCondition::Threshold {
                    metric: name,
                    window,
                    value,
                    ..
                }
                | AlertCondition::Trend {
                    metric: name,
                    window,
                    value,
                    ..
                } => {
                    let info = metric(name).ok_or_else(|| AlertRuleError::UnknownMetric {
                        rule: rule.name.clone(),
                        metric: name.clone(),
                        known: METRICS
                            .iter()
                            .map(|m| m.name)
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                    if window.is_zero() {
                        return Err(AlertRuleError::Invalid {
                            rule: rule.name.clone(),
                            reason: "the window must be longer than zero",
                        });
                    }
                    if !value.is_finite() {
                        return Err(AlertRuleError::Invalid {
                            rule: rule.name.clone(),
                            reason: "the threshold must be a finite number",
                        });
                    }
                    // Trends of ratios and quantiles compare two windows.
                    let span = match (&rule.condition, info.kind) {
                        (
                            AlertCondition::Trend { .. },
                            MetricKind::Ratio | MetricKind::Quantile(_),
                        ) => *window * 2,
                        _ => *window,
                    };
                    retention = retention.max(span);
                    watched.entry(info.name).or_default().push(index);
                    info.kind
                }
                AlertCondition::Composite { rules: members, .. } => {
                    if members.is_empty() {
                        return Err(AlertRuleError::EmptyComposite {
                            rule: rule.name.clone(),
                        });
                    }
                    for member in members {
                        let ok = rules.iter().any(|r| {
                            r.name == *member
                                && !matches!(r.condition, AlertCondition::Composite { .. })
                        });
                        if !ok {
                            return Err(AlertRuleError::BadMember {
                                rule: rule.name.clone(),
                                member: member.clone(),
                            });
                        }
                    }
                    MetricKind::Gauge
                }
            };
            let silent = rules.iter().any(|r| match &r.condition {
                AlertCondition::Composite { rules: members, .. } => members.contains(&rule.name),
                _ => false,
            });
            compiled.push(Compiled {
                rule: rule.clone(),
                kind,
                silent,
            });
        }
        Ok(Self {
            rules: compiled,
            watched,
            retention,
            options: AlertEngineOptions {
                history: options.history.max(1),
                max_targets_per_metric: options.max_targets_per_metric.max(1),
                max_samples_per_series: options.max_samples_per_series.max(2),
            },
            notifier,
            state: Mutex::new(EngineState::default()),
        })
    }

    /// The rules, as loaded.
    pub fn rules(&self) -> Vec<AlertRule> {
        self.rules.iter().map(|c| c.rule.clone()).collect()
    }

    /// Takes `readings` made at `now`, evaluates every rule, delivers the notices that result
    /// and returns them.
    pub fn evaluate(&self, now: Instant, readings: Vec<Reading>) -> Vec<AlertNotice> {
        let notices = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            self.ingest(&mut state, now, readings);
            let holding = self.holding(&state, now);
            let notices = self.transitions(&mut state, now, &holding);
            for notice in &notices {
                if state.history.len() == self.options.history {
                    state.history.pop_front();
                }
                state.history.push_back(notice.clone());
            }
            state.last_evaluation = Some(now);
            notices
        };
        for notice in &notices {
            self.notifier.notify(notice);
        }
        notices
    }

    /// Alerts firing now and recent notices.
    pub fn view(&self) -> AlertsView {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let active = state
            .alerts
            .iter()
            .filter(|(_, a)| a.firing)
            .filter_map(|((index, target), a)| {
                let c = self.rules.get(*index)?;
                Some(ActiveAlert {
                    rule: c.rule.name.clone(),
                    level: c.rule.level,
                    target: target.clone(),
                    value: a.value,
                    summary: a.summary.clone(),
                    since: a.since,
                })
            })
            .collect();
        AlertsView {
            active,
            recent: state.history.iter().rev().cloned().collect(),
            suppressed: state.suppressed,
            rules: self.rules(),
        }
    }

    fn ingest(&self, state: &mut EngineState, now: Instant, readings: Vec<Reading>) {
        let previous = state.last_evaluation;
        for reading in readings {
            let Some(indexes) = self.watched.get(reading.metric) else {
                continue;
            };
            let wanted = indexes.iter().any(|&i| {
                self.rules[i].kind_fits(&reading.sample)
                    && self.rules[i]
                        .target()
                        .is_none_or(|t| t == reading.target.as_str())
            });
            if !wanted {
                continue;
            }
            let key = (reading.metric, reading.target);
            if !state.series.contains_key(&key) {
                let count = state.targets_per_metric.entry(key.0).or_insert(0);
                if *count >= self.options.max_targets_per_metric {
                    continue;
                }
                *count += 1;
            }
            let series = state.series.entry(key).or_default();
            if series.samples.is_empty()
                && let Some(before) = previous
                && !matches!(reading.sample, Sample::Gauge(_))
            {
                // A cumulative series that appeared since the last evaluation counted from zero.
                series
                    .samples
                    .push_back((before, reading.sample.zero_like()));
            }
            if series.samples.back().is_some_and(|(t, _)| *t >= now) {
                series.samples.pop_back();
            }
            series.samples.push_back((now, reading.sample));
            while series.samples.len() > self.options.max_samples_per_series {
                series.samples.pop_front();
            }
        }
        // Forget samples older than the longest window needs (keeping one baseline before it),
        // and series that stopped reporting.
        let horizon = Instant::from_elapsed(
            now.elapsed_since_origin()
                .saturating_sub(self.retention + self.retention / 2),
        );
        state.series.retain(|_, s| {
            while s.samples.len() > 1 && s.samples.get(1).is_some_and(|(t, _)| *t <= horizon) {
                s.samples.pop_front();
            }
            s.samples.back().is_some_and(|(t, _)| *t >= horizon)
        });
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        for (metric, _) in state.series.keys() {
            *counts.entry(metric).or_insert(0) += 1;
        }
        state.targets_per_metric = counts;
    }

    fn holding(&self, state: &EngineState, now: Instant) -> Vec<Holding> {
        let mut holding: Vec<Holding> = vec![Holding::new(); self.rules.len()];
        for (index, c) in self.rules.iter().enumerate() {
            let (metric, target, op, threshold, window, trend) = match &c.rule.condition {
                AlertCondition::Threshold {
                    metric,
                    target,
                    op,
                    value,
                    window,
                } => (metric, target, *op, *value, *window, false),
                AlertCondition::Trend {
                    metric,
                    target,
                    op,
                    value,
                    window,
                } => (metric, target, *op, *value, *window, true),
                AlertCondition::Composite { .. } => continue,
            };
            for ((m, t), series) in &state.series {
                if *m != metric.as_str() || target.as_ref().is_some_and(|want| want != t) {
                    continue;
                }
                let value = if trend {
                    series.trend(c.kind, now, window)
                } else {
                    series.over(c.kind, now.saturating_back(window), now)
                };
                if let Some(value) = value
                    && op.holds(value, threshold)
                {
                    let what = if trend { "change of " } else { "" };
                    let summary = format!(
                        "{what}{metric} of {t} over {} is {} ({} {})",
                        crate::gateway::humanize(window),
                        short(value),
                        op.as_str(),
                        short(threshold)
                    );
                    holding[index].insert(Some(t.clone()), (Some(value), summary));
                }
            }
        }
        for (index, c) in self.rules.iter().enumerate() {
            let AlertCondition::Composite {
                rules: members,
                combine,
            } = &c.rule.condition
            else {
                continue;
            };
            let parts: Vec<(&str, &Holding)> = members
                .iter()
                .filter_map(|name| {
                    let i = self.rules.iter().position(|r| r.rule.name == *name)?;
                    Some((name.as_str(), &holding[i]))
                })
                .collect();
            let holds = match combine {
                Combine::All => parts.iter().all(|(_, h)| !h.is_empty()),
                Combine::Any => parts.iter().any(|(_, h)| !h.is_empty()),
            };
            if holds {
                let described: Vec<String> = parts
                    .iter()
                    .filter(|(_, h)| !h.is_empty())
                    .map(|(name, h)| {
                        let targets: Vec<&str> = h.keys().flatten().map(String::as_str).collect();
                        format!("{name} ({})", targets.join(", "))
                    })
                    .collect();
                let summary = format!("{}: {}", combine_word(*combine), described.join("; "));
                holding[index].insert(None, (None, summary));
            }
        }
        holding
    }

    fn transitions(
        &self,
        state: &mut EngineState,
        now: Instant,
        holding: &[Holding],
    ) -> Vec<AlertNotice> {
        let mut notices = Vec::new();
        for (index, c) in self.rules.iter().enumerate() {
            if c.silent {
                continue;
            }
            let rule = &c.rule;
            let notice = |status, target: &Option<String>, a: &AlertState| AlertNotice {
                rule: rule.name.clone(),
                level: rule.level,
                status,
                target: target.clone(),
                value: a.value,
                summary: a.summary.clone(),
                description: rule.description.clone(),
                at: now,
                since: a.since,
            };
            for (target, (value, summary)) in &holding[index] {
                let a = state
                    .alerts
                    .entry((index, target.clone()))
                    .or_insert_with(|| AlertState {
                        firing: false,
                        since: now,
                        last_fired: None,
                        value: None,
                        summary: String::new(),
                    });
                a.value = *value;
                a.summary.clone_from(summary);
                if a.firing {
                    continue;
                }
                if a.last_fired.is_some_and(|t| now - t < rule.cooldown) {
                    state.suppressed += 1;
                    continue;
                }
                a.firing = true;
                a.since = now;
                a.last_fired = Some(now);
                notices.push(notice(AlertStatus::Firing, target, a));
            }
            for ((i, target), a) in state.alerts.iter_mut() {
                if *i != index || !a.firing || holding[index].contains_key(target) {
                    continue;
                }
                a.firing = false;
                a.summary = format!("no longer holds (was: {})", a.summary);
                notices.push(notice(AlertStatus::Resolved, target, a));
            }
        }
        // Forget quiet alerts whose cooldown is over, so targets that come and go stay bounded.
        state.alerts.retain(|(i, _), a| {
            a.firing
                || self
                    .rules
                    .get(*i)
                    .is_some_and(|c| a.last_fired.is_some_and(|t| now - t < c.rule.cooldown))
        });
        notices
    }

    /// Runs the engine as a tokio task: every `interval`, read every source and evaluate, until
    /// the returned handle is shut down or dropped. `clock` must be the engine's clock (the
    /// gateway's), so that instants in notices compare with snapshots.
    pub fn spawn(
        self: Arc<Self>,
        sources: Vec<Arc<dyn ReadingSource>>,
        clock: Arc<dyn Clock>,
        interval: Duration,
    ) -> BackgroundTask {
        let interval = interval.max(Duration::from_millis(10));
        BackgroundTask::spawn("alert engine", move |mut stop| async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.changed() => break,
                }
                let mut readings = Vec::new();
                for source in &sources {
                    source.read(&mut readings);
                }
                self.evaluate(clock.now(), readings);
            }
        })
    }
}

impl Compiled {
    fn target(&self) -> Option<&str> {
        match &self.rule.condition {
            AlertCondition::Threshold { target, .. } | AlertCondition::Trend { target, .. } => {
                target.as_deref()
            }
            AlertCondition::Composite { .. } => None,
        }
    }

    fn kind_fits(&self, sample: &Sample) -> bool {
        sample.fits(self.kind)
    }
}

trait SaturatingBack {
    fn saturating_back(self, by: Duration) -> Self;
}

impl SaturatingBack for Instant {
    fn saturating_back(self, by: Duration) -> Self {
        Instant::from_elapsed(self.elapsed_since_origin().saturating_sub(by))
    }
}

fn combine_word(combine: Combine) -> &'static str {
    match combine {
        Combine::All => "all of",
        Combine::Any => "any of",
    }
}

/// A number for a summary: up to four significant decimals, no trailing zeros.
fn short(x: f64) -> String {
    let text = format!("{x:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

impl Series {
    /// The sample at or before `at` (the window's baseline), else the first one after it.
    fn baseline(&self, at: Instant) -> Option<&(Instant, Sample)> {
        self.samples
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .or_else(|| self.samples.front())
    }

    /// The latest sample at or before `at`.
    fn last_at(&self, at: Instant) -> Option<&(Instant, Sample)> {
        self.samples.iter().rev().find(|(t, _)| *t <= at)
    }

    /// The value over `(from, to]`, see the module docs.
    fn over(&self, kind: MetricKind, from: Instant, to: Instant) -> Option<f64> {
        match kind {
            MetricKind::Gauge => {
                let values: Vec<f64> = self
                    .samples
                    .iter()
                    .filter(|(t, _)| *t > from && *t <= to)
                    .filter_map(|(_, s)| match s {
                        Sample::Gauge(v) => Some(*v),
                        _ => None,
                    })
                    .collect();
                if values.is_empty() {
                    // No sample inside the window (evaluations sparser than the window): the
                    // latest value stands for it.
                    return match self.last_at(to) {
                        Some((_, Sample::Gauge(v))) => Some(*v),
                        _ => None,
                    };
                }
                #[allow(clippy::cast_precision_loss, reason = "few samples")]
                let n = values.len() as f64;
                Some(values.iter().sum::<f64>() / n)
            }
            MetricKind::Counter => {
                let (t0, _) = self.baseline(from)?;
                let (t1, _) = self.last_at(to)?;
                (t1 > t0).then(|| self.increase(*t0, *t1, |s| counter(s).unwrap_or(0.0)))
            }
            MetricKind::Ratio => {
                let (t0, _) = self.baseline(from)?;
                let (t1, _) = self.last_at(to)?;
                if t1 <= t0 {
                    return None;
                }
                let numerator = self.increase(*t0, *t1, |s| ratio(s).0);
                let denominator = self.increase(*t0, *t1, |s| ratio(s).1);
                (denominator > 0.0).then(|| numerator / denominator)
            }
            MetricKind::Quantile(q) => {
                let (t0, s0) = self.baseline(from)?;
                let (t1, s1) = self.last_at(to)?;
                match (s0, s1) {
                    (Sample::Histogram(h0), Sample::Histogram(h1)) if t1 > t0 => {
                        h1.minus(h0).quantile(q)
                    }
                    _ => None,
                }
            }
        }
    }

    /// The change over the window ending at `now`, see the module docs.
    fn trend(&self, kind: MetricKind, now: Instant, window: Duration) -> Option<f64> {
        let start = now.saturating_back(window);
        match kind {
            MetricKind::Gauge => {
                let (_, first) = self.baseline(start)?;
                let (_, last) = self.last_at(now)?;
                match (first, last) {
                    (Sample::Gauge(a), Sample::Gauge(b)) => Some(b - a),
                    _ => None,
                }
            }
            MetricKind::Counter => self.over(kind, start, now),
            MetricKind::Ratio => {
                let recent = self.over(kind, start, now)?;
                let before = self
                    .over(kind, start.saturating_back(window), start)
                    .unwrap_or(0.0);
                Some(recent - before)
            }
            MetricKind::Quantile(_) => {
                let recent = self.over(kind, start, now)?;
                let before = self.over(kind, start.saturating_back(window), start)?;
                Some(recent - before)
            }
        }
    }

    /// The increase of `value` between the samples at `t0` and `t1`, counting a decrease as a
    /// restart from zero.
    fn increase(&self, t0: Instant, t1: Instant, value: impl Fn(&Sample) -> f64) -> f64 {
        let mut total = 0.0;
        let mut previous: Option<f64> = None;
        for (_, s) in self.samples.iter().filter(|(t, _)| *t >= t0 && *t <= t1) {
            let v = value(s);
            if let Some(p) = previous {
                total += if v >= p { v - p } else { v };
            }
            previous = Some(v);
        }
        total
    }
}

fn counter(s: &Sample) -> Option<f64> {
    match s {
        Sample::Counter(v) => Some(*v),
        _ => None,
    }
}

fn ratio(s: &Sample) -> (f64, f64) {
    match s {
        Sample::Ratio {
            numerator,
            denominator,
        } => (*numerator, *denominator),
        _ => (0.0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use echelon_domain::time::ManualClock;

    use super::*;

    #[derive(Default)]
    struct Inbox(Mutex<Vec<AlertNotice>>);

    impl AlertNotifier for Inbox {
        fn notify(&self, notice: &AlertNotice) {
            self.0.lock().unwrap().push(notice.clone());
        }
    }

    impl Inbox {
        fn take(&self) -> Vec<(String, AlertStatus, Option<String>)> {
            std::mem::take(&mut *self.0.lock().unwrap())
                .into_iter()
                .map(|n| (n.rule, n.status, n.target))
                .collect()
        }
    }

    fn threshold(
        name: &str,
        metric: &str,
        target: Option<&str>,
        op: Comparison,
        value: f64,
    ) -> AlertRule {
        AlertRule {
            name: name.into(),
            level: AlertLevel::Critical,
            cooldown: Duration::from_secs(600),
            description: Some("less than half of a pool is healthy".into()),
            condition: AlertCondition::Threshold {
                metric: metric.into(),
                target: target.map(Into::into),
                op,
                value,
                window: Duration::from_secs(60),
            },
        }
    }

    fn gauge(metric: &'static str, target: &str, v: f64) -> Reading {
        Reading {
            metric,
            target: target.into(),
            sample: Sample::Gauge(v),
        }
    }

    fn ratio_reading(metric: &'static str, target: &str, n: f64, d: f64) -> Reading {
        Reading {
            metric,
            target: target.into(),
            sample: Sample::Ratio {
                numerator: n,
                denominator: d,
            },
        }
    }

    fn engine(rules: &[AlertRule]) -> (AlertEngine, Arc<Inbox>) {
        let inbox = Arc::new(Inbox::default());
        let engine = AlertEngine::new(rules, inbox.clone(), AlertEngineOptions::default()).unwrap();
        (engine, inbox)
    }

    fn secs(s: u64) -> Instant {
        Instant::from_elapsed(Duration::from_secs(s))
    }

    #[test]
    fn threshold_fires_once_per_target_then_resolves() {
        let (engine, inbox) = engine(&[threshold(
            "pool-unhealthy",
            "pool_healthy_ratio",
            None,
            Comparison::Less,
            0.5,
        )]);
        let clock = ManualClock::new();
        // Both pools fine.
        engine.evaluate(
            clock.now(),
            vec![
                gauge("pool_healthy_ratio", "pool:a", 1.0),
                gauge("pool_healthy_ratio", "pool:b", 1.0),
            ],
        );
        assert!(inbox.take().is_empty());
        // Pool a drops: the one-minute mean falls under 0.5 once enough low samples arrive.
        for _ in 0..5 {
            clock.advance(Duration::from_secs(10));
            engine.evaluate(
                clock.now(),
                vec![
                    gauge("pool_healthy_ratio", "pool:a", 0.0),
                    gauge("pool_healthy_ratio", "pool:b", 1.0),
                ],
            );
        }
        assert_eq!(
            inbox.take(),
            [(
                "pool-unhealthy".into(),
                AlertStatus::Firing,
                Some("pool:a".into())
            )]
        );
        let view = engine.view();
        assert_eq!(view.active.len(), 1);
        assert_eq!(view.active[0].value, Some(0.0));
        assert_eq!(
            view.active[0].summary,
            "pool_healthy_ratio of pool:a over 60s is 0 (< 0.5)"
        );
        // Still low: no repeat.
        for _ in 0..10 {
            clock.advance(Duration::from_secs(10));
            engine.evaluate(
                clock.now(),
                vec![gauge("pool_healthy_ratio", "pool:a", 0.0)],
            );
        }
        assert!(inbox.take().is_empty());
        // Healthy again for a minute: resolved.
        for _ in 0..6 {
            clock.advance(Duration::from_secs(10));
            engine.evaluate(
                clock.now(),
                vec![gauge("pool_healthy_ratio", "pool:a", 1.0)],
            );
        }
        assert_eq!(
            inbox.take(),
            [(
                "pool-unhealthy".into(),
                AlertStatus::Resolved,
                Some("pool:a".into())
            )]
        );
        let view = engine.view();
        assert!(view.active.is_empty());
        assert_eq!(view.recent.len(), 2);
        assert_eq!(view.recent[0].status, AlertStatus::Resolved);
        assert_eq!(view.recent[0].since, view.recent[1].at);
    }

    #[test]
    fn cooldown_holds_back_a_second_firing_until_it_is_over() {
        let mut rule = threshold(
            "breaker",
            "breaker_open",
            Some("openai/gpt-4o#0"),
            Comparison::GreaterOrEqual,
            1.0,
        );
        rule.cooldown = Duration::from_secs(300);
        if let AlertCondition::Threshold { window, .. } = &mut rule.condition {
            *window = Duration::from_secs(1);
        }
        let (engine, inbox) = engine(&[rule]);
        let target = "openai/gpt-4o#0";
        let at = |s, v| engine.evaluate(secs(s), vec![gauge("breaker_open", target, v)]);
        at(0, 1.0);
        assert_eq!(inbox.take().len(), 1);
        at(10, 0.0);
        assert_eq!(inbox.take()[0].1, AlertStatus::Resolved);
        // Flapping within the cooldown: held back.
        at(20, 1.0);
        at(30, 0.0);
        at(40, 1.0);
        assert!(inbox.take().is_empty());
        assert_eq!(engine.view().suppressed, 2);
        // Still open when the cooldown ends: it fires.
        at(290, 1.0);
        assert!(inbox.take().is_empty());
        at(300, 1.0);
        assert_eq!(
            inbox.take(),
            [("breaker".into(), AlertStatus::Firing, Some(target.into()))]
        );
        // A reading for another target is not watched by a rule with a fixed target.
        engine.evaluate(
            secs(310),
            vec![
                gauge("breaker_open", "openai/gpt-4o#1", 1.0),
                gauge("breaker_open", target, 1.0),
            ],
        );
        assert!(inbox.take().is_empty());
        // A target that stops reporting is resolved once its window has no data.
        engine.evaluate(secs(320), vec![]);
        assert_eq!(
            inbox.take(),
            [("breaker".into(), AlertStatus::Resolved, Some(target.into()))]
        );
    }

    #[test]
    fn error_rate_is_read_over_the_window_from_cumulative_counts() {
        let mut rule = threshold(
            "errors",
            "upstream_error_rate",
            Some("pool:a"),
            Comparison::Greater,
            0.2,
        );
        rule.level = AlertLevel::Warning;
        let (engine, inbox) = engine(&[rule]);
        // 1000 attempts, 10 % failed, before the window.
        engine.evaluate(
            secs(0),
            vec![ratio_reading(
                "upstream_error_rate",
                "pool:a",
                100.0,
                1000.0,
            )],
        );
        // In the last minute: 100 more attempts, 30 failed: 30 %, though 11.8 % overall.
        engine.evaluate(
            secs(60),
            vec![ratio_reading(
                "upstream_error_rate",
                "pool:a",
                130.0,
                1100.0,
            )],
        );
        let notices = engine.view().recent;
        assert_eq!(inbox.take().len(), 1);
        let value = notices[0].value.unwrap();
        assert!((value - 0.3).abs() < 1e-9, "{value}");
        // A reload restarted the counters: 10 of 100 is 10 %, resolved.
        engine.evaluate(
            secs(120),
            vec![ratio_reading("upstream_error_rate", "pool:a", 10.0, 100.0)],
        );
        assert_eq!(inbox.take()[0].1, AlertStatus::Resolved);
    }

    #[test]
    fn trend_of_a_counter_is_its_increase_over_the_window() {
        let rule = AlertRule {
            name: "fallbacks-rising".into(),
            level: AlertLevel::Warning,
            cooldown: Duration::ZERO,
            description: None,
            condition: AlertCondition::Trend {
                metric: "fallbacks".into(),
                target: None,
                op: Comparison::Greater,
                value: 50.0,
                window: Duration::from_secs(300),
            },
        };
        let (engine, inbox) = engine(&[rule]);
        let counter = |target: &str, v: f64| Reading {
            metric: "fallbacks",
            target: target.into(),
            sample: Sample::Counter(v),
        };
        engine.evaluate(secs(0), vec![counter("group:chat", 1000.0)]);
        engine.evaluate(secs(150), vec![counter("group:chat", 1030.0)]);
        assert!(inbox.take().is_empty());
        // A group that appears later counts from zero at the evaluation before it appeared.
        engine.evaluate(
            secs(300),
            vec![counter("group:chat", 1060.0), counter("group:new", 70.0)],
        );
        assert_eq!(
            inbox.take(),
            [
                (
                    "fallbacks-rising".into(),
                    AlertStatus::Firing,
                    Some("group:chat".into())
                ),
                (
                    "fallbacks-rising".into(),
                    AlertStatus::Firing,
                    Some("group:new".into())
                ),
            ]
        );
        // Over the next five minutes only 10 more: both resolve.
        engine.evaluate(
            secs(600),
            vec![counter("group:chat", 1070.0), counter("group:new", 70.0)],
        );
        assert_eq!(inbox.take().len(), 2);
    }

    #[test]
    fn trend_of_a_ratio_compares_the_last_window_with_the_one_before() {
        let rule = AlertRule {
            name: "error-rate-rising".into(),
            level: AlertLevel::Warning,
            cooldown: Duration::from_secs(600),
            description: None,
            condition: AlertCondition::Trend {
                metric: "upstream_error_rate".into(),
                target: None,
                op: Comparison::Greater,
                value: 0.1,
                window: Duration::from_secs(300),
            },
        };
        let (engine, inbox) = engine(&[rule]);
        let r = |n, d| vec![ratio_reading("upstream_error_rate", "pool:a", n, d)];
        engine.evaluate(secs(0), r(0.0, 0.0));
        engine.evaluate(secs(300), r(5.0, 100.0)); // 5 % in the first window
        assert_eq!(
            inbox.take().len(),
            0,
            "5 % up from no traffic is below 10 points"
        );
        engine.evaluate(secs(600), r(13.0, 200.0)); // 8 %: up 3 points
        assert!(inbox.take().is_empty());
        engine.evaluate(secs(900), r(43.0, 300.0)); // 30 %: up 22 points
        assert_eq!(inbox.take().len(), 1);
        assert!((engine.view().active[0].value.unwrap() - 0.22).abs() < 1e-9);
    }

    #[test]
    fn p95_latency_reads_the_window_of_a_histogram() {
        let bounds: Arc<[f64]> = Arc::from(vec![0.1, 0.5, 1.0, 5.0]);
        let h = |counts: Vec<u64>| Reading {
            metric: "p95_latency",
            target: "chat".into(),
            sample: Sample::Histogram(HistogramSample {
                bounds: Arc::clone(&bounds),
                counts,
            }),
        };
        let mut rule = threshold(
            "slow",
            "p95_latency",
            Some("chat"),
            Comparison::Greater,
            2.0,
        );
        rule.level = AlertLevel::Warning;
        let (engine, inbox) = engine(&[rule]);
        // 100 fast requests.
        engine.evaluate(secs(0), vec![h(vec![100, 100, 100, 100, 100])]);
        // Then 100 requests of which 20 took 1–5 s: p95 in (1, 5].
        engine.evaluate(secs(60), vec![h(vec![180, 180, 180, 200, 200])]);
        assert_eq!(inbox.take().len(), 1);
        let p95 = engine.view().active[0].value.unwrap();
        assert!((p95 - 4.0).abs() < 1e-9, "{p95}");
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let h = HistogramSample {
            bounds: Arc::from(vec![1.0, 2.0, 4.0]),
            counts: vec![50, 90, 100, 100],
        };
        assert_eq!(h.quantile(0.5), Some(1.0));
        assert!((h.quantile(0.7).unwrap() - 1.5).abs() < 1e-9);
        assert!((h.quantile(0.95).unwrap() - 3.0).abs() < 1e-9);
        let empty = HistogramSample {
            bounds: Arc::from(vec![1.0]),
            counts: vec![0, 0],
        };
        assert_eq!(empty.quantile(0.95), None);
        let overflow = HistogramSample {
            bounds: Arc::from(vec![1.0]),
            counts: vec![0, 10],
        };
        assert_eq!(overflow.quantile(0.95), Some(1.0));
    }

    #[test]
    fn composite_speaks_for_its_members_and_lists_their_targets() {
        let unhealthy = threshold(
            "pool-unhealthy",
            "pool_healthy_ratio",
            None,
            Comparison::Less,
            0.5,
        );
        let errors = threshold(
            "errors",
            "upstream_error_rate",
            None,
            Comparison::Greater,
            0.5,
        );
        let outage = AlertRule {
            name: "outage".into(),
            level: AlertLevel::Critical,
            cooldown: Duration::from_secs(60),
            description: None,
            condition: AlertCondition::Composite {
                rules: vec!["pool-unhealthy".into(), "errors".into()],
                combine: Combine::All,
            },
        };
        let (engine, inbox) = engine(&[unhealthy, errors, outage]);
        engine.evaluate(
            secs(0),
            vec![
                gauge("pool_healthy_ratio", "pool:a", 0.0),
                ratio_reading("upstream_error_rate", "pool:a", 0.0, 0.0),
            ],
        );
        assert!(inbox.take().is_empty(), "only one member holds");
        engine.evaluate(
            secs(30),
            vec![
                gauge("pool_healthy_ratio", "pool:a", 0.0),
                ratio_reading("upstream_error_rate", "pool:a", 90.0, 100.0),
            ],
        );
        assert_eq!(inbox.take(), [("outage".into(), AlertStatus::Firing, None)]);
        assert_eq!(
            engine.view().active[0].summary,
            "all of: pool-unhealthy (pool:a); errors (pool:a)"
        );
        engine.evaluate(
            secs(120),
            vec![
                gauge("pool_healthy_ratio", "pool:a", 1.0),
                ratio_reading("upstream_error_rate", "pool:a", 90.0, 200.0),
            ],
        );
        assert_eq!(
            inbox.take(),
            [("outage".into(), AlertStatus::Resolved, None)]
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let inbox: Arc<dyn AlertNotifier> = Arc::new(Inbox::default());
        let unknown = threshold("x", "eror_rate", None, Comparison::Greater, 1.0);
        let err =
            AlertEngine::new(&[unknown], inbox.clone(), AlertEngineOptions::default()).unwrap_err();
        assert!(err.to_string().starts_with(
            "alert rule `x`: unknown metric `eror_rate` (known: pool_healthy_ratio, "
        ));
        let composite = AlertRule {
            name: "c".into(),
            level: AlertLevel::Info,
            cooldown: Duration::ZERO,
            description: None,
            condition: AlertCondition::Composite {
                rules: vec!["missing".into()],
                combine: Combine::Any,
            },
        };
        let err = AlertEngine::new(&[composite], inbox.clone(), AlertEngineOptions::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "alert rule `c`: `missing` is not a threshold or trend rule"
        );
        let a = threshold("a", "attempts", None, Comparison::Greater, 1.0);
        let err =
            AlertEngine::new(&[a.clone(), a], inbox, AlertEngineOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "alert rule `a` is defined twice");
    }

    #[test]
    fn series_per_metric_and_history_are_bounded() {
        let rule = threshold("any", "breaker_open", None, Comparison::GreaterOrEqual, 1.0);
        let inbox = Arc::new(Inbox::default());
        let options = AlertEngineOptions {
            history: 5,
            max_targets_per_metric: 3,
            max_samples_per_series: 4,
        };
        let engine = AlertEngine::new(&[rule], inbox.clone(), options).unwrap();
        let readings: Vec<_> = (0..10)
            .map(|i| gauge("breaker_open", &format!("i{i}"), 1.0))
            .collect();
        engine.evaluate(secs(0), readings);
        assert_eq!(inbox.take().len(), 3);
        for s in 1..20 {
            let v = if s % 2 == 0 { 1.0 } else { 0.0 };
            engine.evaluate(secs(s * 100), vec![gauge("breaker_open", "i0", v)]);
        }
        assert_eq!(engine.view().recent.len(), 5);
        let state = engine.state.lock().unwrap();
        assert!(state.series.values().all(|s| s.samples.len() <= 4));
        assert!(state.series.len() <= 3);
    }

    #[test]
    fn snapshot_readings_cover_pools_instances_and_limits() {
        use echelon_domain::routing::{RoutingTable, TableOptions};
        use echelon_domain::spec::{HealthCheckSpec, ProbeKind};
        let topology = crate::health_check::tests::topology(
            HealthCheckSpec {
                enabled: true,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                probe: ProbeKind::Models,
            },
            2,
        );
        let table = RoutingTable::build(
            Arc::new(topology),
            None,
            TableOptions::default(),
            Instant::ZERO,
        );
        let sick = table.instances().next().unwrap().id().clone();
        table.record_probe(&sick, secs(1), false);
        table.record_probe(&sick, secs(2), false);
        let mut out = Vec::new();
        snapshot_readings(&table.snapshot(secs(2)), &mut out);
        let find = |metric: &str, target: &str| {
            out.iter()
                .find(|r| r.metric == metric && r.target == target)
                .map(|r| r.sample.clone())
        };
        assert_eq!(
            find("pool_healthy_ratio", "pool:main"),
            Some(Sample::Gauge(0.5))
        );
        assert_eq!(
            find("pool_healthy_ratio", "acme/fast"),
            Some(Sample::Gauge(0.5))
        );
        assert_eq!(
            find("pool_available_ratio", "pool:main"),
            Some(Sample::Gauge(0.5))
        );
        assert_eq!(find("keys_dead", "pool:main"), Some(Sample::Gauge(0.0)));
        assert_eq!(
            find("breaker_open", "acme/fast#0"),
            Some(Sample::Gauge(0.0))
        );
        assert_eq!(
            find("upstream_error_rate", "acme/fast#1"),
            Some(Sample::Ratio {
                numerator: 0.0,
                denominator: 0.0
            })
        );
        assert_eq!(find("attempts", "pool:main"), Some(Sample::Counter(0.0)));
        // Every reading names a metric of the catalogue with a sample of its kind.
        for r in &out {
            let info = metric(r.metric).unwrap();
            assert!(r.sample.fits(info.kind), "{} {:?}", r.metric, r.sample);
        }
    }

    #[test]
    fn every_metric_named_in_the_shipped_gateway_toml_is_known() {
        // configs/gateway.toml: the active rules and the commented ones.
        for name in [
            "pool_healthy_ratio",
            "upstream_error_rate",
            "breaker_open",
            "keys_dead",
            "p95_latency",
            "request_error_rate",
            "limiter_saturation",
            "config_reload_failures",
        ] {
            assert!(metric(name).is_some(), "{name}");
        }
    }

    struct Fixed(f64);

    impl ReadingSource for Fixed {
        fn read(&self, out: &mut Vec<Reading>) {
            out.push(gauge("pool_healthy_ratio", "pool:a", self.0));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_background_task_evaluates_every_interval_until_shut_down() {
        let (engine, inbox) = engine(&[threshold(
            "pool-unhealthy",
            "pool_healthy_ratio",
            None,
            Comparison::Less,
            0.5,
        )]);
        let engine = Arc::new(engine);
        let clock = Arc::new(crate::clock::TokioClock::new());
        let task = Arc::clone(&engine).spawn(
            vec![Arc::new(Fixed(0.0))],
            clock,
            DEFAULT_EVALUATION_INTERVAL,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(inbox.take().len(), 1, "the first evaluation runs at once");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(inbox.take().is_empty(), "still firing: nothing new");
        assert_eq!(engine.view().active.len(), 1);
        task.shutdown().await;
        assert_eq!(
            Arc::strong_count(&engine),
            1,
            "the task let go of the engine"
        );
    }
}
