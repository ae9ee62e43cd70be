//! Reading `router_settings`, `litellm_settings` and `general_settings`, and merging the
//! router keys of the first two as LiteLLM does.

use super::*;

pub(super) fn read_router(section: &Entry, source: &mut Source) {
    let mut router = std::mem::take(&mut source.router);
    for entry in section.value.entries() {
        let key = format!("{}.{}", section.key, entry.key);
        if !read_router_key(entry, &key, &mut router, source) {
            let reason = router_reason(entry.key.as_str())
                .unwrap_or("a router setting with no Echelon equivalent");
            source.not_mapped(entry, &key, reason);
        }
    }
    source.router = router;
}

/// Reads a router key into `router`; false when it is not one.
fn read_router_key(entry: &Entry, key: &str, router: &mut Router, source: &mut Source) -> bool {
    let at = At {
        line: entry.line,
        key,
    };
    match entry.key.as_str() {
        "routing_strategy" => router.routing_strategy = entry.value.text().map(|v| at.of(v)),
        "num_retries" => router.num_retries = count(entry, key, source).map(|v| at.of(v)),
        "timeout" | "request_timeout" => {
            router.timeout = seconds(entry, key, source).map(|v| at.of(v))
        }
        "stream_timeout" => router.stream_timeout = seconds(entry, key, source).map(|v| at.of(v)),
        "allowed_fails" => router.allowed_fails = count(entry, key, source).map(|v| at.of(v)),
        "cooldown_time" => {
            router.cooldown_time = seconds_or_zero(entry, key, source).map(|v| at.of(v))
        }
        "retry_after" => router.retry_after = seconds_or_zero(entry, key, source).map(|v| at.of(v)),
        "max_fallbacks" => router.max_fallbacks = count(entry, key, source).map(|v| at.of(v)),
        "fallbacks" => router.fallbacks = Some(at.of(rules(&entry.value))),
        "context_window_fallbacks" => {
            router.context_window_fallbacks = Some(at.of(rules(&entry.value)));
        }
        "content_policy_fallbacks" => {
            router.content_policy_fallbacks = Some(at.of(rules(&entry.value)));
        }
        "default_fallbacks" => router.default_fallbacks = Some(at.of(names(&entry.value))),
        "default_max_parallel_requests" => {
            router.default_max_parallel = count(entry, key, source).map(|v| at.of(v));
        }
        "enable_pre_call_checks" => {
            router.pre_call_checks = entry.value.boolean().map(|v| at.of(v))
        }
        // Read as one setting by `router_redis`.
        "redis_host" | "redis_port" | "redis_password" | "redis_url" => {}
        "model_group_alias" => {
            for alias in entry.value.entries() {
                let target = alias
                    .value
                    .get("model")
                    .and_then(Yaml::text)
                    .or_else(|| alias.value.text());
                if let Some(target) = target {
                    router.aliases.push(Setting {
                        value: (alias.key.clone(), target),
                        line: alias.line,
                        key: format!("{key}.{}", alias.key),
                    });
                }
                if alias.value.get("hidden").and_then(Yaml::boolean) == Some(true) {
                    source.finding(
                        alias.line,
                        format!("{key}.{}.hidden", alias.key),
                        FindingKind::Warning,
                        "Echelon lists every wrapper in GET /v1/models; hidden aliases are listed too",
                    );
                }
            }
        }
        _ => return false,
    }
    true
}

fn router_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "disable_cooldowns" => {
            "Echelon always runs breakers and cooldowns; a large [circuit_breaker] failure_threshold comes closest"
        }
        "retry_policy" | "model_group_retry_policy" | "allowed_fails_policy" => {
            "per-exception retry and cooldown counts: Echelon decides by error class (rate limited, server, timeout, auth, context length) itself"
        }
        "routing_strategy_args" => {
            "strategy tuning (ttl, latency buffer) has no Echelon equivalent"
        }
        "enable_tag_filtering" | "tag_filtering_match_any" => {
            "tag-based routing is not an Echelon feature; give each tag its own wrapper"
        }
        "provider_budget_config" => "budgets per provider are not an Echelon feature",
        "cache_responses" | "cache_kwargs" | "caching_groups" | "cache_params" => {
            "response caching is not an Echelon feature"
        }
        "set_verbose" | "debug_level" => "use [telemetry] log_level in gateway.toml",
        "polling_interval" | "default_priority" => {
            "request scheduling by priority is not an Echelon feature"
        }
        "optional_pre_call_checks" => {
            "Echelon always checks limits and context windows before a call"
        }
        _ => return None,
    })
}

pub(super) fn read_library(section: &Entry, library: &mut Router, source: &mut Source) {
    for entry in section.value.entries() {
        let key = format!("{}.{}", section.key, entry.key);
        if read_router_key(entry, &key, library, source) {
            continue;
        }
        match entry.key.as_str() {
            "set_verbose" => source.proxy.verbose = bool_setting(entry, &key),
            "json_logs" => source.proxy.json_logs = bool_setting(entry, &key),
            "callbacks" | "success_callback" | "failure_callback" | "service_callback" => {
                let names = names(&entry.value);
                if names.iter().any(|n| n == "prometheus") {
                    source.proxy.prometheus = Some(Setting {
                        value: (),
                        line: entry.line,
                        key: key.clone(),
                    });
                }
                let others: Vec<&String> = names.iter().filter(|n| *n != "prometheus").collect();
                if !others.is_empty() {
                    let list: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
                    source.not_mapped(
                        entry,
                        &key,
                        &format!(
                            "callbacks ({}): Echelon runs no plugins; it exports OpenTelemetry traces ([telemetry] otlp_endpoint) and Prometheus metrics, which a collector can send on",
                            list.join(", ")
                        ),
                    );
                }
            }
            "drop_params" | "modify_params" => source.not_mapped(
                entry,
                &key,
                "Echelon forwards a request's parameters as the client sent them; a provider that does not support one answers 400",
            ),
            "cache" | "cache_params" | "enable_caching_on_provider_specific_optional_params" => {
                source.not_mapped(entry, &key, "response caching is not an Echelon feature");
            }
            "max_budget" | "budget_duration" | "max_end_user_budget" | "default_team_settings"
            | "default_internal_user_params" | "upperbound_key_generate_params" => source.not_mapped(
                entry,
                &key,
                "budgets, teams and users live in LiteLLM's database; Echelon has client keys only",
            ),
            _ => source.not_mapped(entry, &key, "a LiteLLM library setting with no Echelon equivalent"),
        }
    }
}

pub(super) fn read_general(section: &Entry, source: &mut Source) {
    for entry in section.value.entries() {
        let key = format!("{}.{}", section.key, entry.key);
        let at = At {
            line: entry.line,
            key: &key,
        };
        match entry.key.as_str() {
            "master_key" => source.proxy.master_key = env_text(entry, &key, source).map(|v| at.of(v)),
            "background_health_checks" => source.proxy.health_checks = bool_setting(entry, &key),
            "health_check_interval" => {
                source.proxy.health_check_interval = seconds(entry, &key, source).map(|v| at.of(v));
            }
            "coordination_redis" => {
                let redis = redis_of(&entry.value, &key, source);
                source.proxy.redis = Some(at.of(redis));
            }
            "database_url" | "store_model_in_db" | "disable_prisma_schema_update" => source.not_mapped(
                entry,
                &key,
                "LiteLLM's database (virtual keys, spend, models added at run time) has no Echelon equivalent; the tree is the whole configuration",
            ),
            "disable_spend_logs" | "proxy_batch_write_at" | "use_redis_transaction_buffer"
            | "spend_report_frequency" => source.not_mapped(
                entry,
                &key,
                "spend tracking is not an Echelon feature; per-request usage is in the traces and metrics",
            ),
            "custom_auth" | "custom_sso" | "allowed_routes" | "admin_only_routes" => source.not_mapped(
                entry,
                &key,
                "custom authentication and route control: Echelon checks bearer keys from [auth] api_keys",
            ),
            "alerting" | "alerting_threshold" | "alert_types" | "alerting_args" => source.not_mapped(
                entry,
                &key,
                "LiteLLM's Slack alerting: Echelon's alert rules ([[alerts.rules]] in gateway.toml) post to [alerts] webhooks",
            ),
            "pass_through_endpoints" => source.not_mapped(
                entry,
                &key,
                "pass-through endpoints are not an Echelon feature",
            ),
            "otel" => source.not_mapped(
                entry,
                &key,
                "set [telemetry] otlp_endpoint (OTLP over HTTP) in gateway.toml",
            ),
            other if other.starts_with("ui_") || other.contains("_ui") => source.not_mapped(
                entry,
                &key,
                "LiteLLM's admin UI has no Echelon equivalent; Echelon serves a status page at /",
            ),
            _ => source.not_mapped(entry, &key, "a LiteLLM proxy setting with no Echelon equivalent"),
        }
    }
}

/// Merges the library's router settings under the router's own: `router_settings` wins, as in
/// LiteLLM's `Router(...)`, which reads `litellm.<name>` only when its argument is unset.
pub(super) fn merge_router(source: &mut Source, library: Router) {
    fn pick<T: Clone>(
        own: &mut Option<Setting<T>>,
        other: Option<Setting<T>>,
        findings: &mut Vec<Finding>,
    ) {
        match (own.as_ref(), other) {
            (None, other) => *own = other,
            (Some(winner), Some(loser)) => findings.push(Finding {
                line: Some(loser.line),
                key: loser.key,
                kind: FindingKind::NotMapped,
                text: format!(
                    "{} (line {}) takes precedence, as in LiteLLM",
                    winner.key, winner.line
                ),
            }),
            (Some(_), None) => {}
        }
    }
    let r = &mut source.router;
    let f = &mut source.findings;
    pick(&mut r.routing_strategy, library.routing_strategy, f);
    pick(&mut r.num_retries, library.num_retries, f);
    pick(&mut r.timeout, library.timeout, f);
    pick(&mut r.stream_timeout, library.stream_timeout, f);
    pick(&mut r.allowed_fails, library.allowed_fails, f);
    pick(&mut r.cooldown_time, library.cooldown_time, f);
    pick(&mut r.retry_after, library.retry_after, f);
    pick(&mut r.max_fallbacks, library.max_fallbacks, f);
    pick(&mut r.fallbacks, library.fallbacks, f);
    pick(
        &mut r.context_window_fallbacks,
        library.context_window_fallbacks,
        f,
    );
    pick(
        &mut r.content_policy_fallbacks,
        library.content_policy_fallbacks,
        f,
    );
    pick(&mut r.default_fallbacks, library.default_fallbacks, f);
    pick(&mut r.default_max_parallel, library.default_max_parallel, f);
    pick(&mut r.pre_call_checks, library.pre_call_checks, f);
    r.aliases.extend(library.aliases);
}

/// After reading `router_settings`: its Redis keys as one setting.
pub(super) fn router_redis(doc: &Yaml, source: &mut Source) {
    let Some(section) = doc.entry("router_settings") else {
        return;
    };
    let keys = ["redis_host", "redis_port", "redis_password", "redis_url"];
    let Some(first) = section
        .value
        .entries()
        .iter()
        .find(|e| keys.contains(&e.key.as_str()))
    else {
        return;
    };
    let redis = redis_of(&section.value, "router_settings", source);
    if source.proxy.redis.is_none() {
        source.proxy.redis = Some(Setting {
            value: redis,
            line: first.line,
            key: "router_settings.redis_*".to_owned(),
        });
    }
}

fn redis_of(node: &Yaml, key: &str, source: &mut Source) -> Redis {
    let mut redis = Redis::default();
    for entry in node.entries() {
        let path = format!("{key}.{}", entry.key);
        let name = entry.key.strip_prefix("redis_").unwrap_or(&entry.key);
        match name {
            "url" => redis.url = env_text(entry, &path, source),
            "host" => redis.host = env_text(entry, &path, source),
            "port" => redis.port = env_text(entry, &path, source),
            "password" => redis.password = env_text(entry, &path, source),
            _ => {}
        }
    }
    redis
}
