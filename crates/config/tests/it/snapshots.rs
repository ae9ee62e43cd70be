//! The exact text of configuration error reports, one snapshot per kind of broken tree. Their
//! wording is part of the product: a change here must be a deliberate one.

use echelon_config::{ConfigReport, load};

use crate::support::{base_with, env};

/// Loads BASE with `changes` and the environment `vars`, expecting a refused tree.
fn refused(changes: &[(&str, &str)], vars: &[(&str, &str)]) -> String {
    let dir = base_with(changes);
    match load(dir.path(), &env(vars)) {
        Ok(config) => panic!("expected a refused tree, got {:#?}", config.warnings),
        Err(report) => checked(&report),
    }
}

/// The report's text, after checking it never names the temporary folder.
fn checked(report: &ConfigReport) -> String {
    let text = report.to_string();
    assert!(!text.contains("/tmp"), "absolute path in report:\n{text}");
    text
}

#[test]
fn syntax_error() {
    insta::assert_snapshot!(refused(
        &[(
            "llms/pools/main.toml",
            "rotation = \n[[instances]]\nmodel = \"mock/small\"\n"
        )],
        &[]
    ));
}

#[test]
fn unknown_keys_with_suggestions() {
    insta::assert_snapshot!(refused(
        &[(
            "llms/pools/main.toml",
            "rotaton = \"round_robin\"\n[[instances]]\nmodel = \"mock/small\"\nwieght = 2\n[health_check]\nintervall = \"10s\"\nbogus = 1\n",
        )],
        &[]
    ));
}

#[test]
fn unknown_strategy_name() {
    insta::assert_snapshot!(refused(
        &[(
            "llms/pools/main.toml",
            "rotation = \"round_robbin\"\n[[instances]]\nmodel = \"mock/small\"\n[rate_limit]\nalgorithm = \"leaky_bucket\"\n",
        )],
        &[]
    ));
}

#[test]
fn wrong_types() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/pools/main.toml",
                "rotation = 3\n[[instances]]\nmodel = \"mock/small\"\nweight = \"3\"\n",
            ),
            (
                "llms/task-groups/chat.toml",
                "[echelons.echelon1]\nmodels = \"pool:main\"\n[echelons.echelon2]\nmodels = [\"mock/large\"]\nmax_retries = true\n",
            ),
        ],
        &[]
    ));
}

#[test]
fn bad_durations_and_sizes() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/task-groups/chat.toml",
                "[echelons.echelon1]\nmodels = [\"pool:main\"]\ntimeout = \"30 seconds\"\nidle_timeout = 30\nfirst_token_timeout = \"10\"\n",
            ),
            ("gateway.toml", "[server]\nmax_body_size = \"4 megs\"\n"),
        ],
        &[]
    ));
}

#[test]
fn unset_variables() {
    insta::assert_snapshot!(refused(
        &[(
            "llms/providers/mock.toml",
            "kind = \"mock\"\napi_keys = [\"${MOCK_KEY_A}\", \"${MOCK_KEY_B:fallback}\", \"${MOCK_KEY_C}\"]\nbase_url = \"${MOCK_URL\"\n[models.small]\n[models.large]\n",
        )],
        &[("MOCK_KEY_A", "sk-live-canary")]
    ));
}

#[test]
fn dangling_references() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/pools/main.toml",
                "[[instances]]\nmodel = \"mock/smal\"\n[[instances]]\nmodel = \"openai/gpt-4o\"\n[fallback]\nstrategy = \"pool_fallback\"\nfallback_pools = [\"backup\"]\n",
            ),
            (
                "llms/task-groups/chat.toml",
                "fallback_strategy = \"group_fallback\"\n[fallback]\nfallback_groups = [\"chat2\", \"chat.echelon9\"]\n[echelons.echelon1]\nmodels = [\"pool:mian\", \"mock/large\"]\n",
            ),
            (
                "llms/wrappers/default.toml",
                "[wrappers.chat]\ntype = \"task_group\"\ntarget = \"chatt\"\n[wrappers.main]\ntype = \"task_group\"\ntarget = \"main\"\n[wrappers.one]\ntype = \"direct\"\ntarget = \"mock/huge\"\n",
            ),
        ],
        &[]
    ));
}

#[test]
fn inheritance_cycle() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/pools/main.toml",
                "inherits_from = \"_a.toml\"\n[[instances]]\nmodel = \"mock/small\"\n",
            ),
            (
                "llms/pools/_a.toml",
                "inherits_from = \"../strategies/b.toml\"\n"
            ),
            (
                "llms/strategies/b.toml",
                "inherits_from = \"../pools/_a.toml\"\nrotation = \"random\"\n"
            ),
        ],
        &[]
    ));
}

#[test]
fn inheritance_too_deep_and_missing_parent() {
    let mut files: Vec<(String, String)> = (0..12)
        .map(|i| {
            (
                format!("llms/strategies/s{i}.toml"),
                format!("inherits_from = \"s{}.toml\"\n", i + 1),
            )
        })
        .collect();
    files.push((
        "llms/strategies/s12.toml".into(),
        "rotation = \"random\"\n".into(),
    ));
    files.push((
        "llms/pools/main.toml".into(),
        "inherits_from = [\"../strategies/s0.toml\", \"../strategies/nope.toml\", \"strategy:s99\"]\n[[instances]]\nmodel = \"mock/small\"\n".into(),
    ));
    let changes: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    insta::assert_snapshot!(refused(&changes, &[]));
}

#[test]
fn fallback_group_cycle() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/task-groups/chat.toml",
                "fallback_strategy = \"group_fallback\"\n[fallback]\nfallback_groups = [\"backup\"]\n[echelons.echelon1]\nmodels = [\"pool:main\"]\n",
            ),
            (
                "llms/task-groups/backup.toml",
                "fallback_strategy = \"group_fallback\"\n[fallback]\nfallback_groups = [\"last.echelon1\"]\n[echelons.echelon1]\nmodels = [\"mock/large\"]\n",
            ),
            (
                "llms/task-groups/last.toml",
                "fallback_strategy = \"group_fallback\"\n[fallback]\nfallback_groups = [\"chat\"]\n[echelons.echelon1]\nmodels = [\"mock/small\"]\n",
            ),
        ],
        &[]
    ));
}

#[test]
fn fallback_pool_cycle() {
    insta::assert_snapshot!(refused(
        &[(
            "llms/pools/main.toml",
            "[[instances]]\nmodel = \"mock/small\"\n[fallback]\nstrategy = \"pool_fallback\"\nfallback_pools = [\"main\"]\n",
        )],
        &[]
    ));
}

#[test]
fn duplicates() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/wrappers/more.toml",
                "[wrappers.chat]\ntype = \"pool\"\ntarget = \"main\"\n",
            ),
            (
                "llms/pools/main.toml",
                "[[instances]]\nmodel = \"mock/small\"\n[[instances]]\nmodel = \"mock/small\"\nkey = 1\n",
            ),
            (
                "llms/task-groups/chat.toml",
                "[echelons.first]\npriority = 1\nmodels = [\"pool:main\", \"pool:main\"]\n[echelons.echelon1]\nmodels = [\"mock/large\"]\n",
            ),
            (
                "llms/providers/mock.toml",
                "kind = \"mock\"\napi_keys = [\"${K}\", \"${K}\"]\n[models.small]\n[models.large]\n",
            ),
        ],
        &[("K", "same-key")]
    ));
}

#[test]
fn out_of_range_values() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/pools/main.toml",
                "[[instances]]\nmodel = \"mock/small\"\nweight = 0\nkey = 7\n[circuit_breaker]\nhalf_open_requests = 0\nrecovery_time = \"1m\"\nmax_recovery_time = \"10s\"\n",
            ),
            (
                "llms/providers/mock.toml",
                "kind = \"mock\"\napi_keys = [\"k0\", \"k1\"]\n[mock]\nerror_rate = 1.5\n[models.small]\nrpm_limit = -1\n[models.large]\n",
            ),
            (
                "llms/task-groups/chat.toml",
                "[fallback]\nmax_attempts = 500\n[echelons.echelon1]\nmodels = [\"pool:main\"]\ntimeout = \"0s\"\ndefaults = { temperature = 3.5 }\n",
            ),
        ],
        &[]
    ));
}

#[test]
fn missing_required_keys() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/providers/mock.toml",
                "api_keys = [\"k0\"]\n[models.small]\n[models.large]\n"
            ),
            (
                "llms/pools/main.toml",
                "rotation = \"random\"\n[[instances]]\nweight = 2\n"
            ),
            (
                "llms/task-groups/chat.toml",
                "[echelons.first]\nmodels = [\"pool:main\"]\n[echelons.echelon2]\ntimeout = \"5s\"\n",
            ),
            (
                "llms/wrappers/default.toml",
                "[wrappers.chat]\ndescription = \"no type, no target\"\n"
            ),
        ],
        &[]
    ));
}

#[test]
fn conflicting_settings() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/providers/mock.toml",
                "kind = \"mock\"\napi_key = \"k\"\napi_keys = [\"k0\", \"k1\"]\n[models.small]\n[models.large]\n",
            ),
            (
                "llms/providers/real.toml",
                "kind = \"openai\"\nbase_url = \"api.example.com\"\napi_key = \"\"\n[mock]\nlatency = \"1s\"\n[models.m]\n",
            ),
        ],
        &[]
    ));
}

#[test]
fn gateway_settings() {
    insta::assert_snapshot!(refused(
        &[(
            "gateway.toml",
            "[server]\nlisten = \"everywhere:80\"\nrequest_timout = \"5s\"\n[telemetry]\nlog_format = \"jsno\"\nlog_level = \"info,echelon=loud\"\notlp_endpoint = \"collector:4318\"\n[state]\nbackend = \"redis\"\n[metrics]\nenabled = true\n",
        )],
        &[
            ("ECHELON_SERVER__SHUTDOWN_GRACE", "soon"),
            ("ECHELON_AUTH__ADMIN_KEY", "admin-canary"),
            ("ECHELON_SERVR__LISTEN", "0.0.0.0:1"),
        ]
    ));
}

#[test]
fn state_settings() {
    insta::assert_snapshot!(refused(
        &[(
            "gateway.toml",
            "[state]\nbackend = \"redis\"\nredis_url = \"http://:canary-pw@cache:6379\"\nkey_prefix = \"my gateway\"\ntimeout = \"0s\"\nsync_interval = \"1h\"\nfail_mode = \"clsoed\"\nreplicas = 0\nreplica = 3\n",
        )],
        &[]
    ));
}

#[test]
fn alert_rules() {
    insta::assert_snapshot!(refused(
        &[(
            "gateway.toml",
            "[[alerts.rules]]\nname = \"a\"\nkind = \"threshold\"\nmetric = \"pool_healthy_ratio\"\nop = \"=<\"\nvalue = 0.5\n\n[[alerts.rules]]\nname = \"a\"\nkind = \"trend\"\nop = \">\"\nvalue = 1\nrules = [\"x\"]\n\n[[alerts.rules]]\nname = \"both\"\nkind = \"composit\"\n\n[[alerts.rules]]\nname = \"c\"\nkind = \"composite\"\nrules = [\"a\", \"b\"]\nlevel = \"page\"\n",
        )],
        &[]
    ));
}

#[test]
fn misspelled_alert_metric() {
    // The metric set is closed: `config check` refuses what the alert engine could not read.
    insta::assert_snapshot!(refused(
        &[(
            "gateway.toml",
            "[[alerts.rules]]\nname = \"errors\"\nkind = \"threshold\"\nmetric = \"upstream_eror_rate\"\nop = \">\"\nvalue = 0.2\n\n[[alerts.rules]]\nname = \"never\"\nkind = \"trend\"\nmetric = \"requests\"\nop = \">\"\nvalue = nan\n\n[[alerts.rules]]\nname = \"latency\"\nkind = \"threshold\"\nmetric = \"latency\"\nop = \">\"\nvalue = 2\n",
        )],
        &[]
    ));
}

#[test]
fn registry_problems() {
    insta::assert_snapshot!(refused(
        &[(
            "llms/_registry.toml",
            "[registry]\nversion = 2\n[global]\nvalidaton = \"lenient\"\ndebounce = \"1ms\"\n[pools]\nmain = { file = \"pools/main.toml\" }\nextra = { file = \"pools/extra.toml\" }\nescape = { file = \"../../outside.toml\" }\n",
        )],
        &[]
    ));
}

#[test]
fn route_defaults_problems() {
    insta::assert_snapshot!(refused(
        &[(
            "llms/_registry.toml",
            "[route_defaults]\nmax_atempts = 4\ndeadline = \"0s\"\nmax_retries = 11\nfirst_token_timeout = \"soon\"\n",
        )],
        &[]
    ));
}

#[test]
fn disabled_entries_and_unlisted_files() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/_registry.toml",
                "[registry]\nversion = 1\n[pools]\nmain = { file = \"pools/main.toml\", enabled = false }\n",
            ),
            (
                "llms/pools/spare.toml",
                "[[instances]]\nmodel = \"mock/small\"\n"
            ),
        ],
        &[]
    ));
}

#[test]
fn unknown_strategy_and_bad_inherits() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/strategies/resilient.toml",
                "fallback_strategy = \"echelon_down\"\n"
            ),
            (
                "llms/task-groups/chat.toml",
                "inherits_from = \"strategy:resilent\"\n[echelons.echelon1]\nmodels = [\"pool:main\"]\n",
            ),
            (
                "llms/pools/main.toml",
                "inherits_from = 5\n[[instances]]\nmodel = \"mock/small\"\n",
            ),
        ],
        &[]
    ));
}

#[test]
fn invalid_references_and_names() {
    insta::assert_snapshot!(refused(
        &[
            (
                "llms/task-groups/chat.toml",
                "[echelons.echelon1]\nmodels = [\"group:other\", \"no-slash\", \"pool:\"]\n[echelons.\"bad.name\"]\nmodels = [\"mock/small\"]\npriority = 5\n",
            ),
            (
                "llms/pools/bad name.toml",
                "[[instances]]\nmodel = \"mock/small\"\n"
            ),
            (
                "llms/wrappers/default.toml",
                "[wrappers.\"has space\"]\ntype = \"pool\"\ntarget = \"main\"\n"
            ),
        ],
        &[]
    ));
}

#[test]
fn non_utf8_file_and_strategy_syntax() {
    let dir = base_with(&[("llms/strategies/broken.toml", "[circuit_breaker\n")]);
    std::fs::write(
        dir.path().join("llms/pools/binary.toml"),
        [0xff, 0xfe, 0x00, 0x41],
    )
    .unwrap();
    let report = load(dir.path(), &env(&[])).unwrap_err();
    insta::assert_snapshot!(checked(&report));
}

#[test]
fn lenient_mode_drops_broken_entries_and_their_dependents() {
    let dir = base_with(&[
        (
            "llms/_registry.toml",
            "[registry]\nversion = 1\n[global]\nvalidation = \"lenient\"\n",
        ),
        (
            "llms/pools/other.toml",
            "rotation = \"fastest\"\n[[instances]]\nmodel = \"mock/small\"\n",
        ),
        (
            "llms/task-groups/backup.toml",
            "[echelons.echelon1]\nmodels = [\"pool:other\"]\n",
        ),
        (
            "llms/wrappers/more.toml",
            "[wrappers.other]\ntype = \"pool\"\ntarget = \"other\"\n[wrappers.backup]\ntype = \"task_group\"\ntarget = \"backup\"\n[wrappers.ok]\ntype = \"direct\"\ntarget = \"mock/large\"\n",
        ),
    ]);
    let config = load(dir.path(), &env(&[])).unwrap_or_else(|r| panic!("{r}"));
    let names: Vec<&str> = config
        .topology
        .wrappers
        .keys()
        .map(|w| w.as_str())
        .collect();
    assert_eq!(names, ["chat", "main", "ok"]);
    assert_eq!(config.topology.pools.len(), 1);
    assert_eq!(config.topology.task_groups.len(), 1);
    let text: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!(text.join("\n\n"));
}

#[test]
fn ejection_limit_and_breaker_rate_out_of_range() {
    insta::assert_snapshot!(refused(
        &[(
            "llms/pools/main.toml",
            "max_ejection_percent = 150\n[[instances]]\nmodel = \"mock/small\"\n[circuit_breaker.failure_rate]\nthreshold = 1.5\n"
        )],
        &[]
    ));
}
