//! Wrappers (model groups and aliases), the gateway settings, and the report's findings about
//! the router settings.

use super::fallbacks::Used;
use super::groups::{Names, rotation};
use super::*;
use crate::import::emit::duration;
use crate::import::source::{Proxy, Router};
use crate::topology::valid_name;
use echelon_domain::defaults;

pub(super) fn wrappers(
    router: &Router,
    groups: &[(String, Vec<usize>)],
    names: &Names,
    tree: &mut Tree,
) {
    let aliased: Vec<&str> = router.aliases.iter().map(|a| a.value.0.as_str()).collect();
    for (model_name, _) in groups {
        let Some(group) = names.group(model_name) else {
            continue;
        };
        if aliased.contains(&model_name.as_str()) {
            continue; // LiteLLM resolves an alias before a model group of the same name.
        }
        let name = wrapper_name(model_name, group, tree);
        tree.wrappers.push(WrapperOut {
            name,
            group: group.to_owned(),
            description: format!("LiteLLM model group {model_name}"),
        });
    }
    for alias in &router.aliases {
        let (name, target) = &alias.value;
        match names.group(target) {
            Some(group) => {
                let wrapper = wrapper_name(name, group, tree);
                tree.wrappers.push(WrapperOut {
                    name: wrapper,
                    group: group.to_owned(),
                    description: format!("alias of {target} (model_group_alias)"),
                });
                tree.findings.push(finding(
                    alias.line,
                    &alias.key,
                    FindingKind::Mapped,
                    format!("wrapper `{name}` for task group {group}"),
                ));
            }
            None => tree.findings.push(finding(
                alias.line,
                &alias.key,
                FindingKind::NotMapped,
                format!("`{target}` is not a model group Echelon could map"),
            )),
        }
    }
}

/// The model group's name as a wrapper name, or the closest valid one (reported).
fn wrapper_name(model_name: &str, group: &str, tree: &mut Tree) -> String {
    let taken = |n: &str| tree.wrappers.iter().any(|w| w.name == n);
    if valid_name(model_name, true) && !taken(model_name) {
        return model_name.to_owned();
    }
    let name = unique(group, taken);
    let line = tree
        .groups
        .iter()
        .find(|g| g.name == group)
        .and_then(|g| g.lines.first().copied())
        .unwrap_or(1);
    tree.findings.push(finding(
        line,
        &format!("model_name {model_name}"),
        FindingKind::Warning,
        format!(
            "`{model_name}` is not a wrapper name Echelon accepts (letters, digits, `-`, `_`, `.`); clients send `{name}` instead"
        ),
    ));
    name
}

pub(super) fn gateway(proxy: Proxy, tree: &mut Tree) {
    let mut out = GatewayOut::default();
    let findings = &mut tree.findings;
    if let Some(key) = &proxy.master_key {
        let literal = key.value.is_literal();
        findings.push(finding(
            key.line,
            &key.key,
            if literal { FindingKind::Warning } else { FindingKind::Mapped },
            if literal {
                "[auth] admin_key and a client key in gateway.toml; a key written in the YAML was copied (not shown here): move it to an environment variable"
            } else {
                "[auth] admin_key, and a client key in api_keys (LiteLLM's master key also calls the API)"
            },
        ));
    }
    out.master_key = proxy.master_key;
    if let Some(s) = &proxy.json_logs {
        out.json_logs = s.value;
        findings.push(finding(
            s.line,
            &s.key,
            FindingKind::Mapped,
            "[telemetry] log_format = \"json\"",
        ));
    }
    if let Some(s) = &proxy.verbose {
        out.debug_logs = s.value;
        findings.push(finding(
            s.line,
            &s.key,
            FindingKind::Mapped,
            "[telemetry] log_level = \"debug\"",
        ));
    }
    if let Some(s) = &proxy.prometheus {
        findings.push(finding(
            s.line,
            &s.key,
            FindingKind::Mapped,
            "prometheus: Echelon serves Prometheus metrics at GET /metrics, always",
        ));
    }
    if let Some(redis) = &proxy.redis {
        let r = &redis.value;
        let password = r.password.as_ref().map(|p| {
            if p.is_literal() {
                findings.push(finding(
                    redis.line,
                    &redis.key,
                    FindingKind::Warning,
                    "a Redis password written in the YAML is not copied: the tree reads it from REDIS_PASSWORD",
                ));
                "${REDIS_PASSWORD}".to_owned()
            } else {
                p.template()
            }
        });
        let url = r.url.as_ref().map(Text::template).or_else(|| {
            let host = r.host.as_ref()?.template();
            let port = r
                .port
                .as_ref()
                .map_or_else(|| "6379".to_owned(), Text::template);
            let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
            Some(format!("redis://{auth}{host}:{port}"))
        });
        match url {
            Some(url) => {
                findings.push(finding(
                    redis.line,
                    &redis.key,
                    FindingKind::Warning,
                    "[state] redis_url, written commented out: this Echelon build serves backend = \"memory\" only, so limits and cooldowns count per replica until Redis support lands",
                ));
                out.redis_url = Some(Setting {
                    value: url,
                    line: redis.line,
                    key: redis.key.clone(),
                });
            }
            None => findings.push(finding(
                redis.line,
                &redis.key,
                FindingKind::NotMapped,
                "no redis host or url",
            )),
        }
    }
    let longest = tree.groups.iter().filter_map(|g| g.deadline).max();
    out.request_timeout = longest.filter(|d| *d > defaults::server::REQUEST_TIMEOUT);
    tree.gateway = out;
}

pub(super) fn router_findings(router: &Router, used: Used, tree: &mut Tree) {
    let groups = tree.groups.len();
    let mut out = Vec::new();
    let mut add = |line: usize, key: &str, kind: FindingKind, text: String| {
        out.push(finding(line, key, kind, text));
    };
    if let Some(s) = &router.routing_strategy {
        let (rotation, note) = rotation(router);
        let kind = if matches!(
            s.value.as_str(),
            "simple-shuffle" | "least-busy" | "latency-based-routing"
        ) {
            FindingKind::Mapped
        } else {
            FindingKind::Warning
        };
        add(
            s.line,
            &s.key,
            kind,
            format!(
                "rotation = \"{}\" in every pool ({note})",
                rotation.as_str()
            ),
        );
    }
    if let Some(s) = &router.num_retries {
        add(
            s.line,
            &s.key,
            FindingKind::Mapped,
            format!(
                "{} attempts per model group: pools try up to {} instances, a single-instance echelon retries it {} times, and each group's max_attempts counts its fallbacks too",
                s.value + 1,
                s.value + 1,
                s.value.min(MAX_RETRIES)
            ),
        );
    }
    if let Some(s) = &router.timeout {
        add(
            s.line,
            &s.key,
            FindingKind::Mapped,
            format!("timeout = \"{}\" in every echelon", duration(s.value)),
        );
    }
    if let Some(s) = &router.stream_timeout {
        add(
            s.line,
            &s.key,
            FindingKind::Mapped,
            format!(
                "first_token_timeout and idle_timeout = \"{}\" in every echelon",
                duration(s.value)
            ),
        );
    }
    if let Some(s) = &router.allowed_fails {
        add(
            s.line,
            &s.key,
            FindingKind::Warning,
            format!(
                "[circuit_breaker] failure_threshold = {} in every pool; LiteLLM counts failures per minute, Echelon in a row",
                s.value.saturating_add(1)
            ),
        );
    }
    if let Some(s) = &router.cooldown_time {
        if s.value.is_zero() {
            add(
                s.line,
                &s.key,
                FindingKind::NotMapped,
                "0 turns LiteLLM's cooldowns off; Echelon always runs breakers (its defaults apply)".to_owned(),
            );
        } else {
            add(
                s.line,
                &s.key,
                FindingKind::Mapped,
                format!(
                    "[circuit_breaker] recovery_time = \"{}\" in every pool",
                    duration(s.value)
                ),
            );
        }
    }
    if let Some(s) = &router.retry_after {
        add(
            s.line,
            &s.key,
            FindingKind::Mapped,
            format!(
                "[fallback] retry_delay = \"{}\" in every task group",
                duration(s.value)
            ),
        );
    }
    if let Some(s) = &router.max_fallbacks {
        add(
            s.line,
            &s.key,
            FindingKind::Mapped,
            format!("at most {} fallback groups per chain", s.value),
        );
    }
    for (setting, what, any) in [
        (&router.fallbacks, "fallbacks", used.fallbacks),
        (
            &router.context_window_fallbacks,
            "context_window_fallbacks",
            used.context,
        ),
        (
            &router.content_policy_fallbacks,
            "content_policy_fallbacks",
            used.content,
        ),
    ] {
        if let Some(s) = setting.as_ref().filter(|_| any) {
            let text = match what {
                "fallbacks" => {
                    "each group's echelons are followed by its fallback groups' echelons, depth first as LiteLLM tries them"
                }
                "context_window_fallbacks" => {
                    "appended after the regular fallbacks: after a context-length error Echelon moves only to a larger known context_window; other errors may reach them too"
                }
                _ => {
                    "appended last, with `[fallback] content_filter_fallback = true`: a content-policy refusal leaves the echelon that refused for the next one on the ladder (a regular fallback first, if there is one); other errors may reach them too"
                }
            };
            add(
                s.line,
                &s.key,
                if what == "fallbacks" {
                    FindingKind::Mapped
                } else {
                    FindingKind::Warning
                },
                text.to_owned(),
            );
        }
    }
    if let Some(s) = &router.default_fallbacks {
        add(
            s.line,
            &s.key,
            FindingKind::Mapped,
            "fallbacks of every group without its own".to_owned(),
        );
    }
    if let Some(s) = &router.default_max_parallel {
        add(
            s.line,
            &s.key,
            FindingKind::Mapped,
            format!(
                "max_concurrency = {} on instances without max_parallel_requests",
                s.value
            ),
        );
    }
    if let Some(s) = &router.pre_call_checks {
        add(
            s.line,
            &s.key,
            FindingKind::Mapped,
            "Echelon always checks rate limits, concurrency and (after a context-length error) context windows before a call".to_owned(),
        );
    }
    let untimed = tree
        .groups
        .iter()
        .flat_map(|g| &g.echelons)
        .any(|e| e.timeout.is_none());
    if untimed && groups > 0 {
        out.push(Finding {
            line: None,
            key: "timeout".to_owned(),
            kind: FindingKind::Warning,
            text: format!(
                "none set: LiteLLM waits up to 6000 s for a call by default, Echelon {} per attempt within a {} deadline",
                duration(defaults::echelon::TIMEOUT),
                duration(defaults::task_group::DEADLINE)
            ),
        });
    }
    tree.findings.extend(out);
}
