//! `echelon_config::import::litellm` over real LiteLLM configurations (tests/fixtures/litellm:
//! every config YAML shipped in the litellm 1.110.2 package, and LiteLLM's documentation
//! examples for router settings and fallbacks): each imports, the tree loads with the variables
//! it names and no warning, and each wrapper's plan lists the deployments LiteLLM's router
//! would use, in its order. The trees, reports and plans are snapshots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use echelon_config::import::{self, FindingKind, Import, ImportError};
use echelon_config::{LoadedConfig, load};
use std::time::Duration;

use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::plan::{Outcome, RequestFacts, Step};
use echelon_domain::random::SplitMix64;
use echelon_domain::routing::{RoutingTable, TableOptions};
use echelon_domain::time::{Clock as _, ManualClock};

use crate::support::write;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/litellm")
}

/// Every fixture, as `package/NAME.yaml` or `docs/NAME.yaml`, sorted.
fn fixture_names() -> Vec<String> {
    let mut names = Vec::new();
    for folder in ["package", "docs"] {
        for entry in std::fs::read_dir(fixtures().join(folder)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".yaml") {
                names.push(format!("{folder}/{name}"));
            }
        }
    }
    names.sort();
    names
}

fn import_fixture(name: &str) -> Import {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    import::litellm(&text, name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A value for each variable the tree reads: URLs where a URL goes.
fn environment(import: &Import) -> BTreeMap<String, String> {
    import
        .report
        .variables
        .iter()
        .map(|name| {
            let value =
                if name.contains("BASE") || name.contains("URL") || name.contains("ENDPOINT") {
                    "https://upstream.example".to_owned()
                } else {
                    format!("value-of-{name}")
                };
            (name.clone(), value)
        })
        .collect()
}

/// Writes the tree into a temporary folder and loads it, as `echelon config check` would.
fn load_tree(name: &str, import: &Import) -> LoadedConfig {
    let dir = tempfile::tempdir().unwrap();
    for file in &import.files {
        write(dir.path(), &file.path, &file.text);
    }
    let config = load(dir.path(), &environment(import))
        .unwrap_or_else(|report| panic!("{name}: the imported tree does not load:\n{report}"));
    assert!(
        config.warnings.is_empty(),
        "{name}: the imported tree loads with warnings: {:#?}",
        config.warnings
    );
    config
}

/// A plan's stages: each stage's label and the instances it may try, with their weights.
type Stages = Vec<(String, Vec<(String, u64)>)>;

/// Each wrapper's plan, as `route explain` lists it.
fn plans(config: &LoadedConfig) -> BTreeMap<String, Stages> {
    let clock = ManualClock::new();
    let table = RoutingTable::build(
        Arc::new(config.topology.clone()),
        None,
        TableOptions::default(),
        clock.now(),
    );
    config
        .topology
        .wrappers
        .keys()
        .map(|wrapper| {
            let route = table.resolve(wrapper.as_str()).unwrap();
            let explanation = table.explain(&route, clock.now());
            let stages = explanation
                .stages
                .iter()
                .map(|stage| {
                    let candidates = stage
                        .targets
                        .iter()
                        .flat_map(|t| t.candidates.iter())
                        .map(|c| (c.instance.to_string(), c.weight))
                        .collect();
                    (stage.label.clone(), candidates)
                })
                .collect();
            (wrapper.to_string(), stages)
        })
        .collect()
}

fn plans_text(config: &LoadedConfig) -> String {
    let mut text = String::new();
    for (wrapper, stages) in plans(config) {
        let _ = writeln!(text, "{wrapper}");
        for (label, candidates) in stages {
            let list: Vec<String> = candidates
                .iter()
                .map(|(id, w)| format!("{id} (weight {w})"))
                .collect();
            let _ = writeln!(text, "  {label}: {}", list.join(", "));
        }
    }
    text
}

/// The instances a wrapper may try, stage by stage.
fn stages(config: &LoadedConfig, wrapper: &str) -> Vec<Vec<String>> {
    plans(config)[wrapper]
        .iter()
        .map(|(_, candidates)| candidates.iter().map(|(id, _)| id.clone()).collect())
        .collect()
}

/// The instances a request for `wrapper` calls when every upstream fails with `class`, in order,
/// as the engine would drive the plan (waits are waited out on a manual clock).
fn attempts_when_everything_fails(
    config: &LoadedConfig,
    wrapper: &str,
    class: ErrorClass,
) -> Vec<String> {
    let clock = ManualClock::new();
    let rng = SplitMix64::new(7);
    let table = RoutingTable::build(
        Arc::new(config.topology.clone()),
        None,
        TableOptions::default(),
        clock.now(),
    );
    let route = table.resolve(wrapper).unwrap();
    let facts = RequestFacts {
        estimated_tokens: 100,
        now: clock.now(),
        deadline: None,
    };
    let mut plan = table.plan(&route, facts);
    let mut called = Vec::new();
    for _ in 0..200 {
        match plan.next(clock.now(), &rng) {
            Step::Attempt(attempt) => {
                called.push(attempt.instance.to_string());
                let error = UpstreamError::new(class, "failed").with_status(500);
                let outcome = Outcome::Failure {
                    error,
                    latency: Duration::from_millis(10),
                };
                plan.record(attempt, outcome, clock.now(), &rng);
            }
            Step::Wait { until, .. } => clock.set(until),
            Step::Done(_) => return called,
        }
    }
    panic!("the plan for {wrapper} did not finish: {called:?}");
}

#[test]
fn every_vendored_config_imports_loads_and_routes() {
    let names = fixture_names();
    assert_eq!(names.len(), 40, "{names:#?}");
    for name in names {
        let import = import_fixture(&name);
        let config = load_tree(&name, &import);
        assert_eq!(
            config.topology.wrappers.len(),
            import.report.wrappers.len(),
            "{name}"
        );
        let mut text = String::new();
        for file in &import.files {
            let _ = writeln!(text, "=== {}\n{}", file.path, file.text);
        }
        let _ = writeln!(
            text,
            "=== report\n{}",
            import.report.render(&name, "out", import.files.len())
        );
        let _ = writeln!(text, "=== plans\n{}", plans_text(&config));
        let snapshot = name.trim_end_matches(".yaml").replace('/', "__");
        insta::assert_snapshot!(snapshot, text);
    }
}

#[test]
fn every_config_with_a_model_list_maps_some_model_or_says_why_not() {
    for name in fixture_names() {
        let text = std::fs::read_to_string(fixtures().join(&name)).unwrap();
        let import = import_fixture(&name);
        let deployments = text.matches("model_name:").count();
        let report = &import.report;
        let not_mapped = report
            .findings
            .iter()
            .filter(|f| {
                f.kind == FindingKind::NotMapped
                    && f.key.starts_with("model_list[")
                    && !f.key.contains('.')
            })
            .count();
        let mapped = report
            .findings
            .iter()
            .filter(|f| {
                f.kind == FindingKind::Mapped
                    && f.key.starts_with("model_list[")
                    && !f.key.contains('.')
            })
            .count();
        let merged = report
            .findings
            .iter()
            .filter(|f| {
                f.text
                    .contains("LiteLLM gives identical deployments one id")
            })
            .count();
        assert_eq!(
            mapped + merged + not_mapped,
            deployments,
            "{name}: every deployment is either mapped or reported"
        );
    }
}

#[test]
fn load_balancer_example_keeps_keys_limits_and_rpm_weights() {
    let import = import_fixture("package/load_balancer.yaml");
    let config = load_tree("load_balancer", &import);
    // Two keys of api.openai.com and the OpenRouter deployment; mistralai/... has no provider.
    assert_eq!(
        stages(&config, "gpt-3.5-turbo"),
        [[
            "openai/gpt-3.5-turbo#0",
            "openai/gpt-3.5-turbo#1",
            "openrouter/gpt-3.5-turbo#0"
        ]]
    );
    assert!(!config.topology.wrappers.contains_key("mistral-7b-instruct"));
    let pool = &config.topology.pools["gpt-3-5-turbo"];
    let limits: Vec<_> = pool
        .instances
        .iter()
        .map(|i| (i.limits.rpm, i.limits.tpm))
        .collect();
    assert_eq!(
        limits,
        [(Some(3), Some(20000)), (Some(3), Some(20000)), (None, None)]
    );
    // simple-shuffle weighs by the first deployment's field, here the top-level rpm is a limit
    // only (LiteLLM reads litellm_params for weights), so the shares are equal.
    assert!(pool.instances.iter().all(|i| i.weight == 1));
    let report = import
        .report
        .render("load_balancer.yaml", "out", import.files.len());
    for literal in ["sk-uj6F", "sk-Imn"] {
        assert!(!report.contains(literal), "a key in the report:\n{report}");
        assert!(
            import.files.iter().any(|f| f.text.contains(literal)),
            "the key is kept"
        );
    }
    assert!(report.contains("mistral-7b-instruct"), "{report}");
}

#[test]
fn weights_and_rpm_become_weighted_random_shares() {
    let config = load_tree("weights", &import_fixture("docs/weights.yaml"));
    let pool = &config.topology.pools["o1"];
    assert_eq!(
        pool.rotation,
        echelon_domain::spec::RotationStrategy::WeightedRandom
    );
    let weights: Vec<(String, u32)> = pool
        .instances
        .iter()
        .map(|i| (i.id.to_string(), i.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("openai/o1#0".to_owned(), 1),
            ("openai/o1-preview#0".to_owned(), 2)
        ]
    );

    let config = load_tree("rpm_weights", &import_fixture("docs/rpm_weights.yaml"));
    let pool = &config.topology.pools["gpt-3-5-turbo"];
    let weights: Vec<u32> = pool.instances.iter().map(|i| i.weight).collect();
    assert_eq!(weights, [90, 1], "rpm 900 and 10");
}

#[test]
fn order_becomes_echelons_in_ascending_order() {
    let config = load_tree("order", &import_fixture("docs/order.yaml"));
    assert_eq!(
        stages(&config, "gpt-4"),
        [
            ["azure-gpt-4-primary/gpt-4-primary#0"],
            ["azure-gpt-4-fallback/gpt-4-fallback#0"]
        ]
    );
    // num_retries 2 (the default): three attempts, the first on order 1, the retries on order 2
    // once order 1 has failed, as LiteLLM's retries land there when order 1 cools down.
    assert_eq!(
        attempts_when_everything_fails(&config, "gpt-4", ErrorClass::Server),
        [
            "azure-gpt-4-primary/gpt-4-primary#0",
            "azure-gpt-4-fallback/gpt-4-fallback#0",
            "azure-gpt-4-fallback/gpt-4-fallback#0"
        ]
    );
}

#[test]
fn retries_timeouts_cooldowns_and_fallbacks_follow_litellm() {
    let import = import_fixture("docs/fallbacks_retries_cooldowns.yaml");
    let config = load_tree("fallbacks_retries_cooldowns", &import);
    // Three TGI servers, then the fallback model group.
    assert_eq!(
        stages(&config, "zephyr-beta"),
        [
            vec![
                "huggingface/HuggingFaceH4/zephyr-7b-beta#0",
                "huggingface-2/HuggingFaceH4/zephyr-7b-beta#0",
                "huggingface-3/HuggingFaceH4/zephyr-7b-beta#0"
            ],
            vec!["openai/gpt-3.5-turbo#0"],
        ]
    );
    let group = &config.topology.task_groups["zephyr-beta"];
    // num_retries: 3 → 4 attempts per model group, for the group and its fallback.
    assert_eq!(group.fallback.max_attempts, 8);
    assert_eq!(
        group.echelons[0].timeout,
        std::time::Duration::from_secs(10)
    );
    let pool = &config.topology.pools["zephyr-beta"];
    assert_eq!(pool.fallback.max_instance_attempts, 4);
    // allowed_fails: 3 → opens on the 4th failure; cooldown_time: 30.
    assert_eq!(pool.breaker.failure_threshold, 4);
    assert_eq!(
        pool.breaker.recovery_time,
        std::time::Duration::from_secs(30)
    );
    // A single deployment retries itself num_retries times.
    let single = &config.topology.task_groups["gpt-3-5-turbo"];
    assert_eq!(single.echelons[0].max_retries, 3);
    assert_eq!(group.echelons[0].max_retries, 0);
    // Every upstream failing with a 500: four attempts on zephyr-beta, each on a server not yet
    // tried (three, so the fourth finds none left), then four on the fallback group.
    let called = attempts_when_everything_fails(&config, "zephyr-beta", ErrorClass::Server);
    assert_eq!(called.len(), 7, "{called:?}");
    let (zephyr, fallback) = called.split_at(3);
    assert!(
        zephyr.iter().all(|i| i.contains("zephyr-7b-beta")),
        "{called:?}"
    );
    assert_eq!(fallback, ["openai/gpt-3.5-turbo#0"; 4], "{called:?}");
}

#[test]
fn nested_fallbacks_come_depth_first_without_cycles() {
    let yaml = "\
model_list:
  - {model_name: a, litellm_params: {model: openai/a}}
  - {model_name: b, litellm_params: {model: openai/b}}
  - {model_name: c, litellm_params: {model: openai/c}}
  - {model_name: d, litellm_params: {model: openai/d}}
router_settings:
  fallbacks: [{a: [b, c]}, {b: [d, a]}]
";
    let import = import::litellm(yaml, "nested.yaml").unwrap();
    let config = load_tree("nested", &import);
    // LiteLLM: a fails → b (its own fallbacks: d, then a, already on the way) → c.
    let order: Vec<String> = stages(&config, "a").into_iter().flatten().collect();
    assert_eq!(
        order,
        ["openai/a#0", "openai/b#0", "openai/d#0", "openai/c#0"]
    );
}

#[test]
fn context_window_fallbacks_reach_larger_windows_and_content_policy_ones_move_refusals_on() {
    let import = import_fixture("docs/context_window_fallbacks.yaml");
    let config = load_tree("context_window_fallbacks", &import);
    assert_eq!(
        stages(&config, "gpt-3.5-turbo-small"),
        [
            ["azure-chatgpt-v-2/chatgpt-v-2#0"],
            ["openai/gpt-3.5-turbo-1106#0"],
            ["anthropic/claude-3-opus-20240229#0"]
        ]
    );
    let windows: Vec<Option<u32>> = config
        .topology
        .models
        .values()
        .map(|m| m.context_window)
        .collect();
    assert!(windows.iter().all(Option::is_some), "{windows:?}");

    let import = import_fixture("docs/content_policy_and_default_fallbacks.yaml");
    let config = load_tree("content_policy", &import);
    // default_fallbacks apply to every group without its own.
    assert_eq!(
        stages(&config, "gpt-3.5-turbo-small"),
        [
            ["azure-chatgpt-v-2/chatgpt-v-2#0"],
            ["anthropic/claude-3-opus-20240229#0"]
        ]
    );
    let policy = import
        .report
        .findings
        .iter()
        .find(|f| f.key == "litellm_settings.content_policy_fallbacks")
        .unwrap();
    assert_eq!(policy.kind, FindingKind::Warning, "{policy:?}");
    assert_eq!(policy.line, Some(17));
    let group_named = |part: &str| {
        config
            .topology
            .task_groups
            .iter()
            .find(|(name, _)| name.to_string().contains(part))
            .map(|(_, g)| g)
            .unwrap_or_else(|| panic!("a group for {part}"))
    };
    let group = group_named("turbo-small");
    assert!(
        group.fallback.content_filter_fallback,
        "a refusal moves on to claude-opus"
    );
    let unrelated = group_named("claude-opus");
    assert!(!unrelated.fallback.content_filter_fallback);
}

#[test]
fn master_key_redis_and_aliases_map_to_the_gateway_and_wrappers() {
    let import = import_fixture("docs/load_balancing.yaml");
    let config = load_tree("load_balancing", &import);
    assert!(
        config.gateway.auth.admin_key.is_none(),
        "no master key: open, as LiteLLM was"
    );
    assert!(
        config.topology.wrappers.contains_key("gpt-4"),
        "model_group_alias"
    );
    assert_eq!(stages(&config, "gpt-4"), stages(&config, "gpt-3.5-turbo"));
    let gateway = &import.files[0].text;
    assert!(
        gateway.contains("# redis_url = \"redis://:${REDIS_PASSWORD}@redis.internal:1992\""),
        "{gateway}"
    );

    let import = import_fixture("docs/usage_based_routing.yaml");
    let config = load_tree("usage_based_routing", &import);
    assert_eq!(config.gateway.auth.api_keys.len(), 1);
    assert!(config.gateway.auth.admin_key.is_some());
    let report = import.report.render("usage.yaml", "out", 0);
    assert!(!report.contains("sk-1234"), "{report}");
    let master = import
        .report
        .findings
        .iter()
        .find(|f| f.key == "general_settings.master_key")
        .unwrap();
    assert_eq!(master.kind, FindingKind::Warning);
}

#[test]
fn unmapped_keys_are_reported_with_their_line() {
    let import = import_fixture("package/otel_test_config.yaml");
    let find = |key: &str| {
        import
            .report
            .findings
            .iter()
            .find(|f| f.key == key)
            .unwrap_or_else(|| panic!("no finding for {key}: {:#?}", import.report.findings))
    };
    let guardrails = find("guardrails");
    assert_eq!(
        (guardrails.kind, guardrails.line),
        (FindingKind::NotMapped, Some(54))
    );
    let cache = find("litellm_settings.cache");
    assert_eq!((cache.kind, cache.line), (FindingKind::NotMapped, Some(47)));
    let tags = find("model_list[0].litellm_params.tags");
    assert_eq!((tags.kind, tags.line), (FindingKind::NotMapped, Some(7)));
    let bedrock = find("model_list[6]");
    assert_eq!(bedrock.kind, FindingKind::NotMapped);
    assert!(bedrock.text.contains("wildcard"), "{}", bedrock.text);
}

#[test]
fn what_is_not_a_litellm_config_is_refused() {
    let cases = [
        ("model_list: [\n", "not valid YAML"),
        ("", "the file is empty"),
        ("- a\n- b\n", "expected a mapping"),
        ("server:\n  port: 80\n", "none of LiteLLM's sections"),
        ("model_list: gpt-4\n", "not a list of deployments"),
    ];
    for (text, expected) in cases {
        let error: ImportError = import::litellm(text, "x.yaml").unwrap_err();
        assert!(error.to_string().contains(expected), "{text:?}: {error}");
    }
    let error = import::litellm(
        "model_list:\n  - model_name: a\n    litellm_params: {model: [\n",
        "x.yaml",
    )
    .unwrap_err();
    assert!(
        matches!(error, ImportError::Syntax { line: 3.., .. }),
        "{error:?}"
    );
}

#[test]
fn secrets_written_in_the_yaml_are_kept_in_the_tree_and_never_reported() {
    let yaml = "\
model_list:
  - model_name: chat
    litellm_params:
      model: openai/gpt-4o
      api_key: sk-canary-key
      api_base: not-a-url
  - model_name: chat
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_key: sk-ant-canary
router_settings:
  redis_host: redis.internal
  redis_password: canary-password
general_settings:
  master_key: sk-canary-master
  database_url: postgresql://user:canary-db@localhost/litellm
";
    let import = import::litellm(yaml, "secrets.yaml").unwrap();
    let report = import
        .report
        .render("secrets.yaml", "out", import.files.len());
    for secret in [
        "sk-canary-key",
        "sk-ant-canary",
        "canary-password",
        "sk-canary-master",
        "canary-db",
    ] {
        assert!(
            !report.contains(secret),
            "{secret} in the report:\n{report}"
        );
    }
    let tree: String = import.files.iter().map(|f| f.text.as_str()).collect();
    for kept in ["sk-ant-canary", "sk-canary-master"] {
        assert!(tree.contains(kept), "{kept} is kept in the tree");
    }
    for dropped in ["sk-canary-key", "canary-password", "canary-db"] {
        assert!(!tree.contains(dropped), "{dropped} is not copied");
    }
    assert!(
        report.contains("its api_base is not an http:// or https:// URL"),
        "{report}"
    );
    assert!(!report.contains("not-a-url"), "{report}");
    let config = load_tree("secrets", &import);
    assert_eq!(stages(&config, "chat"), [["anthropic/claude-sonnet-4-5#0"]]);
}
