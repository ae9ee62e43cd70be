//! The in-memory model the architecture rules read: packages with their dependencies, member
//! manifests and source files.
//!
//! The model is plain data so that tests can build a synthetic workspace by hand; only
//! [`crate::workspace`] knows how to fill it from `cargo metadata` and the file system.

use std::collections::BTreeMap;

/// Everything the architecture rules look at.
#[derive(Debug, Clone, Default)]
pub struct Workspace {
    /// Every package of the resolved graph, workspace members included.
    pub packages: Vec<Package>,
    /// The members' manifests, as text.
    pub manifests: Vec<Manifest>,
    /// Every `.rs` file of the tree outside `target/` and `.git/`.
    pub sources: Vec<SourceFile>,
}

impl Workspace {
    /// The workspace members, in model order.
    pub fn members(&self) -> impl Iterator<Item = &Package> {
        self.packages.iter().filter(|package| package.member)
    }

    /// The package with this id.
    pub fn package(&self, id: &str) -> Option<&Package> {
        self.packages.iter().find(|package| package.id == id)
    }
}

/// One package of the dependency graph.
#[derive(Debug, Clone, Default)]
pub struct Package {
    /// A unique id (`cargo metadata`'s package id, or any unique string in tests).
    pub id: String,
    pub name: String,
    /// Whether the package is a member of this workspace.
    pub member: bool,
    /// Declared dependencies of every kind, for every target platform.
    pub deps: Vec<Dep>,
    /// The `[features]` table, including the implicit feature of each optional dependency.
    pub features: BTreeMap<String, Vec<String>>,
}

/// One declared dependency.
#[derive(Debug, Clone)]
pub struct Dep {
    /// The package name of the dependency.
    pub name: String,
    /// The name that feature strings use for it: the rename if there is one, else `name`.
    pub key: String,
    /// The id of the package it resolved to; `None` when no build of the workspace activates it.
    pub resolved: Option<String>,
    pub kind: DepKind,
    pub optional: bool,
    pub default_features: bool,
    pub features: Vec<String>,
}

#[cfg(test)]
impl Dep {
    /// A plain, non-optional dependency with default features, as most tests need it.
    pub fn new(name: &str, kind: DepKind, resolved: Option<&str>) -> Self {
        Self {
            name: name.to_owned(),
            key: name.to_owned(),
            resolved: resolved.map(str::to_owned),
            kind,
            optional: false,
            default_features: true,
            features: Vec::new(),
        }
    }
}

/// Which table of the manifest a dependency comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DepKind {
    Normal,
    Build,
    Dev,
}

impl DepKind {
    /// How the manifest calls this kind, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Normal => "normal dependency",
            Self::Build => "build dependency",
            Self::Dev => "dev-dependency",
        }
    }
}

/// A workspace member's `Cargo.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Path relative to the workspace root, for messages.
    pub path: String,
    pub text: String,
}

/// One Rust source file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the workspace root, with `/` separators.
    pub path: String,
    pub text: String,
}
