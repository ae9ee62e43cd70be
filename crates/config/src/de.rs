//! Phase 1: a serde `Deserializer` over the located tree that reads the raw structs of `raw.rs`.
//!
//! It checks the shape of the tree (unknown keys, tables where tables belong, arrays where arrays
//! belong) and records *every* problem instead of stopping at the first: an unknown key is
//! reported and skipped, a table or array of the wrong type is reported and read as empty. Leaves
//! are [`Val`]s, which keep the raw value, its location and its key path, so that phase 2 converts
//! and range-checks them with precise diagnostics. [`Here`] gives a table its own location.

use core::fmt;
use core::marker::PhantomData;
use std::cell::RefCell;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use crate::diagnostic::{Diagnostic, DiagnosticKind, Location, did_you_mean};
use crate::node::{Entry, KeyPath, Node, Origin, Text, Value};

/// Struct name by which [`Val`] asks the deserializer for a located leaf.
const VAL: &str = "$echelon_config::Val";
/// Struct name by which [`Here`] asks for a table's location.
const HERE: &str = "$echelon_config::Here";
/// The field name raw structs use for their [`Here`].
pub(crate) const HERE_FIELD: &str = "$here";

/// A leaf value as written, before conversion.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    /// A string; `shown` is what a diagnostic may print (`None` when it came from an override).
    Str {
        value: String,
        shown: Option<String>,
        convertible: bool,
    },
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Anything else (a table, an array, a date-time), by its type name.
    Other(&'static str),
}

impl Raw {
    /// `a string`, `an integer`, … for type errors.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Self::Str { .. } => "a string",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a float",
            Self::Bool(_) => "a boolean",
            Self::Other(name) => name,
        }
    }
}

/// A leaf of a raw struct: its value as written, where it is and its key path. `T` is the type it
/// will be converted to in phase 2 (see `value.rs`).
pub(crate) struct Val<T> {
    pub raw: Raw,
    pub location: Option<Location>,
    pub key: String,
    marker: PhantomData<fn() -> T>,
}

impl<T> Val<T> {
    /// A value made in code (defaults, tests).
    #[cfg(test)]
    pub(crate) fn literal(raw: Raw, key: &str) -> Self {
        Self {
            raw,
            location: None,
            key: key.to_owned(),
            marker: PhantomData,
        }
    }
}

impl<T> Clone for Val<T> {
    fn clone(&self) -> Self {
        Self {
            raw: self.raw.clone(),
            location: self.location.clone(),
            key: self.key.clone(),
            marker: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Val<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the value: it may be a secret.
        write!(f, "Val({} at {})", self.raw.type_name(), self.key)
    }
}

/// Where a table is: the location of its key (or of its file's start) and its key path.
#[derive(Debug, Clone, Default)]
pub(crate) struct Here {
    pub location: Option<Location>,
    pub key: String,
}

/// Reads a raw struct from `node`. Every problem is appended to `out`; `None` only when the
/// shape was too broken to produce a value at all (which is also reported).
pub(crate) fn from_node<T: de::DeserializeOwned>(
    node: &Node,
    key_origin: &Origin,
    path: &KeyPath,
    out: &mut Vec<Diagnostic>,
) -> Option<T> {
    let sink = RefCell::new(Vec::new());
    let result = T::deserialize(De {
        node,
        key_origin,
        path: path.clone(),
        sink: &sink,
    });
    let mut recorded = sink.into_inner();
    let value = match result {
        Ok(value) => Some(value),
        Err(error) => {
            if !error.recorded {
                recorded.push(
                    Diagnostic::error(DiagnosticKind::WrongType, error.message)
                        .at(Some(node.origin.location()))
                        .key(path.to_string()),
                );
            }
            None
        }
    };
    out.extend(recorded);
    value
}

/// A deserialization error; `recorded` once it has been turned into a located diagnostic.
#[derive(Debug)]
pub(crate) struct DeError {
    message: String,
    recorded: bool,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Self {
            message: msg.to_string(),
            recorded: false,
        }
    }

    // serde's default messages print the unexpected value, which may be a secret.
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "expected {exp}, found {}",
            unexpected_kind(&unexp)
        ))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "invalid {}, expected {exp}",
            unexpected_kind(&unexp)
        ))
    }
}

fn unexpected_kind(unexp: &de::Unexpected<'_>) -> &'static str {
    use de::Unexpected as U;
    match unexp {
        U::Bool(_) => "a boolean",
        U::Unsigned(_) | U::Signed(_) => "an integer",
        U::Float(_) => "a float",
        U::Char(_) | U::Str(_) => "a string",
        U::Bytes(_) => "bytes",
        U::Unit | U::Option => "nothing",
        U::NewtypeStruct | U::NewtypeVariant | U::TupleVariant | U::StructVariant => "a value",
        U::Seq => "an array",
        U::Map => "a table",
        U::Enum | U::UnitVariant => "a variant",
        U::Other(_) => "a value",
    }
}

struct De<'a> {
    node: &'a Node,
    key_origin: &'a Origin,
    path: KeyPath,
    sink: &'a RefCell<Vec<Diagnostic>>,
}

impl De<'_> {
    fn record(&self, diagnostic: Diagnostic) {
        self.sink.borrow_mut().push(diagnostic);
    }

    fn wrong_type(&self, expected: &str) {
        self.record(
            Diagnostic::error(
                DiagnosticKind::WrongType,
                format!("expected {expected}, found {}", self.node.type_name()),
            )
            .at(Some(self.node.origin.location()))
            .key(self.path.to_string()),
        );
    }

    /// Turns an unrecorded error from a visitor into a diagnostic located at this node.
    fn locate<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|error| {
            if error.recorded {
                error
            } else {
                self.record(
                    Diagnostic::error(DiagnosticKind::WrongType, error.message.clone())
                        .at(Some(self.node.origin.location()))
                        .key(self.path.to_string()),
                );
                DeError {
                    message: error.message,
                    recorded: true,
                }
            }
        })
    }

    fn raw(&self) -> Raw {
        match &self.node.value {
            Value::Str(text) => Raw::Str {
                value: text.value.clone(),
                shown: shown(text, &self.node.origin),
                convertible: text.convertible,
            },
            Value::Int(i) => Raw::Int(*i),
            Value::Float(f) => Raw::Float(*f),
            Value::Bool(b) => Raw::Bool(*b),
            Value::Datetime(_) | Value::Array(_) | Value::Table(_) => {
                Raw::Other(self.node.type_name())
            }
        }
    }
}

/// What a diagnostic may print of a string: the template for `${VAR}` strings, nothing for
/// environment overrides, the text itself otherwise.
fn shown(text: &Text, origin: &Origin) -> Option<String> {
    match (origin, &text.template) {
        (Origin::Env { .. }, _) => None,
        (_, Some(template)) => Some(template.clone()),
        (_, None) => Some(text.value.clone()),
    }
}

impl<'de> de::Deserializer<'de> for De<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Str(text) => visitor.visit_str(&text.value),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Datetime(d) => visitor.visit_str(d),
            Value::Array(items) => visitor.visit_seq(Seq::new(items.clone(), &self)),
            Value::Table(table) => visitor.visit_map(Map::new(
                table.entries.iter().map(Item::Entry).collect(),
                &self,
            )),
        };
        self.locate(result)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let items = match &self.node.value {
            Value::Array(items) => items.clone(),
            // `ECHELON_AUTH__API_KEYS=a,b` and `api_keys = "${KEYS}"` stand for lists.
            Value::Str(text) if text.convertible => split_list(text, &self.node.origin),
            _ => {
                self.wrong_type("an array");
                Vec::new()
            }
        };
        let result = visitor.visit_seq(Seq::new(items, &self));
        self.locate(result)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let items = match &self.node.value {
            Value::Table(table) => table.entries.iter().map(Item::Entry).collect(),
            _ => {
                self.wrong_type("a table");
                Vec::new()
            }
        };
        let result = visitor.visit_map(Map::new(items, &self));
        self.locate(result)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == VAL {
            let fields = located_fields(&self.node.origin.location(), &self.path, self.raw());
            return visitor.visit_map(FieldMap::new(fields));
        }
        if name == HERE {
            let fields = located_fields(&self.key_origin.location(), &self.path, Raw::Other(""));
            return visitor.visit_map(FieldMap::new(fields));
        }
        let mut items = Vec::new();
        if fields.contains(&HERE_FIELD) {
            items.push(Item::Here);
        }
        match &self.node.value {
            Value::Table(table) => {
                for entry in &table.entries {
                    if entry.key != HERE_FIELD && fields.contains(&entry.key.as_str()) {
                        items.push(Item::Entry(entry));
                    } else {
                        let known = fields.iter().copied().filter(|f| *f != HERE_FIELD);
                        let help = did_you_mean(&entry.key, known.clone()).or_else(|| {
                            Some(format!(
                                "known keys here: {}",
                                known
                                    .map(|k| format!("`{k}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        });
                        self.record(
                            Diagnostic::error(
                                DiagnosticKind::UnknownKey,
                                format!("unknown key `{}`", entry.key),
                            )
                            .at(Some(entry.key_origin.location()))
                            .key(self.path.key(&entry.key).to_string())
                            .maybe_help(help),
                        );
                    }
                }
            }
            _ => self.wrong_type("a table"),
        }
        let result = visitor.visit_map(Map::new(items, &self));
        self.locate(result)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(text) if variants.contains(&text.value.as_str()) => {
                let result = visitor.visit_enum(text.value.clone().into_deserializer());
                self.locate(result)
            }
            Value::Str(text) => {
                self.record(
                    Diagnostic::error(
                        DiagnosticKind::InvalidValue,
                        format!("unknown value, expected one of {}", variants.join(", ")),
                    )
                    .at(Some(self.node.origin.location()))
                    .key(self.path.to_string())
                    .maybe_help(did_you_mean(&text.value, variants.iter().copied())),
                );
                Err(DeError {
                    message: String::new(),
                    recorded: true,
                })
            }
            _ => {
                self.wrong_type("a string");
                Err(DeError {
                    message: String::new(),
                    recorded: true,
                })
            }
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct identifier
    }
}

fn split_list(text: &Text, origin: &Origin) -> Vec<Node> {
    text.value
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| Node {
            value: Value::Str(Text {
                value: part.to_owned(),
                template: text.template.clone(),
                convertible: true,
            }),
            origin: origin.clone(),
        })
        .collect()
}

struct Seq<'a> {
    items: std::vec::IntoIter<Node>,
    index: usize,
    parent_path: KeyPath,
    sink: &'a RefCell<Vec<Diagnostic>>,
}

impl<'a> Seq<'a> {
    fn new(items: Vec<Node>, parent: &De<'a>) -> Self {
        Self {
            items: items.into_iter(),
            index: 0,
            parent_path: parent.path.clone(),
            sink: parent.sink,
        }
    }
}

impl<'de> SeqAccess<'de> for Seq<'_> {
    type Error = DeError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, DeError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let path = self.parent_path.index(self.index);
        self.index += 1;
        seed.deserialize(De {
            node: &node,
            key_origin: &node.origin,
            path,
            sink: self.sink,
        })
        .map(Some)
    }
}

enum Item<'a> {
    Here,
    Entry(&'a Entry),
}

struct Map<'a> {
    items: std::vec::IntoIter<Item<'a>>,
    current: Option<Item<'a>>,
    parent: &'a Node,
    parent_key_origin: &'a Origin,
    parent_path: KeyPath,
    sink: &'a RefCell<Vec<Diagnostic>>,
}

impl<'a> Map<'a> {
    fn new(items: Vec<Item<'a>>, parent: &De<'a>) -> Self {
        Self {
            items: items.into_iter(),
            current: None,
            parent: parent.node,
            parent_key_origin: parent.key_origin,
            parent_path: parent.path.clone(),
            sink: parent.sink,
        }
    }
}

impl<'de> MapAccess<'de> for Map<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let key = match &item {
            Item::Here => HERE_FIELD.to_owned(),
            Item::Entry(entry) => entry.key.clone(),
        };
        self.current = Some(item);
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.current.take() {
            Some(Item::Here) => seed.deserialize(De {
                node: self.parent,
                key_origin: self.parent_key_origin,
                path: self.parent_path.clone(),
                sink: self.sink,
            }),
            Some(Item::Entry(entry)) => seed.deserialize(De {
                node: &entry.value,
                key_origin: &entry.key_origin,
                path: self.parent_path.key(&entry.key),
                sink: self.sink,
            }),
            None => Err(de::Error::custom("value requested before its key")),
        }
    }
}

/// One field of the located-leaf encoding that [`Val`] and [`Here`] read back.
enum Field {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

fn located_fields(location: &Location, path: &KeyPath, raw: Raw) -> Vec<(&'static str, Field)> {
    let mut fields = vec![("key", Field::Str(path.to_string()))];
    match location {
        Location::File { file, line, column } => {
            fields.push(("file", Field::Str(file.clone())));
            fields.push(("line", Field::Int(i64::from(*line))));
            fields.push(("column", Field::Int(i64::from(*column))));
        }
        Location::Environment { variable } => fields.push(("env", Field::Str(variable.clone()))),
    }
    match raw {
        Raw::Str {
            value,
            shown,
            convertible,
        } => {
            fields.push(("str", Field::Str(value)));
            if let Some(shown) = shown {
                fields.push(("shown", Field::Str(shown)));
            }
            fields.push(("convertible", Field::Bool(convertible)));
        }
        Raw::Int(i) => fields.push(("int", Field::Int(i))),
        Raw::Float(f) => fields.push(("float", Field::Float(f))),
        Raw::Bool(b) => fields.push(("bool", Field::Bool(b))),
        Raw::Other(name) => fields.push(("other", Field::Str(name.to_owned()))),
    }
    fields
}

struct FieldMap {
    fields: std::vec::IntoIter<(&'static str, Field)>,
    value: Option<Field>,
}

impl FieldMap {
    fn new(fields: Vec<(&'static str, Field)>) -> Self {
        Self {
            fields: fields.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for FieldMap {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((name, value)) = self.fields.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(name.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value requested before its key"))?;
        seed.deserialize(FieldDe(value))
    }
}

struct FieldDe(Field);

impl<'de> de::Deserializer<'de> for FieldDe {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Field::Str(s) => visitor.visit_string(s),
            Field::Int(i) => visitor.visit_i64(i),
            Field::Float(f) => visitor.visit_f64(f),
            Field::Bool(b) => visitor.visit_bool(b),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// The fields of the located-leaf encoding, read back.
#[derive(Default)]
struct LocatedParts {
    key: String,
    file: Option<String>,
    line: u32,
    column: u32,
    env: Option<String>,
    raw: Option<Raw>,
    shown: Option<String>,
    convertible: bool,
}

impl LocatedParts {
    fn read<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut parts = Self::default();
        while let Some(name) = map.next_key::<String>()? {
            match name.as_str() {
                "key" => parts.key = map.next_value()?,
                "file" => parts.file = Some(map.next_value()?),
                "line" => parts.line = map.next_value()?,
                "column" => parts.column = map.next_value()?,
                "env" => parts.env = Some(map.next_value()?),
                "str" => {
                    parts.raw = Some(Raw::Str {
                        value: map.next_value()?,
                        shown: None,
                        convertible: false,
                    });
                }
                "shown" => parts.shown = Some(map.next_value()?),
                "convertible" => parts.convertible = map.next_value()?,
                "int" => parts.raw = Some(Raw::Int(map.next_value()?)),
                "float" => parts.raw = Some(Raw::Float(map.next_value()?)),
                "bool" => parts.raw = Some(Raw::Bool(map.next_value()?)),
                "other" => {
                    let name: String = map.next_value()?;
                    parts.raw = Some(Raw::Other(static_type_name(&name)));
                }
                _ => {
                    return Err(de::Error::custom(
                        "a located value can only be read by the configuration loader",
                    ));
                }
            }
        }
        Ok(parts)
    }

    fn location(&self) -> Option<Location> {
        match (&self.file, &self.env) {
            (Some(file), _) => Some(Location::File {
                file: file.clone(),
                line: self.line,
                column: self.column,
            }),
            (None, Some(variable)) => Some(Location::Environment {
                variable: variable.clone(),
            }),
            (None, None) => None,
        }
    }
}

fn static_type_name(name: &str) -> &'static str {
    match name {
        "a date-time" => "a date-time",
        "an array" => "an array",
        "a table" => "a table",
        _ => "a value",
    }
}

impl<'de, T> Deserialize<'de> for Val<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValVisitor<T>(PhantomData<fn() -> T>);

        impl<'de, T> Visitor<'de> for ValVisitor<T> {
            type Value = Val<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a configuration value")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Val<T>, A::Error> {
                let parts = LocatedParts::read(map)?;
                let location = parts.location();
                let raw = match parts.raw {
                    Some(Raw::Str { value, .. }) => Raw::Str {
                        value,
                        shown: parts.shown,
                        convertible: parts.convertible,
                    },
                    Some(raw) => raw,
                    None => Raw::Other("a value"),
                };
                Ok(Val {
                    raw,
                    location,
                    key: parts.key,
                    marker: PhantomData,
                })
            }
        }

        deserializer.deserialize_struct(VAL, &["$val"], ValVisitor(PhantomData))
    }
}

impl<'de> Deserialize<'de> for Here {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HereVisitor;

        impl<'de> Visitor<'de> for HereVisitor {
            type Value = Here;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table location")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Here, A::Error> {
                let parts = LocatedParts::read(map)?;
                Ok(Here {
                    location: parts.location(),
                    key: parts.key,
                })
            }
        }

        deserializer.deserialize_struct(HERE, &["$here"], HereVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::node::parse;
    use crate::source::SourceFile;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(rename = "$here", default)]
        here: Here,
        name: Option<Val<String>>,
        inner: Option<Inner>,
        list: Option<Vec<Val<u32>>>,
        map: Option<BTreeMap<String, Inner>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(rename = "$here", default)]
        here: Here,
        size: Option<Val<u32>>,
    }

    fn read(text: &str) -> (Option<Outer>, Vec<Diagnostic>) {
        let file = Arc::new(SourceFile::new("f.toml", text.to_owned()));
        let node = parse(&file).unwrap();
        let mut out = Vec::new();
        let value = from_node(
            &node,
            &Origin::file_start(&file),
            &KeyPath::of(["root"]),
            &mut out,
        );
        (value, out)
    }

    #[test]
    fn reads_leaves_with_location_and_path() {
        let (outer, diagnostics) =
            read("name = \"x\"\nlist = [1, 2]\n[inner]\nsize = 3\n[map.a]\nsize = 4\n");
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let outer = outer.unwrap();
        assert_eq!(outer.here.key, "root");
        let name = outer.name.unwrap();
        assert_eq!(name.key, "root.name");
        assert_eq!(name.location.unwrap().to_string(), "f.toml:1:8");
        assert!(matches!(name.raw, Raw::Str { ref value, .. } if value == "x"));
        let list = outer.list.unwrap();
        assert_eq!(list[1].key, "root.list[1]");
        assert_eq!(list[1].raw, Raw::Int(2));
        let inner = outer.inner.unwrap();
        assert_eq!(inner.here.key, "root.inner");
        assert_eq!(inner.here.location.unwrap().to_string(), "f.toml:3:2");
        let a = &outer.map.unwrap()["a"];
        assert_eq!(a.size.as_ref().unwrap().key, "root.map.a.size");
    }

    #[test]
    fn records_every_unknown_key_and_shape_error_without_stopping() {
        let (outer, diagnostics) =
            read("nmae = 1\nlist = 5\ninner = \"no\"\n[map.a]\nsiez = 1\nsize = 2\n");
        let outer = outer.unwrap();
        let texts: Vec<_> = diagnostics
            .iter()
            .map(|d| format!("{} {} {:?}", d.key, d.reason, d.help))
            .collect();
        assert_eq!(
            texts,
            [
                "root.nmae unknown key `nmae` Some(\"did you mean `name`?\")",
                "root.list expected an array, found an integer None",
                "root.inner expected a table, found a string None",
                "root.map.a.siez unknown key `siez` Some(\"did you mean `size`?\")",
            ]
        );
        assert_eq!(
            outer.map.unwrap()["a"].size.as_ref().unwrap().raw,
            Raw::Int(2)
        );
    }
}
