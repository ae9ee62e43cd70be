//! `[state]`: where counters shared between replicas live.

use echelon_domain::secret::Secret;
use serde::Serialize;

use super::missing;
use crate::diagnostic::{Diagnostic, DiagnosticKind};
use crate::raw::RawState;
use crate::value::{Choice, OptVal, choice_from_val};

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

impl Choice for StateBackendKind {
    const WHAT: &'static str = "state backend";
    fn names() -> &'static [(Self, &'static str)] {
        &[(Self::Memory, "memory"), (Self::Redis, "redis")]
    }
}

choice_from_val!(StateBackendKind);

pub(super) fn build(raw: &RawState, out: &mut Vec<Diagnostic>) -> StateBackend {
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
