//! The `echelon` binary as users run it: help, exit codes, `config check/show`, `route explain`,
//! `status`, `doctor`, `demo` and `mock-upstream`, each run as a real process.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root, where `configs/` lives.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary, run from the workspace root with no logging or admin key from the caller's
/// environment.
fn echelon() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_echelon"));
    command
        .current_dir(workspace())
        .env_remove("RUST_LOG")
        .env_remove("ECHELON_ADMIN_KEY")
        .env("NO_COLOR", "1");
    command
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Output {
    run_with(echelon().args(args))
}

fn run_with(command: &mut Command) -> Output {
    let output = command.output().expect("the echelon binary runs");
    Output {
        code: output.status.code().expect("exited with a code"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

/// Writes `files` (relative path, text) under a fresh temporary folder.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

const REGISTRY: &str = "[registry]\nversion = 1\n\n[global]\nhot_reload = false\n";

/// A small valid tree: a pool over two keys, a two-echelon group and a wrapper.
fn small_tree() -> tempfile::TempDir {
    tree(&[
        ("gateway.toml", ""),
        ("llms/_registry.toml", REGISTRY),
        (
            "llms/providers/alpha.toml",
            "kind = \"mock\"\napi_keys = [\"alpha-0\", \"alpha-1\"]\n\n[models.small]\nrpm_limit = 60\n",
        ),
        (
            "llms/providers/beta.toml",
            "kind = \"mock\"\n\n[models.large]\ncontext_window = 200000\n",
        ),
        (
            "llms/pools/main.toml",
            "rotation = \"weighted_round_robin\"\n\n[[instances]]\nmodel = \"alpha/small\"\nweight = 2\n",
        ),
        (
            "llms/task-groups/assist.toml",
            "[echelons.echelon1]\nmodels = [\"pool:main\"]\n\n[echelons.echelon2]\nmodels = [\"beta/large\"]\nmax_retries = 0\n",
        ),
        (
            "llms/wrappers/default.toml",
            "[wrappers.assist]\ntype = \"task_group\"\ntarget = \"assist\"\ndescription = \"the pool, then the large model\"\n",
        ),
    ])
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that is killed (by its PID) when the test ends, pass or fail.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` over plain HTTP/1.0 (no chunked bodies); the status code and body, or `None` when nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Polls `path` until it answers 200, for at most ten seconds.
fn wait_until_ready(addr: SocketAddr, path: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some((200, body)) = http_get(addr, path) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{addr}{path} did not answer 200 within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn help_lists_every_command_with_examples() {
    let out = run(&["--help"]);
    assert_eq!(out.code, 0);
    insta::assert_snapshot!("help", out.stdout);
    for command in [
        "serve",
        "demo",
        "config check",
        "config show",
        "route explain",
        "status",
        "doctor",
        "mock-upstream",
    ] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let out = run(&args);
        assert_eq!(out.code, 0, "{command} --help");
        assert!(
            out.stdout.contains("Example"),
            "`{command} --help` shows examples:\n{}",
            out.stdout
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["config", "chek"][..],
        &["demo", "--duration", "0"],
        &["route", "explain"],
        &["config", "check", "--strict", "--lenient"],
        &["nonsense"],
    ] {
        let out = run(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("error: "),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn config_check_accepts_the_shipped_configuration() {
    let out = run(&["config", "check", "--config", "configs"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.stdout.lines().last().unwrap();
    assert!(
        summary.starts_with("configuration OK: ") && summary.contains(" wrappers; "),
        "{summary}"
    );
}

#[test]
fn config_check_reports_every_problem_with_file_line_and_key() {
    let dir = tree(&[
        ("gateway.toml", ""),
        ("llms/_registry.toml", REGISTRY),
        (
            "llms/providers/alpha.toml",
            "kind = \"mock\"\n\n[models.small]\n",
        ),
        (
            "llms/pools/main.toml",
            "rotation = \"round_robbin\"\n\n[[instances]]\nmodel = \"alpha/smal\"\n",
        ),
        (
            "llms/task-groups/assist.toml",
            "[echelons.echelon1]\nmodels = [\"pool:main\"]\nmax_retires = 1\n",
        ),
    ]);
    let config = dir.path().to_str().unwrap();
    let out = run(&["config", "check", "--config", config]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("llms/pools/main.toml:1:"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("key: "), "{}", out.stdout);
    insta::assert_snapshot!("config_check_broken", out.stdout);

    // Lenient: the broken pool is dropped, and the group that needs it; the rest loads.
    let out = run(&["config", "check", "--config", config, "--lenient"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("warning[dropped]: dropped task group `assist`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.ends_with("configuration OK: 1 provider, 1 model, 0 pools, 0 task groups, 0 wrappers; 5 warnings\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn config_show_summarises_the_tree_and_never_prints_a_secret() {
    const CANARY: &str = "sk-canary-5e3f9a7b";
    let dir = tree(&[
        (
            "gateway.toml",
            "[auth]\nadmin_key = \"${ECHELON_TEST_CANARY}\"\n",
        ),
        ("llms/_registry.toml", REGISTRY),
        (
            "llms/providers/openai.toml",
            "kind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_keys = [\"${ECHELON_TEST_CANARY}\", \"literal-${ECHELON_TEST_CANARY}\"]\n\n[headers]\nX-Org = \"${ECHELON_TEST_CANARY}\"\n\n[models.gpt]\n",
        ),
        (
            "llms/wrappers/default.toml",
            "[wrappers.chat]\ntype = \"direct\"\ntarget = \"openai/gpt\"\n",
        ),
    ]);
    let config = dir.path().to_str().unwrap();
    for resolved in [false, true] {
        let mut command = echelon();
        command
            .args(["config", "show", "--config", config])
            .env("ECHELON_TEST_CANARY", CANARY);
        if resolved {
            command.arg("--resolved");
        }
        let out = run_with(&mut command);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert!(!out.stdout.contains("canary"), "{}", out.stdout);
        assert!(!out.stderr.contains("canary"), "{}", out.stderr);
        if resolved {
            let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(
                json.pointer("/gateway/auth/admin_key"),
                Some(&serde_json::json!("[redacted]"))
            );
            assert_eq!(
                json.pointer("/topology/providers/openai/endpoints"),
                Some(&serde_json::json!({
                    "chat_completions": "http://127.0.0.1:9/v1/chat/completions",
                    "responses": "http://127.0.0.1:9/v1/responses",
                    "embeddings": "http://127.0.0.1:9/v1/embeddings",
                    "models": "http://127.0.0.1:9/v1/models",
                })),
                "{}",
                out.stdout
            );
        } else {
            assert!(out.stdout.contains("chat"), "{}", out.stdout);
            assert!(out.stdout.contains("admin key: set"), "{}", out.stdout);
            assert!(
                out.stdout
                    .lines()
                    .any(|l| l.contains("openai") && l.contains("http://127.0.0.1:9/v1")),
                "{}",
                out.stdout
            );
        }
    }
}

#[test]
fn route_explain_prints_the_plan_offline() {
    let dir = small_tree();
    let config = dir.path().to_str().unwrap();
    let out = run(&["route", "explain", "assist", "--config", config]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("route_explain_offline", out.stdout);

    let out = run(&["route", "explain", "chat"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("route: chat › group:chat\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("stage 1: chat › echelon1"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("DECISION"), "{}", out.stdout);
}

#[test]
fn route_explain_of_an_unknown_name_exits_1_and_says_how_to_list_names() {
    let out = run(&["route", "explain", "caht"]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("model `caht` not found; did you mean `chat`?"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("`echelon config show`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("GET /v1/models"), "{}", out.stderr);
}

#[test]
fn status_and_route_explain_read_a_running_gateway() {
    let port = closed_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let _server = Spawned(
        echelon()
            .args([
                "serve",
                "--config",
                "configs",
                "--listen",
                &addr.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until_ready(addr, "/readyz");
    let url = format!("http://{addr}");

    let out = run(&["status", "--url", &url]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with(&format!("gateway {url}\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("pool fast (weighted_round_robin)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("task group chat (echelon_down)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("mock-fast/fast-chat#0"),
        "{}",
        out.stdout
    );

    let out = run(&["route", "explain", "chat", "--url", &url]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("stage 1: chat › echelon1"),
        "{}",
        out.stdout
    );

    let out = run(&["route", "explain", "nope", "--url", &url]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("model `nope` not found"),
        "{}",
        out.stderr
    );

    let closed = format!("http://127.0.0.1:{}", closed_port());
    let out = run(&["status", "--url", &closed]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains(&format!("cannot reach the gateway at {closed}")),
        "{}",
        out.stderr
    );
}

#[test]
fn config_check_and_doctor_refuse_a_misspelled_alert_metric_with_its_line() {
    // `serve` could never evaluate this rule, so neither check may call the tree OK.
    let dir = small_tree();
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[[alerts.rules]]\nname = \"errors\"\nkind = \"threshold\"\nmetric = \"upstream_eror_rate\"\nop = \">\"\nvalue = 0.2\n",
    )
    .unwrap();
    let config = dir.path().to_str().unwrap();
    let out = run(&["config", "check", "--config", config]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    insta::assert_snapshot!("config_check_misspelled_alert_metric", out.stdout);
    let out = run(&["doctor", "--config", config, "--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("gateway.toml:4:10")
            && out.stdout.contains("did you mean `upstream_error_rate`?"),
        "{}",
        out.stdout
    );
}

#[test]
fn doctor_passes_the_shipped_configuration() {
    let out = run(&["doctor", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("\nupstreams\n  ok    mock-"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.ends_with("no problems found\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn doctor_reports_unset_variables_unreachable_upstreams_and_a_taken_address() {
    let port = closed_port();
    let dir = tree(&[
        ("gateway.toml", ""),
        ("llms/_registry.toml", REGISTRY),
        (
            "llms/providers/keyed.toml",
            "kind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key = \"${ECHELON_DOCTOR_TEST_UNSET}\"\n\n[models.gpt]\n",
        ),
        (
            "llms/providers/down.toml",
            &format!(
                "kind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\napi_key = \"literal\"\nconnect_timeout = \"1s\"\n\n[models.gpt]\n"
            ),
        ),
    ]);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let out = run_with(
        echelon()
            .args(["doctor", "--config", dir.path().to_str().unwrap()])
            .args(["--listen", &taken_addr, "--probe-timeout", "2s"])
            .env_remove("ECHELON_DOCTOR_TEST_UNSET"),
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    let text = &out.stdout;
    assert!(
        text.contains("FAIL  `ECHELON_DOCTOR_TEST_UNSET` is not set"),
        "{text}"
    );
    assert!(
        text.contains("fix: export ECHELON_DOCTOR_TEST_UNSET="),
        "{text}"
    );
    assert!(
        text.contains(&format!("FAIL  down (openai, http://127.0.0.1:{port}/v1)")),
        "{text}"
    );
    assert!(text.contains("fix: nothing answers at base_url"), "{text}");
    assert!(
        text.contains(&format!("FAIL  {taken_addr} is already in use")),
        "{text}"
    );
    drop(taken);
}

/// A server that answers every request with a 404 and keeps the request lines it got.
fn not_found_server() -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = reader.read_line(&mut line);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) <= 2 {
                    break;
                }
            }
            let _ = lines.send(line.trim_end().to_owned());
            let body = r#"{"error":{"message":"no such path"}}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

#[test]
fn doctor_names_the_probed_url_and_on_a_404_suggests_the_base_url_fix() {
    let (addr, seen) = not_found_server();
    let dir = tree(&[
        ("gateway.toml", ""),
        ("llms/_registry.toml", REGISTRY),
        (
            "llms/providers/vllm.toml",
            &format!(
                "kind = \"openai\"\nbase_url = \"http://{addr}/api\"\nconnect_timeout = \"1s\"\n\n[models.llama]\n"
            ),
        ),
    ]);
    let out = run(&[
        "doctor",
        "--config",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let text = &out.stdout;
    assert!(
        text.contains(&format!(
            "FAIL  vllm (openai, http://{addr}/api): GET http://{addr}/api/models (probe of vllm/llama#0) failed (404)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "fix: OpenAI-compatible servers usually serve their API under /v1: try base_url = \"http://{addr}/api/v1\""
        )),
        "{text}"
    );
    assert_eq!(seen.recv().unwrap(), "GET /api/models HTTP/1.1");
}

#[test]
fn demo_without_a_terminal_prints_progress_and_a_summary_with_no_client_visible_errors() {
    let out = run(&["demo", "--duration", "3"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let text = &out.stdout;
    assert!(
        !text.contains('\x1b'),
        "no escape codes without a terminal:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with('[') && l.contains("s] requests ")),
        "a progress line every 2 s:\n{text}"
    );
    let field = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{text}"));
        line.trim_start()[name.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number in `{line}`"))
    };
    let requests = field("requests");
    assert!(requests > 20, "{text}");
    assert_eq!(field("served"), requests, "{text}");
    assert_eq!(field("client-visible errors"), 0, "{text}");
    assert!(
        field("fallbacks") > 0,
        "the flaky upstream forces fallbacks:\n{text}"
    );
    assert!(text.contains("served by              echelon1 "), "{text}");
    assert!(text.contains("latency                p50 "), "{text}");
}

#[test]
fn mock_upstream_starts_and_answers() {
    let mut child = echelon()
        .args(["mock-upstream", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = Spawned(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("mock upstream listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    let addr: SocketAddr = base.trim_end_matches("/v1").parse().unwrap();
    let body = wait_until_ready(addr, "/v1/models");
    let models: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(models["object"], "list", "{body}");
}

#[test]
fn serve_keeps_serving_while_redis_is_unreachable_and_doctor_says_so() {
    let dir = small_tree();
    let redis_port = closed_port();
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!(
            "[state]\nbackend = \"redis\"\nredis_url = \"redis://:canary-pw@127.0.0.1:{redis_port}/0\"\ntimeout = \"100ms\"\nretry_interval = \"200ms\"\n"
        ),
    )
    .unwrap();
    let config = dir.path().to_str().unwrap();
    let doctor = run(&["doctor", "--config", config]);
    assert_eq!(doctor.code, 1, "{}", doctor.stdout);
    assert!(
        doctor
            .stdout
            .contains(&format!("Redis redis://***@127.0.0.1:{redis_port}/0")),
        "{}",
        doctor.stdout
    );
    assert!(!doctor.stdout.contains("canary-pw"), "{}", doctor.stdout);

    let addr = SocketAddr::from(([127, 0, 0, 1], closed_port()));
    let mut child = echelon()
        .args(["serve", "--config", config, "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = Spawned(child);
    wait_until_ready(addr, "/healthz");
    let started = Instant::now();
    loop {
        let metrics = wait_until_ready(addr, "/metrics");
        if metrics.contains("echelon_shared_state_mode{mode=\"fallback\"} 1") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never fell back:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    let mut log = String::new();
    BufReader::new(stderr).read_to_string(&mut log).unwrap();
    assert!(log.contains("falling back to local state"), "{log}");
    assert!(!log.contains("canary-pw"), "{log}");
}

#[test]
fn doctor_says_when_redis_answers() {
    let redis = echelon_test_support::redis_server::RedisServer::start();
    let dir = small_tree();
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!(
            "[state]\nbackend = \"redis\"\nredis_url = \"{}\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let doctor = run(&["doctor", "--config", dir.path().to_str().unwrap()]);
    assert!(
        doctor
            .stdout
            .contains(&format!("Redis {} answers", redis.url())),
        "{}",
        doctor.stdout
    );
}

/// A LiteLLM proxy config from the config crate's fixtures (vendored from LiteLLM's docs).
fn litellm_fixture(name: &str) -> String {
    std::fs::read_to_string(
        workspace()
            .join("crates/config/tests/fixtures/litellm/docs")
            .join(name),
    )
    .unwrap()
}

#[test]
fn config_import_litellm_writes_a_tree_that_checks_and_routes() {
    let dir = tree(&[(
        "config.yaml",
        &litellm_fixture("fallbacks_retries_cooldowns.yaml"),
    )]);
    let import = run_with(echelon().current_dir(dir.path()).args([
        "config",
        "import",
        "litellm",
        "config.yaml",
        "--out",
        "configs",
    ]));
    assert_eq!(import.code, 0, "{}", import.stderr);
    insta::assert_snapshot!("config_import_litellm", import.stdout);
    assert!(
        dir.path()
            .join("configs/llms/pools/zephyr-beta.toml")
            .is_file()
    );

    let check = run_with(
        echelon()
            .current_dir(dir.path())
            .args(["config", "check", "--config", "configs"]),
    );
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert!(
        check.stdout.contains("configuration OK: 4 providers"),
        "{}",
        check.stdout
    );

    // The three TGI servers of `zephyr-beta`, then its fallback group, as LiteLLM tries them.
    let explain = run_with(echelon().current_dir(dir.path()).args([
        "route",
        "explain",
        "zephyr-beta",
        "--config",
        "configs",
    ]));
    assert_eq!(explain.code, 0, "{}", explain.stderr);
    let out = &explain.stdout;
    let positions: Vec<usize> = [
        "huggingface/HuggingFaceH4/zephyr-7b-beta#0",
        "huggingface-2/HuggingFaceH4/zephyr-7b-beta#0",
        "huggingface-3/HuggingFaceH4/zephyr-7b-beta#0",
        "stage 2: zephyr-beta › echelon2",
        "openai/gpt-3.5-turbo#0",
    ]
    .iter()
    .map(|needle| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing:\n{out}"))
    })
    .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert!(out.contains("at most 8 upstream attempts"), "{out}");
}

#[test]
fn config_import_litellm_refuses_a_non_empty_folder_without_force() {
    let dir = tree(&[
        ("config.yaml", &litellm_fixture("weights.yaml")),
        ("configs/llms/pools/old.toml", "rotation = \"random\"\n"),
        ("configs/notes.txt", "mine\n"),
    ]);
    let args = [
        "config",
        "import",
        "litellm",
        "config.yaml",
        "--out",
        "configs",
    ];
    let refused = run_with(echelon().current_dir(dir.path()).args(args));
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("is not empty") && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty());
    assert!(
        !dir.path().join("configs/gateway.toml").exists(),
        "nothing is written"
    );

    let forced = run_with(echelon().current_dir(dir.path()).args(args).arg("--force"));
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert!(
        !dir.path().join("configs/llms/pools/old.toml").exists(),
        "the old llms/ is replaced"
    );
    assert!(
        dir.path().join("configs/notes.txt").exists(),
        "other files stay"
    );
    assert!(dir.path().join("configs/llms/pools/o1.toml").is_file());
    let check = run_with(
        echelon()
            .current_dir(dir.path())
            .env("OPENAI_API_KEY", "sk-test")
            .args(["config", "check", "--config", "configs"]),
    );
    assert_eq!(check.code, 0, "{}", check.stdout);
}

#[test]
fn config_import_litellm_exits_1_and_writes_nothing_for_what_is_not_a_litellm_config() {
    let dir = tree(&[
        ("gateway.toml", "[server]\nlisten = \"127.0.0.1:8080\"\n"),
        ("other.yaml", "services:\n  web:\n    image: nginx\n"),
    ]);
    for (input, expected) in [
        ("gateway.toml", "not valid YAML"),
        ("other.yaml", "is not a LiteLLM proxy config"),
        ("missing.yaml", "cannot read missing.yaml"),
    ] {
        let out = run_with(
            echelon()
                .current_dir(dir.path())
                .args(["config", "import", "litellm", input, "--out", "configs"]),
        );
        assert_eq!(out.code, 1, "{input}");
        assert!(out.stderr.contains(expected), "{input}: {}", out.stderr);
        assert!(
            !dir.path().join("configs").exists(),
            "{input}: nothing is written"
        );
    }
}

/// `config check` refuses what `serve` would: a key that is not the certificate's.
#[test]
fn config_check_refuses_a_tls_key_of_another_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["gateway.test".to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other.test".to_owned()]).unwrap();
    let gateway = "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n";
    let provider = "kind = \"mock\"\n\n[models.small]\n";
    let (cert_pem, key_pem, other_key) = (
        cert.cert.pem(),
        cert.signing_key.serialize_pem(),
        other.signing_key.serialize_pem(),
    );
    let good = tree(&[
        ("gateway.toml", gateway),
        ("llms/_registry.toml", REGISTRY),
        ("llms/providers/mock.toml", provider),
        ("cert.pem", &cert_pem),
        ("key.pem", &key_pem),
    ]);
    let out = run(&["config", "check", "--config", good.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    std::fs::write(good.path().join("key.pem"), other_key).unwrap();
    let out = run(&["config", "check", "--config", good.path().to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("server.tls_cert and server.tls_key do not make a usable pair"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("PRIVATE KEY"), "{}", out.stdout);
}
