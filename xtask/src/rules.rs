//! The architecture rules of DESIGN.md §1 and STYLE.md, as pure functions over [`Workspace`].
//!
//! Each rule has a name that appears in every violation it reports and in the Architecture
//! Invariants of `docs/ARCHITECTURE.md`. The tables below (crate edges, the domain's dependency
//! allowlist, the denied crates, the vague words) are the single source of truth: change them here,
//! in a reviewed commit, never by silencing a rule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::lex::{self, Token};
use crate::model::{DepKind, Manifest, Package, SourceFile, Workspace};

#[cfg(test)]
mod tests;

/// Rule: workspace crates depend on each other only along [`CRATE_EDGES`].
pub const CRATE_EDGES_RULE: &str = "crate-edges";
/// Rule: everything `echelon-domain` builds on is on [`DOMAIN_ALLOWLIST`].
pub const DOMAIN_ALLOWLIST_RULE: &str = "domain-allowlist";
/// Rule: members take every dependency from `[workspace.dependencies]`.
pub const WORKSPACE_DEPS_RULE: &str = "workspace-deps";
/// Rule: members take their lints from `[workspace.lints]`.
pub const WORKSPACE_LINTS_RULE: &str = "workspace-lints";
/// Rule: no identifier is built on a word from [`VAGUE_WORDS`].
pub const VAGUE_NAMES_RULE: &str = "vague-names";
/// Rule: no unfinished-code macros.
pub const UNFINISHED_CODE_RULE: &str = "unfinished-code";
/// Rule: no test is skipped or passes by panicking.
pub const TEST_ATTRIBUTES_RULE: &str = "test-attributes";
/// Rule: every Rust file opens with a `//!` line.
pub const FILE_HEADER_RULE: &str = "file-header";

/// Every rule with a one-line summary, in the order they run.
pub const RULES: &[(&str, &str)] = &[
    (
        CRATE_EDGES_RULE,
        "workspace crates depend on each other only along the edge table",
    ),
    (
        DOMAIN_ALLOWLIST_RULE,
        "echelon-domain builds only on allowlisted crates",
    ),
    (
        WORKSPACE_DEPS_RULE,
        "members take every dependency from [workspace.dependencies]",
    ),
    (
        WORKSPACE_LINTS_RULE,
        "members take their lints from [workspace.lints]",
    ),
    (
        VAGUE_NAMES_RULE,
        "no identifier is built on a banned vague word",
    ),
    (UNFINISHED_CODE_RULE, "no unfinished-code macros"),
    (TEST_ATTRIBUTES_RULE, "no ignored or should_panic tests"),
    (FILE_HEADER_RULE, "every .rs file starts with a //! line"),
];

/// The domain crate, whose dependency set is held to [`DOMAIN_ALLOWLIST`].
pub const DOMAIN: &str = "echelon-domain";

/// The fault-injecting fake upstream: a test and demo tool, not a layer of the gateway.
pub const FAKE_UPSTREAM: &str = "echelon-fake-upstream";
/// Hand-made topologies shared by the crates' tests and benches.
pub const TEST_SUPPORT: &str = "echelon-test-support";

/// Which workspace crates each workspace crate may depend on (DESIGN.md §1). A crate missing
/// from this table is itself a violation, so a new crate gets a conscious place in the layering.
pub const CRATE_EDGES: &[(&str, &[&str])] = &[
    (DOMAIN, &[]),
    ("echelon-config", &[DOMAIN]),
    ("echelon-application", &[DOMAIN]),
    ("echelon-infrastructure", &[DOMAIN, "echelon-application"]),
    // It speaks the providers' wire formats, so it builds on the adapters that define them.
    (FAKE_UPSTREAM, &[DOMAIN, "echelon-infrastructure"]),
    // Spec values only: the domain's tests use it too, so it builds on nothing else.
    (TEST_SUPPORT, &[DOMAIN]),
    (
        "echelon-interfaces",
        &[
            DOMAIN,
            "echelon-application",
            "echelon-config",
            "echelon-infrastructure",
            // `echelon mock-upstream` and `echelon demo` serve it.
            FAKE_UPSTREAM,
        ],
    ),
    ("xtask", &[]),
    // The benchmark drives the release `echelon` binary as a process; it links no workspace crate.
    ("xtask-bench", &[]),
];

/// Workspace crates a crate may take as dev-dependencies only, on top of its [`CRATE_EDGES`]:
/// test tools its tests run against, which its library never sees.
pub const CRATE_DEV_EDGES: &[(&str, &[&str])] = &[
    (DOMAIN, &[TEST_SUPPORT]),
    ("echelon-application", &[TEST_SUPPORT]),
    ("echelon-infrastructure", &[FAKE_UPSTREAM, TEST_SUPPORT]),
    // Its tests start a real redis-server through echelon-test-support.
    ("echelon-interfaces", &[TEST_SUPPORT]),
];

/// Every crate `echelon-domain` may build on, with all its features enabled, and why.
///
/// Generated once from `cargo metadata` (`cargo xtask domain-deps` prints the current set) and
/// kept explicit: adding a line here is a design decision, not a formality.
pub const DOMAIN_ALLOWLIST: &[(&str, &str)] = &[
    ("thiserror", "the domain's error enums"),
    ("thiserror-impl", "thiserror's derive"),
    ("futures-core", "the Stream type of the chat port"),
    ("serde", "serialization behind the domain's `serde` feature"),
    ("serde_core", "serde's core traits"),
    ("serde_derive", "serde's derive"),
    ("proc-macro2", "support crate of the derives above"),
    ("quote", "support crate of the derives above"),
    ("syn", "support crate of the derives above"),
    ("unicode-ident", "support crate of the derives above"),
];

/// Crates the domain must never build on, with the reason and the way out. A name ending in `*`
/// matches every crate with that prefix.
pub const DOMAIN_DENIED: &[(&str, &str)] = &[
    (
        "tokio",
        "the domain has no async runtime: define a port (a native async trait) in echelon-domain \
         and implement it with tokio in echelon-infrastructure; take time from the clock port",
    ),
    (
        "reqwest",
        "the domain performs no I/O: provider HTTP clients are adapters in echelon-infrastructure",
    ),
    (
        "hyper",
        "the domain performs no I/O: HTTP clients belong in echelon-infrastructure, the server \
         in echelon-interfaces",
    ),
    (
        "axum",
        "the HTTP server is a driving adapter in echelon-interfaces; the domain never sees HTTP",
    ),
    (
        "figment",
        "configuration files are read by echelon-config, which hands validated domain values to \
         the domain",
    ),
    (
        "toml",
        "configuration files are parsed by echelon-config, which hands validated domain values to \
         the domain",
    ),
    (
        "opentelemetry*",
        "telemetry is an adapter: report through a port of echelon-domain (e.g. the metrics sink) \
         implemented in echelon-infrastructure",
    ),
    (
        "anyhow",
        "the domain returns small thiserror enums per operation; anyhow is only for xtask and main",
    ),
    (
        "async-trait",
        "ports are native async traits (`fn ..() -> impl Future<..> + Send`); async-trait's boxing \
         is not needed",
    ),
];

/// Words an identifier must not be built on (STYLE.md, Naming): they say nothing about what a
/// thing does.
pub const VAGUE_WORDS: &[&str] = &["Enhanced", "Unified", "Intelligent", "Smart", "Advanced"];

/// Macros that mark unfinished code.
const UNFINISHED_MACROS: &[&str] = &["todo", "unimplemented"];

/// Test attributes that hide a test or let it pass by panicking.
const TEST_ATTRIBUTES: &[&str] = &["ignore", "should_panic"];

/// One broken rule: which, where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule's name, one of [`RULES`].
    pub rule: &'static str,
    /// A crate name, a manifest path or `file:line`.
    pub place: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {}: {}\n    fix: {}",
            self.rule, self.place, self.message, self.fix
        )
    }
}

/// Runs every rule over the workspace.
pub fn check(workspace: &Workspace) -> Vec<Violation> {
    let mut violations = crate_edges(workspace);
    violations.extend(domain_allowlist(workspace));
    for manifest in &workspace.manifests {
        violations.extend(manifest_rules(manifest));
    }
    for file in &workspace.sources {
        violations.extend(source_rules(file));
    }
    violations
}

/// [`CRATE_EDGES_RULE`]: normal and build dependencies between workspace crates follow
/// [`CRATE_EDGES`]; a dev-dependency on a workspace crate is allowed where the normal edge is, on
/// the test tools of [`CRATE_DEV_EDGES`], and on the crate itself (to enable its test features).
pub fn crate_edges(workspace: &Workspace) -> Vec<Violation> {
    let members: BTreeSet<&str> = workspace.members().map(|p| p.name.as_str()).collect();
    let mut violations = Vec::new();
    for package in workspace.members() {
        let Some(allowed) = allowed_edges(&package.name) else {
            violations.push(Violation {
                rule: CRATE_EDGES_RULE,
                place: package.name.clone(),
                message: "this workspace crate has no row in the crate-edge table".to_owned(),
                fix: "give it a place in the layering: add a row to CRATE_EDGES in \
                      xtask/src/rules.rs and describe it in docs/ARCHITECTURE.md"
                    .to_owned(),
            });
            continue;
        };
        let mut seen = BTreeSet::new();
        for dep in &package.deps {
            if !members.contains(dep.name.as_str()) || allowed.contains(&dep.name.as_str()) {
                continue;
            }
            let dev_allowed = allowed_dev_edges(&package.name);
            if dep.kind == DepKind::Dev
                && (dep.name == package.name || dev_allowed.contains(&dep.name.as_str()))
            {
                continue;
            }
            if !seen.insert((dep.name.clone(), dep.kind)) {
                continue;
            }
            let mut may = if allowed.is_empty() {
                "no workspace crate".to_owned()
            } else {
                allowed.join(", ")
            };
            if dep.kind == DepKind::Dev && !dev_allowed.is_empty() {
                may.push_str(&format!(
                    " (and, as a dev-dependency, {})",
                    dev_allowed.join(", ")
                ));
            }
            violations.push(Violation {
                rule: CRATE_EDGES_RULE,
                place: package.name.clone(),
                message: format!(
                    "depends on {} ({}), but it may only depend on {may}",
                    dep.name,
                    dep.kind.describe(),
                ),
                fix: format!(
                    "remove the dependency: move the code both need into a crate {} may depend \
                     on, or define a port in echelon-domain that an adapter implements and the \
                     composition root (echelon-interfaces) wires in",
                    package.name,
                ),
            });
        }
    }
    violations
}

fn allowed_edges(name: &str) -> Option<&'static [&'static str]> {
    CRATE_EDGES
        .iter()
        .find(|(krate, _)| *krate == name)
        .map(|(_, allowed)| *allowed)
}

fn allowed_dev_edges(name: &str) -> &'static [&'static str] {
    CRATE_DEV_EDGES
        .iter()
        .find(|(krate, _)| *krate == name)
        .map_or(&[], |(_, allowed)| *allowed)
}

/// [`DOMAIN_ALLOWLIST_RULE`]: every crate that `echelon-domain` builds on, with all of its features
/// enabled, is on [`DOMAIN_ALLOWLIST`] and not on [`DOMAIN_DENIED`].
pub fn domain_allowlist(workspace: &Workspace) -> Vec<Violation> {
    let Some(domain) = workspace.members().find(|p| p.name == DOMAIN) else {
        return vec![Violation {
            rule: DOMAIN_ALLOWLIST_RULE,
            place: DOMAIN.to_owned(),
            message: "the domain crate is not a workspace member".to_owned(),
            fix: "keep crates/domain (package echelon-domain) in the workspace members".to_owned(),
        }];
    };
    let mut violations = Vec::new();
    let mut reported = BTreeSet::new();
    // The walk stops at the first crate that breaks the rule, so a denied crate is reported
    // once, not together with everything it pulls in.
    for (id, chain) in walk_features(workspace, domain, true) {
        let Some(package) = workspace.package(&id) else {
            continue;
        };
        let name = package.name.as_str();
        if !reported.insert(name.to_owned()) {
            continue;
        }
        let via = chain.join(" -> ");
        if let Some(reason) = denied_reason(name) {
            violations.push(Violation {
                rule: DOMAIN_ALLOWLIST_RULE,
                place: DOMAIN.to_owned(),
                message: format!("builds on `{name}`, which the domain must never use (via {via})"),
                fix: reason.to_owned(),
            });
        } else if !DOMAIN_ALLOWLIST.iter().any(|(allowed, _)| *allowed == name) {
            violations.push(Violation {
                rule: DOMAIN_ALLOWLIST_RULE,
                place: DOMAIN.to_owned(),
                message: format!("builds on `{name}`, which is not on the allowlist (via {via})"),
                fix: "drop the dependency (or the feature that pulls it in) and keep the domain \
                      pure; if the domain truly needs it, add it with a reason to \
                      DOMAIN_ALLOWLIST in xtask/src/rules.rs"
                    .to_owned(),
            });
        }
    }
    violations
}

fn denied_reason(name: &str) -> Option<&'static str> {
    DOMAIN_DENIED.iter().find_map(|(pattern, reason)| {
        let hit = match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pattern,
        };
        hit.then_some(*reason)
    })
}

/// The packages `root` builds on with all of its features enabled, each with the first path of
/// package names that reaches it. Follows normal and build dependencies, never dev-dependencies,
/// and resolves features the way cargo does (`dep:x`, `x/feature`, `x?/feature`, default features),
/// so that features which other workspace members switch on do not leak into the domain's set.
pub fn domain_closure(workspace: &Workspace, root: &Package) -> BTreeMap<String, Vec<String>> {
    walk_features(workspace, root, false)
}

/// [`domain_closure`], optionally not looking past a crate that is off the allowlist.
fn walk_features(
    workspace: &Workspace,
    root: &Package,
    stop_at_unlisted: bool,
) -> BTreeMap<String, Vec<String>> {
    let mut walk = FeatureWalk {
        workspace,
        root: root.id.clone(),
        stop_at_unlisted,
        chains: BTreeMap::new(),
        features: BTreeSet::new(),
        enabled: BTreeSet::new(),
        weak: BTreeMap::new(),
    };
    walk.reach(&root.id, vec![root.name.clone()]);
    let mut all: Vec<&str> = root.features.keys().map(String::as_str).collect();
    all.push("default");
    for feature in all {
        walk.activate(&root.id, feature);
    }
    walk.chains.remove(&root.id);
    walk.chains
}

struct FeatureWalk<'w> {
    workspace: &'w Workspace,
    root: String,
    stop_at_unlisted: bool,
    /// Reached package id -> names on the path from the root.
    chains: BTreeMap<String, Vec<String>>,
    /// Activated (package id, feature).
    features: BTreeSet<(String, String)>,
    /// Enabled (package id, dependency index).
    enabled: BTreeSet<(String, usize)>,
    /// `x?/feature` waiting for optional dependency key `x` of a package: (id, key) -> features.
    weak: BTreeMap<(String, String), Vec<String>>,
}

impl<'w> FeatureWalk<'w> {
    fn package(&self, id: &str) -> Option<&'w Package> {
        self.workspace.package(id)
    }

    fn reach(&mut self, id: &str, chain: Vec<String>) {
        if self.chains.contains_key(id) {
            return;
        }
        self.chains.insert(id.to_owned(), chain);
        let Some(package) = self.package(id) else {
            return;
        };
        let required: Vec<usize> = (0..package.deps.len())
            .filter(|&i| builds_with(package, i) && !package.deps[i].optional)
            .collect();
        for index in required {
            self.enable(id, index);
        }
    }

    /// Whether the dependencies of package `id` are followed.
    fn expands(&self, package: &Package) -> bool {
        !self.stop_at_unlisted
            || package.id == self.root
            || (denied_reason(&package.name).is_none()
                && DOMAIN_ALLOWLIST
                    .iter()
                    .any(|(name, _)| *name == package.name))
    }

    fn enable(&mut self, id: &str, index: usize) {
        let Some(package) = self.package(id) else {
            return;
        };
        if !self.expands(package) || !self.enabled.insert((id.to_owned(), index)) {
            return;
        }
        let dep = package.deps[index].clone();
        let Some(target) = dep.resolved.clone() else {
            return;
        };
        let mut chain = self.chains.get(id).cloned().unwrap_or_default();
        chain.push(dep.name.clone());
        self.reach(&target, chain);
        if dep.default_features {
            self.activate(&target, "default");
        }
        for feature in &dep.features {
            self.activate(&target, feature);
        }
        let waiting = self
            .weak
            .get(&(id.to_owned(), dep.key.clone()))
            .cloned()
            .unwrap_or_default();
        for feature in waiting {
            self.activate(&target, &feature);
        }
    }

    fn enable_key(&mut self, id: &str, key: &str) {
        for index in self.dep_indices(id, key) {
            self.enable(id, index);
        }
    }

    fn dep_indices(&self, id: &str, key: &str) -> Vec<usize> {
        self.package(id).map_or_else(Vec::new, |package| {
            (0..package.deps.len())
                .filter(|&i| builds_with(package, i) && package.deps[i].key == key)
                .collect()
        })
    }

    fn activate(&mut self, id: &str, feature: &str) {
        if !self.features.insert((id.to_owned(), feature.to_owned())) {
            return;
        }
        let Some(package) = self.package(id) else {
            return;
        };
        let Some(items) = package.features.get(feature).cloned() else {
            // Older metadata leaves out the implicit feature of an optional dependency.
            self.enable_key(id, feature);
            return;
        };
        for item in items {
            if let Some(key) = item.strip_prefix("dep:") {
                self.enable_key(id, key);
            } else if let Some((key, dep_feature)) = item.split_once('/') {
                if let Some(key) = key.strip_suffix('?') {
                    self.weak
                        .entry((id.to_owned(), key.to_owned()))
                        .or_default()
                        .push(dep_feature.to_owned());
                    let enabled: Vec<usize> = self
                        .dep_indices(id, key)
                        .into_iter()
                        .filter(|&i| self.enabled.contains(&(id.to_owned(), i)))
                        .collect();
                    for index in enabled {
                        self.activate_on_dep(id, index, dep_feature);
                    }
                } else {
                    for index in self.dep_indices(id, key) {
                        self.enable(id, index);
                        self.activate_on_dep(id, index, dep_feature);
                    }
                }
            } else {
                self.activate(id, &item);
            }
        }
    }

    fn activate_on_dep(&mut self, id: &str, index: usize, feature: &str) {
        let target = self
            .package(id)
            .and_then(|package| package.deps[index].resolved.clone());
        if let Some(target) = target {
            self.activate(&target, feature);
        }
    }
}

/// Whether dependency `index` of `package` is part of building it (not a dev-dependency).
fn builds_with(package: &Package, index: usize) -> bool {
    package.deps[index].kind != DepKind::Dev
}

const DEPENDENCY_TABLES: &[&str] = &[
    "dependencies",
    "dev-dependencies",
    "build-dependencies",
    "dev_dependencies",
    "build_dependencies",
];

/// Keys a member may put next to `workspace = true`; everything else (version, path, git,
/// default-features, package, ...) belongs in `[workspace.dependencies]`.
const MEMBER_DEPENDENCY_KEYS: &[&str] = &["workspace", "features", "optional"];

/// [`WORKSPACE_DEPS_RULE`] and [`WORKSPACE_LINTS_RULE`] over one member manifest.
pub fn manifest_rules(manifest: &Manifest) -> Vec<Violation> {
    let table = match manifest.text.parse::<toml::Table>() {
        Ok(table) => table,
        Err(error) => {
            return vec![Violation {
                rule: WORKSPACE_DEPS_RULE,
                place: manifest.path.clone(),
                message: format!("cannot parse the manifest: {}", error.message()),
                fix: "make it valid TOML".to_owned(),
            }];
        }
    };
    let mut violations = Vec::new();
    let mut sections: Vec<(String, &toml::Table)> = Vec::new();
    for name in DEPENDENCY_TABLES {
        if let Some(deps) = table.get(*name).and_then(toml::Value::as_table) {
            sections.push(((*name).to_owned(), deps));
        }
    }
    if let Some(targets) = table.get("target").and_then(toml::Value::as_table) {
        for (platform, inner) in targets {
            for name in DEPENDENCY_TABLES {
                if let Some(deps) = inner.get(*name).and_then(toml::Value::as_table) {
                    sections.push((format!("target.'{platform}'.{name}"), deps));
                }
            }
        }
    }
    for (section, deps) in sections {
        for (name, spec) in deps {
            if let Some(problem) = dependency_problem(spec) {
                violations.push(Violation {
                    rule: WORKSPACE_DEPS_RULE,
                    place: manifest.path.clone(),
                    message: format!("[{section}] `{name}` {problem}"),
                    fix: format!(
                        "declare `{name}` once in the root Cargo.toml's [workspace.dependencies] \
                         and write `{name}.workspace = true` here (features and optional may stay)"
                    ),
                });
            }
        }
    }
    violations.extend(lints_problem(&table).map(|problem| {
        Violation {
        rule: WORKSPACE_LINTS_RULE,
        place: manifest.path.clone(),
        message: problem,
        fix: "write `[lints]` with only `workspace = true`; change lints for everyone in the root \
              [workspace.lints], or allow one locally with #[allow(..., reason = \"...\")]"
            .to_owned(),
    }
    }));
    violations
}

fn dependency_problem(spec: &toml::Value) -> Option<String> {
    let Some(spec) = spec.as_table() else {
        return Some(format!(
            "declares its own version ({spec}) instead of `workspace = true`"
        ));
    };
    if spec.get("workspace").and_then(toml::Value::as_bool) != Some(true) {
        let own: Vec<&str> = spec.keys().map(String::as_str).collect();
        return Some(format!(
            "is declared on its own ({}) instead of `workspace = true`",
            own.join(", ")
        ));
    }
    let extra: Vec<&str> = spec
        .keys()
        .map(String::as_str)
        .filter(|key| !MEMBER_DEPENDENCY_KEYS.contains(key))
        .collect();
    (!extra.is_empty()).then(|| {
        format!(
            "adds {} next to `workspace = true`",
            extra
                .iter()
                .map(|key| format!("`{key}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn lints_problem(manifest: &toml::Table) -> Option<String> {
    let Some(lints) = manifest.get("lints") else {
        return Some("has no [lints] section, so the workspace lints do not apply".to_owned());
    };
    let Some(lints) = lints.as_table() else {
        return Some("[lints] is not a table".to_owned());
    };
    if lints.get("workspace").and_then(toml::Value::as_bool) != Some(true) {
        return Some("[lints] does not say `workspace = true`".to_owned());
    }
    let own: Vec<&str> = lints
        .keys()
        .map(String::as_str)
        .filter(|key| *key != "workspace")
        .collect();
    (!own.is_empty()).then(|| format!("[lints] adds its own tables: {}", own.join(", ")))
}

/// [`FILE_HEADER_RULE`], [`VAGUE_NAMES_RULE`], [`UNFINISHED_CODE_RULE`] and
/// [`TEST_ATTRIBUTES_RULE`] over one source file.
pub fn source_rules(file: &SourceFile) -> Vec<Violation> {
    let mut violations = Vec::new();
    let first = file.text.lines().next().unwrap_or("");
    if !first.starts_with("//!") {
        violations.push(Violation {
            rule: FILE_HEADER_RULE,
            place: format!("{}:1", file.path),
            message: if first.trim().is_empty() {
                "the file does not start with a `//!` line".to_owned()
            } else {
                format!(
                    "the file starts with `{}`, not a `//!` line",
                    shorten(first)
                )
            },
            fix: "start the file with a `//!` line that says what it is for".to_owned(),
        });
    }
    let tokens = lex::tokens(&file.text);
    violations.extend(vague_names(file, &tokens));
    violations.extend(unfinished_code(file, &tokens));
    violations.extend(test_attributes(file, &tokens));
    violations
}

fn shorten(line: &str) -> String {
    let line = line.trim();
    match line.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

fn vague_names(file: &SourceFile, tokens: &[Token]) -> Vec<Violation> {
    let mut reported = BTreeSet::new();
    let mut violations = Vec::new();
    for token in tokens {
        let Token::Ident { text, line } = token else {
            continue;
        };
        let Some(word) = vague_word(text) else {
            continue;
        };
        if !reported.insert(text.clone()) {
            continue;
        }
        violations.push(Violation {
            rule: VAGUE_NAMES_RULE,
            place: format!("{}:{line}", file.path),
            message: format!("identifier `{text}` is built on the vague word `{word}`"),
            fix:
                "name it after what it does or holds (e.g. `WeightedPool`, `retry_with_backoff`); \
                  see STYLE.md, Naming"
                    .to_owned(),
        });
    }
    violations
}

/// The banned word `ident` is built on, if any: as a CamelCase part or a snake_case segment,
/// compared without regard to case.
pub fn vague_word(ident: &str) -> Option<&'static str> {
    word_parts(ident).iter().find_map(|part| {
        VAGUE_WORDS
            .iter()
            .find(|word| word.eq_ignore_ascii_case(part))
            .copied()
    })
}

/// Splits an identifier into its words: at `_`, at lower-to-upper case changes (`SmartPool`), at
/// the end of an acronym (`HTTPServer` -> `HTTP`, `Server`) and between letters and digits.
pub fn word_parts(ident: &str) -> Vec<String> {
    let mut parts = Vec::new();
    for segment in ident.split('_').filter(|s| !s.is_empty()) {
        let chars: Vec<char> = segment.chars().collect();
        let mut current = String::new();
        for (i, &ch) in chars.iter().enumerate() {
            if let Some(&prev) = i.checked_sub(1).and_then(|p| chars.get(p)) {
                let next = chars.get(i + 1).copied();
                let boundary = (ch.is_uppercase() && (prev.is_lowercase() || prev.is_numeric()))
                    || (ch.is_uppercase()
                        && prev.is_uppercase()
                        && next.is_some_and(char::is_lowercase))
                    || (ch.is_numeric() != prev.is_numeric());
                if boundary && !current.is_empty() {
                    parts.push(std::mem::take(&mut current));
                }
            }
            current.push(ch);
        }
        if !current.is_empty() {
            parts.push(current);
        }
    }
    parts
}

fn unfinished_code(file: &SourceFile, tokens: &[Token]) -> Vec<Violation> {
    tokens
        .windows(2)
        .filter_map(|pair| {
            let Token::Ident { text, line } = &pair[0] else {
                return None;
            };
            (UNFINISHED_MACROS.contains(&text.as_str()) && pair[1].is_punct('!')).then(|| {
                Violation {
                    rule: UNFINISHED_CODE_RULE,
                    place: format!("{}:{line}", file.path),
                    message: format!("`{text}!` marks unfinished code"),
                    fix: "finish the code path, or return a typed error that says why it cannot \
                          be served; open an issue for the missing work"
                        .to_owned(),
                }
            })
        })
        .collect()
}

fn test_attributes(file: &SourceFile, tokens: &[Token]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (start, token) in tokens.iter().enumerate() {
        if !token.is_punct('#') {
            continue;
        }
        let mut at = start + 1;
        if tokens.get(at).is_some_and(|t| t.is_punct('!')) {
            at += 1;
        }
        if !tokens.get(at).is_some_and(|t| t.is_punct('[')) {
            continue;
        }
        let body = attribute_body(&tokens[at + 1..]);
        let Some(Token::Ident { text: name, .. }) = body.first() else {
            continue;
        };
        // `#[ignore]`, `#[should_panic(..)]`, and the same inside `#[cfg_attr(.., ignore)]`.
        let found = if name == "cfg_attr" {
            body.iter().find_map(|t| match t {
                Token::Ident { text, .. } if TEST_ATTRIBUTES.contains(&text.as_str()) => {
                    Some(text.as_str())
                }
                _ => None,
            })
        } else {
            TEST_ATTRIBUTES
                .contains(&name.as_str())
                .then_some(name.as_str())
        };
        if let Some(attribute) = found {
            violations.push(Violation {
                rule: TEST_ATTRIBUTES_RULE,
                place: format!("{}:{}", file.path, token.line()),
                message: format!("`#[{attribute}]` on a test"),
                fix: if attribute == "ignore" {
                    "make the test fast and deterministic (fake clock, paused tokio time, local \
                     fakes) and let it run, or delete it"
                        .to_owned()
                } else {
                    "assert on the returned error or the observable state instead of expecting \
                     a panic"
                        .to_owned()
                },
            });
        }
    }
    violations
}

/// The tokens of an attribute after its `[`, up to the matching `]`.
fn attribute_body(tokens: &[Token]) -> &[Token] {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate() {
        if token.is_punct('[') {
            depth += 1;
        } else if token.is_punct(']') {
            if depth == 0 {
                return &tokens[..i];
            }
            depth -= 1;
        }
    }
    tokens
}
