//! The alert engine: threshold, trend and composite rules over readings of the gateway's state,
//! with levels, de-duplication per rule and target, cooldown, resolve notices, a bounded
//! history for `GET /admin/alerts`, and delivery through the [`AlertNotifier`] port.
//!
//! # Readings
//!
//! Each evaluation takes [`Reading`]s — a metric, a target and a [`Sample`] — from its
//! [`ReadingSource`]s: [`SnapshotReadings`] turns the routing table's snapshot into readings
//! (pool health, upstream error rates, breakers, limiter saturation, fallbacks), and the metrics
//! registry of the infrastructure adds request-level readings (error rates and latency
//! percentiles per route). [`AlertMetric`] is the closed set of metrics a rule may name.
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
//!
//! # Reloading
//!
//! [`AlertEngine::set_rules`] swaps the rule set in place: alerts of rules that keep their name
//! keep their state, alerts of removed rules are resolved, and the series stay, so an edited
//! threshold is read over the samples already taken.
//!
//! # Layout
//!
//! `series.rs` holds the samples and the window math, `readings.rs` what is read and from where,
//! `rules.rs` a rule set prepared for evaluation and what each rule holds for, `notify.rs` the
//! notices and the [`AlertNotifier`] port, `engine.rs` the engine, its state and its task.

mod engine;
mod notify;
mod readings;
mod rules;
mod series;

pub use echelon_domain::alert::{
    AlertCondition, AlertLevel, AlertMetric, AlertRule, AlertRuleError, AlertRules, Combine,
    Comparison, MetricKind,
};
pub use engine::{
    ActiveAlert, AlertEngine, AlertEngineOptions, AlertsView, DEFAULT_EVALUATION_INTERVAL,
};
pub use notify::{AlertNotice, AlertNotifier, AlertStatus, LogNotifier, Notifiers};
pub use readings::{Reading, ReadingSource, SnapshotReadings, snapshot_readings};
pub use series::{HistogramSample, Sample};

#[cfg(test)]
mod tests {
    use super::AlertMetric;

    #[test]
    fn docs_monitoring_lists_every_alert_metric() {
        let doc = include_str!("../../../../docs/monitoring.md");
        let section = &doc[doc.find("## Alerts").expect("an Alerts section")..];
        for metric in AlertMetric::ALL {
            assert!(
                section.contains(&format!("`{}`", metric.name())),
                "docs/monitoring.md does not list `{metric}`"
            );
        }
    }
}
