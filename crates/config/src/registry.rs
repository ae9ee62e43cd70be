//! `llms/_registry.toml`: the registry's version, global settings (validation mode, hot reload,
//! debounce), and which files make up each kind of entry.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use echelon_domain::spec::{RetryBudgetPolicy, RouteDefaults};
use serde::Serialize;

use crate::de::{Here, from_node};
use crate::diagnostic::{Diagnostic, DiagnosticKind, Location};
use crate::env::Env;
use crate::files::{Files, normalize};
use crate::interpolate::interpolate;
use crate::node::KeyPath;
use crate::raw::{RawRegistry, RawRegistryEntry, RawRouteDefaults};
use crate::value::{Choice, OptVal, POSITIVE, Range, choice_from_val};

/// The registry file, relative to the configuration root.
pub(crate) const REGISTRY_FILE: &str = "llms/_registry.toml";
/// The registry versions this loader understands.
pub const REGISTRY_VERSION: u32 = 1;

/// What happens to a tree with errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationMode {
    /// Any error refuses the whole tree.
    #[default]
    Strict,
    /// Broken entries (and what references them) are dropped with warnings; the rest loads.
    /// Errors in `gateway.toml` or the registry still refuse the tree.
    Lenient,
}

impl Choice for ValidationMode {
    const WHAT: &'static str = "validation mode";
    fn names() -> &'static [(Self, &'static str)] {
        &[(Self::Strict, "strict"), (Self::Lenient, "lenient")]
    }
}

choice_from_val!(ValidationMode);

/// The registry's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistrySettings {
    /// `[registry] version`.
    pub version: u32,
    /// `[global] validation`. Default `strict`.
    pub validation: ValidationMode,
    /// `[global] hot_reload`: whether the gateway watches the tree. Default `true`.
    pub hot_reload: bool,
    /// `[global] debounce`: quiet time after the last change before a reload. Default 500 ms.
    pub debounce: Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            version: REGISTRY_VERSION,
            validation: ValidationMode::Strict,
            hot_reload: true,
            debounce: Duration::from_millis(500),
        }
    }
}

/// A kind of entry of the `llms/` tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Providers,
    Pools,
    TaskGroups,
    Wrappers,
    Strategies,
}

impl Kind {
    pub(crate) const ALL: [Self; 5] = [
        Self::Providers,
        Self::Pools,
        Self::TaskGroups,
        Self::Wrappers,
        Self::Strategies,
    ];

    /// Its folder under `llms/`.
    pub(crate) fn folder(self) -> &'static str {
        match self {
            Self::Providers => "providers",
            Self::Pools => "pools",
            Self::TaskGroups => "task-groups",
            Self::Wrappers => "wrappers",
            Self::Strategies => "strategies",
        }
    }

    /// Its table in the registry.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Self::Providers => "providers",
            Self::Pools => "pools",
            Self::TaskGroups => "task_groups",
            Self::Wrappers => "wrappers",
            Self::Strategies => "strategies",
        }
    }
}

/// One file that defines an entry (a provider, a pool, a group, a set of wrappers, a strategy).
#[derive(Debug, Clone)]
pub(crate) struct EntryFile {
    /// The entry's name: the registry key, or the file stem.
    pub name: String,
    /// The file, relative to the configuration root.
    pub rel: String,
    /// `enabled = false` in the registry.
    pub enabled: bool,
    /// The registry entry, when there is one (for a missing file).
    pub reference: Option<Location>,
}

/// The registry: settings and the entry files of each kind.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry {
    pub settings: RegistrySettings,
    /// `[route_defaults]`: settings of routes without an echelon.
    pub route_defaults: RouteDefaults,
    /// `[retry_budget]`: the fleet-wide bound on retries.
    pub retry_budget: RetryBudgetPolicy,
    pub entries: BTreeMap<Kind, Vec<EntryFile>>,
    /// Kinds that the registry lists explicitly.
    pub listed: BTreeSet<Kind>,
}

impl Registry {
    /// The entry files of a kind.
    pub(crate) fn files(&self, kind: Kind) -> &[EntryFile] {
        self.entries.get(&kind).map_or(&[], Vec::as_slice)
    }

    /// Strategy names → files, for `inherits_from = "strategy:NAME"`.
    pub(crate) fn strategies(&self) -> BTreeMap<String, String> {
        self.files(Kind::Strategies)
            .iter()
            .filter(|e| e.enabled)
            .map(|e| (e.name.clone(), e.rel.clone()))
            .collect()
    }
}

/// Loads the registry (optional: without it, every folder is loaded with default settings).
/// Its problems go to `out`; they refuse the tree in every mode.
pub(crate) fn load(files: &mut Files, env: &dyn Env, out: &mut Vec<Diagnostic>) -> Registry {
    let mut registry = Registry::default();
    let mut raw: Option<RawRegistry> = None;
    if files.exists(REGISTRY_FILE) {
        match files.parse(REGISTRY_FILE, None) {
            Ok(mut tree) => {
                interpolate(&mut tree, &KeyPath::default(), env, out);
                let origin = tree.origin.clone();
                raw = from_node(&tree, &origin, &KeyPath::default(), out);
            }
            Err(diagnostics) => out.extend(diagnostics),
        }
    }
    if let Some(raw) = &raw {
        if let Some(version) = raw.registry.as_ref().and_then(|h| h.version.as_ref())
            && let Some(v) = version.get(out)
            && v != REGISTRY_VERSION
        {
            out.push(version.diagnostic(
                DiagnosticKind::InvalidValue,
                format!("unsupported registry version {v}"),
                Some(format!("this Echelon reads version {REGISTRY_VERSION}")),
            ));
        }
        if let Some(global) = &raw.global {
            let defaults = RegistrySettings::default();
            registry.settings = RegistrySettings {
                version: REGISTRY_VERSION,
                validation: global.validation.read_or(out, defaults.validation),
                hot_reload: global.hot_reload.read_or(out, defaults.hot_reload),
                debounce: global.debounce.read_or_in(
                    out,
                    Range::Between(Duration::from_millis(10), Duration::from_secs(60)),
                    defaults.debounce,
                ),
            };
        }
    }
    if let Some(table) = raw.as_ref().and_then(|raw| raw.route_defaults.as_ref()) {
        registry.route_defaults = route_defaults(table, out);
    }
    if let Some(table) = raw.as_ref().and_then(|raw| raw.retry_budget.as_ref()) {
        let d = RetryBudgetPolicy::default();
        registry.retry_budget = RetryBudgetPolicy {
            ratio: table
                .ratio
                .read_or_in(out, Range::Between(0.0, 10.0), d.ratio),
            min_per_second: table.min_per_second.read_or_in(
                out,
                Range::Between(0, 1_000_000),
                d.min_per_second,
            ),
            window: table.window.read_or_in(
                out,
                Range::Between(Duration::from_secs(1), Duration::from_secs(600)),
                d.window,
            ),
        };
    }
    for kind in Kind::ALL {
        let table = raw.as_ref().and_then(|raw| match kind {
            Kind::Providers => raw.providers.as_ref(),
            Kind::Pools => raw.pools.as_ref(),
            Kind::TaskGroups => raw.task_groups.as_ref(),
            Kind::Wrappers => raw.wrappers.as_ref(),
            Kind::Strategies => raw.strategies.as_ref(),
        });
        let entries = match table {
            Some(table) => {
                registry.listed.insert(kind);
                table
                    .iter()
                    .filter_map(|(name, entry)| listed_entry(kind, name, entry, out))
                    .collect()
            }
            None => files
                .list(&format!("llms/{}", kind.folder()))
                .into_iter()
                .map(|rel| EntryFile {
                    name: stem(&rel).to_owned(),
                    rel,
                    enabled: true,
                    reference: None,
                })
                .collect(),
        };
        registry.entries.insert(kind, entries);
    }
    registry
}

/// `[route_defaults]`, in the ranges of the task-group and echelon keys of the same names.
fn route_defaults(raw: &RawRouteDefaults, out: &mut Vec<Diagnostic>) -> RouteDefaults {
    let d = RouteDefaults::default();
    RouteDefaults {
        max_attempts: raw
            .max_attempts
            .read_or_in(out, Range::Between(1, 100), d.max_attempts),
        retry_delay: raw.retry_delay.read_or(out, d.retry_delay),
        deadline: raw.deadline.read_or_in(out, POSITIVE, d.deadline),
        timeout: raw.timeout.read_or_in(out, POSITIVE, d.timeout),
        first_token_timeout: raw.first_token_timeout.read_or_in(
            out,
            POSITIVE,
            d.first_token_timeout,
        ),
        idle_timeout: raw.idle_timeout.read_or_in(out, POSITIVE, d.idle_timeout),
        max_retries: raw
            .max_retries
            .read_or_in(out, Range::Between(0, 10), d.max_retries),
        retry_after_max_wait: raw
            .retry_after_max_wait
            .read_or(out, d.retry_after_max_wait),
    }
}

fn listed_entry(
    kind: Kind,
    name: &str,
    entry: &RawRegistryEntry,
    out: &mut Vec<Diagnostic>,
) -> Option<EntryFile> {
    let enabled = entry.enabled.read_or(out, true);
    let rel = match &entry.file {
        Some(val) => {
            let file = val.get(out)?;
            match normalize("llms", &file) {
                Some(rel) => rel,
                None => {
                    out.push(val.diagnostic(
                        DiagnosticKind::InvalidValue,
                        format!("`{file}` points outside the configuration directory"),
                        Some("registry paths are relative to the llms/ folder".into()),
                    ));
                    return None;
                }
            }
        }
        None => format!("llms/{}/{name}.toml", kind.folder()),
    };
    Some(EntryFile {
        name: name.to_owned(),
        rel,
        enabled,
        reference: here_location(&entry.here),
    })
}

fn here_location(here: &Here) -> Option<Location> {
    here.location.clone()
}

/// The file stem of a relative path.
pub(crate) fn stem(rel: &str) -> &str {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.strip_suffix(".toml").unwrap_or(name)
}
