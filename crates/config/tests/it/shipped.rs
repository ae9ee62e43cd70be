//! The shipped default tree and every example tree load without errors or warnings.

use echelon_config::{ValidationMode, load, render_resolved};
use echelon_domain::name::{GroupName, PoolName, WrapperName};

use crate::support::{env, shipped_dir};

#[test]
fn default_tree_loads_offline_with_no_environment() {
    let config = load(&shipped_dir(), &env(&[])).unwrap_or_else(|report| panic!("{report}"));
    assert!(config.warnings.is_empty(), "{:#?}", config.warnings);
    assert_eq!(config.validation, ValidationMode::Strict);
    let topology = &config.topology;
    assert_eq!(topology.providers.len(), 2);
    let fast = &topology.pools[&PoolName::new("fast")];
    // Two models × three keys.
    assert_eq!(fast.instances.len(), 6);
    let chat = &topology.task_groups[&GroupName::new("chat")];
    assert_eq!(chat.echelons.len(), 3);
    // Inherited from strategies/resilient.toml.
    assert_eq!(chat.fallback.max_attempts, 6);
    for wrapper in ["chat", "fast", "reasoning", "deep"] {
        assert!(
            topology.wrappers.contains_key(&WrapperName::new(wrapper)),
            "{wrapper}"
        );
    }
    assert_eq!(config.gateway.alerts.rules.len(), 3);
}

#[test]
fn resolved_rendering_redacts_every_key() {
    let config = load(&shipped_dir(), &env(&[])).unwrap_or_else(|report| panic!("{report}"));
    let shown = render_resolved(&config);
    assert!(!shown.contains("mock-fast-key-0"), "{shown}");
    assert!(shown.contains("[redacted]"));
    assert!(shown.contains("\"request_timeout\": \"5m\""), "{shown}");
}

fn example(name: &str) -> std::path::PathBuf {
    shipped_dir().join("examples").join(name)
}

#[test]
fn openai_keys_pool_example_loads_with_its_variables() {
    let vars = env(&[
        ("OPENAI_API_KEY_1", "sk-one"),
        ("OPENAI_API_KEY_2", "sk-two"),
        ("OPENAI_API_KEY_3", "sk-three"),
        ("ECHELON_CLIENT_KEY", "client"),
    ]);
    let config = load(&example("openai-keys-pool"), &vars).unwrap_or_else(|r| panic!("{r}"));
    assert!(config.warnings.is_empty(), "{:#?}", config.warnings);
    let pool = &config.topology.pools[&PoolName::new("openai")];
    let ids: Vec<String> = pool.instances.iter().map(|i| i.id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "openai/gpt-4o-mini#0",
            "openai/gpt-4o-mini#1",
            "openai/gpt-4o-mini#2",
            "openai/gpt-4o#2"
        ]
    );
    assert_eq!(config.gateway.auth.api_keys.len(), 1);
}

#[test]
fn replicas_example_shares_state_in_redis() {
    let vars = env(&[
        ("OPENAI_API_KEY_1", "sk-one"),
        ("OPENAI_API_KEY_2", "sk-two"),
        ("ECHELON_CLIENT_KEY", "client"),
        ("ECHELON_ADMIN_KEY", "admin"),
        ("REDIS_PASSWORD", "redis-canary"),
    ]);
    let config = load(&example("replicas"), &vars).unwrap_or_else(|r| panic!("{r}"));
    assert!(config.warnings.is_empty(), "{:#?}", config.warnings);
    let echelon_config::StateBackend::Redis(redis) = &config.gateway.state else {
        panic!("the example shares state in Redis");
    };
    assert_eq!(redis.url.expose(), "redis://:redis-canary@redis:6379/0");
    assert_eq!(redis.replicas, 2);
    assert_eq!(redis.key_prefix, "echelon-prod");
}

#[test]
fn openai_keys_pool_example_names_every_missing_variable() {
    let report = load(&example("openai-keys-pool"), &env(&[])).unwrap_err();
    let variables: Vec<_> = report
        .errors
        .iter()
        .filter_map(|d| d.variable.as_deref())
        .collect();
    assert_eq!(
        variables,
        [
            "ECHELON_CLIENT_KEY",
            "OPENAI_API_KEY_1",
            "OPENAI_API_KEY_2",
            "OPENAI_API_KEY_3"
        ]
    );
}

#[test]
fn three_echelon_example_loads_with_its_variables() {
    let vars = env(&[
        ("ANTHROPIC_API_KEY", "sk-ant"),
        ("OPENAI_API_KEY", "sk-oai"),
        ("GEMINI_API_KEY", "gm"),
    ]);
    let config = load(&example("three-echelon"), &vars).unwrap_or_else(|r| panic!("{r}"));
    assert!(config.warnings.is_empty(), "{:#?}", config.warnings);
    let group = &config.topology.task_groups[&GroupName::new("assistant")];
    let providers: Vec<String> = group
        .echelons
        .iter()
        .map(|e| format!("{:?}", e.targets))
        .collect();
    assert_eq!(
        providers,
        [
            "[Model(\"anthropic/claude-sonnet\")]",
            "[Model(\"openai/gpt-4o\")]",
            "[Model(\"gemini/gemini-pro\")]"
        ]
    );
    assert!(
        group.breaker.failure_rate.is_some(),
        "inherited from strategy:failover"
    );
    assert_eq!(config.topology.providers.len(), 3);
}

#[test]
fn self_hosted_example_loads_with_no_variables() {
    let config = load(&example("self-hosted"), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    assert!(config.warnings.is_empty(), "{:#?}", config.warnings);
    assert_eq!(config.validation, ValidationMode::Lenient);
    let pool = &config.topology.pools[&PoolName::new("llama-70b")];
    assert_eq!(
        pool.rotation,
        echelon_domain::spec::RotationStrategy::LeastConnections
    );
    assert_eq!(pool.instances.len(), 3);
    let b = &config.topology.providers[&echelon_domain::name::ProviderName::new("vllm-b")];
    assert_eq!(b.base_url, "http://10.0.0.12:8000/v1");
    assert!(b.api_keys.is_empty());
}
