//! Alert rules as configured: threshold, trend and composite conditions over named metrics.
//!
//! Plain data, like the rest of [`crate::spec`]: `echelon-config` reads them from
//! `[[alerts.rules]]` and the application's alert engine evaluates them.

use core::time::Duration;

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
        /// A metric name the alert engine knows, e.g. `pool_healthy_ratio`.
        metric: String,
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
        /// A metric name the alert engine knows.
        metric: String,
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
}
