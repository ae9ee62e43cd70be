//! Reading a LiteLLM proxy configuration: the deployments of `model_list` and the router, proxy
//! and library settings Echelon has an equivalent for, with a finding for every key it has none
//! for (and why).

mod deployments;
mod settings;

use core::time::Duration;

use super::yaml::{Entry, Value, Yaml};
use super::{Finding, FindingKind};

use deployments::read_deployment;
use settings::{merge_router, read_general, read_library, read_router, router_redis};

/// A string as LiteLLM reads it: written literally, or `os.environ/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Text {
    Literal(String),
    Env(String),
}

impl Text {
    /// The text of a scalar; `None` for a collection, a null or an empty string.
    pub fn of(node: &Yaml) -> Option<Self> {
        let text = node.text()?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return None;
        }
        Some(match trimmed.strip_prefix("os.environ/") {
            Some(name) => Self::Env(name.trim().to_owned()),
            None => Self::Literal(trimmed.to_owned()),
        })
    }

    /// The value as an Echelon string template: `${NAME}`, or the literal text with `${`
    /// escaped so the loader does not read it as a variable.
    pub fn template(&self) -> String {
        match self {
            Self::Env(name) => format!("${{{name}}}"),
            Self::Literal(text) => text.replace("${", "$${"),
        }
    }

    /// Like [`Self::template`], with `default` when the variable is unset (as LiteLLM falls back
    /// to a default when `os.environ/NAME` is unset).
    pub fn template_or(&self, default: &str) -> String {
        match self {
            Self::Env(name) => format!("${{{name}:{default}}}"),
            Self::Literal(_) => self.template(),
        }
    }

    pub fn is_literal(&self) -> bool {
        matches!(self, Self::Literal(_))
    }
}

/// A value with the key path and line it was read from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Setting<T> {
    pub value: T,
    pub line: usize,
    pub key: String,
}

/// One entry of `model_list`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Deployment {
    /// Its index in `model_list`.
    pub index: usize,
    pub line: usize,
    pub model_name: String,
    /// `litellm_params.model` as written.
    pub model: String,
    pub custom_provider: Option<String>,
    pub api_base: Option<Text>,
    pub api_key: Option<Setting<Text>>,
    pub api_version: Option<Text>,
    /// Extra headers (`organization` becomes `OpenAI-Organization`).
    pub headers: Vec<(String, Text)>,
    /// Limits, from `litellm_params`, the entry itself or `model_info`.
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    /// `litellm_params.rpm` and `.tpm` alone: what simple-shuffle weighs by.
    pub params_rpm: Option<u32>,
    pub params_tpm: Option<u32>,
    pub max_parallel: Option<u32>,
    pub weight: Option<f64>,
    pub order: Option<u32>,
    pub timeout: Option<Duration>,
    pub stream_timeout: Option<Duration>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub context_window: Option<u32>,
    /// Price per token, as LiteLLM writes it.
    pub input_cost: Option<f64>,
    pub output_cost: Option<f64>,
    pub mode: Option<String>,
    pub id: Option<String>,
}

impl Deployment {
    /// `model_list[3] (gpt-4o)`.
    pub fn label(&self) -> String {
        format!("model_list[{}]", self.index)
    }
}

/// A fallback rule: `{"from": ["to", ...]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub from: String,
    pub to: Vec<String>,
    pub line: usize,
}

/// The router's settings, from `router_settings` or else `litellm_settings`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Router {
    pub routing_strategy: Option<Setting<String>>,
    pub num_retries: Option<Setting<u32>>,
    pub timeout: Option<Setting<Duration>>,
    pub stream_timeout: Option<Setting<Duration>>,
    pub allowed_fails: Option<Setting<u32>>,
    pub cooldown_time: Option<Setting<Duration>>,
    pub retry_after: Option<Setting<Duration>>,
    pub max_fallbacks: Option<Setting<u32>>,
    pub fallbacks: Option<Setting<Vec<Rule>>>,
    pub context_window_fallbacks: Option<Setting<Vec<Rule>>>,
    pub content_policy_fallbacks: Option<Setting<Vec<Rule>>>,
    pub default_fallbacks: Option<Setting<Vec<String>>>,
    pub default_max_parallel: Option<Setting<u32>>,
    pub pre_call_checks: Option<Setting<bool>>,
    /// `model_group_alias`: alias → model group.
    pub aliases: Vec<Setting<(String, String)>>,
}

/// Redis connection settings (`router_settings.redis_*` or `general_settings.coordination_redis`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Redis {
    pub url: Option<Text>,
    pub host: Option<Text>,
    pub port: Option<Text>,
    pub password: Option<Text>,
}

/// Proxy and logging settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Proxy {
    pub master_key: Option<Setting<Text>>,
    pub redis: Option<Setting<Redis>>,
    pub health_checks: Option<Setting<bool>>,
    pub health_check_interval: Option<Setting<Duration>>,
    pub json_logs: Option<Setting<bool>>,
    pub verbose: Option<Setting<bool>>,
    /// `prometheus` among the callbacks.
    pub prometheus: Option<Setting<()>>,
}

/// Everything read from the file.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Source {
    pub deployments: Vec<Deployment>,
    pub router: Router,
    pub proxy: Proxy,
    pub findings: Vec<Finding>,
}

impl Source {
    pub fn finding(
        &mut self,
        line: usize,
        key: impl Into<String>,
        kind: FindingKind,
        text: impl Into<String>,
    ) {
        self.findings.push(Finding {
            line: Some(line),
            key: key.into(),
            kind,
            text: text.into(),
        });
    }

    fn not_mapped(&mut self, entry: &Entry, key: &str, reason: &str) {
        self.finding(entry.line, key, FindingKind::NotMapped, reason);
    }
}

/// Reads a LiteLLM configuration document (already known to be a mapping).
pub(crate) fn read(doc: &Yaml) -> Source {
    let mut source = Source::default();
    let mut library = Router::default();
    for entry in doc.entries() {
        let key = entry.key.as_str();
        match key {
            "model_list" => {
                for (index, item) in entry.value.items().iter().enumerate() {
                    if let Some(deployment) = read_deployment(index, item, &mut source) {
                        source.deployments.push(deployment);
                    }
                }
            }
            "router_settings" => read_router(entry, &mut source),
            "litellm_settings" => read_library(entry, &mut library, &mut source),
            "general_settings" => read_general(entry, &mut source),
            "environment_variables" => {
                let names: Vec<&str> = entry
                    .value
                    .entries()
                    .iter()
                    .map(|e| e.key.as_str())
                    .collect();
                source.not_mapped(
                    entry,
                    key,
                    &format!(
                        "LiteLLM sets these variables itself; Echelon reads its own environment, so export {} before starting it (values are not copied)",
                        if names.is_empty() { "them".to_owned() } else { names.join(", ") }
                    ),
                );
            }
            _ => {
                let reason = section_reason(key);
                source.not_mapped(entry, key, reason);
            }
        }
    }
    merge_router(&mut source, library);
    router_redis(doc, &mut source);
    source
}

fn section_reason(key: &str) -> &'static str {
    match key {
        "guardrails" | "policies" | "policy_attachments" => {
            "guardrails and content policies run inside LiteLLM; Echelon has none (run them in front of or behind the gateway)"
        }
        "mcp_servers" | "mcp_tools" | "mcp_settings" => {
            "LiteLLM's MCP gateway has no Echelon equivalent"
        }
        "search_tools" | "sandbox_tools" => {
            "tools LiteLLM runs for the model; Echelon routes model calls only"
        }
        "finetune_settings" | "files_settings" | "assistant_settings" | "batch_settings" => {
            "fine-tuning, files, assistants and batch APIs are not served by Echelon"
        }
        "credential_list" => {
            "named credentials: write each key into its provider file (api_key = \"${VAR}\")"
        }
        "include" => {
            "LiteLLM merges the included files; their deployments are not imported (import a merged file)"
        }
        _ => "a LiteLLM proxy section with no Echelon equivalent",
    }
}

/// Where a setting was read.
struct At<'a> {
    line: usize,
    key: &'a str,
}

impl At<'_> {
    fn of<T>(&self, value: T) -> Setting<T> {
        Setting {
            value,
            line: self.line,
            key: self.key.to_owned(),
        }
    }
}

fn bool_setting(entry: &Entry, key: &str) -> Option<Setting<bool>> {
    entry.value.boolean().map(|value| Setting {
        value,
        line: entry.line,
        key: key.to_owned(),
    })
}

/// A string value, or `os.environ/NAME`; a name Echelon cannot read as a variable is reported.
fn env_text(entry: &Entry, key: &str, source: &mut Source) -> Option<Text> {
    let text = Text::of(&entry.value)?;
    if let Text::Env(name) = &text {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            source.finding(
                entry.line,
                key,
                FindingKind::NotMapped,
                format!("`os.environ/{name}`: `{name}` is not a variable name Echelon can read (letters, digits and `_`)"),
            );
            return None;
        }
    }
    Some(text)
}

/// A whole number ≥ 1 (`20_000` included, as PyYAML reads it); anything else is reported.
fn count(entry: &Entry, key: &str, source: &mut Source) -> Option<u32> {
    let number = entry.value.number();
    match number {
        Some(n) if n >= 1.0 && n <= f64::from(u32::MAX) && n.fract() == 0.0 => Some(n as u32),
        Some(n) if n == 0.0 && key.ends_with("num_retries") => Some(0),
        _ => {
            if entry.value.value != Value::Null {
                source.finding(
                    entry.line,
                    key,
                    FindingKind::NotMapped,
                    "not a whole number of at least 1",
                );
            }
            None
        }
    }
}

/// A number > 0.
fn positive(entry: &Entry, key: &str, source: &mut Source) -> Option<f64> {
    match entry.value.number() {
        Some(n) if n > 0.0 => Some(n),
        _ => {
            source.finding(
                entry.line,
                key,
                FindingKind::NotMapped,
                "not a number above 0",
            );
            None
        }
    }
}

/// Seconds > 0, as LiteLLM writes timeouts.
fn seconds(entry: &Entry, key: &str, source: &mut Source) -> Option<Duration> {
    match seconds_or_zero(entry, key, source) {
        Some(d) if d.is_zero() => {
            source.finding(
                entry.line,
                key,
                FindingKind::NotMapped,
                "0 seconds is not a usable timeout",
            );
            None
        }
        other => other,
    }
}

/// Seconds ≥ 0.
fn seconds_or_zero(entry: &Entry, key: &str, source: &mut Source) -> Option<Duration> {
    match entry.value.number() {
        Some(n) if (0.0..1e9).contains(&n) => {
            Some(Duration::from_millis((n * 1000.0).round() as u64))
        }
        _ => {
            if entry.value.value != Value::Null {
                source.finding(
                    entry.line,
                    key,
                    FindingKind::NotMapped,
                    "not a number of seconds",
                );
            }
            None
        }
    }
}

/// `["a", "b"]`, a single name, or `[{"model": "a"}]` (client-side style).
fn names(node: &Yaml) -> Vec<String> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| i.text().or_else(|| i.get("model").and_then(Yaml::text)))
            .collect(),
        _ => node.text().into_iter().collect(),
    }
}

/// `[{"a": ["b", "c"]}, {"d": ["e"]}]` (or one mapping of several).
fn rules(node: &Yaml) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut add = |map: &Yaml| {
        for entry in map.entries() {
            out.push(Rule {
                from: entry.key.clone(),
                to: names(&entry.value),
                line: entry.line,
            });
        }
    };
    match &node.value {
        Value::Seq(items) => items.iter().for_each(&mut add),
        Value::Map(_) => add(node),
        _ => {}
    }
    out
}
