//! Alert rules as configured: threshold, trend and composite conditions over the closed set of
//! metrics the alert engine can read ([`AlertMetric`]), and [`AlertRules`], a rule set whose
//! names are unique and whose composite rules list existing threshold and trend rules.
//!
//! Plain data, like the rest of [`crate::spec`]: `echelon-config` reads them from
//! `[[alerts.rules]]` (reporting each problem with its file and line) and the application's alert
//! engine evaluates them.

use core::fmt;
use core::time::Duration;

/// How samples of a metric combine over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
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

impl MetricKind {
    /// The stable snake_case name: `gauge`, `counter`, `ratio` or `quantile`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Counter => "counter",
            Self::Ratio => "ratio",
            Self::Quantile(_) => "quantile",
        }
    }
}

/// A metric alert rules may name. The set is closed: a rule naming anything else is refused
/// when the configuration is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertMetric {
    /// Share of a pool's instances in the healthy state.
    PoolHealthyRatio,
    /// Share of a pool's instances that would take a request now.
    PoolAvailableRatio,
    /// Instances of a pool whose key the upstream refused.
    KeysDead,
    /// Failed upstream attempts / finished attempts.
    UpstreamErrorRate,
    /// Attempts answered 429 / finished attempts.
    RateLimitedRatio,
    /// Upstream attempts started.
    Attempts,
    /// Failed upstream attempts.
    UpstreamFailures,
    /// Requests that moved on to the next stage.
    Fallbacks,
    /// 1 while a breaker is open or half-open.
    BreakerOpen,
    /// The fullest configured limit's share in use.
    LimiterSaturation,
    /// Client requests answered 5xx or 429 / all requests.
    RequestErrorRate,
    /// Client requests answered.
    Requests,
    /// 95th percentile of request latency.
    P95Latency,
    /// 95th percentile of time to first token.
    P95Ttft,
    /// Times a breaker opened.
    BreakerTrips,
    /// Configuration reloads refused.
    ConfigReloadFailures,
    /// 1 while the shared state (Redis) is unreachable and the replica runs on local state.
    SharedStateFallback,
}

impl AlertMetric {
    /// Every metric, in the order the documentation lists them.
    pub const ALL: [Self; 17] = [
        Self::PoolHealthyRatio,
        Self::PoolAvailableRatio,
        Self::KeysDead,
        Self::UpstreamErrorRate,
        Self::RateLimitedRatio,
        Self::Attempts,
        Self::UpstreamFailures,
        Self::Fallbacks,
        Self::BreakerOpen,
        Self::LimiterSaturation,
        Self::RequestErrorRate,
        Self::Requests,
        Self::P95Latency,
        Self::P95Ttft,
        Self::BreakerTrips,
        Self::ConfigReloadFailures,
        Self::SharedStateFallback,
    ];

    /// The name rules use.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PoolHealthyRatio => "pool_healthy_ratio",
            Self::PoolAvailableRatio => "pool_available_ratio",
            Self::KeysDead => "keys_dead",
            Self::UpstreamErrorRate => "upstream_error_rate",
            Self::RateLimitedRatio => "rate_limited_ratio",
            Self::Attempts => "attempts",
            Self::UpstreamFailures => "upstream_failures",
            Self::Fallbacks => "fallbacks",
            Self::BreakerOpen => "breaker_open",
            Self::LimiterSaturation => "limiter_saturation",
            Self::RequestErrorRate => "request_error_rate",
            Self::Requests => "requests",
            Self::P95Latency => "p95_latency",
            Self::P95Ttft => "p95_ttft",
            Self::BreakerTrips => "breaker_trips",
            Self::ConfigReloadFailures => "config_reload_failures",
            Self::SharedStateFallback => "shared_state_fallback",
        }
    }

    /// The metric a rule names, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// How its samples combine over a window.
    pub const fn kind(self) -> MetricKind {
        match self {
            Self::PoolHealthyRatio
            | Self::PoolAvailableRatio
            | Self::KeysDead
            | Self::BreakerOpen
            | Self::LimiterSaturation
            | Self::SharedStateFallback => MetricKind::Gauge,
            Self::UpstreamErrorRate | Self::RateLimitedRatio | Self::RequestErrorRate => {
                MetricKind::Ratio
            }
            Self::Attempts
            | Self::UpstreamFailures
            | Self::Fallbacks
            | Self::Requests
            | Self::BreakerTrips
            | Self::ConfigReloadFailures => MetricKind::Counter,
            Self::P95Latency | Self::P95Ttft => MetricKind::Quantile(0.95),
        }
    }

    /// What it measures, with its unit.
    pub const fn meaning(self) -> &'static str {
        match self {
            Self::PoolHealthyRatio => "share of a pool's instances in the healthy state (0–1)",
            Self::PoolAvailableRatio => {
                "share of a pool's instances that would take a request now (0–1)"
            }
            Self::KeysDead => "instances of a pool whose key the upstream refused (401/403)",
            Self::UpstreamErrorRate => {
                "failed upstream attempts / finished attempts (0–1), 429s included"
            }
            Self::RateLimitedRatio => "attempts answered 429 / finished attempts (0–1)",
            Self::Attempts => "upstream attempts started",
            Self::UpstreamFailures => "failed upstream attempts",
            Self::Fallbacks => "requests that moved on from a target to the next stage",
            Self::BreakerOpen => "1 while a breaker is open or half-open, else 0",
            Self::LimiterSaturation => {
                "the fullest configured limit: in-flight / max concurrency, or used / rpm limit (0–1)"
            }
            Self::RequestErrorRate => "client requests answered 5xx or 429 / all requests (0–1)",
            Self::Requests => "client requests answered",
            Self::P95Latency => "95th percentile of request latency, in seconds",
            Self::P95Ttft => {
                "95th percentile of time to first token of streamed requests, in seconds"
            }
            Self::BreakerTrips => "times a breaker opened",
            Self::ConfigReloadFailures => "configuration reloads refused",
            Self::SharedStateFallback => {
                "1 while Redis is unreachable and this replica runs on local state, else 0"
            }
        }
    }

    /// The targets it has.
    pub const fn targets(self) -> &'static str {
        match self {
            Self::PoolHealthyRatio => {
                "`pool:NAME`, and `provider/model` for the implicit pool of a model"
            }
            Self::PoolAvailableRatio | Self::KeysDead => "`pool:NAME`, `provider/model`",
            Self::UpstreamErrorRate => {
                "instance `provider/model#K`, `pool:NAME`, `provider/model`, `group:NAME`, `group:NAME.ECHELON`"
            }
            Self::RateLimitedRatio | Self::Attempts | Self::UpstreamFailures => {
                "as for `upstream_error_rate`"
            }
            Self::Fallbacks => "`group:NAME`, `group:NAME.ECHELON`, `pool:NAME`, `provider/model`",
            Self::BreakerOpen | Self::BreakerTrips => {
                "instance `provider/model#K`, `group:NAME.ECHELON`"
            }
            Self::LimiterSaturation => {
                "instance `provider/model#K` (concurrency), `group:NAME.ECHELON` (concurrency and rpm)"
            }
            Self::RequestErrorRate => {
                "route: a wrapper, `group:NAME`, `pool:NAME`, `provider/model`, or `unknown`"
            }
            Self::Requests | Self::P95Latency | Self::P95Ttft => "route",
            Self::ConfigReloadFailures => "`config`",
            Self::SharedStateFallback => "`shared_state`",
        }
    }
}

impl fmt::Display for AlertMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for AlertMetric {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// Severity of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum AlertLevel {
    /// For information.
    Info,
    /// Needs attention.
    #[default]
    Warning,
    /// Needs attention now.
    Critical,
}

impl AlertLevel {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// A comparison of a value with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Comparison {
    /// `>`
    #[cfg_attr(feature = "serde", serde(rename = ">"))]
    Greater,
    /// `>=`
    #[cfg_attr(feature = "serde", serde(rename = ">="))]
    GreaterOrEqual,
    /// `<`
    #[cfg_attr(feature = "serde", serde(rename = "<"))]
    Less,
    /// `<=`
    #[cfg_attr(feature = "serde", serde(rename = "<="))]
    LessOrEqual,
}

impl Comparison {
    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Greater => value > threshold,
            Self::GreaterOrEqual => value >= threshold,
            Self::Less => value < threshold,
            Self::LessOrEqual => value <= threshold,
        }
    }

    /// The operator as written in the configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
            Self::Less => "<",
            Self::LessOrEqual => "<=",
        }
    }
}

/// How a composite rule combines its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum Combine {
    /// Holds when every listed rule holds.
    #[default]
    All,
    /// Holds when any listed rule holds.
    Any,
}

/// When a rule holds. Field for field the shape of `[[alerts.rules]]` in `gateway.toml`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "snake_case")
)]
pub enum AlertCondition {
    /// `metric op value` over `window`.
    Threshold {
        /// The metric, e.g. `pool_healthy_ratio`.
        metric: AlertMetric,
        /// What the metric is about (`pool:fast`, `group:chat`); `None`: every target.
        target: Option<String>,
        /// Comparison.
        op: Comparison,
        /// Threshold.
        value: f64,
        /// Window the value is read over.
        window: Duration,
    },
    /// `change(metric, window) op value`.
    Trend {
        /// The metric.
        metric: AlertMetric,
        /// What the metric is about; `None`: every target.
        target: Option<String>,
        /// Comparison.
        op: Comparison,
        /// Threshold on the change.
        value: f64,
        /// Window of the change.
        window: Duration,
    },
    /// Other threshold and trend rules, by name.
    Composite {
        /// Names of the combined rules.
        rules: Vec<String>,
        /// All of them, or any.
        combine: Combine,
    },
}

/// One alert rule.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AlertRule {
    /// Unique name.
    pub name: String,
    /// Severity of the alerts it raises.
    pub level: AlertLevel,
    /// Least time between two firings of the same alert.
    pub cooldown: Duration,
    /// Free text for people, sent along with every notice.
    pub description: Option<String>,
    /// When it holds.
    pub condition: AlertCondition,
}

impl AlertCondition {
    /// The metric a threshold or trend rule reads; `None` for a composite rule.
    pub const fn metric(&self) -> Option<AlertMetric> {
        match self {
            Self::Threshold { metric, .. } | Self::Trend { metric, .. } => Some(*metric),
            Self::Composite { .. } => None,
        }
    }

    /// The target a threshold or trend rule is limited to, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            Self::Threshold { target, .. } | Self::Trend { target, .. } => target.as_deref(),
            Self::Composite { .. } => None,
        }
    }
}

/// A rule set that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertRuleError {
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

/// Alert rules that can be evaluated together: unique names, windows longer than zero, finite
/// thresholds, and composite rules that list at least one existing threshold or trend rule.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(transparent))]
pub struct AlertRules(Vec<AlertRule>);

impl AlertRules {
    /// Checks `rules` (in file order).
    ///
    /// # Errors
    /// The first rule that breaks one of the conditions above.
    pub fn new(rules: Vec<AlertRule>) -> Result<Self, AlertRuleError> {
        for (index, rule) in rules.iter().enumerate() {
            if rules[..index].iter().any(|r| r.name == rule.name) {
                return Err(AlertRuleError::Duplicate {
                    rule: rule.name.clone(),
                });
            }
            let invalid = |reason| AlertRuleError::Invalid {
                rule: rule.name.clone(),
                reason,
            };
            match &rule.condition {
                AlertCondition::Threshold { window, value, .. }
                | AlertCondition::Trend { window, value, .. } => {
                    if window.is_zero() {
                        return Err(invalid("the window must be longer than zero"));
                    }
                    if !value.is_finite() {
                        return Err(invalid("the threshold must be a finite number"));
                    }
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
                }
            }
        }
        Ok(Self(rules))
    }

    /// The rules, in file order.
    pub fn as_slice(&self) -> &[AlertRule] {
        &self.0
    }

    /// The rule of that name.
    pub fn get(&self, name: &str) -> Option<&AlertRule> {
        self.0.iter().find(|r| r.name == name)
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<'a> IntoIterator for &'a AlertRules {
    type Item = &'a AlertRule;
    type IntoIter = core::slice::Iter<'a, AlertRule>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_hold_as_written() {
        assert!(Comparison::Greater.holds(2.0, 1.0));
        assert!(!Comparison::Greater.holds(1.0, 1.0));
        assert!(Comparison::GreaterOrEqual.holds(1.0, 1.0));
        assert!(Comparison::Less.holds(0.4, 0.5));
        assert!(Comparison::LessOrEqual.holds(0.5, 0.5));
        assert_eq!(Comparison::LessOrEqual.as_str(), "<=");
        assert!(AlertLevel::Critical > AlertLevel::Warning);
    }

    fn threshold(name: &str, window: Duration, value: f64) -> AlertRule {
        AlertRule {
            name: name.into(),
            level: AlertLevel::Warning,
            cooldown: Duration::ZERO,
            description: None,
            condition: AlertCondition::Threshold {
                metric: AlertMetric::Attempts,
                target: None,
                op: Comparison::Greater,
                value,
                window,
            },
        }
    }

    fn composite(name: &str, members: &[&str]) -> AlertRule {
        AlertRule {
            name: name.into(),
            level: AlertLevel::Info,
            cooldown: Duration::ZERO,
            description: None,
            condition: AlertCondition::Composite {
                rules: members.iter().map(|m| (*m).to_owned()).collect(),
                combine: Combine::Any,
            },
        }
    }

    #[test]
    fn rule_sets_are_refused_with_the_reason() {
        let minute = Duration::from_secs(60);
        let a = threshold("a", minute, 1.0);
        let cases = [
            (
                vec![a.clone(), a.clone()],
                "alert rule `a` is defined twice",
            ),
            (
                vec![threshold("z", Duration::ZERO, 1.0)],
                "alert rule `z`: the window must be longer than zero",
            ),
            (
                vec![threshold("n", minute, f64::NAN)],
                "alert rule `n`: the threshold must be a finite number",
            ),
            (
                vec![composite("c", &[])],
                "alert rule `c`: a composite rule needs at least one rule",
            ),
            (
                vec![a.clone(), composite("c", &["a", "missing"])],
                "alert rule `c`: `missing` is not a threshold or trend rule",
            ),
            (
                vec![a.clone(), composite("b", &["a"]), composite("c", &["b"])],
                "alert rule `c`: `b` is not a threshold or trend rule",
            ),
        ];
        for (rules, message) in cases {
            assert_eq!(AlertRules::new(rules).unwrap_err().to_string(), message);
        }
        let rules = AlertRules::new(vec![a, composite("c", &["a"])]).unwrap();
        assert_eq!(rules.len(), 2);
        assert!(
            rules
                .get("c")
                .is_some_and(|r| r.condition.metric().is_none())
        );
    }

    #[test]
    fn every_metric_has_a_unique_name_that_reads_back() {
        for metric in AlertMetric::ALL {
            assert_eq!(AlertMetric::from_name(metric.name()), Some(metric));
            assert_eq!(metric.to_string(), metric.name());
            assert!(!metric.meaning().is_empty() && !metric.targets().is_empty());
        }
        assert_eq!(AlertMetric::from_name("eror_rate"), None);
        assert_eq!(AlertMetric::P95Latency.kind(), MetricKind::Quantile(0.95));
    }
}
