//! Chat completions requests: the edge parses a client's body into domain types, and the
//! OpenAI-compatible adapter encodes a domain request for its upstream.
//!
//! Parsing reports the exact field that is wrong (`messages[2].role`) so a client can fix its
//! request; fields the domain does not model are kept verbatim ([`ChatRequest::extra`]).
//! Encoding is derived over borrowed views of the request; the `extra` fields are forwarded as
//! they are, except keys the encoder writes itself. Streams ask for
//! `stream_options.include_usage`.

use echelon_domain::chat::{
    ChatRequest, ContentPart, Message, Parameters, RawJson, Role, ToolCall, ToolChoice,
    ToolDefinition,
};
use echelon_domain::error::{ErrorClass, UpstreamError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::role_name;
use crate::wire::{Extras, Json};

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

// ----- encoding, for an OpenAI-compatible upstream -----

/// Request keys the encoder writes; an `extra` field with one of these names is dropped.
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

/// Encodes a chat completions request body for `upstream_model`.
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
    let p = &request.params;
    let body = Body {
        model: upstream_model,
        messages: request.messages.iter().map(MessageOut::of).collect(),
        temperature: p.temperature,
        top_p: p.top_p,
        max_tokens: p.max_tokens,
        stop: &p.stop,
        seed: p.seed,
        presence_penalty: p.presence_penalty,
        frequency_penalty: p.frequency_penalty,
        tools: request.tools.iter().map(ToolOut::of).collect(),
        tool_choice: request.tool_choice.as_ref().map(ToolChoiceOut::of),
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
        extra: Extras::list(&request.extra, OWN_KEYS),
    };
    let mut out = Vec::with_capacity(256 + request.estimated_input_tokens() as usize * 5);
    serde_json::to_writer(&mut out, &body).map_err(|e| {
        UpstreamError::new(
            ErrorClass::InvalidRequest,
            format!("request cannot be encoded for an openai upstream: {e}"),
        )
    })?;
    Ok(out)
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<MessageOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    extra: Extras<'a>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    /// `null` for an assistant message that only calls tools.
    content: Option<ContentOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

impl<'a> MessageOut<'a> {
    fn of(m: &'a Message) -> Self {
        let content = match m.content.as_slice() {
            [] if !m.tool_calls.is_empty() => None,
            [] => Some(ContentOut::Text("")),
            [ContentPart::Text(text)] => Some(ContentOut::Text(text)),
            parts => Some(ContentOut::Parts(parts.iter().map(PartOut::of).collect())),
        };
        Self {
            role: role_name(m.role),
            content,
            name: m.name.as_deref(),
            tool_calls: m.tool_calls.iter().map(ToolCallOut::of).collect(),
            tool_call_id: m.tool_call_id.as_deref(),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ContentOut<'a> {
    Text(&'a str),
    Parts(Vec<PartOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PartOut<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrlOut<'a> },
}

impl<'a> PartOut<'a> {
    fn of(part: &'a ContentPart) -> Self {
        match part {
            ContentPart::Text(text) => Self::Text { text },
            ContentPart::ImageUrl { url, detail } => Self::ImageUrl {
                image_url: ImageUrlOut {
                    url,
                    detail: detail.as_deref(),
                },
            },
        }
    }
}

#[derive(Serialize)]
struct ImageUrlOut<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// A tool call of a message, in requests and in answers alike.
#[derive(Serialize)]
pub(crate) struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCallOut<'a>,
}

#[derive(Serialize)]
struct FunctionCallOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl<'a> ToolCallOut<'a> {
    pub(crate) fn of(call: &'a ToolCall) -> Self {
        Self {
            id: &call.id,
            kind: "function",
            function: FunctionCallOut {
                name: &call.name,
                arguments: &call.arguments,
            },
        }
    }
}

#[derive(Serialize)]
struct ToolOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Json<'a>>,
}

impl<'a> ToolOut<'a> {
    fn of(tool: &'a ToolDefinition) -> Self {
        Self {
            kind: "function",
            function: FunctionOut {
                name: &tool.name,
                description: tool.description.as_deref(),
                parameters: tool
                    .parameters
                    .as_ref()
                    .map(|p| Json::new("tool parameters", p.as_str())),
            },
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolChoiceOut<'a> {
    Mode(&'static str),
    Function {
        #[serde(rename = "type")]
        kind: &'static str,
        function: NameOut<'a>,
    },
}

#[derive(Serialize)]
struct NameOut<'a> {
    name: &'a str,
}

impl<'a> ToolChoiceOut<'a> {
    fn of(choice: &'a ToolChoice) -> Self {
        match choice {
            ToolChoice::Auto => Self::Mode("auto"),
            ToolChoice::None => Self::Mode("none"),
            ToolChoice::Required => Self::Mode("required"),
            ToolChoice::Function(name) => Self::Function {
                kind: "function",
                function: NameOut { name },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echelon_domain::chat::{RawJson, ToolDefinition};

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
}
