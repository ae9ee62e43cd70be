//! `[server]`: the listen address, the request deadline, the drain grace and the HTTP server's
//! limits (body and header sizes, header, idle and body timeouts, connections) and TLS files.

use core::time::Duration;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use echelon_domain::defaults::server as default;
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
    /// A request head not complete this long after its first byte closes the connection.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with nothing in flight is closed after this long.
    pub idle_timeout: Duration,
    /// The whole request body must arrive within this long after its head.
    pub body_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_size: u64,
    /// Client connections served at once.
    pub max_connections: u32,
    /// TLS termination: the certificate and key files. `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// `tls_cert` and `tls_key`, resolved against the configuration folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_size: default::MAX_BODY_SIZE,
            request_timeout: default::REQUEST_TIMEOUT,
            shutdown_grace: default::SHUTDOWN_GRACE,
            header_read_timeout: default::HEADER_READ_TIMEOUT,
            idle_timeout: default::IDLE_TIMEOUT,
            body_read_timeout: default::BODY_READ_TIMEOUT,
            max_header_size: default::MAX_HEADER_SIZE,
            max_connections: default::MAX_CONNECTIONS,
            tls: None,
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
        if self.header_read_timeout != started.header_read_timeout {
            keys.push("server.header_read_timeout");
        }
        if self.idle_timeout != started.idle_timeout {
            keys.push("server.idle_timeout");
        }
        if self.body_read_timeout != started.body_read_timeout {
            keys.push("server.body_read_timeout");
        }
        if self.max_header_size != started.max_header_size {
            keys.push("server.max_header_size");
        }
        if self.max_connections != started.max_connections {
            keys.push("server.max_connections");
        }
        if self.tls != started.tls {
            keys.push("server.tls_cert");
        }
        keys
    }
}

/// Phase 2 of `[server]`.
pub(super) fn build(s: &RawServer, root: &Path, out: &mut Vec<Diagnostic>) -> ServerSettings {
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
        header_read_timeout: s.header_read_timeout.read_or_in(
            out,
            Range::AtLeast(Duration::from_millis(10)),
            defaults.header_read_timeout,
        ),
        idle_timeout: s.idle_timeout.read_or_in(
            out,
            Range::AtLeast(Duration::from_millis(10)),
            defaults.idle_timeout,
        ),
        body_read_timeout: s.body_read_timeout.read_or_in(
            out,
            Range::AtLeast(Duration::from_millis(10)),
            defaults.body_read_timeout,
        ),
        max_header_size: s
            .max_header_size
            .read_or_in(
                out,
                Range::Between(ByteSize(1024), ByteSize(1 << 20)),
                ByteSize(defaults.max_header_size),
            )
            .0,
        max_connections: s.max_connections.read_or_in(
            out,
            Range::Between(1, 1_000_000),
            defaults.max_connections,
        ),
        tls: tls_files(s, root, out),
    }
}

/// `tls_cert` and `tls_key`: both or neither, each a readable PEM file of its kind (relative
/// paths are read from the configuration folder). Whether the key matches the certificate is
/// checked by the server when it starts and by `echelon config check`.
fn tls_files(s: &RawServer, root: &Path, out: &mut Vec<Diagnostic>) -> Option<TlsFiles> {
    let file = |val: &Val<String>, pem: Pem, out: &mut Vec<Diagnostic>| {
        let text = val.get(out)?;
        let path = root.join(text.trim());
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => {
                out.push(val.diagnostic(
                    DiagnosticKind::Io,
                    format!("cannot read `{}`: {error}", path.display()),
                    Some("a relative path is read from the configuration folder".into()),
                ));
                return None;
            }
        };
        if let Err(reason) = pem.check(&bytes) {
            out.push(val.diagnostic(
                DiagnosticKind::InvalidValue,
                format!("`{}` {reason}", path.display()),
                Some(pem.help().into()),
            ));
            return None;
        }
        Some(path)
    };
    match (&s.tls_cert, &s.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let cert = file(cert, Pem::Certificates, out);
            let key = file(key, Pem::PrivateKey, out);
            Some(TlsFiles {
                cert: cert?,
                key: key?,
            })
        }
        (Some(set), None) | (None, Some(set)) => {
            out.push(set.diagnostic(
                DiagnosticKind::Conflict,
                "`tls_cert` and `tls_key` go together",
                Some("set both (the certificate chain and its private key), or neither for plain HTTP".into()),
            ));
            None
        }
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

/// What a TLS file must hold.
#[derive(Debug, Clone, Copy)]
enum Pem {
    /// At least one `CERTIFICATE` block, every block well-formed.
    Certificates,
    /// One private key block (PKCS#8, PKCS#1 or SEC1).
    PrivateKey,
}

impl Pem {
    fn check(self, bytes: &[u8]) -> Result<(), String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        match self {
            Self::Certificates => {
                let mut count = 0_usize;
                for cert in CertificateDer::pem_slice_iter(bytes) {
                    cert.map_err(|error| format!("is not valid PEM: {error}"))?;
                    count += 1;
                }
                if count == 0 {
                    return Err("holds no `BEGIN CERTIFICATE` block".into());
                }
                Ok(())
            }
            Self::PrivateKey => PrivateKeyDer::from_pem_slice(bytes)
                .map(drop)
                .map_err(|error| match error {
                    rustls_pki_types::pem::Error::NoItemsFound => {
                        "holds no private key block".to_owned()
                    }
                    other => format!("is not a valid PEM private key: {other}"),
                }),
        }
    }

    const fn help(self) -> &'static str {
        match self {
            Self::Certificates => {
                "the certificate chain in PEM, leaf first (`-----BEGIN CERTIFICATE-----`)"
            }
            Self::PrivateKey => {
                "the private key in PEM: `BEGIN PRIVATE KEY` (PKCS#8), `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`"
            }
        }
    }
}
