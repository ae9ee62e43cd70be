//! The fake upstream's answers: routing, fault decisions, and JSON and SSE bodies.

use core::sync::atomic::Ordering;
use core::time::Duration;
use std::io;
use std::time::SystemTime;

use bytes::Bytes;
use echelon_domain::random::Random as _;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::Deserialize;
use serde_json::json;

use super::faults::{Faults, RetryHint};
use super::{INVALID_REQUESTS, ResetSignal, State};
use echelon_domain::chat::{ChatResponse, FinishReason, Message, Role, StreamChunk, Usage};
use echelon_infrastructure::provider::mock::{estimate_tokens, split_words};
use echelon_infrastructure::wire::openai::{self, ErrorBody};

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Most content chunks of a default (one a word) split.
const MAX_DEFAULT_CHUNKS: usize = 64;

const FALLBACK_REPLY: &str = "Hello from the echelon fake upstream.";

pub(super) async fn handle(
    state: &State,
    reset: &ResetSignal,
    request: hyper::Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    if request.method() == Method::POST
        && let Some(route) = gemini_route(&path)
    {
        return chat(state, reset, request, route).await;
    }
    match (request.method(), path.as_str()) {
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => {
            chat(state, reset, request, Route::openai()).await
        }
        (&Method::POST, "/v1/messages" | "/messages") => {
            chat(state, reset, request, Route::anthropic()).await
        }
        (&Method::GET, "/v1/models" | "/models") => models(state, reset).await,
        (_, "/v1/chat/completions" | "/chat/completions" | "/v1/models" | "/models") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            "invalid_request_error",
            None,
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "no such route on the fake upstream",
            "invalid_request_error",
            None,
        ),
    }
}

/// The wire format a request came in, and so the one its answer goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// OpenAI chat completions.
    Openai,
    /// Anthropic messages.
    Anthropic,
    /// Gemini `generateContent` (the model and the streaming mode are in the path).
    Gemini,
}

/// What the path says about a request.
struct Route {
    dialect: Dialect,
    /// Gemini: the model and whether the path asks for a stream.
    path_model: Option<(String, bool)>,
}

impl Route {
    fn openai() -> Self {
        Self {
            dialect: Dialect::Openai,
            path_model: None,
        }
    }

    fn anthropic() -> Self {
        Self {
            dialect: Dialect::Anthropic,
            path_model: None,
        }
    }
}

/// `…/models/{model}:generateContent` or `…/models/{model}:streamGenerateContent`.
fn gemini_route(path: &str) -> Option<Route> {
    let (_, rest) = path.split_once("/models/")?;
    let (model, method) = rest.rsplit_once(':')?;
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    // Gemini model names cannot hold `+`: there `__` joins the fault tokens.
    (!model.is_empty() && !model.contains('/')).then(|| Route {
        dialect: Dialect::Gemini,
        path_model: Some((model.replace("__", "+"), stream)),
    })
}

/// A chat request in any dialect, reduced to what the fake needs.
#[derive(Deserialize)]
struct ChatIn {
    #[serde(default)]
    model: String,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    messages: Vec<MessageIn>,
    /// Gemini's turns.
    #[serde(default)]
    contents: Vec<GeminiTurn>,
}

#[derive(Deserialize)]
struct GeminiTurn {
    #[serde(default)]
    role: String,
    #[serde(default)]
    parts: Vec<serde_json::Value>,
}

impl ChatIn {
    /// The conversation as (role, text) pairs, roles in OpenAI's names.
    fn turns(&self) -> Vec<(String, String)> {
        if !self.contents.is_empty() {
            return self
                .contents
                .iter()
                .map(|t| {
                    let role = if t.role == "model" {
                        "assistant"
                    } else {
                        "user"
                    };
                    let text = text_of(Some(&serde_json::Value::Array(t.parts.clone())));
                    (role.to_owned(), text)
                })
                .collect();
        }
        self.messages
            .iter()
            .map(|m| (m.role.clone(), text_of(m.content.as_ref())))
            .collect()
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct MessageIn {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: Option<serde_json::Value>,
}

fn text_of(content: Option<&serde_json::Value>) -> String {
    match content {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(serde_json::Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The credential a request carried, as an upstream that quotes it would see it.
fn credential(headers: &http::HeaderMap) -> String {
    for name in ["authorization", "api-key", "x-api-key", "x-goog-api-key"] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            return value.strip_prefix("Bearer ").unwrap_or(value).to_owned();
        }
    }
    String::new()
}

async fn chat(
    state: &State,
    reset: &ResetSignal,
    request: hyper::Request<Incoming>,
    route: Route,
) -> Response<Body> {
    let credential = credential(request.headers());
    let body = match Limited::new(request.into_body(), state.options.max_body_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            state.count(INVALID_REQUESTS);
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
                "invalid_request_error",
                None,
            );
        }
    };
    let Ok(mut chat) = serde_json::from_slice::<ChatIn>(&body) else {
        state.count(INVALID_REQUESTS);
        return error(
            StatusCode::BAD_REQUEST,
            "request body is not a chat completion request",
            "invalid_request_error",
            None,
        );
    };
    if let Some((model, stream)) = route.path_model {
        chat.model = model;
        chat.stream = stream;
    }
    if chat.model.is_empty() {
        state.count(INVALID_REQUESTS);
        return error(
            StatusCode::BAD_REQUEST,
            "request names no model",
            "invalid_request_error",
            None,
        );
    }
    let nth = state.count(&chat.model);
    *state.last_request.lock().unwrap_or_else(|p| p.into_inner()) = Some(body);
    let faults = state
        .options
        .faults
        .overridden_by(&Faults::from_model(&chat.model));
    if let Some(failure) = failure(state, reset, &faults, nth, &chat.model, &credential).await {
        return failure;
    }
    let turns = chat.turns();
    // A final assistant message is a prefill: the answer continues it.
    let prefill = match turns.last() {
        Some((role, text)) if role == "assistant" => Some(text.as_str()),
        _ => None,
    };
    if prefill.is_some() && faults.refuse_prefill {
        return error(
            StatusCode::BAD_REQUEST,
            "this model does not support a final assistant message",
            "invalid_request_error",
            None,
        );
    }
    let full = state.options.reply.clone().unwrap_or_else(|| {
        turns
            .iter()
            .rev()
            .find(|(role, _)| role == "user")
            .map(|(_, text)| text.clone())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| FALLBACK_REPLY.to_owned())
    });
    let reply = match prefill {
        Some(prefix) => full.strip_prefix(prefix).unwrap_or(&full).to_owned(),
        None => full,
    };
    let prompt: String = turns.iter().map(|(_, text)| text.as_str()).collect();
    let answer = Answer {
        id: format!(
            "chatcmpl-fake-{}",
            state.next_id.fetch_add(1, Ordering::Relaxed)
        ),
        model: chat.model,
        prompt_tokens: estimate_tokens(&prompt).max(1),
        reply,
        dialect: route.dialect,
    };
    if chat.stream {
        // Anthropic and Gemini streams always carry their usage.
        let include_usage = route.dialect != Dialect::Openai
            || chat.stream_options.is_some_and(|o| o.include_usage);
        stream_answer(&answer, &faults, include_usage, state.options.max_hang)
    } else {
        json_answer(&answer, &faults, state.options.max_hang).await
    }
}

async fn models(state: &State, reset: &ResetSignal) -> Response<Body> {
    let nth = state.model_lists.fetch_add(1, Ordering::Relaxed) + 1;
    let faults = &state.options.faults;
    if let Some(failure) = failure(state, reset, faults, nth, "", "").await {
        return failure;
    }
    let body = json!({
        "object": "list",
        "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "echelon"}]
    });
    json_response(StatusCode::OK, &body)
}

/// The failure faults, in their documented order; `None` when the request is to be answered.
async fn failure(
    state: &State,
    reset: &ResetSignal,
    faults: &Faults,
    nth: u64,
    model: &str,
    credential: &str,
) -> Option<Response<Body>> {
    if let Some(latency) = faults.latency {
        tokio::time::sleep(latency).await;
    }
    if faults.hang {
        tokio::time::sleep(state.options.max_hang).await;
        return Some(error(
            StatusCode::GATEWAY_TIMEOUT,
            "fake upstream hang limit reached",
            "server_error",
            None,
        ));
    }
    if faults.reset {
        reset.trigger();
        // The connection task drops the socket now; this answer is never sent.
        tokio::time::sleep(state.options.max_hang).await;
        return Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reset",
            "server_error",
            None,
        ));
    }
    if let Some(down_for) = faults.fail_for
        && state.started.elapsed() < down_for
    {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "fake upstream is down for now",
            "server_error",
            Some("server_error"),
        ));
    }
    if let Some(first) = faults.fail_first
        && nth <= u64::from(first)
    {
        return Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fake upstream fails this request",
            "server_error",
            Some("server_error"),
        ));
    }
    if let Some(percent) = faults.error_rate
        && state.rng.below(100) < u64::from(percent)
    {
        return Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fake upstream injected a failure",
            "server_error",
            Some("server_error"),
        ));
    }
    if let Some((limit, window)) = faults.quota
        && let Err(left) = state.take_quota(model, limit, window)
    {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "fake upstream quota spent for this window",
            "requests",
            Some("rate_limit_exceeded"),
        );
        let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        add_retry_hint(&mut response, RetryHint::Seconds(seconds.max(1)));
        return Some(response);
    }
    if let Some(status) = faults.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (kind, code) = match status.as_u16() {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            403 => ("invalid_request_error", None),
            429 => ("requests", Some("rate_limit_exceeded")),
            529 => ("overloaded_error", Some("overloaded_error")),
            400..=499 => ("invalid_request_error", None),
            _ => ("server_error", Some("server_error")),
        };
        let mut response = error(
            status,
            "fake upstream answers with an error status",
            kind,
            code,
        );
        if let Some(hint) = faults.retry_hint {
            add_retry_hint(&mut response, hint);
        }
        return Some(response);
    }
    if faults.context_length {
        let body = json!({"error": {
            "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}});
        return Some(json_response(StatusCode::BAD_REQUEST, &body));
    }
    if faults.content_filter {
        let body = json!({"error": {
            "message": "The response was filtered due to the prompt triggering the content management policy.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400}});
        return Some(json_response(StatusCode::BAD_REQUEST, &body));
    }
    if faults.leak_key {
        let body = json!({"error": {
            "message": format!("Incorrect API key provided: {credential}. You can find your API key in your account."),
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
        return Some(json_response(StatusCode::UNAUTHORIZED, &body));
    }
    None
}

fn add_retry_hint(response: &mut Response<Body>, hint: RetryHint) {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    match hint {
        RetryHint::Seconds(s) => set("retry-after", s.to_string()),
        RetryHint::Millis(ms) => set("retry-after-ms", ms.to_string()),
        RetryHint::Date(s) => set(
            "retry-after",
            httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(s)),
        ),
        RetryHint::Reset(d) => {
            set("x-ratelimit-reset-requests", format!("{}ms", d.as_millis()));
            set("x-ratelimit-remaining-requests", "0".to_owned());
        }
    }
}

fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response<Body> {
    let body = ErrorBody {
        message,
        kind,
        param: None,
        code,
    };
    json_bytes(status, Bytes::from(body.to_json()))
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    json_bytes(
        status,
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
    )
}

fn json_bytes(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut response = Response::new(
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

struct Answer {
    id: String,
    model: String,
    prompt_tokens: u32,
    reply: String,
    dialect: Dialect,
}

impl Answer {
    fn completion_tokens(&self) -> u32 {
        estimate_tokens(&self.reply)
    }

    fn usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, self.completion_tokens())
    }

    /// The complete answer, in the OpenAI wire format the gateway's edge writes too.
    fn body(&self) -> Bytes {
        let mut response = ChatResponse::new(
            self.model.as_str().into(),
            Message::text(Role::Assistant, self.reply.as_str()),
        );
        response.created = Some(0);
        response.finish_reason = Some(FinishReason::Stop);
        response.usage = Some(self.usage());
        Bytes::from(openai::render_response(&response, &self.id, 0))
    }

    fn gemini_usage(&self) -> serde_json::Value {
        let completion = self.completion_tokens();
        json!({
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": completion,
            "totalTokenCount": self.prompt_tokens + completion,
        })
    }

    fn pieces(&self, faults: &Faults) -> Vec<String> {
        match faults.chunks {
            Some(n) => split_chars(&self.reply, n as usize),
            None => split_words(
                &self.reply,
                MAX_DEFAULT_CHUNKS.min(self.reply.split_whitespace().count().max(1)),
            )
            .map(str::to_owned)
            .collect(),
        }
    }

    /// One chunk event; a chunk with neither role, content nor finish reason is the usage
    /// chunk (empty `choices`).
    fn chunk(&self, chunk: &StreamChunk) -> Bytes {
        Bytes::from(openai::render_chunk_event(chunk, &self.id, &self.model, 0))
    }

    fn gemini_chunk(&self, text: &str, finish: Option<&str>) -> Bytes {
        let mut candidate =
            json!({"content": {"role": "model", "parts": [{"text": text}]}, "index": 0});
        let mut chunk = json!({"modelVersion": self.model, "responseId": self.id});
        if let Some(reason) = finish {
            candidate["finishReason"] = json!(reason);
            chunk["usageMetadata"] = self.gemini_usage();
        }
        chunk["candidates"] = json!([candidate]);
        sse(&chunk.to_string())
    }

    /// What a stream sends before its first content piece.
    fn stream_start(&self) -> Vec<Bytes> {
        match self.dialect {
            Dialect::Openai => vec![self.chunk(&StreamChunk {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                ..StreamChunk::default()
            })],
            Dialect::Anthropic => vec![
                event(
                    "message_start",
                    &json!({"type": "message_start", "message": {
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null,
                    "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 1}}}),
                ),
                event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ),
            ],
            Dialect::Gemini => Vec::new(),
        }
    }

    /// One content piece of a stream.
    fn stream_piece(&self, piece: &str) -> Bytes {
        match self.dialect {
            Dialect::Openai => self.chunk(&StreamChunk {
                content: Some(piece.to_owned()),
                ..StreamChunk::default()
            }),
            Dialect::Anthropic => event(
                "content_block_delta",
                &json!({"type": "content_block_delta",
                "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            ),
            Dialect::Gemini => self.gemini_chunk(piece, None),
        }
    }

    /// The final chunks of a complete stream, without the end marker.
    fn stream_finish(&self, include_usage: bool) -> Vec<Bytes> {
        match self.dialect {
            Dialect::Openai => {
                let mut out = vec![self.chunk(&StreamChunk {
                    finish_reason: Some(FinishReason::Stop),
                    ..StreamChunk::default()
                })];
                if include_usage {
                    out.push(self.chunk(&StreamChunk {
                        usage: Some(self.usage()),
                        ..StreamChunk::default()
                    }));
                }
                out
            }
            Dialect::Anthropic => vec![
                event(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": 0}),
                ),
                event(
                    "message_delta",
                    &json!({"type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                    "usage": {"output_tokens": self.completion_tokens()}}),
                ),
            ],
            Dialect::Gemini => vec![self.gemini_chunk("", Some("STOP"))],
        }
    }

    /// The protocol's end marker; Gemini streams have none.
    fn stream_end(&self) -> Option<Bytes> {
        match self.dialect {
            Dialect::Openai => Some(sse("[DONE]")),
            Dialect::Anthropic => Some(event("message_stop", &json!({"type": "message_stop"}))),
            Dialect::Gemini => None,
        }
    }

    /// An error event in the middle of a stream.
    fn stream_error(&self) -> Bytes {
        let message = "the fake upstream failed mid-stream";
        match self.dialect {
            Dialect::Openai => sse(&json!({"error": {"message": message, "type": "server_error", "param": null, "code": "server_error"}}).to_string()),
            Dialect::Anthropic => event("error", &json!({"type": "error", "error": {"type": "api_error", "message": message}})),
            Dialect::Gemini => sse(&json!({"error": {"code": 500, "message": message, "status": "INTERNAL"}}).to_string()),
        }
    }

    /// A chunk that is not JSON.
    fn stream_malformed(&self) -> Bytes {
        let bytes = sse(r#"{"id": "chatcmpl-fake", "choices": [{"delta": {"content": "#);
        match self.dialect {
            Dialect::Anthropic => {
                let mut out = b"event: content_block_delta\n".to_vec();
                out.extend_from_slice(&bytes);
                Bytes::from(out)
            }
            Dialect::Openai | Dialect::Gemini => bytes,
        }
    }

    /// The whole answer as one JSON body.
    fn json_body(&self) -> Bytes {
        let body = match self.dialect {
            Dialect::Openai => return self.body(),
            Dialect::Anthropic => json!({
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [{"type": "text", "text": self.reply}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": self.prompt_tokens, "output_tokens": self.completion_tokens()},
            }),
            Dialect::Gemini => json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": self.reply}]},
                    "finishReason": "STOP", "index": 0}],
                "usageMetadata": self.gemini_usage(),
                "modelVersion": self.model, "responseId": self.id,
            }),
        };
        Bytes::from(body.to_string())
    }
}

/// An SSE event with a type, as Anthropic sends them.
fn event(kind: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// Splits a text into `n` pieces of about equal length, at character boundaries.
fn split_chars(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.clamp(1, chars.len().max(1));
    let per = chars.len().div_ceil(n).max(1);
    chars.chunks(per).map(|c| c.iter().collect()).collect()
}

fn sse(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// One step of a body's delivery.
enum Step {
    Send(Bytes),
    Sleep(Duration),
    /// Stop sending for this long, then abort.
    Stall(Duration),
    /// Abort the connection mid-body. hyper drops bytes it has not written yet when a body
    /// fails, so the plan pauses first: what was "sent" before a cut really reaches the client.
    Cut,
}

/// How long a cut waits for hyper to flush what came before it.
const FLUSH_PAUSE: Duration = Duration::from_millis(1);

fn planned_body(steps: Vec<Step>) -> Body {
    let frames = futures_util::stream::unfold(steps.into_iter(), |mut steps| async move {
        loop {
            match steps.next()? {
                Step::Send(bytes) => return Some((Ok(Frame::data(bytes)), steps)),
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Stall(d) => {
                    tokio::time::sleep(d).await;
                    return Some((
                        Err(io::Error::other("fake upstream stall limit reached")),
                        steps,
                    ));
                }
                Step::Cut => {
                    tokio::time::sleep(FLUSH_PAUSE).await;
                    return Some((
                        Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "fake upstream cut the stream",
                        )),
                        steps,
                    ));
                }
            }
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

fn with_type(body: Body, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn json_answer(answer: &Answer, faults: &Faults, max_hang: Duration) -> Response<Body> {
    if let Some(delay) = faults.first_token_delay {
        tokio::time::sleep(delay).await;
    }
    let bytes = answer.json_body();
    let half = bytes.slice(..bytes.len() / 2);
    let steps = if faults.cut_after.is_some() {
        vec![Step::Send(half), Step::Cut]
    } else if faults.stall_after.is_some() {
        vec![Step::Send(half), Step::Stall(max_hang)]
    } else if faults.malformed_after.is_some() {
        vec![Step::Send(half)]
    } else {
        return json_bytes(StatusCode::OK, bytes);
    };
    with_type(planned_body(steps), "application/json")
}

fn stream_answer(
    answer: &Answer,
    faults: &Faults,
    include_usage: bool,
    max_hang: Duration,
) -> Response<Body> {
    let mut steps = Vec::new();
    if let Some(delay) = faults.first_token_delay {
        steps.push(Step::Sleep(delay));
    }
    steps.extend(answer.stream_start().into_iter().map(Step::Send));
    let pieces = answer.pieces(faults);
    let interrupt = |sent: usize, steps: &mut Vec<Step>| -> bool {
        let at = |n: Option<u32>| n.is_some_and(|n| n as usize == sent);
        if at(faults.cut_after) {
            steps.push(Step::Cut);
            return true;
        }
        if at(faults.end_after) {
            return true;
        }
        if at(faults.stall_after) {
            steps.push(Step::Stall(max_hang));
            return true;
        }
        if at(faults.error_after) {
            steps.push(Step::Send(answer.stream_error()));
            return true;
        }
        if at(faults.malformed_after) {
            steps.push(Step::Send(answer.stream_malformed()));
        }
        false
    };
    for (sent, piece) in pieces.iter().enumerate() {
        if interrupt(sent, &mut steps) {
            return with_sse(planned_body(steps));
        }
        if sent > 0
            && let Some(delay) = faults.chunk_delay
        {
            steps.push(Step::Sleep(delay));
        }
        steps.push(Step::Send(answer.stream_piece(piece)));
    }
    if interrupt(pieces.len(), &mut steps) {
        return with_sse(planned_body(steps));
    }
    steps.extend(
        answer
            .stream_finish(include_usage)
            .into_iter()
            .map(Step::Send),
    );
    if !faults.no_done {
        steps.extend(answer.stream_end().map(Step::Send));
    }
    with_sse(planned_body(steps))
}

fn with_sse(body: Body) -> Response<Body> {
    let mut response = with_type(body, "text/event-stream");
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_split_gives_the_asked_number_of_pieces() {
        assert_eq!(split_chars("abcdefgh", 4), ["ab", "cd", "ef", "gh"]);
        assert_eq!(split_chars("abc", 5).len(), 3);
        assert_eq!(split_chars("", 3), Vec::<String>::new());
        assert_eq!(split_chars("héllo wörld", 3).concat(), "héllo wörld");
    }
}
