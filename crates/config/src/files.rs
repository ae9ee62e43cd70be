//! Reading the tree: files relative to the configuration root (parsed once each), folder
//! listings, and `inherits_from` resolution with cycle detection and a depth limit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::diagnostic::{Diagnostic, DiagnosticKind, Location, did_you_mean};
use crate::node::{self, Node, Value, merge};
use crate::source::SourceFile;

/// Deepest `inherits_from` chain allowed.
pub(crate) const MAX_INHERITANCE_DEPTH: usize = 10;

/// Prefix of named strategy references in `inherits_from`.
pub(crate) const STRATEGY_PREFIX: &str = "strategy:";

/// The files of one configuration tree, read and parsed on demand.
#[derive(Debug)]
pub(crate) struct Files {
    root: PathBuf,
    parsed: HashMap<String, Result<Node, Vec<Diagnostic>>>,
    /// Files used as a parent by `inherits_from`.
    pub parents: BTreeSet<String>,
    /// Inheritance cycles already reported, by their files in sorted order: a cycle is found
    /// from each of its files, and is reported once.
    reported_cycles: BTreeSet<Vec<String>>,
}

/// Why a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    NotFound,
    NotUtf8,
    Other(String),
}

impl ReadError {
    /// A diagnostic naming the file, at `location` (the reference to it) when given.
    pub(crate) fn diagnostic(&self, rel: &str, location: Option<Location>) -> Diagnostic {
        let reason = match self {
            Self::NotFound => format!("file `{rel}` does not exist"),
            Self::NotUtf8 => format!("file `{rel}` is not valid UTF-8"),
            Self::Other(error) => format!("cannot read `{rel}`: {error}"),
        };
        Diagnostic::error(DiagnosticKind::Io, reason).at(location)
    }
}

impl Files {
    /// The configuration folder.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The tree under `root`.
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            parsed: HashMap::new(),
            parents: BTreeSet::new(),
            reported_cycles: BTreeSet::new(),
        }
    }

    /// Whether `rel` is an existing file.
    pub(crate) fn exists(&self, rel: &str) -> bool {
        self.root.join(rel).is_file()
    }

    /// Reads a file.
    pub(crate) fn read(&self, rel: &str) -> Result<Arc<SourceFile>, ReadError> {
        let bytes = std::fs::read(self.root.join(rel)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ReadError::NotFound,
            _ => ReadError::Other(e.kind().to_string()),
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)?;
        Ok(Arc::new(SourceFile::new(rel, text)))
    }

    /// Parses a file once; later calls return the same tree or the same diagnostics.
    /// `reference` locates the place that named the file, for a missing file.
    pub(crate) fn parse(
        &mut self,
        rel: &str,
        reference: Option<Location>,
    ) -> Result<Node, Vec<Diagnostic>> {
        if let Some(result) = self.parsed.get(rel) {
            return result.clone();
        }
        let result = match self.read(rel) {
            Ok(file) => node::parse(&file),
            Err(error) => {
                let at = reference.or_else(|| {
                    (error != ReadError::NotFound).then(|| Location::File {
                        file: rel.to_owned(),
                        line: 1,
                        column: 1,
                    })
                });
                Err(vec![error.diagnostic(rel, at)])
            }
        };
        self.parsed.insert(rel.to_owned(), result.clone());
        result
    }

    /// The `.toml` files directly in folder `rel_dir`, sorted; files whose name starts with `_`
    /// or `.` are fragments for `inherits_from` and are not listed.
    pub(crate) fn list(&self, rel_dir: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join(rel_dir)) else {
            return Vec::new();
        };
        let mut files: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| {
                name.ends_with(".toml") && !name.starts_with('_') && !name.starts_with('.')
            })
            .map(|name| format!("{rel_dir}/{name}"))
            .collect();
        files.sort();
        files
    }

    /// Loads `rel` with its `inherits_from` parents merged in (parents in order, then the file
    /// itself; the child wins). `None` when it or a parent is broken; problems go to `out`.
    pub(crate) fn resolve(
        &mut self,
        rel: &str,
        reference: Option<Location>,
        strategies: &BTreeMap<String, String>,
        out: &mut Vec<Diagnostic>,
    ) -> Option<Node> {
        self.resolve_chain(rel, reference, strategies, &mut Vec::new(), out)
    }

    fn resolve_chain(
        &mut self,
        rel: &str,
        reference: Option<Location>,
        strategies: &BTreeMap<String, String>,
        chain: &mut Vec<String>,
        out: &mut Vec<Diagnostic>,
    ) -> Option<Node> {
        let mut tree = match self.parse(rel, reference) {
            Ok(tree) => tree,
            Err(diagnostics) => {
                out.extend(diagnostics);
                return None;
            }
        };
        let Some(inherits) = tree.as_table_mut().and_then(|t| t.remove("inherits_from")) else {
            return Some(tree);
        };
        let refs: Vec<&Node> = match &inherits.value.value {
            Value::Str(_) => vec![&inherits.value],
            Value::Array(items) => items.iter().collect(),
            _ => {
                out.push(
                    Diagnostic::error(
                        DiagnosticKind::WrongType,
                        format!(
                            "expected a path or a list of paths, found {}",
                            inherits.value.type_name()
                        ),
                    )
                    .at(Some(inherits.value.origin.location()))
                    .key("inherits_from"),
                );
                return None;
            }
        };
        chain.push(rel.to_owned());
        let mut ok = true;
        let mut base: Option<Node> = None;
        for reference in refs {
            let location = reference.origin.location();
            let Value::Str(text) = &reference.value else {
                out.push(
                    Diagnostic::error(
                        DiagnosticKind::WrongType,
                        format!("expected a path, found {}", reference.type_name()),
                    )
                    .at(Some(location))
                    .key("inherits_from"),
                );
                ok = false;
                continue;
            };
            let Some(parent) = self.parent_path(rel, &text.value, &location, strategies, out)
            else {
                ok = false;
                continue;
            };
            if let Some(start) = chain.iter().position(|f| *f == parent) {
                let mut cycle: Vec<&str> = chain[start..].iter().map(String::as_str).collect();
                let mut members: Vec<String> = cycle.iter().map(|f| (*f).to_owned()).collect();
                members.sort();
                cycle.push(&parent);
                ok = false;
                if !self.reported_cycles.insert(members) {
                    continue;
                }
                out.push(
                    Diagnostic::error(
                        DiagnosticKind::Inheritance,
                        format!("inheritance cycle: {}", cycle.join(" → ")),
                    )
                    .at(Some(location))
                    .key("inherits_from")
                    .help("remove one of the `inherits_from` references of the cycle"),
                );
                continue;
            }
            if chain.len() > MAX_INHERITANCE_DEPTH {
                let mut path: Vec<&str> = chain.iter().map(String::as_str).collect();
                path.push(&parent);
                out.push(
                    Diagnostic::error(
                        DiagnosticKind::Inheritance,
                        format!(
                            "inheritance deeper than {MAX_INHERITANCE_DEPTH} levels: {}",
                            path.join(" → ")
                        ),
                    )
                    .at(Some(location))
                    .key("inherits_from"),
                );
                ok = false;
                continue;
            }
            self.parents.insert(parent.clone());
            match self.resolve_chain(&parent, Some(location), strategies, chain, out) {
                Some(node) => {
                    base = Some(match base {
                        Some(base) => merge(base, node),
                        None => node,
                    });
                }
                None => ok = false,
            }
        }
        chain.pop();
        if !ok {
            return None;
        }
        Some(match base {
            Some(base) => merge(base, tree),
            None => tree,
        })
    }

    /// The file an `inherits_from` entry names: `strategy:NAME`, or a path relative to the
    /// file that contains it, which must stay inside the configuration root.
    fn parent_path(
        &self,
        rel: &str,
        target: &str,
        location: &Location,
        strategies: &BTreeMap<String, String>,
        out: &mut Vec<Diagnostic>,
    ) -> Option<String> {
        if let Some(name) = target.strip_prefix(STRATEGY_PREFIX) {
            return match strategies.get(name) {
                Some(file) => Some(file.clone()),
                None => {
                    out.push(
                        Diagnostic::error(
                            DiagnosticKind::DanglingReference,
                            format!("strategy `{name}` does not exist"),
                        )
                        .at(Some(location.clone()))
                        .key("inherits_from")
                        .maybe_help(
                            did_you_mean(name, strategies.keys().map(String::as_str)).or_else(
                                || {
                                    Some(
                                        "strategies are the files of llms/strategies/ (or the \
                                         registry's [strategies] table)"
                                            .to_owned(),
                                    )
                                },
                            ),
                        ),
                    );
                    None
                }
            };
        }
        let dir = rel.rsplit_once('/').map_or("", |(dir, _)| dir);
        match normalize(dir, target) {
            Some(path) => Some(path),
            None => {
                out.push(
                    Diagnostic::error(
                        DiagnosticKind::Inheritance,
                        format!("`{target}` points outside the configuration directory"),
                    )
                    .at(Some(location.clone()))
                    .key("inherits_from")
                    .help("paths are relative to the file that contains them"),
                );
                None
            }
        }
    }
}

/// Joins `rel` onto folder `dir` (both relative to the root) and resolves `.` and `..`
/// lexically; `None` when the result would leave the root or `rel` is absolute.
pub(crate) fn normalize(dir: &str, rel: &str) -> Option<String> {
    let rel_path = Path::new(rel);
    if rel_path.is_absolute() || rel.starts_with('/') || rel.starts_with('\\') {
        return None;
    }
    let mut parts: Vec<String> = dir
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    for component in rel_path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_relative_paths_inside_the_root() {
        assert_eq!(
            normalize("llms/pools", "../strategies/a.toml").as_deref(),
            Some("llms/strategies/a.toml")
        );
        assert_eq!(
            normalize("llms/pools", "./_base.toml").as_deref(),
            Some("llms/pools/_base.toml")
        );
        assert_eq!(normalize("llms", "../../etc/passwd"), None);
        assert_eq!(normalize("llms", "/etc/passwd"), None);
    }
}
