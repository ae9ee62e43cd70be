//! Provider-neutral chat types: what a client asks for and what an upstream answers.
//!
//! These are domain types, not a wire format. Provider adapters convert OpenAI, Anthropic and
//! Gemini JSON to and from them at the edge. Fields the domain does not model are kept as raw
//! JSON text — in [`ChatRequest::extra`] so OpenAI-compatible upstreams still receive them, and in
//! [`AnswerExtra`] so an OpenAI-compatible upstream's answer reaches the client as it was sent.

use std::sync::Arc;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call.
    Tool,
}

/// A piece of message content.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    /// Plain text.
    Text(String),
    /// An image given by URL (including `data:` URLs).
    ImageUrl {
        /// Where the image is.
        url: String,
        /// OpenAI's `detail` hint (`low`, `high`, `auto`), when given.
        detail: Option<Box<str>>,
    },
}

/// A JSON document kept as text, because the domain does not interpret it (tool arguments,
/// JSON schemas, unmodelled request fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson(pub Box<str>);

impl RawJson {
    /// Wraps JSON text; the caller vouches that it is valid JSON.
    pub fn new(text: impl Into<Box<str>>) -> Self {
        Self(text.into())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call's id, echoed back in the tool result.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its content; empty for an assistant message that only calls tools.
    pub content: Vec<ContentPart>,
    /// Tool calls made by the assistant in this message.
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] message: the call it answers.
    pub tool_call_id: Option<String>,
    /// Optional participant name.
    pub name: Option<String>,
}

impl Message {
    /// A message with plain text content.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: vec![ContentPart::Text(text.into())],
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    /// All text parts joined, for providers and logs that want one string.
    pub fn joined_text(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            if let ContentPart::Text(text) = part {
                out.push_str(text);
            }
        }
        out
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    /// The function's name.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// Its parameters as a JSON schema.
    pub parameters: Option<RawJson>,
}

/// How the model may use tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This function.
    Function(String),
}

/// Sampling and output parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters {
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Seed for reproducible sampling, where supported.
    pub seed: Option<i64>,
    /// Presence penalty (OpenAI-compatible upstreams only).
    pub presence_penalty: Option<f32>,
    /// Frequency penalty (OpenAI-compatible upstreams only).
    pub frequency_penalty: Option<f32>,
}

/// A chat request in provider-neutral form.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Sampling parameters.
    pub params: Parameters,
    /// Functions the model may call.
    pub tools: Vec<ToolDefinition>,
    /// How it may call them.
    pub tool_choice: Option<ToolChoice>,
    /// Whether the client wants a stream of chunks.
    pub stream: bool,
    /// Request fields the domain does not model, as `(key, JSON value)`, forwarded only to
    /// OpenAI-compatible upstreams.
    pub extra: Vec<(Box<str>, RawJson)>,
}

impl ChatRequest {
    /// A request with the given messages and default parameters.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            params: Parameters::default(),
            tools: Vec::new(),
            tool_choice: None,
            stream: false,
            extra: Vec::new(),
        }
    }

    /// A rough token estimate (four characters a token) used for tpm limits before the upstream
    /// reports real usage.
    pub fn estimated_input_tokens(&self) -> u32 {
        let chars: usize = self
            .messages
            .iter()
            .flat_map(|m| &m.content)
            .map(|part| match part {
                ContentPart::Text(text) => text.len(),
                ContentPart::ImageUrl { .. } => 1_000,
            })
            .sum();
        u32::try_from(chars / 4 + 1).unwrap_or(u32::MAX)
    }
}

/// Token counts reported by the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input_tokens: u32,
    /// Generated tokens, reasoning included.
    pub output_tokens: u32,
    /// Prompt tokens read from the provider's prompt cache (part of `input_tokens`), when the
    /// upstream reports them.
    pub cached_input_tokens: Option<u32>,
    /// Generated tokens spent on reasoning (part of `output_tokens`), when the upstream reports
    /// them.
    pub reasoning_tokens: Option<u32>,
}

impl Usage {
    /// Input and output counts, with no cache or reasoning breakdown.
    pub const fn new(input_tokens: u32, output_tokens: u32) -> Self {
        Self {
            input_tokens,
            output_tokens,
            cached_input_tokens: None,
            reasoning_tokens: None,
        }
    }

    /// Input plus output.
    pub fn total(self) -> u32 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// The token limit was reached.
    Length,
    /// The model called tools.
    ToolCalls,
    /// The provider's content policy cut the output.
    ContentFilter,
    /// Something else the provider reported.
    Other(Box<str>),
}

/// Where a field the domain does not model sits in the OpenAI shape of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraAt {
    /// The answer or chunk object (`system_fingerprint`, `service_tier`).
    Answer,
    /// Its choice (`logprobs`).
    Choice,
    /// Its message or delta (`annotations`, `audio`).
    Message,
    /// Its usage (`prompt_tokens_details`).
    Usage,
}

/// Fields of an answer that the domain does not model, as `(where, key, JSON value)`. An
/// OpenAI-compatible adapter fills them so that what the upstream sent reaches an OpenAI client
/// unchanged; translated answers leave them empty. One list, because it is empty on most
/// answers and rides on every stream chunk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnswerExtra(Vec<(ExtraAt, Box<str>, RawJson)>);

impl AnswerExtra {
    /// Keeps `key` with `value` at `at`.
    pub fn push(&mut self, at: ExtraAt, key: impl Into<Box<str>>, value: RawJson) {
        self.0.push((at, key.into(), value));
    }

    /// The kept fields at `at`, in the order they were kept.
    pub fn at(&self, at: ExtraAt) -> impl Iterator<Item = (&str, &RawJson)> {
        self.0
            .iter()
            .filter(move |(level, _, _)| *level == at)
            .map(|(_, key, value)| (&**key, value))
    }

    /// Whether `key` is kept at `at`.
    pub fn has(&self, at: ExtraAt, key: &str) -> bool {
        self.at(at).any(|(k, _)| k == key)
    }

    /// Whether anything is kept at `at`.
    pub fn has_any(&self, at: ExtraAt) -> bool {
        self.at(at).next().is_some()
    }

    /// Drops `key` at `at`.
    pub fn remove(&mut self, at: ExtraAt, key: &str) {
        self.0
            .retain(|(level, k, _)| !(*level == at && &**k == key));
    }

    /// Only the fields at the levels `keep` accepts.
    #[must_use]
    pub fn only(mut self, keep: impl Fn(ExtraAt) -> bool) -> Self {
        self.0.retain(|(level, _, _)| keep(*level));
        self
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A complete (non-streaming) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The upstream's response id, when it gave one.
    pub id: Option<String>,
    /// When the upstream created the answer (Unix seconds), when it said.
    pub created: Option<u64>,
    /// The model that actually answered, as the upstream named it.
    pub model: Arc<str>,
    /// The assistant's message.
    pub message: Message,
    /// The model's refusal to answer, when it refused.
    pub refusal: Option<String>,
    /// Why it stopped.
    pub finish_reason: Option<FinishReason>,
    /// Token counts, when reported.
    pub usage: Option<Usage>,
    /// What the upstream sent that the domain does not model.
    pub extra: AnswerExtra,
}

impl ChatResponse {
    /// An answer of `message` by `model`, with nothing else known yet.
    pub fn new(model: Arc<str>, message: Message) -> Self {
        Self {
            id: None,
            created: None,
            model,
            message,
            refusal: None,
            finish_reason: None,
            usage: None,
            extra: AnswerExtra::default(),
        }
    }
}

/// A partial tool call inside a stream chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallDelta {
    /// Which call of the message this piece belongs to.
    pub index: u32,
    /// The call's id (first piece only).
    pub id: Option<String>,
    /// The function's name (first piece only).
    pub name: Option<String>,
    /// A fragment of the arguments' JSON text.
    pub arguments: Option<String>,
}

/// One chunk of a streamed answer.
///
/// A stream ends as OpenAI's does: the chunk with the finish reason, then (when usage is known)
/// a chunk with the usage alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamChunk {
    /// The upstream's response id, when it gave one.
    pub id: Option<String>,
    /// When the upstream created the answer (Unix seconds), when the chunk says.
    pub created: Option<u64>,
    /// The model that is answering, when the chunk names it.
    pub model: Option<Arc<str>>,
    /// The role, usually on the first chunk only.
    pub role: Option<Role>,
    /// A fragment of text.
    pub content: Option<String>,
    /// A fragment of the model's refusal.
    pub refusal: Option<String>,
    /// Fragments of tool calls.
    pub tool_calls: Vec<ToolCallDelta>,
    /// Set on the last chunk of a choice.
    pub finish_reason: Option<FinishReason>,
    /// Token counts, on a chunk of their own at the end.
    pub usage: Option<Usage>,
    /// What the upstream sent that the domain does not model.
    pub extra: AnswerExtra,
}

impl StreamChunk {
    /// Whether this chunk carries content the client will see. Failover to another instance is
    /// only allowed until the first such chunk has been sent.
    pub fn has_content(&self) -> bool {
        self.content.as_deref().is_some_and(|c| !c.is_empty())
            || self.refusal.as_deref().is_some_and(|c| !c.is_empty())
            || !self.tool_calls.is_empty()
    }

    /// Whether the chunk belongs to a choice (as opposed to a chunk with usage alone, or with
    /// nothing at all).
    pub fn has_choice(&self) -> bool {
        self.role.is_some()
            || self.content.is_some()
            || self.refusal.is_some()
            || !self.tool_calls.is_empty()
            || self.finish_reason.is_some()
            || self.extra.has_any(ExtraAt::Choice)
            || self.extra.has_any(ExtraAt::Message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_only_chunk_is_not_content() {
        let role_only = StreamChunk {
            role: Some(Role::Assistant),
            content: Some(String::new()),
            ..StreamChunk::default()
        };
        assert!(!role_only.has_content());
        let text = StreamChunk {
            content: Some("Hi".into()),
            ..StreamChunk::default()
        };
        assert!(text.has_content());
    }

    #[test]
    fn token_estimate_grows_with_text() {
        let short = ChatRequest::new(vec![Message::text(Role::User, "hi")]);
        let long = ChatRequest::new(vec![Message::text(Role::User, "x".repeat(4_000))]);
        assert!(long.estimated_input_tokens() > short.estimated_input_tokens());
        assert_eq!(long.estimated_input_tokens(), 1_001);
    }
}
