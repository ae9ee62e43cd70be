//! `ECHELON_<SECTION>__<KEY>` environment overrides of `gateway.toml`.
//!
//! Overrides are applied to the located tree before it is read, so a bad override is reported
//! like a bad line, at `environment variable ECHELON_SERVER__LISTEN`, and never with its value.

use std::sync::Arc;

use crate::diagnostic::{Diagnostic, DiagnosticKind, did_you_mean};
use crate::env::Env;
use crate::node::{Entry, Node, Origin, Text, Value};

/// Prefix of gateway overrides: `ECHELON_<SECTION>__<KEY>`.
pub(crate) const ENV_PREFIX: &str = "ECHELON_";
const SECTIONS: [&str; 5] = ["server", "auth", "telemetry", "state", "alerts"];

/// Applies `ECHELON_<SECTION>__<KEY>=value` overrides to the gateway tree. Variables without
/// `__` are not overrides (`ECHELON_CONFIG_DIR`); an unknown section is a warning.
pub(crate) fn apply_env_overrides(tree: &mut Node, env: &dyn Env, out: &mut Vec<Diagnostic>) {
    for (variable, value) in env.vars_with_prefix(ENV_PREFIX) {
        let rest = &variable[ENV_PREFIX.len()..];
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            continue;
        }
        if !SECTIONS.contains(&path[0].as_str()) {
            let help = did_you_mean(&path[0], SECTIONS).map(|_| {
                let section = crate::diagnostic::closest(&path[0], SECTIONS).unwrap_or_default();
                let suggestion = format!(
                    "{ENV_PREFIX}{}__{}",
                    section.to_ascii_uppercase(),
                    rest.split_once("__").map_or("", |(_, tail)| tail)
                );
                format!("did you mean `{suggestion}`?")
            });
            out.push(
                Diagnostic::warning(
                    DiagnosticKind::Unused,
                    format!("`{variable}` does not name a gateway setting and is ignored"),
                )
                .at(Some(crate::diagnostic::Location::Environment {
                    variable: variable.clone(),
                }))
                .maybe_help(help.or_else(|| {
                    Some(format!(
                        "gateway overrides are {ENV_PREFIX}<SECTION>__<KEY> with a section of {}",
                        SECTIONS.join(", ")
                    ))
                })),
            );
            continue;
        }
        let origin = Origin::Env {
            variable: Arc::from(variable.as_str()),
        };
        let leaf = Node {
            value: Value::Str(Text {
                value,
                template: None,
                convertible: true,
            }),
            origin: origin.clone(),
        };
        set(tree, &path, leaf, &origin);
    }
}

fn set(node: &mut Node, path: &[String], leaf: Node, origin: &Origin) {
    if node.as_table().is_none() {
        *node = Node::empty_table(origin.clone());
    }
    let Some(table) = node.as_table_mut() else {
        return;
    };
    let (first, rest) = path.split_first().expect("override paths are not empty");
    let index = match table.entries.iter().position(|e| &e.key == first) {
        Some(index) => index,
        None => {
            table.entries.push(Entry {
                key: first.clone(),
                key_origin: origin.clone(),
                value: Node::empty_table(origin.clone()),
            });
            table.entries.len() - 1
        }
    };
    let entry = &mut table.entries[index];
    if rest.is_empty() {
        entry.key_origin = origin.clone();
        entry.value = leaf;
    } else {
        set(&mut entry.value, rest, leaf, origin);
    }
}
