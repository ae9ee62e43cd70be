//! OpenAI chat completions wire format: request encoding, response and stream decoding.
//!
//! The request is serialized straight from the borrowed domain request. Fields the domain does
//! not model ([`ChatRequest::extra`]) are forwarded as they are, except keys this module writes
//! itself. Streams ask for `stream_options.include_usage`, and a stream is only complete at
//! `data: [DONE]`: the finish chunk is held back until then, merged with the usage chunk, so a
//! stream cut anywhere before `[DONE]` ends with an error, never with a finish reason.

use std::sync::Arc;

use echelon_domain::chat::{
    ChatRequest, ChatResponse, ContentPart, FinishReason, Message, Role, StreamChunk, ToolCall,
    ToolCallDelta, ToolChoice, Usage,
};
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::secret::Secret;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::classify::{self, ProviderError};
use super::sse::{self, EventDecoder, SseEvent, Step};

/// Request keys this module writes; an `extra` field with one of these names is dropped.
const OWN_KEYS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "tool_choice",
];

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
    let mut out = Vec::with_capacity(256 + request.estimated_input_tokens() as usize * 5);
    serde_json::to_writer(
        &mut out,
        &Body {
            model: upstream_model,
            request,
            stream,
        },
    )
    .map_err(|e| {
        UpstreamError::new(
            ErrorClass::InvalidRequest,
            format!("request cannot be encoded for an openai upstream: {e}"),
        )
    })?;
    Ok(out)
}

/// Parses raw JSON text for embedding, borrowed; invalid JSON fails the serialization.
pub(crate) fn raw<'a, E: serde::ser::Error>(what: &str, json: &'a str) -> Result<&'a RawValue, E> {
    serde_json::from_str::<&RawValue>(json)
        .map_err(|_| E::custom(format!("{what} is not valid json")))
}

struct Body<'a> {
    model: &'a str,
    request: &'a ChatRequest,
    stream: bool,
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.request;
        let p = &r.params;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("messages", &Messages(&r.messages))?;
        if let Some(v) = p.temperature {
            map.serialize_entry("temperature", &v)?;
        }
        if let Some(v) = p.top_p {
            map.serialize_entry("top_p", &v)?;
        }
        if let Some(v) = p.max_tokens {
            map.serialize_entry("max_tokens", &v)?;
        }
        if !p.stop.is_empty() {
            map.serialize_entry("stop", &p.stop)?;
        }
        if let Some(v) = p.seed {
            map.serialize_entry("seed", &v)?;
        }
        if let Some(v) = p.presence_penalty {
            map.serialize_entry("presence_penalty", &v)?;
        }
        if let Some(v) = p.frequency_penalty {
            map.serialize_entry("frequency_penalty", &v)?;
        }
        if !r.tools.is_empty() {
            map.serialize_entry("tools", &Tools(&r.tools))?;
        }
        if let Some(choice) = &r.tool_choice {
            map.serialize_entry("tool_choice", &Choice(choice))?;
        }
        if self.stream {
            map.serialize_entry("stream", &true)?;
            map.serialize_entry("stream_options", &IncludeUsage)?;
        }
        for (key, value) in &r.extra {
            if !OWN_KEYS.contains(&&**key) {
                map.serialize_entry(&**key, raw::<S::Error>(key, value.as_str())?)?;
            }
        }
        map.end()
    }
}

struct IncludeUsage;

impl Serialize for IncludeUsage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("include_usage", &true)?;
        map.end()
    }
}

struct Messages<'a>(&'a [Message]);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for message in self.0 {
            seq.serialize_element(&WireMessageOut(message))?;
        }
        seq.end()
    }
}

/// The OpenAI name of a role.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

struct WireMessageOut<'a>(&'a Message);

impl Serialize for WireMessageOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("role", role_name(m.role))?;
        match m.content.as_slice() {
            [] if !m.tool_calls.is_empty() => map.serialize_entry("content", &())?,
            [] => map.serialize_entry("content", "")?,
            [ContentPart::Text(text)] => map.serialize_entry("content", text)?,
            parts => map.serialize_entry("content", &Parts(parts))?,
        }
        if let Some(name) = &m.name {
            map.serialize_entry("name", name)?;
        }
        if !m.tool_calls.is_empty() {
            map.serialize_entry("tool_calls", &ToolCalls(&m.tool_calls))?;
        }
        if let Some(id) = &m.tool_call_id {
            map.serialize_entry("tool_call_id", id)?;
        }
        map.end()
    }
}

struct Parts<'a>(&'a [ContentPart]);

impl Serialize for Parts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for part in self.0 {
            seq.serialize_element(&Part(part))?;
        }
        seq.end()
    }
}

struct Part<'a>(&'a ContentPart);

impl Serialize for Part<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        match self.0 {
            ContentPart::Text(text) => {
                map.serialize_entry("type", "text")?;
                map.serialize_entry("text", text)?;
            }
            ContentPart::ImageUrl { url, detail } => {
                map.serialize_entry("type", "image_url")?;
                map.serialize_entry("image_url", &ImageUrl { url, detail })?;
            }
        }
        map.end()
    }
}

#[derive(Serialize)]
struct ImageUrl<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: &'a Option<Box<str>>,
}

struct ToolCalls<'a>(&'a [ToolCall]);

impl Serialize for ToolCalls<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Function<'a> {
            name: &'a str,
            arguments: &'a str,
        }
        #[derive(Serialize)]
        struct Call<'a> {
            id: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
            function: Function<'a>,
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for call in self.0 {
            seq.serialize_element(&Call {
                id: &call.id,
                kind: "function",
                function: Function {
                    name: &call.name,
                    arguments: &call.arguments,
                },
            })?;
        }
        seq.end()
    }
}

struct Tools<'a>(&'a [echelon_domain::chat::ToolDefinition]);

impl Serialize for Tools<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for tool in self.0 {
            seq.serialize_element(&Tool(tool))?;
        }
        seq.end()
    }
}

struct Tool<'a>(&'a echelon_domain::chat::ToolDefinition);

impl Serialize for Tool<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Function<'a>(&'a echelon_domain::chat::ToolDefinition);
        impl Serialize for Function<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let t = self.0;
                let mut map = s.serialize_map(None)?;
                map.serialize_entry("name", &t.name)?;
                if let Some(d) = &t.description {
                    map.serialize_entry("description", d)?;
                }
                if let Some(p) = &t.parameters {
                    map.serialize_entry(
                        "parameters",
                        raw::<S::Error>("tool parameters", p.as_str())?,
                    )?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("type", "function")?;
        map.serialize_entry("function", &Function(self.0))?;
        map.end()
    }
}

struct Choice<'a>(&'a ToolChoice);

impl Serialize for Choice<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ToolChoice::Auto => s.serialize_str("auto"),
            ToolChoice::None => s.serialize_str("none"),
            ToolChoice::Required => s.serialize_str("required"),
            ToolChoice::Function(name) => {
                #[derive(Serialize)]
                struct Name<'a> {
                    name: &'a str,
                }
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("type", "function")?;
                map.serialize_entry("function", &Name { name })?;
                map.end()
            }
        }
    }
}

// ----- responses -----

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<CompletionChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    index: u32,
    message: WireMessageIn,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessageIn {
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Parts(Vec<WirePart>),
}

#[derive(Deserialize)]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize, Clone, Copy)]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Self {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        }
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
    let completion: Completion =
        serde_json::from_slice(body).map_err(|_| malformed_body("not a chat completion json"))?;
    let Some(choices) = completion.choices else {
        let parsed = ProviderError::parse(body);
        if parsed.codes.is_empty() && parsed.message.is_none() {
            return Err(malformed_body("no choices"));
        }
        return Err(classify::stream_error(&parsed, keys));
    };
    let Some(choice) = choices.into_iter().find(|c| c.index == 0) else {
        return Err(malformed_body("no choices"));
    };
    let mut content = Vec::new();
    match choice.message.content {
        Some(WireContent::Text(text)) => content.push(ContentPart::Text(text)),
        Some(WireContent::Parts(parts)) => {
            content.extend(
                parts
                    .into_iter()
                    .filter_map(|p| p.text)
                    .map(ContentPart::Text),
            );
        }
        None => {}
    }
    if content.is_empty()
        && let Some(refusal) = choice.message.refusal
    {
        content.push(ContentPart::Text(refusal));
    }
    let tool_calls = choice
        .message
        .tool_calls
        .into_iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            id: c.id.unwrap_or_else(|| format!("call_{i}")),
            name: c.function.name,
            arguments: c.function.arguments,
        })
        .collect();
    Ok(ChatResponse {
        id: completion.id,
        model: completion.model.as_deref().unwrap_or(upstream_model).into(),
        message: Message {
            role: Role::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
            name: choice.message.name,
        },
        finish_reason: choice.finish_reason.as_deref().map(finish_reason),
        usage: completion.usage.map(Usage::from),
    })
}

// ----- streams -----

#[derive(Deserialize)]
struct WireChunk<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// Present when the upstream reports a failure inside the stream; the event is then read
    /// again as an error body (a rare path, kept off the per-chunk decoding).
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<DeltaToolCall>,
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

fn role_of(name: &str) -> Option<Role> {
    match name {
        "assistant" => Some(Role::Assistant),
        "system" => Some(Role::System),
        "user" => Some(Role::User),
        "tool" => Some(Role::Tool),
        _ => None,
    }
}

/// Decodes OpenAI chat completion chunks; see the module docs for how the end is detected.
#[derive(Debug)]
pub(crate) struct StreamDecoder {
    keys: Arc<[Secret]>,
    model: Option<Arc<str>>,
    /// The chunk with the finish reason, held until `[DONE]`.
    last: Option<StreamChunk>,
}

impl StreamDecoder {
    pub(crate) fn new(keys: Arc<[Secret]>) -> Self {
        Self {
            keys,
            model: None,
            last: None,
        }
    }

    fn model(&mut self, name: Option<std::borrow::Cow<'_, str>>) -> Option<Arc<str>> {
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
            return Ok(Step::End(self.last.take()));
        }
        let wire: WireChunk<'_> = serde_json::from_str(data)
            .map_err(|_| sse::malformed_error("not a chat completion chunk"))?;
        if wire.error.is_some() || event.event.as_deref() == Some("error") {
            return Err(classify::stream_error(
                &ProviderError::parse(data.as_bytes()),
                &self.keys,
            ));
        }
        let mut chunk = StreamChunk {
            id: wire.id,
            model: self.model(wire.model),
            usage: wire.usage.map(Usage::from),
            ..StreamChunk::default()
        };
        if let Some(choice) = wire.choices.into_iter().find(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                chunk.role = delta.role.as_deref().and_then(role_of);
                chunk.content = delta.content.or(delta.refusal);
                chunk.tool_calls = delta
                    .tool_calls
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
            }
            chunk.finish_reason = choice.finish_reason.as_deref().map(finish_reason);
        }
        if let Some(last) = &mut self.last {
            // After the finish reason only the usage chunk is expected; fold it into the held
            // chunk, and pass anything else on as it is.
            if let Some(usage) = chunk.usage.take() {
                last.usage = Some(usage);
            }
            return Ok(if chunk.has_content() {
                Step::Emit(chunk)
            } else {
                Step::Skip
            });
        }
        if chunk.finish_reason.is_some() {
            self.last = Some(chunk);
            return Ok(Step::Skip);
        }
        let empty = chunk.role.is_none()
            && chunk.content.is_none()
            && chunk.tool_calls.is_empty()
            && chunk.usage.is_none();
        Ok(if empty { Step::Skip } else { Step::Emit(chunk) })
    }

    fn on_eof(&mut self) -> Result<Option<StreamChunk>, UpstreamError> {
        Err(sse::cut_error("data: [DONE]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echelon_domain::chat::{RawJson, ToolDefinition};

    #[test]
    fn request_is_openai_json_with_extra_fields_forwarded() {
        let mut request = ChatRequest::new(vec![
            Message::text(Role::System, "be brief"),
            Message::text(Role::User, "hi"),
        ]);
        request.params.temperature = Some(0.5);
        request.params.max_tokens = Some(7);
        request.tools.push(ToolDefinition {
            name: "f".into(),
            description: None,
            parameters: Some(RawJson::new(r#"{"type":"object"}"#)),
        });
        request.tool_choice = Some(ToolChoice::Function("f".into()));
        request.extra = vec![
            (
                "response_format".into(),
                RawJson::new(r#"{"type":"json_object"}"#),
            ),
            ("model".into(), RawJson::new(r#""hijack""#)),
            ("user".into(), RawJson::new(r#""u-1""#)),
        ];
        let body = request_body("gpt-x", &request, true).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "model": "gpt-x",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"}
                ],
                "temperature": 0.5,
                "max_tokens": 7,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "stream": true,
                "stream_options": {"include_usage": true},
                "response_format": {"type": "json_object"},
                "user": "u-1"
            })
        );
    }

    #[test]
    fn invalid_raw_json_is_an_invalid_request() {
        let mut request = ChatRequest::new(vec![Message::text(Role::User, "hi")]);
        request.extra = vec![("logit_bias".into(), RawJson::new("{nope"))];
        let e = request_body("m", &request, false).unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidRequest);
    }

    #[test]
    fn response_with_tool_calls() {
        let body = br#"{"id":"c1","model":"gpt-x-2024","choices":[{"index":0,"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#;
        let r = parse_response(body, "gpt-x", &[]).unwrap();
        assert_eq!(&*r.model, "gpt-x-2024");
        assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(r.message.tool_calls[0].arguments, r#"{"a":1}"#);
        assert_eq!(r.usage.unwrap().total(), 8);
    }

    #[test]
    fn error_object_in_a_success_body_is_classified() {
        let body = br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#;
        let e = parse_response(body, "m", &[]).unwrap_err();
        assert_eq!(e.class, ErrorClass::RateLimited);
        let e = parse_response(b"{}", "m", &[]).unwrap_err();
        assert_eq!(e.class, ErrorClass::Connect);
    }
}
