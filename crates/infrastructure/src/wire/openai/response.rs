//! A complete chat completion (`chat.completion`): rendered by the edge and the fake upstream,
//! decoded by the OpenAI-compatible adapter.
//!
//! The decoder keeps every key it does not model in the answer's
//! [`AnswerExtra`], by level (completion, choice, message, usage), and the
//! renderer writes them back after its own keys, so `system_fingerprint`, `service_tier`,
//! `logprobs`, `annotations`, `audio` and the usage details pass through as they came. A
//! translated answer has no kept keys: the renderer writes `refusal` and `logprobs` as `null`
//! and the usage details from the domain's cached and reasoning token counts.

use std::sync::Arc;

use echelon_domain::chat::{
    AnswerExtra, ChatResponse, ContentPart, ExtraAt, Message, Role, ToolCall, Usage,
};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::request::ToolCallOut;
use super::{finish_reason, finish_reason_name};
use crate::wire::{Extras, keep, take_string};

/// Keys the renderer writes itself at each level; kept keys of these names are not repeated.
const ANSWER_KEYS: &[&str] = &["id", "object", "created", "model", "choices", "usage"];
const CHOICE_KEYS: &[&str] = &["index", "message", "delta", "finish_reason"];
const MESSAGE_KEYS: &[&str] = &["role", "content", "refusal", "tool_calls", "name"];
const USAGE_KEYS: &[&str] = &["prompt_tokens", "completion_tokens", "total_tokens"];

/// Renders a complete answer as an OpenAI `chat.completion` object. The answer's own id and
/// creation time are used when it has them, `fallback_id` and `created` otherwise.
pub fn render_response(response: &ChatResponse, fallback_id: &str, created: u64) -> Vec<u8> {
    let extra = &response.extra;
    let body = Completion {
        id: response.id.as_deref().unwrap_or(fallback_id),
        object: "chat.completion",
        created: response.created.unwrap_or(created),
        model: &response.model,
        choices: [Choice {
            index: 0,
            message: AnswerMessage::of(&response.message, response.refusal.as_deref(), extra),
            logprobs: null_unless(extra, ExtraAt::Choice, "logprobs"),
            finish_reason: response.finish_reason.as_ref().map(finish_reason_name),
            extra: Extras::at(extra, ExtraAt::Choice, CHOICE_KEYS),
        }],
        usage: response.usage.map(|u| UsageOut::of(u, extra)),
        extra: Extras::at(extra, ExtraAt::Answer, ANSWER_KEYS),
    };
    // Sized for a short answer at once; `to_vec` would start at 128 bytes and grow twice.
    let mut out = Vec::with_capacity(512);
    if serde_json::to_writer(&mut out, &body).is_err() {
        out.clear();
    }
    out
}

/// `Some(())` — written as `null` — unless `key` is among the kept keys, which then write it.
pub(crate) fn null_unless(extra: &AnswerExtra, at: ExtraAt, key: &str) -> Option<()> {
    (!extra.has(at, key)).then_some(())
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut<'a>>,
    #[serde(flatten)]
    extra: Extras<'a>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AnswerMessage<'a>,
    /// Required by the specification; `null` unless the upstream sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
    #[serde(flatten)]
    extra: Extras<'a>,
}

#[derive(Serialize)]
struct AnswerMessage<'a> {
    role: &'static str,
    content: Option<String>,
    /// Required by the specification (`null` when the model did not refuse).
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(flatten)]
    extra: Extras<'a>,
}

impl<'a> AnswerMessage<'a> {
    fn of(message: &'a Message, refusal: Option<&'a str>, extra: &'a AnswerExtra) -> Self {
        // No content is `null` beside tool calls or a refusal, and the empty string otherwise.
        let content = if message.content.is_empty()
            && (!message.tool_calls.is_empty() || refusal.is_some())
        {
            None
        } else {
            Some(message.joined_text())
        };
        Self {
            role: "assistant",
            content,
            refusal,
            tool_calls: message.tool_calls.iter().map(ToolCallOut::of).collect(),
            name: message.name.as_deref(),
            extra: Extras::at(extra, ExtraAt::Message, MESSAGE_KEYS),
        }
    }
}

/// The usage object, shared with stream chunks.
#[derive(Serialize)]
pub(crate) struct UsageOut<'a> {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionDetails>,
    #[serde(flatten)]
    extra: Extras<'a>,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u32,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u32,
}

impl<'a> UsageOut<'a> {
    /// The usage of `u`; the details objects the upstream sent (`kept`) are written as they
    /// came, the others from the domain's counts.
    pub(crate) fn of(u: Usage, kept: &'a AnswerExtra) -> Self {
        let has = |key| kept.has(ExtraAt::Usage, key);
        Self {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.total(),
            prompt_tokens_details: u
                .cached_input_tokens
                .filter(|_| !has("prompt_tokens_details"))
                .map(|cached_tokens| PromptDetails { cached_tokens }),
            completion_tokens_details: u
                .reasoning_tokens
                .filter(|_| !has("completion_tokens_details"))
                .map(|reasoning_tokens| CompletionDetails { reasoning_tokens }),
            extra: Extras::at(kept, ExtraAt::Usage, USAGE_KEYS),
        }
    }
}

// ----- decoding, from an OpenAI-compatible upstream -----

#[derive(Deserialize)]
struct CompletionIn {
    id: Option<String>,
    created: Option<Value>,
    model: Option<String>,
    choices: Option<Vec<ChoiceIn>>,
    usage: Option<UsageIn>,
    object: Option<IgnoredAny>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize)]
struct ChoiceIn {
    #[serde(default)]
    index: u32,
    message: MessageIn,
    finish_reason: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize)]
struct MessageIn {
    content: Option<ContentIn>,
    tool_calls: Option<Vec<ToolCallIn>>,
    name: Option<String>,
    role: Option<IgnoredAny>,
    /// `refusal` among them, taken out when it is a string.
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ContentIn {
    Text(String),
    Parts(Vec<PartIn>),
}

#[derive(Deserialize)]
struct PartIn {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct ToolCallIn {
    #[serde(default)]
    id: Option<String>,
    function: FunctionIn,
}

#[derive(Deserialize)]
struct FunctionIn {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

/// The usage object, shared with stream chunks.
#[derive(Deserialize)]
pub(crate) struct UsageIn {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    total_tokens: Option<IgnoredAny>,
    /// The details objects among them, kept whole.
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl UsageIn {
    /// The domain usage; the keys it does not model are kept in `extra`.
    pub(crate) fn decode(self, extra: &mut AnswerExtra) -> Usage {
        let _ = self.total_tokens;
        let detail = |object: &str, key: &str| {
            self.rest
                .get(object)
                .and_then(|d| d.get(key))
                .and_then(Value::as_u64)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        let usage = Usage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens,
            cached_input_tokens: detail("prompt_tokens_details", "cached_tokens"),
            reasoning_tokens: detail("completion_tokens_details", "reasoning_tokens"),
        };
        keep(extra, ExtraAt::Usage, self.rest);
        usage
    }
}

/// The creation time, when it is a whole number of seconds.
pub(crate) fn created_of(value: Option<&Value>) -> Option<u64> {
    value.and_then(Value::as_u64)
}

/// Why a chat completions body holds no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// It is not a chat completion at all.
    Malformed,
    /// It has no choices: an error object, or malformed (the caller reads it again).
    NoChoices,
}

/// Decodes a chat completions response body; the first choice is the answer.
///
/// # Errors
///
/// [`NoAnswer`] when the body holds no answer.
pub fn decode_response(body: &[u8], upstream_model: &str) -> Result<ChatResponse, NoAnswer> {
    let completion: CompletionIn = serde_json::from_slice(body).map_err(|_| NoAnswer::Malformed)?;
    let _ = completion.object;
    let Some(choice) = completion
        .choices
        .and_then(|choices| choices.into_iter().find(|c| c.index == 0))
    else {
        return Err(NoAnswer::NoChoices);
    };
    let mut message_rest = choice.message.rest;
    let _ = choice.message.role;
    let refusal = take_string(&mut message_rest, "refusal");
    let content = match choice.message.content {
        Some(ContentIn::Text(text)) => vec![ContentPart::Text(text)],
        Some(ContentIn::Parts(parts)) => parts
            .into_iter()
            .filter_map(|p| p.text)
            .map(ContentPart::Text)
            .collect(),
        None => Vec::new(),
    };
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            id: c.id.unwrap_or_else(|| format!("call_{i}")),
            name: c.function.name,
            arguments: c.function.arguments,
        })
        .collect();
    let mut extra = AnswerExtra::default();
    let usage = completion.usage.map(|u| u.decode(&mut extra));
    let model: Arc<str> = completion.model.as_deref().unwrap_or(upstream_model).into();
    let mut response = ChatResponse::new(
        model,
        Message {
            role: Role::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
            name: choice.message.name,
        },
    );
    response.id = completion.id;
    response.created = created_of(completion.created.as_ref());
    response.refusal = refusal;
    response.finish_reason = choice.finish_reason.as_deref().map(finish_reason);
    response.usage = usage;
    keep(&mut extra, ExtraAt::Answer, completion.rest);
    keep(&mut extra, ExtraAt::Choice, choice.rest);
    keep(&mut extra, ExtraAt::Message, message_rest);
    response.extra = extra;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use echelon_domain::chat::FinishReason;

    fn answer(body: &str) -> ChatResponse {
        decode_response(body.as_bytes(), "m").unwrap()
    }

    #[test]
    fn a_translated_answer_carries_the_required_nulls_and_the_usage_details() {
        let mut response =
            ChatResponse::new("claude".into(), Message::text(Role::Assistant, "hello"));
        response.finish_reason = Some(FinishReason::Stop);
        response.usage = Some(Usage {
            cached_input_tokens: Some(2),
            reasoning_tokens: Some(0),
            ..Usage::new(3, 1)
        });
        let json: Value = serde_json::from_slice(&render_response(&response, "id-1", 7)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "id-1", "object": "chat.completion", "created": 7, "model": "claude",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello", "refusal": null},
                    "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4,
                    "prompt_tokens_details": {"cached_tokens": 2},
                    "completion_tokens_details": {"reasoning_tokens": 0}}
            })
        );
    }

    #[test]
    fn an_answer_passes_through_decode_and_render_unchanged() {
        let body = r#"{"id":"c1","object":"chat.completion","created":5,"model":"gpt-x",
            "choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"no",
            "annotations":[]},"logprobs":{"content":null,"refusal":[]},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,
            "prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},
            "completion_tokens_details":{"reasoning_tokens":2,"audio_tokens":0,
            "accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},
            "system_fingerprint":"fp_1","service_tier":"default"}"#;
        let response = answer(body);
        assert_eq!(response.refusal.as_deref(), Some("no"));
        let usage = response.usage.unwrap();
        assert_eq!(
            (usage.cached_input_tokens, usage.reasoning_tokens),
            (Some(4), Some(2))
        );
        let rendered: Value =
            serde_json::from_slice(&render_response(&response, "other", 9)).unwrap();
        assert_eq!(rendered, serde_json::from_str::<Value>(body).unwrap());
    }

    #[test]
    fn tool_calls_and_what_is_not_a_completion() {
        let r = answer(
            r#"{"id":"c1","model":"gpt-x-2024","choices":[{"index":0,"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#,
        );
        assert_eq!(&*r.model, "gpt-x-2024");
        assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(r.message.tool_calls[0].arguments, r#"{"a":1}"#);
        assert_eq!(r.usage.unwrap().total(), 8);
        assert_eq!(
            decode_response(br#"{"error":{"message":"x"}}"#, "m").unwrap_err(),
            NoAnswer::NoChoices
        );
        assert_eq!(
            decode_response(b"[1]", "m").unwrap_err(),
            NoAnswer::Malformed
        );
    }
}
