//! `GET /admin/alerts`: alerts firing now, recent notices and the rules as loaded.

use std::time::Duration;

use echelon_application::alerts::{ActiveAlert, AlertNotice, AlertsView};
use echelon_domain::alert::{AlertCondition, AlertRule, Combine};
use serde::{Deserialize, Serialize};

use super::{API_VERSION, seconds, unversioned};

/// What the alert engine shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertsDto {
    /// The wire format's version.
    #[serde(default = "unversioned")]
    pub api_version: u32,
    /// Alerts firing now, by rule and target.
    pub active: Vec<ActiveAlertDto>,
    /// Recent notices, newest first.
    pub recent: Vec<AlertNoticeDto>,
    /// Notices held back by a cooldown since the engine started.
    pub suppressed: u64,
    /// The rules, as loaded.
    pub rules: Vec<AlertRuleDto>,
    /// Set when this process runs no alert engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl AlertsDto {
    /// The document of a process without an alert engine.
    pub fn not_running() -> Self {
        Self {
            api_version: API_VERSION,
            active: Vec::new(),
            recent: Vec::new(),
            suppressed: 0,
            rules: Vec::new(),
            note: Some("the alert engine is not running in this process".into()),
        }
    }
}

impl From<&AlertsView> for AlertsDto {
    fn from(v: &AlertsView) -> Self {
        Self {
            api_version: API_VERSION,
            active: v.active.iter().map(ActiveAlertDto::from).collect(),
            recent: v.recent.iter().map(AlertNoticeDto::from).collect(),
            suppressed: v.suppressed,
            rules: v.rules.into_iter().map(AlertRuleDto::from).collect(),
            note: None,
        }
    }
}

/// An alert firing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlertDto {
    /// The rule's name.
    pub rule: String,
    /// `info`, `warning` or `critical`.
    pub level: String,
    /// What it is about; `None` for composite rules.
    pub target: Option<String>,
    /// The latest value read.
    pub value: Option<f64>,
    /// The latest summary.
    pub summary: String,
    /// When it started firing, on the gateway's clock.
    pub since: f64,
}

impl From<&ActiveAlert> for ActiveAlertDto {
    fn from(a: &ActiveAlert) -> Self {
        Self {
            rule: a.rule.clone(),
            level: a.level.as_str().to_owned(),
            target: a.target.clone(),
            value: a.value,
            summary: a.summary.clone(),
            since: seconds(a.since),
        }
    }
}

/// A notice the engine sent (or would have, past a cooldown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertNoticeDto {
    /// The rule's name.
    pub rule: String,
    /// `info`, `warning` or `critical`.
    pub level: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// What it is about; `None` for composite rules.
    pub target: Option<String>,
    /// The value read, when there was one.
    pub value: Option<f64>,
    /// One line for people.
    pub summary: String,
    /// The rule's description.
    pub description: Option<String>,
    /// When, on the gateway's clock.
    pub at: f64,
    /// When the alert started firing, on the gateway's clock.
    pub since: f64,
}

impl From<&AlertNotice> for AlertNoticeDto {
    fn from(n: &AlertNotice) -> Self {
        Self {
            rule: n.rule.clone(),
            level: n.level.as_str().to_owned(),
            status: n.status.as_str().to_owned(),
            target: n.target.clone(),
            value: n.value,
            summary: n.summary.clone(),
            description: n.description.clone(),
            at: seconds(n.at),
            since: seconds(n.since),
        }
    }
}

/// One rule, field for field the shape of `[[alerts.rules]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRuleDto {
    /// Unique name.
    pub name: String,
    /// `info`, `warning` or `critical`.
    pub level: String,
    /// Least time between two firings of the same alert.
    #[serde(with = "super::duration_text")]
    pub cooldown: Duration,
    /// Free text for people.
    #[serde(default)]
    pub description: Option<String>,
    /// `threshold`, `trend` or `composite`.
    pub kind: String,
    /// For threshold and trend rules: the metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// For threshold and trend rules: the target it is limited to; absent for every target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For threshold and trend rules: `>`, `>=`, `<`, `<=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// For threshold and trend rules: the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// For threshold and trend rules: the window read.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::option_duration_text"
    )]
    pub window: Option<Duration>,
    /// For composite rules: the combined rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// For composite rules: `all` or `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combine: Option<String>,
}

impl From<&AlertRule> for AlertRuleDto {
    fn from(r: &AlertRule) -> Self {
        let mut dto = Self {
            name: r.name.clone(),
            level: r.level.as_str().to_owned(),
            cooldown: r.cooldown,
            description: r.description.clone(),
            kind: String::new(),
            metric: None,
            target: None,
            op: None,
            value: None,
            window: None,
            rules: Vec::new(),
            combine: None,
        };
        match &r.condition {
            AlertCondition::Threshold {
                metric,
                target,
                op,
                value,
                window,
            }
            | AlertCondition::Trend {
                metric,
                target,
                op,
                value,
                window,
            } => {
                dto.kind = if matches!(r.condition, AlertCondition::Threshold { .. }) {
                    "threshold"
                } else {
                    "trend"
                }
                .to_owned();
                dto.metric = Some(metric.to_string());
                dto.target.clone_from(target);
                dto.op = Some(op.as_str().to_owned());
                dto.value = Some(*value);
                dto.window = Some(*window);
            }
            AlertCondition::Composite { rules, combine } => {
                "composite".clone_into(&mut dto.kind);
                dto.rules.clone_from(rules);
                dto.combine = Some(
                    match combine {
                        Combine::All => "all",
                        Combine::Any => "any",
                    }
                    .to_owned(),
                );
            }
        }
        dto
    }
}
