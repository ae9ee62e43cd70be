//! The HTTP surface end to end over real sockets: a gateway built from a configuration folder,
//! in front of fault-injecting fake upstreams on 127.0.0.1.

use std::time::Duration;

use crate::support::write;
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions};
use echelon_interfaces::app::{self, BuildOptions};
use echelon_interfaces::http::{self, RunningServer, ServerOptions};
use serde_json::{Value, json};

const CANARY: &str = "sk-canary-http-7f3a9";
const CLIENT_KEY: &str = "client-key-1";
const ADMIN_KEY: &str = "admin-key-1";

struct Gateway {
    server: RunningServer,
    upstream: FakeUpstream,
    decoy: FakeUpstream,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Models of the `primary` provider; each upstream name is a fault of the fake.
const PRIMARY_MODELS: &[(&str, &str)] = &[
    ("ok", "ok"),
    ("fail", "fail-500"),
    ("limited", "429-retry-30"),
    ("dead", "fail-401"),
    ("hang", "hang"),
    ("cut", "cut-after-2"),
    ("slow-stream", "chunks-60+chunk-delay-50ms"),
    ("bad-request", "fail-400"),
];

async fn start(shutdown_grace: &str) -> Gateway {
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let decoy = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "gateway.toml",
        &format!(
            r#"
[server]
max_body_size = "16KiB"
request_timeout = "10s"
shutdown_grace = "{shutdown_grace}"

[auth]
api_keys = ["{CLIENT_KEY}"]
admin_key = "{ADMIN_KEY}"
"#
        ),
    );
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nvalidation = \"strict\"\nhot_reload = false\n",
    );
    let mut models = String::new();
    for (id, upstream_name) in PRIMARY_MODELS {
        models.push_str(&format!(
            "\n[models.{id}]\nupstream = \"{upstream_name}\"\n"
        ));
        if *id == "ok" {
            // A limit whose saturation the metrics test reads.
            models.push_str("rpm_limit = 10\n");
        }
    }
    write(
        root,
        "llms/providers/primary.toml",
        &format!(
            "kind = \"openai\"\nbase_url = \"{}\"\napi_key = \"{CANARY}\"\nconnect_timeout = \"1s\"\n{models}",
            upstream.base_url()
        ),
    );
    write(
        root,
        "llms/providers/backup.toml",
        &format!(
            "kind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-backup\"\n\n[models.ok]\nupstream = \"backup-ok\"\n",
            upstream.base_url()
        ),
    );
    write(
        root,
        "llms/task-groups/failover.toml",
        r#"
[fallback]
max_attempts = 4

[echelons.echelon1]
models = ["primary/fail"]
max_retries = 0
timeout = "2s"

[echelons.echelon2]
models = ["backup/ok"]
timeout = "2s"
"#,
    );
    write(
        root,
        "llms/task-groups/slow.toml",
        r#"
[fallback]
max_attempts = 2
deadline = "300ms"

[echelons.echelon1]
models = ["primary/hang"]
timeout = "5s"
"#,
    );
    write(
        root,
        "llms/wrappers/wrappers.toml",
        r#"
[wrappers.chat]
type = "task_group"
target = "failover"

[wrappers.plain]
type = "direct"
target = "primary/ok"
"#,
    );
    let config = app::load(root).unwrap_or_else(|report| panic!("{report}"));
    let components = app::build(root, config, BuildOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grace = Duration::from_millis(300);
    let server = http::start(
        listener,
        &components,
        ServerOptions {
            max_body_size: 16 * 1024,
            shutdown_grace: grace,
            ..Default::default()
        },
        std::future::pending(),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Gateway {
        server,
        upstream,
        decoy,
        client,
        _dir: dir,
    }
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    async fn chat(&self, body: Value) -> (u16, reqwest::header::HeaderMap, String) {
        let response = self
            .client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    async fn admin(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello gateway"}]})
}

fn error_of(body: &str) -> Value {
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["error"].clone()
}

#[tokio::test]
async fn serves_fails_over_and_reports_the_model_that_answered() {
    let gw = start("300ms").await;
    let (status, headers, body) = gw.chat(ask("chat")).await;
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["model"], "backup-ok",
        "the model that answered, not the wrapper"
    );
    assert_eq!(json["choices"][0]["message"]["content"], "hello gateway");
    assert_eq!(
        headers["x-echelon-route"],
        "chat > failover > echelon2 > backup/ok#0"
    );
    assert_eq!(headers["x-echelon-attempts"], "2");
    assert_eq!(gw.upstream.requests("fail-500"), 1);
    assert_eq!(gw.upstream.requests("backup-ok"), 1);
}

#[tokio::test]
async fn every_error_status_in_openai_shape() {
    let gw = start("300ms").await;

    // 401: missing and wrong client keys.
    let response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .body(ask("plain").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        error_of(&response.text().await.unwrap())["code"],
        "invalid_api_key"
    );
    let response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("client-key-2")
        .body(ask("plain").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // 400: malformed JSON and a missing field, naming the field.
    let response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (status, _, body) = gw.chat(json!({"model": "plain"})).await;
    assert_eq!(status, 400);
    assert_eq!(error_of(&body)["param"], "messages");
    let (status, _, body) = gw
        .chat(json!({"model": "plain", "messages": [{"role": "user", "content": 5}]}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(error_of(&body)["param"], "messages[0].content");

    // 404: unknown model, pointing at the list.
    let (status, _, body) = gw.chat(ask("gpt-5-turbo-ultra")).await;
    assert_eq!(status, 404);
    let error = error_of(&body);
    assert_eq!(error["code"], "model_not_found");
    assert!(error["message"].as_str().unwrap().contains("/v1/models"));

    // 413: body over the limit.
    let big = "x".repeat(20 * 1024);
    let (status, _, body) = gw.chat(ask(&big)).await;
    assert_eq!(status, 413, "{body}");

    // 400 from the upstream: returned as it is, never retried.
    let (status, _, _) = gw.chat(ask("primary/bad-request")).await;
    assert_eq!(status, 400);
    assert_eq!(gw.upstream.requests("fail-400"), 1);

    // 429 with Retry-After when everything is rate limited.
    let (status, headers, body) = gw.chat(ask("primary/limited")).await;
    assert_eq!(status, 429, "{body}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (25..=30).contains(&retry_after),
        "retry-after {retry_after}"
    );
    assert_eq!(error_of(&body)["code"], "rate_limited");

    // 503 once the only key is refused (dead key), answered at once.
    let (status, _, _) = gw.chat(ask("primary/dead")).await;
    assert_eq!(status, 502, "the first refusal is an exhausted attempt");
    let (status, _, body) = gw.chat(ask("primary/dead")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        gw.upstream.requests("fail-401"),
        1,
        "a dead key is not called again"
    );

    // 502 with the attempt list, and no secret anywhere in it.
    let (status, headers, body) = gw.chat(ask("primary/fail")).await;
    assert_eq!(status, 502);
    let message = error_of(&body)["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("#1 primary/fail#0: server (HTTP 500)"),
        "{message}"
    );
    assert!(!body.contains(CANARY));
    assert!(headers.get("x-echelon-attempts").is_some());

    // 504 when the request deadline runs out before a silent upstream answers.
    let started = std::time::Instant::now();
    let (status, _, body) = gw.chat(ask("group:slow")).await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Unknown endpoints answer in the same shape.
    let response = gw.client.get(gw.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(error_of(&response.text().await.unwrap()).is_object());

    // After all that, the admin API describes the damage in its own terms: durations as text,
    // enums as snake_case strings, no Rust variant tags, and the CLI's DTOs read it.
    let (status, _, _) = gw.chat(ask("plain")).await;
    assert_eq!(status, 200);
    let (status, body) = gw.admin("/admin/status").await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("\"secs\"") && !body.contains("\"nanos\""),
        "{body}"
    );
    assert!(
        !body.contains("\"Pool\"") && !body.contains("\"Model\""),
        "{body}"
    );
    let dto: echelon_interfaces::api::StatusDto = serde_json::from_str(&body).unwrap();
    assert_eq!(dto.api_version, echelon_interfaces::api::API_VERSION);
    let instance = |id: &str| {
        dto.unique_instances()
            .into_iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("{id} in {body}"))
            .clone()
    };
    let dead = instance("primary/dead#0");
    assert!(dead.key_dead);
    assert_eq!(dead.unavailable.unwrap().kind, "key_dead");
    let limited = instance("primary/limited#0");
    let cooling = limited.unavailable.expect("cooling down");
    assert_eq!(cooling.kind, "cooling_down");
    assert!(cooling.until.unwrap() > dto.now.unwrap());
    let ok = instance("primary/ok#0");
    assert!(ok.latency.ewma.is_some(), "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    let ewma = value["models"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["members"].as_array().unwrap())
        .find(|m| m["instance"]["id"] == "primary/ok#0")
        .map(|m| m["instance"]["latency"]["ewma"].clone())
        .unwrap();
    assert!(
        echelon_config::parse_duration(ewma.as_str().unwrap()).is_ok(),
        "a duration as text: {ewma}"
    );
}

#[tokio::test]
async fn streams_end_with_done_or_with_an_explicit_error() {
    let gw = start("300ms").await;
    let mut body = ask("plain");
    body["stream"] = json!(true);
    let (status, headers, text) = gw.chat(body).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let content: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| d.starts_with('{'))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content.trim(), "hello gateway");

    // Cut after the first content: an error event, and never [DONE].
    let mut body = ask("primary/cut");
    body["stream"] = json!(true);
    let (status, _, text) = gw.chat(body).await;
    assert_eq!(status, 200);
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(!text.contains(CANARY));
}

#[tokio::test]
async fn models_and_admin_endpoints() {
    let gw = start("300ms").await;
    let response = gw
        .client
        .get(gw.url("/v1/models"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let list: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for name in [
        "chat",
        "plain",
        "group:failover",
        "group:failover.echelon2",
        "primary/ok",
    ] {
        assert!(ids.contains(&name), "{name} missing from {ids:?}");
    }

    assert_eq!(
        gw.client
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        gw.client
            .get(gw.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Admin: refused without the admin key (client keys do not open it).
    let response = gw
        .client
        .get(gw.url("/admin/status"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (status, body) = gw.admin("/admin/status").await;
    assert_eq!(status, 200);
    let status_json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_json["generation"], 1);
    assert!(
        status_json["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "failover")
    );
    assert!(!body.contains(CANARY));

    let (status, body) = gw.admin("/admin/route?model=chat").await;
    assert_eq!(status, 200, "{body}");
    let plan: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plan["stages"].as_array().unwrap().len(), 2);
    let (status, _) = gw.admin("/admin/route?model=nope").await;
    assert_eq!(status, 404);
    let (status, _) = gw.admin("/admin/task-groups/failover").await;
    assert_eq!(status, 200);
    let (status, _) = gw.admin("/admin/pools/none").await;
    assert_eq!(status, 404);

    let (status, body) = gw.admin("/admin/config").await;
    assert_eq!(status, 200);
    assert!(!body.contains(CANARY), "config output leaks a key");
    assert!(body.contains("[redacted]"));
    let response = gw
        .client
        .post(gw.url("/admin/config/reload"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, body) = gw.admin("/admin/status").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["generation"],
        2
    );
}

#[tokio::test]
async fn clients_cannot_choose_the_upstream() {
    let gw = start("300ms").await;
    let decoy = gw.decoy.base_url();
    let mut body = ask("plain");
    body["api_base"] = json!(decoy);
    body["base_url"] = json!(decoy);
    body["api_key"] = json!("sk-attacker");
    let response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("x-forwarded-host", gw.decoy.local_addr().to_string())
        .header("host", gw.decoy.local_addr().to_string())
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(gw.decoy.total_requests(), 0);
    assert_eq!(gw.upstream.requests("ok"), 1);
}

#[tokio::test]
async fn drain_fails_readiness_refuses_new_connections_and_ends_running_streams_with_an_error() {
    let gw = start("300ms").await;
    let mut body = ask("primary/slow-stream");
    body["stream"] = json!(true);
    let mut response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));

    let state = std::sync::Arc::clone(&gw.server.state);
    let addr = gw.server.addr;
    let upstream = gw.upstream;
    let shutdown = tokio::spawn(gw.server.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(state.draining.load(std::sync::atomic::Ordering::Acquire));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused while draining"
    );

    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("the stream ends within the grace period")
        .unwrap()
    {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(rest.contains("event: error"), "{rest}");
    assert!(rest.contains("shutting_down"), "{rest}");
    assert!(!rest.contains("[DONE]"));
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let snapshot = state.gateway.snapshot();
    let in_flight: u32 = snapshot
        .models
        .iter()
        .chain(&snapshot.pools)
        .flat_map(|p| &p.members)
        .map(|m| m.instance.in_flight)
        .sum();
    assert_eq!(in_flight, 0, "every permit is released after the drain");
    drop(upstream);
}

fn series(exposition: &str) -> Vec<&str> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(series, _)| series))
        .collect()
}

#[tokio::test]
async fn metrics_count_requests_by_configured_route_and_bogus_names_add_no_series() {
    let gw = start("300ms").await;
    let (status, _, _) = gw.chat(ask("chat")).await;
    assert_eq!(status, 200);
    let (status, _, _) = gw.chat(ask("primary/fail")).await;
    assert_eq!(status, 502);
    let (status, _, _) = gw.chat(ask("no-such-model")).await;
    assert_eq!(status, 404);
    let (status, _, _) = gw.chat(ask("plain")).await;
    assert_eq!(status, 200);

    let scrape = |gw: &Gateway| {
        let client = gw.client.clone();
        let url = gw.url("/metrics");
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain")
            );
            response.text().await.unwrap()
        }
    };
    let before = scrape(&gw).await;
    for expected in [
        r#"echelon_requests_total{route="chat",status="200"} 1"#,
        r#"echelon_requests_total{route="primary/fail",status="502"} 1"#,
        r#"echelon_requests_total{route="unknown",status="404"} 1"#,
        r#"echelon_request_errors_total{route="primary/fail",class="server"} 1"#,
        r#"echelon_fallbacks_total{group="failover",echelon="echelon1"} 1"#,
        r#"echelon_config_generation 1"#,
    ] {
        assert!(
            before.contains(expected),
            "missing `{expected}` in\n{before}"
        );
    }
    assert!(before.contains("echelon_instance_in_flight{instance=\"backup/ok#0\"} 0"));
    // One of its ten requests a minute is spent.
    let rpm: f64 = before
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"echelon_instance_limiter_saturation{instance="primary/ok#0",limit="rpm"} "#,
            )
        })
        .unwrap_or_else(|| panic!("no rpm saturation in\n{before}"))
        .parse()
        .unwrap();
    assert!((0.05..0.15).contains(&rpm), "{rpm}");
    assert!(!before.contains(CANARY));

    // 10,000 requests for names nobody configured add no series: they all count as `unknown`.
    let tasks: Vec<_> = (0..16)
        .map(|worker| {
            let client = gw.client.clone();
            let url = gw.url("/v1/chat/completions");
            tokio::spawn(async move {
                for i in 0..625 {
                    let body = ask(&format!("bogus-{worker}-{i}")).to_string();
                    let response = client
                        .post(&url)
                        .bearer_auth(CLIENT_KEY)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 404);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let after = scrape(&gw).await;
    let (before_series, after_series) = (series(&before), series(&after));
    assert_eq!(
        before_series.len(),
        after_series.len(),
        "new series appeared: {:?}",
        after_series
            .iter()
            .filter(|s| !before_series.contains(s))
            .collect::<Vec<_>>()
    );
    assert!(after.contains(r#"echelon_requests_total{route="unknown",status="404"} 10001"#));
    assert!(!after.contains("bogus-"));
}
