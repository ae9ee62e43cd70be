//! Anthropic, Gemini and OpenAI translation against recorded request, response and stream fixtures.

use echelon_domain::chat::{
    ChatRequest, ContentPart, FinishReason, Message, RawJson, Role, ToolCall, ToolChoice,
    ToolDefinition,
};
use echelon_domain::error::ErrorClass;
use echelon_domain::spec::ProviderKind;
use echelon_infrastructure::provider::{anthropic, decode_sse, gemini};

use crate::support::{
    CANARY, Canned, Collected, Recorder, client, collect, complete, fixture, fixture_json,
    split_body, stream,
};

/// The conversation behind the request fixtures: system prompt, a tool call, its result, and a
/// follow-up question.
fn conversation() -> ChatRequest {
    let mut assistant = Message::text(Role::Assistant, "Let me check.");
    assistant.tool_calls.push(ToolCall {
        id: "toolu_01".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    });
    let mut tool = Message::text(Role::Tool, r#"{"temp_c":18}"#);
    tool.tool_call_id = Some("toolu_01".into());
    let mut request = ChatRequest::new(vec![
        Message::text(Role::System, "You are terse."),
        Message::text(Role::User, "What is the weather in Paris?"),
        assistant,
        tool,
        Message::text(Role::User, "Thanks. And in Rome?"),
    ]);
    request.params.temperature = Some(0.2);
    request.params.max_tokens = Some(256);
    request.params.stop = vec!["END".into()];
    request.tools.push(ToolDefinition {
        name: "get_weather".into(),
        description: Some("Current weather for a city".into()),
        parameters: Some(RawJson::new(
            r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#,
        )),
    });
    request.tool_choice = Some(ToolChoice::Auto);
    request.extra = vec![("user".into(), RawJson::new(r#""not-for-anthropic""#))];
    request
}

/// Decodes a recorded stream at every read size from 1 to 64 bytes; all must agree.
async fn decode_every_way(kind: ProviderKind, body: &[u8]) -> Collected {
    let reference = collect(decode_sse(kind, split_body(body, body.len()))).await;
    for size in 1..=64 {
        let other = collect(decode_sse(kind, split_body(body, size))).await;
        assert_eq!(other.chunks, reference.chunks, "read size {size}");
        assert_eq!(other.error, reference.error, "read size {size}");
    }
    reference
}

fn arguments(collected: &Collected, index: u32) -> String {
    collected
        .chunks
        .iter()
        .flat_map(|c| &c.tool_calls)
        .filter(|t| t.index == index)
        .filter_map(|t| t.arguments.as_deref())
        .collect()
}

#[test]
fn anthropic_request_matches_fixture() {
    crate::support::init_tracing();
    let body = anthropic::request_body("claude-sonnet-4-5", &conversation(), false).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body, fixture_json("anthropic_request.json"));
}

#[test]
fn gemini_request_matches_fixture() {
    crate::support::init_tracing();
    let body = gemini::request_body(&conversation()).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body, fixture_json("gemini_request.json"));
}

#[tokio::test]
async fn anthropic_round_trip_over_http() {
    crate::support::init_tracing();
    let server = Recorder::start(Canned::json(200, fixture("anthropic_response.json"))).await;
    let client = client(
        ProviderKind::Anthropic,
        &server.root(ProviderKind::Anthropic),
    );
    let r = complete(&client, "claude-sonnet-4-5", &conversation())
        .await
        .unwrap();
    assert_eq!(&*r.model, "claude-sonnet-4-5-20250929");
    assert_eq!(r.id.as_deref(), Some("msg_01XFDUDYJgAACzvnptvVoYEL"));
    assert_eq!(
        r.message.content,
        [ContentPart::Text("I'll check Rome.".into())]
    );
    assert_eq!(
        r.message.tool_calls,
        [ToolCall {
            id: "toolu_02".into(),
            name: "get_weather".into(),
            arguments: r#"{"city": "Rome"}"#.into(),
        }]
    );
    assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
    let usage = r.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (512, 58));

    let seen = server.only();
    assert_eq!(
        (seen.method.as_str(), seen.path_and_query.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(seen.headers["x-api-key"], CANARY);
    assert_eq!(seen.headers["anthropic-version"], anthropic::API_VERSION);
    assert!(seen.headers.get("authorization").is_none());
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body, fixture_json("anthropic_request.json"));
}

#[tokio::test]
async fn anthropic_stream_fixture() {
    crate::support::init_tracing();
    let body = fixture("anthropic_stream.sse");
    let s = decode_every_way(ProviderKind::Anthropic, &body).await;
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.chunks[0].role, Some(Role::Assistant));
    assert_eq!(
        s.chunks[0].id.as_deref(),
        Some("msg_014p7gG3wDgGV9EUtLvnow3U")
    );
    assert_eq!(s.text(), "Okay, let's check Rome.");
    let start = s.chunks.iter().flat_map(|c| &c.tool_calls).next().unwrap();
    assert_eq!(start.id.as_deref(), Some("toolu_01T1x1fJ34qAmk2tNTrN7Up6"));
    assert_eq!(start.name.as_deref(), Some("get_weather"));
    assert_eq!(arguments(&s, 0), r#"{"city": "Rome"}"#);
    let last = s.chunks.last().unwrap();
    assert_eq!(last.finish_reason, Some(FinishReason::ToolCalls));
    let usage = last.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (472, 89));
    assert_eq!(s.finish_chunks(), 1);

    // CRLF line ends give the same answer.
    let crlf = String::from_utf8(body.clone())
        .unwrap()
        .replace('\n', "\r\n");
    let again = decode_every_way(ProviderKind::Anthropic, crlf.as_bytes()).await;
    assert_eq!(again.chunks, s.chunks);

    // Ended after the stop reason but before message_stop: the same complete answer.
    let text = String::from_utf8(body).unwrap();
    let no_stop = &text[..text.find("event: message_stop").unwrap()];
    let again = decode_every_way(ProviderKind::Anthropic, no_stop.as_bytes()).await;
    assert!(again.error.is_none(), "{:?}", again.error);
    assert_eq!(again.chunks, s.chunks);

    // Ended before the message_delta with the stop reason: an error, and no finish reason.
    let cut = &text[..text.find("event: message_delta").unwrap()];
    let s = decode_every_way(ProviderKind::Anthropic, cut.as_bytes()).await;
    assert_eq!(s.error.as_ref().map(|e| e.class), Some(ErrorClass::Connect));
    assert_eq!(s.finish_chunks(), 0);
}

#[tokio::test]
async fn anthropic_error_event_mid_stream() {
    crate::support::init_tracing();
    let s = decode_every_way(
        ProviderKind::Anthropic,
        &fixture("anthropic_stream_overloaded.sse"),
    )
    .await;
    assert_eq!(s.text(), "Partial");
    let e = s.error.unwrap();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::Overloaded, Some("overloaded_error"))
    );
}

#[tokio::test]
async fn anthropic_stream_over_http() {
    crate::support::init_tracing();
    let server = Recorder::start(Canned::sse(fixture("anthropic_stream.sse"))).await;
    let client = client(
        ProviderKind::Anthropic,
        &server.root(ProviderKind::Anthropic),
    );
    let s = collect(
        stream(&client, "claude-sonnet-4-5", &conversation())
            .await
            .unwrap(),
    )
    .await;
    assert!(s.error.is_none());
    assert_eq!(s.text(), "Okay, let's check Rome.");
    let body: serde_json::Value = serde_json::from_slice(&server.only().body).unwrap();
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn gemini_round_trip_over_http() {
    crate::support::init_tracing();
    let server = Recorder::start(Canned::json(200, fixture("gemini_response.json"))).await;
    let client = client(ProviderKind::Gemini, &server.root(ProviderKind::Gemini));
    let r = complete(&client, "gemini-2.5-flash", &conversation())
        .await
        .unwrap();
    assert_eq!(&*r.model, "gemini-2.5-flash");
    assert_eq!(
        r.message.content,
        [ContentPart::Text("Checking Rome.".into())]
    );
    assert_eq!(r.message.tool_calls.len(), 1);
    assert_eq!(r.message.tool_calls[0].name, "get_weather");
    assert_eq!(r.message.tool_calls[0].arguments, r#"{"city": "Rome"}"#);
    assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
    let usage = r.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (61, 34));

    let seen = server.only();
    assert_eq!(
        seen.path_and_query,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(seen.headers["x-goog-api-key"], CANARY);
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body, fixture_json("gemini_request.json"));
}

#[tokio::test]
async fn gemini_stream_fixture_and_cut() {
    crate::support::init_tracing();
    let body = fixture("gemini_stream.sse");
    let s = decode_every_way(ProviderKind::Gemini, &body).await;
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.chunks[0].role, Some(Role::Assistant));
    assert_eq!(s.text(), "The capital of Italy is Rome.");
    let last = s.chunks.last().unwrap();
    assert_eq!(last.finish_reason, Some(FinishReason::Stop));
    let usage = last.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (9, 7));
    assert_eq!(s.finish_chunks(), 1);
    assert_eq!(last.model.as_deref(), Some("gemini-2.5-flash"));

    let text = String::from_utf8(body).unwrap();
    let cut = &text[..text.rfind("data:").unwrap()];
    let s = decode_every_way(ProviderKind::Gemini, cut.as_bytes()).await;
    assert_eq!(s.text(), "The capital of Italy is");
    assert_eq!(s.error.as_ref().map(|e| e.class), Some(ErrorClass::Connect));
}

#[tokio::test]
async fn gemini_stream_over_http_uses_sse_path() {
    crate::support::init_tracing();
    let server = Recorder::start(Canned::sse(fixture("gemini_stream.sse"))).await;
    let client = client(ProviderKind::Gemini, &server.root(ProviderKind::Gemini));
    let s = collect(
        stream(&client, "gemini-2.5-flash", &conversation())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s.text(), "The capital of Italy is Rome.");
    assert_eq!(
        server.only().path_and_query,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
}

#[tokio::test]
async fn gemini_blocked_prompt_is_content_filter() {
    crate::support::init_tracing();
    let server = Recorder::start(Canned::json(200, fixture("gemini_blocked.json"))).await;
    let client = client(ProviderKind::Gemini, &server.root(ProviderKind::Gemini));
    let e = complete(&client, "gemini-2.5-flash", &conversation())
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::ContentFilter, Some("SAFETY"))
    );
}

#[tokio::test]
async fn openai_tool_call_stream_fixture() {
    crate::support::init_tracing();
    let s = decode_every_way(ProviderKind::Openai, &fixture("openai_stream_tools.sse")).await;
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(arguments(&s, 0), r#"{"city":"Rome"}"#);
    let first = &s.chunks[0].tool_calls[0];
    assert_eq!(first.id.as_deref(), Some("call_abc"));
    assert_eq!(first.name.as_deref(), Some("get_weather"));
    let [.., finish, last] = s.chunks.as_slice() else {
        panic!("{:?}", s.chunks);
    };
    assert_eq!(finish.finish_reason, Some(FinishReason::ToolCalls));
    let usage = last.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (80, 17));
    assert!(!last.has_choice(), "the usage chunk has no choice");
    assert_eq!(s.finish_chunks(), 1);
}
