//! A small client of a running gateway's admin API, for `echelon status` and `route explain --url`.
//!
//! It uses the infrastructure's HTTP client builder (timeouts, no redirects, no retries, no proxy
//! from the environment), so an admin key is only ever sent to the URL given.

use std::time::Duration;

use echelon_infrastructure::http_client::{HttpClientSettings, build_http_client};
use reqwest::Url;

/// A request to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The `--url` is not an http(s) URL.
    #[error("`{url}` is not a gateway URL; pass e.g. --url http://127.0.0.1:8080")]
    BadUrl {
        /// What was given.
        url: String,
    },
    /// The HTTP client could not be built.
    #[error("{0}")]
    Client(#[from] echelon_infrastructure::http_client::HttpClientError),
    /// Nothing answered.
    #[error(
        "cannot reach the gateway at {url}: {reason}; is `echelon serve` running there? pass --url to point elsewhere"
    )]
    Unreachable {
        /// The gateway's base URL.
        url: String,
        /// What the connection attempt said, without URLs.
        reason: String,
    },
    /// The gateway refused the admin key or asked for one.
    #[error("{message}; pass --admin-key KEY or set ECHELON_ADMIN_KEY")]
    Unauthorized {
        /// The gateway's message.
        message: String,
    },
    /// The gateway answered with another error.
    #[error("the gateway answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The OpenAI-shaped error's message, or the body.
        message: String,
    },
    /// The body is not what the admin API sends.
    #[error("unexpected answer from {url}: {reason}")]
    Body {
        /// The endpoint.
        url: String,
        /// What did not parse.
        reason: String,
    },
}

/// A client of one gateway's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: Url,
    key: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the gateway at `url` (e.g. `http://127.0.0.1:8080`), presenting `key` as
    /// `Authorization: Bearer` when given.
    ///
    /// # Errors
    /// When the URL is not http(s) or the HTTP client cannot be built.
    pub fn new(url: &str, key: Option<String>, timeout: Duration) -> Result<Self, AdminError> {
        let bad = || AdminError::BadUrl {
            url: url.to_owned(),
        };
        let mut base = Url::parse(url.trim_end_matches('/')).map_err(|_| bad())?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(bad());
        }
        base.set_query(None);
        let http = build_http_client(&HttpClientSettings {
            connect_timeout: timeout,
            request_timeout: timeout,
            pool_idle_timeout: Duration::from_secs(5),
            pool_max_idle_per_host: 1,
        })?;
        Ok(Self {
            base,
            key: key.filter(|k| !k.is_empty()),
            http,
        })
    }

    /// The gateway's base URL, for messages.
    pub fn base(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// `GET` an admin path (e.g. `/admin/status`) with query pairs; returns the JSON body.
    ///
    /// # Errors
    /// When the gateway cannot be reached or answers with an error.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<u8>, AdminError> {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}{path}"));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.http.get(url.clone());
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| AdminError::Unreachable {
            url: self.base(),
            reason: reason(&e),
        })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| AdminError::Body {
            url: endpoint(&url),
            reason: reason(&e),
        })?;
        if (200..300).contains(&status) {
            return Ok(body.to_vec());
        }
        let message = error_message(&body);
        Err(if status == 401 {
            AdminError::Unauthorized { message }
        } else {
            AdminError::Status { status, message }
        })
    }
}

/// The endpoint without its query, for messages.
fn endpoint(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// The error's text without the URL it carries, and with its causes.
fn reason(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The message of an OpenAI-shaped error body, or the body itself.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(300)
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_urls_that_are_not_http() {
        for url in ["127.0.0.1:8080", "ftp://host", "not a url"] {
            let error = AdminClient::new(url, None, Duration::from_secs(1)).unwrap_err();
            assert!(matches!(error, AdminError::BadUrl { .. }), "{url}");
        }
        let client =
            AdminClient::new("http://127.0.0.1:8080/?x=1", None, Duration::from_secs(1)).unwrap();
        assert_eq!(client.base(), "http://127.0.0.1:8080");
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_message(br#"{"error":{"message":"model `x` not found","type":"t"}}"#),
            "model `x` not found"
        );
        assert_eq!(error_message(b"  plain text\n"), "plain text");
    }
}
