//! Rule checking: a rule set prepared for evaluation (which metrics and targets it watches, how
//! long series must be kept, which rules a composite speaks for) and what each rule holds for at
//! a moment, with the one-line summary its notices carry.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use echelon_domain::alert::{
    AlertCondition, AlertMetric, AlertRule, AlertRules, Combine, MetricKind,
};
use echelon_domain::time::{DurationText, Instant};

use super::readings::Reading;
use super::series::{SaturatingBack, Series};

/// What a rule held for in one evaluation: target → (value, summary). Composite rules hold for
/// the target `None`.
pub(crate) type Holding = BTreeMap<Option<String>, (Option<f64>, String)>;

/// The samples the engine keeps, by metric and target.
pub(crate) type SeriesMap = HashMap<(AlertMetric, String), Series>;

/// A rule set ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct RuleSet {
    rules: AlertRules,
    /// Whether a composite rule speaks for the rule at that index.
    silent: Vec<bool>,
    /// Indexes of threshold and trend rules by metric.
    watched: HashMap<AlertMetric, Vec<usize>>,
    /// How far back the longest window reaches.
    retention: Duration,
}

impl RuleSet {
    pub(crate) fn new(rules: &AlertRules) -> Self {
        let mut watched: HashMap<AlertMetric, Vec<usize>> = HashMap::new();
        let mut retention = Duration::ZERO;
        let mut silent = Vec::with_capacity(rules.len());
        for (index, rule) in rules.into_iter().enumerate() {
            if let AlertCondition::Threshold { metric, window, .. }
            | AlertCondition::Trend { metric, window, .. } = &rule.condition
            {
                // Trends of ratios and quantiles compare two windows.
                let span = match (&rule.condition, metric.kind()) {
                    (AlertCondition::Trend { .. }, MetricKind::Ratio | MetricKind::Quantile(_)) => {
                        *window * 2
                    }
                    _ => *window,
                };
                retention = retention.max(span);
                watched.entry(*metric).or_default().push(index);
            }
            silent.push(rules.into_iter().any(|r| match &r.condition {
                AlertCondition::Composite { rules: members, .. } => members.contains(&rule.name),
                _ => false,
            }));
        }
        Self {
            rules: rules.clone(),
            silent,
            watched,
            retention,
        }
    }

    pub(crate) fn rules(&self) -> &AlertRules {
        &self.rules
    }

    pub(crate) fn get(&self, index: usize) -> Option<&AlertRule> {
        self.rules.as_slice().get(index)
    }

    pub(crate) fn len(&self) -> usize {
        self.rules.len()
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.rules.as_slice().iter().position(|r| r.name == name)
    }

    /// Whether a composite rule speaks for the rule at `index` (it does not notify itself).
    pub(crate) fn is_silent(&self, index: usize) -> bool {
        self.silent.get(index).copied().unwrap_or(false)
    }

    /// How far back the longest window reaches.
    pub(crate) fn retention(&self) -> Duration {
        self.retention
    }

    /// Whether some rule reads `metric`.
    pub(crate) fn watches(&self, metric: AlertMetric) -> bool {
        self.watched.contains_key(&metric)
    }

    /// Whether some rule reads this reading: its metric, a sample of the metric's kind, and its
    /// target (or every target).
    pub(crate) fn wants(&self, reading: &Reading) -> bool {
        reading.sample.fits(reading.metric.kind())
            && self.watched.get(&reading.metric).is_some_and(|indexes| {
                indexes.iter().any(|&i| {
                    self.get(i)
                        .and_then(|r| r.condition.target().map(|t| t == reading.target))
                        .unwrap_or(true)
                })
            })
    }

    /// What every rule holds for at `now`, by rule index.
    pub(crate) fn holding(&self, series: &SeriesMap, now: Instant) -> Vec<Holding> {
        let mut holding: Vec<Holding> = vec![Holding::new(); self.len()];
        for (index, rule) in self.rules.into_iter().enumerate() {
            let (metric, target, op, threshold, window, trend) = match &rule.condition {
                AlertCondition::Threshold {
                    metric,
                    target,
                    op,
                    value,
                    window,
                } => (*metric, target, *op, *value, *window, false),
                AlertCondition::Trend {
                    metric,
                    target,
                    op,
                    value,
                    window,
                } => (*metric, target, *op, *value, *window, true),
                AlertCondition::Composite { .. } => continue,
            };
            for ((m, t), series) in series {
                if *m != metric || target.as_ref().is_some_and(|want| want != t) {
                    continue;
                }
                let value = if trend {
                    series.trend(metric.kind(), now, window)
                } else {
                    series.over(metric.kind(), now.saturating_back(window), now)
                };
                if let Some(value) = value
                    && op.holds(value, threshold)
                {
                    let what = if trend { "change of " } else { "" };
                    let summary = format!(
                        "{what}{metric} of {t} over {} is {} ({} {})",
                        DurationText(window),
                        short(value),
                        op.as_str(),
                        short(threshold)
                    );
                    holding[index].insert(Some(t.clone()), (Some(value), summary));
                }
            }
        }
        for (index, rule) in self.rules.into_iter().enumerate() {
            let AlertCondition::Composite {
                rules: members,
                combine,
            } = &rule.condition
            else {
                continue;
            };
            let parts: Vec<(&str, &Holding)> = members
                .iter()
                .filter_map(|name| Some((name.as_str(), &holding[self.position(name)?])))
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
    if text.is_empty() || text == "-" || text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use echelon_domain::alert::{AlertLevel, Comparison};

    use super::*;

    fn rule(name: &str, condition: AlertCondition) -> AlertRule {
        AlertRule {
            name: name.into(),
            level: AlertLevel::Warning,
            cooldown: Duration::ZERO,
            description: None,
            condition,
        }
    }

    fn trend(metric: AlertMetric, window: u64) -> AlertCondition {
        AlertCondition::Trend {
            metric,
            target: Some("pool:a".into()),
            op: Comparison::Greater,
            value: 1.0,
            window: Duration::from_secs(window),
        }
    }

    #[test]
    fn a_rule_set_knows_what_it_watches_and_for_how_long() {
        let rules = AlertRules::new(vec![
            rule("errors", trend(AlertMetric::UpstreamErrorRate, 300)),
            rule("fallbacks", trend(AlertMetric::Fallbacks, 400)),
            rule(
                "both",
                AlertCondition::Composite {
                    rules: vec!["errors".into()],
                    combine: Combine::All,
                },
            ),
        ])
        .unwrap();
        let set = RuleSet::new(&rules);
        // A ratio's trend compares two windows: 600 s beats the counter's 400 s.
        assert_eq!(set.retention(), Duration::from_secs(600));
        assert!(set.watches(AlertMetric::Fallbacks) && !set.watches(AlertMetric::Requests));
        assert!(set.is_silent(0) && !set.is_silent(1) && !set.is_silent(2));
        let reading = |target: &str| Reading {
            metric: AlertMetric::Fallbacks,
            target: target.into(),
            sample: super::super::series::Sample::Counter(1.0),
        };
        assert!(set.wants(&reading("pool:a")));
        assert!(!set.wants(&reading("pool:b")), "the rule names one target");
    }

    #[test]
    fn summaries_write_short_numbers() {
        assert_eq!(short(0.5), "0.5");
        assert_eq!(short(0.123_456), "0.1235");
        assert_eq!(short(2.0), "2");
        assert_eq!(short(-0.000_01), "0");
    }
}
