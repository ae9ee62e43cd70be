//! Base URLs as users write them reach the providers' real endpoints: every accepted form of each
//! kind (and the default) composes to the documented request URLs, and over real sockets the
//! adapters reach fakes that answer only on those paths; the shipped example trees resolve to
//! the real endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use echelon_config::LoadedConfig;
use echelon_domain::chat::{ChatRequest, Message, Role};
use echelon_domain::name::{InstanceId, ModelRef, ProviderName};
use echelon_domain::ports::{Call, ChatBackend as _};
use echelon_domain::spec::{ProviderKind, ProviderSpec};
use echelon_infrastructure::provider::ProviderClient;
use echelon_infrastructure::provider::endpoint::{ApiRoot, Endpoint, endpoint_urls};
use futures_util::StreamExt as _;

use crate::support::write;

const KEY: &str = "sk-endpoints-test";

fn kind_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gemini",
        ProviderKind::Mock => "mock",
    }
}

/// The upstream model every test provider serves.
fn upstream_model(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => "claude-sonnet-4-5",
        ProviderKind::Gemini => "gemini-2.5-flash",
        ProviderKind::Openai | ProviderKind::Mock => "gpt-4o-mini",
    }
}

/// Loads a tree with one provider `p` of `kind`, with `base_url` as written (or none).
fn provider(kind: ProviderKind, base_url: Option<&str>) -> ProviderSpec {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "gateway.toml", "");
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nhot_reload = false\n",
    );
    let base = base_url.map_or_else(String::new, |url| format!("base_url = \"{url}\"\n"));
    write(
        root,
        "llms/providers/p.toml",
        &format!(
            "kind = \"{}\"\n{base}api_key = \"{KEY}\"\nconnect_timeout = \"1s\"\n\n[models.m]\nupstream = \"{}\"\n",
            kind_name(kind),
            upstream_model(kind)
        ),
    );
    let config = load(root, &[]);
    config.topology.providers[&ProviderName::new("p")].clone()
}

fn load(dir: &Path, vars: &[(&str, &str)]) -> LoadedConfig {
    let env: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let config = echelon_config::load(dir, &env).unwrap_or_else(|report| panic!("{report}"));
    assert!(config.warnings.is_empty(), "{:#?}", config.warnings);
    config
}

/// Every request URL a provider's adapter composes, for the test model.
fn request_urls(spec: &ProviderSpec) -> Vec<(Endpoint, String)> {
    let root = ApiRoot::parse(&spec.base_url).unwrap();
    let model = format!("models/{}", upstream_model(spec.kind));
    Endpoint::of(spec.kind)
        .iter()
        .map(|&e| (e, root.url(e, &model).unwrap().to_string()))
        .collect()
}

/// The documented request URLs of each kind under `origin`, for the test model.
fn documented(kind: ProviderKind, origin: &str) -> Vec<(Endpoint, String)> {
    let urls: Vec<(Endpoint, &str)> = match kind {
        ProviderKind::Openai => vec![
            (Endpoint::ChatCompletions, "/v1/chat/completions"),
            (Endpoint::Responses, "/v1/responses"),
            (Endpoint::Embeddings, "/v1/embeddings"),
            (Endpoint::Models, "/v1/models"),
        ],
        ProviderKind::Anthropic => vec![
            (Endpoint::Messages, "/v1/messages"),
            (Endpoint::Models, "/v1/models"),
        ],
        ProviderKind::Gemini => vec![
            (
                Endpoint::GenerateContent,
                "/v1beta/models/gemini-2.5-flash:generateContent",
            ),
            (
                Endpoint::StreamGenerateContent,
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            ),
            (
                Endpoint::BatchEmbedContents,
                "/v1beta/models/gemini-2.5-flash:batchEmbedContents",
            ),
            (Endpoint::Models, "/v1beta/models"),
        ],
        ProviderKind::Mock => vec![],
    };
    urls.into_iter()
        .map(|(e, path)| (e, format!("{origin}{path}")))
        .collect()
}

/// The forms of `base_url` users write for a kind, under `origin`.
fn accepted_forms(kind: ProviderKind, origin: &str) -> Vec<String> {
    let version = match kind {
        ProviderKind::Gemini => "v1beta",
        _ => "v1",
    };
    vec![
        origin.to_owned(),
        format!("{origin}/"),
        format!("{origin}/{version}"),
        format!("{origin}/{version}/"),
    ]
}

const KINDS: [(ProviderKind, &str); 3] = [
    (ProviderKind::Openai, "https://api.openai.com"),
    (ProviderKind::Anthropic, "https://api.anthropic.com"),
    (
        ProviderKind::Gemini,
        "https://generativelanguage.googleapis.com",
    ),
];

#[test]
fn the_default_and_every_accepted_form_compose_to_the_documented_urls() {
    let mut asserted = 0;
    for (kind, origin) in KINDS {
        let expected = documented(kind, origin);
        assert_eq!(
            request_urls(&provider(kind, None)),
            expected,
            "{kind:?} default"
        );
        asserted += expected.len();
        for form in accepted_forms(kind, origin) {
            assert_eq!(
                request_urls(&provider(kind, Some(&form))),
                expected,
                "{kind:?} {form}"
            );
            asserted += expected.len();
        }
    }
    assert_eq!(asserted, 50);
}

#[test]
fn a_base_url_that_names_an_endpoint_is_refused_with_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "gateway.toml", "");
    write(root, "llms/_registry.toml", "[registry]\nversion = 1\n");
    write(
        root,
        "llms/providers/p.toml",
        "kind = \"anthropic\"\nbase_url = \"https://api.anthropic.com/v1/messages\"\napi_key = \"k\"\n[models.m]\n",
    );
    let env: BTreeMap<String, String> = BTreeMap::new();
    let report = echelon_config::load(root, &env).unwrap_err().to_string();
    assert!(
        report.contains("base_url ends in the endpoint path `/messages`"),
        "{report}"
    );
    assert!(
        report.contains("base_url = \"https://api.anthropic.com/v1\""),
        "{report}"
    );
}

/// One request a strict fake saw.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path_and_query: String,
    key: Option<String>,
}

/// A fake provider that answers only on the real paths of its kind; 404 anywhere else.
struct StrictFake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StrictFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const OPENAI_JSON: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
const OPENAI_SSE: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
const ANTHROPIC_JSON: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}"#;
const ANTHROPIC_SSE: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":1}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
const GEMINI_JSON: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1,"totalTokenCount":2},"modelVersion":"gemini-2.5-flash","responseId":"r-1"}"#;
const MODELS: &str = r#"{"object":"list","data":[],"models":[]}"#;

impl StrictFake {
    async fn start(kind: ProviderKind) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = Arc::clone(&seen);
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: axum::http::HeaderMap, body: Bytes| {
                let record = Arc::clone(&record);
                async move {
                    let path_and_query = uri
                        .path_and_query()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    let key = ["authorization", "x-api-key", "x-goog-api-key"]
                        .iter()
                        .find_map(|h| headers.get(*h))
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    record.lock().unwrap().push(Seen {
                        method: method.clone(),
                        path_and_query: path_and_query.clone(),
                        key,
                    });
                    let stream = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("stream").and_then(serde_json::Value::as_bool))
                        .unwrap_or(false);
                    answer(kind, &method, &path_and_query, stream)
                }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, seen, task }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(kind: ProviderKind, method: &Method, path: &str, stream: bool) -> Response {
    let json = |body: &'static str| ([("content-type", "application/json")], body).into_response();
    let sse = |body: String| ([("content-type", "text/event-stream")], body).into_response();
    match (kind, method.as_str(), path) {
        (ProviderKind::Openai, "POST", "/v1/chat/completions") if stream => sse(OPENAI_SSE.into()),
        (ProviderKind::Openai, "POST", "/v1/chat/completions") => json(OPENAI_JSON),
        (ProviderKind::Anthropic, "POST", "/v1/messages") if stream => sse(ANTHROPIC_SSE.into()),
        (ProviderKind::Anthropic, "POST", "/v1/messages") => json(ANTHROPIC_JSON),
        (ProviderKind::Gemini, "POST", "/v1beta/models/gemini-2.5-flash:generateContent") => {
            json(GEMINI_JSON)
        }
        (
            ProviderKind::Gemini,
            "POST",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        ) => sse(format!("data: {GEMINI_JSON}\n\n")),
        (ProviderKind::Openai | ProviderKind::Anthropic, "GET", "/v1/models")
        | (ProviderKind::Gemini, "GET", "/v1beta/models") => json(MODELS),
        _ => (
            StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            r#"{"error":{"message":"not found","type":"not_found_error"}}"#,
        )
            .into_response(),
    }
}

fn instance() -> InstanceId {
    InstanceId::new(ModelRef::new("p", "m"), 0)
}

/// A complete call, a streamed call and a probe through the adapter: all must succeed.
async fn converse(kind: ProviderKind, spec: &ProviderSpec) {
    let client = ProviderClient::from_spec(spec).unwrap();
    let request = ChatRequest::new(vec![Message::text(Role::User, "hi")]);
    let id = instance();
    let call = || Call {
        instance: &id,
        upstream_model: upstream_model(kind),
        request: &request,
    };
    let response = client.complete(call()).await.unwrap_or_else(|e| {
        panic!("{kind:?} {}: complete: {e}", spec.base_url);
    });
    assert_eq!(response.message.joined_text(), "hi");
    let mut stream = client.stream(call()).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap_or_else(|e| panic!("{kind:?} {}: stream: {e}", spec.base_url));
        text.push_str(chunk.content.as_deref().unwrap_or_default());
    }
    assert_eq!(text, "hi");
    client.probe(&id).await.unwrap();
}

#[tokio::test]
async fn every_accepted_form_reaches_only_the_real_paths_over_sockets() {
    for (kind, _) in KINDS {
        let fake = StrictFake::start(kind).await;
        let forms = accepted_forms(kind, &fake.origin());
        for form in &forms {
            converse(kind, &provider(kind, Some(form))).await;
        }
        let seen = fake.seen();
        assert_eq!(seen.len(), 3 * forms.len(), "{seen:#?}");
        let expected = documented(kind, "");
        let chat = expected[0].1.as_str();
        for request in &seen {
            assert_ne!(request.path_and_query, "", "{request:?}");
            let real = if request.method == Method::GET {
                request.path_and_query == expected.last().unwrap().1
            } else if kind == ProviderKind::Gemini {
                request.path_and_query == chat || request.path_and_query == expected[1].1
            } else {
                request.path_and_query == chat
            };
            assert!(real, "{kind:?}: {request:?}");
            let key = request.key.as_deref().unwrap_or_default();
            assert!(key.ends_with(KEY), "{kind:?}: {request:?}");
        }
    }
}

#[tokio::test]
async fn the_strict_fakes_refuse_the_doubled_paths_of_the_old_defaults() {
    // What the adapters used to send: the version written twice.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for (kind, path) in [
        (ProviderKind::Anthropic, "/v1/v1/messages"),
        (
            ProviderKind::Gemini,
            "/v1beta/v1beta/models/gemini-2.5-flash:generateContent",
        ),
        (ProviderKind::Openai, "/chat/completions"),
    ] {
        let fake = StrictFake::start(kind).await;
        let status = client
            .post(format!("{}{path}", fake.origin()))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{kind:?} {path}");
    }
}

/// The gateway as users run it, in front of an Anthropic and a Gemini fake, serves a chat
/// completion through each with the documented base URL forms.
#[tokio::test]
async fn the_gateway_serves_through_anthropic_and_gemini_fakes() {
    let anthropic = StrictFake::start(ProviderKind::Anthropic).await;
    let gemini = StrictFake::start(ProviderKind::Gemini).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "gateway.toml", "");
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nhot_reload = false\n",
    );
    write(
        root,
        "llms/providers/claude.toml",
        &format!(
            "kind = \"anthropic\"\nbase_url = \"{}/v1\"\napi_key = \"{KEY}\"\n\n[models.sonnet]\nupstream = \"claude-sonnet-4-5\"\n",
            anthropic.origin()
        ),
    );
    write(
        root,
        "llms/providers/google.toml",
        &format!(
            "kind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"{KEY}\"\n\n[models.flash]\nupstream = \"gemini-2.5-flash\"\n",
            gemini.origin()
        ),
    );
    let config = echelon_interfaces::app::load(root).unwrap_or_else(|r| panic!("{r}"));
    let components = echelon_interfaces::app::build(
        root,
        config,
        echelon_interfaces::app::BuildOptions::default(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = echelon_interfaces::http::start(
        listener,
        &components,
        echelon_interfaces::http::ServerOptions {
            max_body_size: 64 * 1024,
            shutdown_grace: Duration::from_millis(100),
            ..Default::default()
        },
        std::future::pending(),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for (model, stream) in [
        ("claude/sonnet", false),
        ("claude/sonnet", true),
        ("google/flash", false),
        ("google/flash", true),
    ] {
        let response = client
            .post(format!("http://{}/v1/chat/completions", server.addr))
            .header("content-type", "application/json")
            .body(
                serde_json::json!({
                    "model": model,
                    "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}],
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{model} stream={stream}: {body}");
        assert!(body.contains("\"hi\""), "{model}: {body}");
    }
    let paths = |fake: &StrictFake| -> Vec<String> {
        fake.seen()
            .into_iter()
            .filter(|s| s.method == Method::POST)
            .map(|s| s.path_and_query)
            .collect()
    };
    assert_eq!(paths(&anthropic), ["/v1/messages", "/v1/messages"]);
    assert_eq!(
        paths(&gemini),
        [
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        ]
    );
}

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/examples")
        .join(name)
}

/// Every provider's shown endpoint URLs, as `config show --resolved` prints them.
fn shown(config: &LoadedConfig) -> BTreeMap<String, Vec<(&'static str, String)>> {
    config
        .topology
        .providers
        .iter()
        .map(|(name, spec)| {
            let urls = endpoint_urls(spec)
                .unwrap()
                .into_iter()
                .map(|(e, url)| (e.name(), url))
                .collect();
            (name.to_string(), urls)
        })
        .collect()
}

#[test]
fn the_example_trees_resolve_to_the_real_endpoints() {
    let openai = |origin: &str| {
        vec![
            ("chat_completions", format!("{origin}/chat/completions")),
            ("responses", format!("{origin}/responses")),
            ("embeddings", format!("{origin}/embeddings")),
            ("models", format!("{origin}/models")),
        ]
    };
    let three = load(
        &example("three-echelon"),
        &[
            ("ANTHROPIC_API_KEY", "a"),
            ("OPENAI_API_KEY", "o"),
            ("GEMINI_API_KEY", "g"),
        ],
    );
    let gemini = "https://generativelanguage.googleapis.com/v1beta";
    assert_eq!(
        shown(&three),
        BTreeMap::from([
            (
                "anthropic".to_owned(),
                vec![
                    (
                        "messages",
                        "https://api.anthropic.com/v1/messages".to_owned()
                    ),
                    ("models", "https://api.anthropic.com/v1/models".to_owned()),
                ]
            ),
            (
                "gemini".to_owned(),
                vec![
                    (
                        "generate_content",
                        format!("{gemini}/models/{{model}}:generateContent")
                    ),
                    (
                        "stream_generate_content",
                        format!("{gemini}/models/{{model}}:streamGenerateContent?alt=sse")
                    ),
                    (
                        "batch_embed_contents",
                        format!("{gemini}/models/{{model}}:batchEmbedContents")
                    ),
                    ("models", format!("{gemini}/models")),
                ]
            ),
            ("openai".to_owned(), openai("https://api.openai.com/v1")),
        ])
    );
    let keys = load(
        &example("openai-keys-pool"),
        &[
            ("OPENAI_API_KEY_1", "1"),
            ("OPENAI_API_KEY_2", "2"),
            ("OPENAI_API_KEY_3", "3"),
            ("ECHELON_CLIENT_KEY", "c"),
        ],
    );
    assert_eq!(
        shown(&keys),
        BTreeMap::from([("openai".to_owned(), openai("https://api.openai.com/v1"))])
    );
    let hosted = load(&example("self-hosted"), &[]);
    assert_eq!(
        shown(&hosted),
        BTreeMap::from([
            ("ollama".to_owned(), openai("http://127.0.0.1:11434/v1")),
            ("vllm-a".to_owned(), openai("http://10.0.0.11:8000/v1")),
            ("vllm-b".to_owned(), openai("http://10.0.0.12:8000/v1")),
        ])
    );
}
