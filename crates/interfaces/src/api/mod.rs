//! The admin API's wire format: one set of data transfer objects, written by the server
//! (`/admin/status`, `/admin/pools/NAME`, `/admin/task-groups/NAME`, `/admin/route`,
//! `/admin/alerts`) and read by the command line (`echelon status`, `echelon route explain`, the
//! demo), so that both sides agree by construction.
//!
//! The domain's types are not the API: each DTO is built from a domain value by a `From` impl
//! here, so renaming a domain field is a compile error in this module rather than a silent change
//! of the public API. The snapshot tests (`tests/admin_api.rs` and the tests below) show every
//! change to the wire format as a diff.
//!
//! Conventions, the same on every endpoint:
//! - every document carries `api_version` ([`API_VERSION`]), raised on a breaking change;
//! - durations are text in the configuration's notation (`"250ms"`, `"1.5s"`, `"5m"`), exact to
//!   the nanosecond (see [`echelon_domain::time::DurationText`]);
//! - instants are seconds (a float) on the gateway's monotonic clock, whose current reading is
//!   the document's `now`: the time left of a cooldown is `until - now`;
//! - enums are snake_case strings (`"half_open"`, `"round_robin"`), and tagged unions carry a
//!   `kind` field; readers ignore fields and kinds they do not know.

pub mod alerts;
pub mod explain;
pub mod status;

pub use alerts::{ActiveAlertDto, AlertNoticeDto, AlertRuleDto, AlertsDto};
pub use explain::{CandidateDto, ExplanationDto, SkipDto, StageDto, TargetDto, VerdictDto};
pub use status::{
    EchelonDto, FailModeDto, GroupDto, HistoryDto, InstanceDto, LatencyDto, LimitsDto, MemberDto,
    PoolDto, ProbeDto, ReloadDto, ReloadsDto, SharedStateDto, SharingModeDto, StateBackendDto,
    StatsDto, StatusDto,
};

/// The version of the admin API's wire format. Adding a field is not a breaking change;
/// renaming or removing one, or changing its meaning, is.
pub const API_VERSION: u32 = 1;

/// The `api_version` a reader assumes when a document does not say (older gateways).
const fn unversioned() -> u32 {
    0
}

/// Whether a pool-like element is a named pool or the implicit pool of a direct model route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    /// `[pools.NAME]`, routed as `pool:NAME`.
    Pool,
    /// A `provider/model` routed directly.
    Model,
    /// A kind this version of the reader does not know.
    #[serde(other)]
    Other,
}

impl LabelKind {
    /// The kind and name of a domain pool label.
    fn of(label: &echelon_domain::routing::PoolLabel) -> (Self, String) {
        use echelon_domain::routing::PoolLabel;
        match label {
            PoolLabel::Pool(name) => (Self::Pool, name.to_string()),
            PoolLabel::Model(model) => (Self::Model, model.to_string()),
        }
    }

    /// The label as routes write it: `pool:NAME` or `provider/model`.
    pub fn route(self, name: &str) -> String {
        match self {
            Self::Pool => format!("pool:{name}"),
            Self::Model | Self::Other => name.to_owned(),
        }
    }
}

/// Seconds on the gateway's clock.
fn seconds(at: echelon_domain::time::Instant) -> f64 {
    at.elapsed_since_origin().as_secs_f64()
}

/// A [`std::time::Duration`] as configuration text (`"1.5s"`), for `#[serde(with = ...)]`.
pub mod duration_text {
    use std::time::Duration;

    use echelon_domain::time::DurationText;
    use serde::{Deserialize as _, Deserializer, Serializer};

    /// Writes `duration` as text.
    ///
    /// # Errors
    /// When the serializer fails.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&DurationText(*duration))
    }

    /// Reads text such as `"250ms"` or `"1m30s"`.
    ///
    /// # Errors
    /// When the value is not a duration in the configuration's notation.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        echelon_config::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// An optional [`std::time::Duration`] as configuration text, `null` when absent.
pub mod option_duration_text {
    use std::time::Duration;

    use echelon_domain::time::DurationText;
    use serde::{Deserialize as _, Deserializer, Serializer};

    /// Writes `duration` as text, or `null`.
    ///
    /// # Errors
    /// When the serializer fails.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(d) => serializer.collect_str(&DurationText(*d)),
            None => serializer.serialize_none(),
        }
    }

    /// Reads text such as `"250ms"`, or `null`.
    ///
    /// # Errors
    /// When the value is neither `null` nor a duration in the configuration's notation.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<std::borrow::Cow<'de, str>>::deserialize(deserializer)?
            .map(|text| echelon_config::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Timed {
        #[serde(with = "super::duration_text")]
        every: Duration,
        #[serde(with = "super::option_duration_text", default)]
        left: Option<Duration>,
    }

    #[test]
    fn durations_are_text_both_ways_and_exact() {
        for (value, text) in [
            (
                Timed {
                    every: Duration::from_millis(1_500),
                    left: None,
                },
                r#"{"every":"1.5s","left":null}"#,
            ),
            (
                Timed {
                    every: Duration::from_secs(90),
                    left: Some(Duration::from_nanos(12_345)),
                },
                r#"{"every":"1m30s","left":"12.345us"}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&value).unwrap(), text);
            assert_eq!(serde_json::from_str::<Timed>(text).unwrap(), value);
        }
        let error = serde_json::from_str::<Timed>(r#"{"every":"soon"}"#).unwrap_err();
        assert!(error.to_string().contains("e.g. \"250ms\""), "{error}");
    }
}
