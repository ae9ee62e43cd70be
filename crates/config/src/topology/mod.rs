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

use echelon_domain::defaults;
use echelon_domain::limit::tighter;
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
use crate::value::{Choice, OptVal, POSITIVE, Range, choice_from_val};

mod base_url;
mod link;
mod local;

use link::*;
pub(crate) use local::WrapperKind;
use local::*;

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
    max_ejection_percent: u32,
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
    content_filter_fallback: bool,
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
    let mut topology = Topology {
        route_defaults: registry.route_defaults,
        retry_budget: registry.retry_budget,
        ..Topology::default()
    };
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
                max_ejection_percent: draft.max_ejection_percent,
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
                    content_filter_fallback: draft.content_filter_fallback,
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
pub(crate) fn valid_name(name: &str, allow_dot: bool) -> bool {
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
