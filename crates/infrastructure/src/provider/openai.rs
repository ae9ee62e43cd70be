//! The OpenAI-compatible adapter's protocol: requests and answers in the OpenAI wire format
//! ([`crate::wire::openai`]), errors inside success bodies, and where a stream ends.
//!
//! Streams ask for `stream_options.include_usage`. A stream is complete at `data: [DONE]`, or when
//! the bytes end cleanly after a chunk with a finish reason (several self-hosted servers and
//! proxies never send the sentinel): the chunk with the finish reason, and every chunk after it
//! that carries no content (the usage chunk), are held back until then, so a stream cut before
//! its finish reason ends with an error, never with a finish reason.

use std::borrow::Cow;
use std::sync::Arc;

use echelon_domain::chat::{ChatRequest, ChatResponse, StreamChunk};
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::secret::Secret;
use serde_json::value::RawValue;

use super::classify::{self, ProviderError};
use super::sse::{self, EventDecoder, SseEvent, Step};
use crate::wire::openai::{self as wire, NoAnswer, NoChunk};

/// Most chunks held back after the finish reason (the usage chunk, and what some servers send
/// besides); further ones without content are dropped.
const MAX_HELD: usize = 8;

pub use crate::wire::openai::finish_reason;

/// Encodes a chat completions request body.
///
/// # Errors
///
/// [`ErrorClass::InvalidRequest`] when a raw JSON field of the request (tool parameters, an
/// `extra` value) is not valid JSON.
pub fn request_body(
    upstream_model: &str,
    request: &ChatRequest,
    stream: bool,
) -> Result<Vec<u8>, UpstreamError> {
    wire::request_body(upstream_model, request, stream)
}

/// Parses raw JSON text for embedding, borrowed; invalid JSON fails the serialization.
pub(crate) fn raw<'a, E: serde::ser::Error>(what: &str, json: &'a str) -> Result<&'a RawValue, E> {
    serde_json::from_str::<&RawValue>(json)
        .map_err(|_| E::custom(format!("{what} is not valid json")))
}

/// A 2xx body that is not what the protocol promises.
fn malformed_body(detail: &str) -> UpstreamError {
    UpstreamError::new(
        ErrorClass::Connect,
        format!("malformed upstream response: {detail}"),
    )
}

/// Decodes a chat completions response.
///
/// # Errors
///
/// A malformed body ([`ErrorClass::Connect`]), or the classified error when the upstream put an
/// error object in a success response.
pub fn parse_response(
    body: &[u8],
    upstream_model: &str,
    keys: &[Secret],
) -> Result<ChatResponse, UpstreamError> {
    match wire::decode_response(body, upstream_model) {
        Ok(response) => Ok(response),
        Err(NoAnswer::Malformed) => Err(malformed_body("not a chat completion json")),
        Err(NoAnswer::NoChoices) => {
            let parsed = ProviderError::parse(body);
            if parsed.codes.is_empty() && parsed.message.is_none() {
                return Err(malformed_body("no choices"));
            }
            Err(classify::stream_error(&parsed, keys))
        }
    }
}

/// Decodes OpenAI chat completion chunks; see the module docs for how the end is detected.
#[derive(Debug)]
pub(crate) struct StreamDecoder {
    keys: Arc<[Secret]>,
    model: Option<Arc<str>>,
    /// The chunk with the finish reason and the content-free chunks after it, held until
    /// `[DONE]` or the end of the bytes; empty before the finish reason.
    held: Vec<StreamChunk>,
}

impl StreamDecoder {
    pub(crate) fn new(keys: Arc<[Secret]>) -> Self {
        Self {
            keys,
            model: None,
            held: Vec::new(),
        }
    }

    fn model(&mut self, name: Option<Cow<'_, str>>) -> Option<Arc<str>> {
        let name = name?;
        match &self.model {
            Some(known) if **known == *name => {}
            _ => self.model = Some(Arc::from(&*name)),
        }
        self.model.clone()
    }
}

impl EventDecoder for StreamDecoder {
    fn on_event(&mut self, event: SseEvent) -> Result<Step, UpstreamError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Step::End(std::mem::take(&mut self.held)));
        }
        let (mut chunk, model) = match wire::decode_chunk(data) {
            Err(NoChunk::Malformed) => {
                return Err(sse::malformed_error("not a chat completion chunk"));
            }
            Err(NoChunk::Error) => return Err(self.error(data)),
            Ok(_) if event.event.as_deref() == Some("error") => return Err(self.error(data)),
            Ok(decoded) => decoded,
        };
        chunk.model = self.model(model);
        if !self.held.is_empty() {
            // After the finish reason only the usage chunk is expected; hold what carries no
            // content, and pass anything else on as it is.
            if chunk.has_content() {
                return Ok(Step::Emit(chunk));
            }
            if self.held.len() < MAX_HELD {
                self.held.push(chunk);
            }
            return Ok(Step::Skip);
        }
        if chunk.finish_reason.is_some() {
            self.held.push(chunk);
            return Ok(Step::Skip);
        }
        let empty = !chunk.has_choice() && chunk.usage.is_none();
        Ok(if empty { Step::Skip } else { Step::Emit(chunk) })
    }

    fn on_eof(&mut self) -> Result<Vec<StreamChunk>, UpstreamError> {
        // A clean end after the finish reason is a complete answer without the sentinel.
        if self.held.is_empty() {
            return Err(sse::cut_error("a chunk with a finish_reason"));
        }
        Ok(std::mem::take(&mut self.held))
    }
}

impl StreamDecoder {
    fn error(&self, data: &str) -> UpstreamError {
        classify::stream_error(&ProviderError::parse(data.as_bytes()), &self.keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_in_a_success_body_is_classified() {
        let body = br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#;
        let e = parse_response(body, "m", &[]).unwrap_err();
        assert_eq!(e.class, ErrorClass::RateLimited);
        let e = parse_response(b"{}", "m", &[]).unwrap_err();
        assert_eq!(e.class, ErrorClass::Connect);
    }
}
