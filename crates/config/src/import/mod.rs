//! `echelon config import litellm`: a LiteLLM proxy `config.yaml` turned into a complete,
//! commented `configs/` tree and a report of what mapped and what did not.
//!
//! The conversion is pure: YAML text in, files (paths and text) and a [`ImportReport`] out, so
//! it is tested without a filesystem and the command line only reads one file and writes the
//! others. It lives here because its output is configuration: it uses the loader's own name
//! rules and defaults, and the tests load every tree it writes with [`crate::load`].
//!
//! How LiteLLM's vocabulary maps (docs/coming-from-litellm.md has the full table):
//! - every `model_name` (a *model group*) becomes a task group of that name with one echelon per
//!   `order` level, each echelon one pool of the level's deployments, and a wrapper named after
//!   the model group, so clients keep sending the same `model`;
//! - each distinct provider and `api_base` becomes a provider file whose keys are the
//!   deployments' keys (one instance per key);
//! - `router_settings` (and the router keys of `litellm_settings`) become rotation, attempts,
//!   timeouts, breakers and `group_fallback` references in LiteLLM's fallback order.
//!
//! Secrets: `os.environ/NAME` becomes `${NAME}`; a key written in the YAML is copied into the
//! provider file and reported as a warning, never printed.

mod emit;
mod layout;
mod providers;
mod source;
mod yaml;

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The result of a conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// The files of the tree, paths relative to its root (`gateway.toml`, `llms/...`), in the
    /// order they should be written.
    pub files: Vec<GeneratedFile>,
    /// What was mapped and what was not.
    pub report: ImportReport,
}

/// One file of a generated tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Relative path with `/` separators.
    pub path: String,
    /// Its contents.
    pub text: String,
}

/// What an import did, finding by finding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Every finding, in the order of the source lines.
    pub findings: Vec<Finding>,
    /// The environment variables the tree reads without a default: it loads only when they
    /// are set.
    pub variables: BTreeSet<String>,
    /// The environment variables it reads with a default (as LiteLLM falls back to one).
    pub optional_variables: BTreeSet<String>,
    /// The wrappers the tree defines, the names clients send as `model`.
    pub wrappers: Vec<String>,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The line of the YAML it is about (1-based), when it is about one.
    pub line: Option<usize>,
    /// The YAML key path, e.g. `router_settings.num_retries` or `model_list[2]`.
    pub key: String,
    /// Mapped, mapped with a caveat, or not mapped.
    pub kind: FindingKind,
    /// What it became, or why it was not mapped. Never a secret's value.
    pub text: String,
}

/// The kind of a [`Finding`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FindingKind {
    /// Mapped as the source meant it.
    Mapped,
    /// Mapped, but not exactly (the text says how it differs), or a literal secret.
    Warning,
    /// Not mapped: the text says why.
    NotMapped,
}

/// Why a file could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The YAML does not parse.
    #[error("{file}:{line}:{column}: not valid YAML: {message}")]
    Syntax {
        /// The file name as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The YAML parses but is not a LiteLLM proxy configuration.
    #[error("{file} is not a LiteLLM proxy config: {reason}")]
    NotLiteLlm {
        /// The file name as given.
        file: String,
        /// What is missing or wrong.
        reason: String,
    },
}

/// The top-level keys of a LiteLLM proxy configuration; a document needs one of them.
const SECTIONS: [&str; 14] = [
    "model_list",
    "litellm_settings",
    "router_settings",
    "general_settings",
    "environment_variables",
    "guardrails",
    "policies",
    "mcp_servers",
    "search_tools",
    "sandbox_tools",
    "finetune_settings",
    "files_settings",
    "credential_list",
    "include",
];

/// Converts a LiteLLM proxy configuration. `source` names the file in messages and comments.
///
/// # Errors
///
/// [`ImportError`] when the text is not YAML or not a LiteLLM proxy configuration; nothing is
/// converted then.
pub fn litellm(text: &str, source: &str) -> Result<Import, ImportError> {
    let not_litellm = |reason: &str| ImportError::NotLiteLlm {
        file: source.to_owned(),
        reason: reason.to_owned(),
    };
    let doc = yaml::parse(text)
        .map_err(|e| ImportError::Syntax {
            file: source.to_owned(),
            line: e.line,
            column: e.column,
            message: e.message,
        })?
        .ok_or_else(|| not_litellm("the file is empty"))?;
    if !doc.is_map() {
        return Err(not_litellm(
            "expected a mapping with model_list, router_settings, litellm_settings or general_settings",
        ));
    }
    if !doc
        .entries()
        .iter()
        .any(|e| SECTIONS.contains(&e.key.as_str()))
    {
        return Err(not_litellm(
            "it has none of LiteLLM's sections (model_list, router_settings, litellm_settings, general_settings, …)",
        ));
    }
    if doc
        .entry("model_list")
        .is_some_and(|e| !matches!(e.value.value, yaml::Value::Seq(_) | yaml::Value::Null))
    {
        return Err(not_litellm("model_list is not a list of deployments"));
    }
    let read = source::read(&doc);
    let tree = layout::plan(read);
    Ok(emit::render(&tree, source))
}

impl ImportReport {
    /// The report as the command line prints it, for a tree written to `out`.
    pub fn render(&self, source: &str, out: &str, files: usize) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "imported {source} (LiteLLM proxy config) into {out}: {files} files"
        );
        for (kind, title) in [
            (FindingKind::Mapped, "mapped"),
            (
                FindingKind::Warning,
                "warnings (mapped, with a difference to know about)",
            ),
            (FindingKind::NotMapped, "not mapped"),
        ] {
            let items: Vec<&Finding> = self.findings.iter().filter(|f| f.kind == kind).collect();
            if items.is_empty() {
                continue;
            }
            let _ = writeln!(text, "\n{title} ({})", items.len());
            for finding in items {
                let place = finding
                    .line
                    .map_or_else(|| source.to_owned(), |line| format!("{source}:{line}"));
                let _ = writeln!(text, "  {place}  {}: {}", finding.key, finding.text);
            }
        }
        let _ = writeln!(text);
        if self.wrappers.is_empty() {
            let _ = writeln!(
                text,
                "no model group could be mapped: the tree serves no model yet"
            );
        } else {
            let _ = writeln!(
                text,
                "clients send as `model`: {}",
                self.wrappers.join(", ")
            );
        }
        if !self.variables.is_empty() {
            let names: Vec<&str> = self.variables.iter().map(String::as_str).collect();
            let _ = writeln!(text, "environment the tree needs: {}", names.join(", "));
        }
        if !self.optional_variables.is_empty() {
            let names: Vec<&str> = self.optional_variables.iter().map(String::as_str).collect();
            let _ = writeln!(text, "environment it reads when set: {}", names.join(", "));
        }
        let _ = writeln!(text, "next: echelon config check --config {out}");
        if let Some(first) = self.wrappers.first() {
            let _ = writeln!(text, "      echelon route explain {first} --config {out}");
        }
        text
    }

    /// How many findings of `kind` there are.
    pub fn count(&self, kind: FindingKind) -> usize {
        self.findings.iter().filter(|f| f.kind == kind).count()
    }
}
