//! Echelon configuration: loads the `configs/` TOML tree and turns it into validated domain values.
//!
//! Loading runs in two phases. Phase 1 reads every file into a tree that remembers where each
//! value came from, merges `inherits_from` parents, substitutes `${VAR}` references, and reads the
//! raw serde structs of [`raw`](crate) with unknown keys refused. Phase 2 converts those into the
//! domain's [`Topology`] and the [`GatewaySettings`], checking ranges, references and cycles. Both
//! phases collect every problem instead of stopping at the first, so one run reports all of them
//! as [`Diagnostic`]s with file, line, column, key path, reason and a suggestion.
//!
//! ```no_run
//! use std::path::Path;
//! use echelon_config::{ProcessEnv, load};
//!
//! match load(Path::new("configs"), &ProcessEnv) {
//!     Ok(config) => println!("{} wrappers", config.topology.wrappers.len()),
//!     Err(report) => eprintln!("{report}"),
//! }
//! ```

mod de;
mod diagnostic;
#[cfg(test)]
mod documented;
mod env;
mod files;
mod gateway;
pub mod import;
mod interpolate;
mod node;
mod raw;
mod registry;
mod render;
mod source;
mod topology;
mod value;
mod watch;

use std::path::Path;

use echelon_domain::spec::Topology;

pub use diagnostic::{ConfigReport, Diagnostic, DiagnosticKind, Location, Severity};
pub use env::{Env, ProcessEnv};
pub use gateway::{
    AlertCondition, AlertKind, AlertLevel, AlertMetric, AlertRule, AlertRules, AlertSettings,
    AuthSettings, Combine, Comparison, GatewaySettings, LogFormat, RedisSettings, ServerSettings,
    StateBackend, TelemetrySettings, TlsFiles,
};
pub use registry::{REGISTRY_VERSION, RegistrySettings, ValidationMode};
pub use render::{render_resolved, resolved_json};
pub use value::parse_duration;
pub use watch::{Reload, WatchError, WatchHandle, watch};

use crate::de::from_node;
use crate::diagnostic::sort_and_dedup;
use crate::files::Files;
use crate::interpolate::interpolate;
use crate::node::{KeyPath, Node, Origin};
use crate::source::SourceFile;

/// The gateway settings file, relative to the configuration root.
pub const GATEWAY_FILE: &str = "gateway.toml";

/// A validated configuration tree.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    /// Providers, models, pools, task groups and wrappers.
    pub topology: Topology,
    /// `gateway.toml`, with environment overrides applied.
    pub gateway: GatewaySettings,
    /// `llms/_registry.toml` settings.
    pub registry: RegistrySettings,
    /// The validation mode the tree was loaded in (the registry's, unless overridden).
    pub validation: ValidationMode,
    /// Warnings; in lenient mode also every dropped entry and the problems that dropped it.
    pub warnings: Vec<Diagnostic>,
}

impl LoadedConfig {
    /// The settings of `self` that differ from the configuration a running gateway `started`
    /// with and only take effect on a restart, by key path: `server.listen` and the HTTP
    /// server's other limits, every `[telemetry]` and `[state]` setting, and the registry's
    /// `global.hot_reload` and `global.debounce` (the file watcher's). Everything else (the whole
    /// `llms/` tree, `[auth]`, `server.request_timeout`, `[alerts]`) takes effect on reload.
    pub fn restart_needed(&self, started: &Self) -> Vec<&'static str> {
        let mut keys = self.gateway.restart_needed(&started.gateway);
        if self.registry.hot_reload != started.registry.hot_reload {
            keys.push("global.hot_reload");
        }
        if self.registry.debounce != started.registry.debounce {
            keys.push("global.debounce");
        }
        keys
    }
}

/// Options of [`load_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Overrides the registry's `[global] validation` (e.g. `echelon config check --strict`).
    pub validation: Option<ValidationMode>,
}

/// Loads and validates the tree under `dir` (the folder holding `gateway.toml` and `llms/`).
///
/// # Errors
///
/// A [`ConfigReport`] with every problem when the tree (strict) or a part that cannot be dropped
/// (lenient: `gateway.toml`, the registry) is invalid.
pub fn load(dir: &Path, env: &dyn Env) -> Result<LoadedConfig, ConfigReport> {
    load_with(dir, env, &LoadOptions::default())
}

/// [`load`] with options.
///
/// # Errors
///
/// As [`load`].
pub fn load_with(
    dir: &Path,
    env: &dyn Env,
    options: &LoadOptions,
) -> Result<LoadedConfig, ConfigReport> {
    if !dir.is_dir() {
        return Err(ConfigReport {
            errors: vec![
                Diagnostic::error(
                    DiagnosticKind::Io,
                    format!("configuration directory `{}` does not exist", dir.display()),
                )
                .help("pass the folder that holds gateway.toml and llms/"),
            ],
            warnings: Vec::new(),
        });
    }
    let mut files = Files::new(dir);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let gateway = load_gateway(&mut files, env, &mut errors);
    let registry = registry::load(&mut files, env, &mut errors);
    let validation = options.validation.unwrap_or(registry.settings.validation);
    let built = topology::build(&mut files, &registry, env, validation);
    errors.extend(built.errors);
    warnings.extend(built.warnings);
    warnings.extend(unlisted_files(&files, &registry));

    // Warnings raised among the fatal problems (gateway, registry) stay warnings.
    let (fatal_warnings, fatal_errors): (Vec<_>, Vec<_>) = errors
        .into_iter()
        .partition(|d| d.severity == Severity::Warning);
    let mut errors = fatal_errors;
    warnings.extend(fatal_warnings);
    sort_and_dedup(&mut errors);
    sort_and_dedup(&mut warnings);
    if !errors.is_empty() {
        return Err(ConfigReport { errors, warnings });
    }
    Ok(LoadedConfig {
        topology: built.topology,
        gateway,
        registry: registry.settings,
        validation,
        warnings,
    })
}

fn load_gateway(files: &mut Files, env: &dyn Env, out: &mut Vec<Diagnostic>) -> GatewaySettings {
    let mut tree = if files.exists(GATEWAY_FILE) {
        match files.parse(GATEWAY_FILE, None) {
            Ok(tree) => tree,
            Err(diagnostics) => {
                out.extend(diagnostics);
                return GatewaySettings::default();
            }
        }
    } else {
        let file = std::sync::Arc::new(SourceFile::new(GATEWAY_FILE, String::new()));
        Node::empty_table(Origin::file_start(&file))
    };
    interpolate(&mut tree, &KeyPath::default(), env, out);
    gateway::apply_env_overrides(&mut tree, env, out);
    let origin = tree.origin.clone();
    match from_node::<raw::RawGateway>(&tree, &origin, &KeyPath::default(), out) {
        Some(raw) => gateway::build(raw, files.root(), out),
        None => GatewaySettings::default(),
    }
}

/// Files of a folder the registry lists explicitly that are neither listed nor inherited from.
fn unlisted_files(files: &Files, registry: &registry::Registry) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for kind in registry.listed.iter().copied() {
        let listed: Vec<&str> = registry
            .files(kind)
            .iter()
            .map(|e| e.rel.as_str())
            .collect();
        for rel in files.list(&format!("llms/{}", kind.folder())) {
            if !listed.contains(&rel.as_str()) && !files.parents.contains(&rel) {
                out.push(
                    Diagnostic::warning(
                        DiagnosticKind::Unused,
                        format!(
                            "`{rel}` is not listed in the registry's [{}] table and is not loaded",
                            kind.table()
                        ),
                    )
                    .at(Some(Location::File {
                        file: rel.clone(),
                        line: 1,
                        column: 1,
                    }))
                    .help(format!(
                        "add `{} = {{ file = \"{}\" }}` to llms/_registry.toml, or rename it to start with `_`",
                        registry::stem(&rel),
                        rel.trim_start_matches("llms/")
                    )),
                );
            }
        }
    }
    out
}
