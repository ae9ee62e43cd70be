//! TLS termination for client connections: rustls on ring (the stack the upstream client
//! already uses), HTTP/1.1 by ALPN, and a certificate that follows its files.
//!
//! The certificate and key are read at start (an unreadable or mismatched pair refuses to
//! serve), then watched: the listener calls [`Tls::reload_if_changed`] every
//! [`RELOAD_CHECK`], which reads both files and loads them again when either's bytes changed
//! (two small files a second; comparing contents works on every filesystem, where modification
//! times may be coarse).
//! A valid new pair serves the next handshake; a broken one is logged and the previous pair
//! keeps serving, so a half-written renewal never takes the gateway down.

use core::time::Duration;
use std::path::PathBuf;
use std::sync::Arc;

pub use echelon_config::TlsFiles;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Why a certificate pair cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM block of the expected kind.
    #[error("server.tls_{what} {path}: {reason}")]
    File {
        /// `cert` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (an unsupported key type, or a key that does not match).
    #[error("server.tls_cert and server.tls_key do not make a usable pair: {0}")]
    Pair(String),
}

/// The files' contents when last loaded: when either changes, the pair is loaded again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<Vec<u8>>, Option<Vec<u8>>);

fn stamp(files: &TlsFiles) -> Stamp {
    Stamp(
        std::fs::read(&files.cert).ok(),
        std::fs::read(&files.key).ok(),
    )
}

/// Reads and checks a certificate pair.
///
/// # Errors
/// When a file is unreadable, holds no certificate or key, or the two do not match.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let provider = provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect)
        .map_err(|error| TlsError::File {
            what: "cert",
            path: files.cert.clone(),
            reason: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            what: "cert",
            path: files.cert.clone(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| TlsError::File {
        what: "key",
        path: files.key.clone(),
        reason: error.to_string(),
    })?;
    let certified = CertifiedKey::from_der(certs, key, &provider)
        .map_err(|error| TlsError::Pair(error.to_string()))?;
    Ok(Arc::new(certified))
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The serving certificate, swapped on reload.
#[derive(Debug)]
struct Resolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// TLS for one listener: the acceptor and the files it follows.
pub struct Tls {
    files: TlsFiles,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
    stamp: Stamp,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the pair and builds the acceptor (TLS 1.2 and 1.3, ALPN `http/1.1`).
    ///
    /// # Errors
    /// When the pair cannot serve ([`load`]).
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let stamp = stamp(&files);
        let resolver = Arc::new(Resolver(ArcSwap::new(load(&files)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Pair(error.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        // HTTP/1.1 only: docs/configuration.md says why not h2.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            files,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            stamp,
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the pair again if either file changed; a pair that fails to load is logged and
    /// the serving one kept. Returns whether a new pair now serves.
    pub fn reload_if_changed(&mut self) -> bool {
        let now = stamp(&self.files);
        if now == self.stamp {
            return false;
        }
        self.stamp = now;
        match load(&self.files) {
            Ok(certified) => {
                self.resolver.0.store(certified);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(error) => {
                tracing::error!(%error, "TLS certificate not reloaded; the previous one keeps serving");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &std::path::Path, name: &str) -> (TlsFiles, Vec<u8>) {
        let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.key, generated.signing_key.serialize_pem()).unwrap();
        std::fs::write(&files.cert, generated.cert.pem()).unwrap();
        (files, generated.cert.der().to_vec())
    }

    fn serving(tls: &Tls) -> Vec<u8> {
        tls.resolver.0.load().cert[0].to_vec()
    }

    #[test]
    fn a_changed_pair_serves_and_a_broken_one_leaves_the_old_serving() {
        let dir = tempfile::tempdir().unwrap();
        let (files, first) = pair(dir.path(), "one.test");
        let mut tls = Tls::new(files.clone()).unwrap();
        assert_eq!(serving(&tls), first);
        assert!(!tls.reload_if_changed(), "nothing changed");

        std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
        assert!(!tls.reload_if_changed());
        assert_eq!(serving(&tls), first, "a broken file keeps the old pair");

        let (_, second) = pair(dir.path(), "two.test");
        assert!(tls.reload_if_changed());
        assert_eq!(serving(&tls), second);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_with_both_keys_named() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = pair(dir.path(), "one.test");
        let other = rcgen::generate_simple_self_signed(vec!["two.test".to_owned()]).unwrap();
        std::fs::write(&files.key, other.signing_key.serialize_pem()).unwrap();
        let error = Tls::new(files).unwrap_err().to_string();
        assert!(
            error.contains("server.tls_cert and server.tls_key"),
            "{error}"
        );

        let missing = TlsFiles {
            cert: dir.path().join("absent.pem"),
            key: dir.path().join("key.pem"),
        };
        let error = load(&missing).unwrap_err().to_string();
        assert!(error.starts_with("server.tls_cert"), "{error}");
        assert!(error.contains("absent.pem"), "{error}");
    }
}
