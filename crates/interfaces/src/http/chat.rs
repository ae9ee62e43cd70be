//! `POST /v1/chat/completions` and `GET /v1/models`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use echelon_application::gateway::Served;
use echelon_application::stream::{ResponseStream, StreamEvent};
use echelon_domain::chat::StreamChunk;
use futures_util::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use tokio::sync::watch;

use super::AppState;
use super::error::ApiError;
use crate::auth::Access;
use crate::openai::{self, DONE_EVENT};

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
    match serve(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn serve(state: &Arc<AppState>, request: Request) -> Result<Response, ApiError> {
    if state.draining.load(Ordering::Acquire) {
        return Err(ApiError::draining());
    }
    authorize_client(state, request.headers())?;
    let body = read_body(state, request).await?;
    let parsed = openai::parse_request(&body)?;
    drop(body);
    let id = completion_id();
    let created = unix_now();
    if parsed.request.stream {
        let served = state.gateway.stream(&parsed.model, parsed.request).await?;
        Ok(stream_response(
            served,
            id,
            created,
            parsed.include_usage,
            state.stop_streams.clone(),
        ))
    } else {
        let served = state
            .gateway
            .complete(&parsed.model, parsed.request)
            .await?;
        let body = openai::render_response(&served.value, &id, created);
        let mut response = (StatusCode::OK, body).into_response();
        set_route_headers(&mut response, &served.route, served.attempts.len());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}

/// `x-echelon-route` and `x-echelon-attempts`. Header values stay ASCII: the `›` separator of
/// labels is written as `>`.
fn set_route_headers(response: &mut Response, route: &str, attempts: usize) {
    let ascii: String = route
        .chars()
        .map(|c| if c == '›' { '>' } else { c })
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .collect();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&ascii) {
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
    stop: watch::Receiver<bool>,
}

/// Drops what the client did not ask for: usage, unless `stream_options.include_usage`.
fn visible(mut chunk: StreamChunk, include_usage: bool) -> Option<StreamChunk> {
    if !include_usage && chunk.usage.take().is_some() {
        let empty = !chunk.has_content() && chunk.role.is_none() && chunk.finish_reason.is_none();
        if empty {
            return None;
        }
    }
    Some(chunk)
}

fn stream_response(
    served: Served<ResponseStream>,
    id: String,
    created: u64,
    include_usage: bool,
    stop: watch::Receiver<bool>,
) -> Response {
    let Served {
        value,
        route,
        model,
        attempts,
    } = served;
    let relay = Relay {
        phase: Phase::Streaming(Box::new(value)),
        id,
        model,
        created,
        include_usage,
        stop,
    };
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
                    openai::render_chunk_event(&chunk, &relay.id, &relay.model, relay.created)
                }
                Some(Some(StreamEvent::Failed(error))) => {
                    relay.phase = Phase::Ended;
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
                    DONE_EVENT.to_vec()
                }
                None => {
                    // Dropping the stream here cancels the upstream call and releases its permits.
                    relay.phase = Phase::Ended;
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
    set_route_headers(&mut response, &route, attempts.len());
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
