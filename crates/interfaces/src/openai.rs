//! The OpenAI chat-completions wire format at the gateway's edge: request parsing into domain
//! types, and rendering of answers, stream chunks and errors.
//!
//! Conversions are written by hand so that the domain never sees a wire type. Parsing reports the
//! exact field that is wrong (`messages[2].role`) so a client can fix its request.

use std::fmt::Write as _;

use echelon_domain::chat::{
    ChatRequest, ChatResponse, ContentPart, FinishReason, Message, Parameters, RawJson, Role,
    StreamChunk, ToolCall, ToolChoice, ToolDefinition, Usage,
};
use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

/// A request body that could not be turned into a chat request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    /// What is wrong, for the client.
    pub message: String,
    /// The offending field, as a path (`messages[0].content`), when known.
    pub param: Option<String>,
}

impl BadRequest {
    fn new(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        Self {
            message: message.into(),
            param: param.into(),
        }
    }
}

/// A parsed chat-completions request: the client-facing model name and the neutral request.
#[derive(Debug)]
pub struct ParsedRequest {
    /// The `model` field: a wrapper, `group:NAME`, `pool:NAME` or `provider/model`.
    pub model: String,
    /// The request in domain form.
    pub request: ChatRequest,
    /// Whether the client asked for usage in the final stream chunk.
    pub include_usage: bool,
}

#[derive(Deserialize)]
struct WireStreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireStop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum WireRole {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Deserialize)]
struct WireMessage {
    role: WireRole,
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Parts(Vec<WirePart>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart {
    Text { text: String },
    ImageUrl { image_url: WireImageUrl },
}

#[derive(Deserialize)]
struct WireImageUrl {
    url: String,
    #[serde(default)]
    detail: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunctionCall,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct WireTool {
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireToolChoice {
    Mode(String),
    Function { function: WireToolChoiceFunction },
}

#[derive(Deserialize)]
struct WireToolChoiceFunction {
    name: String,
}

/// Parses a chat-completions body.
///
/// The body is scanned once into raw top-level fields; each known field is then parsed on its
/// own, so an error names the exact field, and unknown fields are kept verbatim for
/// OpenAI-compatible upstreams without a round trip through a JSON tree.
///
/// # Errors
/// A [`BadRequest`] naming the field that is malformed, missing or out of range.
pub fn parse_request(body: &[u8]) -> Result<ParsedRequest, BadRequest> {
    let top: Vec<(String, &RawValue)> = serde_json::from_slice::<TopLevel<'_>>(body)
        .map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                BadRequest::new(format!("request body is not valid JSON: {e}"), None)
            } else {
                BadRequest::new("request body must be a JSON object", None)
            }
        })?
        .0;
    let mut fields = Fields::default();
    let mut extra = Vec::new();
    for (key, raw) in top {
        match key.as_str() {
            "model" => fields.model = Some(field(&key, raw)?),
            "messages" => fields.messages = Some(field(&key, raw)?),
            "stream" => fields.stream = field(&key, raw)?,
            "stream_options" => fields.stream_options = field(&key, raw)?,
            "temperature" => fields.temperature = field(&key, raw)?,
            "top_p" => fields.top_p = field(&key, raw)?,
            "max_tokens" => fields.max_tokens = field(&key, raw)?,
            "max_completion_tokens" => fields.max_completion_tokens = field(&key, raw)?,
            "stop" => fields.stop = field(&key, raw)?,
            "seed" => fields.seed = field(&key, raw)?,
            "presence_penalty" => fields.presence_penalty = field(&key, raw)?,
            "frequency_penalty" => fields.frequency_penalty = field(&key, raw)?,
            "tools" => fields.tools = field(&key, raw)?,
            "tool_choice" => fields.tool_choice = field(&key, raw)?,
            _ => extra.push((key.into_boxed_str(), RawJson::new(raw.get()))),
        }
    }
    convert(fields, extra)
}

/// The top-level object as `(key, raw value)` pairs, in body order.
struct TopLevel<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for TopLevel<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = TopLevel<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut pairs = Vec::with_capacity(8);
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    pairs.push((key, value));
                }
                Ok(TopLevel(pairs))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

#[derive(Default)]
struct Fields {
    model: Option<String>,
    messages: Option<Vec<WireMessage>>,
    stream: Option<bool>,
    stream_options: Option<WireStreamOptions>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stop: Option<WireStop>,
    seed: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    tools: Option<Vec<WireTool>>,
    tool_choice: Option<WireToolChoice>,
}

fn field<'de, T: Deserialize<'de>>(name: &str, raw: &'de RawValue) -> Result<T, BadRequest> {
    // A valid field, the common case, skips serde_path_to_error's per-node bookkeeping; only an
    // invalid one is parsed again, with path tracking, to name the exact place of the error.
    if let Ok(value) = serde_json::from_str(raw.get()) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let param = if path == "." || path.is_empty() {
            name.to_owned()
        } else if path.starts_with('[') {
            format!("{name}{path}")
        } else {
            format!("{name}.{path}")
        };
        let inner = error.into_inner();
        BadRequest::new(format!("invalid `{param}`: {inner}"), param)
    })
}

fn convert(wire: Fields, extra: Vec<(Box<str>, RawJson)>) -> Result<ParsedRequest, BadRequest> {
    let Some(model) = wire.model else {
        return Err(BadRequest::new("missing field `model`", "model".to_owned()));
    };
    let Some(messages) = wire.messages else {
        return Err(BadRequest::new(
            "missing field `messages`",
            "messages".to_owned(),
        ));
    };
    if model.trim().is_empty() {
        return Err(BadRequest::new(
            "`model` must not be empty",
            "model".to_owned(),
        ));
    }
    if messages.is_empty() {
        return Err(BadRequest::new(
            "`messages` must contain at least one message",
            "messages".to_owned(),
        ));
    }
    if let Some(t) = wire.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(BadRequest::new(
            "`temperature` must be between 0 and 2",
            "temperature".to_owned(),
        ));
    }
    if let Some(p) = wire.top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(BadRequest::new(
            "`top_p` must be between 0 and 1",
            "top_p".to_owned(),
        ));
    }
    let max_tokens = wire.max_completion_tokens.or(wire.max_tokens);
    if max_tokens == Some(0) {
        return Err(BadRequest::new(
            "`max_tokens` must be at least 1",
            "max_tokens".to_owned(),
        ));
    }
    let messages = messages
        .into_iter()
        .enumerate()
        .map(|(index, m)| convert_message(index, m))
        .collect::<Result<Vec<_>, _>>()?;
    let tool_choice = match wire.tool_choice {
        None => None,
        Some(WireToolChoice::Function { function }) => Some(ToolChoice::Function(function.name)),
        Some(WireToolChoice::Mode(mode)) => Some(match mode.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(BadRequest::new(
                    format!(
                        "`tool_choice` must be auto, none, required or a function, not `{other}`"
                    ),
                    "tool_choice".to_owned(),
                ));
            }
        }),
    };
    let stop = match wire.stop {
        None => Vec::new(),
        Some(WireStop::One(s)) => vec![s],
        Some(WireStop::Many(v)) => v,
    };
    let tools = wire
        .tools
        .unwrap_or_default()
        .into_iter()
        .map(|t| ToolDefinition {
            name: t.function.name,
            description: t.function.description,
            parameters: t.function.parameters.map(|p| RawJson::new(p.get())),
        })
        .collect();
    let include_usage = wire.stream_options.is_some_and(|o| o.include_usage);
    let mut request = ChatRequest::new(messages);
    request.params = Parameters {
        temperature: wire.temperature,
        top_p: wire.top_p,
        max_tokens,
        stop,
        seed: wire.seed,
        presence_penalty: wire.presence_penalty,
        frequency_penalty: wire.frequency_penalty,
    };
    request.tools = tools;
    request.tool_choice = tool_choice;
    request.stream = wire.stream.unwrap_or(false);
    request.extra = extra;
    Ok(ParsedRequest {
        model,
        request,
        include_usage,
    })
}

fn convert_message(index: usize, wire: WireMessage) -> Result<Message, BadRequest> {
    let role = match wire.role {
        WireRole::System | WireRole::Developer => Role::System,
        WireRole::User => Role::User,
        WireRole::Assistant => Role::Assistant,
        WireRole::Tool | WireRole::Function => Role::Tool,
    };
    let content = match wire.content {
        None => Vec::new(),
        Some(WireContent::Text(text)) => vec![ContentPart::Text(text)],
        Some(WireContent::Parts(parts)) => parts
            .into_iter()
            .map(|part| match part {
                WirePart::Text { text } => ContentPart::Text(text),
                WirePart::ImageUrl { image_url } => ContentPart::ImageUrl {
                    url: image_url.url,
                    detail: image_url.detail.map(String::into_boxed_str),
                },
            })
            .collect(),
    };
    let tool_calls: Vec<ToolCall> = wire
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| ToolCall {
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments,
        })
        .collect();
    if role == Role::Tool && wire.tool_call_id.is_none() {
        return Err(BadRequest::new(
            "a tool message needs `tool_call_id`",
            format!("messages[{index}].tool_call_id"),
        ));
    }
    if content.is_empty() && tool_calls.is_empty() && role != Role::Assistant {
        return Err(BadRequest::new(
            "message has no content",
            format!("messages[{index}].content"),
        ));
    }
    Ok(Message {
        role,
        content,
        tool_calls,
        tool_call_id: wire.tool_call_id,
        name: wire.name,
    })
}

fn finish_reason_str(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other(other) => other,
    }
}

struct WireUsage(Usage);

impl Serialize for WireUsage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("prompt_tokens", &self.0.input_tokens)?;
        map.serialize_entry("completion_tokens", &self.0.output_tokens)?;
        map.serialize_entry("total_tokens", &self.0.total())?;
        map.end()
    }
}

struct WireToolCalls<'a>(&'a [ToolCall]);

impl Serialize for WireToolCalls<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|call| {
            serde_json::json!({
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            })
        }))
    }
}

struct WireResponseMessage<'a>(&'a Message);

impl Serialize for WireResponseMessage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let message = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("role", "assistant")?;
        if message.content.is_empty() && !message.tool_calls.is_empty() {
            map.serialize_entry("content", &None::<&str>)?;
        } else {
            map.serialize_entry("content", &message.joined_text())?;
        }
        if !message.tool_calls.is_empty() {
            map.serialize_entry("tool_calls", &WireToolCalls(&message.tool_calls))?;
        }
        map.end()
    }
}

/// Renders a complete answer as an OpenAI `chat.completion` object.
pub fn render_response(response: &ChatResponse, fallback_id: &str, created: u64) -> Vec<u8> {
    struct Choice<'a>(&'a ChatResponse);
    impl Serialize for Choice<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(3))?;
            map.serialize_entry("index", &0)?;
            map.serialize_entry("message", &WireResponseMessage(&self.0.message))?;
            map.serialize_entry(
                "finish_reason",
                &self.0.finish_reason.as_ref().map(finish_reason_str),
            )?;
            map.end()
        }
    }
    struct Body<'a>(&'a ChatResponse, &'a str, u64);
    impl Serialize for Body<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(None)?;
            map.serialize_entry("id", self.0.id.as_deref().unwrap_or(self.1))?;
            map.serialize_entry("object", "chat.completion")?;
            map.serialize_entry("created", &self.2)?;
            map.serialize_entry("model", &*self.0.model)?;
            map.serialize_entry("choices", &[Choice(self.0)])?;
            if let Some(usage) = self.0.usage {
                map.serialize_entry("usage", &WireUsage(usage))?;
            }
            map.end()
        }
    }
    // Sized for a short answer at once; `to_vec` would start at 128 bytes and grow twice.
    let mut out = Vec::with_capacity(512);
    if serde_json::to_writer(&mut out, &Body(response, fallback_id, created)).is_err() {
        out.clear();
    }
    out
}

/// Renders one stream chunk as an SSE event (`data: {...}\n\n`) of an OpenAI
/// `chat.completion.chunk`; `model` names the model that is answering.
pub fn render_chunk_event(chunk: &StreamChunk, id: &str, model: &str, created: u64) -> Vec<u8> {
    struct Delta<'a>(&'a StreamChunk);
    impl Serialize for Delta<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let chunk = self.0;
            let mut map = s.serialize_map(None)?;
            if let Some(role) = chunk.role {
                let role = match role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                    Role::Tool => "tool",
                };
                map.serialize_entry("role", role)?;
            }
            if let Some(content) = &chunk.content {
                map.serialize_entry("content", content)?;
            }
            if !chunk.tool_calls.is_empty() {
                let calls: Vec<_> = chunk
                    .tool_calls
                    .iter()
                    .map(|d| {
                        let mut call = serde_json::Map::new();
                        call.insert("index".into(), d.index.into());
                        if let Some(id) = &d.id {
                            call.insert("id".into(), id.clone().into());
                            call.insert("type".into(), "function".into());
                        }
                        let mut function = serde_json::Map::new();
                        if let Some(name) = &d.name {
                            function.insert("name".into(), name.clone().into());
                        }
                        if let Some(arguments) = &d.arguments {
                            function.insert("arguments".into(), arguments.clone().into());
                        }
                        call.insert("function".into(), function.into());
                        serde_json::Value::Object(call)
                    })
                    .collect();
                map.serialize_entry("tool_calls", &calls)?;
            }
            map.end()
        }
    }
    struct Choice<'a>(&'a StreamChunk);
    impl Serialize for Choice<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(3))?;
            map.serialize_entry("index", &0)?;
            map.serialize_entry("delta", &Delta(self.0))?;
            map.serialize_entry(
                "finish_reason",
                &self.0.finish_reason.as_ref().map(finish_reason_str),
            )?;
            map.end()
        }
    }
    struct Body<'a> {
        chunk: &'a StreamChunk,
        id: &'a str,
        model: &'a str,
        created: u64,
    }
    impl Serialize for Body<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(None)?;
            map.serialize_entry("id", self.id)?;
            map.serialize_entry("object", "chat.completion.chunk")?;
            map.serialize_entry("created", &self.created)?;
            map.serialize_entry("model", self.model)?;
            let usage_only = !self.chunk.has_content()
                && self.chunk.role.is_none()
                && self.chunk.finish_reason.is_none()
                && self.chunk.usage.is_some();
            if usage_only {
                map.serialize_entry("choices", &[] as &[u8])?;
            } else {
                map.serialize_entry("choices", &[Choice(self.chunk)])?;
            }
            if let Some(usage) = self.chunk.usage {
                map.serialize_entry("usage", &WireUsage(usage))?;
            }
            map.end()
        }
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    let body = Body {
        chunk,
        id,
        model,
        created,
    };
    if serde_json::to_writer(&mut out, &body).is_err() {
        out.truncate(6);
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    out
}

/// The closing event of a successful stream.
pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// An OpenAI-shaped error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody<'a> {
    /// What went wrong, for people.
    pub message: &'a str,
    /// OpenAI's error type (`invalid_request_error`, `rate_limit_error`, …).
    pub kind: &'a str,
    /// The request field at fault.
    pub param: Option<&'a str>,
    /// A stable machine-readable code (`model_not_found`, `rate_limited`, …).
    pub code: Option<&'a str>,
}

impl Serialize for ErrorBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Inner<'a>(&'a ErrorBody<'a>);
        impl Serialize for Inner<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(4))?;
                map.serialize_entry("message", self.0.message)?;
                map.serialize_entry("type", self.0.kind)?;
                map.serialize_entry("param", &self.0.param)?;
                map.serialize_entry("code", &self.0.code)?;
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("error", &Inner(self))?;
        map.end()
    }
}

impl ErrorBody<'_> {
    /// The body as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The body as an SSE `error` event, which ends a stream that cannot complete.
    pub fn to_sse_event(&self) -> Vec<u8> {
        let mut out = String::from("event: error\ndata: ");
        let json = serde_json::to_string(self).unwrap_or_default();
        let _ = write!(out, "{json}\n\n");
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_typical_sdk_request_with_model_last() {
        let body = br#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]}],"temperature":0.2,"stream":true,"stream_options":{"include_usage":true},"logprobs":true,"model":"chat"}"#;
        let parsed = parse_request(body).unwrap();
        assert_eq!(parsed.model, "chat");
        assert!(parsed.request.stream);
        assert!(parsed.include_usage);
        assert_eq!(parsed.request.messages.len(), 2);
        assert_eq!(parsed.request.messages[0].role, Role::System);
        assert_eq!(parsed.request.params.temperature, Some(0.2));
        assert_eq!(parsed.request.extra.len(), 1);
        assert_eq!(&*parsed.request.extra[0].0, "logprobs");
        assert_eq!(parsed.request.extra[0].1.as_str(), "true");
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let cases: [(&[u8], Option<&str>); 6] = [
            (br#"{"model":"x"}"#, Some("messages")),
            (
                br#"{"model":"x","messages":[{"role":"robot","content":"hi"}]}"#,
                Some("messages[0].role"),
            ),
            (
                br#"{"model":"x","messages":[],"stream":true}"#,
                Some("messages"),
            ),
            (
                br#"{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#,
                Some("temperature"),
            ),
            (
                br#"{"model":"x","messages":[{"role":"tool","content":"42"}]}"#,
                Some("messages[0].tool_call_id"),
            ),
            (
                br#"{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":7}"#,
                Some("temperature"),
            ),
        ];
        for (body, param) in cases {
            let error = parse_request(body).unwrap_err();
            assert_eq!(error.param.as_deref(), param, "{}", error.message);
        }
        let missing = parse_request(br#"{"model":"x"}"#).unwrap_err();
        assert!(
            missing.message.contains("missing field `messages`"),
            "{}",
            missing.message
        );
        let syntax = parse_request(b"{not json").unwrap_err();
        assert!(syntax.message.starts_with("request body is not valid JSON"));
        let trailing =
            parse_request(br#"{"model":"x","messages":[{"role":"user","content":"hi"}]} x"#);
        assert!(trailing.is_err());
    }

    #[test]
    fn renders_response_chunk_and_error_in_openai_shape() {
        let response = ChatResponse {
            id: None,
            model: "gpt-4o-mini".into(),
            message: Message::text(Role::Assistant, "hello"),
            finish_reason: Some(FinishReason::Stop),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 1,
            }),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&render_response(&response, "chatcmpl-1", 7)).unwrap();
        assert_eq!(json["model"], "gpt-4o-mini");
        assert_eq!(json["id"], "chatcmpl-1");
        assert_eq!(json["choices"][0]["message"]["content"], "hello");
        assert_eq!(json["choices"][0]["finish_reason"], "stop");
        assert_eq!(json["usage"]["total_tokens"], 4);

        let chunk = StreamChunk {
            content: Some("he".into()),
            ..StreamChunk::default()
        };
        let event = render_chunk_event(&chunk, "id-1", "m", 1);
        let text = std::str::from_utf8(&event).unwrap();
        assert!(text.starts_with("data: {") && text.ends_with("}\n\n"));
        let json: serde_json::Value = serde_json::from_str(&text[6..text.len() - 2]).unwrap();
        assert_eq!(json["choices"][0]["delta"]["content"], "he");
        assert!(json["choices"][0]["finish_reason"].is_null());

        let error = ErrorBody {
            message: "no such model",
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        };
        let json: serde_json::Value = serde_json::from_slice(&error.to_json()).unwrap();
        assert_eq!(json["error"]["code"], "model_not_found");
        assert_eq!(json["error"]["param"], "model");
        assert!(
            std::str::from_utf8(&error.to_sse_event())
                .unwrap()
                .starts_with("event: error\ndata: {\"error\"")
        );
    }
}
