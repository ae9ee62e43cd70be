//! `[alerts]`: webhooks and alert rules, checked here with file, line and key so that
//! `echelon config check` refuses every rule set the alert engine could not evaluate.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use echelon_domain::alert::{
    AlertCondition, AlertLevel, AlertMetric, AlertRule, AlertRules, Combine, Comparison,
};
use echelon_domain::defaults::alerts as defaults;
use echelon_domain::secret::Secret;
use serde::Serialize;

use super::{http_url, missing};
use crate::diagnostic::{Diagnostic, DiagnosticKind, Severity, did_you_mean};
use crate::raw::{RawAlertRule, RawAlerts};
use crate::value::{Choice, OptVal, Range, choice_from_val};

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertSettings {
    /// Time between two evaluations of the rules. Default 15 s.
    pub evaluation_interval: Duration,
    /// Webhook URLs alerts are posted to (besides the log); secrets, as they often hold tokens.
    pub webhooks: Vec<Secret>,
    /// The rules, in file order.
    pub rules: AlertRules,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            evaluation_interval: defaults::EVALUATION_INTERVAL,
            webhooks: Vec::new(),
            rules: AlertRules::default(),
        }
    }
}

/// The kind of an alert rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A metric compared with a value.
    Threshold,
    /// A metric's change over a window compared with a value.
    Trend,
    /// Other rules combined.
    Composite,
}

impl Choice for AlertKind {
    const WHAT: &'static str = "alert rule kind";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::Threshold, "threshold"),
            (Self::Trend, "trend"),
            (Self::Composite, "composite"),
        ]
    }
}

impl Choice for Comparison {
    const WHAT: &'static str = "comparison";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::Greater, ">"),
            (Self::GreaterOrEqual, ">="),
            (Self::Less, "<"),
            (Self::LessOrEqual, "<="),
        ]
    }
}

impl Choice for Combine {
    const WHAT: &'static str = "combination";
    fn names() -> &'static [(Self, &'static str)] {
        &[(Self::All, "all"), (Self::Any, "any")]
    }
}

impl Choice for AlertLevel {
    const WHAT: &'static str = "alert level";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::Info, "info"),
            (Self::Warning, "warning"),
            (Self::Critical, "critical"),
        ]
    }
}

impl Choice for AlertMetric {
    const WHAT: &'static str = "alert metric";
    fn names() -> &'static [(Self, &'static str)] {
        const NAMES: [(AlertMetric, &str); AlertMetric::ALL.len()] = {
            let mut names = [(AlertMetric::PoolHealthyRatio, ""); AlertMetric::ALL.len()];
            let mut i = 0;
            while i < names.len() {
                names[i] = (AlertMetric::ALL[i], AlertMetric::ALL[i].name());
                i += 1;
            }
            names
        };
        &NAMES
    }
}

choice_from_val!(AlertKind, Comparison, Combine, AlertLevel, AlertMetric);

pub(super) fn build(raw: RawAlerts, out: &mut Vec<Diagnostic>) -> AlertSettings {
    let webhooks = raw
        .webhooks
        .unwrap_or_default()
        .iter()
        .filter_map(|val| {
            let url = val.get(out)?;
            if http_url(url.expose()) {
                Some(url)
            } else {
                out.push(val.diagnostic(
                    DiagnosticKind::InvalidValue,
                    "invalid webhook URL",
                    Some("write an http:// or https:// URL".into()),
                ));
                None
            }
        })
        .collect();
    let errors_before = count_errors(out);
    let raw_rules = raw.rules.unwrap_or_default();
    let mut kinds: BTreeMap<String, AlertKind> = BTreeMap::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut rules = Vec::new();
    for rule in &raw_rules {
        let kind = rule.kind.value(out);
        let Some(name) = rule.name.as_ref().and_then(|v| v.get(out)) else {
            if rule.name.is_none() {
                out.push(missing(&rule.here, "name", "an alert rule needs a `name`"));
            }
            continue;
        };
        if !seen.insert(name.clone()) {
            out.push(rule.name.as_ref().map_or_else(
                || missing(&rule.here, "name", ""),
                |v| {
                    v.diagnostic(
                        DiagnosticKind::Duplicate,
                        format!("alert rule `{name}` is defined twice"),
                        Some("give each rule its own name".into()),
                    )
                },
            ));
        }
        if let Some(kind) = kind {
            kinds.insert(name, kind);
        }
    }
    for rule in &raw_rules {
        if let Some(rule) = alert_rule(rule, &kinds, out) {
            rules.push(rule);
        }
    }
    // Every condition of `AlertRules::new` was reported above with its line; a set that still
    // fails it is a bug of this module, reported rather than dropped.
    let rules = if count_errors(out) > errors_before {
        AlertRules::default()
    } else {
        AlertRules::new(rules).unwrap_or_else(|error| {
            out.push(
                Diagnostic::error(DiagnosticKind::InvalidValue, error.to_string())
                    .key("alerts.rules"),
            );
            AlertRules::default()
        })
    };
    AlertSettings {
        evaluation_interval: raw.evaluation_interval.read_or_in(
            out,
            Range::AtLeast(Duration::from_millis(100)),
            defaults::EVALUATION_INTERVAL,
        ),
        webhooks,
        rules,
    }
}

fn count_errors(out: &[Diagnostic]) -> usize {
    out.iter().filter(|d| d.severity == Severity::Error).count()
}

fn alert_rule(
    raw: &RawAlertRule,
    kinds: &BTreeMap<String, AlertKind>,
    out: &mut Vec<Diagnostic>,
) -> Option<AlertRule> {
    // Name and kind were reported by the first pass over the rules.
    let mut scratch = Vec::new();
    let name = raw.name.as_ref().and_then(|v| v.get(&mut scratch))?;
    let Some(kind_val) = &raw.kind else {
        out.push(missing(
            &raw.here,
            "kind",
            format!("alert rule `{name}` needs a `kind` (threshold, trend or composite)"),
        ));
        return None;
    };
    let kind = kind_val.get(&mut scratch)?;
    let level = raw.level.read_or(out, AlertLevel::Warning);
    let cooldown = raw.cooldown.read_or(out, defaults::COOLDOWN);
    let description = raw.description.value(out);
    let condition = match kind {
        AlertKind::Threshold | AlertKind::Trend => {
            for (present, key) in [
                (raw.rules.is_some(), "rules"),
                (raw.combine.is_some(), "combine"),
            ] {
                if present {
                    out.push(
                        Diagnostic::error(
                            DiagnosticKind::Conflict,
                            format!("`{key}` only applies to composite rules"),
                        )
                        .at(raw.here.location.clone())
                        .key(format!("{}.{key}", raw.here.key)),
                    );
                }
            }
            let metric = match &raw.metric {
                Some(v) => v.get(out)?,
                None => {
                    out.push(missing(
                        &raw.here,
                        "metric",
                        format!("alert rule `{name}` needs a `metric`"),
                    ));
                    return None;
                }
            };
            let op = match &raw.op {
                Some(v) => v.get(out)?,
                None => {
                    out.push(missing(
                        &raw.here,
                        "op",
                        format!("alert rule `{name}` needs an `op` (>, >=, <, <=)"),
                    ));
                    return None;
                }
            };
            let value = match &raw.value {
                // Numbers are read finite: `nan` and `inf` are refused with their line.
                Some(v) => v.get(out)?,
                None => {
                    out.push(missing(
                        &raw.here,
                        "value",
                        format!("alert rule `{name}` needs a `value`"),
                    ));
                    return None;
                }
            };
            let target = raw.target.value(out);
            if kind == AlertKind::Threshold {
                let window = raw.window.read_or_in(
                    out,
                    Range::AtLeast(Duration::from_millis(1)),
                    defaults::THRESHOLD_WINDOW,
                );
                AlertCondition::Threshold {
                    metric,
                    target,
                    op,
                    value,
                    window,
                }
            } else {
                let window = raw.window.read_or_in(
                    out,
                    Range::AtLeast(Duration::from_millis(1)),
                    defaults::TREND_WINDOW,
                );
                AlertCondition::Trend {
                    metric,
                    target,
                    op,
                    value,
                    window,
                }
            }
        }
        AlertKind::Composite => {
            for (present, key) in [
                (raw.metric.is_some(), "metric"),
                (raw.op.is_some(), "op"),
                (raw.value.is_some(), "value"),
                (raw.window.is_some(), "window"),
                (raw.target.is_some(), "target"),
            ] {
                if present {
                    out.push(
                        Diagnostic::error(
                            DiagnosticKind::Conflict,
                            format!("`{key}` does not apply to composite rules"),
                        )
                        .at(raw.here.location.clone())
                        .key(format!("{}.{key}", raw.here.key))
                        .help("a composite rule combines other rules listed in `rules`"),
                    );
                }
            }
            let Some(members) = &raw.rules else {
                out.push(missing(
                    &raw.here,
                    "rules",
                    format!("composite rule `{name}` needs `rules`"),
                ));
                return None;
            };
            let mut rules = Vec::new();
            for member in members {
                let Some(rule) = member.get(out) else {
                    continue;
                };
                match kinds.get(&rule) {
                    None => out.push(member.diagnostic(
                        DiagnosticKind::DanglingReference,
                        format!("alert rule `{rule}` does not exist"),
                        did_you_mean(&rule, kinds.keys().map(String::as_str)),
                    )),
                    Some(AlertKind::Composite) => out.push(member.diagnostic(
                        DiagnosticKind::InvalidValue,
                        format!("composite rule `{name}` lists composite rule `{rule}`"),
                        Some("composite rules combine threshold and trend rules".into()),
                    )),
                    Some(_) => rules.push(rule),
                }
            }
            if rules.is_empty() && !members.is_empty() {
                return None;
            }
            if members.is_empty() {
                out.push(missing(
                    &raw.here,
                    "rules",
                    format!("composite rule `{name}` lists no rules"),
                ));
                return None;
            }
            AlertCondition::Composite {
                rules,
                combine: raw.combine.read_or(out, Combine::All),
            }
        }
    };
    Some(AlertRule {
        name,
        level,
        cooldown,
        description,
        condition,
    })
}
