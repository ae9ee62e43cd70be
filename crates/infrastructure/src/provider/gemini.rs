//! Gemini `generateContent` wire format, translated both ways from the provider-neutral chat types.
//!
//! Requests: system messages become `systemInstruction`; assistant turns are `model` turns with
//! `functionCall` parts; tool results become `functionResponse` parts of a user turn (the function
//! name is found from the assistant call they answer), consecutive results merged into one turn
//! as Gemini requires for parallel calls. Sampling parameters go to `generationConfig`; `extra`
//! fields are not sent. Tool parameter schemas are passed as `parameters` unchanged.
//!
//! Responses: `thought` parts are skipped, `functionCall` parts become tool calls with ids
//! `call_<n>` when Gemini gives none, and an answer blocked by the prompt filter
//! (`promptFeedback.blockReason`, no candidates) is a content-filter error.
//!
//! Streams (`alt=sse`) have no end marker: one complete response per event, and the stream is
//! complete when the bytes end after a chunk with a `finishReason`. That chunk is held back until
//! the end, so bytes that stop earlier give an error.

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

use super::anthropic::arguments;
use super::classify::{self, ProviderError};
use super::data_url;
use super::openai::raw;
use super::sse::{self, EventDecoder, SseEvent, Step};

/// Encodes a `generateContent` request body (the model is in the URL).
///
/// # Errors
///
/// [`ErrorClass::InvalidRequest`] when a tool result answers no known call, or tool arguments or
/// schemas are not valid JSON.
pub fn request_body(request: &ChatRequest) -> Result<Vec<u8>, UpstreamError> {
    let call_names: HashMap<&str, &str> = request
        .messages
        .iter()
        .flat_map(|m| &m.tool_calls)
        .map(|c| (c.id.as_str(), c.name.as_str()))
        .collect();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        let (role, mut parts) = match message.role {
            Role::System => continue,
            Role::User => ("user", content_parts(&message.content)),
            Role::Assistant => {
                let mut parts = content_parts(&message.content);
                parts.extend(message.tool_calls.iter().map(Part::Call));
                ("model", parts)
            }
            Role::Tool => {
                let name = message
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| call_names.get(id).copied())
                    .ok_or_else(|| {
                        UpstreamError::new(
                            ErrorClass::InvalidRequest,
                            "a tool result answers no tool call of the conversation",
                        )
                    })?;
                ("user", vec![Part::Response { name, message }])
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.parts.append(&mut parts),
            _ => turns.push(Turn { role, parts }),
        }
    }
    let system: Vec<Part<'_>> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .flat_map(|m| content_parts(&m.content))
        .collect();
    let body = Body {
        request,
        turns,
        system,
    };
    let mut out = Vec::with_capacity(256 + request.estimated_input_tokens() as usize * 5);
    serde_json::to_writer(&mut out, &body).map_err(|e| {
        UpstreamError::new(
            ErrorClass::InvalidRequest,
            format!("request cannot be encoded for gemini: {e}"),
        )
    })?;
    Ok(out)
}

struct Body<'a> {
    request: &'a ChatRequest,
    turns: Vec<Turn<'a>>,
    system: Vec<Part<'a>>,
}

struct Turn<'a> {
    role: &'static str,
    parts: Vec<Part<'a>>,
}

enum Part<'a> {
    Text(&'a str),
    Image(&'a str),
    Call(&'a ToolCall),
    Response { name: &'a str, message: &'a Message },
}

fn content_parts(parts: &[ContentPart]) -> Vec<Part<'_>> {
    parts
        .iter()
        .filter_map(|p| match p {
            ContentPart::Text(t) if t.is_empty() => None,
            ContentPart::Text(t) => Some(Part::Text(t)),
            ContentPart::ImageUrl { url, .. } => Some(Part::Image(url)),
        })
        .collect()
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.request;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("contents", &Turns(&self.turns))?;
        if !self.system.is_empty() {
            map.serialize_entry("systemInstruction", &PartsOnly(&self.system))?;
        }
        if !r.tools.is_empty() {
            map.serialize_entry("tools", &[Declarations(&r.tools)])?;
        }
        if let Some(choice) = &r.tool_choice {
            map.serialize_entry("toolConfig", &ToolConfig(choice))?;
        }
        let p = &r.params;
        let has_config = p.temperature.is_some()
            || p.top_p.is_some()
            || p.max_tokens.is_some()
            || !p.stop.is_empty()
            || p.seed.is_some()
            || p.presence_penalty.is_some()
            || p.frequency_penalty.is_some();
        if has_config {
            map.serialize_entry("generationConfig", &GenerationConfig(p))?;
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
        map.serialize_entry("parts", &Parts(&self.0.parts))?;
        map.end()
    }
}

struct PartsOnly<'a>(&'a [Part<'a>]);

impl Serialize for PartsOnly<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("parts", &Parts(self.0))?;
        map.end()
    }
}

struct Parts<'a>(&'a [Part<'a>]);

impl Serialize for Parts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for part in self.0 {
            seq.serialize_element(&PartOut(part))?;
        }
        seq.end()
    }
}

struct PartOut<'a>(&'a Part<'a>);

impl Serialize for PartOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self.0 {
            Part::Text(text) => map.serialize_entry("text", text)?,
            Part::Image(url) => match data_url(url) {
                Some(data) => map.serialize_entry(
                    "inlineData",
                    &MimeData {
                        mime_type: data.media_type,
                        data: data.data,
                    },
                )?,
                None if url.starts_with("data:") => {
                    return Err(serde::ser::Error::custom("image data url is not base64"));
                }
                None => map.serialize_entry(
                    "fileData",
                    &FileData {
                        mime_type: image_mime_type(url),
                        file_uri: url,
                    },
                )?,
            },
            Part::Call(call) => map.serialize_entry(
                "functionCall",
                &FunctionCallOut {
                    name: &call.name,
                    args: arguments::<S::Error>(&call.arguments)?,
                },
            )?,
            Part::Response { name, message } => {
                let text = message.joined_text();
                map.serialize_entry(
                    "functionResponse",
                    &FunctionResponseOut { name, text: &text },
                )?;
            }
        }
        map.end()
    }
}

/// Gemini's `fileData` needs a MIME type; guess it from the URL's extension.
fn image_mime_type(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        _ => "image/jpeg",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MimeData<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData<'a> {
    mime_type: &'a str,
    file_uri: &'a str,
}

#[derive(Serialize)]
struct FunctionCallOut<'a> {
    name: &'a str,
    args: &'a RawValue,
}

struct FunctionResponseOut<'a> {
    name: &'a str,
    text: &'a str,
}

impl Serialize for FunctionResponseOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("name", self.name)?;
        // `response` must be an object: a JSON object result goes as it is, anything else is
        // wrapped as `{"content": text}`.
        let trimmed = self.text.trim();
        match serde_json::from_str::<&RawValue>(trimmed) {
            Ok(value) if trimmed.starts_with('{') => map.serialize_entry("response", value)?,
            _ => map.serialize_entry("response", &ContentOnly(self.text))?,
        }
        map.end()
    }
}

struct ContentOnly<'a>(&'a str);

impl Serialize for ContentOnly<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("content", self.0)?;
        map.end()
    }
}

struct Declarations<'a>(&'a [ToolDefinition]);

impl Serialize for Declarations<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Declaration<'a>(&'a ToolDefinition);
        impl Serialize for Declaration<'_> {
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
        struct List<'a>(&'a [ToolDefinition]);
        impl Serialize for List<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for tool in self.0 {
                    seq.serialize_element(&Declaration(tool))?;
                }
                seq.end()
            }
        }
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("functionDeclarations", &List(self.0))?;
        map.end()
    }
}

struct ToolConfig<'a>(&'a ToolChoice);

impl Serialize for ToolConfig<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Config<'a>(&'a ToolChoice);
        impl Serialize for Config<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(None)?;
                match self.0 {
                    ToolChoice::Auto => map.serialize_entry("mode", "AUTO")?,
                    ToolChoice::None => map.serialize_entry("mode", "NONE")?,
                    ToolChoice::Required => map.serialize_entry("mode", "ANY")?,
                    ToolChoice::Function(name) => {
                        map.serialize_entry("mode", "ANY")?;
                        map.serialize_entry("allowedFunctionNames", &[name])?;
                    }
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("functionCallingConfig", &Config(self.0))?;
        map.end()
    }
}

struct GenerationConfig<'a>(&'a echelon_domain::chat::Parameters);

impl Serialize for GenerationConfig<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut map = s.serialize_map(None)?;
        if let Some(v) = p.temperature {
            map.serialize_entry("temperature", &v)?;
        }
        if let Some(v) = p.top_p {
            map.serialize_entry("topP", &v)?;
        }
        if let Some(v) = p.max_tokens {
            map.serialize_entry("maxOutputTokens", &v)?;
        }
        if !p.stop.is_empty() {
            map.serialize_entry("stopSequences", &p.stop)?;
        }
        if let Some(v) = p.seed {
            map.serialize_entry("seed", &v)?;
        }
        if let Some(v) = p.presence_penalty {
            map.serialize_entry("presencePenalty", &v)?;
        }
        if let Some(v) = p.frequency_penalty {
            map.serialize_entry("frequencyPenalty", &v)?;
        }
        map.end()
    }
}

// ----- responses -----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    candidates: Option<Vec<WireCandidate>>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<WireFeedback>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Deserialize)]
struct WireContent {
    #[serde(default)]
    parts: Vec<WirePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<WireFunctionCall>,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: Option<Box<RawValue>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: u32,
    #[serde(default)]
    candidates_token_count: u32,
    #[serde(default)]
    thoughts_token_count: u32,
    #[serde(default)]
    cached_content_token_count: u32,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Self {
            input_tokens: u.prompt_token_count,
            // Thinking tokens are generated and billed as output, and reported as reasoning.
            output_tokens: u
                .candidates_token_count
                .saturating_add(u.thoughts_token_count),
            cached_input_tokens: Some(u.cached_content_token_count),
            reasoning_tokens: Some(u.thoughts_token_count),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

/// The domain finish reason of a Gemini `finishReason`.
pub fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.into()),
    }
}

/// Text and calls of one candidate; `next_call` numbers calls without ids across a stream.
struct Decoded {
    text: Option<String>,
    calls: Vec<ToolCall>,
}

fn decode_candidate(content: Option<WireContent>, next_call: &mut u32) -> Decoded {
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for part in content.map(|c| c.parts).unwrap_or_default() {
        if part.thought == Some(true) {
            continue;
        }
        if let Some(t) = part.text {
            match &mut text {
                Some(existing) => existing.push_str(&t),
                None => text = Some(t),
            }
        }
        if let Some(call) = part.function_call {
            let id = call.id.unwrap_or_else(|| format!("call_{next_call}"));
            *next_call += 1;
            calls.push(ToolCall {
                id,
                name: call.name,
                arguments: call
                    .args
                    .map_or_else(|| "{}".to_owned(), |a| a.get().to_owned()),
            });
        }
    }
    Decoded { text, calls }
}

fn finish(reason: Option<&str>, has_calls: bool) -> Option<FinishReason> {
    let reason = finish_reason(reason?);
    // Gemini reports STOP after function calls; the neutral answer says what happened.
    Some(if has_calls && reason == FinishReason::Stop {
        FinishReason::ToolCalls
    } else {
        reason
    })
}

fn blocked(reason: &str) -> UpstreamError {
    UpstreamError::new(ErrorClass::ContentFilter, "gemini blocked the prompt")
        .with_code(reason.to_owned())
}

/// Decodes a `generateContent` response.
///
/// # Errors
///
/// A malformed body ([`ErrorClass::Connect`]), a blocked prompt
/// ([`ErrorClass::ContentFilter`]), or the classified error when the body is an error.
pub fn parse_response(
    body: &[u8],
    upstream_model: &str,
    keys: &[Secret],
) -> Result<ChatResponse, UpstreamError> {
    let wire: WireResponse = serde_json::from_slice(body).map_err(|_| {
        UpstreamError::new(
            ErrorClass::Connect,
            "malformed upstream response: not a gemini response",
        )
    })?;
    if wire.error.is_some() {
        return Err(classify::stream_error(&ProviderError::parse(body), keys));
    }
    let candidate = wire
        .candidates
        .and_then(|c| c.into_iter().find(|c| c.index.unwrap_or(0) == 0));
    let Some(candidate) = candidate else {
        if let Some(reason) = wire.prompt_feedback.and_then(|f| f.block_reason) {
            return Err(blocked(&reason));
        }
        return Err(UpstreamError::new(
            ErrorClass::Connect,
            "malformed upstream response: no candidates",
        ));
    };
    let decoded = decode_candidate(candidate.content, &mut 0);
    let finish_reason = finish(
        candidate.finish_reason.as_deref(),
        !decoded.calls.is_empty(),
    );
    let mut response = ChatResponse::new(
        wire.model_version
            .as_deref()
            .unwrap_or(upstream_model)
            .into(),
        Message {
            role: Role::Assistant,
            content: decoded.text.map(ContentPart::Text).into_iter().collect(),
            tool_calls: decoded.calls,
            tool_call_id: None,
            name: None,
        },
    );
    response.id = wire.response_id;
    response.finish_reason = finish_reason;
    response.usage = wire.usage_metadata.map(Usage::from);
    Ok(response)
}

// ----- streams -----

/// Decodes Gemini stream events; see the module docs for how the end is detected.
#[derive(Debug)]
pub(crate) struct StreamDecoder {
    keys: Arc<[Secret]>,
    model: Option<Arc<str>>,
    started: bool,
    next_call: u32,
    /// The chunk with the finish reason, held until the bytes end.
    last: Option<StreamChunk>,
}

impl StreamDecoder {
    pub(crate) fn new(keys: Arc<[Secret]>) -> Self {
        Self {
            keys,
            model: None,
            started: false,
            next_call: 0,
            last: None,
        }
    }
}

impl EventDecoder for StreamDecoder {
    fn on_event(&mut self, event: SseEvent) -> Result<Step, UpstreamError> {
        let wire: WireResponse = serde_json::from_str(&event.data)
            .map_err(|_| sse::malformed_error("not a gemini response chunk"))?;
        if wire.error.is_some() {
            return Err(classify::stream_error(
                &ProviderError::parse(event.data.as_bytes()),
                &self.keys,
            ));
        }
        if let Some(version) = wire.model_version.as_deref()
            && self.model.as_deref() != Some(version)
        {
            self.model = Some(Arc::from(version));
        }
        let candidate = wire
            .candidates
            .and_then(|c| c.into_iter().find(|c| c.index.unwrap_or(0) == 0));
        let Some(candidate) = candidate else {
            if let Some(reason) = wire.prompt_feedback.and_then(|f| f.block_reason) {
                return Err(blocked(&reason));
            }
            // A usage-only chunk.
            if let (Some(last), Some(usage)) = (&mut self.last, wire.usage_metadata) {
                last.usage = Some(usage.into());
            }
            return Ok(Step::Skip);
        };
        let first_call = self.next_call;
        let decoded = decode_candidate(candidate.content, &mut self.next_call);
        let finish_reason = finish(
            candidate.finish_reason.as_deref(),
            self.next_call > 0 || !decoded.calls.is_empty(),
        );
        let role = (!self.started).then_some(Role::Assistant);
        self.started = true;
        let chunk = StreamChunk {
            id: wire.response_id,
            model: self.model.clone(),
            role,
            content: decoded.text,
            tool_calls: decoded
                .calls
                .into_iter()
                .zip(first_call..)
                .map(|(call, index)| ToolCallDelta {
                    index,
                    id: Some(call.id),
                    name: Some(call.name),
                    arguments: Some(call.arguments),
                })
                .collect(),
            finish_reason,
            usage: wire.usage_metadata.map(Usage::from),
            ..StreamChunk::default()
        };
        if let Some(last) = &mut self.last {
            // Anything after the finish chunk: keep the newest usage, pass content on.
            if let Some(usage) = chunk.usage {
                last.usage = Some(usage);
            }
            return Ok(if chunk.has_content() {
                Step::Emit(StreamChunk {
                    finish_reason: None,
                    usage: None,
                    ..chunk
                })
            } else {
                Step::Skip
            });
        }
        if chunk.finish_reason.is_some() {
            self.last = Some(chunk);
            return Ok(Step::Skip);
        }
        Ok(Step::Emit(chunk))
    }

    fn on_eof(&mut self) -> Result<Vec<StreamChunk>, UpstreamError> {
        match self.last.take() {
            Some(last) => Ok(vec![last]),
            None => Err(sse::cut_error("a chunk with a finishReason")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons() {
        assert_eq!(finish(Some("STOP"), false), Some(FinishReason::Stop));
        assert_eq!(finish(Some("STOP"), true), Some(FinishReason::ToolCalls));
        assert_eq!(
            finish(Some("MAX_TOKENS"), false),
            Some(FinishReason::Length)
        );
        assert_eq!(
            finish(Some("SAFETY"), false),
            Some(FinishReason::ContentFilter)
        );
        assert_eq!(
            finish(Some("MALFORMED_FUNCTION_CALL"), false),
            Some(FinishReason::Other("MALFORMED_FUNCTION_CALL".into()))
        );
        assert_eq!(finish(None, true), None);
    }

    #[test]
    fn tool_result_without_a_call_is_refused() {
        let mut tool = Message::text(Role::Tool, "42");
        tool.tool_call_id = Some("nowhere".into());
        let request = ChatRequest::new(vec![Message::text(Role::User, "q"), tool]);
        let e = request_body(&request).unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidRequest);
    }
}
