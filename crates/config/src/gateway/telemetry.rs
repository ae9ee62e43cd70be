//! `[telemetry]`: log format and filter, trace export.

use serde::Serialize;

use super::http_url;
use crate::diagnostic::{Diagnostic, DiagnosticKind};
use crate::raw::RawTelemetry;
use crate::value::{Choice, OptVal, choice_from_val, describe};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelemetrySettings {
    /// Log line format. Default `text`.
    pub log_format: LogFormat,
    /// Log filter in `tracing` env-filter syntax, e.g. `info` or `info,echelon=debug`. Default `info`.
    pub log_level: String,
    /// OTLP/HTTP endpoint for traces; none means no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported traces. Default `echelon`.
    pub service_name: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            otlp_endpoint: None,
            service_name: "echelon".to_owned(),
        }
    }
}

impl Choice for LogFormat {
    const WHAT: &'static str = "log format";
    fn names() -> &'static [(Self, &'static str)] {
        &[(Self::Text, "text"), (Self::Json, "json")]
    }
}

choice_from_val!(LogFormat);

impl TelemetrySettings {
    /// The keys of settings bound when logging and tracing were installed that differ from
    /// `started`: every telemetry setting is.
    pub(crate) fn restart_needed(&self, started: &Self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.log_format != started.log_format {
            keys.push("telemetry.log_format");
        }
        if self.log_level != started.log_level {
            keys.push("telemetry.log_level");
        }
        if self.otlp_endpoint != started.otlp_endpoint {
            keys.push("telemetry.otlp_endpoint");
        }
        if self.service_name != started.service_name {
            keys.push("telemetry.service_name");
        }
        keys
    }
}

const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

pub(super) fn build(raw: &RawTelemetry, out: &mut Vec<Diagnostic>) -> TelemetrySettings {
    let defaults = TelemetrySettings::default();
    let log_level = match &raw.log_level {
        Some(val) => match val.get(out) {
            Some(level) => {
                let bad = level.split(',').map(str::trim).find(|directive| {
                    let level = directive.rsplit_once('=').map_or(*directive, |(_, l)| l);
                    !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str())
                });
                if let Some(bad) = bad {
                    out.push(val.diagnostic(
                        DiagnosticKind::InvalidValue,
                        format!("invalid log filter directive `{bad}`"),
                        Some(format!(
                            "use a level ({}) or `target=level`, separated by commas",
                            LOG_LEVELS.join(", ")
                        )),
                    ));
                }
                level
            }
            None => defaults.log_level.clone(),
        },
        None => defaults.log_level.clone(),
    };
    let otlp_endpoint = raw.otlp_endpoint.as_ref().and_then(|val| {
        let url = val.get(out)?;
        if http_url(&url) {
            Some(url)
        } else {
            out.push(val.diagnostic(
                DiagnosticKind::InvalidValue,
                describe("invalid OTLP endpoint", &val.raw),
                Some("write an http:// or https:// URL, e.g. \"http://127.0.0.1:4318\"".into()),
            ));
            None
        }
    });
    let service_name = match &raw.service_name {
        Some(val) => match val.get(out) {
            Some(name) if name.trim().is_empty() => {
                out.push(val.diagnostic(
                    DiagnosticKind::InvalidValue,
                    "the service name is empty",
                    None,
                ));
                defaults.service_name.clone()
            }
            Some(name) => name,
            None => defaults.service_name.clone(),
        },
        None => defaults.service_name.clone(),
    };
    TelemetrySettings {
        log_format: raw.log_format.read_or(out, defaults.log_format),
        log_level,
        otlp_endpoint,
        service_name,
    }
}
