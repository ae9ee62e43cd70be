//! Builds the rules' [`Workspace`] model from `cargo metadata` and the files of the tree.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cargo_metadata::{CargoOpt, DependencyKind, Metadata, MetadataCommand, Node, PackageId};

use crate::model::{Dep, DepKind, Manifest, Package, SourceFile, Workspace};

/// Directories never searched for source files: build output and version control.
const SKIPPED_DIRS: &[&str] = &["target", ".git"];

/// The workspace root: xtask lives one level below it.
pub fn root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// `cargo metadata` for the whole workspace with every feature of every member enabled, so that
/// the resolve graph holds each dependency any feature can switch on.
pub fn metadata(root: &Path) -> Result<Metadata> {
    MetadataCommand::new()
        .manifest_path(root.join("Cargo.toml"))
        .features(CargoOpt::AllFeatures)
        .exec()
        .context("cargo metadata failed")
}

/// The model of the workspace at `root`.
pub fn load(root: &Path) -> Result<Workspace> {
    let metadata = metadata(root)?;
    let mut workspace = from_metadata(&metadata)?;
    workspace.sources = sources(root, metadata.target_directory.as_std_path())?;
    Ok(workspace)
}

/// Packages and member manifests from `cargo metadata` output.
pub fn from_metadata(metadata: &Metadata) -> Result<Workspace> {
    let resolve = metadata
        .resolve
        .as_ref()
        .context("cargo metadata returned no resolve graph")?;
    let nodes: HashMap<&PackageId, &Node> = resolve.nodes.iter().map(|n| (&n.id, n)).collect();
    let by_id: HashMap<&PackageId, &cargo_metadata::Package> =
        metadata.packages.iter().map(|p| (&p.id, p)).collect();
    let mut workspace = Workspace::default();
    for package in &metadata.packages {
        let member = metadata.workspace_members.contains(&package.id);
        let node = nodes.get(&package.id).copied();
        let deps = package
            .dependencies
            .iter()
            .map(|dep| {
                let kind = match dep.kind {
                    DependencyKind::Development => DepKind::Dev,
                    DependencyKind::Build => DepKind::Build,
                    _ => DepKind::Normal,
                };
                Dep {
                    name: dep.name.clone(),
                    key: dep.rename.clone().unwrap_or_else(|| dep.name.clone()),
                    resolved: node.and_then(|node| resolved(node, dep, &by_id)),
                    kind,
                    optional: dep.optional,
                    default_features: dep.uses_default_features,
                    features: dep.features.clone(),
                }
            })
            .collect();
        workspace.packages.push(Package {
            id: package.id.repr.clone(),
            name: package.name.to_string(),
            member,
            deps,
            features: package.features.clone(),
        });
        if member {
            let path = package.manifest_path.as_std_path();
            let text = fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", package.manifest_path))?;
            let shown = path
                .strip_prefix(metadata.workspace_root.as_std_path())
                .unwrap_or(path);
            workspace.manifests.push(Manifest {
                path: slashed(shown),
                text,
            });
        }
    }
    Ok(workspace)
}

/// The package a declared dependency resolved to: same name, same kind, and (when a package
/// depends on two versions of one crate) the version its requirement matches.
fn resolved(
    node: &Node,
    dep: &cargo_metadata::Dependency,
    by_id: &HashMap<&PackageId, &cargo_metadata::Package>,
) -> Option<String> {
    let candidates: Vec<&cargo_metadata::Package> = node
        .deps
        .iter()
        .filter(|d| d.dep_kinds.iter().any(|k| k.kind == dep.kind))
        .filter_map(|d| by_id.get(&d.pkg).copied())
        .filter(|p| p.name.as_str() == dep.name)
        .collect();
    let chosen = match candidates.as_slice() {
        [only] => Some(*only),
        several => several
            .iter()
            .copied()
            .find(|p| dep.req.matches(&p.version)),
    };
    chosen.map(|p| p.id.repr.clone())
}

/// Every `.rs` file under `root`, skipping [`SKIPPED_DIRS`] and the target directory, sorted by
/// path.
pub fn sources(root: &Path, target_dir: &Path) -> Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                let name = entry.file_name();
                let skipped = SKIPPED_DIRS.iter().any(|s| name == *s) || path == target_dir;
                if !skipped {
                    pending.push(path);
                }
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "rs") {
                let bytes =
                    fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                files.push(SourceFile {
                    path: slashed(path.strip_prefix(root).unwrap_or(&path)),
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn slashed(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::{load, root};
    use crate::rules::{self, DOMAIN};

    /// The rules hold for this very tree, so a plain `cargo test` fails on a violation.
    #[test]
    fn this_workspace_follows_the_architecture_rules() {
        let workspace = load(&root()).expect("the workspace loads");
        let violations = rules::check(&workspace);
        let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert!(violations.is_empty(), "\n{}\n", report.join("\n"));
    }

    /// The loader sees what the rules need; otherwise they would pass vacuously.
    #[test]
    fn the_loaded_model_is_not_empty() {
        let workspace = load(&root()).expect("the workspace loads");
        let members: Vec<&str> = workspace.members().map(|p| p.name.as_str()).collect();
        for expected in [DOMAIN, "echelon-interfaces", "xtask"] {
            assert!(
                members.contains(&expected),
                "{expected} missing from {members:?}"
            );
        }
        assert_eq!(workspace.manifests.len(), members.len());
        assert!(
            workspace
                .sources
                .iter()
                .any(|f| f.path == "xtask/src/rules.rs")
        );
        assert!(
            !workspace
                .sources
                .iter()
                .any(|f| f.path.starts_with("target/"))
        );
        let domain = workspace.members().find(|p| p.name == DOMAIN).unwrap();
        let closure = rules::domain_closure(&workspace, domain);
        let names: Vec<&str> = closure
            .keys()
            .filter_map(|id| workspace.package(id))
            .map(|p| p.name.as_str())
            .collect();
        assert!(names.contains(&"thiserror"), "domain closure: {names:?}");
        assert!(
            names.contains(&"serde"),
            "the serde feature not followed: {names:?}"
        );
    }
}
