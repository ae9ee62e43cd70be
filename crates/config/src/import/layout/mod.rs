//! From LiteLLM's deployments and router settings to Echelon's entities: providers with their
//! keys and models, one pool per `order` level of a model group, one task group per model group
//! (its levels as echelons, then its fallbacks in LiteLLM's order) and one wrapper per name
//! clients send.

mod deployments;
mod fallbacks;
mod groups;
mod settings;

use core::time::Duration;

use echelon_domain::spec::{ProviderKind, RotationStrategy};

use super::providers::Endpoint;
use super::source::{Deployment, Setting, Source, Text};
use super::{Finding, FindingKind};

use deployments::place;
use fallbacks::link_fallbacks;
use groups::{Names, group_by_name, plan_group};
use settings::{gateway, router_findings, wrappers};

/// LiteLLM's defaults, where Echelon writes them out (litellm 1.110 `constants.py`).
pub(crate) mod litellm_defaults {
    use core::time::Duration;

    /// `DEFAULT_MAX_RETRIES` (the router's `num_retries`).
    pub const NUM_RETRIES: u32 = 2;
    /// `DEFAULT_COOLDOWN_TIME_SECONDS`.
    pub const COOLDOWN: Duration = Duration::from_secs(5);
    /// `ROUTER_MAX_FALLBACKS`.
    pub const MAX_FALLBACKS: u32 = 5;
    /// `DEFAULT_HEALTH_CHECK_INTERVAL`.
    pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(300);
}

/// The largest `fallback.max_attempts` and `max_instance_attempts` the loader accepts.
const MAX_ATTEMPTS: u32 = 100;
/// The largest echelon `max_retries` the loader accepts.
const MAX_RETRIES: u32 = 10;

/// A whole tree, ready to be written out.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Tree {
    pub providers: Vec<ProviderOut>,
    pub pools: Vec<PoolOut>,
    pub groups: Vec<GroupOut>,
    pub wrappers: Vec<WrapperOut>,
    pub gateway: GatewayOut,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProviderOut {
    pub name: String,
    /// LiteLLM's provider name.
    pub litellm: String,
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    pub keys: Vec<KeyOut>,
    pub headers: Vec<(String, String)>,
    pub models: Vec<ModelOut>,
    pub note: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyOut {
    pub template: String,
    pub literal: bool,
    pub by_default: bool,
    /// Lines of the deployments using it.
    pub lines: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelOut {
    pub id: String,
    pub context_window: Option<u32>,
    /// Per million tokens: input, output.
    pub cost: Option<(f64, f64)>,
    pub lines: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PoolOut {
    pub name: String,
    pub model_name: String,
    pub level: Level,
    pub rotation: RotationStrategy,
    pub rotation_note: String,
    pub instances: Vec<InstanceOut>,
    pub max_instance_attempts: u32,
    pub attempts_note: String,
    pub breaker: BreakerOut,
    pub health: HealthOut,
}

/// An `order` level of a model group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// The group's only level (no `order` anywhere).
    All,
    Order(u32),
    /// Deployments without `order` in a group where others have one: LiteLLM only picks them
    /// when no ordered deployment is available.
    Unordered,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstanceOut {
    pub model: String,
    pub key: Option<usize>,
    pub weight: Option<u32>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub max_concurrency: Option<u32>,
    pub deployment: usize,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BreakerOut {
    pub failure_threshold: Option<(u32, String)>,
    pub recovery_time: Option<(Duration, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HealthOut {
    pub enabled: bool,
    pub interval: Option<Duration>,
    pub note: String,
    /// Failures in a row that take an instance out, when `allowed_fails` says.
    pub failure_threshold: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupOut {
    pub name: String,
    pub model_name: String,
    pub lines: Vec<usize>,
    /// Its own levels, then its fallback groups' levels in LiteLLM's order.
    pub echelons: Vec<EchelonOut>,
    pub max_attempts: u32,
    pub attempts_note: String,
    pub retry_delay: Option<Setting<Duration>>,
    pub deadline: Option<Duration>,
    /// Whether a content-policy refusal moves on (`content_policy_fallbacks` brought echelons).
    pub content_filter_fallback: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EchelonOut {
    pub name: String,
    pub pool: String,
    pub level: Level,
    pub timeout: Option<(Duration, String)>,
    pub stream_timeout: Option<(Duration, String)>,
    pub max_retries: u32,
    pub retries_note: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    /// For a fallback echelon: the model group it comes from and the rule that brought it.
    pub fallback: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrapperOut {
    pub name: String,
    pub group: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct GatewayOut {
    pub master_key: Option<Setting<Text>>,
    pub json_logs: bool,
    pub debug_logs: bool,
    pub redis_url: Option<Setting<String>>,
    pub request_timeout: Option<Duration>,
}

/// One mapped deployment.
struct Placed {
    deployment: Deployment,
    endpoint: Endpoint,
    /// Index into [`Tree::providers`].
    provider: usize,
    /// Key index, when the provider has several.
    key: Option<usize>,
}

/// Plans the tree of `source`.
pub(crate) fn plan(source: Source) -> Tree {
    let Source {
        deployments,
        router,
        proxy,
        findings,
    } = source;
    let mut tree = Tree {
        findings,
        ..Tree::default()
    };
    let placed = place(deployments, &mut tree);
    let groups = group_by_name(&placed);
    let names = Names::new(&groups);
    for (model_name, members) in &groups {
        plan_group(
            model_name, members, &placed, &router, &proxy, &names, &mut tree,
        );
    }
    let used = link_fallbacks(&router, &names, &mut tree);
    wrappers(&router, &groups, &names, &mut tree);
    gateway(proxy, &mut tree);
    router_findings(&router, used, &mut tree);
    tree
}

pub(crate) fn finding(
    line: usize,
    key: &str,
    kind: FindingKind,
    text: impl Into<String>,
) -> Finding {
    Finding {
        line: Some(line),
        key: key.to_owned(),
        kind,
        text: text.into(),
    }
}

/// `text` as an entry name: letters, digits, `-` and `_`, starting with a letter or digit.
pub(crate) fn entry_name(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_start_matches(['-', '_']).trim_end_matches('-');
    if out.is_empty() {
        "model".to_owned()
    } else {
        out.to_owned()
    }
}

/// `stem`, or `stem-2`, `stem-3`… when taken.
pub(crate) fn unique(stem: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(stem) {
        return stem.to_owned();
    }
    (2..)
        .map(|n| format!("{stem}-{n}"))
        .find(|n| !taken(n))
        .unwrap_or_else(|| stem.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_valid() {
        assert_eq!(entry_name("gpt-3.5-turbo"), "gpt-3-5-turbo");
        assert_eq!(entry_name("anthropic/claude:3"), "anthropic-claude-3");
        assert_eq!(entry_name("*"), "model");
        assert!(crate::topology::valid_name(&entry_name("_x.y"), false));
    }
}
