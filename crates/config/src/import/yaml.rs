//! A YAML document as a small tree whose every node and key knows its line, read with saphyr's
//! marked loader, and the few PyYAML leniencies LiteLLM configurations rely on.
//!
//! LiteLLM reads its `config.yaml` with PyYAML, a YAML 1.1 parser; saphyr is YAML 1.2. The
//! differences that show up in real configurations are handled where a value is read, not in the
//! tree: `20_000` is a number to PyYAML (a string to YAML 1.2) and `yes`/`on` are booleans.

use saphyr::{LoadableYamlNode as _, MarkedYaml, Scalar, YamlData};

/// A node and the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Yaml {
    pub line: usize,
    pub value: Value,
}

/// The value of a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Vec<Entry>),
}

/// One `key: value` pair of a mapping, in document order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub line: usize,
    pub value: Yaml,
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses the first document of `text`; `None` for an empty stream. Anchors are expanded (the
/// loader bounds how many nodes aliases may produce).
pub(crate) fn parse(text: &str) -> Result<Option<Yaml>, SyntaxError> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| SyntaxError {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_owned(),
    })?;
    Ok(docs.first().map(convert))
}

fn convert(node: &MarkedYaml<'_>) -> Yaml {
    let line = node.span.start.line();
    let value = match &node.data {
        YamlData::Value(scalar) => scalar_value(scalar),
        YamlData::Representation(text, _, _) => Value::Str(text.to_string()),
        YamlData::Sequence(items) => Value::Seq(items.iter().map(convert).collect()),
        YamlData::Mapping(map) => Value::Map(
            map.iter()
                .map(|(key, value)| Entry {
                    key: key_text(key),
                    line: key.span.start.line(),
                    value: convert(value),
                })
                .collect(),
        ),
        YamlData::Tagged(_, inner) => return convert(inner),
        YamlData::Alias(_) | YamlData::BadValue => Value::Null,
    };
    Yaml { line, value }
}

fn scalar_value(scalar: &Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Int(*i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(s) => Value::Str(s.to_string()),
    }
}

fn key_text(key: &MarkedYaml<'_>) -> String {
    match &key.data {
        YamlData::Value(Scalar::String(s)) => s.to_string(),
        YamlData::Value(Scalar::Integer(i)) => i.to_string(),
        YamlData::Value(Scalar::FloatingPoint(f)) => f.to_string(),
        YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
        YamlData::Value(Scalar::Null) => "null".to_owned(),
        YamlData::Representation(text, _, _) => text.to_string(),
        YamlData::Tagged(_, inner) => key_text(inner),
        _ => "?".to_owned(),
    }
}

impl Yaml {
    /// The entries of a mapping (none for anything else).
    pub fn entries(&self) -> &[Entry] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The items of a sequence (none for anything else).
    pub fn items(&self) -> &[Yaml] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// The entry `key` of a mapping.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries().iter().find(|e| e.key == key)
    }

    /// The value of entry `key`, unless it is absent or null.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        self.entry(key)
            .map(|e| &e.value)
            .filter(|v| v.value != Value::Null)
    }

    pub fn is_map(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    /// A scalar as text: strings as they are, numbers and booleans written out.
    pub fn text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// A number, also when written as PyYAML reads it (`20_000`) or quoted.
    pub fn number(&self) -> Option<f64> {
        match &self.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Str(s) => s.trim().replace('_', "").parse().ok(),
            _ => None,
        }
        .filter(|f: &f64| f.is_finite())
    }

    /// A boolean, also as YAML 1.1 spells it (`yes`, `on`, `True`).
    pub fn boolean(&self) -> Option<bool> {
        match &self.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "y" => Some(true),
                "false" | "no" | "off" | "n" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_keys_and_values() {
        let doc = parse("a: 1\nb:\n  - x: yes\n    y: 20_000\n")
            .unwrap()
            .unwrap();
        let b = doc.entry("b").unwrap();
        assert_eq!(b.line, 2);
        let item = &b.value.items()[0];
        assert_eq!(item.line, 3);
        assert_eq!(item.entry("y").unwrap().line, 4);
        assert_eq!(item.get("x").unwrap().boolean(), Some(true));
        assert_eq!(item.get("y").unwrap().number(), Some(20_000.0));
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let error = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(error.line >= 1, "{error:?}");
        assert!(!error.message.is_empty());
    }

    #[test]
    fn empty_streams_have_no_document() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }
}
