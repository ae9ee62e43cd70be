//! The admin API's wire format, snapshot-tested: a change to a DTO shows here as a diff that a
//! reviewer has to accept (`cargo insta review`), so the public API cannot change by accident.

use echelon_config::ProcessEnv;
use echelon_domain::time::Clock as _;
use echelon_interfaces::api::{ExplanationDto, StatusDto};
use echelon_interfaces::app::{self, BuildOptions};

const REGISTRY: &str = "[registry]\nversion = 1\n\n[global]\nhot_reload = false\n";

/// A pool over two keys with limits, a two-echelon group, a wrapper: every element the status
/// document has.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in [
        ("gateway.toml", ""),
        ("llms/_registry.toml", REGISTRY),
        (
            "llms/providers/alpha.toml",
            "kind = \"mock\"\napi_keys = [\"alpha-0\", \"alpha-1\"]\n\n[models.small]\nrpm_limit = 60\ntpm_limit = 100000\nmax_concurrency = 8\ncontext_window = 32000\n",
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
            "[echelons.echelon1]\nmodels = [\"pool:main\"]\nconcurrency_limit = 16\nrpm_limit = 120\n\n[echelons.echelon2]\nmodels = [\"beta/large\"]\nmax_retries = 0\n",
        ),
        (
            "llms/wrappers/default.toml",
            "[wrappers.assist]\ntype = \"task_group\"\ntarget = \"assist\"\n",
        ),
    ] {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn components(dir: &std::path::Path) -> app::Components {
    let config = echelon_config::load(dir, &ProcessEnv).expect("the tree loads");
    app::build(dir, config, BuildOptions::default()).expect("the gateway builds")
}

/// Every object key of a JSON document, recursively.
fn keys(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                keys(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// No Rust leaks into the wire format: no `{secs, nanos}` durations, no `{"Pool": …}` variant
/// tags (every key is snake_case), and the version is there.
fn assert_wire_conventions(json: &serde_json::Value) {
    let mut all = Vec::new();
    keys(json, &mut all);
    for key in &all {
        assert!(
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "key `{key}` is not snake_case: {json:#}"
        );
        assert!(key != "secs" && key != "nanos", "a Rust Duration: {json:#}");
    }
    assert_eq!(json["api_version"], echelon_interfaces::api::API_VERSION);
}

#[tokio::test]
async fn the_status_document_of_a_fresh_gateway() {
    let dir = tree();
    let components = components(dir.path());
    let mut status = echelon_interfaces::demo::status_of(&components.gateway);
    // The one value that depends on when the test ran.
    status.now = Some(0.0);
    let json = serde_json::to_value(&status).unwrap();
    assert_wire_conventions(&json);
    insta::assert_snapshot!(serde_json::to_string_pretty(&json).unwrap());
    // What the server writes, the command line reads back unchanged.
    let read: StatusDto = serde_json::from_value(json).unwrap();
    assert_eq!(read, status);
}

#[tokio::test]
async fn the_route_document_of_a_fresh_gateway() {
    let dir = tree();
    let components = components(dir.path());
    let gateway = &components.gateway;
    let explanation = gateway.explain("assist").unwrap();
    let mut dto = ExplanationDto::new(&explanation, gateway.clock().now());
    dto.now = Some(0.0);
    let json = serde_json::to_value(&dto).unwrap();
    assert_wire_conventions(&json);
    insta::assert_snapshot!(serde_json::to_string_pretty(&json).unwrap());
    let read: ExplanationDto = serde_json::from_value(json).unwrap();
    assert_eq!(read, dto);
}
