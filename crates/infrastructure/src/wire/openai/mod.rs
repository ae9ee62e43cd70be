//! The OpenAI chat completions wire format, written once for every side that speaks it.
//!
//! - [`request`]: the edge parses a client's request into domain types ([`parse_request`]),
//!   the OpenAI-compatible adapter encodes a domain request for its upstream ([`request_body`]).
//! - [`response`]: a complete answer, rendered by the edge and the fake upstream
//!   ([`render_response`]) and decoded by the adapter ([`decode_response`]).
//! - [`stream`]: stream chunks, likewise ([`render_chunk_event`], [`decode_chunk`]).
//! - [`error`]: the error body ([`ErrorBody`]).
//!
//! Serializers are derived over borrowed views of the domain values. Decoders keep what the
//! domain does not model in [`AnswerExtra`](echelon_domain::chat::AnswerExtra), and renderers
//! write it back, so an OpenAI-compatible upstream's answer reaches the client as it was sent
//! (apart from `model`, and usage the client did not ask for). Fields the specification requires
//! are always written: `choices[].message.refusal` and `choices[].logprobs` as `null` when empty.

pub mod error;
pub mod request;
pub mod response;
pub mod stream;

use echelon_domain::chat::{FinishReason, Role};

pub use self::error::ErrorBody;
pub use self::request::{BadRequest, ParsedRequest, parse_request, request_body};
pub use self::response::{NoAnswer, decode_response, render_response};
pub use self::stream::{DONE_EVENT, NoChunk, decode_chunk, render_chunk_event};

/// The OpenAI name of a role.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// The role of an OpenAI role name, when it is one.
pub fn role_of(name: &str) -> Option<Role> {
    match name {
        "assistant" => Some(Role::Assistant),
        "system" | "developer" => Some(Role::System),
        "user" => Some(Role::User),
        "tool" | "function" => Some(Role::Tool),
        _ => None,
    }
}

/// The domain finish reason of an OpenAI `finish_reason`.
pub fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.into()),
    }
}

/// The OpenAI `finish_reason` of a domain finish reason.
pub fn finish_reason_name(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other(other) => other,
    }
}
