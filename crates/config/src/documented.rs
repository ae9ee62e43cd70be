//! docs/configuration.md states every default of [`echelon_domain::defaults`]; this test reads
//! the page and compares, so the page and the code cannot drift apart.

use core::time::Duration;

use echelon_domain::defaults::{
    alerts, breaker, echelon, health, pool, provider, retry_budget, route, server, state,
    task_group,
};

use crate::value::{parse_duration, parse_size};

/// A default as the page states it.
#[derive(Debug, PartialEq)]
enum Value {
    Count(u32),
    Time(Duration),
    Share(f64),
    Size(u64),
    Flag(bool),
}

/// Every default: the page's section heading, the key as the page writes it, the value.
fn defaults() -> Vec<(&'static str, &'static str, Value)> {
    use Value::{Count, Flag, Share, Size, Time};
    const REGISTRY: &str = "## `llms/_registry.toml`";
    const PROVIDERS: &str = "## Providers";
    const POOLS: &str = "## Pools";
    const BREAKERS: &str = "### Circuit breakers";
    const GROUPS: &str = "## Task groups";
    const GATEWAY: &str = "## `gateway.toml`";
    vec![
        (
            REGISTRY,
            "route_defaults.max_attempts",
            Count(route::MAX_ATTEMPTS),
        ),
        (
            REGISTRY,
            "route_defaults.retry_delay",
            Time(route::RETRY_DELAY),
        ),
        (REGISTRY, "route_defaults.deadline", Time(route::DEADLINE)),
        (REGISTRY, "retry_budget.ratio", Share(retry_budget::RATIO)),
        (
            REGISTRY,
            "retry_budget.min_per_second",
            Count(retry_budget::MIN_PER_SECOND),
        ),
        (REGISTRY, "retry_budget.window", Time(retry_budget::WINDOW)),
        (REGISTRY, "route_defaults.timeout", Time(route::TIMEOUT)),
        (
            REGISTRY,
            "route_defaults.first_token_timeout",
            Time(route::FIRST_TOKEN_TIMEOUT),
        ),
        (
            REGISTRY,
            "route_defaults.idle_timeout",
            Time(route::IDLE_TIMEOUT),
        ),
        (
            REGISTRY,
            "route_defaults.max_retries",
            Count(route::MAX_RETRIES),
        ),
        (
            REGISTRY,
            "route_defaults.retry_after_max_wait",
            Time(route::RETRY_AFTER_MAX_WAIT),
        ),
        (
            PROVIDERS,
            "connect_timeout",
            Time(provider::CONNECT_TIMEOUT),
        ),
        (
            PROVIDERS,
            "request_timeout",
            Time(provider::REQUEST_TIMEOUT),
        ),
        (POOLS, "health_check.interval", Time(health::CHECK_INTERVAL)),
        (POOLS, "health_check.timeout", Time(health::CHECK_TIMEOUT)),
        (
            POOLS,
            "health_check.failure_threshold",
            Count(health::FAILURE_THRESHOLD),
        ),
        (
            POOLS,
            "health_check.success_threshold",
            Count(health::SUCCESS_THRESHOLD),
        ),
        (
            POOLS,
            "health_check.recovery_time",
            Time(health::RECOVERY_TIME),
        ),
        (
            POOLS,
            "fallback.max_instance_attempts",
            Count(pool::MAX_INSTANCE_ATTEMPTS),
        ),
        (
            POOLS,
            "max_ejection_percent",
            Count(pool::MAX_EJECTION_PERCENT),
        ),
        (
            BREAKERS,
            "failure_threshold",
            Count(breaker::FAILURE_THRESHOLD),
        ),
        (BREAKERS, "recovery_time", Time(breaker::RECOVERY_TIME)),
        (
            BREAKERS,
            "max_recovery_time",
            Time(breaker::MAX_RECOVERY_TIME),
        ),
        (
            BREAKERS,
            "half_open_requests",
            Count(breaker::HALF_OPEN_REQUESTS),
        ),
        (
            BREAKERS,
            "failure_rate.threshold",
            Share(breaker::FAILURE_RATE_THRESHOLD),
        ),
        (
            BREAKERS,
            "failure_rate.window",
            Time(breaker::FAILURE_RATE_WINDOW),
        ),
        (
            BREAKERS,
            "failure_rate.min_calls",
            Count(breaker::FAILURE_RATE_MIN_CALLS),
        ),
        (
            GROUPS,
            "fallback.max_attempts",
            Count(task_group::MAX_ATTEMPTS),
        ),
        (
            GROUPS,
            "fallback.retry_delay",
            Time(task_group::RETRY_DELAY),
        ),
        (GROUPS, "fallback.deadline", Time(task_group::DEADLINE)),
        (
            GROUPS,
            "fallback.content_filter_fallback",
            Flag(task_group::CONTENT_FILTER_FALLBACK),
        ),
        (GROUPS, "echelons.<name>.timeout", Time(echelon::TIMEOUT)),
        (
            GROUPS,
            "echelons.<name>.first_token_timeout",
            Time(echelon::FIRST_TOKEN_TIMEOUT),
        ),
        (
            GROUPS,
            "echelons.<name>.idle_timeout",
            Time(echelon::IDLE_TIMEOUT),
        ),
        (
            GROUPS,
            "echelons.<name>.max_retries",
            Count(echelon::MAX_RETRIES),
        ),
        (
            GROUPS,
            "echelons.<name>.retry_after_max_wait",
            Time(echelon::RETRY_AFTER_MAX_WAIT),
        ),
        (
            GATEWAY,
            "server.request_timeout",
            Time(server::REQUEST_TIMEOUT),
        ),
        (GATEWAY, "server.max_body_size", Size(server::MAX_BODY_SIZE)),
        (
            GATEWAY,
            "server.shutdown_grace",
            Time(server::SHUTDOWN_GRACE),
        ),
        (
            GATEWAY,
            "server.header_read_timeout",
            Time(server::HEADER_READ_TIMEOUT),
        ),
        (GATEWAY, "server.idle_timeout", Time(server::IDLE_TIMEOUT)),
        (
            GATEWAY,
            "server.body_read_timeout",
            Time(server::BODY_READ_TIMEOUT),
        ),
        (
            GATEWAY,
            "server.max_header_size",
            Size(server::MAX_HEADER_SIZE),
        ),
        (
            GATEWAY,
            "server.max_connections",
            Count(server::MAX_CONNECTIONS),
        ),
        (
            GATEWAY,
            "alerts.evaluation_interval",
            Time(alerts::EVALUATION_INTERVAL),
        ),
        (GATEWAY, "alerts.rules[].cooldown", Time(alerts::COOLDOWN)),
        (GATEWAY, "state.timeout", Time(state::TIMEOUT)),
        (GATEWAY, "state.sync_interval", Time(state::SYNC_INTERVAL)),
        (GATEWAY, "state.retry_interval", Time(state::RETRY_INTERVAL)),
        (GATEWAY, "state.replicas", Count(state::REPLICAS)),
        (
            GATEWAY,
            "alerts.rules[].window",
            Time(alerts::THRESHOLD_WINDOW),
        ),
    ]
}

/// Every table row of the page: its section heading, its key and its default cell.
fn rows(page: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    let mut in_code = false;
    for line in page.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if in_code {
        } else if line.starts_with('#') {
            section = line.trim().to_owned();
        } else if line.starts_with("| `") {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if let (Some(key), Some(default)) = (cells.get(1), cells.get(3)) {
                out.push((
                    section.clone(),
                    key.trim_matches('`').to_owned(),
                    (*default).to_owned(),
                ));
            }
        }
    }
    out
}

/// The value of a default cell: its first `code` span, without quotes.
fn value(cell: &str) -> Option<Value> {
    let text = cell.split('`').nth(1)?.trim_matches('"');
    if let Ok(flag) = text.parse() {
        return Some(Value::Flag(flag));
    }
    if let Ok(n) = text.parse() {
        return Some(Value::Count(n));
    }
    if let Ok(share) = text.parse() {
        return Some(Value::Share(share));
    }
    // A size ends in `B` (`"4MiB"`, `"32KiB"`); a duration never does.
    if text.ends_with('B') {
        return parse_size(text).ok().map(Value::Size);
    }
    parse_duration(text).ok().map(Value::Time)
}

#[test]
fn the_configuration_page_states_every_default_once_as_the_code_has_it() {
    let page = include_str!("../../../docs/configuration.md");
    let rows = rows(page);
    for (section, key, expected) in defaults() {
        let found: Vec<_> = rows
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "docs/configuration.md, {section}: `{key}` should have one row, has {}",
            found.len()
        );
        let cell = &found[0].2;
        assert_eq!(
            value(cell),
            Some(expected),
            "docs/configuration.md, {section}: the default of `{key}` is {cell}"
        );
    }
}
