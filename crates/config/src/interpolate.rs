//! `${VAR}` and `${VAR:default}` substitution in every string value of a tree.
//!
//! `$${` writes a literal `${`. A substituted string remembers its template so that diagnostics
//! show `${VAR}` rather than the value, and it may then stand for a number, a boolean or a list.

use crate::diagnostic::{Diagnostic, DiagnosticKind};
use crate::env::Env;
use crate::node::{KeyPath, Node, Value};

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// `${NAME}` without a default, and `NAME` is not set.
    Unset(String),
    /// `${` without a closing `}`.
    Unterminated,
    /// `${...}` whose name is not a valid variable name.
    BadName(String),
}

/// Expands the references in `text`; `Ok(None)` when it has none (so nothing changes).
pub(crate) fn expand(text: &str, env: &dyn Env) -> Result<Option<String>, ExpandError> {
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(reference) = after.strip_prefix("${") {
            let end = reference.find('}').ok_or(ExpandError::Unterminated)?;
            let body = &reference[..end];
            let (name, default) = match body.split_once(':') {
                Some((name, default)) => (name, Some(default)),
                None => (body, None),
            };
            if !is_variable_name(name) {
                return Err(ExpandError::BadName(name.to_owned()));
            }
            match (env.var(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(ExpandError::Unset(name.to_owned())),
            }
            rest = &reference[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Substitutes every string of `node` in place; problems are appended to `out`.
pub(crate) fn interpolate(
    node: &mut Node,
    path: &KeyPath,
    env: &dyn Env,
    out: &mut Vec<Diagnostic>,
) {
    match &mut node.value {
        Value::Str(text) => match expand(&text.value, env) {
            Ok(None) => {}
            Ok(Some(value)) => {
                text.template = Some(std::mem::replace(&mut text.value, value));
                text.convertible = true;
            }
            Err(error) => out.push(expand_diagnostic(&error, node, path)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &path.index(i), env, out);
            }
        }
        Value::Table(table) => {
            for entry in &mut table.entries {
                interpolate(&mut entry.value, &path.key(&entry.key), env, out);
            }
        }
        Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Datetime(_) => {}
    }
}

fn expand_diagnostic(error: &ExpandError, node: &Node, path: &KeyPath) -> Diagnostic {
    let location = Some(node.origin.location());
    match error {
        ExpandError::Unset(name) => Diagnostic::error(
            DiagnosticKind::UnsetVariable,
            format!("environment variable `{name}` is not set"),
        )
        .help(format!(
            "set `{name}`, or give a default with `${{{name}:default}}`"
        ))
        .variable(name.clone()),
        ExpandError::Unterminated => Diagnostic::error(
            DiagnosticKind::InvalidValue,
            "unterminated `${` variable reference",
        )
        .help("close it with `}`, or write `$${` for a literal `${`"),
        ExpandError::BadName(name) => Diagnostic::error(
            DiagnosticKind::InvalidValue,
            format!("`{name}` is not a valid variable name"),
        )
        .help("variable names are letters, digits and `_`, not starting with a digit"),
    }
    .at(location)
    .key(path.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("KEY", "sk-1"), ("PORT", "8080"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn expands_set_variables_defaults_and_escapes() {
        let env = env();
        assert_eq!(expand("plain", &env), Ok(None));
        assert_eq!(expand("${KEY}", &env), Ok(Some("sk-1".into())));
        assert_eq!(
            expand("http://h:${PORT}/v1", &env),
            Ok(Some("http://h:8080/v1".into()))
        );
        assert_eq!(
            expand("${NOPE:fallback}", &env),
            Ok(Some("fallback".into()))
        );
        assert_eq!(expand("${NOPE:}", &env), Ok(Some(String::new())));
        assert_eq!(expand("${EMPTY:x}", &env), Ok(Some(String::new())));
        assert_eq!(expand("$${KEY} $5", &env), Ok(Some("${KEY} $5".into())));
        assert_eq!(
            expand("${URL:http://a:1}", &env),
            Ok(Some("http://a:1".into()))
        );
    }

    #[test]
    fn reports_unset_unterminated_and_bad_names() {
        let env = env();
        assert_eq!(
            expand("${NOPE}", &env),
            Err(ExpandError::Unset("NOPE".into()))
        );
        assert_eq!(expand("${KEY", &env), Err(ExpandError::Unterminated));
        assert_eq!(
            expand("${1X}", &env),
            Err(ExpandError::BadName("1X".into()))
        );
        assert_eq!(
            expand("${}", &env),
            Err(ExpandError::BadName(String::new()))
        );
    }
}
