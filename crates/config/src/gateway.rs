//! Gateway settings (`configs/gateway.toml`): server, client authentication, telemetry, shared
//! state and alert rules, with `ECHELON_<SECTION>__<KEY>` environment overrides.
//!
//! Overrides are applied to the located tree before it is read, so a bad override is reported
//! like a bad line, at `environment variable ECHELON_SERVER__LISTEN`, and never with its value.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

pub use echelon_domain::alert::{AlertCondition, AlertLevel, AlertRule, Combine, Comparison};
use echelon_domain::secret::Secret;
use serde::Serialize;

use crate::de::{Here, Val};
use crate::diagnostic::{Diagnostic, DiagnosticKind, did_you_mean};
use crate::env::Env;
use crate::node::{Entry, Node, Origin, Text, Value};
use crate::raw::{RawAlertRule, RawAlerts, RawGateway, RawState, RawTelemetry};
use crate::value::{ByteSize, Choice, OptVal, Range, choice_from_val, describe};

/// Everything `configs/gateway.toml` sets.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct GatewaySettings {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[telemetry]`.
    pub telemetry: TelemetrySettings,
    /// `[state]`.
    pub state: StateBackend,
    /// `[alerts]`.
    pub alerts: AlertSettings,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerSettings {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes. Default 4 MiB.
    pub max_body_size: u64,
    /// Upper bound on one client request, streaming included. Default 300 s.
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests. Default 30 s.
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_size: 4 * 1024 * 1024,
            request_timeout: echelon_domain::defaults::server::REQUEST_TIMEOUT,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct AuthSettings {
    /// Keys clients may send as `Authorization: Bearer`; empty means the gateway is open.
    pub api_keys: Vec<Secret>,
    /// The admin API's bearer token; without it, admin endpoints answer loopback clients only.
    pub admin_key: Option<Secret>,
}

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

/// Where counters shared between gateway replicas live (`[state]`).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "snake_case", tag = "backend")]
pub enum StateBackend {
    /// In this process only.
    #[default]
    Memory,
    /// In Redis, shared by every replica.
    Redis {
        /// `redis://` or `rediss://` URL; may hold a password.
        url: Secret,
    },
}

/// `[state] backend` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateBackendKind {
    Memory,
    Redis,
}

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct AlertSettings {
    /// Webhook URLs alerts are posted to (besides the log); secrets, as they often hold tokens.
    pub webhooks: Vec<Secret>,
    /// The rules, in file order.
    pub rules: Vec<AlertRule>,
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

impl Choice for LogFormat {
    const WHAT: &'static str = "log format";
    fn names() -> &'static [(Self, &'static str)] {
        &[(Self::Text, "text"), (Self::Json, "json")]
    }
}

impl Choice for StateBackendKind {
    const WHAT: &'static str = "state backend";
    fn names() -> &'static [(Self, &'static str)] {
        &[(Self::Memory, "memory"), (Self::Redis, "redis")]
    }
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

choice_from_val!(
    LogFormat,
    StateBackendKind,
    AlertKind,
    Comparison,
    Combine,
    AlertLevel
);

/// Prefix of gateway overrides: `ECHELON_<SECTION>__<KEY>`.
pub(crate) const ENV_PREFIX: &str = "ECHELON_";
const SECTIONS: [&str; 5] = ["server", "auth", "telemetry", "state", "alerts"];

/// Applies `ECHELON_<SECTION>__<KEY>=value` overrides to the gateway tree. Variables without
/// `__` are not overrides (`ECHELON_CONFIG_DIR`); an unknown section is a warning.
pub(crate) fn apply_env_overrides(tree: &mut Node, env: &dyn Env, out: &mut Vec<Diagnostic>) {
    for (variable, value) in env.vars_with_prefix(ENV_PREFIX) {
        let rest = &variable[ENV_PREFIX.len()..];
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            continue;
        }
        if !SECTIONS.contains(&path[0].as_str()) {
            let help = did_you_mean(&path[0], SECTIONS).map(|_| {
                let section = crate::diagnostic::closest(&path[0], SECTIONS).unwrap_or_default();
                let suggestion = format!(
                    "{ENV_PREFIX}{}__{}",
                    section.to_ascii_uppercase(),
                    rest.split_once("__").map_or("", |(_, tail)| tail)
                );
                format!("did you mean `{suggestion}`?")
            });
            out.push(
                Diagnostic::warning(
                    DiagnosticKind::Unused,
                    format!("`{variable}` does not name a gateway setting and is ignored"),
                )
                .at(Some(crate::diagnostic::Location::Environment {
                    variable: variable.clone(),
                }))
                .maybe_help(help.or_else(|| {
                    Some(format!(
                        "gateway overrides are {ENV_PREFIX}<SECTION>__<KEY> with a section of {}",
                        SECTIONS.join(", ")
                    ))
                })),
            );
            continue;
        }
        let origin = Origin::Env {
            variable: Arc::from(variable.as_str()),
        };
        let leaf = Node {
            value: Value::Str(Text {
                value,
                template: None,
                convertible: true,
            }),
            origin: origin.clone(),
        };
        set(tree, &path, leaf, &origin);
    }
}

fn set(node: &mut Node, path: &[String], leaf: Node, origin: &Origin) {
    if node.as_table().is_none() {
        *node = Node::empty_table(origin.clone());
    }
    let Some(table) = node.as_table_mut() else {
        return;
    };
    let (first, rest) = path.split_first().expect("override paths are not empty");
    let index = match table.entries.iter().position(|e| &e.key == first) {
        Some(index) => index,
        None => {
            table.entries.push(Entry {
                key: first.clone(),
                key_origin: origin.clone(),
                value: Node::empty_table(origin.clone()),
            });
            table.entries.len() - 1
        }
    };
    let entry = &mut table.entries[index];
    if rest.is_empty() {
        entry.key_origin = origin.clone();
        entry.value = leaf;
    } else {
        set(&mut entry.value, rest, leaf, origin);
    }
}

/// Phase 2 of `gateway.toml`.
pub(crate) fn build(raw: RawGateway, out: &mut Vec<Diagnostic>) -> GatewaySettings {
    let defaults = GatewaySettings::default();
    let server = raw
        .server
        .map_or_else(ServerSettings::default, |s| ServerSettings {
            listen: s
                .listen
                .as_ref()
                .and_then(|v| listen_address(v, out))
                .unwrap_or(defaults.server.listen),
            max_body_size: s
                .max_body_size
                .read_or_in(
                    out,
                    Range::Between(ByteSize(1024), ByteSize(1 << 30)),
                    ByteSize(defaults.server.max_body_size),
                )
                .0,
            request_timeout: s.request_timeout.read_or_in(
                out,
                Range::AtLeast(Duration::from_millis(1)),
                defaults.server.request_timeout,
            ),
            shutdown_grace: s
                .shutdown_grace
                .read_or(out, defaults.server.shutdown_grace),
        });
    let auth = raw
        .auth
        .map_or_else(AuthSettings::default, |a| AuthSettings {
            api_keys: a
                .api_keys
                .unwrap_or_default()
                .iter()
                .filter_map(|key| non_empty_secret(key, out))
                .collect(),
            admin_key: a
                .admin_key
                .as_ref()
                .and_then(|key| non_empty_secret(key, out)),
        });
    GatewaySettings {
        server,
        auth,
        telemetry: raw
            .telemetry
            .map_or_else(TelemetrySettings::default, |t| telemetry(&t, out)),
        state: raw.state.map_or(StateBackend::Memory, |s| state(&s, out)),
        alerts: raw
            .alerts
            .map_or_else(AlertSettings::default, |a| alerts(a, out)),
    }
}

fn listen_address(val: &Val<String>, out: &mut Vec<Diagnostic>) -> Option<SocketAddr> {
    let text = val.get(out)?;
    let text = text.trim();
    // `localhost:PORT` is the one host name people write here; anything else must be an IP.
    let parsed = match text.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port))),
        None => text.parse().ok(),
    };
    if parsed.is_none() {
        out.push(
            val.diagnostic(
                DiagnosticKind::InvalidValue,
                describe("invalid listen address", &val.raw),
                Some(
                    "write an IP address and a port, e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\""
                        .into(),
                ),
            ),
        );
    }
    parsed
}

/// A secret that must not be empty (an empty client key would match an empty bearer token).
pub(crate) fn non_empty_secret(val: &Val<Secret>, out: &mut Vec<Diagnostic>) -> Option<Secret> {
    let secret = val.get(out)?;
    if secret.is_empty() {
        out.push(val.diagnostic(
            DiagnosticKind::InvalidValue,
            "the key is empty",
            Some("set the variable it comes from, or remove the entry".into()),
        ));
        return None;
    }
    Some(secret)
}

const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

fn telemetry(raw: &RawTelemetry, out: &mut Vec<Diagnostic>) -> TelemetrySettings {
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

/// Whether `url` is an `http://` or `https://` URL with a host.
pub(crate) fn http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !host.contains(char::is_whitespace)
    })
}

fn state(raw: &RawState, out: &mut Vec<Diagnostic>) -> StateBackend {
    let kind = raw.backend.read_or(out, StateBackendKind::Memory);
    let url = raw.redis_url.as_ref().and_then(|val| {
        let url = val.get(out)?;
        let text = url.expose();
        if text.starts_with("redis://")
            || text.starts_with("rediss://")
            || text.starts_with("unix://")
        {
            Some(url)
        } else {
            out.push(val.diagnostic(
                DiagnosticKind::InvalidValue,
                "invalid Redis URL",
                Some("write a redis://, rediss:// or unix:// URL".into()),
            ));
            None
        }
    });
    match kind {
        StateBackendKind::Memory => {
            if let Some(val) = &raw.redis_url {
                out.push(
                    Diagnostic::warning(
                        DiagnosticKind::Unused,
                        "`redis_url` is ignored with `backend = \"memory\"`",
                    )
                    .at(val.location.clone())
                    .key(val.key.clone())
                    .help("set `backend = \"redis\"` to share state between replicas"),
                );
            }
            StateBackend::Memory
        }
        StateBackendKind::Redis => match url {
            Some(url) => StateBackend::Redis { url },
            None => {
                if raw.redis_url.is_none() {
                    out.push(missing(
                        &raw.here,
                        "redis_url",
                        "`backend = \"redis\"` needs `redis_url`",
                    ));
                }
                StateBackend::Memory
            }
        },
    }
}

/// A missing-key error located at the table that lacks it.
pub(crate) fn missing(here: &Here, key: &str, reason: impl Into<String>) -> Diagnostic {
    let path = if here.key.is_empty() {
        key.to_owned()
    } else {
        format!("{}.{key}", here.key)
    };
    Diagnostic::error(DiagnosticKind::MissingKey, reason)
        .at(here.location.clone())
        .key(path)
}

fn alerts(raw: RawAlerts, out: &mut Vec<Diagnostic>) -> AlertSettings {
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
    AlertSettings { webhooks, rules }
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
    let cooldown = raw.cooldown.read_or(out, Duration::from_secs(600));
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
            let metric = required(&raw.metric, &raw.here, "metric", &name, out)?;
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
                    Duration::from_secs(60),
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
                    Duration::from_secs(300),
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

fn required(
    val: &Option<Val<String>>,
    here: &Here,
    key: &str,
    rule: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<String> {
    match val {
        Some(v) => {
            let text = v.get(out)?;
            if text.trim().is_empty() {
                out.push(v.diagnostic(
                    DiagnosticKind::InvalidValue,
                    format!("`{key}` is empty"),
                    None,
                ));
                return None;
            }
            Some(text)
        }
        None => {
            out.push(missing(
                here,
                key,
                format!("alert rule `{rule}` needs a `{key}`"),
            ));
            None
        }
    }
}
