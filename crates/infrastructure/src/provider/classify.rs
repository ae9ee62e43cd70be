//! Failure classification: HTTP status, provider error codes and transport errors to [`ErrorClass`].
//!
//! Classification reads only structured facts: the status, the provider's machine-readable error
//! code (`error.code`, `error.type`, Gemini's `error.status`) and headers. It never searches an
//! error message's text. Messages are kept for people only, truncated, and scrubbed of the
//! provider's keys, because some upstreams quote the credential they rejected.

use std::time::SystemTime;

use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::secret::Secret;
use http::HeaderMap;
use serde::Deserialize;

use super::retry_hint;

/// Longest provider message kept in an error, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 300;

/// The class an HTTP status means when the body gives no more specific code.
pub fn class_for_status(status: u16) -> ErrorClass {
    match status {
        // 402: out of credit. Like a revoked key, this key cannot serve until someone acts.
        401..=403 => ErrorClass::Auth,
        408 | 504 => ErrorClass::Timeout,
        429 => ErrorClass::RateLimited,
        529 => ErrorClass::Overloaded,
        // A model unknown to this upstream is a configuration problem of this target, not of the
        // request: another target may serve it.
        404 => ErrorClass::Server,
        400..=499 => ErrorClass::InvalidRequest,
        _ => ErrorClass::Server,
    }
}

/// The class a provider's error code means, for codes that say more than the status.
///
/// One table for every provider: OpenAI `code`/`type`, Anthropic `error.type`, Gemini `status`.
pub fn class_for_code(code: &str) -> Option<ErrorClass> {
    Some(match code {
        "context_length_exceeded" => ErrorClass::ContextLength,
        "content_filter" | "content_policy_violation" | "content_filtered" => {
            ErrorClass::ContentFilter
        }
        "rate_limit_exceeded"
        | "rate_limit_error"
        | "insufficient_quota"
        | "RESOURCE_EXHAUSTED" => ErrorClass::RateLimited,
        "overloaded_error" => ErrorClass::Overloaded,
        "invalid_api_key"
        | "authentication_error"
        | "permission_error"
        | "billing_error"
        | "UNAUTHENTICATED"
        | "PERMISSION_DENIED"
        | "API_KEY_INVALID" => ErrorClass::Auth,
        "server_error" | "api_error" | "INTERNAL" | "UNKNOWN" | "UNAVAILABLE" => ErrorClass::Server,
        "DEADLINE_EXCEEDED" => ErrorClass::Timeout,
        _ => return None,
    })
}

/// A provider error body, in any of the shapes the supported APIs use:
/// `{"error": {"message", "type", "code"}}` (OpenAI), `{"type": "error", "error": {"type",
/// "message"}}` (Anthropic), `{"error": {"code": 429, "message", "status", "details"}}` (Gemini,
/// sometimes wrapped in an array), `{"error": "text"}` (Ollama) and `{"message", "type", "code"}`
/// (vLLM).
#[derive(Debug, Default, Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    error: Option<ErrorField>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<Code>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Detailed(ErrorDetail),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<Code>,
    /// Gemini's canonical status name; some servers put the HTTP status number here instead.
    #[serde(default)]
    status: Option<Code>,
    #[serde(default)]
    details: Vec<GoogleDetail>,
}

/// Codes are strings at OpenAI and Anthropic, numbers at Gemini and some compatible servers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Code {
    Text(String),
    // Numbers repeat the HTTP status, which is already known; kept only to accept the shape.
    Number(#[allow(dead_code)] serde_json::Number),
}

#[derive(Debug, Deserialize)]
struct GoogleDetail {
    #[serde(default, rename = "@type")]
    kind: String,
    #[serde(default, rename = "retryDelay")]
    retry_delay: Option<String>,
    /// `google.rpc.ErrorInfo.reason`, e.g. `API_KEY_INVALID` under a 400 `INVALID_ARGUMENT`.
    #[serde(default)]
    reason: Option<String>,
}

impl Code {
    fn text(&self) -> Option<&str> {
        match self {
            Self::Text(t) if !t.is_empty() => Some(t),
            _ => None,
        }
    }
}

/// The facts of a provider error body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ProviderError {
    /// Candidate codes, most specific first: `code`, Gemini's `status`, `type`.
    pub codes: Vec<String>,
    /// The provider's message.
    pub message: Option<String>,
    /// Google's `RetryInfo.retryDelay`.
    pub retry_delay: Option<String>,
}

impl ProviderError {
    /// Reads an error body; anything unreadable gives an empty result.
    pub fn parse(body: &[u8]) -> Self {
        // A derived struct also accepts a JSON array (as positional fields), so the shape is
        // chosen by the first byte rather than by trying one and then the other.
        let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let envelope = if is_array {
            serde_json::from_slice::<Vec<ErrorEnvelope>>(body)
                .ok()
                .and_then(|list| list.into_iter().next())
        } else {
            serde_json::from_slice::<ErrorEnvelope>(body).ok()
        };
        let Some(envelope) = envelope else {
            return Self::default();
        };
        Self::from_envelope(envelope)
    }

    fn from_envelope(envelope: ErrorEnvelope) -> Self {
        let mut out = Self::default();
        match envelope.error {
            Some(ErrorField::Detailed(detail)) => {
                out.codes.extend(
                    detail
                        .details
                        .iter()
                        .filter(|d| d.kind.ends_with("google.rpc.ErrorInfo"))
                        .filter_map(|d| d.reason.clone()),
                );
                out.codes
                    .extend(detail.code.as_ref().and_then(Code::text).map(str::to_owned));
                out.codes.extend(
                    detail
                        .status
                        .as_ref()
                        .and_then(Code::text)
                        .map(str::to_owned),
                );
                out.codes.extend(detail.kind);
                out.message = detail.message;
                out.retry_delay = detail
                    .details
                    .into_iter()
                    .find(|d| d.kind.ends_with("google.rpc.RetryInfo"))
                    .and_then(|d| d.retry_delay);
            }
            Some(ErrorField::Text(text)) => out.message = Some(text),
            None => {}
        }
        out.codes.extend(
            envelope
                .code
                .as_ref()
                .and_then(Code::text)
                .map(str::to_owned),
        );
        out.codes.extend(envelope.kind.filter(|k| k != "error"));
        if out.message.is_none() {
            out.message = envelope.message;
        }
        out
    }

    /// The first code that the table knows, or the first code at all.
    fn decisive_code(&self) -> (Option<ErrorClass>, Option<&str>) {
        for code in &self.codes {
            if let Some(class) = class_for_code(code) {
                return (Some(class), Some(code));
            }
        }
        (None, self.codes.first().map(String::as_str))
    }
}

/// Builds the error for an upstream's non-success answer.
///
/// A specific provider code wins over the status (a 400 `context_length_exceeded` is a
/// context-length failure, a 200-stream `overloaded_error` is overload); otherwise the status
/// decides. The wait comes from headers, then from the body's Google `RetryInfo`.
pub(crate) fn status_error(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    keys: &[Secret],
) -> UpstreamError {
    let parsed = ProviderError::parse(body);
    let (code_class, code) = parsed.decisive_code();
    let status_class = class_for_status(status);
    let class = match code_class {
        // Generic codes (`server_error`, `api_error`, `INTERNAL`) say less than the status: a 504
        // with `server_error` is still a timeout. An auth status is never softened by a code.
        Some(c) if c != ErrorClass::Server && status_class != ErrorClass::Auth => c,
        _ => status_class,
    };
    let message = parsed.message.as_deref().map_or_else(
        || {
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no error message")
                .to_owned()
        },
        |m| clean_message(m, keys),
    );
    let mut error = UpstreamError::new(class, message).with_status(status);
    if let Some(code) = code {
        error = error.with_code(clean_message(code, keys));
    }
    let wait = retry_hint::retry_after(headers, SystemTime::now()).or_else(|| {
        parsed
            .retry_delay
            .as_deref()
            .and_then(retry_hint::parse_go_duration)
    });
    if let Some(wait) = wait {
        error = error.with_retry_after(wait);
    }
    error
}

/// Builds the error for an error event inside a stream (no HTTP status).
pub(crate) fn stream_error(parsed: &ProviderError, keys: &[Secret]) -> UpstreamError {
    let (class, code) = parsed.decisive_code();
    let message = parsed.message.as_deref().map_or_else(
        || "upstream sent an error event".to_owned(),
        |m| clean_message(m, keys),
    );
    let mut error = UpstreamError::new(class.unwrap_or(ErrorClass::Server), message);
    if let Some(code) = code {
        error = error.with_code(clean_message(code, keys));
    }
    if let Some(wait) = parsed
        .retry_delay
        .as_deref()
        .and_then(retry_hint::parse_go_duration)
    {
        error = error.with_retry_after(wait);
    }
    error
}

/// A provider message made safe to keep: every configured key replaced, control characters
/// flattened, and cut to [`MAX_MESSAGE_BYTES`] on a character boundary.
pub fn clean_message(message: &str, keys: &[Secret]) -> String {
    let mut text: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for key in keys {
        let key = key.expose();
        // Short "keys" (placeholders like `x`) would shred ordinary words; real keys are long.
        if key.len() >= 8 && text.contains(key) {
            text = text.replace(key, "[redacted]");
        }
    }
    if text.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Classifies a transport failure of reqwest without ever printing it: reqwest's `Display`
/// names the URL, so the message is built from the error's kind and its source chain.
pub(crate) fn transport_error(error: &reqwest::Error, phase: Phase) -> UpstreamError {
    let class = if error.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::Connect
    };
    let what = match (class, phase) {
        (ErrorClass::Timeout, _) => "upstream request timed out",
        (_, Phase::Send) if error.is_connect() => "could not connect to upstream",
        (_, Phase::Send) => "upstream connection failed before a response",
        (_, Phase::Body) => "upstream connection failed while reading the response",
    };
    let mut message = String::from(what);
    let mut source = std::error::Error::source(error);
    let mut depth = 0;
    while let Some(cause) = source {
        if depth == 4 {
            break;
        }
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
        depth += 1;
    }
    UpstreamError::new(class, clean_message(&message, &[]))
}

/// When a transport failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before response headers.
    Send,
    /// While reading the body.
    Body,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16, body: &str) -> UpstreamError {
        status_error(status, &HeaderMap::new(), body.as_bytes(), &[])
    }

    #[test]
    fn statuses_without_codes() {
        let table = [
            (400, ErrorClass::InvalidRequest),
            (401, ErrorClass::Auth),
            (402, ErrorClass::Auth),
            (403, ErrorClass::Auth),
            (404, ErrorClass::Server),
            (408, ErrorClass::Timeout),
            (413, ErrorClass::InvalidRequest),
            (422, ErrorClass::InvalidRequest),
            (429, ErrorClass::RateLimited),
            (500, ErrorClass::Server),
            (502, ErrorClass::Server),
            (503, ErrorClass::Server),
            (504, ErrorClass::Timeout),
            (529, ErrorClass::Overloaded),
        ];
        for (status, class) in table {
            let e = classify(status, "not json");
            assert_eq!(e.class, class, "{status}");
            assert_eq!(e.status, Some(status));
        }
    }

    #[test]
    fn provider_codes_refine_the_status() {
        let e = classify(
            400,
            r#"{"error":{"message":"too long","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        );
        assert_eq!(e.class, ErrorClass::ContextLength);
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(&*e.message, "too long");

        let e = classify(
            400,
            r#"{"error":{"message":"filtered","code":"content_filter"}}"#,
        );
        assert_eq!(e.class, ErrorClass::ContentFilter);

        let e = classify(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.class, ErrorClass::Overloaded);
        assert_eq!(e.code.as_deref(), Some("overloaded_error"));

        let e = classify(
            429,
            r#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"31s"}]}}]"#,
        );
        assert_eq!(e.class, ErrorClass::RateLimited);
        assert_eq!(e.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(e.retry_after, Some(core::time::Duration::from_secs(31)));

        let e = classify(
            400,
            r#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#,
        );
        assert_eq!(e.class, ErrorClass::Auth);
        assert_eq!(e.code.as_deref(), Some("API_KEY_INVALID"));

        let e = classify(
            400,
            r#"{"error":{"message":"bad","type":"invalid_request_error"}}"#,
        );
        assert_eq!(e.class, ErrorClass::InvalidRequest);
        assert_eq!(e.code.as_deref(), Some("invalid_request_error"));

        let e = classify(404, r#"{"error":"model 'x' not found"}"#);
        assert_eq!(e.class, ErrorClass::Server);
        assert_eq!(&*e.message, "model 'x' not found");

        let e = classify(
            400,
            r#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#,
        );
        assert_eq!(e.class, ErrorClass::InvalidRequest);
        assert_eq!(e.code.as_deref(), Some("BadRequestError"));
    }

    #[test]
    fn message_text_never_decides() {
        let e = classify(
            400,
            r#"{"error":{"message":"context_length_exceeded overloaded_error rate limit"}}"#,
        );
        assert_eq!(e.class, ErrorClass::InvalidRequest);
    }

    #[test]
    fn auth_status_is_not_softened_by_a_code() {
        let e = classify(401, r#"{"error":{"code":"rate_limit_exceeded"}}"#);
        assert_eq!(e.class, ErrorClass::Auth);
    }

    #[test]
    fn messages_are_scrubbed_and_bounded() {
        let key = Secret::new("sk-canary-0123456789");
        let e = status_error(
            401,
            &HeaderMap::new(),
            br#"{"error":{"message":"Incorrect API key provided: sk-canary-0123456789\nsee docs"}}"#,
            &[key],
        );
        assert_eq!(
            &*e.message,
            "Incorrect API key provided: [redacted] see docs"
        );
        let long = "é".repeat(400);
        let cleaned = clean_message(&long, &[]);
        assert!(cleaned.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8());
        assert!(cleaned.ends_with('…'));
    }
}
