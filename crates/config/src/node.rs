//! The configuration tree before typing: TOML values that remember where they came from (file and
//! byte span, or the environment variable that set them), so that inheritance can merge trees
//! from several files and every later diagnostic still points at the right line.

use core::fmt;
use std::ops::Range;
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Diagnostic, DiagnosticKind, Location};
use crate::source::SourceFile;

/// Where a value came from.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    /// A byte range of a file.
    File {
        file: Arc<SourceFile>,
        span: Range<usize>,
    },
    /// An `ECHELON_*` environment override.
    Env { variable: Arc<str> },
}

impl Origin {
    /// The diagnostic location of this origin.
    pub(crate) fn location(&self) -> Location {
        match self {
            Self::File { file, span } => file.location(span),
            Self::Env { variable } => Location::Environment {
                variable: variable.to_string(),
            },
        }
    }

    /// The start of a file.
    pub(crate) fn file_start(file: &Arc<SourceFile>) -> Self {
        Self::File {
            file: Arc::clone(file),
            span: 0..0,
        }
    }
}

/// A string value with what is needed to show it safely.
#[derive(Debug, Clone)]
pub(crate) struct Text {
    /// The value, after `${VAR}` substitution.
    pub value: String,
    /// The text as written, when it contained `${VAR}` references: shown instead of the value,
    /// which may hold a secret.
    pub template: Option<String>,
    /// Whether the string came from the environment (a `${VAR}` or an override) and may stand
    /// for a number, a boolean or a list.
    pub convertible: bool,
}

/// A TOML value.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Str(Text),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
}

/// A table, in source order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    pub entries: Vec<Entry>,
}

/// One `key = value` of a table.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_origin: Origin,
    pub value: Node,
}

impl Table {
    /// The entry named `key`.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Removes and returns the entry named `key`.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Entry> {
        let index = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(index))
    }
}

/// A value and its origin.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    pub origin: Origin,
}

impl Node {
    /// An empty table at `origin`.
    pub(crate) fn empty_table(origin: Origin) -> Self {
        Self {
            value: Value::Table(Table::default()),
            origin,
        }
    }

    /// `a string`, `an integer`, … for type errors.
    pub(crate) fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }

    /// The table, if this is one.
    pub(crate) fn as_table(&self) -> Option<&Table> {
        match &self.value {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The table, if this is one.
    pub(crate) fn as_table_mut(&mut self) -> Option<&mut Table> {
        match &mut self.value {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }
}

/// Parses a file into a tree; every syntax error becomes a diagnostic.
pub(crate) fn parse(file: &Arc<SourceFile>) -> Result<Node, Vec<Diagnostic>> {
    let (table, errors) = DeTable::parse_recoverable(file.text());
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|error| {
                let span = error.span().unwrap_or(0..0);
                let mut reason = error.message().replace('\n', "; ");
                if reason == "duplicate key" {
                    let key = file.text().get(span.clone()).unwrap_or_default().trim();
                    if !key.is_empty() {
                        reason = format!("duplicate key `{key}`");
                    }
                }
                Diagnostic::error(DiagnosticKind::Syntax, reason).at(Some(file.location(&span)))
            })
            .collect());
    }
    let origin = Origin::file_start(file);
    Ok(Node {
        value: Value::Table(convert_table(file, table.get_ref())),
        origin,
    })
}

fn convert_table(file: &Arc<SourceFile>, table: &DeTable<'_>) -> Table {
    let mut entries: Vec<Entry> = table
        .iter()
        .map(|(key, value)| Entry {
            key: key.get_ref().to_string(),
            key_origin: Origin::File {
                file: Arc::clone(file),
                span: key.span(),
            },
            value: convert_value(file, value.get_ref(), value.span()),
        })
        .collect();
    // toml keeps tables in key order; the key spans give back the source order.
    entries.sort_by_key(|e| match &e.key_origin {
        Origin::File { span, .. } => span.start,
        Origin::Env { .. } => usize::MAX,
    });
    Table { entries }
}

fn convert_value(file: &Arc<SourceFile>, value: &DeValue<'_>, span: Range<usize>) -> Node {
    let value = match value {
        DeValue::String(s) => Value::Str(Text {
            value: s.to_string(),
            template: None,
            convertible: false,
        }),
        DeValue::Integer(i) => {
            // The parser has checked the digits; only a value beyond i64 can fail here.
            i64::from_str_radix(i.as_str(), i.radix())
                .map_or_else(|_| Value::Float(f64::INFINITY), Value::Int)
        }
        DeValue::Float(f) => Value::Float(f.as_str().parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Datetime(d.to_string()),
        DeValue::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| convert_value(file, item.get_ref(), item.span()))
                .collect(),
        ),
        DeValue::Table(table) => Value::Table(convert_table(file, table)),
    };
    Node {
        value,
        origin: Origin::File {
            file: Arc::clone(file),
            span,
        },
    }
}

/// Deep merge: tables merge key by key with `over` winning; anything else (arrays included) is
/// replaced by `over`.
pub(crate) fn merge(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Table(mut base_table), Value::Table(over_table)) => {
            for entry in over_table.entries {
                match base_table.entries.iter_mut().find(|e| e.key == entry.key) {
                    Some(existing) => {
                        let old = std::mem::replace(
                            &mut existing.value,
                            Node::empty_table(entry.value.origin.clone()),
                        );
                        existing.value = merge(old, entry.value);
                        existing.key_origin = entry.key_origin;
                    }
                    None => base_table.entries.push(entry),
                }
            }
            Node {
                value: Value::Table(base_table),
                origin: over.origin,
            }
        }
        (_, value) => Node {
            value,
            origin: over.origin,
        },
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A dotted key path such as `pools.fast.instances[0].weight`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// A path made of keys.
    pub(crate) fn of<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            keys.into_iter()
                .map(|k| Segment::Key(k.to_owned()))
                .collect(),
        )
    }

    /// This path with one more key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut next = self.0.clone();
        next.push(Segment::Key(key.to_owned()));
        Self(next)
    }

    /// This path with an array index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut next = self.0.clone();
        next.push(Segment::Index(index));
        Self(next)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        f.write_str(key)?;
                    } else {
                        write!(f, "\"{}\"", key.escape_default())?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Node {
        parse(&Arc::new(SourceFile::new("t.toml", text.to_owned()))).unwrap()
    }

    fn keys(node: &Node) -> Vec<&str> {
        node.as_table()
            .unwrap()
            .entries
            .iter()
            .map(|e| e.key.as_str())
            .collect()
    }

    #[test]
    fn keeps_source_order_and_locations() {
        let node = parse_str("zeta = 1\nalpha = \"a\"\n[mid]\nx = true\n");
        assert_eq!(keys(&node), ["zeta", "alpha", "mid"]);
        let alpha = node.as_table().unwrap().get("alpha").unwrap();
        assert_eq!(
            alpha.value.origin.location().to_string(),
            "t.toml:2:9".to_owned()
        );
    }

    #[test]
    fn merge_is_deep_for_tables_and_replaces_arrays() {
        let base = parse_str("a = 1\nlist = [1, 2]\n[t]\nx = 1\ny = 2\n");
        let over = parse_str("list = [3]\n[t]\ny = 20\nz = 30\n");
        let merged = merge(base, over);
        assert_eq!(keys(&merged), ["a", "list", "t"]);
        let table = merged.as_table().unwrap();
        let Value::Array(list) = &table.get("list").unwrap().value.value else {
            panic!("list is an array")
        };
        assert_eq!(list.len(), 1);
        let t = table.get("t").unwrap().value.as_table().unwrap();
        let ys: Vec<_> = t
            .entries
            .iter()
            .map(|e| match e.value.value {
                Value::Int(i) => (e.key.as_str(), i),
                _ => ("", 0),
            })
            .collect();
        assert_eq!(ys, [("x", 1), ("y", 20), ("z", 30)]);
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let file = Arc::new(SourceFile::new("bad.toml", "a = 1\na = 2\n".to_owned()));
        let errors = parse(&file).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].reason, "duplicate key `a`");
        assert_eq!(
            errors[0].location.as_ref().unwrap().to_string(),
            "bad.toml:2:1"
        );
    }

    #[test]
    fn key_paths_quote_unusual_keys() {
        let path = KeyPath::of(["providers", "openai", "models", "gpt-4.1"])
            .key("cost")
            .index(2);
        assert_eq!(
            path.to_string(),
            "providers.openai.models.\"gpt-4.1\".cost[2]"
        );
    }
}
