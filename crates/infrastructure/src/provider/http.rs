//! The HTTP side shared by the OpenAI, Anthropic and Gemini adapters: URLs, keys, sending, errors.

use std::sync::Arc;

use bytes::Bytes;
use echelon_domain::chat::ChatResponse;
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::name::{InstanceId, ProviderName};
use echelon_domain::ports::{Call, ChunkStream};
use echelon_domain::secret::Secret;
use echelon_domain::spec::{ProviderKind, ProviderSpec};
use futures_util::StreamExt as _;
use http::header::{HeaderName, HeaderValue};
use reqwest::Url;

use super::classify::{self, Phase};
use super::endpoint::{ApiRoot, Endpoint, gemini_model};
use super::sse::{self, SseChunkStream};
use super::{ProviderBuildError, anthropic, gemini, openai};
use crate::http_client::{HttpClientSettings, build_http_client};

/// Largest error body read to classify a failure.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest complete (non-streaming) answer accepted.
const MAX_RESPONSE_BODY: usize = 32 * 1024 * 1024;

/// An HTTP provider adapter (OpenAI-compatible, Anthropic or Gemini).
pub struct HttpBackend {
    http: reqwest::Client,
    provider: ProviderName,
    protocol: Protocol,
    /// The credential header of each key, in `api_keys` order, marked sensitive.
    auth: Vec<(HeaderName, HeaderValue)>,
    /// Configured extra headers and protocol headers (`anthropic-version`), marked sensitive.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Every key, to scrub upstream messages that quote one.
    keys: Arc<[Secret]>,
}

impl core::fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HttpBackend")
            .field("provider", &self.provider)
            .field("kind", &self.kind())
            .field("keys", &self.auth.len())
            .finish_non_exhaustive()
    }
}

/// A request URL with its log-safe form (no query string, no credentials).
#[derive(Debug, Clone)]
struct Target {
    url: Url,
    shown: Box<str>,
}

impl Target {
    fn new(url: Url) -> Self {
        let shown = redact_url(&url).into();
        Self { url, shown }
    }
}

/// A URL as it may be logged: scheme, host, port and path; no query, fragment or user info.
pub fn redact_url(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}

enum Protocol {
    OpenAi { chat: Target, models: Target },
    Anthropic { messages: Target, models: Target },
    Gemini { root: ApiRoot, models: Target },
}

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl HttpBackend {
    /// Builds the adapter for an `openai`, `anthropic` or `gemini` provider.
    ///
    /// # Errors
    ///
    /// When the base URL, a header or a key is unusable, or the HTTP client cannot be built.
    pub fn from_spec(spec: &ProviderSpec) -> Result<Self, ProviderBuildError> {
        let provider = spec.name.clone();
        let bad_url = || ProviderBuildError::BaseUrl {
            provider: provider.clone(),
        };
        let root = ApiRoot::parse(&spec.base_url).ok_or_else(bad_url)?;
        let endpoint = |endpoint| root.url(endpoint, "").map(Target::new).ok_or_else(bad_url);
        let mut headers = Vec::new();
        let (protocol, key_header, bearer) = match spec.kind {
            ProviderKind::Anthropic => {
                headers.push((
                    HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_static(anthropic::API_VERSION),
                ));
                (
                    Protocol::Anthropic {
                        messages: endpoint(Endpoint::Messages)?,
                        models: endpoint(Endpoint::Models)?,
                    },
                    HeaderName::from_static("x-api-key"),
                    false,
                )
            }
            ProviderKind::Gemini => (
                Protocol::Gemini {
                    models: endpoint(Endpoint::Models)?,
                    root,
                },
                HeaderName::from_static("x-goog-api-key"),
                false,
            ),
            ProviderKind::Openai | ProviderKind::Mock => {
                let protocol = Protocol::OpenAi {
                    chat: endpoint(Endpoint::ChatCompletions)?,
                    models: endpoint(Endpoint::Models)?,
                };
                if root.is_azure() {
                    (protocol, HeaderName::from_static("api-key"), false)
                } else {
                    (protocol, http::header::AUTHORIZATION, true)
                }
            }
        };
        let auth = spec
            .api_keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let value = if bearer {
                    sensitive(&format!("Bearer {}", key.expose()))
                } else {
                    sensitive(key.expose())
                };
                value
                    .map(|v| (key_header.clone(), v))
                    .ok_or_else(|| ProviderBuildError::Key {
                        provider: provider.clone(),
                        index,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (name, value) in &spec.headers {
            let bad = || ProviderBuildError::Header {
                provider: provider.clone(),
                header: name.clone(),
            };
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
            let value = sensitive(value.expose()).ok_or_else(bad)?;
            headers.retain(|(existing, _)| *existing != name);
            headers.push((name, value));
        }
        let settings = HttpClientSettings {
            connect_timeout: spec.connect_timeout,
            request_timeout: spec.request_timeout,
            ..HttpClientSettings::default()
        };
        let http = build_http_client(&settings).map_err(|source| ProviderBuildError::Client {
            provider: provider.clone(),
            source,
        })?;
        Ok(Self {
            http,
            provider,
            protocol,
            auth,
            headers,
            keys: spec.api_keys.iter().cloned().collect(),
        })
    }

    /// The provider's kind.
    pub fn kind(&self) -> ProviderKind {
        match self.protocol {
            Protocol::OpenAi { .. } => ProviderKind::Openai,
            Protocol::Anthropic { .. } => ProviderKind::Anthropic,
            Protocol::Gemini { .. } => ProviderKind::Gemini,
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        endpoint: &Target,
        key_index: u16,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        let mut builder = self.http.request(method, endpoint.url.clone());
        if !self.auth.is_empty() {
            let Some((name, value)) = self.auth.get(usize::from(key_index)) else {
                return Err(UpstreamError::new(
                    ErrorClass::Auth,
                    format!("provider `{}` has no api key #{key_index}", self.provider),
                ));
            };
            builder = builder.header(name.clone(), value.clone());
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        Ok(builder)
    }

    /// Sends a request and returns the response when its status is a success; otherwise the
    /// classified error. Logs one line per attempt, with the URL stripped of its query.
    async fn send(
        &self,
        builder: reqwest::RequestBuilder,
        endpoint: &Target,
        instance: &InstanceId,
    ) -> Result<reqwest::Response, UpstreamError> {
        let started = tokio::time::Instant::now();
        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) => {
                let error = classify::transport_error(&e, Phase::Send);
                tracing::debug!(
                    provider = %self.provider,
                    %instance,
                    url = %endpoint.shown,
                    class = %error.class,
                    elapsed_ms = elapsed_ms(started),
                    "upstream request failed",
                );
                return Err(error);
            }
        };
        let status = response.status().as_u16();
        tracing::debug!(
            provider = %self.provider,
            %instance,
            url = %endpoint.shown,
            status,
            elapsed_ms = elapsed_ms(started),
            "upstream answered",
        );
        if response.status().is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = read_limited(response, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        Err(classify::status_error(status, &headers, &body, &self.keys))
    }

    fn chat_endpoint(&self, upstream_model: &str, stream: bool) -> Result<Target, UpstreamError> {
        match &self.protocol {
            Protocol::OpenAi { chat, .. } => Ok(chat.clone()),
            Protocol::Anthropic { messages, .. } => Ok(messages.clone()),
            Protocol::Gemini { root, .. } => gemini_model(upstream_model)
                .and_then(|model| {
                    let endpoint = if stream {
                        Endpoint::StreamGenerateContent
                    } else {
                        Endpoint::GenerateContent
                    };
                    root.url(endpoint, &model)
                })
                .map(Target::new)
                .ok_or_else(|| {
                    UpstreamError::new(
                        ErrorClass::InvalidRequest,
                        "the upstream model name cannot form a gemini url",
                    )
                }),
        }
    }

    fn body(&self, call: &Call<'_>, stream: bool) -> Result<Vec<u8>, UpstreamError> {
        match self.protocol {
            Protocol::OpenAi { .. } => {
                openai::request_body(call.upstream_model, call.request, stream)
            }
            Protocol::Anthropic { .. } => {
                anthropic::request_body(call.upstream_model, call.request, stream)
            }
            Protocol::Gemini { .. } => gemini::request_body(call.request),
        }
    }

    /// See [`ChatBackend::complete`](echelon_domain::ports::ChatBackend::complete).
    ///
    /// # Errors
    ///
    /// The classified failure of the attempt.
    pub async fn complete(&self, call: Call<'_>) -> Result<ChatResponse, UpstreamError> {
        let endpoint = self.chat_endpoint(call.upstream_model, false)?;
        let body = self.body(&call, false)?;
        let builder = self
            .request(reqwest::Method::POST, &endpoint, call.instance.key_index)?
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = self.send(builder, &endpoint, call.instance).await?;
        let body = read_limited(response, MAX_RESPONSE_BODY).await?;
        match self.protocol {
            Protocol::OpenAi { .. } => {
                openai::parse_response(&body, call.upstream_model, &self.keys)
            }
            Protocol::Anthropic { .. } => {
                anthropic::parse_response(&body, call.upstream_model, &self.keys)
            }
            Protocol::Gemini { .. } => {
                gemini::parse_response(&body, call.upstream_model, &self.keys)
            }
        }
    }

    /// See [`ChatBackend::stream`](echelon_domain::ports::ChatBackend::stream).
    ///
    /// # Errors
    ///
    /// The classified failure of the attempt, up to the response headers; later failures end
    /// the stream with an `Err` item.
    pub async fn stream(&self, call: Call<'_>) -> Result<ChunkStream, UpstreamError> {
        let endpoint = self.chat_endpoint(call.upstream_model, true)?;
        let body = self.body(&call, true)?;
        let builder = self
            .request(reqwest::Method::POST, &endpoint, call.instance.key_index)?
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "text/event-stream")
            .body(body);
        let response = self.send(builder, &endpoint, call.instance).await?;
        let is_event_stream = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if !is_event_stream {
            // Some servers answer a stream request with one JSON error and a 200.
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = read_limited(response, MAX_ERROR_BODY).await?;
            let mut error = classify::status_error(status, &headers, &body, &self.keys);
            if error.code.is_none() {
                error = UpstreamError::new(
                    ErrorClass::Connect,
                    "upstream answered a stream request without an event stream",
                )
                .with_status(status);
            }
            return Err(error);
        }
        let bytes: sse::ByteStream = Box::pin(
            response
                .bytes_stream()
                .map(|item| item.map_err(|e| classify::transport_error(&e, Phase::Body))),
        );
        let keys = Arc::clone(&self.keys);
        Ok(match self.protocol {
            Protocol::OpenAi { .. } => {
                Box::pin(SseChunkStream::new(bytes, openai::StreamDecoder::new(keys)))
            }
            Protocol::Anthropic { .. } => Box::pin(SseChunkStream::new(
                bytes,
                anthropic::StreamDecoder::new(keys),
            )),
            Protocol::Gemini { .. } => {
                Box::pin(SseChunkStream::new(bytes, gemini::StreamDecoder::new(keys)))
            }
        })
    }

    /// See [`ChatBackend::probe`](echelon_domain::ports::ChatBackend::probe): lists the
    /// provider's models, which costs nothing.
    ///
    /// # Errors
    ///
    /// The classified failure of the probe.
    pub async fn probe(&self, instance: &InstanceId) -> Result<(), UpstreamError> {
        let endpoint = match &self.protocol {
            Protocol::OpenAi { models, .. }
            | Protocol::Anthropic { models, .. }
            | Protocol::Gemini { models, .. } => models,
        };
        let builder = self.request(reqwest::Method::GET, endpoint, instance.key_index)?;
        let response = self.send(builder, endpoint, instance).await?;
        // Read (a bounded part of) the body so the connection goes back to the pool.
        read_limited(response, MAX_ERROR_BODY).await.map(drop)
    }
}

fn elapsed_ms(started: tokio::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Reads a body up to `limit` bytes. A longer body is an error for a complete answer; an error
/// body is simply cut, since its head is all classification needs.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, UpstreamError> {
    let expected = response
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(limit);
    // A body that arrives as one chunk (the usual case for a short answer) is returned as that
    // chunk, without a copy; only a second chunk starts the buffer.
    let mut whole: Option<Bytes> = None;
    let mut buffer = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if let Some(first) = whole.take() {
                    buffer.reserve(expected.max(first.len() + chunk.len()));
                    buffer.extend_from_slice(&first);
                } else if buffer.is_empty() && chunk.len() <= limit {
                    whole = Some(chunk);
                    continue;
                }
                let room = limit - buffer.len();
                if chunk.len() > room {
                    buffer.extend_from_slice(&chunk[..room]);
                    if limit == MAX_ERROR_BODY {
                        break;
                    }
                    return Err(UpstreamError::new(
                        ErrorClass::Server,
                        format!("upstream response larger than {limit} bytes"),
                    ));
                }
                buffer.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(classify::transport_error(&e, Phase::Body)),
        }
    }
    Ok(whole.unwrap_or_else(|| Bytes::from(buffer)))
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    use echelon_domain::name::ProviderName;

    use super::*;

    fn spec(kind: ProviderKind, base_url: &str) -> ProviderSpec {
        ProviderSpec {
            name: ProviderName::new("p"),
            kind,
            base_url: base_url.to_owned(),
            api_keys: vec![Secret::new("sk-test-0123456789")],
            headers: vec![("x-extra".into(), Secret::new("v"))],
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            mock: None,
        }
    }

    #[test]
    fn credential_header_per_kind() {
        let header = |kind, base: &str| {
            let backend = HttpBackend::from_spec(&spec(kind, base)).unwrap();
            let (name, value) = backend.auth[0].clone();
            assert!(value.is_sensitive());
            (name.as_str().to_owned(), value.to_str().unwrap().to_owned())
        };
        assert_eq!(
            header(ProviderKind::Openai, "https://api.openai.com/v1"),
            ("authorization".into(), "Bearer sk-test-0123456789".into())
        );
        assert_eq!(
            header(ProviderKind::Openai, "https://r.openai.azure.com/openai/v1"),
            ("api-key".into(), "sk-test-0123456789".into())
        );
        assert_eq!(
            header(ProviderKind::Anthropic, "https://api.anthropic.com/v1"),
            ("x-api-key".into(), "sk-test-0123456789".into())
        );
        assert_eq!(
            header(
                ProviderKind::Gemini,
                "https://generativelanguage.googleapis.com/v1beta"
            ),
            ("x-goog-api-key".into(), "sk-test-0123456789".into())
        );
    }

    #[test]
    fn bad_specs_are_refused_without_showing_values() {
        let mut bad = spec(ProviderKind::Openai, "https://api.openai.com/v1");
        bad.api_keys = vec![Secret::new("sk-bad\nkey")];
        let e = HttpBackend::from_spec(&bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "provider `p`: api key #0 contains characters not allowed in a header"
        );
        assert_eq!(e.provider().as_str(), "p");
        assert_eq!(
            e.reason(),
            "api key #0 contains characters not allowed in a header"
        );
        let e = HttpBackend::from_spec(&spec(ProviderKind::Openai, "nope")).unwrap_err();
        assert!(matches!(e, ProviderBuildError::BaseUrl { .. }));
        let backend =
            HttpBackend::from_spec(&spec(ProviderKind::Openai, "https://a.example/v1")).unwrap();
        assert!(!format!("{backend:?}").contains("sk-test"));
    }

    #[test]
    fn missing_key_index_is_an_auth_failure() {
        let backend =
            HttpBackend::from_spec(&spec(ProviderKind::Openai, "https://a.example/v1")).unwrap();
        let Protocol::OpenAi { chat, .. } = &backend.protocol else {
            unreachable!("an openai spec builds the openai protocol")
        };
        let e = backend.request(reqwest::Method::POST, chat, 3).unwrap_err();
        assert_eq!(e.class, ErrorClass::Auth);
    }
}
