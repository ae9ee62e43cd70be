//! `POST /v1/chat/completions` and `GET /v1/models`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use echelon_application::gateway::{ServeError, Served};
use echelon_application::stream::{ResponseStream, StreamEvent};
use echelon_domain::chat::{ExtraAt, StreamChunk};
use echelon_domain::error::ErrorClass;
use echelon_domain::plan::{RouteLabel, Verdict};
use echelon_infrastructure::metrics::{Metrics, UNKNOWN_ROUTE};
use futures_util::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use tokio::sync::watch;

use super::AppState;
use super::error::ApiError;
use crate::auth::Access;
use echelon_infrastructure::wire::openai::{self, DONE_EVENT};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn completion_id() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("chatcmpl-echelon-{:x}-{n:x}", unix_now())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks the client's bearer key.
pub(crate) fn authorize_client(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match state.keys.load().check_client(authorization) {
        Access::Granted => Ok(()),
        Access::Missing => Err(ApiError::unauthorized(true)),
        Access::Wrong => Err(ApiError::unauthorized(false)),
    }
}

/// Reads the body up to the configured limit.
async fn read_body(state: &AppState, request: Request) -> Result<Bytes, ApiError> {
    let limit = state.max_body_size;
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit
    {
        return Err(ApiError::too_large(limit));
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(request.into_body(), limit_usize)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(ApiError::too_large(limit)),
        Err(error) if super::server::is_body_read_timeout(&*error) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            "the request body did not arrive within the gateway's limit (server.body_read_timeout)",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "body_read_failed",
            "could not read the request body",
        )),
    }
}

/// `POST /v1/chat/completions`.
pub async fn completions(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let meter = Meter::start(&state.metrics);
    match serve(&state, request, meter).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Records one client request in the metrics exactly once, however it ends: by a call to
/// [`Meter::finish`], or — when the handler or the stream is dropped because the client went
/// away — as 499 `client_gone`.
struct Meter {
    metrics: Arc<Metrics>,
    started: std::time::Instant,
    route: Option<Arc<str>>,
    done: bool,
}

impl Meter {
    fn start(metrics: &Arc<Metrics>) -> Self {
        Self {
            metrics: Arc::clone(metrics),
            started: std::time::Instant::now(),
            route: None,
            done: false,
        }
    }

    fn finish(&mut self, status: u16, class: Option<ErrorClass>, ttft: Option<Duration>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let route = self.route.as_deref().unwrap_or(UNKNOWN_ROUTE);
        self.metrics
            .record_request(route, status, class, self.started.elapsed(), ttft);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish(499, Some(ErrorClass::ClientGone), None);
    }
}

/// The class a failed request is counted under.
fn failure_class(error: &ServeError) -> Option<ErrorClass> {
    match error {
        ServeError::UnknownModel(_) => None,
        ServeError::Failed(failed) => match &failed.verdict {
            Verdict::RateLimited { .. } => Some(ErrorClass::RateLimited),
            Verdict::Rejected(e) => Some(e.class),
            Verdict::Exhausted { last_error } | Verdict::RetryBudgetSpent { last_error } => {
                last_error.as_ref().map(|e| e.class)
            }
            Verdict::DeadlineExceeded => Some(ErrorClass::Timeout),
            Verdict::ClientGone => Some(ErrorClass::ClientGone),
            Verdict::Unavailable { .. } | Verdict::Served => None,
        },
    }
}

fn fail(meter: &mut Meter, error: ServeError) -> ApiError {
    if let ServeError::Failed(failed) = &error {
        meter.route = Some(Arc::clone(&failed.route_name));
    }
    let class = failure_class(&error);
    let error = ApiError::from(error);
    meter.finish(error.status.as_u16(), class, None);
    error
}

async fn serve(
    state: &Arc<AppState>,
    request: Request,
    mut meter: Meter,
) -> Result<Response, ApiError> {
    let rejected = |meter: &mut Meter, error: ApiError| {
        meter.finish(error.status.as_u16(), None, None);
        error
    };
    if state.draining.load(Ordering::Acquire) {
        return Err(rejected(&mut meter, ApiError::draining()));
    }
    if let Err(error) = authorize_client(state, request.headers()) {
        return Err(rejected(&mut meter, error));
    }
    let body = match read_body(state, request).await {
        Ok(body) => body,
        Err(error) => return Err(rejected(&mut meter, error)),
    };
    let parsed = match openai::parse_request(&body) {
        Ok(parsed) => parsed,
        Err(error) => return Err(rejected(&mut meter, error.into())),
    };
    drop(body);
    let id = completion_id();
    let created = unix_now();
    if parsed.request.stream {
        let served = match state.gateway.stream(&parsed.model, parsed.request).await {
            Ok(served) => served,
            Err(error) => return Err(fail(&mut meter, error)),
        };
        meter.route = Some(Arc::clone(&served.route_name));
        let ttft = meter.started.elapsed();
        let Served {
            value,
            route,
            model,
            attempts,
            ..
        } = served;
        let relay = Relay {
            phase: Phase::Streaming(Box::new(value)),
            id,
            model,
            created,
            include_usage: parsed.include_usage,
            started: false,
            stop: state.stop_streams.clone(),
            ttft,
            meter,
        };
        Ok(stream_response(relay, &route, attempts.len()))
    } else {
        let served = match state.gateway.complete(&parsed.model, parsed.request).await {
            Ok(served) => served,
            Err(error) => return Err(fail(&mut meter, error)),
        };
        meter.route = Some(Arc::clone(&served.route_name));
        let body = openai::render_response(&served.value, &id, created);
        let mut response = (StatusCode::OK, body).into_response();
        set_route_headers(&mut response, &served.route, served.attempts.len());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        meter.finish(200, None, None);
        Ok(response)
    }
}

/// `x-echelon-route` (the route label's header form) and `x-echelon-attempts`.
fn set_route_headers(response: &mut Response, route: &RouteLabel, attempts: usize) {
    let headers = response.headers_mut();
    // The header form is visible ASCII; the bytes move into the header value.
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(route.to_header())) {
        headers.insert("x-echelon-route", value);
    }
    headers.insert("x-echelon-attempts", HeaderValue::from(attempts));
}

enum Phase {
    Streaming(Box<ResponseStream>),
    Ended,
}

struct Relay {
    phase: Phase,
    id: String,
    model: Arc<str>,
    created: u64,
    include_usage: bool,
    /// Whether a chunk was rendered (the first one sets the stream's id).
    started: bool,
    stop: watch::Receiver<bool>,
    /// Time until the first content chunk was ready.
    ttft: Duration,
    meter: Meter,
}

/// Drops what the client did not ask for: usage (and the `"usage": null` an upstream asked
/// for it writes on every chunk), unless `stream_options.include_usage`.
fn visible(mut chunk: StreamChunk, include_usage: bool) -> Option<StreamChunk> {
    if !include_usage {
        chunk.extra.remove(ExtraAt::Answer, "usage");
        if chunk.usage.take().is_some() && !chunk.has_choice() {
            return None;
        }
    }
    Some(chunk)
}

impl Relay {
    /// The SSE events of one chunk. The first chunk's id and creation time become the whole
    /// stream's, so a translated stream (whose id comes once) keeps one id. A chunk that ends
    /// the choice and carries usage is sent as OpenAI sends it: the finish chunk, then a chunk
    /// with the usage and empty `choices`.
    fn render(&mut self, mut chunk: StreamChunk) -> Vec<u8> {
        if !self.started {
            self.started = true;
            if let Some(id) = &chunk.id {
                self.id.clone_from(id);
            }
            if let Some(created) = chunk.created {
                self.created = created;
            }
        }
        let split = chunk.finish_reason.is_some() && chunk.usage.is_some();
        let usage = if split { chunk.usage.take() } else { None };
        let mut out = openai::render_chunk_event(&chunk, &self.id, &self.model, self.created);
        if let Some(usage) = usage {
            let usage_chunk = StreamChunk {
                id: chunk.id,
                created: chunk.created,
                usage: Some(usage),
                extra: chunk
                    .extra
                    .only(|at| matches!(at, ExtraAt::Answer | ExtraAt::Usage)),
                ..StreamChunk::default()
            };
            out.extend(openai::render_chunk_event(
                &usage_chunk,
                &self.id,
                &self.model,
                self.created,
            ));
        }
        out
    }
}

/// The SSE response relaying `relay`'s stream; `route` and `attempts` fill the route headers.
fn stream_response(relay: Relay, route: &RouteLabel, attempts: usize) -> Response {
    let events = futures_util::stream::unfold(relay, |mut relay| async move {
        loop {
            let Phase::Streaming(stream) = &mut relay.phase else {
                return None;
            };
            let event = if *relay.stop.borrow() {
                None
            } else {
                tokio::select! {
                    event = stream.next() => Some(event),
                    _ = relay.stop.changed() => None,
                }
            };
            let bytes = match event {
                Some(Some(StreamEvent::Chunk(chunk))) => {
                    let Some(chunk) = visible(chunk, relay.include_usage) else {
                        continue;
                    };
                    relay.render(chunk)
                }
                Some(Some(StreamEvent::Failed(error))) => {
                    relay.phase = Phase::Ended;
                    let ttft = relay.ttft;
                    relay.meter.finish(200, Some(error.class), Some(ttft));
                    tracing::warn!(
                        class = error.class.as_str(),
                        "stream failed after its first token"
                    );
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream_error",
                        error.class.as_str(),
                        format!(
                            "the upstream failed mid-stream; the answer is incomplete: {}",
                            error.message
                        ),
                    )
                    .sse_event()
                }
                Some(None) => {
                    relay.phase = Phase::Ended;
                    let ttft = relay.ttft;
                    relay.meter.finish(200, None, Some(ttft));
                    DONE_EVENT.to_vec()
                }
                None => {
                    // Dropping the stream here cancels the upstream call and releases its permits.
                    relay.phase = Phase::Ended;
                    let ttft = relay.ttft;
                    relay.meter.finish(503, None, Some(ttft));
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        "shutting_down",
                        "the gateway shut down before the answer was complete",
                    )
                    .sse_event()
                }
            };
            return Some((Ok::<_, Infallible>(Bytes::from(bytes)), relay));
        }
    });
    let mut response = Response::new(Body::from_stream(events));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    set_route_headers(&mut response, route, attempts);
    response
}

#[derive(Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

/// `GET /v1/models`: every name a client can send as `model`.
pub async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(error) = authorize_client(&state, &headers) {
        return error.into_response();
    }
    let names = state.gateway.model_names();
    let list = ModelList {
        object: "list",
        data: names
            .iter()
            .map(|name| ModelEntry {
                id: name,
                object: "model",
                created: 0,
                owned_by: "echelon",
            })
            .collect(),
    };
    axum::Json(list).into_response()
}
