//! Phase 2 for the `llms/` tree: providers, pools, task groups and wrappers turned into the
//! domain's [`Topology`], with every reference checked, reference cycles found, and — in lenient
//! mode — broken entries dropped together with everything that depends on them.
//!
//! It runs in three steps. *Local*: each entry is converted on its own into a draft (its
//! references still names). *Link*: references are checked against every declared entry, pool
//! instances are expanded and cycles are searched; each problem is charged to the entry that
//! holds the reference, and each reference is an edge of the dependency graph. *Assemble*: the
//! drafts that survive become domain specs.

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use echelon_domain::name::{
    EchelonName, GroupName, InstanceId, ModelName, ModelRef, PoolName, ProviderName, WrapperName,
};
use echelon_domain::secret::Secret;
use echelon_domain::spec::{
    BreakerPolicy, Cost, EchelonSpec, EchelonTarget, FailureRate, FallbackStrategy, GroupFallback,
    GroupRef, HealthCheckSpec, HealthPolicy, InstanceSpec, Limits, MockBehaviour, ModelSpec,
    PoolFallback, PoolFallbackStrategy, PoolSpec, ProbeKind, ProviderKind, ProviderSpec,
    RateAlgorithm, RequestDefaults, RotationStrategy, TaskGroupSpec, Topology, WrapperSpec,
    WrapperTarget,
};

use crate::de::{Here, Val, from_node};
use crate::diagnostic::{Diagnostic, DiagnosticKind, Location, Severity, did_you_mean};
use crate::env::Env;
use crate::files::Files;
use crate::gateway::{http_url, missing, non_empty_secret};
use crate::interpolate::interpolate;
use crate::node::KeyPath;
use crate::raw::{
    RawBreaker, RawEchelon, RawGroup, RawHealthCheck, RawInstance, RawModel, RawPool, RawProvider,
    RawWrapper, RawWrapperFile,
};
use crate::registry::{EntryFile, Kind, Registry, ValidationMode};
use crate::value::{Choice, OptVal, Range, choice_from_val};

/// What a wrapper points at, as written in `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WrapperKind {
    TaskGroup,
    Pool,
    Direct,
}

impl Choice for WrapperKind {
    const WHAT: &'static str = "wrapper type";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::TaskGroup, "task_group"),
            (Self::Pool, "pool"),
            (Self::Direct, "direct"),
        ]
    }
}

impl Choice for ProviderKind {
    const WHAT: &'static str = "provider kind";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::Openai, "openai"),
            (Self::Anthropic, "anthropic"),
            (Self::Gemini, "gemini"),
            (Self::Mock, "mock"),
        ]
    }
}

impl Choice for RotationStrategy {
    const WHAT: &'static str = "rotation strategy";
    fn names() -> &'static [(Self, &'static str)] {
        &Self::ALL
    }
}

impl Choice for ProbeKind {
    const WHAT: &'static str = "probe";
    fn names() -> &'static [(Self, &'static str)] {
        &[(Self::Models, "models"), (Self::Completion, "completion")]
    }
}

impl Choice for PoolFallbackStrategy {
    const WHAT: &'static str = "pool fallback strategy";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::InstanceRotation, "instance_rotation"),
            (Self::PoolFallback, "pool_fallback"),
        ]
    }
}

impl Choice for RateAlgorithm {
    const WHAT: &'static str = "rate limit algorithm";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::TokenBucket, "token_bucket"),
            (Self::SlidingWindow, "sliding_window"),
        ]
    }
}

impl Choice for FallbackStrategy {
    const WHAT: &'static str = "fallback strategy";
    fn names() -> &'static [(Self, &'static str)] {
        &[
            (Self::EchelonDown, "echelon_down"),
            (Self::ModelRotate, "model_rotate"),
            (Self::ProviderFailover, "provider_failover"),
            (Self::GroupFallback, "group_fallback"),
        ]
    }
}

choice_from_val!(
    WrapperKind,
    ProviderKind,
    RotationStrategy,
    ProbeKind,
    PoolFallbackStrategy,
    RateAlgorithm,
    FallbackStrategy
);

/// Defaults of optional settings (documented in docs/configuration.md).
pub(crate) mod defaults {
    use core::time::Duration;

    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
    pub const MAX_INSTANCE_ATTEMPTS: u32 = 3;
    pub const MAX_ATTEMPTS: u32 = 5;
    pub const RETRY_DELAY: Duration = Duration::from_millis(250);
    pub const DEADLINE: Duration = Duration::from_secs(180);
    pub const TIMEOUT: Duration = Duration::from_secs(60);
    pub const FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    pub const MAX_RETRIES: u32 = 1;
    pub const RETRY_AFTER_MAX_WAIT: Duration = Duration::from_secs(5);
    pub const FAILURE_RATE_WINDOW: Duration = Duration::from_secs(60);
    pub const FAILURE_RATE_MIN_CALLS: u32 = 10;
}

/// The default base URL of a provider kind.
pub(crate) fn default_base_url(kind: ProviderKind, name: &str) -> String {
    match kind {
        ProviderKind::Openai => "https://api.openai.com/v1".to_owned(),
        ProviderKind::Anthropic => "https://api.anthropic.com/v1".to_owned(),
        ProviderKind::Gemini => "https://generativelanguage.googleapis.com/v1beta".to_owned(),
        ProviderKind::Mock => format!("mock://{name}"),
    }
}

const POSITIVE: Range<Duration> = Range::AtLeast(Duration::from_millis(1));

/// An entry that can be dropped on its own in lenient mode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Entity {
    Provider(String),
    Strategy(String),
    Pool(String),
    Group(String),
    WrapperFile(String),
    Wrapper(String),
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Provider(n) => write!(f, "provider `{n}`"),
            Self::Strategy(n) => write!(f, "strategy `{n}`"),
            Self::Pool(n) => write!(f, "pool `{n}`"),
            Self::Group(n) => write!(f, "task group `{n}`"),
            Self::WrapperFile(n) => write!(f, "the wrappers of `{n}`"),
            Self::Wrapper(n) => write!(f, "wrapper `{n}`"),
        }
    }
}

/// The problems, location and dependencies of one entry.
#[derive(Debug, Default)]
struct Slot {
    diagnostics: Vec<Diagnostic>,
    location: Option<Location>,
    deps: BTreeSet<Entity>,
}

/// A reference as written, with where it was written.
#[derive(Debug, Clone)]
struct Ref<T> {
    value: T,
    location: Option<Location>,
    key: String,
}

impl<T> Ref<T> {
    fn diagnostic(&self, kind: DiagnosticKind, reason: String, help: Option<String>) -> Diagnostic {
        Diagnostic::error(kind, reason)
            .at(self.location.clone())
            .key(self.key.clone())
            .maybe_help(help)
    }
}

#[derive(Debug)]
struct ProviderDraft {
    spec: ProviderSpec,
    models: BTreeMap<String, ModelSpec>,
}

#[derive(Debug)]
struct InstanceDraft {
    model: Ref<ModelRef>,
    key: Option<Ref<u16>>,
    weight: u32,
    limits: Limits,
}

#[derive(Debug)]
struct PoolDraft {
    here: Here,
    rotation: RotationStrategy,
    entries: Vec<InstanceDraft>,
    task_groups: Vec<Ref<GroupRef>>,
    health: HealthPolicy,
    health_check: HealthCheckSpec,
    breaker: BreakerPolicy,
    strategy: PoolFallbackStrategy,
    max_instance_attempts: u32,
    fallback_pools: Vec<Ref<PoolName>>,
    limits: Limits,
    rate_algorithm: RateAlgorithm,
}

#[derive(Debug)]
struct EchelonDraft {
    spec: EchelonSpec,
    refs: Vec<Ref<EchelonTarget>>,
}

#[derive(Debug)]
struct GroupDraft {
    strategy: FallbackStrategy,
    breaker: BreakerPolicy,
    fallback_groups: Vec<Ref<GroupRef>>,
    max_attempts: u32,
    retry_delay: Duration,
    deadline: Duration,
    echelons: Vec<EchelonDraft>,
}

#[derive(Debug)]
struct WrapperDraft {
    name: String,
    kind: WrapperKind,
    target: Ref<String>,
    description: Option<String>,
}

/// The outcome of phase 2.
#[derive(Debug)]
pub(crate) struct Built {
    pub topology: Topology,
    /// Errors that refuse the tree (always empty in lenient mode).
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

/// Everything declared, for reference checks.
struct Declared<'a> {
    providers: BTreeMap<String, Option<&'a ProviderDraft>>,
    pools: BTreeMap<String, Option<&'a PoolDraft>>,
    groups: BTreeMap<String, Option<&'a GroupDraft>>,
    disabled: BTreeMap<Kind, BTreeSet<String>>,
}

/// Builds the topology of the `llms/` tree.
pub(crate) fn build(
    files: &mut Files,
    registry: &Registry,
    env: &dyn Env,
    mode: ValidationMode,
) -> Built {
    let strategies = registry.strategies();
    let mut slots: BTreeMap<Entity, Slot> = BTreeMap::new();
    let mut disabled: BTreeMap<Kind, BTreeSet<String>> = BTreeMap::new();
    for kind in Kind::ALL {
        for entry in registry.files(kind).iter().filter(|e| !e.enabled) {
            disabled.entry(kind).or_default().insert(entry.name.clone());
        }
    }

    // Strategy files are checked even when unused, so a broken preset is found before use.
    for entry in enabled(registry, Kind::Strategies) {
        let slot = slot(&mut slots, Entity::Strategy(entry.name.clone()), entry);
        if check_name(&entry.name, "strategy", entry, false, &mut slot.diagnostics) {
            files.resolve(
                &entry.rel,
                entry.reference.clone(),
                &strategies,
                &mut slot.diagnostics,
            );
        }
    }

    let mut providers: BTreeMap<String, Option<ProviderDraft>> = BTreeMap::new();
    for entry in enabled(registry, Kind::Providers) {
        let slot = slot(&mut slots, Entity::Provider(entry.name.clone()), entry);
        let out = &mut slot.diagnostics;
        let draft = check_name(&entry.name, "provider", entry, false, out)
            .then(|| {
                read::<RawProvider>(
                    files,
                    entry,
                    &["providers", &entry.name],
                    &strategies,
                    env,
                    out,
                )
            })
            .flatten()
            .map(|raw| provider(&entry.name, raw, out));
        providers.insert(entry.name.clone(), draft);
    }

    let mut pools: BTreeMap<String, Option<PoolDraft>> = BTreeMap::new();
    for entry in enabled(registry, Kind::Pools) {
        let slot = slot(&mut slots, Entity::Pool(entry.name.clone()), entry);
        let out = &mut slot.diagnostics;
        let draft = check_name(&entry.name, "pool", entry, false, out)
            .then(|| read::<RawPool>(files, entry, &["pools", &entry.name], &strategies, env, out))
            .flatten()
            .map(|raw| pool(raw, out));
        pools.insert(entry.name.clone(), draft);
    }

    let mut groups: BTreeMap<String, Option<GroupDraft>> = BTreeMap::new();
    for entry in enabled(registry, Kind::TaskGroups) {
        let slot = slot(&mut slots, Entity::Group(entry.name.clone()), entry);
        let out = &mut slot.diagnostics;
        let draft = check_name(&entry.name, "task group", entry, false, out)
            .then(|| {
                read::<RawGroup>(
                    files,
                    entry,
                    &["task_groups", &entry.name],
                    &strategies,
                    env,
                    out,
                )
            })
            .flatten()
            .map(|raw| group(&entry.name, &raw, out));
        groups.insert(entry.name.clone(), draft);
    }

    let mut wrappers: Vec<(Entity, WrapperDraft)> = Vec::new();
    let mut wrapper_sites: BTreeMap<String, Option<Location>> = BTreeMap::new();
    for entry in enabled(registry, Kind::Wrappers) {
        let file_entity = Entity::WrapperFile(entry.rel.clone());
        let slot = slot(&mut slots, file_entity, entry);
        let Some(raw) =
            read::<RawWrapperFile>(files, entry, &[], &strategies, env, &mut slot.diagnostics)
        else {
            continue;
        };
        if raw.wrappers.is_none() {
            slot.diagnostics.push(
                Diagnostic::warning(
                    DiagnosticKind::Unused,
                    format!("`{}` defines no wrappers", entry.rel),
                )
                .at(raw.here.location.clone())
                .help("define them as [wrappers.NAME] tables"),
            );
        }
        for (name, raw) in raw.wrappers.unwrap_or_default() {
            let entity = Entity::Wrapper(name.clone());
            let mut out = Vec::new();
            if !valid_name(&name, true) {
                out.push(
                    Diagnostic::error(
                        DiagnosticKind::InvalidValue,
                        format!("`{name}` is not a valid wrapper name"),
                    )
                    .at(raw.here.location.clone())
                    .key(raw.here.key.clone())
                    .help("use letters, digits, `-`, `_` and `.`, starting with a letter or digit"),
                );
            }
            if let Some(first) = wrapper_sites.get(&name) {
                out.push(
                    Diagnostic::error(
                        DiagnosticKind::Duplicate,
                        format!("wrapper `{name}` is defined twice"),
                    )
                    .at(raw.here.location.clone())
                    .key(raw.here.key.clone())
                    .maybe_help(first.as_ref().map(|l| format!("first defined at {l}"))),
                );
            } else {
                wrapper_sites.insert(name.clone(), raw.here.location.clone());
            }
            let draft = wrapper(&name, &raw, &mut out);
            let wrapper_slot = slots.entry(entity.clone()).or_default();
            if wrapper_slot.location.is_none() {
                wrapper_slot.location = draft.as_ref().and_then(|d| d.target.location.clone());
            }
            wrapper_slot.diagnostics.extend(out);
            if let Some(draft) = draft {
                wrappers.push((entity, draft));
            }
        }
    }

    // Link.
    let declared = Declared {
        providers: providers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_ref()))
            .collect(),
        pools: pools.iter().map(|(k, v)| (k.clone(), v.as_ref())).collect(),
        groups: groups
            .iter()
            .map(|(k, v)| (k.clone(), v.as_ref()))
            .collect(),
        disabled,
    };
    let mut instances: BTreeMap<String, Vec<InstanceSpec>> = BTreeMap::new();
    for (name, draft) in &pools {
        let Some(draft) = draft else { continue };
        let slot = slots
            .get_mut(&Entity::Pool(name.clone()))
            .expect("every pool has a slot");
        instances.insert(name.clone(), link_pool(name, draft, &declared, slot));
    }
    for (name, draft) in &groups {
        let Some(draft) = draft else { continue };
        let slot = slots
            .get_mut(&Entity::Group(name.clone()))
            .expect("every group has a slot");
        link_group(draft, &declared, slot);
    }
    for (entity, draft) in &wrappers {
        let slot = slots.get_mut(entity).expect("every wrapper has a slot");
        link_wrapper(draft, &declared, slot);
    }
    let pool_edges = pools
        .iter()
        .filter_map(|(name, d)| {
            Some((
                name.clone(),
                d.as_ref()?
                    .fallback_pools
                    .iter()
                    .map(|r| (r.value.to_string(), r.clone()))
                    .collect(),
            ))
        })
        .collect();
    for cycle in find_cycles(&pool_edges) {
        report_cycle(&cycle, "fallback pools", Entity::Pool, &mut slots);
    }
    let group_edges = groups
        .iter()
        .filter_map(|(name, d)| {
            Some((
                name.clone(),
                d.as_ref()?
                    .fallback_groups
                    .iter()
                    .map(|r| (r.value.group.to_string(), r.clone()))
                    .collect(),
            ))
        })
        .collect();
    for cycle in find_cycles(&group_edges) {
        report_cycle(&cycle, "fallback groups", Entity::Group, &mut slots);
    }

    // Decide what loads.
    // An entry without a draft is broken even when its problem was reported by another entry
    // (an inheritance cycle is reported once, by the first entry that finds it).
    let unread = providers
        .iter()
        .filter(|(_, d)| d.is_none())
        .map(|(n, _)| Entity::Provider(n.clone()))
        .chain(
            pools
                .iter()
                .filter(|(_, d)| d.is_none())
                .map(|(n, _)| Entity::Pool(n.clone())),
        )
        .chain(
            groups
                .iter()
                .filter(|(_, d)| d.is_none())
                .map(|(n, _)| Entity::Group(n.clone())),
        );
    let broken: BTreeSet<Entity> = slots
        .iter()
        .filter(|(_, s)| s.diagnostics.iter().any(|d| d.severity == Severity::Error))
        .map(|(e, _)| e.clone())
        .chain(unread)
        .collect();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut dropped: BTreeMap<Entity, Option<Entity>> = BTreeMap::new();
    match mode {
        ValidationMode::Strict => {
            for slot in slots.values_mut() {
                for d in slot.diagnostics.drain(..) {
                    match d.severity {
                        Severity::Error => errors.push(d),
                        Severity::Warning => warnings.push(d),
                    }
                }
            }
        }
        ValidationMode::Lenient => {
            for entity in &broken {
                dropped.insert(entity.clone(), None);
            }
            loop {
                let newly: Vec<(Entity, Entity)> = slots
                    .iter()
                    .filter(|(e, _)| !dropped.contains_key(e))
                    .filter_map(|(e, s)| {
                        s.deps
                            .iter()
                            .find(|d| dropped.contains_key(d))
                            .map(|d| (e.clone(), d.clone()))
                    })
                    .collect();
                if newly.is_empty() {
                    break;
                }
                for (entity, cause) in newly {
                    dropped.insert(entity, Some(cause));
                }
            }
            for (entity, slot) in &mut slots {
                for mut d in slot.diagnostics.drain(..) {
                    d.severity = Severity::Warning;
                    warnings.push(d);
                }
                if let Some(cause) = dropped.get(entity) {
                    let reason = match cause {
                        None => format!("dropped {entity} because of the problems reported for it"),
                        Some(cause) => {
                            format!("dropped {entity}: it depends on {cause}, which was dropped")
                        }
                    };
                    warnings.push(
                        Diagnostic::warning(DiagnosticKind::Dropped, reason)
                            .at(slot.location.clone()),
                    );
                }
            }
        }
    }
    let alive = |entity: &Entity| !dropped.contains_key(entity);

    // Assemble.
    let mut topology = Topology::default();
    if errors.is_empty() {
        for (name, draft) in providers {
            let Some(draft) = draft else { continue };
            if !alive(&Entity::Provider(name)) {
                continue;
            }
            for model in draft.models.into_values() {
                topology.models.insert(model.model.clone(), model);
            }
            topology
                .providers
                .insert(draft.spec.name.clone(), draft.spec);
        }
        for (name, draft) in pools {
            let Some(draft) = draft else { continue };
            if !alive(&Entity::Pool(name.clone())) {
                continue;
            }
            let spec = PoolSpec {
                name: PoolName::new(name.as_str()),
                rotation: draft.rotation,
                instances: instances.remove(&name).unwrap_or_default(),
                health: draft.health,
                health_check: draft.health_check,
                breaker: draft.breaker,
                fallback: PoolFallback {
                    strategy: draft.strategy,
                    max_instance_attempts: draft.max_instance_attempts,
                    fallback_pools: draft.fallback_pools.into_iter().map(|r| r.value).collect(),
                },
                limits: draft.limits,
                rate_algorithm: draft.rate_algorithm,
            };
            topology.pools.insert(spec.name.clone(), spec);
        }
        for (name, draft) in groups {
            let Some(draft) = draft else { continue };
            if !alive(&Entity::Group(name.clone())) {
                continue;
            }
            let mut echelons: Vec<EchelonSpec> =
                draft.echelons.into_iter().map(|e| e.spec).collect();
            echelons.sort_by_key(|e| e.priority);
            let spec = TaskGroupSpec {
                name: GroupName::new(name.as_str()),
                fallback_strategy: draft.strategy,
                breaker: draft.breaker,
                fallback: GroupFallback {
                    fallback_groups: draft.fallback_groups.into_iter().map(|r| r.value).collect(),
                    max_attempts: draft.max_attempts,
                    retry_delay: draft.retry_delay,
                    deadline: draft.deadline,
                },
                echelons,
            };
            topology.task_groups.insert(spec.name.clone(), spec);
        }
        for (entity, draft) in wrappers {
            if !alive(&entity) {
                continue;
            }
            let name = draft.target.value.clone();
            let target = match draft.kind {
                WrapperKind::TaskGroup => {
                    WrapperTarget::TaskGroup(GroupName::new(strip(&name, "group:")))
                }
                WrapperKind::Pool => WrapperTarget::Pool(PoolName::new(strip(&name, "pool:"))),
                WrapperKind::Direct => match ModelRef::parse(&name) {
                    Some(model) => WrapperTarget::Direct(model),
                    None => continue,
                },
            };
            let spec = WrapperSpec {
                name: WrapperName::new(draft.name.as_str()),
                target,
                description: draft.description,
            };
            topology.wrappers.insert(spec.name.clone(), spec);
        }
    }
    Built {
        topology,
        errors,
        warnings,
    }
}

fn enabled(registry: &Registry, kind: Kind) -> impl Iterator<Item = &EntryFile> {
    registry.files(kind).iter().filter(|e| e.enabled)
}

fn slot<'a>(
    slots: &'a mut BTreeMap<Entity, Slot>,
    entity: Entity,
    entry: &EntryFile,
) -> &'a mut Slot {
    let slot = slots.entry(entity).or_default();
    slot.location = Some(entry.reference.clone().unwrap_or_else(|| Location::File {
        file: entry.rel.clone(),
        line: 1,
        column: 1,
    }));
    slot
}

fn strip<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.strip_prefix(prefix).unwrap_or(text)
}

/// Whether `name` is a valid entry name: letters, digits, `-` and `_` (and `.` for wrappers,
/// which clients send as a model name such as `gpt-4.1`), starting with a letter or digit.
fn valid_name(name: &str, allow_dot: bool) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || (allow_dot && c == '.'))
}

fn check_name(
    name: &str,
    what: &str,
    entry: &EntryFile,
    allow_dot: bool,
    out: &mut Vec<Diagnostic>,
) -> bool {
    if valid_name(name, allow_dot) {
        return true;
    }
    out.push(
        Diagnostic::error(DiagnosticKind::InvalidValue, format!("`{name}` is not a valid {what} name"))
            .at(Some(entry.reference.clone().unwrap_or_else(|| Location::File {
                file: entry.rel.clone(),
                line: 1,
                column: 1,
            })))
            .help("names use letters, digits, `-` and `_`, starting with a letter or digit (the file name, or the registry key)"),
    );
    false
}

/// Loads an entry's file with its parents, substitutes variables and reads its raw struct.
fn read<T: serde::de::DeserializeOwned>(
    files: &mut Files,
    entry: &EntryFile,
    root: &[&str],
    strategies: &BTreeMap<String, String>,
    env: &dyn Env,
    out: &mut Vec<Diagnostic>,
) -> Option<T> {
    let mut tree = files.resolve(&entry.rel, entry.reference.clone(), strategies, out)?;
    let path = KeyPath::of(root.iter().copied());
    interpolate(&mut tree, &path, env, out);
    let origin = tree.origin.clone();
    from_node(&tree, &origin, &path, out)
}

/// Whether an error was already reported at `key` or below it: a later "missing" or "empty"
/// report about the same key would only be noise.
fn had_error_at(out: &[Diagnostic], key: &str) -> bool {
    out.iter().any(|d| {
        d.severity == Severity::Error
            && (d.key == key
                || d.key.starts_with(&format!("{key}."))
                || d.key.starts_with(&format!("{key}[")))
    })
}

fn tighten(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn limits(
    rpm: &Option<Val<u32>>,
    tpm: &Option<Val<u32>>,
    concurrency: &Option<Val<u32>>,
    out: &mut Vec<Diagnostic>,
) -> Limits {
    Limits {
        rpm: rpm.value_in(out, Range::AtLeast(1)),
        tpm: tpm.value_in(out, Range::AtLeast(1)),
        max_concurrency: concurrency.value_in(out, Range::AtLeast(1)),
    }
}

fn provider(name: &str, raw: RawProvider, out: &mut Vec<Diagnostic>) -> ProviderDraft {
    let kind = match &raw.kind {
        Some(val) => val.get(out),
        None => {
            out.push(
                missing(
                    &raw.here,
                    "kind",
                    format!("provider `{name}` needs a `kind`"),
                )
                .help("one of `openai`, `anthropic`, `gemini`, `mock`"),
            );
            None
        }
    }
    .unwrap_or(ProviderKind::Mock);
    let base_url = match &raw.base_url {
        Some(val) => {
            match val.get(out) {
                Some(url) if kind == ProviderKind::Mock || http_url(&url) => {
                    url.trim_end_matches('/').to_owned()
                }
                Some(_) => {
                    out.push(val.diagnostic(
                    DiagnosticKind::InvalidValue,
                    crate::value::describe("invalid base URL", &val.raw),
                    Some("write an http:// or https:// URL, e.g. \"https://api.openai.com/v1\"".into()),
                ));
                    default_base_url(kind, name)
                }
                None => default_base_url(kind, name),
            }
        }
        None => default_base_url(kind, name),
    };
    let mut api_keys = Vec::new();
    match (&raw.api_key, &raw.api_keys) {
        (Some(key), Some(_)) => out.push(key.diagnostic(
            DiagnosticKind::Conflict,
            "`api_key` and `api_keys` are both set".to_owned(),
            Some("use `api_keys = [..]` for several keys, `api_key` for one".into()),
        )),
        (Some(key), None) => api_keys.extend(non_empty_secret(key, out)),
        (None, Some(keys)) => {
            let mut seen: Vec<(Secret, usize)> = Vec::new();
            for (index, key) in keys.iter().enumerate() {
                let Some(secret) = non_empty_secret(key, out) else {
                    continue;
                };
                if let Some((_, first)) = seen.iter().find(|(s, _)| *s == secret) {
                    out.push(key.diagnostic(
                        DiagnosticKind::Duplicate,
                        format!("api_keys[{index}] is the same key as api_keys[{first}]"),
                        Some("each key is an instance with its own limits; list a key once".into()),
                    ));
                } else {
                    seen.push((secret.clone(), index));
                }
                api_keys.push(secret);
            }
            if keys.len() > usize::from(u16::MAX) {
                out.push(missing(&raw.here, "api_keys", "more than 65535 keys"));
            }
        }
        (None, None) => {}
    }
    if api_keys.is_empty()
        && raw.api_key.is_none()
        && raw.api_keys.is_none()
        && matches!(kind, ProviderKind::Anthropic | ProviderKind::Gemini)
    {
        out.push(
            Diagnostic::warning(
                DiagnosticKind::MissingKey,
                format!("provider `{name}` has no api key"),
            )
            .at(raw.here.location.clone())
            .key(raw.here.key.clone())
            .help("set `api_key = \"${VAR}\"` or `api_keys = [..]`"),
        );
    }
    let mut headers = Vec::new();
    for (header, value) in raw.headers.iter().flatten() {
        let valid = !header.is_empty()
            && header
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
        if !valid {
            out.push(value.diagnostic(
                DiagnosticKind::InvalidValue,
                format!("`{header}` is not a valid HTTP header name"),
                None,
            ));
            continue;
        }
        if let Some(secret) = value.get(out) {
            headers.push((header.clone(), secret));
        }
    }
    let mock = match (&raw.mock, kind) {
        (Some(mock), ProviderKind::Mock) => Some(MockBehaviour {
            latency: mock.latency.read_or(out, Duration::ZERO),
            error_rate: mock
                .error_rate
                .read_or_in(out, Range::Between(0.0, 1.0), 0.0),
            reply: mock.reply.value(out),
        }),
        (None, ProviderKind::Mock) => Some(MockBehaviour::default()),
        (Some(mock), _) => {
            out.push(
                Diagnostic::error(
                    DiagnosticKind::Conflict,
                    "`[mock]` only applies to `kind = \"mock\"`",
                )
                .at(mock.here.location.clone())
                .key(mock.here.key.clone()),
            );
            None
        }
        (None, _) => None,
    };
    let spec = ProviderSpec {
        name: ProviderName::new(name),
        kind,
        base_url,
        api_keys,
        headers,
        connect_timeout: raw
            .connect_timeout
            .read_or_in(out, POSITIVE, defaults::CONNECT_TIMEOUT),
        request_timeout: raw
            .request_timeout
            .read_or_in(out, POSITIVE, defaults::REQUEST_TIMEOUT),
        mock,
    };
    let mut models = BTreeMap::new();
    match raw.models {
        None => out.push(
            Diagnostic::warning(
                DiagnosticKind::Unused,
                format!("provider `{name}` defines no models"),
            )
            .at(raw.here.location.clone())
            .key(raw.here.key.clone())
            .help("add [models.<id>] tables; pools and echelons address them as \"provider/id\""),
        ),
        Some(raw_models) => {
            for (id, raw_model) in raw_models {
                if let Some(model) = model(name, &id, &raw_model, out) {
                    models.insert(id, model);
                }
            }
        }
    }
    ProviderDraft { spec, models }
}

fn model(provider: &str, id: &str, raw: &RawModel, out: &mut Vec<Diagnostic>) -> Option<ModelSpec> {
    let name = ModelName::new(id);
    if !name.is_valid() {
        out.push(
            Diagnostic::error(
                DiagnosticKind::InvalidValue,
                format!("`{id}` is not a valid model id"),
            )
            .at(raw.here.location.clone())
            .key(raw.here.key.clone())
            .help("model ids are not empty and have no spaces"),
        );
        return None;
    }
    let upstream_name = match &raw.upstream {
        Some(val) => match val.get(out) {
            Some(u) if u.trim().is_empty() => {
                out.push(val.diagnostic(DiagnosticKind::InvalidValue, "`upstream` is empty", None));
                id.to_owned()
            }
            Some(u) => u,
            None => id.to_owned(),
        },
        None => id.to_owned(),
    };
    let cost = raw.cost.as_ref().map_or(Cost::default(), |c| Cost {
        input_per_mtok: c.input.read_or_in(out, Range::AtLeast(0.0), 0.0),
        output_per_mtok: c.output.read_or_in(out, Range::AtLeast(0.0), 0.0),
    });
    Some(ModelSpec {
        model: ModelRef::new(provider, name),
        upstream_name,
        context_window: raw.context_window.value_in(out, Range::AtLeast(1)),
        limits: limits(&raw.rpm_limit, &raw.tpm_limit, &raw.max_concurrency, out),
        cost,
    })
}

fn breaker(raw: Option<&RawBreaker>, out: &mut Vec<Diagnostic>) -> BreakerPolicy {
    let d = BreakerPolicy::default();
    let Some(raw) = raw else { return d };
    let recovery_time = raw.recovery_time.read_or_in(out, POSITIVE, d.recovery_time);
    let max_recovery_time = match &raw.max_recovery_time {
        Some(val) => match val.get_in(out, &POSITIVE) {
            Some(max) if max < recovery_time => {
                out.push(val.diagnostic(
                    DiagnosticKind::Conflict,
                    "`max_recovery_time` is shorter than `recovery_time`",
                    Some("the open time grows from recovery_time up to max_recovery_time".into()),
                ));
                recovery_time
            }
            Some(max) => max,
            None => d.max_recovery_time.max(recovery_time),
        },
        None => d.max_recovery_time.max(recovery_time),
    };
    let failure_rate = raw.failure_rate.as_ref().and_then(|rate| {
        let threshold = match &rate.threshold {
            Some(val) => val.get_in(out, &Range::Between(0.0, 1.0))?,
            None => {
                out.push(missing(
                    &rate.here,
                    "threshold",
                    "`failure_rate` needs a `threshold` (0..=1)",
                ));
                return None;
            }
        };
        Some(FailureRate {
            threshold,
            window: rate
                .window
                .read_or_in(out, POSITIVE, defaults::FAILURE_RATE_WINDOW),
            min_calls: rate.min_calls.read_or_in(
                out,
                Range::AtLeast(1),
                defaults::FAILURE_RATE_MIN_CALLS,
            ),
        })
    });
    BreakerPolicy {
        failure_threshold: raw.failure_threshold.read_or_in(
            out,
            Range::AtLeast(1),
            d.failure_threshold,
        ),
        failure_rate,
        recovery_time,
        max_recovery_time,
        half_open_requests: raw.half_open_requests.read_or_in(
            out,
            Range::Between(1, 1000),
            d.half_open_requests,
        ),
    }
}

fn health(
    raw: Option<&RawHealthCheck>,
    out: &mut Vec<Diagnostic>,
) -> (HealthPolicy, HealthCheckSpec) {
    let (hp, hc) = (HealthPolicy::default(), HealthCheckSpec::default());
    let Some(raw) = raw else { return (hp, hc) };
    (
        HealthPolicy {
            failure_threshold: raw.failure_threshold.read_or_in(
                out,
                Range::AtLeast(1),
                hp.failure_threshold,
            ),
            success_threshold: raw.success_threshold.read_or_in(
                out,
                Range::AtLeast(1),
                hp.success_threshold,
            ),
            recovery_time: raw.recovery_time.read_or(out, hp.recovery_time),
        },
        HealthCheckSpec {
            enabled: raw.enabled.read_or(out, hc.enabled),
            interval: raw.interval.read_or_in(out, POSITIVE, hc.interval),
            timeout: raw.timeout.read_or_in(out, POSITIVE, hc.timeout),
            probe: raw.probe.read_or(out, hc.probe),
        },
    )
}

fn model_ref(val: &Val<String>, out: &mut Vec<Diagnostic>) -> Option<Ref<ModelRef>> {
    let text = val.get(out)?;
    match ModelRef::parse(text.trim()) {
        Some(model) if model.model.is_valid() => Some(Ref {
            value: model,
            location: val.location.clone(),
            key: val.key.clone(),
        }),
        _ => {
            out.push(val.diagnostic(
                DiagnosticKind::InvalidValue,
                crate::value::describe("invalid model reference", &val.raw),
                Some("write \"provider/model\", e.g. \"openai/gpt-4o-mini\"".into()),
            ));
            None
        }
    }
}

fn group_ref(val: &Val<String>, out: &mut Vec<Diagnostic>) -> Option<Ref<GroupRef>> {
    let text = val.get(out)?;
    let text = strip(text.trim(), "group:");
    let (group, echelon) = match text.split_once('.') {
        Some((g, e)) => (g, Some(e)),
        None => (text, None),
    };
    if !valid_name(group, false) || echelon.is_some_and(|e| !valid_name(e, false)) {
        out.push(val.diagnostic(
            DiagnosticKind::InvalidValue,
            crate::value::describe("invalid task group reference", &val.raw),
            Some("write \"group\" or \"group.echelonN\"".into()),
        ));
        return None;
    }
    Some(Ref {
        value: GroupRef {
            group: GroupName::new(group),
            echelon: echelon.map(EchelonName::new),
        },
        location: val.location.clone(),
        key: val.key.clone(),
    })
}

fn name_ref(
    val: &Val<String>,
    prefix: &str,
    what: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<Ref<String>> {
    let text = val.get(out)?;
    let name = strip(text.trim(), prefix);
    if !valid_name(name, false) {
        out.push(val.diagnostic(
            DiagnosticKind::InvalidValue,
            crate::value::describe(&format!("invalid {what} name"), &val.raw),
            None,
        ));
        return None;
    }
    Some(Ref {
        value: name.to_owned(),
        location: val.location.clone(),
        key: val.key.clone(),
    })
}

fn pool(raw: RawPool, out: &mut Vec<Diagnostic>) -> PoolDraft {
    let mut entries = Vec::new();
    for instance in raw.instances.iter().flatten() {
        if let Some(entry) = instance_entry(instance, out) {
            entries.push(entry);
        }
    }
    let task_groups: Vec<_> = raw
        .task_groups
        .iter()
        .flatten()
        .filter_map(|v| group_ref(v, out))
        .collect();
    let (health, health_check) = health(raw.health_check.as_ref(), out);
    let fallback = raw.fallback.as_ref();
    let strategy = fallback.map_or(PoolFallbackStrategy::InstanceRotation, |f| {
        f.strategy
            .read_or(out, PoolFallbackStrategy::InstanceRotation)
    });
    let fallback_pools: Vec<_> = fallback
        .and_then(|f| f.fallback_pools.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| name_ref(v, "pool:", "pool", out))
        .map(|r| Ref {
            value: PoolName::new(r.value.as_str()),
            location: r.location,
            key: r.key,
        })
        .collect();
    let fallback_key = format!("{}.fallback", raw.here.key);
    match strategy {
        PoolFallbackStrategy::PoolFallback
            if fallback_pools.is_empty() && !had_error_at(out, &fallback_key) =>
        {
            out.push(
                Diagnostic::warning(
                    DiagnosticKind::Unused,
                    "`strategy = \"pool_fallback\"` without `fallback_pools`",
                )
                .at(raw.here.location.clone())
                .key(fallback_key)
                .help("list the pools to continue with in `fallback_pools`"),
            );
        }
        PoolFallbackStrategy::InstanceRotation if !fallback_pools.is_empty() => {
            out.push(
                Diagnostic::warning(
                    DiagnosticKind::Unused,
                    "`fallback_pools` are only used with `strategy = \"pool_fallback\"`",
                )
                .at(fallback_pools[0].location.clone())
                .key(format!("{fallback_key}.fallback_pools")),
            );
        }
        _ => {}
    }
    if raw.instances.as_ref().is_none_or(Vec::is_empty)
        && raw.task_groups.as_ref().is_none_or(Vec::is_empty)
        && !had_error_at(out, &format!("{}.instances", raw.here.key))
        && !had_error_at(out, &format!("{}.task_groups", raw.here.key))
    {
        out.push(
            missing(&raw.here, "instances", "the pool has no instances")
                .help("add [[instances]] with `model = \"provider/model\"`, or `task_groups = [\"group.echelonN\"]`"),
        );
    }
    let rate = raw.rate_limit.as_ref();
    PoolDraft {
        rotation: raw.rotation.read_or(out, RotationStrategy::RoundRobin),
        entries,
        task_groups,
        health,
        health_check,
        breaker: breaker(raw.circuit_breaker.as_ref(), out),
        strategy,
        max_instance_attempts: fallback.map_or(defaults::MAX_INSTANCE_ATTEMPTS, |f| {
            f.max_instance_attempts.read_or_in(
                out,
                Range::Between(1, 100),
                defaults::MAX_INSTANCE_ATTEMPTS,
            )
        }),
        fallback_pools,
        limits: Limits {
            rpm: rate.and_then(|r| r.rpm.value_in(out, Range::AtLeast(1))),
            tpm: rate.and_then(|r| r.tpm.value_in(out, Range::AtLeast(1))),
            max_concurrency: raw
                .concurrency
                .as_ref()
                .and_then(|c| c.max.value_in(out, Range::AtLeast(1))),
        },
        rate_algorithm: rate.map_or(RateAlgorithm::TokenBucket, |r| {
            r.algorithm.read_or(out, RateAlgorithm::TokenBucket)
        }),
        here: raw.here,
    }
}

fn instance_entry(raw: &RawInstance, out: &mut Vec<Diagnostic>) -> Option<InstanceDraft> {
    let weight = raw.weight.read_or_in(out, Range::Between(1, 1_000_000), 1);
    let limits = limits(&raw.rpm_limit, &raw.tpm_limit, &raw.max_concurrency, out);
    let key = raw.key.as_ref().and_then(|val| {
        Some(Ref {
            value: val.get(out)?,
            location: val.location.clone(),
            key: val.key.clone(),
        })
    });
    let Some(model) = &raw.model else {
        out.push(
            missing(&raw.here, "model", "an instance needs a `model`")
                .help("write `model = \"provider/model\"`"),
        );
        return None;
    };
    Some(InstanceDraft {
        model: model_ref(model, out)?,
        key,
        weight,
        limits,
    })
}

fn group(name: &str, raw: &RawGroup, out: &mut Vec<Diagnostic>) -> GroupDraft {
    let strategy = raw
        .fallback_strategy
        .read_or(out, FallbackStrategy::EchelonDown);
    let fallback = raw.fallback.as_ref();
    let fallback_groups: Vec<_> = fallback
        .and_then(|f| f.fallback_groups.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| group_ref(v, out))
        .collect();
    let fallback_key = format!("{}.fallback", raw.here.key);
    if strategy == FallbackStrategy::GroupFallback
        && fallback_groups.is_empty()
        && !had_error_at(out, &fallback_key)
    {
        out.push(
            Diagnostic::warning(
                DiagnosticKind::Unused,
                "`fallback_strategy = \"group_fallback\"` without `fallback_groups`",
            )
            .at(raw.here.location.clone())
            .key(format!("{fallback_key}.fallback_groups"))
            .help("without fallback groups it behaves like `echelon_down`"),
        );
    }
    if strategy != FallbackStrategy::GroupFallback && !fallback_groups.is_empty() {
        out.push(
            Diagnostic::warning(
                DiagnosticKind::Unused,
                "`fallback_groups` are only used with `fallback_strategy = \"group_fallback\"`",
            )
            .at(fallback_groups[0].location.clone())
            .key(format!("{fallback_key}.fallback_groups")),
        );
    }
    let mut echelons: Vec<EchelonDraft> = Vec::new();
    let mut priorities: BTreeMap<u32, String> = BTreeMap::new();
    for (echelon_name, raw_echelon) in raw.echelons.iter().flatten() {
        if !valid_name(echelon_name, false) {
            out.push(
                Diagnostic::error(
                    DiagnosticKind::InvalidValue,
                    format!("`{echelon_name}` is not a valid echelon name"),
                )
                .at(raw_echelon.here.location.clone())
                .key(raw_echelon.here.key.clone())
                .help("use letters, digits, `-` and `_`, e.g. `echelon1`"),
            );
            continue;
        }
        let Some(draft) = echelon(echelon_name, raw_echelon, out) else {
            continue;
        };
        if let Some(other) = priorities.get(&draft.spec.priority) {
            let at = raw_echelon
                .priority
                .as_ref()
                .map_or(raw_echelon.here.location.clone(), |p| p.location.clone());
            out.push(
                Diagnostic::error(
                    DiagnosticKind::Duplicate,
                    format!(
                        "echelons `{other}` and `{echelon_name}` have the same priority {}",
                        draft.spec.priority
                    ),
                )
                .at(at)
                .key(format!("{}.priority", raw_echelon.here.key))
                .help("give each echelon its own priority; smaller goes first"),
            );
        } else {
            priorities.insert(draft.spec.priority, echelon_name.clone());
        }
        echelons.push(draft);
    }
    if raw.echelons.as_ref().is_none_or(BTreeMap::is_empty)
        && !had_error_at(out, &format!("{}.echelons", raw.here.key))
    {
        out.push(
            missing(
                &raw.here,
                "echelons",
                format!("task group `{name}` has no echelons"),
            )
            .help("add [echelons.echelon1] with `models = [\"provider/model\"]`"),
        );
    }
    GroupDraft {
        strategy,
        breaker: breaker(raw.circuit_breaker.as_ref(), out),
        fallback_groups,
        max_attempts: fallback.map_or(defaults::MAX_ATTEMPTS, |f| {
            f.max_attempts
                .read_or_in(out, Range::Between(1, 100), defaults::MAX_ATTEMPTS)
        }),
        retry_delay: fallback.map_or(defaults::RETRY_DELAY, |f| {
            f.retry_delay.read_or(out, defaults::RETRY_DELAY)
        }),
        deadline: fallback.map_or(defaults::DEADLINE, |f| {
            f.deadline.read_or_in(out, POSITIVE, defaults::DEADLINE)
        }),
        echelons,
    }
}

/// `N` of an `echelonN` name.
fn number_in_name(name: &str) -> Option<u32> {
    name.strip_prefix("echelon")?.parse().ok()
}

fn echelon(name: &str, raw: &RawEchelon, out: &mut Vec<Diagnostic>) -> Option<EchelonDraft> {
    let priority = match &raw.priority {
        Some(val) => val.get(out)?,
        None => match number_in_name(name) {
            Some(n) => n,
            None => {
                out.push(
                    missing(&raw.here, "priority", format!("echelon `{name}` needs a `priority`"))
                        .help("echelons named `echelonN` default to priority N; others set `priority` (smaller goes first)"),
                );
                return None;
            }
        },
    };
    let mut refs: Vec<Ref<EchelonTarget>> = Vec::new();
    for val in raw.models.iter().flatten() {
        let Some(text) = val.get(out) else { continue };
        let text = text.trim();
        let target = if let Some(pool) = text.strip_prefix("pool:") {
            valid_name(pool, false).then(|| EchelonTarget::Pool(PoolName::new(pool)))
        } else if text.starts_with("group:") {
            out.push(val.diagnostic(
                DiagnosticKind::InvalidValue,
                "an echelon cannot list a task group".to_owned(),
                Some("list models or pools here; continue with other groups through `fallback.fallback_groups`".into()),
            ));
            continue;
        } else {
            ModelRef::parse(text)
                .filter(|m| m.model.is_valid())
                .map(EchelonTarget::Model)
        };
        let Some(target) = target else {
            out.push(val.diagnostic(
                DiagnosticKind::InvalidValue,
                crate::value::describe("invalid echelon target", &val.raw),
                Some("write \"provider/model\" or \"pool:NAME\"".into()),
            ));
            continue;
        };
        if refs.iter().any(|r| r.value == target) {
            out.push(val.diagnostic(
                DiagnosticKind::Duplicate,
                format!("`{text}` is listed twice in echelon `{name}`"),
                None,
            ));
            continue;
        }
        refs.push(Ref {
            value: target,
            location: val.location.clone(),
            key: val.key.clone(),
        });
    }
    let models_key = format!("{}.models", raw.here.key);
    if raw.models.as_ref().is_none_or(Vec::is_empty) && !had_error_at(out, &models_key) {
        out.push(
            missing(
                &raw.here,
                "models",
                format!("echelon `{name}` lists no models"),
            )
            .help("write `models = [\"provider/model\", \"pool:NAME\"]`"),
        );
    }
    let defaults_raw = raw.defaults.as_ref();
    Some(EchelonDraft {
        spec: EchelonSpec {
            name: EchelonName::new(name),
            priority,
            targets: refs.iter().map(|r| r.value.clone()).collect(),
            concurrency_limit: raw.concurrency_limit.value_in(out, Range::AtLeast(1)),
            rpm_limit: raw.rpm_limit.value_in(out, Range::AtLeast(1)),
            timeout: raw.timeout.read_or_in(out, POSITIVE, defaults::TIMEOUT),
            first_token_timeout: raw.first_token_timeout.read_or_in(
                out,
                POSITIVE,
                defaults::FIRST_TOKEN_TIMEOUT,
            ),
            idle_timeout: raw
                .idle_timeout
                .read_or_in(out, POSITIVE, defaults::IDLE_TIMEOUT),
            max_retries: raw.max_retries.read_or_in(
                out,
                Range::Between(0, 10),
                defaults::MAX_RETRIES,
            ),
            retry_after_max_wait: raw
                .retry_after_max_wait
                .read_or(out, defaults::RETRY_AFTER_MAX_WAIT),
            defaults: RequestDefaults {
                temperature: defaults_raw
                    .and_then(|d| d.temperature.value_in(out, Range::Between(0.0, 2.0))),
                max_tokens: defaults_raw
                    .and_then(|d| d.max_tokens.value_in(out, Range::AtLeast(1))),
            },
        },
        refs,
    })
}

fn wrapper(name: &str, raw: &RawWrapper, out: &mut Vec<Diagnostic>) -> Option<WrapperDraft> {
    let enabled = raw.enabled.read_or(out, true);
    let kind = match &raw.kind {
        Some(val) => val.get(out),
        None => {
            out.push(
                missing(
                    &raw.here,
                    "type",
                    format!("wrapper `{name}` needs a `type`"),
                )
                .help("one of `task_group`, `pool`, `direct`"),
            );
            None
        }
    };
    let target = match &raw.target {
        Some(val) => val.get(out).map(|t| Ref {
            value: t.trim().to_owned(),
            location: val.location.clone(),
            key: val.key.clone(),
        }),
        None => {
            out.push(missing(
                &raw.here,
                "target",
                format!("wrapper `{name}` needs a `target`"),
            ));
            None
        }
    };
    let description = raw.description.value(out);
    if !enabled {
        return None;
    }
    Some(WrapperDraft {
        name: name.to_owned(),
        kind: kind?,
        target: target?,
        description,
    })
}

/// A reference to a name that is not declared: disabled, or a typo.
fn dangling<'a, T>(
    reference: &Ref<T>,
    what: &str,
    name: &str,
    kind: Kind,
    candidates: impl IntoIterator<Item = &'a str>,
    declared: &Declared<'_>,
) -> Diagnostic {
    let help = if declared
        .disabled
        .get(&kind)
        .is_some_and(|d| d.contains(name))
    {
        Some(format!(
            "{what} `{name}` is disabled in llms/_registry.toml"
        ))
    } else {
        did_you_mean(name, candidates)
    };
    reference.diagnostic(
        DiagnosticKind::DanglingReference,
        format!("{what} `{name}` does not exist"),
        help,
    )
}

/// Checks `provider/model`; returns the provider's key count when known.
fn check_model(model: &Ref<ModelRef>, declared: &Declared<'_>, slot: &mut Slot) -> Option<usize> {
    let provider = model.value.provider.as_str();
    let Some(draft) = declared.providers.get(provider) else {
        let all: Vec<String> = declared
            .providers
            .iter()
            .flat_map(|(p, d)| {
                d.iter()
                    .flat_map(move |d| d.models.keys().map(move |m| format!("{p}/{m}")))
            })
            .collect();
        let help = if declared
            .disabled
            .get(&Kind::Providers)
            .is_some_and(|d| d.contains(provider))
        {
            Some(format!(
                "provider `{provider}` is disabled in llms/_registry.toml"
            ))
        } else {
            did_you_mean(&model.value.to_string(), all.iter().map(String::as_str))
                .or_else(|| did_you_mean(provider, declared.providers.keys().map(String::as_str)))
        };
        slot.diagnostics.push(model.diagnostic(
            DiagnosticKind::DanglingReference,
            format!(
                "model `{}` does not exist: there is no provider `{provider}`",
                model.value
            ),
            help,
        ));
        return None;
    };
    slot.deps.insert(Entity::Provider(provider.to_owned()));
    let draft = (*draft)?;
    if !draft.models.contains_key(model.value.model.as_str()) {
        slot.diagnostics.push(
            model.diagnostic(
                DiagnosticKind::DanglingReference,
                format!(
                    "model `{}` does not exist: provider `{provider}` does not define `{}`",
                    model.value, model.value.model
                ),
                did_you_mean(
                    model.value.model.as_str(),
                    draft.models.keys().map(String::as_str),
                )
                .or_else(|| {
                    Some(format!(
                        "add [{}] to the provider's file",
                        KeyPath::of(["models", model.value.model.as_str()])
                    ))
                }),
            ),
        );
        return None;
    }
    Some(draft.spec.api_keys.len().max(1))
}

fn check_group_ref<'d>(
    reference: &Ref<GroupRef>,
    declared: &'d Declared<'d>,
    slot: &mut Slot,
) -> Option<&'d GroupDraft> {
    let name = reference.value.group.as_str();
    let Some(draft) = declared.groups.get(name) else {
        slot.diagnostics.push(dangling(
            reference,
            "task group",
            name,
            Kind::TaskGroups,
            declared.groups.keys().map(String::as_str),
            declared,
        ));
        return None;
    };
    slot.deps.insert(Entity::Group(name.to_owned()));
    let draft = (*draft)?;
    if let Some(echelon) = &reference.value.echelon
        && !draft.echelons.iter().any(|e| e.spec.name == *echelon)
    {
        slot.diagnostics.push(reference.diagnostic(
            DiagnosticKind::DanglingReference,
            format!("task group `{name}` has no echelon `{echelon}`"),
            did_you_mean(
                echelon.as_str(),
                draft.echelons.iter().map(|e| e.spec.name.as_str()),
            ),
        ));
        return None;
    }
    Some(draft)
}

fn check_pool(reference: &Ref<PoolName>, declared: &Declared<'_>, slot: &mut Slot) {
    let name = reference.value.as_str();
    if declared.pools.contains_key(name) {
        slot.deps.insert(Entity::Pool(name.to_owned()));
    } else {
        slot.diagnostics.push(dangling(
            reference,
            "pool",
            name,
            Kind::Pools,
            declared.pools.keys().map(String::as_str),
            declared,
        ));
    }
}

fn link_pool(
    name: &str,
    draft: &PoolDraft,
    declared: &Declared<'_>,
    slot: &mut Slot,
) -> Vec<InstanceSpec> {
    let mut instances: Vec<InstanceSpec> = Vec::new();
    for entry in &draft.entries {
        let Some(keys) = check_model(&entry.model, declared, slot) else {
            continue;
        };
        let model = declared.providers[entry.model.value.provider.as_str()]
            .and_then(|p| p.models.get(entry.model.value.model.as_str()))
            .expect("checked above");
        let indices: Vec<usize> = match &entry.key {
            Some(key) if usize::from(key.value) >= keys => {
                slot.diagnostics.push(key.diagnostic(
                    DiagnosticKind::OutOfRange,
                    format!(
                        "`key` {} is out of range: provider `{}` has {keys} key{}",
                        key.value,
                        entry.model.value.provider,
                        if keys == 1 { "" } else { "s" }
                    ),
                    Some(format!("keys are numbered from 0 to {}", keys - 1)),
                ));
                continue;
            }
            Some(key) => vec![usize::from(key.value)],
            None => (0..keys).collect(),
        };
        for index in indices {
            let id = InstanceId::new(
                entry.model.value.clone(),
                u16::try_from(index).unwrap_or(u16::MAX),
            );
            if instances.iter().any(|i| i.id == id) {
                slot.diagnostics.push(entry.model.diagnostic(
                    DiagnosticKind::Duplicate,
                    format!("instance `{id}` is listed twice in pool `{name}`"),
                    Some("pin different keys with `key = N`, or list the model once".into()),
                ));
                continue;
            }
            instances.push(InstanceSpec {
                id,
                upstream_name: model.upstream_name.clone(),
                weight: entry.weight,
                limits: Limits {
                    rpm: tighten(model.limits.rpm, entry.limits.rpm),
                    tpm: tighten(model.limits.tpm, entry.limits.tpm),
                    max_concurrency: tighten(
                        model.limits.max_concurrency,
                        entry.limits.max_concurrency,
                    ),
                },
                context_window: model.context_window,
            });
        }
    }
    for reference in &draft.task_groups {
        let Some(group) = check_group_ref(reference, declared, slot) else {
            continue;
        };
        for echelon in &group.echelons {
            if reference
                .value
                .echelon
                .as_ref()
                .is_some_and(|e| *e != echelon.spec.name)
            {
                continue;
            }
            for target in &echelon.refs {
                match &target.value {
                    EchelonTarget::Model(model) => {
                        let model_ref = Ref { value: model.clone(), location: reference.location.clone(), key: reference.key.clone() };
                        // The group reports its own dangling models; the pool only depends on them.
                        let mut scratch = Slot::default();
                        if check_model(&model_ref, declared, &mut scratch).is_none() {
                            slot.deps.extend(scratch.deps);
                            continue;
                        }
                        slot.deps.extend(scratch.deps);
                        let spec = &declared.providers[model.provider.as_str()].and_then(|p| p.models.get(model.model.as_str())).expect("checked above");
                        let keys = declared.providers[model.provider.as_str()].map_or(1, |p| p.spec.api_keys.len().max(1));
                        for index in 0..keys {
                            let id = InstanceId::new(model.clone(), u16::try_from(index).unwrap_or(u16::MAX));
                            if instances.iter().any(|i| i.id == id) {
                                continue;
                            }
                            instances.push(InstanceSpec {
                                id,
                                upstream_name: spec.upstream_name.clone(),
                                weight: 1,
                                limits: spec.limits,
                                context_window: spec.context_window,
                            });
                        }
                    }
                    EchelonTarget::Pool(pool) => slot.diagnostics.push(
                        Diagnostic::warning(
                            DiagnosticKind::Unused,
                            format!("`pool:{pool}` in `{}.{}` is not a model and is not copied into pool `{name}`", reference.value.group, echelon.spec.name),
                        )
                        .at(reference.location.clone())
                        .key(reference.key.clone())
                        .help("a pool takes the models of an echelon; list the other pool in `fallback_pools` instead"),
                    ),
                }
            }
        }
    }
    for reference in &draft.fallback_pools {
        check_pool(reference, declared, slot);
    }
    if instances.is_empty()
        && !draft.task_groups.is_empty()
        && draft.entries.is_empty()
        && !slot
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    {
        slot.diagnostics.push(missing(
            &draft.here,
            "instances",
            format!("pool `{name}` has no instances: its task groups list no models"),
        ));
    }
    instances
}

fn link_group(draft: &GroupDraft, declared: &Declared<'_>, slot: &mut Slot) {
    for echelon in &draft.echelons {
        for target in &echelon.refs {
            match &target.value {
                EchelonTarget::Model(model) => {
                    let model_ref = Ref {
                        value: model.clone(),
                        location: target.location.clone(),
                        key: target.key.clone(),
                    };
                    check_model(&model_ref, declared, slot);
                }
                EchelonTarget::Pool(pool) => {
                    let pool_ref = Ref {
                        value: pool.clone(),
                        location: target.location.clone(),
                        key: target.key.clone(),
                    };
                    check_pool(&pool_ref, declared, slot);
                }
            }
        }
    }
    for reference in &draft.fallback_groups {
        check_group_ref(reference, declared, slot);
    }
}

fn link_wrapper(draft: &WrapperDraft, declared: &Declared<'_>, slot: &mut Slot) {
    let target = &draft.target;
    match draft.kind {
        WrapperKind::TaskGroup => {
            let name = strip(&target.value, "group:");
            if declared.groups.contains_key(name) {
                slot.deps.insert(Entity::Group(name.to_owned()));
            } else {
                let mut d = dangling(
                    target,
                    "task group",
                    name,
                    Kind::TaskGroups,
                    declared.groups.keys().map(String::as_str),
                    declared,
                );
                if d.help.is_none() && declared.pools.contains_key(name) {
                    d.help = Some(format!("`{name}` is a pool: set `type = \"pool\"`"));
                }
                slot.diagnostics.push(d);
            }
        }
        WrapperKind::Pool => {
            let name = strip(&target.value, "pool:");
            if declared.pools.contains_key(name) {
                slot.deps.insert(Entity::Pool(name.to_owned()));
            } else {
                let mut d = dangling(
                    target,
                    "pool",
                    name,
                    Kind::Pools,
                    declared.pools.keys().map(String::as_str),
                    declared,
                );
                if d.help.is_none() && declared.groups.contains_key(name) {
                    d.help = Some(format!(
                        "`{name}` is a task group: set `type = \"task_group\"`"
                    ));
                }
                slot.diagnostics.push(d);
            }
        }
        WrapperKind::Direct => {
            match ModelRef::parse(&target.value).filter(|m| m.model.is_valid()) {
                Some(model) => {
                    let model_ref = Ref {
                        value: model,
                        location: target.location.clone(),
                        key: target.key.clone(),
                    };
                    check_model(&model_ref, declared, slot);
                }
                None => slot.diagnostics.push(target.diagnostic(
                    DiagnosticKind::InvalidValue,
                    format!("invalid model reference `{}`", target.value),
                    Some("a `direct` wrapper targets \"provider/model\"".into()),
                )),
            }
        }
    }
}

/// A cycle: the names in order, and the reference that closes it.
struct Cycle {
    names: Vec<String>,
    closing: Ref<String>,
}

type Edges<T> = BTreeMap<String, Vec<(String, Ref<T>)>>;

fn find_cycles<T: fmt::Debug>(edges: &Edges<T>) -> Vec<Cycle> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<T>(
        node: &str,
        edges: &Edges<T>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
        cycles: &mut Vec<Cycle>,
    ) {
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for (next, reference) in edges.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut names = stack[start..].to_vec();
                    names.push(next.clone());
                    cycles.push(Cycle {
                        names,
                        closing: Ref {
                            value: next.clone(),
                            location: reference.location.clone(),
                            key: reference.key.clone(),
                        },
                    });
                }
                Some(Mark::Done) => {}
                None if edges.contains_key(next.as_str()) => {
                    visit(next, edges, marks, stack, cycles)
                }
                None => {}
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut cycles = Vec::new();
    for node in edges.keys() {
        if !marks.contains_key(node.as_str()) {
            visit(node, edges, &mut marks, &mut Vec::new(), &mut cycles);
        }
    }
    cycles
}

fn report_cycle(
    cycle: &Cycle,
    what: &str,
    entity: fn(String) -> Entity,
    slots: &mut BTreeMap<Entity, Slot>,
) {
    let diagnostic = cycle.closing.diagnostic(
        DiagnosticKind::ReferenceCycle,
        format!("{what} form a cycle: {}", cycle.names.join(" → ")),
        Some("a request would go round forever; remove one reference of the cycle".into()),
    );
    let mut members: Vec<&String> = cycle.names.iter().collect();
    members.dedup();
    for name in members {
        if let Some(slot) = slots.get_mut(&entity(name.clone())) {
            slot.diagnostics.push(diagnostic.clone());
        }
    }
}
