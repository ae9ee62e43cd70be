//! Loading behaviour: instances per key, defaults, inheritance, variables, registry tables,
//! environment overrides, validation modes and secrets that never reach a report.

use core::time::Duration;
use std::net::SocketAddr;

use echelon_config::{
    DiagnosticKind, LoadOptions, LogFormat, StateBackend, ValidationMode, load, load_with,
};
use echelon_domain::name::{GroupName, InstanceId, ModelRef, PoolName, WrapperName};
use echelon_domain::spec::{
    EchelonTarget, FailureRate, FallbackStrategy, RotationStrategy, WrapperTarget,
};

use crate::support::{base_with, env};

fn ids(instances: &[echelon_domain::spec::InstanceSpec]) -> Vec<String> {
    instances.iter().map(|i| i.id.to_string()).collect()
}

#[test]
fn every_key_is_an_instance_unless_one_is_pinned_and_limits_tighten() {
    let dir = base_with(&[
        (
            "llms/providers/mock.toml",
            "kind = \"mock\"\napi_keys = [\"k0\", \"k1\", \"k2\"]\n[models.small]\nrpm_limit = 100\ntpm_limit = 5000\n[models.large]\nupstream = \"large-v2\"\ncontext_window = 32000\n",
        ),
        (
            "llms/pools/main.toml",
            "rotation = \"weighted_round_robin\"\n[[instances]]\nmodel = \"mock/small\"\nweight = 3\nrpm_limit = 40\n[[instances]]\nmodel = \"mock/large\"\nkey = 2\nmax_concurrency = 4\n",
        ),
    ]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    let pool = &config.topology.pools[&PoolName::new("main")];
    assert_eq!(pool.rotation, RotationStrategy::WeightedRoundRobin);
    assert_eq!(
        ids(&pool.instances),
        [
            "mock/small#0",
            "mock/small#1",
            "mock/small#2",
            "mock/large#2"
        ]
    );
    let small = &pool.instances[1];
    assert_eq!(small.weight, 3);
    assert_eq!(
        small.limits.rpm,
        Some(40),
        "the pool entry tightens the model's 100"
    );
    assert_eq!(
        small.limits.tpm,
        Some(5000),
        "the model's limit stays when the entry has none"
    );
    let large = &pool.instances[3];
    assert_eq!(large.upstream_name, "large-v2");
    assert_eq!(large.context_window, Some(32000));
    assert_eq!(large.limits.max_concurrency, Some(4));
    assert_eq!(large.weight, 1);
}

#[test]
fn a_pool_takes_the_models_of_task_group_echelons() {
    let dir = base_with(&[
        (
            "llms/pools/main.toml",
            "task_groups = [\"chat.echelon2\"]\n[[instances]]\nmodel = \"mock/small\"\nkey = 0\n",
        ),
        (
            "llms/task-groups/chat.toml",
            "[echelons.echelon1]\nmodels = [\"mock/small\"]\n[echelons.echelon2]\nmodels = [\"mock/large\", \"mock/small\"]\n",
        ),
    ]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    let pool = &config.topology.pools[&PoolName::new("main")];
    assert_eq!(
        ids(&pool.instances),
        [
            "mock/small#0",
            "mock/large#0",
            "mock/large#1",
            "mock/small#1"
        ]
    );
}

#[test]
fn optional_settings_take_their_documented_defaults() {
    let dir = base_with(&[]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    let group = &config.topology.task_groups[&GroupName::new("chat")];
    assert_eq!(group.fallback_strategy, FallbackStrategy::EchelonDown);
    assert_eq!(group.fallback.max_attempts, 5);
    assert_eq!(group.fallback.retry_delay, Duration::from_millis(250));
    assert_eq!(group.fallback.deadline, Duration::from_secs(180));
    assert_eq!(group.breaker.failure_threshold, 10);
    assert_eq!(group.breaker.failure_rate, Some(FailureRate::default()));
    let echelon = &group.echelons[0];
    assert_eq!(echelon.breaker, None);
    assert_eq!(echelon.priority, 1);
    assert_eq!(echelon.timeout, Duration::from_secs(60));
    assert_eq!(echelon.first_token_timeout, Duration::from_secs(30));
    assert_eq!(echelon.idle_timeout, Duration::from_secs(30));
    assert_eq!(echelon.max_retries, 1);
    assert_eq!(echelon.retry_after_max_wait, Duration::from_secs(5));
    assert_eq!(
        echelon.targets,
        [EchelonTarget::Pool(PoolName::new("main"))]
    );
    let provider = config.topology.providers.values().next().unwrap();
    assert_eq!(provider.base_url, "mock://mock");
    assert_eq!(provider.connect_timeout, Duration::from_secs(10));
    let pool = &config.topology.pools[&PoolName::new("main")];
    assert_eq!(pool.fallback.max_instance_attempts, 3);
    assert_eq!(pool.health.failure_threshold, 10);
    assert_eq!(pool.max_ejection_percent, 50);
    assert!(pool.health_check.enabled);
    // No gateway.toml: the gateway defaults.
    assert_eq!(
        config.gateway.server.listen,
        SocketAddr::from(([127, 0, 0, 1], 8080))
    );
    assert_eq!(config.gateway.server.max_body_size, 4 * 1024 * 1024);
    assert_eq!(config.registry.debounce, Duration::from_millis(500));
    assert!(config.registry.hot_reload);
    // No [route_defaults]: routes without an echelon get the documented defaults.
    let route = config.topology.route_defaults;
    assert_eq!(route.max_attempts, 3);
    assert_eq!(route.deadline, Duration::from_secs(120));
    assert_eq!(route.first_token_timeout, Duration::from_secs(20));
    assert_eq!(route.retry_delay, Duration::from_millis(200));
}

#[test]
fn route_defaults_of_the_registry_reach_the_topology() {
    let dir = base_with(&[(
        "llms/_registry.toml",
        "[route_defaults]\nmax_attempts = 2\ndeadline = \"45s\"\nfirst_token_timeout = \"5s\"\nmax_retries = 0\n",
    )]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    let route = config.topology.route_defaults;
    assert_eq!(route.max_attempts, 2);
    assert_eq!(route.deadline, Duration::from_secs(45));
    assert_eq!(route.first_token_timeout, Duration::from_secs(5));
    assert_eq!(route.max_retries, 0);
    assert_eq!(
        route.idle_timeout,
        Duration::from_secs(30),
        "a key left out keeps its default"
    );
}

#[test]
fn echelons_are_sorted_by_priority_not_by_name_or_file_order() {
    let dir = base_with(&[(
        "llms/task-groups/chat.toml",
        "[echelons.last]\npriority = 30\nmodels = [\"mock/large\"]\n[echelons.first]\npriority = 10\nmodels = [\"pool:main\"]\n[echelons.echelon20]\nmodels = [\"mock/small\"]\n",
    )]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    let group = &config.topology.task_groups[&GroupName::new("chat")];
    let names: Vec<_> = group.echelons.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["first", "echelon20", "last"]);
}

#[test]
fn inheritance_merges_tables_deeply_child_wins_and_arrays_replace() {
    let dir = base_with(&[
        (
            "llms/strategies/careful.toml",
            "fallback_strategy = \"model_rotate\"\n[circuit_breaker]\nfailure_threshold = 2\nrecovery_time = \"10s\"\n[fallback]\nmax_attempts = 9\ndeadline = \"30s\"\n",
        ),
        (
            "llms/task-groups/_base.toml",
            "[fallback]\nmax_attempts = 3\n[echelons.echelon1]\nmodels = [\"mock/small\", \"mock/large\"]\ntimeout = \"7s\"\n",
        ),
        (
            "llms/task-groups/chat.toml",
            "inherits_from = [\"strategy:careful\", \"_base.toml\"]\n[circuit_breaker]\nrecovery_time = \"20s\"\n[echelons.echelon1]\nmodels = [\"pool:main\"]\n",
        ),
    ]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    let group = &config.topology.task_groups[&GroupName::new("chat")];
    assert_eq!(group.fallback_strategy, FallbackStrategy::ModelRotate);
    assert_eq!(group.breaker.failure_threshold, 2, "from the strategy");
    assert_eq!(
        group.breaker.recovery_time,
        Duration::from_secs(20),
        "the child wins"
    );
    assert_eq!(
        group.fallback.max_attempts, 3,
        "a later parent wins over an earlier one"
    );
    assert_eq!(group.fallback.deadline, Duration::from_secs(30));
    let echelon = &group.echelons[0];
    assert_eq!(
        echelon.targets,
        [EchelonTarget::Pool(PoolName::new("main"))],
        "arrays replace"
    );
    assert_eq!(echelon.timeout, Duration::from_secs(7));
    // `_base.toml` is a fragment, not a group of its own.
    assert_eq!(config.topology.task_groups.len(), 1);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn variables_fill_strings_numbers_booleans_and_lists() {
    let dir = base_with(&[
        (
            "llms/providers/mock.toml",
            "kind = \"mock\"\napi_keys = \"${MOCK_KEYS}\"\nbase_url = \"${MOCK_URL:mock://local}\"\n[models.small]\ncontext_window = \"${WINDOW}\"\n[models.large]\n",
        ),
        (
            "llms/pools/main.toml",
            "[health_check]\nenabled = \"${PROBES:false}\"\n[[instances]]\nmodel = \"mock/small\"\nweight = \"${WEIGHT}\"\n",
        ),
    ]);
    let vars = env(&[("MOCK_KEYS", "a, b,c"), ("WINDOW", "4096"), ("WEIGHT", "7")]);
    let config = load(dir.path(), &vars).unwrap_or_else(|r| panic!("{r}"));
    let provider = config.topology.providers.values().next().unwrap();
    assert_eq!(provider.api_keys.len(), 3);
    assert_eq!(provider.api_keys[1].expose(), "b");
    assert_eq!(provider.base_url, "mock://local");
    let model = config
        .topology
        .model(&ModelRef::new("mock", "small"))
        .unwrap();
    assert_eq!(model.context_window, Some(4096));
    let pool = &config.topology.pools[&PoolName::new("main")];
    assert!(!pool.health_check.enabled);
    assert_eq!(pool.instances[2].weight, 7);
    assert_eq!(
        pool.instances[2].id,
        InstanceId::new(ModelRef::new("mock", "small"), 2)
    );
}

#[test]
fn gateway_settings_take_environment_overrides() {
    let dir = base_with(&[(
        "gateway.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\nmax_body_size = \"1MiB\"\n[auth]\nadmin_key = \"${ADMIN}\"\n[telemetry]\nlog_level = \"debug\"\n",
    )]);
    let vars = env(&[
        ("ADMIN", "admin-secret"),
        ("ECHELON_SERVER__LISTEN", "0.0.0.0:9000"),
        ("ECHELON_SERVER__REQUEST_TIMEOUT", "45s"),
        ("ECHELON_AUTH__API_KEYS", "client-a,client-b"),
        ("ECHELON_TELEMETRY__LOG_FORMAT", "json"),
        ("ECHELON_STATE__BACKEND", "redis"),
        ("ECHELON_STATE__REDIS_URL", "redis://:pw@127.0.0.1:6379/0"),
        ("ECHELON_CONFIG_DIR", "/not/an/override"),
    ]);
    let config = load(dir.path(), &vars).unwrap_or_else(|r| panic!("{r}"));
    let gateway = &config.gateway;
    assert_eq!(
        gateway.server.listen,
        SocketAddr::from(([0, 0, 0, 0], 9000))
    );
    assert_eq!(gateway.server.max_body_size, 1 << 20);
    assert_eq!(gateway.server.request_timeout, Duration::from_secs(45));
    let keys: Vec<_> = gateway.auth.api_keys.iter().map(|k| k.expose()).collect();
    assert_eq!(keys, ["client-a", "client-b"]);
    assert_eq!(
        gateway.auth.admin_key.as_ref().unwrap().expose(),
        "admin-secret"
    );
    assert_eq!(gateway.telemetry.log_format, LogFormat::Json);
    assert_eq!(gateway.telemetry.log_level, "debug");
    assert!(
        matches!(&gateway.state, StateBackend::Redis(redis) if redis.url.expose().starts_with("redis://"))
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn registry_tables_choose_files_names_and_enabled_flags() {
    let dir = base_with(&[
        (
            "llms/_registry.toml",
            "[registry]\nversion = 1\n[pools]\nprimary = { file = \"pools/main.toml\" }\nspare = { file = \"pools/spare.toml\", enabled = false }\n[wrappers]\nall = { file = \"wrappers/default.toml\" }\n",
        ),
        ("llms/pools/spare.toml", "this is not even toml"),
        (
            "llms/task-groups/chat.toml",
            "[echelons.echelon1]\nmodels = [\"pool:primary\"]\n",
        ),
        (
            "llms/wrappers/default.toml",
            "[wrappers.chat]\ntype = \"task_group\"\ntarget = \"chat\"\n[wrappers.off]\ntype = \"pool\"\ntarget = \"spare\"\nenabled = false\n",
        ),
    ]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    let pools: Vec<_> = config.topology.pools.keys().map(|p| p.as_str()).collect();
    assert_eq!(pools, ["primary"]);
    let wrappers: Vec<_> = config
        .topology
        .wrappers
        .keys()
        .map(|w| w.as_str())
        .collect();
    assert_eq!(wrappers, ["chat"]);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn wrappers_resolve_to_groups_pools_and_models() {
    let dir = base_with(&[(
        "llms/wrappers/default.toml",
        "[wrappers.\"gpt-4.1\"]\ntype = \"direct\"\ntarget = \"mock/large\"\ndescription = \"one model\"\n[wrappers.chat]\ntype = \"task_group\"\ntarget = \"group:chat\"\n[wrappers.main]\ntype = \"pool\"\ntarget = \"pool:main\"\n",
    )]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    let w = &config.topology.wrappers;
    assert_eq!(
        w[&WrapperName::new("gpt-4.1")].target,
        WrapperTarget::Direct(ModelRef::new("mock", "large"))
    );
    assert_eq!(
        w[&WrapperName::new("gpt-4.1")].description.as_deref(),
        Some("one model")
    );
    assert_eq!(
        w[&WrapperName::new("chat")].target,
        WrapperTarget::TaskGroup(GroupName::new("chat"))
    );
    assert_eq!(
        w[&WrapperName::new("main")].target,
        WrapperTarget::Pool(PoolName::new("main"))
    );
}

#[test]
fn the_validation_mode_can_be_overridden_by_the_caller() {
    let dir = base_with(&[
        (
            "llms/_registry.toml",
            "[registry]\nversion = 1\n[global]\nvalidation = \"lenient\"\n",
        ),
        (
            "llms/pools/broken.toml",
            "rotation = \"nope\"\n[[instances]]\nmodel = \"mock/small\"\n",
        ),
    ]);
    let lenient = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(lenient.validation, ValidationMode::Lenient);
    assert!(
        lenient
            .warnings
            .iter()
            .any(|w| w.kind == DiagnosticKind::Dropped)
    );
    let strict = load_with(
        dir.path(),
        &env(&[]),
        &LoadOptions {
            validation: Some(ValidationMode::Strict),
        },
    )
    .unwrap_err();
    assert_eq!(strict.errors.len(), 1);
    assert_eq!(strict.errors[0].kind, DiagnosticKind::InvalidValue);
}

#[test]
fn lenient_mode_still_refuses_a_broken_gateway_file() {
    let dir = base_with(&[
        (
            "llms/_registry.toml",
            "[registry]\nversion = 1\n[global]\nvalidation = \"lenient\"\n",
        ),
        ("gateway.toml", "[server]\nlisten = \"nowhere\"\n"),
    ]);
    let report = load(dir.path(), &env(&[])).unwrap_err();
    assert_eq!(report.errors[0].key, "server.listen");
}

#[test]
fn a_missing_directory_is_one_clear_error() {
    let report = load(std::path::Path::new("/definitely/not/here"), &env(&[])).unwrap_err();
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].kind, DiagnosticKind::Io);
}

#[test]
fn secrets_never_reach_a_report_or_a_debug_print() {
    let canary = "sk-live-CANARY-4242";
    let dir = base_with(&[
        (
            "llms/providers/mock.toml",
            "kind = \"mock\"\napi_keys = [\"${KEY}\", \"${KEY}\"]\nconnect_timeout = \"${KEY}\"\nbase_url = \"${KEY}\"\n[headers]\n\"bad header\" = \"${KEY}\"\n[models.small]\nupstream = 5\n[models.large]\nrpm_limit = \"${KEY}\"\n",
        ),
        (
            "llms/pools/main.toml",
            "rotation = \"${KEY}\"\n[[instances]]\nmodel = \"${KEY}\"\n",
        ),
        ("gateway.toml", "[auth]\napi_keys = [\"${KEY}\", 5]\n"),
    ]);
    let vars = env(&[
        ("KEY", canary),
        ("ECHELON_SERVER__LISTEN", canary),
        ("ECHELON_AUTH__ADMIN_KEY", canary),
        ("ECHELON_TELEMETRY__LOG_FORMAT", canary),
    ]);
    let report = load(dir.path(), &vars).unwrap_err();
    assert!(report.errors.len() >= 8, "{report}");
    let shown = format!("{report}\n{report:?}");
    assert!(!shown.contains("CANARY"), "{shown}");
    assert!(
        shown.contains("${KEY}"),
        "templates are shown instead: {shown}"
    );
    assert!(shown.contains("environment variable ECHELON_SERVER__LISTEN"));
}

#[test]
fn lenient_mode_drops_a_wrappers_file_that_does_not_parse_and_keeps_the_others() {
    let dir = base_with(&[
        (
            "llms/_registry.toml",
            "[registry]\nversion = 1\n[global]\nvalidation = \"lenient\"\n",
        ),
        ("llms/wrappers/broken.toml", "[wrappers.x\n"),
    ]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(config.topology.wrappers.len(), 2);
    let kinds: Vec<_> = config.warnings.iter().map(|w| w.kind).collect();
    assert_eq!(kinds, [DiagnosticKind::Syntax, DiagnosticKind::Dropped]);
    assert!(
        config.warnings[1]
            .reason
            .contains("llms/wrappers/broken.toml")
    );
}

#[test]
fn lenient_mode_drops_every_entry_of_an_inheritance_cycle() {
    let dir = base_with(&[
        (
            "llms/_registry.toml",
            "[registry]\nversion = 1\n[global]\nvalidation = \"lenient\"\n",
        ),
        (
            "llms/pools/a.toml",
            "inherits_from = \"b.toml\"\n[[instances]]\nmodel = \"mock/small\"\n",
        ),
        (
            "llms/pools/b.toml",
            "inherits_from = \"a.toml\"\n[[instances]]\nmodel = \"mock/large\"\n",
        ),
    ]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    let pools: Vec<_> = config.topology.pools.keys().map(|p| p.as_str()).collect();
    assert_eq!(pools, ["main"]);
    let cycles = config
        .warnings
        .iter()
        .filter(|w| w.kind == DiagnosticKind::Inheritance)
        .count();
    assert_eq!(
        cycles, 1,
        "one cycle, reported once: {:#?}",
        config.warnings
    );
    let dropped = config
        .warnings
        .iter()
        .filter(|w| w.kind == DiagnosticKind::Dropped)
        .count();
    assert_eq!(dropped, 2);
}

#[test]
fn only_settings_bound_at_start_ask_for_a_restart() {
    let load_gateway = |text: &str| {
        let dir = base_with(&[("gateway.toml", text)]);
        load(dir.path(), &env(&[]))
            .unwrap_or_else(|r| panic!("{r}"))
            .gateway
    };
    let started = load_gateway("");
    let reloadable = load_gateway(
        "[server]\nrequest_timeout = \"9s\"\n[auth]\napi_keys = [\"k\"]\n[alerts]\nevaluation_interval = \"1s\"\nwebhooks = [\"http://127.0.0.1:9/hook\"]\n[[alerts.rules]]\nname = \"r\"\nkind = \"threshold\"\nmetric = \"requests\"\nop = \">\"\nvalue = 1\n",
    );
    assert_eq!(
        reloadable.alerts.evaluation_interval,
        Duration::from_secs(1)
    );
    assert!(reloadable.restart_needed(&started).is_empty());
    let bound = load_gateway(
        "[server]\nlisten = \"127.0.0.1:9999\"\nmax_body_size = \"1MiB\"\nshutdown_grace = \"1s\"\n[telemetry]\nlog_format = \"json\"\nlog_level = \"debug\"\nservice_name = \"x\"\notlp_endpoint = \"http://127.0.0.1:4318\"\n",
    );
    assert_eq!(
        bound.restart_needed(&started),
        [
            "server.listen",
            "server.max_body_size",
            "server.shutdown_grace",
            "telemetry.log_format",
            "telemetry.log_level",
            "telemetry.otlp_endpoint",
            "telemetry.service_name",
        ]
    );
}

#[test]
fn breaker_triggers_and_the_ejection_limit_are_set_per_pool_group_and_echelon() {
    let dir = base_with(&[
        (
            "llms/pools/main.toml",
            "rotation = \"round_robin\"\nmax_ejection_percent = 30\n[[instances]]\nmodel = \"mock/small\"\n[circuit_breaker]\nfailure_threshold = 7\n[circuit_breaker.failure_rate]\nenabled = false\n",
        ),
        (
            "llms/task-groups/chat.toml",
            "[circuit_breaker]\nfailure_threshold = 4\n[circuit_breaker.failure_rate]\nmin_calls = 50\n[echelons.echelon1]\nmodels = [\"pool:main\"]\n[echelons.echelon1.circuit_breaker]\nfailure_rate = { threshold = 0.8 }\n[echelons.echelon2]\nmodels = [\"mock/large\"]\n",
        ),
    ]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    let pool = &config.topology.pools[&PoolName::new("main")];
    assert_eq!(pool.max_ejection_percent, 30);
    assert_eq!(pool.breaker.failure_threshold, 7);
    assert_eq!(pool.breaker.failure_rate, None);
    let group = &config.topology.task_groups[&GroupName::new("chat")];
    let rate = group.breaker.failure_rate.unwrap();
    assert_eq!((group.breaker.failure_threshold, rate.min_calls), (4, 50));
    assert_eq!(rate.threshold, 0.5);
    // The echelon's table goes over the group's: its threshold, the group's other settings.
    let own = group.echelons[0].breaker.unwrap();
    let own_rate = own.failure_rate.unwrap();
    assert_eq!(own.failure_threshold, 4);
    assert_eq!((own_rate.threshold, own_rate.min_calls), (0.8, 50));
    assert_eq!(group.echelons[1].breaker, None);
}
