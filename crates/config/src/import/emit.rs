//! Writing a planned tree as commented TOML files, and the report that goes with them.

use core::fmt::Write as _;
use core::time::Duration;
use std::collections::BTreeSet;

use echelon_domain::spec::ProviderKind;

use super::layout::{GroupOut, Level, PoolOut, ProviderOut, Tree};
use super::{GeneratedFile, Import, ImportReport};
use echelon_domain::defaults;

/// Renders `tree`, read from `source`, into files and a report.
pub(crate) fn render(tree: &Tree, source: &str) -> Import {
    let mut w = Writer::default();
    let mut files = vec![
        GeneratedFile {
            path: crate::GATEWAY_FILE.to_owned(),
            text: gateway(tree, source, &mut w),
        },
        GeneratedFile {
            path: "llms/_registry.toml".to_owned(),
            text: registry(source),
        },
    ];
    for provider in &tree.providers {
        files.push(GeneratedFile {
            path: format!("llms/providers/{}.toml", provider.name),
            text: provider_file(provider, source, &mut w),
        });
    }
    for pool in &tree.pools {
        files.push(GeneratedFile {
            path: format!("llms/pools/{}.toml", pool.name),
            text: pool_file(pool, source),
        });
    }
    for group in &tree.groups {
        files.push(GeneratedFile {
            path: format!("llms/task-groups/{}.toml", group.name),
            text: group_file(group, source),
        });
    }
    if !tree.wrappers.is_empty() {
        files.push(GeneratedFile {
            path: "llms/wrappers/litellm.toml".to_owned(),
            text: wrappers_file(tree, source),
        });
    }
    let mut findings = tree.findings.clone();
    findings.sort_by(|a, b| {
        (a.line.unwrap_or(usize::MAX), a.kind).cmp(&(b.line.unwrap_or(usize::MAX), b.kind))
    });
    Import {
        files,
        report: ImportReport {
            findings,
            variables: w.variables,
            optional_variables: w.optional,
            wrappers: tree.wrappers.iter().map(|w| w.name.clone()).collect(),
        },
    }
}

/// Collects the variables of the values it writes.
#[derive(Debug, Default)]
struct Writer {
    /// Variables without a default: the tree does not load unless they are set.
    variables: BTreeSet<String>,
    /// Variables with a default.
    optional: BTreeSet<String>,
}

impl Writer {
    /// A TOML string of a template, noting its variables.
    fn value(&mut self, template: &str) -> String {
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            if rest[..start].ends_with('$') {
                rest = &rest[start + 2..];
                continue;
            }
            let body = &rest[start + 2..];
            let Some(end) = body.find('}') else { break };
            let reference = &body[..end];
            match reference.split_once(':') {
                None => self.variables.insert(reference.to_owned()),
                Some((name, _)) => self.optional.insert(name.to_owned()),
            };
            rest = &body[end + 1..];
        }
        string(template)
    }
}

/// A TOML basic string.
pub(crate) fn string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A TOML key: bare when it can be, quoted otherwise.
fn key(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        text.to_owned()
    } else {
        string(text)
    }
}

/// A duration as the loader reads it: `"250ms"`, `"30s"`, `"5m"`, `"2h"`.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A float TOML reads as a float.
fn float(f: f64) -> String {
    let text = f.to_string();
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// A comment's text on one line.
fn comment(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn lines_text(lines: &[usize]) -> String {
    let mut lines = lines.to_vec();
    lines.sort_unstable();
    lines.dedup();
    let list: Vec<String> = lines.iter().map(ToString::to_string).collect();
    match list.len() {
        1 => format!("line {}", list[0]),
        _ => format!("lines {}", list.join(", ")),
    }
}

fn gateway(tree: &Tree, source: &str, w: &mut Writer) -> String {
    let g = &tree.gateway;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Gateway settings, imported from the LiteLLM proxy config {} by `echelon config import litellm`.",
        comment(source)
    );
    t.push_str(
        "# docs/configuration.md describes every key; docs/coming-from-litellm.md the mapping.\n\n[server]\n",
    );
    t.push_str(
        "# LiteLLM's proxy listens on 0.0.0.0:4000. While you switch, run Echelon beside it on another\n# port, e.g. listen = \"0.0.0.0:8080\" (with client keys in [auth]), and move clients over.\nlisten = \"127.0.0.1:8080\"\n",
    );
    if let Some(timeout) = g.request_timeout {
        let _ = writeln!(
            t,
            "request_timeout = \"{}\"   # the longest task group deadline; the default is {}",
            duration(timeout),
            duration(defaults::server::REQUEST_TIMEOUT)
        );
    }
    t.push_str("\n[auth]\n");
    match &g.master_key {
        Some(key) => {
            let value = w.value(&key.value.template());
            let _ = writeln!(
                t,
                "# From {} (line {}): LiteLLM's master key calls the API and the admin endpoints.\n# LiteLLM's virtual keys live in its database: add the keys your clients send here.",
                key.key, key.line
            );
            let _ = writeln!(t, "api_keys = [{value}]");
            let _ = writeln!(t, "admin_key = {value}");
        }
        None => t.push_str(
            "# LiteLLM ran without a master key, so clients need none; set keys before listening beyond\n# loopback, e.g. api_keys = [\"${ECHELON_CLIENT_KEY}\"].\napi_keys = []\n",
        ),
    }
    t.push_str("\n[telemetry]\n");
    let _ = writeln!(
        t,
        "log_format = \"{}\"",
        if g.json_logs { "json" } else { "text" }
    );
    let _ = writeln!(
        t,
        "log_level = \"{}\"",
        if g.debug_logs { "debug" } else { "info" }
    );
    t.push_str("service_name = \"echelon\"\n# otlp_endpoint = \"http://127.0.0.1:4318\"   # OpenTelemetry traces (OTLP over HTTP)\n");
    t.push_str("\n[state]\nbackend = \"memory\"\n");
    if let Some(redis) = &g.redis_url {
        let _ = writeln!(
            t,
            "# From {} (line {}). This build serves the memory backend only (limits and cooldowns\n# count per replica); once Redis is served, switch with:\n# backend = \"redis\"\n# redis_url = {}",
            redis.key,
            redis.line,
            string(&redis.value)
        );
    }
    t
}

fn registry(source: &str) -> String {
    format!(
        "# Imported from {} by `echelon config import litellm`. Every file of each folder loads,\n# named after its file stem.\n\n[registry]\nversion = 1\n\n[global]\nvalidation = \"strict\"\nhot_reload = true\ndebounce = \"500ms\"\n",
        comment(source)
    )
}

fn provider_file(p: &ProviderOut, source: &str, w: &mut Writer) -> String {
    let mut t = String::new();
    let lines: Vec<usize> = p
        .models
        .iter()
        .flat_map(|m| m.lines.iter().copied())
        .collect();
    let _ = writeln!(
        t,
        "# Provider `{}`: LiteLLM provider {}, from {} {}.",
        p.name,
        p.litellm,
        comment(source),
        lines_text(&lines)
    );
    if let Some(note) = p.note {
        let _ = writeln!(t, "# Reached {note}.");
    }
    let kind = match p.kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gemini",
        ProviderKind::Mock => "mock",
    };
    let _ = writeln!(t, "kind = \"{kind}\"");
    match &p.base_url {
        Some(url) => {
            let _ = writeln!(t, "base_url = {}", w.value(url));
        }
        None => {
            let _ = writeln!(t, "# base_url: the default of kind \"{kind}\"");
        }
    }
    let key_comment = |k: &super::layout::KeyOut| {
        let mut parts = vec![if k.lines.len() == 1 {
            format!("the deployment at {}", lines_text(&k.lines))
        } else {
            format!("the deployments at {}", lines_text(&k.lines))
        }];
        if k.by_default {
            parts.push("LiteLLM's variable when a deployment names no key".to_owned());
        }
        if k.literal {
            parts.push("written in the YAML: move it to an environment variable".to_owned());
        }
        parts.join("; ")
    };
    match p.keys.as_slice() {
        [] => t.push_str("# No key: LiteLLM sent none to this address either.\n"),
        [one] => {
            let _ = writeln!(
                t,
                "api_key = {}   # {}",
                w.value(&one.template),
                key_comment(one)
            );
        }
        keys => {
            t.push_str(
                "# Each key is its own instance of every model below (#0, #1, …).\napi_keys = [\n",
            );
            for (i, k) in keys.iter().enumerate() {
                let _ = writeln!(
                    t,
                    "  {},   # #{i}: {}",
                    w.value(&k.template),
                    key_comment(k)
                );
            }
            t.push_str("]\n");
        }
    }
    if !p.headers.is_empty() {
        t.push_str("\n[headers]\n");
        for (name, value) in &p.headers {
            let _ = writeln!(t, "{} = {}", key(name), w.value(value));
        }
    }
    for m in &p.models {
        let _ = writeln!(t, "\n[models.{}]", key(&m.id));
        if let Some(window) = m.context_window {
            let _ = writeln!(t, "context_window = {window}   # model_info");
        }
        if let Some((input, output)) = m.cost {
            let _ = writeln!(
                t,
                "cost = {{ input = {}, output = {} }}   # per million tokens (LiteLLM: per token)",
                float(input),
                float(output)
            );
        }
    }
    t
}

fn level_text(level: Level) -> String {
    match level {
        Level::All => String::new(),
        Level::Order(o) => format!(", order {o}"),
        Level::Unordered => ", the deployments without order".to_owned(),
    }
}

fn pool_file(p: &PoolOut, source: &str) -> String {
    let mut t = String::new();
    let lines: Vec<usize> = p.instances.iter().map(|i| i.line).collect();
    let _ = writeln!(
        t,
        "# Pool `{}`: LiteLLM model group `{}`{} ({} {}).",
        p.name,
        comment(&p.model_name),
        level_text(p.level),
        comment(source),
        lines_text(&lines)
    );
    let _ = writeln!(
        t,
        "rotation = \"{}\"   # {}",
        p.rotation.as_str(),
        comment(&p.rotation_note)
    );
    for i in &p.instances {
        let _ = writeln!(
            t,
            "\n[[instances]]   # model_list[{}], line {}",
            i.deployment, i.line
        );
        let _ = writeln!(t, "model = {}", string(&i.model));
        if let Some(k) = i.key {
            let _ = writeln!(t, "key = {k}");
        }
        if let Some(weight) = i.weight {
            let _ = writeln!(t, "weight = {weight}");
        }
        if let Some(rpm) = i.rpm {
            let _ = writeln!(t, "rpm_limit = {rpm}");
        }
        if let Some(tpm) = i.tpm {
            let _ = writeln!(t, "tpm_limit = {tpm}");
        }
        if let Some(max) = i.max_concurrency {
            let _ = writeln!(t, "max_concurrency = {max}   # max_parallel_requests");
        }
    }
    t.push_str("\n[health_check]\n");
    let _ = writeln!(
        t,
        "enabled = {}   # {}",
        p.health.enabled,
        comment(&p.health.note)
    );
    if let Some(interval) = p.health.interval {
        let _ = writeln!(t, "interval = \"{}\"", duration(interval));
    }
    if let Some(n) = p.health.failure_threshold {
        let _ = writeln!(
            t,
            "failure_threshold = {n}   # as the breaker's: failures in a row that take an instance out"
        );
    }
    t.push_str("\n[fallback]\n");
    let _ = writeln!(
        t,
        "max_instance_attempts = {}   # {}",
        p.max_instance_attempts, p.attempts_note
    );
    if p.breaker.failure_threshold.is_some() || p.breaker.recovery_time.is_some() {
        t.push_str("\n[circuit_breaker]\n");
    }
    if let Some((n, why)) = &p.breaker.failure_threshold {
        let _ = writeln!(t, "failure_threshold = {n}   # {}", comment(why));
    }
    if let Some((d, why)) = &p.breaker.recovery_time {
        let _ = writeln!(
            t,
            "recovery_time = \"{}\"   # {}",
            duration(*d),
            comment(why)
        );
        let _ = writeln!(
            t,
            "max_recovery_time = \"{}\"   # LiteLLM's cooldown does not grow on repeated failures",
            duration(*d)
        );
    }
    t
}

fn group_file(g: &GroupOut, source: &str) -> String {
    let mut t = String::new();
    let has_fallbacks = g.echelons.iter().any(|e| e.fallback.is_some());
    let _ = writeln!(
        t,
        "# Task group `{}`: LiteLLM model group `{}` ({} {}){}.",
        g.name,
        comment(&g.model_name),
        comment(source),
        lines_text(&g.lines),
        if has_fallbacks {
            ", then its fallback model groups in the order LiteLLM tries them"
        } else {
            ""
        }
    );
    t.push_str("fallback_strategy = \"echelon_down\"   # the echelons in order\n");
    t.push_str("\n[fallback]\n");
    let _ = writeln!(
        t,
        "max_attempts = {}   # {}",
        g.max_attempts,
        comment(&g.attempts_note)
    );
    if let Some(delay) = &g.retry_delay {
        let _ = writeln!(
            t,
            "retry_delay = \"{}\"   # {}",
            duration(delay.value),
            delay.key
        );
    }
    match g.deadline {
        Some(deadline) => {
            let _ = writeln!(
                t,
                "deadline = \"{}\"   # the longest attempt on the way; the default is {}",
                duration(deadline),
                duration(defaults::task_group::DEADLINE)
            );
        }
        None => {
            let _ = writeln!(
                t,
                "deadline = \"{}\"   # Echelon's default: LiteLLM has no overall deadline",
                duration(defaults::task_group::DEADLINE)
            );
        }
    }
    if g.content_filter_fallback {
        t.push_str(
            "content_filter_fallback = true   # content_policy_fallbacks: a refusal moves on down the ladder\n",
        );
    }
    for e in &g.echelons {
        let level = match e.level {
            Level::All => "every deployment".to_owned(),
            Level::Order(o) => format!("order {o}"),
            Level::Unordered => "the deployments without order".to_owned(),
        };
        match &e.fallback {
            Some(from) => {
                let _ = writeln!(
                    t,
                    "\n[echelons.{}]   # fallback: {}, {level}",
                    e.name,
                    comment(from)
                );
            }
            None => {
                let _ = writeln!(t, "\n[echelons.{}]   # {level}", e.name);
            }
        }
        let _ = writeln!(t, "models = [{}]", string(&format!("pool:{}", e.pool)));
        if let Some((d, why)) = &e.timeout {
            let _ = writeln!(t, "timeout = \"{}\"   # {}", duration(*d), comment(why));
        }
        if let Some((d, why)) = &e.stream_timeout {
            let _ = writeln!(
                t,
                "first_token_timeout = \"{}\"   # {}",
                duration(*d),
                comment(why)
            );
            let _ = writeln!(t, "idle_timeout = \"{}\"", duration(*d));
        }
        let _ = writeln!(
            t,
            "max_retries = {}   # {}",
            e.max_retries,
            comment(&e.retries_note)
        );
        let defaults: Vec<String> = [
            e.temperature.map(|v| format!("temperature = {}", float(v))),
            e.max_tokens.map(|v| format!("max_tokens = {v}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !defaults.is_empty() {
            let _ = writeln!(
                t,
                "defaults = {{ {} }}   # litellm_params, applied when the client sends none",
                defaults.join(", ")
            );
        }
    }
    t
}

fn wrappers_file(tree: &Tree, source: &str) -> String {
    let mut t = format!(
        "# The names clients send as `model`, one per LiteLLM model group of {} (and per\n# model_group_alias), so clients keep sending what they sent to LiteLLM.\n",
        comment(source)
    );
    for wrapper in &tree.wrappers {
        let _ = writeln!(t, "\n[wrappers.{}]", key(&wrapper.name));
        t.push_str("type = \"task_group\"\n");
        let _ = writeln!(t, "target = {}", string(&wrapper.group));
        let _ = writeln!(t, "description = {}", string(&wrapper.description));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back() {
        assert_eq!(duration(Duration::from_millis(500)), "500ms");
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_secs(600)), "10m");
        assert_eq!(duration(Duration::from_secs(7200)), "2h");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn variables_without_defaults_are_collected() {
        let mut w = Writer::default();
        w.value("${A}/x/${B:default}/$${C}");
        assert_eq!(w.variables.iter().collect::<Vec<_>>(), ["A"]);
    }

    #[test]
    fn keys_are_quoted_when_needed() {
        assert_eq!(key("gpt-4o"), "gpt-4o");
        assert_eq!(key("gpt-3.5-turbo"), "\"gpt-3.5-turbo\"");
    }
}
