//! Provider adapters: the [`ChatBackend`] port implemented over OpenAI, Anthropic, Gemini and the mock.
//!
//! [`ProviderClient::from_spec`] builds one client per configured provider; the key of each call
//! is chosen by [`InstanceId::key_index`](echelon_domain::name::InstanceId). The base URL is
//! the API root, version included; [`endpoint`] appends each endpoint's path to it.
//!
//! A query string in the base URL (Azure's `?api-version=…`) is kept on every request URL and
//! never logged. Keys travel only in headers: `Authorization: Bearer` for OpenAI-compatible
//! servers, `api-key` for Azure OpenAI (a host under `.openai.azure.com`,
//! `.cognitiveservices.azure.com` or `.services.ai.azure.com`), `x-api-key` for Anthropic and
//! `x-goog-api-key` for Gemini. A provider without keys sends no credential (local vLLM, Ollama).

pub mod anthropic;
pub mod classify;
pub mod endpoint;
pub mod gemini;
mod http;
pub mod mock;
pub mod openai;
pub mod retry_hint;
pub mod sse;

use echelon_domain::chat::{ChatResponse, StreamChunk};
use echelon_domain::error::UpstreamError;
use echelon_domain::name::{InstanceId, ProviderName};
use echelon_domain::ports::{Call, ChatBackend, ChunkStream};
use echelon_domain::spec::{ProviderKind, ProviderSpec};
use futures_core::Stream;

use crate::http_client::HttpClientError;

pub use self::http::HttpBackend;
pub use self::mock::MockBackend;

/// Building a provider client from its spec failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderBuildError {
    /// The base URL does not parse or is not http(s).
    #[error("provider `{provider}`: base url is not a valid http(s) url")]
    BaseUrl {
        /// The provider.
        provider: ProviderName,
    },
    /// A configured header has an invalid name or value (the value is never shown).
    #[error("provider `{provider}`: header `{header}` has an invalid name or value")]
    Header {
        /// The provider.
        provider: ProviderName,
        /// The header's name as configured.
        header: String,
    },
    /// An API key contains bytes that cannot go into an HTTP header.
    #[error("provider `{provider}`: api key #{index} contains characters not allowed in a header")]
    Key {
        /// The provider.
        provider: ProviderName,
        /// The key's index in `api_keys`.
        index: usize,
    },
    /// The HTTP client could not be built.
    #[error("provider `{provider}`: {source}")]
    Client {
        /// The provider.
        provider: ProviderName,
        /// Why.
        source: HttpClientError,
    },
}

impl ProviderBuildError {
    /// The provider at fault.
    pub fn provider(&self) -> &ProviderName {
        match self {
            Self::BaseUrl { provider }
            | Self::Header { provider, .. }
            | Self::Key { provider, .. }
            | Self::Client { provider, .. } => provider,
        }
    }

    /// What went wrong, without the provider's name, for callers that print it themselves.
    pub fn reason(&self) -> String {
        let full = self.to_string();
        let prefix = format!("provider `{}`: ", self.provider());
        full.strip_prefix(&prefix)
            .map_or_else(|| full.clone(), str::to_owned)
    }
}

/// A chat backend for one configured provider, of any kind.
///
/// Cheap to share behind an `Arc`; it holds one pooled HTTP client (or the mock's state).
#[derive(Debug)]
pub struct ProviderClient {
    inner: Inner,
}

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per configured provider, built once; boxing would only add an indirection per call"
)]
enum Inner {
    Http(HttpBackend),
    Mock(MockBackend),
}

impl ProviderClient {
    /// Builds the client for a provider: an HTTP adapter for `openai`, `anthropic` and `gemini`,
    /// the in-process mock for `mock`.
    ///
    /// # Errors
    ///
    /// When the base URL, a header or a key is unusable, or the HTTP client cannot be built.
    pub fn from_spec(spec: &ProviderSpec) -> Result<Self, ProviderBuildError> {
        let inner = match spec.kind {
            ProviderKind::Mock => Inner::Mock(MockBackend::from_spec(spec)),
            ProviderKind::Openai | ProviderKind::Anthropic | ProviderKind::Gemini => {
                Inner::Http(HttpBackend::from_spec(spec)?)
            }
        };
        Ok(Self { inner })
    }

    /// The provider's kind.
    pub fn kind(&self) -> ProviderKind {
        match &self.inner {
            Inner::Http(http) => http.kind(),
            Inner::Mock(_) => ProviderKind::Mock,
        }
    }
}

impl ChatBackend for ProviderClient {
    async fn complete(&self, call: Call<'_>) -> Result<ChatResponse, UpstreamError> {
        match &self.inner {
            Inner::Http(http) => http.complete(call).await,
            Inner::Mock(mock) => mock.complete(call).await,
        }
    }

    async fn stream(&self, call: Call<'_>) -> Result<ChunkStream, UpstreamError> {
        match &self.inner {
            Inner::Http(http) => http.stream(call).await,
            Inner::Mock(mock) => mock.stream(call).await,
        }
    }

    async fn probe(&self, instance: &InstanceId) -> Result<(), UpstreamError> {
        match &self.inner {
            Inner::Http(http) => http.probe(instance).await,
            Inner::Mock(mock) => mock.probe(instance).await,
        }
    }
}

/// Decodes an OpenAI, Anthropic or Gemini SSE body (as raw byte chunks, split anywhere) into
/// chat chunks, exactly as the adapters do with a live response. For replaying recorded streams.
///
/// The stream ends after the protocol's end marker, or with one `Err` item: a malformed event,
/// an upstream error event, or a cut.
/// A [`ProviderKind::Mock`] has no wire format and yields one `Err` item.
pub fn decode_sse<S>(kind: ProviderKind, body: S) -> ChunkStream
where
    S: Stream<Item = Result<bytes::Bytes, UpstreamError>> + Send + 'static,
{
    let body: sse::ByteStream = Box::pin(body);
    match kind {
        ProviderKind::Openai => Box::pin(sse::SseChunkStream::new(
            body,
            openai::StreamDecoder::new(std::sync::Arc::from([])),
        )),
        ProviderKind::Anthropic => Box::pin(sse::SseChunkStream::new(
            body,
            anthropic::StreamDecoder::new(std::sync::Arc::from([])),
        )),
        ProviderKind::Gemini => Box::pin(sse::SseChunkStream::new(
            body,
            gemini::StreamDecoder::new(std::sync::Arc::from([])),
        )),
        ProviderKind::Mock => {
            let error: Result<StreamChunk, UpstreamError> = Err(UpstreamError::new(
                echelon_domain::error::ErrorClass::InvalidRequest,
                "the mock provider has no wire format",
            ));
            Box::pin(futures_util::stream::iter([error]))
        }
    }
}

/// An image given as a `data:` URL with base64 content, split into media type and data.
pub(crate) struct DataUrl<'a> {
    pub media_type: &'a str,
    pub data: &'a str,
}

/// Splits `data:image/png;base64,AAAA`; anything else (an http URL, a non-base64 data URL) is
/// `None`.
pub(crate) fn data_url(url: &str) -> Option<DataUrl<'_>> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    (!media_type.is_empty()).then_some(DataUrl { media_type, data })
}
