//! The live status page in a real headless browser: a gateway in-process on 127.0.0.1 in front of
//! a fake upstream whose primary model fails, a few requests so that a breaker opens and requests
//! fall back, then Debian's `chromium` loads `GET /ui` and its DOM must show that live state.
//!
//! Chromium is a system package: `cargo xtask check` installs it (or names the command to run)
//! before any test starts. Run alone without it, these tests fail and say how to install it; they
//! never pass silently.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::write;
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions};
use echelon_interfaces::app::{self, BuildOptions};
use echelon_interfaces::http::{self, RunningServer, ServerOptions};
use serde_json::{Value, json};

const CLIENT_KEY: &str = "client-key-ui";
const ADMIN_KEY: &str = "admin-key-ui";

/// Fires while the failing instance's breaker is open.
const ALERT_RULE: &str = r#"
[[alerts.rules]]
name = "primary-breaker-open"
kind = "threshold"
metric = "breaker_open"
target = "primary/fail#0"
op = ">="
value = 1
window = "1s"
level = "critical"
description = "the primary instance refuses calls"
"#;

/// Longest a chromium run may take before it is killed and the test fails.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

struct Gateway {
    server: RunningServer,
    components: app::Components,
    settings: echelon_config::GatewaySettings,
    background: Option<app::Background>,
    _upstream: FakeUpstream,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A gateway with a pool `main` of one failing instance, a task group `failover` that falls back
/// from the pool to a healthy model, and a wrapper `chat` for it. With `admin_key`, the admin
/// API wants that key even from loopback.
async fn start(admin_key: Option<&str>) -> Gateway {
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let admin = admin_key.map_or_else(String::new, |k| format!("admin_key = \"{k}\"\n"));
    write(
        root,
        "gateway.toml",
        &format!(
            "[server]\nrequest_timeout = \"10s\"\n\n[auth]\napi_keys = [\"{CLIENT_KEY}\"]\n{admin}{ALERT_RULE}"
        ),
    );
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nvalidation = \"strict\"\nhot_reload = false\n",
    );
    write(
        root,
        "llms/providers/primary.toml",
        &format!(
            "kind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-primary\"\nconnect_timeout = \"1s\"\n\n[models.fail]\nupstream = \"fail-500\"\n",
            upstream.base_url()
        ),
    );
    write(
        root,
        "llms/providers/backup.toml",
        &format!(
            "kind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-backup\"\n\n[models.ok]\nupstream = '<b id=\"injected\">ok</b>'\n",
            upstream.base_url()
        ),
    );
    write(
        root,
        "llms/pools/main.toml",
        r#"
rotation = "round_robin"

[[instances]]
model = "primary/fail"

[circuit_breaker]
failure_threshold = 2
recovery_time = "10m"

[health_check]
interval = "10m"
timeout = "2s"
probe = "completion"
"#,
    );
    write(
        root,
        "llms/task-groups/failover.toml",
        r#"
[fallback]
max_attempts = 4

[echelons.first]
priority = 1
models = ["pool:main"]
max_retries = 0
timeout = "2s"

[echelons.second]
priority = 2
models = ["backup/ok"]
timeout = "2s"
"#,
    );
    write(
        root,
        "llms/wrappers/wrappers.toml",
        "[wrappers.chat]\ntype = \"task_group\"\ntarget = \"failover\"\n",
    );
    let config = app::load(root).unwrap_or_else(|report| panic!("{report}"));
    let settings = config.gateway.clone();
    let components = app::build(root, config, BuildOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = http::start(
        listener,
        &components,
        ServerOptions {
            max_body_size: 64 * 1024,
            shutdown_grace: Duration::from_millis(200),
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
        components,
        settings,
        background: None,
        _upstream: upstream,
        client,
        _dir: dir,
    }
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    async fn chat(&self) -> u16 {
        let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
        let response = self
            .client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }

    /// Starts the health checker and the alert engine: each runs a first round at once (the
    /// next ones are minutes away), so the state they show then stays put while a test looks.
    fn start_background(&mut self) {
        let background = app::start_background(&self.components, &self.settings).unwrap();
        self.background = Some(background);
    }

    /// The admin status once `ready` holds for it, polled for at most five seconds.
    async fn status_when(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = self.status(None).await;
            if ready(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "waited 5 s for {what}: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn alerts(&self) -> Value {
        let response = self
            .client
            .get(self.url("/admin/alerts"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        serde_json::from_str(&response.text().await.unwrap()).unwrap()
    }

    async fn stop(self) {
        if let Some(background) = self.background {
            background.shutdown().await;
        }
        self.server.shutdown().await.unwrap();
    }

    async fn status(&self, admin_key: Option<&str>) -> Value {
        let mut request = self.client.get(self.url("/admin/status"));
        if let Some(key) = admin_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        serde_json::from_str(&response.text().await.unwrap()).unwrap()
    }
}

/// What one chromium run printed, and how long it took.
struct Run {
    stdout: String,
    took: Duration,
}

/// Runs Debian's headless chromium on `url` with `extra` arguments, in a fresh profile, bounded
/// by [`CHROMIUM_TIMEOUT`]: past it the browser's whole process group is killed and the test
/// fails.
fn chromium(url: &str, extra: &[String]) -> Run {
    use std::os::unix::process::CommandExt as _;

    let scratch = tempfile::tempdir().unwrap();
    let profile = scratch.path().join("profile");
    let stdout_path = scratch.path().join("stdout");
    let stderr_path = scratch.path().join("stderr");
    let started = Instant::now();
    let spawned = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        // Its own process group, so that a timeout can end the browser and every helper it forked.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "chromium is not installed, and the status page is tested in a real browser: run \
             `cargo xtask system-packages` (as root it installs Debian's chromium; otherwise it \
             names the command)"
        ),
        Err(error) => panic!("could not start chromium: {error}"),
    };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CHROMIUM_TIMEOUT {
            // The group id is the child's pid (process_group(0)); `kill -- -PGID` ends them all.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within {CHROMIUM_TIMEOUT:?}; its stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    assert!(
        status.success(),
        "chromium failed ({status}); its stderr:\n{}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    Run { stdout, took }
}

/// The page's DOM after its scripts have run for `budget_ms` of virtual time.
async fn rendered(url: String, budget_ms: u32) -> Run {
    tokio::task::spawn_blocking(move || {
        chromium(
            &url,
            &[
                format!("--virtual-time-budget={budget_ms}"),
                "--dump-dom".to_owned(),
            ],
        )
    })
    .await
    .unwrap()
}

/// The instance with `id` in the pools of a status JSON.
fn instance<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .chain(status["models"].as_array().unwrap())
        .flat_map(|pool| pool["members"].as_array().unwrap())
        .map(|member| &member["instance"])
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no instance {id} in {status:#}"))
}

/// `text` as a serialised DOM shows a text node of it.
fn as_html_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn assert_shows(dom: &str, needle: &str, what: &str) {
    assert!(
        dom.contains(needle),
        "the page should show {what} (`{needle}`); its DOM:\n{dom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_the_live_state_of_a_running_gateway() {
    let mut gateway = start(None).await;
    for _ in 0..4 {
        assert_eq!(
            gateway.chat().await,
            200,
            "every request falls back and is served"
        );
    }
    gateway.start_background();
    let status = gateway
        .status_when("the first probe", |s| {
            s["probes"].as_array().is_some_and(|p| !p.is_empty())
        })
        .await;
    let alerts = gateway.alerts().await;
    let alert = &alerts["active"][0];
    assert_eq!(alert["rule"], "primary-breaker-open", "{alerts:#}");
    let probe = &status["probes"][0];
    assert_eq!(probe["instance"], "primary/fail#0", "{status:#}");
    assert_eq!(probe["result"], "failed", "{status:#}");
    assert_eq!(probe["class"], "server", "{status:#}");
    let failing = instance(&status, "primary/fail#0");
    assert_eq!(
        failing["breaker"], "open",
        "the scenario opens the breaker: {status:#}"
    );
    let health = failing["health"].as_str().unwrap();
    let first = &status["groups"][0]["echelons"][0];
    assert_eq!(first["name"], "first");
    let fallbacks = first["stats"]["fallbacks"].as_u64().unwrap();
    assert!(
        fallbacks >= 3,
        "requests fell back from `first`: {status:#}"
    );

    // No admin key is configured: the admin API answers the browser because it is on loopback.
    let run = rendered(gateway.url("/ui"), 5000).await;
    println!("chromium rendered the page in {:?}", run.took);
    let dom = run.stdout;

    assert!(
        !dom.contains("Loading the gateway's state"),
        "the script replaced the static placeholder: {dom}"
    );
    assert_shows(&dom, r#"role="alert" hidden="""#, "no error banner");
    assert_shows(
        &dom,
        r#"data-generation="1""#,
        "the configuration generation",
    );
    assert_shows(
        &dom,
        r#"data-shared-state="memory""#,
        "the shared state mode",
    );
    assert_shows(&dom, r#"data-pool="pool:main""#, "the pool");
    assert_shows(
        &dom,
        &format!(r#"data-instance="primary/fail#0" data-health="{health}" data-breaker="open""#),
        "the failing instance with its health and open breaker",
    );
    assert_shows(
        &dom,
        r#"title="breaker: open">open"#,
        "an open breaker badge",
    );
    assert_shows(
        &dom,
        &format!(r#"title="health: {health}">{health}"#),
        "the failing instance's health badge",
    );
    assert_shows(
        &dom,
        r#"data-instance="backup/ok#0" data-health="healthy" data-breaker="closed""#,
        "the healthy fallback instance",
    );
    assert_shows(&dom, r#"data-group="failover""#, "the task group");
    assert_shows(
        &dom,
        r#"data-echelon="first" data-breaker="closed""#,
        "echelon `first`",
    );
    assert_shows(&dom, r#"data-echelon="second""#, "echelon `second`");
    assert_shows(
        &dom,
        &format!(r#"data-fallbacks="{fallbacks}">{fallbacks} fallbacks"#),
        "the group's fallback count",
    );
    // The upstream model name holds markup; it must arrive as text, never as an element.
    assert_shows(
        &dom,
        "&lt;b id=\"injected\"&gt;ok&lt;/b&gt;",
        "the upstream model name as text",
    );
    assert!(
        !dom.contains("<b id=\"injected\">"),
        "data from the gateway must never become markup: {dom}"
    );
    assert_shows(&dom, r#"data-section="history""#, "the recent history");
    assert_shows(&dom, r#"data-event="breaker""#, "the breaker transition");
    assert_shows(&dom, r#"data-event="fallback""#, "the fallbacks");
    assert_shows(
        &dom,
        "failures reached the breaker's threshold",
        "why the breaker opened",
    );
    assert_shows(
        &dom,
        r#"data-alert="primary-breaker-open" data-level="critical""#,
        "the firing alert",
    );
    assert_shows(
        &dom,
        &as_html_text(alert["summary"].as_str().unwrap()),
        "the alert's summary",
    );
    assert_shows(
        &dom,
        r#"data-notice="primary-breaker-open" data-status="firing""#,
        "the alert's firing notice",
    );
    assert_shows(
        &dom,
        r#"data-tile="alerts"><div class="n">1<"#,
        "one alert firing in the summary",
    );
    assert_shows(
        &dom,
        r#"data-probe="primary/fail#0" data-result="failed""#,
        "the failed health probe",
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_says_when_the_admin_api_wants_a_key() {
    let gateway = start(Some(ADMIN_KEY)).await;
    assert_eq!(gateway.status(Some(ADMIN_KEY)).await["generation"], 1);

    // The page loads without a key; the admin API it polls refuses it.
    let run = rendered(gateway.url("/ui"), 3000).await;
    let dom = run.stdout;
    assert_shows(
        &dom,
        "The admin API wants a key (401 admin_key_required):",
        "the refusal in the error banner",
    );
    assert!(
        !dom.contains(r#"role="alert" hidden"#),
        "the banner is visible: {dom}"
    );
    assert_shows(&dom, "Enter the gateway's admin key above", "what to do");
    assert!(
        !dom.contains("data-pool="),
        "nothing is shown without access: {dom}"
    );
    gateway.stop().await;
}
