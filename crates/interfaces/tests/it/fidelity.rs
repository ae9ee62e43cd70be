//! What comes back: an OpenAI-compatible upstream's answer reaches the client as it was sent
//! (apart from `model`), streamed or not, and translated answers fill the same fields — the
//! required `refusal` and `logprobs` nulls, cached and reasoning tokens, and usage in a final
//! chunk with empty `choices` when the client asked for it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use echelon_interfaces::http::{self, RunningServer, ServerOptions};
use serde_json::{Value, json};

use crate::support::write;

/// A completion with every optional field of the specification set.
fn full_completion() -> Value {
    json!({
        "id": "chatcmpl-full-1",
        "object": "chat.completion",
        "created": 1_733_000_000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_5a3c1b",
        "service_tier": "default",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Paris.",
                "refusal": null,
                "annotations": [{"type": "url_citation", "url_citation": {
                    "start_index": 0, "end_index": 6, "url": "https://example.com/paris",
                    "title": "Paris"}}],
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "lookup", "arguments": "{\"city\":\"Paris\"}"}}]
            },
            "logprobs": {"content": [{"token": "Paris", "logprob": -0.01,
                "bytes": [80, 97, 114, 105, 115], "top_logprobs": [
                    {"token": "Paris", "logprob": -0.01, "bytes": [80, 97, 114, 105, 115]}]}],
                "refusal": null},
            "finish_reason": "tool_calls"
        }],
        "usage": {
            "prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32,
            "prompt_tokens_details": {"cached_tokens": 16, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 4, "audio_tokens": 0,
                "accepted_prediction_tokens": 1, "rejected_prediction_tokens": 2}
        }
    })
}

/// The chunks of a stream with every optional field set, as OpenAI sends them with
/// `stream_options.include_usage`: `"usage": null` on every chunk but the last, which has the
/// usage and empty `choices`.
fn full_chunks() -> Vec<Value> {
    let chunk = |choices: Value, usage: Value| {
        json!({
            "id": "chatcmpl-full-2", "object": "chat.completion.chunk", "created": 1_733_000_001,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_5a3c1b",
            "service_tier": "default", "obfuscation": "x1", "choices": choices, "usage": usage
        })
    };
    let logprobs = json!({"content": [{"token": "Hi", "logprob": -0.2, "bytes": [72, 105],
        "top_logprobs": []}], "refusal": null});
    vec![
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
                "logprobs": null, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {"content": "Hi"}, "logprobs": logprobs,
                "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {"annotations": []}, "logprobs": null,
                "finish_reason": "stop"}]),
            Value::Null,
        ),
        chunk(
            json!([]),
            json!({"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}),
        ),
    ]
}

const ANTHROPIC_JSON: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":2,"cache_read_input_tokens":10,"output_tokens":4}}"#;
const ANTHROPIC_SSE: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":3,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":4}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
const GEMINI_JSON: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"thinking...","thought":true},{"text":"hi"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":7,"cachedContentTokenCount":5,"candidatesTokenCount":2,"thoughtsTokenCount":6,"totalTokenCount":15},"modelVersion":"gemini-2.5-flash","responseId":"r-1"}"#;

/// One fake per provider kind, answering the canned bodies above on the real paths.
struct Fake {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sse_of(chunks: &[Value]) -> String {
    let mut out: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    out.push_str("data: [DONE]\n\n");
    out
}

async fn fake() -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(
        |method: Method, uri: Uri, body: axum::body::Bytes| async move {
            let stream = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("stream").and_then(Value::as_bool))
                .unwrap_or(false);
            answer(&method, uri.path(), stream)
        },
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Fake { addr, task }
}

fn answer(method: &Method, path: &str, stream: bool) -> Response {
    let json = |body: String| ([("content-type", "application/json")], body).into_response();
    let sse = |body: String| ([("content-type", "text/event-stream")], body).into_response();
    match (method.as_str(), path) {
        ("POST", "/openai/v1/chat/completions") if stream => sse(sse_of(&full_chunks())),
        ("POST", "/openai/v1/chat/completions") => json(full_completion().to_string()),
        ("POST", "/anthropic/v1/messages") if stream => sse(ANTHROPIC_SSE.to_owned()),
        ("POST", "/anthropic/v1/messages") => json(ANTHROPIC_JSON.to_owned()),
        ("POST", "/gemini/v1beta/models/gemini-2.5-flash:generateContent") => {
            json(GEMINI_JSON.to_owned())
        }
        ("POST", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent") => {
            sse(format!("data: {GEMINI_JSON}\n\n"))
        }
        _ => (axum::http::StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

struct Gateway {
    server: RunningServer,
    client: reqwest::Client,
    _fake: Fake,
    _dir: tempfile::TempDir,
}

async fn gateway() -> Gateway {
    let fake = fake().await;
    let origin = format!("http://{}", fake.addr);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "gateway.toml", "");
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nhot_reload = false\n",
    );
    for (name, kind, base, upstream) in [
        ("oa", "openai", "openai/v1", "gpt-4o"),
        ("claude", "anthropic", "anthropic", "claude-sonnet-4-5"),
        ("google", "gemini", "gemini", "gemini-2.5-flash"),
    ] {
        write(
            root,
            &format!("llms/providers/{name}.toml"),
            &format!(
                "kind = \"{kind}\"\nbase_url = \"{origin}/{base}\"\napi_key = \"k\"\n\n[models.m]\nupstream = \"{upstream}\"\n"
            ),
        );
    }
    let config = echelon_interfaces::app::load(root).unwrap_or_else(|r| panic!("{r}"));
    let components = echelon_interfaces::app::build(
        root,
        config,
        echelon_interfaces::app::BuildOptions::default(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = http::start(
        listener,
        &components,
        ServerOptions {
            max_body_size: 64 * 1024,
            shutdown_grace: Duration::from_millis(100),
            ..Default::default()
        },
        std::future::pending(),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    Gateway {
        server,
        client,
        _fake: fake,
        _dir: dir,
    }
}

impl Gateway {
    async fn post(&self, body: &Value) -> (u16, String) {
        let response = self
            .client
            .post(format!("http://{}/v1/chat/completions", self.server.addr))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// A complete answer for `model`, as JSON.
    async fn complete(&self, model: &str) -> Value {
        let (status, body) = self
            .post(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The data events of a streamed answer for `model`, as JSON, checking it ends with
    /// `[DONE]`.
    async fn stream(&self, model: &str, include_usage: bool) -> Vec<Value> {
        let mut request = json!({"model": model, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]});
        if include_usage {
            request["stream_options"] = json!({"include_usage": true});
        }
        let (status, body) = self.post(&request).await;
        assert_eq!(status, 200, "{model}: {body}");
        let data: Vec<&str> = body
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("{e}")))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
        data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

fn without_model(mut value: Value) -> Value {
    value.as_object_mut().unwrap().remove("model");
    value
}

#[tokio::test]
async fn an_openai_compatible_answer_passes_through_unchanged_but_for_the_model() {
    let gateway = gateway().await;
    let served = gateway.complete("oa/m").await;
    assert_eq!(without_model(served), without_model(full_completion()));

    let served = gateway.stream("oa/m", true).await;
    let sent = full_chunks();
    assert_eq!(served.len(), sent.len(), "{served:#?}");
    for (served, sent) in served.into_iter().zip(sent) {
        assert_eq!(without_model(served), without_model(sent));
    }

    // Without `include_usage` the client gets neither the usage chunk nor the `"usage": null`
    // the gateway's own request for usage made the upstream write.
    let served = gateway.stream("oa/m", false).await;
    let sent = full_chunks();
    assert_eq!(served.len(), sent.len() - 1, "{served:#?}");
    for (served, mut sent) in served.into_iter().zip(sent) {
        sent.as_object_mut().unwrap().remove("usage");
        assert_eq!(without_model(served), without_model(sent));
    }
}

#[tokio::test]
async fn translated_answers_fill_the_same_fields() {
    let gateway = gateway().await;
    let claude = gateway.complete("claude/m").await;
    assert_eq!(claude["choices"][0]["message"]["refusal"], Value::Null);
    assert!(claude["choices"][0]["message"].get("refusal").is_some());
    assert!(
        claude["choices"][0]
            .get("logprobs")
            .is_some_and(Value::is_null)
    );
    assert_eq!(
        claude["usage"],
        json!({"prompt_tokens": 15, "completion_tokens": 4, "total_tokens": 19,
            "prompt_tokens_details": {"cached_tokens": 10}})
    );

    let gemini = gateway.complete("google/m").await;
    assert_eq!(gemini["choices"][0]["message"]["content"], "hi");
    assert!(
        gemini["choices"][0]
            .get("logprobs")
            .is_some_and(Value::is_null)
    );
    assert_eq!(
        gemini["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 5},
            "completion_tokens_details": {"reasoning_tokens": 6}})
    );

    for model in ["claude/m", "google/m"] {
        let chunks = gateway.stream(model, true).await;
        let (last, rest) = chunks.split_last().unwrap();
        assert_eq!(last["choices"], json!([]), "{model}: {chunks:#?}");
        assert!(
            last["usage"]["total_tokens"].as_u64().unwrap() > 0,
            "{model}"
        );
        let finish = rest.last().unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "stop", "{model}");
        assert!(finish.get("usage").is_none(), "{model}: {finish}");
        let ids: Vec<&Value> = chunks.iter().map(|c| &c["id"]).collect();
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "{model}: one id: {ids:?}"
        );
        for chunk in rest {
            assert!(chunk["choices"][0].get("logprobs").is_some(), "{chunk}");
        }
        let text: String = rest
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "hi", "{model}");

        let plain = gateway.stream(model, false).await;
        assert!(
            plain.iter().all(|c| c.get("usage").is_none()),
            "{model}: {plain:#?}"
        );
        assert_eq!(plain.len(), chunks.len() - 1, "{model}");
    }
    let claude = gateway.stream("claude/m", true).await;
    assert_eq!(
        claude.last().unwrap()["usage"]["prompt_tokens_details"],
        json!({"cached_tokens": 10})
    );
    assert_eq!(claude[0]["id"], "msg_2");
}
