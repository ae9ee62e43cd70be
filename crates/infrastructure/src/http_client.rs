//! The one way Echelon builds an upstream HTTP client: pooled, no redirects, no hidden retries.
//!
//! Every provider adapter gets its `reqwest::Client` from [`build_http_client`], so the rules that
//! keep attempt counts exact and keys at home hold everywhere:
//!
//! - **No retries.** reqwest 0.13 retries protocol NACKs by default; [`reqwest::retry::never`]
//!   turns that off. Every upstream attempt is planned and counted by the request engine.
//! - **No redirects.** A redirect would send the provider's key to another URL.
//! - **No proxies from the environment.** `HTTP_PROXY` and friends are ignored; an upstream is
//!   reached exactly where the configuration says.
//! - **`TCP_NODELAY`**, pooled keep-alive connections, the provider's connect timeout, and its
//!   request timeout as a backstop behind the engine's own timeouts.
//!
//! TLS is rustls with the `ring` provider, installed process-wide on first use, and server
//! certificates are checked by `rustls-platform-verifier` (reqwest's `rustls-no-provider`
//! feature brings it), which reads the operating system's trust store. No extra root-certificate
//! feature is needed.

use core::time::Duration;

/// Settings of an upstream HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpClientSettings {
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Upper bound on a whole request, body included; a backstop behind the engine's timeouts.
    pub request_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Most idle connections kept per host.
    pub pool_max_idle_per_host: usize,
}

impl Default for HttpClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(600),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
        }
    }
}

/// Building the HTTP client failed.
#[derive(Debug, thiserror::Error)]
#[error("could not build the upstream http client: {reason}")]
pub struct HttpClientError {
    reason: Box<str>,
}

/// Installs rustls' `ring` crypto provider as the process default, once.
///
/// Safe to call any number of times and from any thread; a provider installed earlier (by this
/// function or by the embedding program) is kept.
pub fn install_crypto_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Another thread may win the race between the check and the install; its provider is
            // as good as ours, so the error is ignored.
            let _already_installed = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// Builds an upstream HTTP client with the rules above.
///
/// # Errors
///
/// When the TLS configuration cannot be built (for example, the platform trust store cannot be
/// read).
pub fn build_http_client(
    settings: &HttpClientSettings,
) -> Result<reqwest::Client, HttpClientError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .retry(reqwest::retry::never())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .pool_idle_timeout(settings.pool_idle_timeout)
        .pool_max_idle_per_host(settings.pool_max_idle_per_host)
        .referer(false)
        .build()
        .map_err(|e| HttpClientError {
            // A builder error carries no URL; its text names the TLS or resolver problem.
            reason: e.without_url().to_string().into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_without_a_preinstalled_provider_and_twice() {
        let settings = HttpClientSettings::default();
        build_http_client(&settings).unwrap();
        build_http_client(&settings).unwrap();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
