//! The alert engine: evaluates a rule set over readings, turns what holds into firing and
//! resolve notices (de-duplicated per rule and target, held back by cooldowns), keeps a bounded
//! history for `GET /admin/alerts`, takes a new rule set on reload, and runs as a background task.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use echelon_domain::alert::{AlertLevel, AlertMetric, AlertRules};
use echelon_domain::time::{Clock, Instant};
use serde::Serialize;

use super::notify::{AlertNotice, AlertNotifier, AlertStatus};
use super::readings::{Reading, ReadingSource};
use super::rules::{Holding, RuleSet, SeriesMap};
use crate::task::BackgroundTask;

/// How often the background task evaluates the rules, unless told otherwise.
pub const DEFAULT_EVALUATION_INTERVAL: Duration =
    echelon_domain::defaults::alerts::EVALUATION_INTERVAL;

/// The shortest evaluation interval the background task keeps.
const MIN_EVALUATION_INTERVAL: Duration = Duration::from_millis(10);

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
    pub rules: AlertRules,
}

#[derive(Debug, Clone)]
struct AlertState {
    firing: bool,
    since: Instant,
    last_fired: Option<Instant>,
    value: Option<f64>,
    summary: String,
}

#[derive(Debug)]
struct EngineState {
    rules: RuleSet,
    series: SeriesMap,
    targets_per_metric: HashMap<AlertMetric, usize>,
    /// By rule index and target.
    alerts: BTreeMap<(usize, Option<String>), AlertState>,
    history: VecDeque<AlertNotice>,
    suppressed: u64,
    last_evaluation: Option<Instant>,
}

/// The alert engine. See the [module docs](super).
pub struct AlertEngine {
    options: AlertEngineOptions,
    notifier: Arc<dyn AlertNotifier>,
    /// Time between two evaluations of the background task, in nanoseconds.
    interval: AtomicU64,
    state: Mutex<EngineState>,
}

impl std::fmt::Debug for AlertEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("AlertEngine")
            .field("rules", &state.rules.len())
            .field("retention", &state.rules.retention())
            .finish_non_exhaustive()
    }
}

impl AlertEngine {
    /// An engine for `rules`, delivering through `notifier`.
    pub fn new(
        rules: &AlertRules,
        notifier: Arc<dyn AlertNotifier>,
        options: AlertEngineOptions,
    ) -> Self {
        Self {
            options: AlertEngineOptions {
                history: options.history.max(1),
                max_targets_per_metric: options.max_targets_per_metric.max(1),
                max_samples_per_series: options.max_samples_per_series.max(2),
            },
            notifier,
            interval: AtomicU64::new(nanos(DEFAULT_EVALUATION_INTERVAL)),
            state: Mutex::new(EngineState {
                rules: RuleSet::new(rules),
                series: SeriesMap::new(),
                targets_per_metric: HashMap::new(),
                alerts: BTreeMap::new(),
                history: VecDeque::new(),
                suppressed: 0,
                last_evaluation: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EngineState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the time between two evaluations of the background task; it takes effect after the
    /// wait in progress. At least 10 ms.
    pub fn set_evaluation_interval(&self, interval: Duration) {
        self.interval.store(
            nanos(interval.max(MIN_EVALUATION_INTERVAL)),
            Ordering::Relaxed,
        );
    }

    /// The time between two evaluations of the background task.
    pub fn evaluation_interval(&self) -> Duration {
        Duration::from_nanos(self.interval.load(Ordering::Relaxed))
    }

    /// The rules, as loaded.
    pub fn rules(&self) -> AlertRules {
        self.lock().rules.rules().clone()
    }

    /// Takes a new rule set (a configuration reload). An alert whose rule keeps its name keeps
    /// its state — firing, since, cooldown — and the next evaluation reads it against the new
    /// definition, resolving it if it no longer holds. An alert firing for a rule that is gone,
    /// or that a composite rule now speaks for, is resolved at once. Series no rule reads any
    /// more are forgotten. Returns (and delivers) the resolve notices.
    pub fn set_rules(&self, rules: &AlertRules, now: Instant) -> Vec<AlertNotice> {
        let notices = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let old = std::mem::replace(&mut state.rules, RuleSet::new(rules));
            let mut notices = Vec::new();
            let alerts = std::mem::take(&mut state.alerts);
            for ((index, target), mut alert) in alerts {
                let Some(rule) = old.get(index) else {
                    continue;
                };
                match state.rules.position(&rule.name) {
                    Some(new) if !state.rules.is_silent(new) => {
                        state.alerts.insert((new, target), alert);
                    }
                    _ if alert.firing => {
                        alert.summary = format!(
                            "rule removed by a configuration reload (was: {})",
                            alert.summary
                        );
                        notices.push(AlertNotice {
                            rule: rule.name.clone(),
                            level: rule.level,
                            status: AlertStatus::Resolved,
                            target,
                            value: alert.value,
                            summary: alert.summary,
                            description: rule.description.clone(),
                            at: now,
                            since: alert.since,
                        });
                    }
                    _ => {}
                }
            }
            let watched = &state.rules;
            state
                .series
                .retain(|(metric, _), _| watched.watches(*metric));
            recount_targets(state);
            self.remember(state, &notices);
            notices
        };
        for notice in &notices {
            self.notifier.notify(notice);
        }
        notices
    }

    /// Takes `readings` made at `now`, evaluates every rule, delivers the notices that result
    /// and returns them.
    pub fn evaluate(&self, now: Instant, readings: Vec<Reading>) -> Vec<AlertNotice> {
        let notices = {
            let mut state = self.lock();
            self.ingest(&mut state, now, readings);
            let holding = state.rules.holding(&state.series, now);
            let notices = transitions(&mut state, now, &holding);
            self.remember(&mut state, &notices);
            state.last_evaluation = Some(now);
            notices
        };
        for notice in &notices {
            self.notifier.notify(notice);
        }
        notices
    }

    fn remember(&self, state: &mut EngineState, notices: &[AlertNotice]) {
        for notice in notices {
            if state.history.len() == self.options.history {
                state.history.pop_front();
            }
            state.history.push_back(notice.clone());
        }
    }

    /// Alerts firing now and recent notices.
    pub fn view(&self) -> AlertsView {
        let state = self.lock();
        let active = state
            .alerts
            .iter()
            .filter(|(_, a)| a.firing)
            .filter_map(|((index, target), a)| {
                let rule = state.rules.get(*index)?;
                Some(ActiveAlert {
                    rule: rule.name.clone(),
                    level: rule.level,
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
            rules: state.rules.rules().clone(),
        }
    }

    fn ingest(&self, state: &mut EngineState, now: Instant, readings: Vec<Reading>) {
        let previous = state.last_evaluation;
        for reading in readings {
            if !state.rules.wants(&reading) {
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
                && !matches!(reading.sample, super::Sample::Gauge(_))
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
        let retention = state.rules.retention();
        let horizon = Instant::from_elapsed(
            now.elapsed_since_origin()
                .saturating_sub(retention + retention / 2),
        );
        state.series.retain(|_, s| {
            while s.samples.len() > 1 && s.samples.get(1).is_some_and(|(t, _)| *t <= horizon) {
                s.samples.pop_front();
            }
            s.samples.back().is_some_and(|(t, _)| *t >= horizon)
        });
        recount_targets(state);
    }

    /// Runs the engine as a tokio task: read every source and evaluate at once, then again
    /// after each [evaluation interval](Self::evaluation_interval), until the returned handle is
    /// shut down or dropped. `clock` must be the engine's clock (the gateway's), so that instants
    /// in notices compare with snapshots.
    pub fn spawn(
        self: Arc<Self>,
        sources: Vec<Arc<dyn ReadingSource>>,
        clock: Arc<dyn Clock>,
    ) -> BackgroundTask {
        BackgroundTask::spawn("alert engine", move |mut stop| async move {
            loop {
                let mut readings = Vec::new();
                for source in &sources {
                    source.read(&mut readings);
                }
                self.evaluate(clock.now(), readings);
                tokio::select! {
                    () = tokio::time::sleep(self.evaluation_interval()) => {}
                    _ = stop.changed() => break,
                }
            }
        })
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn recount_targets(state: &mut EngineState) {
    let mut counts: HashMap<AlertMetric, usize> = HashMap::new();
    for (metric, _) in state.series.keys() {
        *counts.entry(*metric).or_insert(0) += 1;
    }
    state.targets_per_metric = counts;
}

/// Fires what started to hold (unless a cooldown holds it back) and resolves what stopped.
fn transitions(state: &mut EngineState, now: Instant, holding: &[Holding]) -> Vec<AlertNotice> {
    let mut notices = Vec::new();
    for (index, held) in holding.iter().enumerate() {
        if state.rules.is_silent(index) {
            continue;
        }
        let Some(rule) = state.rules.get(index) else {
            continue;
        };
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
        for (target, (value, summary)) in held {
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
        for ((i, target), a) in &mut state.alerts {
            if *i != index || !a.firing || held.contains_key(target) {
                continue;
            }
            a.firing = false;
            a.summary = format!("no longer holds (was: {})", a.summary);
            notices.push(notice(AlertStatus::Resolved, target, a));
        }
    }
    // Forget quiet alerts whose cooldown is over, so targets that come and go stay bounded.
    let rules = &state.rules;
    state.alerts.retain(|(i, _), a| {
        a.firing
            || rules
                .get(*i)
                .is_some_and(|r| a.last_fired.is_some_and(|t| now - t < r.cooldown))
    });
    notices
}

#[cfg(test)]
mod tests {
    use echelon_domain::alert::{AlertCondition, AlertRule, Combine, Comparison};
    use echelon_domain::time::ManualClock;

    use super::super::series::{HistogramSample, Sample};
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
        metric: AlertMetric,
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
                metric,
                target: target.map(Into::into),
                op,
                value,
                window: Duration::from_secs(60),
            },
        }
    }

    fn gauge(metric: AlertMetric, target: &str, v: f64) -> Reading {
        Reading {
            metric,
            target: target.into(),
            sample: Sample::Gauge(v),
        }
    }

    fn ratio_reading(metric: AlertMetric, target: &str, n: f64, d: f64) -> Reading {
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
        let engine = AlertEngine::new(
            &ruleset(rules),
            inbox.clone(),
            AlertEngineOptions::default(),
        );
        (engine, inbox)
    }

    fn ruleset(rules: &[AlertRule]) -> AlertRules {
        AlertRules::new(rules.to_vec()).unwrap()
    }

    fn secs(s: u64) -> Instant {
        Instant::from_elapsed(Duration::from_secs(s))
    }

    #[test]
    fn threshold_fires_once_per_target_then_resolves() {
        let (engine, inbox) = engine(&[threshold(
            "pool-unhealthy",
            AlertMetric::PoolHealthyRatio,
            None,
            Comparison::Less,
            0.5,
        )]);
        let clock = ManualClock::new();
        // Both pools fine.
        engine.evaluate(
            clock.now(),
            vec![
                gauge(AlertMetric::PoolHealthyRatio, "pool:a", 1.0),
                gauge(AlertMetric::PoolHealthyRatio, "pool:b", 1.0),
            ],
        );
        assert!(inbox.take().is_empty());
        // Pool a drops: the one-minute mean falls under 0.5 once enough low samples arrive.
        for _ in 0..5 {
            clock.advance(Duration::from_secs(10));
            engine.evaluate(
                clock.now(),
                vec![
                    gauge(AlertMetric::PoolHealthyRatio, "pool:a", 0.0),
                    gauge(AlertMetric::PoolHealthyRatio, "pool:b", 1.0),
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
            "pool_healthy_ratio of pool:a over 1m is 0 (< 0.5)"
        );
        // Still low: no repeat.
        for _ in 0..10 {
            clock.advance(Duration::from_secs(10));
            engine.evaluate(
                clock.now(),
                vec![gauge(AlertMetric::PoolHealthyRatio, "pool:a", 0.0)],
            );
        }
        assert!(inbox.take().is_empty());
        // Healthy again for a minute: resolved.
        for _ in 0..6 {
            clock.advance(Duration::from_secs(10));
            engine.evaluate(
                clock.now(),
                vec![gauge(AlertMetric::PoolHealthyRatio, "pool:a", 1.0)],
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
            AlertMetric::BreakerOpen,
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
        let at = |s, v| engine.evaluate(secs(s), vec![gauge(AlertMetric::BreakerOpen, target, v)]);
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
                gauge(AlertMetric::BreakerOpen, "openai/gpt-4o#1", 1.0),
                gauge(AlertMetric::BreakerOpen, target, 1.0),
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
            AlertMetric::UpstreamErrorRate,
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
                AlertMetric::UpstreamErrorRate,
                "pool:a",
                100.0,
                1000.0,
            )],
        );
        // In the last minute: 100 more attempts, 30 failed: 30 %, though 11.8 % overall.
        engine.evaluate(
            secs(60),
            vec![ratio_reading(
                AlertMetric::UpstreamErrorRate,
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
            vec![ratio_reading(
                AlertMetric::UpstreamErrorRate,
                "pool:a",
                10.0,
                100.0,
            )],
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
                metric: AlertMetric::Fallbacks,
                target: None,
                op: Comparison::Greater,
                value: 50.0,
                window: Duration::from_secs(300),
            },
        };
        let (engine, inbox) = engine(&[rule]);
        let counter = |target: &str, v: f64| Reading {
            metric: AlertMetric::Fallbacks,
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
                metric: AlertMetric::UpstreamErrorRate,
                target: None,
                op: Comparison::Greater,
                value: 0.1,
                window: Duration::from_secs(300),
            },
        };
        let (engine, inbox) = engine(&[rule]);
        let r = |n, d| {
            vec![ratio_reading(
                AlertMetric::UpstreamErrorRate,
                "pool:a",
                n,
                d,
            )]
        };
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
            metric: AlertMetric::P95Latency,
            target: "chat".into(),
            sample: Sample::Histogram(HistogramSample {
                bounds: Arc::clone(&bounds),
                counts,
            }),
        };
        let mut rule = threshold(
            "slow",
            AlertMetric::P95Latency,
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
    fn composite_speaks_for_its_members_and_lists_their_targets() {
        let unhealthy = threshold(
            "pool-unhealthy",
            AlertMetric::PoolHealthyRatio,
            None,
            Comparison::Less,
            0.5,
        );
        let errors = threshold(
            "errors",
            AlertMetric::UpstreamErrorRate,
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
                gauge(AlertMetric::PoolHealthyRatio, "pool:a", 0.0),
                ratio_reading(AlertMetric::UpstreamErrorRate, "pool:a", 0.0, 0.0),
            ],
        );
        assert!(inbox.take().is_empty(), "only one member holds");
        engine.evaluate(
            secs(30),
            vec![
                gauge(AlertMetric::PoolHealthyRatio, "pool:a", 0.0),
                ratio_reading(AlertMetric::UpstreamErrorRate, "pool:a", 90.0, 100.0),
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
                gauge(AlertMetric::PoolHealthyRatio, "pool:a", 1.0),
                ratio_reading(AlertMetric::UpstreamErrorRate, "pool:a", 90.0, 200.0),
            ],
        );
        assert_eq!(
            inbox.take(),
            [("outage".into(), AlertStatus::Resolved, None)]
        );
    }

    #[test]
    fn series_per_metric_and_history_are_bounded() {
        let rule = threshold(
            "any",
            AlertMetric::BreakerOpen,
            None,
            Comparison::GreaterOrEqual,
            1.0,
        );
        let inbox = Arc::new(Inbox::default());
        let options = AlertEngineOptions {
            history: 5,
            max_targets_per_metric: 3,
            max_samples_per_series: 4,
        };
        let engine = AlertEngine::new(&ruleset(&[rule]), inbox.clone(), options);
        let readings: Vec<_> = (0..10)
            .map(|i| gauge(AlertMetric::BreakerOpen, &format!("i{i}"), 1.0))
            .collect();
        engine.evaluate(secs(0), readings);
        assert_eq!(inbox.take().len(), 3);
        for s in 1..20 {
            let v = if s % 2 == 0 { 1.0 } else { 0.0 };
            engine.evaluate(
                secs(s * 100),
                vec![gauge(AlertMetric::BreakerOpen, "i0", v)],
            );
        }
        assert_eq!(engine.view().recent.len(), 5);
        let state = engine.state.lock().unwrap();
        assert!(state.series.values().all(|s| s.samples.len() <= 4));
        assert!(state.series.len() <= 3);
    }

    struct Fixed(f64);

    impl ReadingSource for Fixed {
        fn read(&self, out: &mut Vec<Reading>) {
            out.push(gauge(AlertMetric::PoolHealthyRatio, "pool:a", self.0));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_background_task_evaluates_every_interval_until_shut_down() {
        let (engine, inbox) = engine(&[threshold(
            "pool-unhealthy",
            AlertMetric::PoolHealthyRatio,
            None,
            Comparison::Less,
            0.5,
        )]);
        let engine = Arc::new(engine);
        let clock = Arc::new(crate::clock::TokioClock::new());
        let task = Arc::clone(&engine).spawn(vec![Arc::new(Fixed(0.0))], clock);
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

    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicU32);

    impl ReadingSource for Counting {
        fn read(&self, _out: &mut Vec<Reading>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_evaluation_interval_can_change_while_the_task_runs() {
        let (engine, _inbox) = engine(&[]);
        let engine = Arc::new(engine);
        assert_eq!(engine.evaluation_interval(), DEFAULT_EVALUATION_INTERVAL);
        let counting = Arc::new(Counting::default());
        let clock = Arc::new(crate::clock::TokioClock::new());
        let task = Arc::clone(&engine).spawn(vec![counting.clone()], clock);
        let reads = || counting.0.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30_500)).await;
        assert_eq!(reads(), 3, "at 0, 15 and 30 s");
        // A reload shortens it: the wait in progress ends at 45 s, then every second.
        engine.set_evaluation_interval(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(reads(), 9, "at 45, 46, 47, 48, 49 and 50 s");
        engine.set_evaluation_interval(Duration::ZERO);
        assert_eq!(engine.evaluation_interval(), Duration::from_millis(10));
        task.shutdown().await;
    }

    #[test]
    fn a_new_rule_set_keeps_renamed_state_and_resolves_what_is_gone() {
        let unhealthy = |value| {
            threshold(
                "pool-unhealthy",
                AlertMetric::PoolHealthyRatio,
                None,
                Comparison::Less,
                value,
            )
        };
        let breaker = threshold(
            "breaker",
            AlertMetric::BreakerOpen,
            None,
            Comparison::GreaterOrEqual,
            1.0,
        );
        let (engine, inbox) = engine(&[unhealthy(0.5), breaker]);
        let readings = || {
            vec![
                gauge(AlertMetric::PoolHealthyRatio, "pool:a", 0.25),
                gauge(AlertMetric::BreakerOpen, "p/m#0", 1.0),
            ]
        };
        engine.evaluate(secs(0), readings());
        assert_eq!(inbox.take().len(), 2);
        // Still holding under the edited threshold: no new notice. The removed rule resolves.
        let notices = engine.set_rules(&ruleset(&[unhealthy(0.3)]), secs(10));
        assert_eq!(
            inbox.take(),
            [(
                "breaker".into(),
                AlertStatus::Resolved,
                Some("p/m#0".into())
            )]
        );
        assert!(
            notices[0]
                .summary
                .starts_with("rule removed by a configuration reload")
        );
        engine.evaluate(secs(20), readings());
        assert!(inbox.take().is_empty(), "still firing, not fired again");
        let view = engine.view();
        assert_eq!(view.active.len(), 1);
        assert_eq!(
            view.active[0].summary,
            "pool_healthy_ratio of pool:a over 1m is 0.25 (< 0.3)"
        );
        assert_eq!(view.rules.len(), 1);
        // A threshold the value no longer crosses: resolved at the next evaluation.
        engine.set_rules(&ruleset(&[unhealthy(0.1)]), secs(30));
        assert!(inbox.take().is_empty());
        engine.evaluate(secs(40), readings());
        assert_eq!(
            inbox.take(),
            [(
                "pool-unhealthy".into(),
                AlertStatus::Resolved,
                Some("pool:a".into())
            )]
        );
        // Series of metrics no rule reads are forgotten.
        assert!(
            engine
                .state
                .lock()
                .unwrap()
                .series
                .keys()
                .all(|(m, _)| *m == AlertMetric::PoolHealthyRatio)
        );
    }

    #[test]
    fn a_rule_that_a_composite_now_speaks_for_resolves_on_its_own() {
        let errors = threshold(
            "errors",
            AlertMetric::BreakerOpen,
            None,
            Comparison::GreaterOrEqual,
            1.0,
        );
        let (engine, inbox) = engine(std::slice::from_ref(&errors));
        engine.evaluate(secs(0), vec![gauge(AlertMetric::BreakerOpen, "p/m#0", 1.0)]);
        assert_eq!(inbox.take().len(), 1);
        let outage = AlertRule {
            name: "outage".into(),
            level: AlertLevel::Critical,
            cooldown: Duration::ZERO,
            description: None,
            condition: AlertCondition::Composite {
                rules: vec!["errors".into()],
                combine: Combine::Any,
            },
        };
        engine.set_rules(&ruleset(&[errors, outage]), secs(10));
        assert_eq!(
            inbox.take(),
            [("errors".into(), AlertStatus::Resolved, Some("p/m#0".into()))]
        );
        engine.evaluate(
            secs(20),
            vec![gauge(AlertMetric::BreakerOpen, "p/m#0", 1.0)],
        );
        assert_eq!(inbox.take(), [("outage".into(), AlertStatus::Firing, None)]);
    }
}
