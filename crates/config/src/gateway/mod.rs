//! Gateway settings (`configs/gateway.toml`): server, client authentication, telemetry, shared
//! state and alert rules, with `ECHELON_<SECTION>__<KEY>` environment overrides.
//!
//! One module per section (`server.rs`, `telemetry.rs`, `state.rs`, `alerts.rs`) holds the
//! section's settings and its phase 2; `overrides.rs` applies the environment overrides.
//! [`GatewaySettings::restart_needed`] says which settings a running gateway cannot take on a
//! reload.

mod alerts;
mod overrides;
mod server;
mod state;
mod telemetry;

use std::path::Path;

use echelon_domain::secret::Secret;
use serde::Serialize;

pub use self::alerts::{AlertKind, AlertSettings};
pub(crate) use self::overrides::apply_env_overrides;
pub use self::server::{ServerSettings, TlsFiles};
pub(crate) use self::state::StateBackendKind;
pub use self::state::{RedisSettings, StateBackend};
pub use self::telemetry::{LogFormat, TelemetrySettings};
pub use echelon_domain::alert::{
    AlertCondition, AlertLevel, AlertMetric, AlertRule, AlertRules, Combine, Comparison,
};

use crate::de::{Here, Val};
use crate::diagnostic::{Diagnostic, DiagnosticKind};
use crate::raw::RawGateway;

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

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct AuthSettings {
    /// Keys clients may send as `Authorization: Bearer`; empty means the gateway is open.
    pub api_keys: Vec<Secret>,
    /// The admin API's bearer token; without it, admin endpoints answer loopback clients only.
    pub admin_key: Option<Secret>,
}

impl GatewaySettings {
    /// The settings bound when the gateway started that differ in `self`, by key path
    /// (`server.listen`, `telemetry.log_format`, …): a running gateway keeps the values it
    /// started with until it is restarted. Every other setting takes effect on reload.
    pub fn restart_needed(&self, started: &Self) -> Vec<&'static str> {
        let mut keys = self.server.restart_needed(&started.server);
        keys.extend(self.telemetry.restart_needed(&started.telemetry));
        if self.state != started.state {
            keys.push("state");
        }
        keys
    }
}

/// Phase 2 of `gateway.toml`.
pub(crate) fn build(raw: RawGateway, root: &Path, out: &mut Vec<Diagnostic>) -> GatewaySettings {
    let server = raw
        .server
        .map_or_else(ServerSettings::default, |s| server::build(&s, root, out));
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
            .map_or_else(TelemetrySettings::default, |t| telemetry::build(&t, out)),
        state: raw
            .state
            .map_or(StateBackend::Memory, |s| state::build(&s, out)),
        alerts: raw
            .alerts
            .map_or_else(AlertSettings::default, |a| alerts::build(a, out)),
    }
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
