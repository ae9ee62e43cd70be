//! `[server]`: the listen address, body size limit, request deadline and drain grace.

use core::time::Duration;
use std::net::SocketAddr;

use serde::Serialize;

use crate::de::Val;
use crate::diagnostic::{Diagnostic, DiagnosticKind};
use crate::raw::RawServer;
use crate::value::{ByteSize, OptVal, Range, describe};

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

impl ServerSettings {
    /// The keys of settings bound when the server started that differ from `started`: the
    /// listening socket and the HTTP server's own limits. `request_timeout` is the request
    /// engine's and follows reloads.
    pub(crate) fn restart_needed(&self, started: &Self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.listen != started.listen {
            keys.push("server.listen");
        }
        if self.max_body_size != started.max_body_size {
            keys.push("server.max_body_size");
        }
        if self.shutdown_grace != started.shutdown_grace {
            keys.push("server.shutdown_grace");
        }
        keys
    }
}

/// Phase 2 of `[server]`.
pub(super) fn build(s: &RawServer, out: &mut Vec<Diagnostic>) -> ServerSettings {
    let defaults = ServerSettings::default();
    ServerSettings {
        listen: s
            .listen
            .as_ref()
            .and_then(|v| listen_address(v, out))
            .unwrap_or(defaults.listen),
        max_body_size: s
            .max_body_size
            .read_or_in(
                out,
                Range::Between(ByteSize(1024), ByteSize(1 << 30)),
                ByteSize(defaults.max_body_size),
            )
            .0,
        request_timeout: s.request_timeout.read_or_in(
            out,
            Range::AtLeast(Duration::from_millis(1)),
            defaults.request_timeout,
        ),
        shutdown_grace: s.shutdown_grace.read_or(out, defaults.shutdown_grace),
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
