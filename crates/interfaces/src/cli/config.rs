//! `echelon config check` and `echelon config show`: validate the configuration tree and print
//! what it resolves to, secrets redacted.

use echelon_domain::time::DurationText;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use echelon_config::{LoadOptions, LoadedConfig, ProcessEnv, ValidationMode};
use echelon_domain::spec::{
    EchelonTarget, FallbackStrategy, PoolFallbackStrategy, ProviderKind, Topology, WrapperTarget,
};

use echelon_infrastructure::provider::endpoint::endpoint_urls;

use super::table::Table;

/// `1 provider`, `2 providers`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `2 providers, 4 models, 2 pools, 2 task groups, 4 wrappers`.
pub(crate) fn counts(topology: &Topology) -> String {
    format!(
        "{}, {}, {}, {}, {}",
        plural(topology.providers.len(), "provider"),
        plural(topology.models.len(), "model"),
        plural(topology.pools.len(), "pool"),
        plural(topology.task_groups.len(), "task group"),
        plural(topology.wrappers.len(), "wrapper"),
    )
}

/// Loads `dir` in `mode` (the registry's own mode when `None`).
pub(crate) fn load(
    dir: &Path,
    mode: Option<ValidationMode>,
) -> Result<LoadedConfig, echelon_config::ConfigReport> {
    echelon_config::load_with(dir, &ProcessEnv, &LoadOptions { validation: mode })
}

/// `config check`: every problem, or a one-line summary. Exit 1 when the tree is refused.
pub fn check(dir: &Path, mode: Option<ValidationMode>) -> ExitCode {
    match load(dir, mode) {
        Ok(config) => {
            // `serve` refuses a certificate pair that cannot serve; so does the check.
            if let Some(files) = &config.gateway.server.tls
                && let Err(error) = crate::http::server::tls::load(files)
            {
                println!(
                    "error: {error}\n\nconfiguration refused: the TLS certificate cannot serve"
                );
                return ExitCode::FAILURE;
            }
            for warning in &config.warnings {
                println!("{warning}\n");
            }
            println!(
                "configuration OK: {}; {}",
                counts(&config.topology),
                plural(config.warnings.len(), "warning")
            );
            ExitCode::SUCCESS
        }
        Err(report) => {
            println!("{report}");
            ExitCode::FAILURE
        }
    }
}

/// `config show`: the readable summary, or with `resolved` the full JSON. Exit 1 when the tree
/// is refused (the report is printed instead).
pub fn show(dir: &Path, resolved: bool) -> ExitCode {
    match load(dir, None) {
        Ok(config) if resolved => {
            println!("{}", render_resolved(&config));
            ExitCode::SUCCESS
        }
        Ok(config) => {
            print!("{}", summary(dir, &config));
            ExitCode::SUCCESS
        }
        Err(report) => {
            println!("{report}");
            ExitCode::FAILURE
        }
    }
}

/// The resolved tree as JSON, each provider with the `endpoints` its requests go to (query
/// strings left out, Gemini's per-model endpoints with a `{model}` placeholder).
pub fn render_resolved(config: &LoadedConfig) -> String {
    let mut value = echelon_config::resolved_json(config);
    if let Some(providers) = value
        .pointer_mut("/topology/providers")
        .and_then(serde_json::Value::as_object_mut)
    {
        for (name, spec) in &config.topology.providers {
            let endpoints: serde_json::Map<String, serde_json::Value> = endpoint_urls(spec)
                .unwrap_or_default()
                .into_iter()
                .map(|(endpoint, url)| (endpoint.name().to_owned(), url.into()))
                .collect();
            if let Some(provider) = providers
                .get_mut(name.as_str())
                .and_then(serde_json::Value::as_object_mut)
            {
                provider.insert("endpoints".into(), endpoints.into());
            }
        }
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// A URL without its query string or user info, which may carry credentials.
pub(crate) fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string().trim_end_matches('/').to_owned()
        }
        _ => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
    }
}

pub(crate) fn kind_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gemini",
        ProviderKind::Mock => "mock",
    }
}

fn fallback_name(strategy: FallbackStrategy) -> &'static str {
    match strategy {
        FallbackStrategy::EchelonDown => "echelon_down",
        FallbackStrategy::ModelRotate => "model_rotate",
        FallbackStrategy::ProviderFailover => "provider_failover",
        FallbackStrategy::GroupFallback => "group_fallback",
    }
}

fn target_name(target: &EchelonTarget) -> String {
    match target {
        EchelonTarget::Model(model) => model.to_string(),
        EchelonTarget::Pool(pool) => format!("pool:{pool}"),
    }
}

fn limits_text(limits: &echelon_domain::spec::Limits) -> String {
    let parts: Vec<String> = [
        limits.rpm.map(|v| format!("{v} rpm")),
        limits.tpm.map(|v| format!("{v} tpm")),
        limits.max_concurrency.map(|v| format!("{v} at once")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// The tree as people read it: wrappers → targets, groups → echelons → targets, pools →
/// instances, providers. Never a secret: keys are counted, URLs lose their query.
pub fn summary(dir: &Path, config: &LoadedConfig) -> String {
    let topology = &config.topology;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "configuration {} ({} validation, hot reload {}): {}",
        dir.display(),
        match config.validation {
            ValidationMode::Strict => "strict",
            ValidationMode::Lenient => "lenient",
        },
        if config.registry.hot_reload {
            "on"
        } else {
            "off"
        },
        counts(topology)
    );
    let auth = &config.gateway.auth;
    let _ = writeln!(
        out,
        "gateway: listen {}, client keys: {}, admin key: {}",
        config.gateway.server.listen,
        if auth.api_keys.is_empty() {
            "none (open)".to_owned()
        } else {
            plural(auth.api_keys.len(), "key")
        },
        if auth.admin_key.is_some() {
            "set"
        } else {
            "not set (loopback only)"
        }
    );

    let _ = writeln!(out, "\nwrappers (the names clients send as `model`)");
    let mut table = Table::new(["WRAPPER", "TARGET", "DESCRIPTION"]);
    for wrapper in topology.wrappers.values() {
        let target = match &wrapper.target {
            WrapperTarget::TaskGroup(group) => format!("task group {group}"),
            WrapperTarget::Pool(pool) => format!("pool {pool}"),
            WrapperTarget::Direct(model) => format!("model {model}"),
        };
        table.row([
            wrapper.name.to_string(),
            target,
            wrapper.description.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&table.render(2));

    for group in topology.task_groups.values() {
        let _ = writeln!(
            out,
            "\ntask group {} ({}, at most {} attempts, deadline {})",
            group.name,
            fallback_name(group.fallback_strategy),
            group.fallback.max_attempts,
            DurationText(group.fallback.deadline)
        );
        let mut table = Table::new(["ECHELON", "PRIORITY", "TIMEOUT", "RETRIES", "TARGETS"]);
        for echelon in &group.echelons {
            table.row([
                echelon.name.to_string(),
                echelon.priority.to_string(),
                DurationText(echelon.timeout).to_string(),
                echelon.max_retries.to_string(),
                echelon
                    .targets
                    .iter()
                    .map(target_name)
                    .collect::<Vec<_>>()
                    .join(", "),
            ]);
        }
        out.push_str(&table.render(2));
        if !group.fallback.fallback_groups.is_empty() {
            let then: Vec<String> = group
                .fallback
                .fallback_groups
                .iter()
                .map(|r| match &r.echelon {
                    Some(e) => format!("{}.{e}", r.group),
                    None => r.group.to_string(),
                })
                .collect();
            let _ = writeln!(out, "  then: {}", then.join(", "));
        }
    }

    for pool in topology.pools.values() {
        let fallback = match pool.fallback.strategy {
            PoolFallbackStrategy::InstanceRotation => String::new(),
            PoolFallbackStrategy::PoolFallback => format!(
                ", then {}",
                pool.fallback
                    .fallback_pools
                    .iter()
                    .map(|p| format!("pool:{p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let _ = writeln!(
            out,
            "\npool {} ({}, tries up to {} instances{fallback})",
            pool.name,
            pool.rotation.as_str(),
            pool.fallback.max_instance_attempts
        );
        let mut table = Table::new(["INSTANCE", "UPSTREAM MODEL", "WEIGHT", "LIMITS"]);
        for instance in &pool.instances {
            table.row([
                instance.id.to_string(),
                instance.upstream_name.clone(),
                instance.weight.to_string(),
                limits_text(&instance.limits),
            ]);
        }
        out.push_str(&table.render(2));
    }

    let _ = writeln!(out, "\nproviders");
    let mut table = Table::new(["PROVIDER", "KIND", "BASE URL", "KEYS", "MODELS"]);
    for provider in topology.providers.values() {
        let models: Vec<String> = topology
            .models
            .keys()
            .filter(|m| m.provider == provider.name)
            .map(|m| m.model.to_string())
            .collect();
        table.row([
            provider.name.to_string(),
            kind_name(provider.kind).to_owned(),
            display_url(&provider.base_url),
            provider.api_keys.len().to_string(),
            models.join(", "),
        ]);
    }
    out.push_str(&table.render(2));
    if !config.warnings.is_empty() {
        let _ = writeln!(
            out,
            "\n{}: run `echelon config check` to see them",
            plural(config.warnings.len(), "warning")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_queries_and_user_info() {
        assert_eq!(
            display_url("https://user:pw@example.com/v1?key=sk-canary"),
            "https://example.com/v1"
        );
        assert_eq!(display_url("mock://fast?x=1"), "mock://fast");
        assert_eq!(
            display_url("http://127.0.0.1:9000/v1"),
            "http://127.0.0.1:9000/v1"
        );
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "task group"), "1 task group");
        assert_eq!(plural(0, "warning"), "0 warnings");
    }
}
