//! Shared helpers of the integration tests: specs, calls, stream collection, a recording server.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use echelon_domain::chat::{ChatRequest, Message, Role, StreamChunk};
use echelon_domain::error::UpstreamError;
use echelon_domain::name::{InstanceId, ModelRef, ProviderName};
use echelon_domain::ports::{Call, ChatBackend as _, ChunkStream};
use echelon_domain::secret::Secret;
use echelon_domain::spec::{ProviderKind, ProviderSpec};
use echelon_infrastructure::provider::ProviderClient;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;

/// A key that must never show up anywhere.
pub const CANARY: &str = "sk-canary-7f3a9c1e5b2d4468";

pub fn spec(kind: ProviderKind, base_url: &str) -> ProviderSpec {
    ProviderSpec {
        name: ProviderName::new("upstream"),
        kind,
        base_url: base_url.to_owned(),
        api_keys: vec![Secret::new(CANARY)],
        headers: Vec::new(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(30),
        mock: None,
    }
}

pub fn client(kind: ProviderKind, base_url: &str) -> ProviderClient {
    ProviderClient::from_spec(&spec(kind, base_url)).unwrap()
}

pub fn instance() -> InstanceId {
    InstanceId::new(ModelRef::new("upstream", "model"), 0)
}

pub fn request(text: &str) -> ChatRequest {
    ChatRequest::new(vec![Message::text(Role::User, text)])
}

/// A complete call through the port.
pub async fn complete(
    client: &ProviderClient,
    model: &str,
    request: &ChatRequest,
) -> Result<echelon_domain::chat::ChatResponse, UpstreamError> {
    let id = instance();
    client
        .complete(Call {
            instance: &id,
            upstream_model: model,
            request,
        })
        .await
}

/// A streaming call through the port.
pub async fn stream(
    client: &ProviderClient,
    model: &str,
    request: &ChatRequest,
) -> Result<ChunkStream, UpstreamError> {
    let id = instance();
    client
        .stream(Call {
            instance: &id,
            upstream_model: model,
            request,
        })
        .await
}

/// Everything a stream yields: its chunks, and the error it ended with, if any.
#[derive(Debug)]
pub struct Collected {
    pub chunks: Vec<StreamChunk>,
    pub error: Option<UpstreamError>,
    pub items_after_error: usize,
}

impl Collected {
    pub fn text(&self) -> String {
        self.chunks
            .iter()
            .filter_map(|c| c.content.as_deref())
            .collect()
    }

    pub fn finish_chunks(&self) -> usize {
        self.chunks
            .iter()
            .filter(|c| c.finish_reason.is_some())
            .count()
    }
}

pub async fn collect(mut stream: ChunkStream) -> Collected {
    let mut out = Collected {
        chunks: Vec::new(),
        error: None,
        items_after_error: 0,
    };
    while let Some(item) = stream.next().await {
        match item {
            _ if out.error.is_some() => out.items_after_error += 1,
            Ok(chunk) => out.chunks.push(chunk),
            Err(e) => out.error = Some(e),
        }
    }
    out
}

/// Body bytes split into pieces of `size`, as a stream for `decode_sse`.
pub fn split_body(
    bytes: &[u8],
    size: usize,
) -> impl futures_core::Stream<Item = Result<Bytes, UpstreamError>> + Send + 'static {
    let pieces: Vec<_> = bytes
        .chunks(size.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(pieces)
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

/// One request as a recording server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A canned answer of the recording server.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Canned {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body,
        }
    }

    pub fn sse(body: Vec<u8>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type", "text/event-stream".to_owned())],
            body,
        }
    }
}

/// A tiny HTTP server that answers every request with one canned answer and records what it got.
pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub async fn start(canned: Canned) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                let canned = canned.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                            let record = Arc::clone(&record);
                            let canned = canned.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                record.lock().unwrap().push(Recorded {
                                    method: parts.method.to_string(),
                                    path_and_query: parts
                                        .uri
                                        .path_and_query()
                                        .map(ToString::to_string)
                                        .unwrap_or_default(),
                                    headers: parts.headers,
                                    body,
                                });
                                let mut response =
                                    hyper::Response::new(Full::new(Bytes::from(canned.body)));
                                *response.status_mut() =
                                    http::StatusCode::from_u16(canned.status).unwrap();
                                for (name, value) in canned.headers {
                                    response.headers_mut().insert(name, value.parse().unwrap());
                                }
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// The API root of a provider of `kind` served here, as echelon-config normalizes it.
    pub fn root(&self, kind: ProviderKind) -> String {
        let version = match kind {
            ProviderKind::Anthropic => "v1",
            ProviderKind::Gemini => "v1beta",
            ProviderKind::Openai | ProviderKind::Mock => "v1",
        };
        format!("http://{}/{version}", self.addr)
    }

    pub fn only(&self) -> Recorded {
        let seen = self.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "exactly one request expected");
        seen[0].clone()
    }
}

/// Every log line of this test binary, at TRACE level.
pub fn logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

/// Installs the binary-wide TRACE subscriber; every test calls it first.
///
/// A global subscriber installed before any event is hit is what makes capture reliable: a
/// per-test (thread-local) subscriber races with other test threads over tracing's cached
/// callsite interest, and can silently miss events.
pub fn init_tracing() {
    logs();
}

/// A tracing writer that keeps everything written, for asserting what logs contain.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
