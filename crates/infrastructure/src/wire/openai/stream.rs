//! Stream chunks (`chat.completion.chunk`): rendered by the edge and the fake upstream, decoded
//! by the OpenAI-compatible adapter (whose stream decoder, `provider/openai.rs`, decides where a
//! stream ends).
//!
//! As for complete answers, keys the domain does not model are kept by level and written back,
//! and a `null` the upstream sent for `content` or `refusal` stays a `null`. A chunk without a
//! choice (usage alone) is rendered with empty `choices`, as OpenAI sends it.

use std::borrow::Cow;

use echelon_domain::chat::{AnswerExtra, ExtraAt, StreamChunk, ToolCallDelta};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::response::{UsageIn, UsageOut, created_of, null_unless};
use super::{finish_reason, finish_reason_name, role_name, role_of};
use crate::wire::{Extras, keep, take_string};

const CHOICE_KEYS: &[&str] = &["index", "delta", "message", "finish_reason"];

/// `key` when the renderer writes it (`written`), so that a kept key of that name is skipped;
/// the empty name otherwise, which no kept key has.
fn own(key: &'static str, written: bool) -> &'static str {
    if written { key } else { "" }
}

/// The closing event of a successful stream.
pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// Renders one stream chunk as an SSE event (`data: {...}\n\n`) of an OpenAI
/// `chat.completion.chunk`; `model` names the model that is answering, `id` and `created` are
/// used when the chunk has none of its own.
pub fn render_chunk_event(chunk: &StreamChunk, id: &str, model: &str, created: u64) -> Vec<u8> {
    let extra = &chunk.extra;
    // Optional keys the upstream sent as `null` are kept and written back as they came.
    let delta_keys = [
        own("role", chunk.role.is_some()),
        own("content", chunk.content.is_some()),
        own("refusal", chunk.refusal.is_some()),
        own("tool_calls", !chunk.tool_calls.is_empty()),
    ];
    let chunk_keys = [
        "id",
        "object",
        "created",
        "model",
        "choices",
        own("usage", chunk.usage.is_some()),
    ];
    let choices = if chunk.has_choice() {
        vec![ChunkChoice {
            index: 0,
            delta: Delta {
                role: chunk.role.map(role_name),
                content: chunk.content.as_deref(),
                refusal: chunk.refusal.as_deref(),
                tool_calls: chunk.tool_calls.iter().map(ToolCallDeltaOut::of).collect(),
                extra: Extras::at(extra, ExtraAt::Message, &delta_keys),
            },
            logprobs: null_unless(extra, ExtraAt::Choice, "logprobs"),
            finish_reason: chunk.finish_reason.as_ref().map(finish_reason_name),
            extra: Extras::at(extra, ExtraAt::Choice, CHOICE_KEYS),
        }]
    } else {
        Vec::new()
    };
    let body = Chunk {
        id: chunk.id.as_deref().unwrap_or(id),
        object: "chat.completion.chunk",
        created: chunk.created.unwrap_or(created),
        model,
        choices,
        usage: chunk.usage.map(|u| UsageOut::of(u, extra)),
        extra: Extras::at(extra, ExtraAt::Answer, &chunk_keys),
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut out, &body).is_err() {
        out.truncate(6);
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    out
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut<'a>>,
    #[serde(flatten)]
    extra: Extras<'a>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
    #[serde(flatten)]
    extra: Extras<'a>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallDeltaOut<'a>>,
    #[serde(flatten)]
    extra: Extras<'a>,
}

#[derive(Serialize)]
struct ToolCallDeltaOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    /// `function`, on the piece that carries the id.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDeltaOut<'a>,
}

#[derive(Serialize)]
struct FunctionDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

impl<'a> ToolCallDeltaOut<'a> {
    fn of(d: &'a ToolCallDelta) -> Self {
        Self {
            index: d.index,
            id: d.id.as_deref(),
            kind: d.id.as_ref().map(|_| "function"),
            function: FunctionDeltaOut {
                name: d.name.as_deref(),
                arguments: d.arguments.as_deref(),
            },
        }
    }
}

// ----- decoding, from an OpenAI-compatible upstream -----

#[derive(Deserialize)]
struct ChunkIn<'a> {
    id: Option<String>,
    created: Option<Value>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    choices: Option<Vec<ChoiceIn>>,
    object: Option<IgnoredAny>,
    /// `usage` among them (an object, or the `null` OpenAI sends on every other chunk), and
    /// `error` when the upstream reports a failure inside the stream.
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize)]
struct ChoiceIn {
    #[serde(default)]
    index: u32,
    delta: Option<DeltaIn>,
    finish_reason: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize)]
struct DeltaIn {
    role: Option<String>,
    tool_calls: Option<Vec<DeltaToolCall>>,
    /// `content` and `refusal` among them, taken out when they are strings.
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize)]
struct DeltaToolCall {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<DeltaFunction>,
}

#[derive(Deserialize)]
struct DeltaFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Why a chunk event holds no chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoChunk {
    /// It is not a chat completion chunk.
    Malformed,
    /// It is an error object: the upstream failed inside the stream.
    Error,
}

/// Decodes one chunk event's data: the chunk, and its model borrowed from the event for the
/// caller to intern.
///
/// # Errors
///
/// [`NoChunk`] when the event holds no chunk.
pub fn decode_chunk(data: &str) -> Result<(StreamChunk, Option<Cow<'_, str>>), NoChunk> {
    let mut wire: ChunkIn<'_> = serde_json::from_str(data).map_err(|_| NoChunk::Malformed)?;
    let _ = wire.object;
    if wire.rest.contains_key("error") {
        return Err(NoChunk::Error);
    }
    let mut extra = AnswerExtra::default();
    let mut chunk = StreamChunk {
        id: wire.id,
        created: created_of(wire.created.as_ref()),
        ..StreamChunk::default()
    };
    match wire.rest.remove("usage") {
        None => {}
        Some(Value::Null) => {
            wire.rest.insert("usage".to_owned(), Value::Null);
        }
        Some(usage) => {
            let usage = serde_json::from_value::<UsageIn>(usage).map_err(|_| NoChunk::Malformed)?;
            chunk.usage = Some(usage.decode(&mut extra));
        }
    }
    if let Some(choice) = wire
        .choices
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.index == 0)
    {
        if let Some(delta) = choice.delta {
            let mut rest = delta.rest;
            chunk.role = delta.role.as_deref().and_then(role_of);
            chunk.content = take_string(&mut rest, "content");
            chunk.refusal = take_string(&mut rest, "refusal");
            chunk.tool_calls = delta
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    let (name, arguments) =
                        c.function.map_or((None, None), |f| (f.name, f.arguments));
                    ToolCallDelta {
                        index: c.index,
                        id: c.id,
                        name,
                        arguments,
                    }
                })
                .collect();
            keep(&mut extra, ExtraAt::Message, rest);
        }
        chunk.finish_reason = choice.finish_reason.as_deref().map(finish_reason);
        keep(&mut extra, ExtraAt::Choice, choice.rest);
    }
    keep(&mut extra, ExtraAt::Answer, wire.rest);
    chunk.extra = extra;
    Ok((chunk, wire.model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use echelon_domain::chat::{Role, Usage};

    fn chunk_of(data: &str) -> StreamChunk {
        decode_chunk(data).unwrap().0
    }

    fn rendered(chunk: &StreamChunk) -> Value {
        let event = render_chunk_event(chunk, "id-1", "gpt-x", 1);
        let text = std::str::from_utf8(&event).unwrap();
        assert!(
            text.starts_with("data: {") && text.ends_with("}\n\n"),
            "{text}"
        );
        serde_json::from_str(&text[6..text.len() - 2]).unwrap()
    }

    #[test]
    fn chunks_pass_through_decode_and_render_unchanged() {
        let chunks = [
            r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-x","system_fingerprint":"fp","service_tier":"default","usage":null,"obfuscation":"ab","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-x","system_fingerprint":"fp","usage":null,"choices":[{"index":0,"delta":{"content":"hi"},"logprobs":{"content":[{"token":"hi","logprob":-0.1,"bytes":[104,105],"top_logprobs":[]}],"refusal":null},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-x","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"t1","type":"function","function":{"name":"f","arguments":""}}]},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-x","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-x","system_fingerprint":"fp","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":2,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
        ];
        for data in chunks {
            assert_eq!(
                rendered(&chunk_of(data)),
                serde_json::from_str::<Value>(data).unwrap(),
                "{data}"
            );
        }
        let usage = chunk_of(chunks[4]).usage.unwrap();
        assert_eq!(usage.cached_input_tokens, Some(4));
        assert_eq!(usage.reasoning_tokens, Some(2));
        assert_eq!(
            decode_chunk(r#"{"error":{"message":"x"}}"#).unwrap_err(),
            NoChunk::Error
        );
        assert_eq!(decode_chunk("[").unwrap_err(), NoChunk::Malformed);
    }

    #[test]
    fn a_translated_chunk_has_the_openai_shape() {
        let chunk = StreamChunk {
            role: Some(Role::Assistant),
            content: Some("he".into()),
            ..StreamChunk::default()
        };
        assert_eq!(
            rendered(&chunk),
            serde_json::json!({"id": "id-1", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "he"},
                "logprobs": null, "finish_reason": null}]})
        );
        let usage_only = StreamChunk {
            usage: Some(Usage::new(3, 1)),
            ..StreamChunk::default()
        };
        let json = rendered(&usage_only);
        assert_eq!(json["choices"], serde_json::json!([]));
        assert_eq!(json["usage"]["total_tokens"], 4);
    }
}
