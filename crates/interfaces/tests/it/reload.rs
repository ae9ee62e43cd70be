//! Hot reload end to end: file edits picked up by the watcher, a valid tree swapped in while the
//! live state of unchanged instances carries over, and an invalid tree refused while the old one
//! keeps answering — visible in `/admin/config` and `/metrics`.

use std::time::Duration;

use crate::support::write;
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions};
use echelon_interfaces::app::{self, BuildOptions};
use echelon_interfaces::http::{self, ServerOptions};
use serde_json::{Value, json};

const WRAPPERS: &str = "[wrappers.chat]\ntype = \"direct\"\ntarget = \"primary/ok\"\n";

async fn get_json(client: &reqwest::Client, url: String) -> Value {
    let response = client.get(url).send().await.unwrap();
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// Polls `probe` every 50 ms until it holds, for at most 10 s.
async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn file_edits_reload_valid_trees_and_refuse_invalid_ones_without_interruption() {
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "gateway.toml", "[server]\nrequest_timeout = \"5s\"\n");
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nhot_reload = true\ndebounce = \"100ms\"\n",
    );
    write(
        root,
        "llms/providers/primary.toml",
        &format!(
            "kind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-reload\"\n\n[models.ok]\nupstream = \"ok\"\n\n[models.other]\nupstream = \"other\"\n",
            upstream.base_url()
        ),
    );
    write(root, "llms/wrappers/main.toml", WRAPPERS);

    let config = app::load(root).unwrap_or_else(|report| panic!("{report}"));
    let components = app::build(root, config, BuildOptions::default()).unwrap();
    let watcher = app::watch(&components.control).unwrap();
    assert!(watcher.is_some(), "hot_reload = true starts the watcher");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = http::start(
        listener,
        &components,
        ServerOptions {
            max_body_size: 1 << 20,
            shutdown_grace: Duration::from_millis(200),
            ..Default::default()
        },
        std::future::pending(),
    )
    .unwrap();
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let chat = |model: &'static str| {
        let client = client.clone();
        let url = format!("{base}/v1/chat/completions");
        async move {
            let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
            let response = client
                .post(url)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    };

    assert_eq!(chat("chat").await, 200);
    assert_eq!(chat("chat2").await, 404);

    // A valid edit: a second wrapper appears; the unchanged instance keeps its statistics.
    write(
        root,
        "llms/wrappers/main.toml",
        &format!("{WRAPPERS}\n[wrappers.chat2]\ntype = \"direct\"\ntarget = \"primary/other\"\n"),
    );
    eventually("the new wrapper", || async { chat("chat2").await == 200 }).await;
    let status = get_json(&client, format!("{base}/admin/status")).await;
    assert_eq!(status["generation"], 2);
    let ok = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "model" && m["name"] == "primary/ok")
        .unwrap_or_else(|| panic!("primary/ok missing from {status}"));
    assert_eq!(
        ok["members"][0]["instance"]["stats"]["successes"], 1,
        "the live state of an unchanged instance survives the reload"
    );

    // An invalid edit: refused, reported, and the old tree keeps answering.
    write(root, "llms/wrappers/main.toml", "[wrappers.chat\ntype = ");
    eventually("the refused reload", || {
        let client = client.clone();
        let url = format!("{base}/admin/config");
        async move {
            let config = get_json(&client, url).await;
            config["reloads"]["rejected"] == 1
        }
    })
    .await;
    let config = get_json(&client, format!("{base}/admin/config")).await;
    let last = &config["reloads"]["last"];
    assert_eq!(last["applied"], false);
    assert_eq!(last["trigger"], "watch");
    let errors = last["errors"].to_string();
    assert!(errors.contains("llms/wrappers/main.toml"), "{errors}");
    assert_eq!(config["generation"], 2);
    assert_eq!(chat("chat").await, 200);
    assert_eq!(chat("chat2").await, 200);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("echelon_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("echelon_config_reloads_total{result=\"error\"} 1"));
    assert!(metrics.contains("echelon_config_last_reload_success 0"));

    // Fixing the file brings reloads back.
    write(root, "llms/wrappers/main.toml", WRAPPERS);
    eventually("the repaired tree", || async { chat("chat2").await == 404 }).await;
    server.shutdown().await.unwrap();
    drop(watcher);
}

/// `gateway.toml` with one rule on the health of `primary/ok`'s pool, read every 100 ms.
fn gateway_toml(listen: &str, threshold: f64) -> String {
    format!(
        "[server]\nlisten = \"{listen}\"\n\n[alerts]\nevaluation_interval = \"100ms\"\n\n\
         [[alerts.rules]]\nname = \"primary-health\"\nkind = \"threshold\"\n\
         metric = \"pool_healthy_ratio\"\ntarget = \"primary/ok\"\nop = \"<\"\nvalue = {threshold:?}\n\
         window = \"1s\"\nlevel = \"critical\"\n"
    )
}

#[tokio::test]
async fn an_alert_threshold_edited_in_gateway_toml_applies_within_seconds_and_a_new_listen_address_waits_for_a_restart()
 {
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "gateway.toml", &gateway_toml("127.0.0.1:0", 0.5));
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nhot_reload = true\ndebounce = \"100ms\"\n",
    );
    write(
        root,
        "llms/providers/primary.toml",
        &format!(
            "kind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-reload\"\n\n[models.ok]\nupstream = \"ok\"\n",
            upstream.base_url()
        ),
    );
    write(root, "llms/wrappers/main.toml", WRAPPERS);

    let config = app::load(root).unwrap_or_else(|report| panic!("{report}"));
    let settings = config.gateway.clone();
    let components = app::build(root, config, BuildOptions::default()).unwrap();
    let watcher = app::watch(&components.control).unwrap();
    let background = app::start_background(&components, &settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = http::start(
        listener,
        &components,
        ServerOptions {
            max_body_size: 1 << 20,
            shutdown_grace: Duration::from_millis(200),
            ..Default::default()
        },
        std::future::pending(),
    )
    .unwrap();
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let alerts = || get_json(&client, format!("{base}/admin/alerts"));

    // The pool is healthy: 1.0 is not below 0.5.
    let before = alerts().await;
    assert_eq!(before["rules"][0]["value"], 0.5, "{before}");
    assert_eq!(before["active"], json!([]), "{before}");
    let config = get_json(&client, format!("{base}/admin/config")).await;
    assert_eq!(config["restart_needed"], json!([]), "{config}");

    // Raise the threshold above the pool's health: the edited rule is loaded and fires.
    write(root, "gateway.toml", &gateway_toml("127.0.0.1:0", 1.5));
    eventually("the edited threshold to fire", || async {
        let now = alerts().await;
        now["rules"][0]["value"] == 1.5 && now["active"][0]["rule"] == "primary-health"
    })
    .await;
    let firing = alerts().await;
    assert_eq!(firing["active"][0]["target"], "primary/ok", "{firing}");
    assert_eq!(firing["recent"][0]["status"], "firing", "{firing}");

    // A new listen address is taken with the rest of the file, but needs a restart.
    write(root, "gateway.toml", &gateway_toml("127.0.0.1:1", 0.5));
    eventually("the restart to be reported", || async {
        let config = get_json(&client, format!("{base}/admin/config")).await;
        config["restart_needed"] == json!(["server.listen"])
    })
    .await;
    let config = get_json(&client, format!("{base}/admin/config")).await;
    assert_eq!(config["reloads"]["last"]["applied"], true, "{config}");
    assert_eq!(
        config["reloads"]["last"]["restart_needed"],
        json!(["server.listen"])
    );
    // The threshold went back to 0.5 in the same edit: the alert resolves.
    eventually("the alert to resolve", || async {
        alerts().await["active"] == json!([])
    })
    .await;

    server.shutdown().await.unwrap();
    background.shutdown().await;
    drop(watcher);
}
