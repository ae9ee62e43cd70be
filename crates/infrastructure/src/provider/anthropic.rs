//! Anthropic Messages wire format, translated both ways from the provider-neutral chat types.
//!
//! Requests: system messages (wherever they are) become the top-level `system` prompt; tool
//! results become `tool_result` blocks of a user turn; consecutive turns of one role are merged;
//! `max_tokens`, which Anthropic requires, defaults to [`DEFAULT_MAX_TOKENS`]. Seeds, penalties
//! and `extra` fields have no Anthropic equivalent and are not sent.
//!
//! Streams end at `message_stop`, or when the bytes end cleanly after a `message_delta` with a
//! `stop_reason`; that chunk, with the usage, is held back until then, so a stream cut before its
//! stop reason ends with an error and never with a finish reason.

use std::collections::HashMap;
use std::sync::Arc;

use echelon_domain::chat::{
    ChatRequest, ChatResponse, ContentPart, FinishReason, Message, Role, StreamChunk, ToolCall,
    ToolCallDelta, ToolChoice, ToolDefinition, Usage,
};
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::secret::Secret;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::classify::{self, ProviderError};
use super::data_url;
use super::openai::raw;
use super::sse::{self, EventDecoder, SseEvent, Step};

/// The `anthropic-version` header sent with every request (a configured header overrides it).
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when the request leaves it unset (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Encodes a Messages request body.
///
/// # Errors
///
/// [`ErrorClass::InvalidRequest`] when tool arguments or schemas are not valid JSON, or an image
/// URL is a data URL that is not base64.
pub fn request_body(
    upstream_model: &str,
    request: &ChatRequest,
    stream: bool,
) -> Result<Vec<u8>, UpstreamError> {
    let turns = turns(&request.messages)?;
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            ContentPart::Text(t) if !t.is_empty() => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let body = Body {
        model: upstream_model,
        request,
        system: system.join("\n\n"),
        turns,
        stream,
    };
    let mut out = Vec::with_capacity(256 + request.estimated_input_tokens() as usize * 5);
    serde_json::to_writer(&mut out, &body).map_err(|e| {
        UpstreamError::new(
            ErrorClass::InvalidRequest,
            format!("request cannot be encoded for anthropic: {e}"),
        )
    })?;
    Ok(out)
}

struct Body<'a> {
    model: &'a str,
    request: &'a ChatRequest,
    system: String,
    turns: Vec<Turn<'a>>,
    stream: bool,
}

struct Turn<'a> {
    role: &'static str,
    blocks: Vec<Block<'a>>,
}

enum Block<'a> {
    Text(&'a str),
    Image(&'a str),
    ToolUse(&'a ToolCall),
    ToolResult { id: &'a str, message: &'a Message },
}

fn turns(messages: &[Message]) -> Result<Vec<Turn<'_>>, UpstreamError> {
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(messages.len());
    for message in messages {
        let (role, mut blocks) = match message.role {
            Role::System => continue,
            Role::User => ("user", content_blocks(&message.content)),
            Role::Assistant => {
                let mut blocks = content_blocks(&message.content);
                blocks.extend(message.tool_calls.iter().map(Block::ToolUse));
                ("assistant", blocks)
            }
            Role::Tool => {
                let Some(id) = message.tool_call_id.as_deref() else {
                    return Err(UpstreamError::new(
                        ErrorClass::InvalidRequest,
                        "a tool message has no tool_call_id",
                    ));
                };
                ("user", vec![Block::ToolResult { id, message }])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.blocks.append(&mut blocks),
            _ => turns.push(Turn { role, blocks }),
        }
    }
    Ok(turns)
}

fn content_blocks(parts: &[ContentPart]) -> Vec<Block<'_>> {
    parts
        .iter()
        .filter_map(|p| match p {
            // Anthropic refuses empty text blocks.
            ContentPart::Text(t) if t.is_empty() => None,
            ContentPart::Text(t) => Some(Block::Text(t)),
            ContentPart::ImageUrl { url, .. } => Some(Block::Image(url)),
        })
        .collect()
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = &self.request.params;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("max_tokens", &p.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS))?;
        if !self.system.is_empty() {
            map.serialize_entry("system", &self.system)?;
        }
        map.serialize_entry("messages", &Turns(&self.turns))?;
        if let Some(v) = p.temperature {
            map.serialize_entry("temperature", &v)?;
        }
        if let Some(v) = p.top_p {
            map.serialize_entry("top_p", &v)?;
        }
        if !p.stop.is_empty() {
            map.serialize_entry("stop_sequences", &p.stop)?;
        }
        if !self.request.tools.is_empty() {
            map.serialize_entry("tools", &Tools(&self.request.tools))?;
        }
        if let Some(choice) = &self.request.tool_choice {
            map.serialize_entry("tool_choice", &Choice(choice))?;
        }
        if self.stream {
            map.serialize_entry("stream", &true)?;
        }
        map.end()
    }
}

struct Turns<'a>(&'a [Turn<'a>]);

impl Serialize for Turns<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for turn in self.0 {
            seq.serialize_element(&TurnOut(turn))?;
        }
        seq.end()
    }
}

struct TurnOut<'a>(&'a Turn<'a>);

impl Serialize for TurnOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("role", self.0.role)?;
        map.serialize_entry("content", &Blocks(&self.0.blocks))?;
        map.end()
    }
}

struct Blocks<'a>(&'a [Block<'a>]);

impl Serialize for Blocks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for block in self.0 {
            seq.serialize_element(&BlockOut(block))?;
        }
        seq.end()
    }
}

struct BlockOut<'a>(&'a Block<'a>);

impl Serialize for BlockOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match self.0 {
            Block::Text(text) => {
                map.serialize_entry("type", "text")?;
                map.serialize_entry("text", text)?;
            }
            Block::Image(url) => {
                map.serialize_entry("type", "image")?;
                map.serialize_entry("source", &ImageSource(url))?;
            }
            Block::ToolUse(call) => {
                map.serialize_entry("type", "tool_use")?;
                map.serialize_entry("id", &call.id)?;
                map.serialize_entry("name", &call.name)?;
                map.serialize_entry("input", arguments::<S::Error>(&call.arguments)?)?;
            }
            Block::ToolResult { id, message } => {
                map.serialize_entry("type", "tool_result")?;
                map.serialize_entry("tool_use_id", id)?;
                map.serialize_entry("content", &message.joined_text())?;
            }
        }
        map.end()
    }
}

/// Tool-call arguments as a JSON object; an empty string (a call without arguments) is `{}`.
pub(crate) fn arguments<E: serde::ser::Error>(text: &str) -> Result<&RawValue, E> {
    let text = text.trim();
    raw(
        "tool call arguments",
        if text.is_empty() { "{}" } else { text },
    )
}

struct ImageSource<'a>(&'a str);

impl Serialize for ImageSource<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        if let Some(data) = data_url(self.0) {
            map.serialize_entry("type", "base64")?;
            map.serialize_entry("media_type", data.media_type)?;
            map.serialize_entry("data", data.data)?;
        } else if self.0.starts_with("data:") {
            return Err(serde::ser::Error::custom("image data url is not base64"));
        } else {
            map.serialize_entry("type", "url")?;
            map.serialize_entry("url", self.0)?;
        }
        map.end()
    }
}

struct Tools<'a>(&'a [ToolDefinition]);

impl Serialize for Tools<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct ToolOut<'a>(&'a ToolDefinition);
        impl Serialize for ToolOut<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let t = self.0;
                let mut map = s.serialize_map(None)?;
                map.serialize_entry("name", &t.name)?;
                if let Some(d) = &t.description {
                    map.serialize_entry("description", d)?;
                }
                let schema = t
                    .parameters
                    .as_ref()
                    .map_or(r#"{"type":"object","properties":{}}"#, |p| p.as_str());
                map.serialize_entry("input_schema", raw::<S::Error>("tool parameters", schema)?)?;
                map.end()
            }
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for tool in self.0 {
            seq.serialize_element(&ToolOut(tool))?;
        }
        seq.end()
    }
}

struct Choice<'a>(&'a ToolChoice);

impl Serialize for Choice<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match self.0 {
            ToolChoice::Auto => map.serialize_entry("type", "auto")?,
            ToolChoice::None => map.serialize_entry("type", "none")?,
            ToolChoice::Required => map.serialize_entry("type", "any")?,
            ToolChoice::Function(name) => {
                map.serialize_entry("type", "tool")?;
                map.serialize_entry("name", name)?;
            }
        }
        map.end()
    }
}

// ----- responses -----

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Option<Vec<WireBlock>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u32>,
    #[serde(default)]
    cache_read_input_tokens: Option<u32>,
}

impl WireUsage {
    /// The domain usage: every prompt token, cached or not, with the cache reads as cached
    /// tokens; `input` stands in when the event has no input count (`message_delta`).
    fn usage(self, input: u32) -> Usage {
        Usage {
            cached_input_tokens: Some(self.cache_read_input_tokens.unwrap_or(0)),
            ..Usage::new(
                self.input().unwrap_or(input),
                self.output_tokens.unwrap_or(0),
            )
        }
    }

    /// All prompt tokens, cached or not.
    fn input(self) -> Option<u32> {
        self.input_tokens.map(|n| {
            n.saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
                .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
        })
    }
}

/// The domain finish reason of an Anthropic `stop_reason`.
pub fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.into()),
    }
}

/// Decodes a Messages response.
///
/// # Errors
///
/// A malformed body ([`ErrorClass::Connect`]), or the classified error when the body is an error.
pub fn parse_response(
    body: &[u8],
    upstream_model: &str,
    keys: &[Secret],
) -> Result<ChatResponse, UpstreamError> {
    let wire: WireMessage = serde_json::from_slice(body).map_err(|_| {
        UpstreamError::new(
            ErrorClass::Connect,
            "malformed upstream response: not an anthropic message",
        )
    })?;
    let Some(blocks) = wire.content else {
        let parsed = ProviderError::parse(body);
        if parsed.codes.is_empty() && parsed.message.is_none() {
            return Err(UpstreamError::new(
                ErrorClass::Connect,
                "malformed upstream response: no content",
            ));
        }
        return Err(classify::stream_error(&parsed, keys));
    };
    let mut message = Message {
        role: Role::Assistant,
        content: Vec::new(),
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    };
    for block in blocks {
        match block.kind.as_str() {
            "text" => message.content.extend(block.text.map(ContentPart::Text)),
            "tool_use" => message.tool_calls.push(ToolCall {
                id: block.id.unwrap_or_default(),
                name: block.name.unwrap_or_default(),
                arguments: block
                    .input
                    .map_or_else(|| "{}".to_owned(), |i| i.get().to_owned()),
            }),
            // Thinking blocks and server-tool blocks are not part of the neutral answer.
            _ => {}
        }
    }
    let mut response = ChatResponse::new(
        wire.model.as_deref().unwrap_or(upstream_model).into(),
        message,
    );
    response.id = wire.id;
    response.finish_reason = wire.stop_reason.as_deref().map(finish_reason);
    response.usage = wire.usage.map(|u| u.usage(0));
    Ok(response)
}

// ----- streams -----

#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    content_block: Option<WireBlock>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Decodes Anthropic stream events; see the module docs for how the end is detected.
#[derive(Debug)]
pub(crate) struct StreamDecoder {
    keys: Arc<[Secret]>,
    model: Option<Arc<str>>,
    input_tokens: u32,
    /// Cache reads of `message_start`, for when `message_delta` does not repeat them.
    cached_tokens: Option<u32>,
    /// Content block index → tool call ordinal, for `input_json_delta`.
    tool_blocks: HashMap<u32, u32>,
    /// The `message_delta` chunk, held until `message_stop` or the end of the bytes.
    last: Option<StreamChunk>,
}

impl StreamDecoder {
    pub(crate) fn new(keys: Arc<[Secret]>) -> Self {
        Self {
            keys,
            model: None,
            input_tokens: 0,
            cached_tokens: None,
            tool_blocks: HashMap::new(),
            last: None,
        }
    }

    fn chunk(&self) -> StreamChunk {
        StreamChunk {
            model: self.model.clone(),
            ..StreamChunk::default()
        }
    }
}

impl EventDecoder for StreamDecoder {
    fn on_event(&mut self, event: SseEvent) -> Result<Step, UpstreamError> {
        let wire: WireEvent = serde_json::from_str(&event.data)
            .map_err(|_| sse::malformed_error("not an anthropic stream event"))?;
        let kind = event.event.as_deref().unwrap_or(&wire.kind);
        match kind {
            "message_start" => {
                let Some(message) = wire.message else {
                    return Err(sse::malformed_error("message_start without a message"));
                };
                self.model = message.model.as_deref().map(Arc::from);
                self.input_tokens = message.usage.and_then(WireUsage::input).unwrap_or(0);
                self.cached_tokens = message.usage.and_then(|u| u.cache_read_input_tokens);
                Ok(Step::Emit(StreamChunk {
                    id: message.id,
                    role: Some(Role::Assistant),
                    ..self.chunk()
                }))
            }
            "content_block_start" => {
                let block = wire
                    .content_block
                    .ok_or_else(|| sse::malformed_error("content_block_start without a block"))?;
                match block.kind.as_str() {
                    "text" => Ok(match block.text.filter(|t| !t.is_empty()) {
                        Some(text) => Step::Emit(StreamChunk {
                            content: Some(text),
                            ..self.chunk()
                        }),
                        None => Step::Skip,
                    }),
                    "tool_use" => {
                        let ordinal = u32::try_from(self.tool_blocks.len()).unwrap_or(u32::MAX);
                        self.tool_blocks.insert(wire.index.unwrap_or(0), ordinal);
                        // The start event's `input` is always `{}`; the arguments follow as
                        // `input_json_delta` fragments.
                        Ok(Step::Emit(StreamChunk {
                            tool_calls: vec![ToolCallDelta {
                                index: ordinal,
                                id: block.id,
                                name: block.name,
                                arguments: None,
                            }],
                            ..self.chunk()
                        }))
                    }
                    _ => Ok(Step::Skip),
                }
            }
            "content_block_delta" => {
                let delta = wire
                    .delta
                    .ok_or_else(|| sse::malformed_error("content_block_delta without a delta"))?;
                match delta.kind.as_deref() {
                    Some("text_delta") => Ok(Step::Emit(StreamChunk {
                        content: delta.text,
                        ..self.chunk()
                    })),
                    Some("input_json_delta") => {
                        let Some(&ordinal) = self.tool_blocks.get(&wire.index.unwrap_or(0)) else {
                            return Err(sse::malformed_error(
                                "input_json_delta outside a tool_use block",
                            ));
                        };
                        Ok(Step::Emit(StreamChunk {
                            tool_calls: vec![ToolCallDelta {
                                index: ordinal,
                                id: None,
                                name: None,
                                arguments: delta.partial_json,
                            }],
                            ..self.chunk()
                        }))
                    }
                    _ => Ok(Step::Skip),
                }
            }
            "message_delta" => {
                let usage = wire.usage.unwrap_or_default();
                let chunk = StreamChunk {
                    finish_reason: wire
                        .delta
                        .and_then(|d| d.stop_reason)
                        .as_deref()
                        .map(finish_reason),
                    usage: Some(Usage {
                        cached_input_tokens: usage
                            .cache_read_input_tokens
                            .or(self.cached_tokens)
                            .or(Some(0)),
                        ..usage.usage(self.input_tokens)
                    }),
                    ..self.chunk()
                };
                self.last = Some(chunk);
                Ok(Step::Skip)
            }
            "message_stop" => Ok(Step::End(self.last.take().into_iter().collect())),
            "error" => Err(classify::stream_error(
                &ProviderError::parse(event.data.as_bytes()),
                &self.keys,
            )),
            // `ping`, `content_block_stop` and event types added later.
            _ => Ok(Step::Skip),
        }
    }

    fn on_eof(&mut self) -> Result<Vec<StreamChunk>, UpstreamError> {
        // A clean end after the stop reason is a complete answer without `message_stop`.
        match self.last.take().filter(|last| last.finish_reason.is_some()) {
            Some(last) => Ok(vec![last]),
            None => Err(sse::cut_error("a message_delta with a stop_reason")),
        }
    }
}
