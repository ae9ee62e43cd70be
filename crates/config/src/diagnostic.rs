//! Diagnostics: one problem in the configuration tree, where it is and how to fix it, and the
//! report that renders all of them at once.
//!
//! A diagnostic never contains a secret: messages name keys, files and variables, and echo a value
//! only when it was written literally in a non-secret field of a file (never a value that came from
//! the environment).

use core::fmt;

/// Where a problem is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum Location {
    /// In a file, relative to the configuration root, with 1-based line and column.
    File {
        /// Path relative to the configuration root, with `/` separators.
        file: String,
        /// 1-based line.
        line: u32,
        /// 1-based column, in characters.
        column: u32,
    },
    /// In an environment variable that overrides a gateway setting.
    Environment {
        /// The variable's name.
        variable: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { file, line, column } => write!(f, "{file}:{line}:{column}"),
            Self::Environment { variable } => write!(f, "environment variable {variable}"),
        }
    }
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The tree (strict) or the entry (lenient) cannot be loaded.
    Error,
    /// Loaded, but probably not what was meant; or an entry dropped in lenient mode.
    Warning,
}

/// What kind of problem a diagnostic reports; stable names for tests, metrics and tooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiagnosticKind {
    /// A file or directory could not be read.
    Io,
    /// TOML syntax error.
    Syntax,
    /// A key the schema does not know.
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong type (a string where a number is expected, …).
    WrongType,
    /// A value of the right type that is not valid (a bad duration, an unknown strategy, …).
    InvalidValue,
    /// A number outside its allowed range.
    OutOfRange,
    /// `${VAR}` without a default, and `VAR` is not set.
    UnsetVariable,
    /// A reference to a provider, model, pool, group or echelon that does not exist.
    DanglingReference,
    /// The same name defined twice.
    Duplicate,
    /// References that go round in a circle (fallback groups, fallback pools).
    ReferenceCycle,
    /// A problem with `inherits_from`: a cycle, too deep, or a missing parent.
    Inheritance,
    /// Settings that contradict each other.
    Conflict,
    /// Something that is valid but has no effect.
    Unused,
    /// An entry dropped in lenient mode.
    Dropped,
}

impl DiagnosticKind {
    /// The stable name shown in brackets, e.g. `unknown-key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Io => "io",
            Self::Syntax => "syntax",
            Self::UnknownKey => "unknown-key",
            Self::MissingKey => "missing-key",
            Self::WrongType => "wrong-type",
            Self::InvalidValue => "invalid-value",
            Self::OutOfRange => "out-of-range",
            Self::UnsetVariable => "unset-variable",
            Self::DanglingReference => "dangling-reference",
            Self::Duplicate => "duplicate",
            Self::ReferenceCycle => "reference-cycle",
            Self::Inheritance => "inheritance",
            Self::Conflict => "conflict",
            Self::Unused => "unused",
            Self::Dropped => "dropped",
        }
    }
}

/// One problem in the configuration tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What kind of problem.
    pub kind: DiagnosticKind,
    /// Where it is, when it has a place.
    pub location: Option<Location>,
    /// The key path, e.g. `pools.fast.rotation` (empty for a whole file).
    pub key: String,
    /// What is wrong, lowercase, without a trailing period.
    pub reason: String,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
    /// The environment variable involved, for unset variables (its name, never its value).
    pub variable: Option<String>,
}

impl Diagnostic {
    /// A new error.
    pub(crate) fn error(kind: DiagnosticKind, reason: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            kind,
            location: None,
            key: String::new(),
            reason: reason.into(),
            help: None,
            variable: None,
        }
    }

    /// A new warning.
    pub(crate) fn warning(kind: DiagnosticKind, reason: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(kind, reason)
        }
    }

    /// Sets the location.
    pub(crate) fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    /// Sets the key path.
    pub(crate) fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// Sets the help text.
    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the help text when there is one.
    pub(crate) fn maybe_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Names the variable involved.
    pub(crate) fn variable(mut self, name: impl Into<String>) -> Self {
        self.variable = Some(name.into());
        self
    }

    fn sort_key(&self) -> (u8, &str, bool, Option<&Location>, &str, &str) {
        // Problems without a place (a missing directory) come first; the rest in file order,
        // with a file's `dropped` notes after the problems that caused them.
        let file = match &self.location {
            Some(Location::File { file, .. }) => file.as_str(),
            Some(Location::Environment { variable }) => variable.as_str(),
            None => "",
        };
        (
            u8::from(self.location.is_some()),
            file,
            self.kind == DiagnosticKind::Dropped,
            self.location.as_ref(),
            &self.key,
            &self.reason,
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}[{}]: {}", self.kind.as_str(), self.reason)?;
        if let Some(location) = &self.location {
            write!(f, "\n  --> {location}")?;
        }
        if !self.key.is_empty() {
            write!(f, "\n   = key: {}", self.key)?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n   = help: {help}")?;
        }
        Ok(())
    }
}

/// Sorts diagnostics into a stable, readable order (file, line, column) and removes exact
/// duplicates (a parent file shared by several children reports its problems once).
pub(crate) fn sort_and_dedup(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    diagnostics.dedup();
}

/// Why a configuration tree was refused: every error found, and the warnings beside them.
///
/// `Display` renders the whole report, one block per problem, ending with a summary line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigReport {
    /// The problems that refused the tree.
    pub errors: Vec<Diagnostic>,
    /// Warnings found along the way.
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for ConfigReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in self.errors.iter().chain(&self.warnings) {
            writeln!(f, "{diagnostic}\n")?;
        }
        write!(
            f,
            "configuration refused: {}, {}",
            plural(self.errors.len(), "error"),
            plural(self.warnings.len(), "warning")
        )
    }
}

impl std::error::Error for ConfigReport {}

/// `1 error`, `2 errors`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The candidate closest to `input`, when it is close enough to be a likely typo.
pub(crate) fn closest<'a, I>(input: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let input_lower = input.to_lowercase();
    let seen: Vec<&'a str> = candidates.into_iter().collect();
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in seen.iter().copied() {
        let distance = if candidate.to_lowercase() == input_lower {
            0
        } else {
            strsim::damerau_levenshtein(&input_lower, &candidate.to_lowercase())
        };
        let limit = (candidate.chars().count().max(input.chars().count()) / 3).max(1);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate).or_else(|| {
        // `fastest` for `fastest_response`: a distinctive part of a longer name.
        (input.chars().count() >= 4)
            .then(|| {
                let mut matching = candidates_again(&input_lower, &seen);
                let first = matching.next()?;
                matching.next().is_none().then_some(first)
            })
            .flatten()
    })
}

/// The candidates that contain `input_lower`.
fn candidates_again<'a, 'b>(
    input_lower: &'b str,
    seen: &'b [&'a str],
) -> impl Iterator<Item = &'a str> + 'b {
    seen.iter()
        .copied()
        .filter(move |c| c.to_lowercase().contains(input_lower))
}

/// `did you mean `x`?` for the closest candidate, if any.
pub(crate) fn did_you_mean<'a, I>(input: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    closest(input, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["round_robin", "random", "least_connections"];
        assert_eq!(closest("round_robbin", names), Some("round_robin"));
        assert_eq!(closest("Random", names), Some("random"));
        assert_eq!(
            closest("least_conections", names),
            Some("least_connections")
        );
        assert_eq!(closest("connections", names), Some("least_connections"));
        assert_eq!(
            closest("robin", ["round_robin", "weighted_round_robin"]),
            None
        );
        assert_eq!(closest("x", names), None);
    }

    #[test]
    fn renders_location_key_and_help() {
        let d = Diagnostic::error(DiagnosticKind::UnknownKey, "unknown key `rotaton`")
            .at(Some(Location::File {
                file: "llms/pools/fast.toml".into(),
                line: 3,
                column: 1,
            }))
            .key("pools.fast.rotaton")
            .help("did you mean `rotation`?");
        assert_eq!(
            d.to_string(),
            "error[unknown-key]: unknown key `rotaton`\n  --> llms/pools/fast.toml:3:1\n   = key: pools.fast.rotaton\n   = help: did you mean `rotation`?"
        );
    }
}
