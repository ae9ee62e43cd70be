//! `[state]`: where the state shared between replicas lives, and how a replica syncs with it.

use core::time::Duration;

use echelon_domain::defaults::state as defaults;
use echelon_domain::secret::Secret;
use echelon_domain::shared::FailMode;
use serde::Serialize;

use super::missing;
use crate::de::Val;
use crate::diagnostic::{Diagnostic, DiagnosticKind};
use crate::raw::RawState;
use crate::value::{Choice, OptVal, Range, choice_from_val};

/// Where state shared between gateway replicas lives (`[state]`).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "snake_case", tag = "backend")]
pub enum StateBackend {
    /// In this process only: limits, cooldowns and breakers apply per replica.
    #[default]
    Memory,
    /// In Redis (or Valkey), shared by every replica.
    Redis(RedisSettings),
}

/// `[state]` with `backend = "redis"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedisSettings {
    /// `redis://`, `rediss://` (TLS) or `unix://` URL; may hold a password (a secret).
    pub url: Secret,
    /// First part of every key, so that several gateways can share one Redis.
    pub key_prefix: String,
    /// Bound on every Redis call, connecting included.
    pub timeout: Duration,
    /// Time between two syncs of this replica with Redis.
    pub sync_interval: Duration,
    /// Time between two attempts to reach Redis again while falling back to local state.
    pub retry_interval: Duration,
    /// What rate budgets do while Redis is unreachable.
    pub fail_mode: FailMode,
    /// How many replicas share the limits: local budgets are the limit divided by it while Redis
    /// is unreachable, and it sizes the slices of the budgets each replica holds.
    pub replicas: u32,
}

/// `[state] backend` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateBackendKind {
    Memory,
    Redis,
}

impl Choice for StateBackendKind {
    const WHAT: &'static str = "state backend";
    fn names() -> &'static [(Self, &'static str)] {
        &[(Self::Memory, "memory"), (Self::Redis, "redis")]
    }
}

impl Choice for FailMode {
    const WHAT: &'static str = "fail mode";
    fn names() -> &'static [(Self, &'static str)] {
        const NAMES: [(FailMode, &str); 2] = [
            (FailMode::Local, FailMode::Local.as_str()),
            (FailMode::Closed, FailMode::Closed.as_str()),
        ];
        &NAMES
    }
}

choice_from_val!(StateBackendKind, FailMode);

pub(super) fn build(raw: &RawState, out: &mut Vec<Diagnostic>) -> StateBackend {
    let kind = raw.backend.read_or(out, StateBackendKind::Memory);
    let url = raw.redis_url.as_ref().and_then(|val| redis_url(val, out));
    let short = Range::Between(Duration::from_millis(1), Duration::from_secs(60));
    let timeout = raw.timeout.read_or_in(out, short, defaults::TIMEOUT);
    let sync_interval = raw.sync_interval.read_or_in(
        out,
        Range::Between(Duration::from_millis(10), Duration::from_secs(10)),
        defaults::SYNC_INTERVAL,
    );
    let retry_interval = raw
        .retry_interval
        .read_or_in(out, short, defaults::RETRY_INTERVAL);
    let fail_mode = raw.fail_mode.read_or(out, FailMode::Local);
    let replicas = raw
        .replicas
        .read_or_in(out, Range::Between(1, 1_000), defaults::REPLICAS);
    let key_prefix = raw
        .key_prefix
        .as_ref()
        .and_then(|val| key_prefix(val, out))
        .unwrap_or_else(|| defaults::KEY_PREFIX.to_owned());
    match kind {
        StateBackendKind::Memory => {
            let ignored = [
                (
                    "redis_url",
                    raw.redis_url.as_ref().map(|v| (&v.location, &v.key)),
                ),
                (
                    "key_prefix",
                    raw.key_prefix.as_ref().map(|v| (&v.location, &v.key)),
                ),
            ];
            for (name, at) in ignored {
                if let Some((location, key)) = at {
                    out.push(
                        Diagnostic::warning(
                            DiagnosticKind::Unused,
                            format!("`{name}` is ignored with `backend = \"memory\"`"),
                        )
                        .at(location.clone())
                        .key(key.clone())
                        .help("set `backend = \"redis\"` to share state between replicas"),
                    );
                }
            }
            StateBackend::Memory
        }
        StateBackendKind::Redis => match url {
            Some(url) => StateBackend::Redis(RedisSettings {
                url,
                key_prefix,
                timeout,
                sync_interval,
                retry_interval,
                fail_mode,
                replicas,
            }),
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

fn redis_url(val: &Val<Secret>, out: &mut Vec<Diagnostic>) -> Option<Secret> {
    let url = val.get(out)?;
    let text = url.expose();
    let rest = ["redis://", "rediss://", "unix://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => Some(url),
        _ => {
            out.push(val.diagnostic(
                DiagnosticKind::InvalidValue,
                "invalid Redis URL",
                Some("write redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://… for TLS, or unix:///PATH".into()),
            ));
            None
        }
    }
}

fn key_prefix(val: &Val<String>, out: &mut Vec<Diagnostic>) -> Option<String> {
    let prefix = val.get(out)?;
    if prefix.is_empty()
        || prefix.len() > 64
        || prefix.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        out.push(val.diagnostic(
            DiagnosticKind::InvalidValue,
            "invalid key prefix",
            Some("use 1 to 64 characters without spaces, such as \"echelon\" or \"team-a\"".into()),
        ));
        return None;
    }
    Some(prefix)
}
