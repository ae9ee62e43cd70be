//! Wire formats shared by the gateway's edge, the provider adapters and the fake upstream, and
//! the two serde helpers their derived types need for JSON the domain keeps as text.
//!
//! [`openai`] is the OpenAI chat completions format, written once: the edge parses requests and
//! renders answers with it, the OpenAI-compatible adapter encodes requests and decodes answers
//! with it, and the fake upstream answers with it. The Anthropic and Gemini formats are only
//! spoken by their adapters and live there (`provider/anthropic.rs`, `provider/gemini.rs`).

pub mod openai;

use echelon_domain::chat::{AnswerExtra, ExtraAt, RawJson};
use serde::ser::{Error as _, SerializeMap};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// JSON text written into a document as JSON (not as a string); `what` names it when the text
/// is not valid JSON, which fails the serialization.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Json<'a> {
    pub what: &'a str,
    pub text: &'a str,
}

impl<'a> Json<'a> {
    pub(crate) fn new(what: &'a str, text: &'a str) -> Self {
        Self { what, text }
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::from_str::<&RawValue>(self.text)
            .map_err(|_| S::Error::custom(format!("{} is not valid json", self.what)))?
            .serialize(s)
    }
}

/// Keys the domain does not model, written into the enclosing object (`#[serde(flatten)]`),
/// except those in `skip` (keys the enclosing type writes itself).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extras<'a> {
    keys: Keys<'a>,
    skip: &'a [&'a str],
}

#[derive(Debug, Clone, Copy)]
enum Keys<'a> {
    /// A request's unmodelled fields.
    List(&'a [(Box<str>, RawJson)]),
    /// An answer's, at one level.
    At(&'a AnswerExtra, ExtraAt),
}

impl<'a> Extras<'a> {
    /// A request's `extra` fields.
    pub(crate) fn list(keys: &'a [(Box<str>, RawJson)], skip: &'a [&'a str]) -> Self {
        Self {
            keys: Keys::List(keys),
            skip,
        }
    }

    /// An answer's kept fields at `at`.
    pub(crate) fn at(extra: &'a AnswerExtra, at: ExtraAt, skip: &'a [&'a str]) -> Self {
        Self {
            keys: Keys::At(extra, at),
            skip,
        }
    }
}

impl Serialize for Extras<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let mut entry = |key: &str, value: &RawJson| {
            if self.skip.contains(&key) {
                return Ok(());
            }
            map.serialize_entry(key, &Json::new(key, value.as_str()))
        };
        match self.keys {
            Keys::List(keys) => {
                for (key, value) in keys {
                    entry(key, value)?;
                }
            }
            Keys::At(extra, at) => {
                for (key, value) in extra.at(at) {
                    entry(key, value)?;
                }
            }
        }
        map.end()
    }
}

/// Keeps the keys a decoder did not model at `at`, as domain raw JSON.
pub(crate) fn keep(
    extra: &mut AnswerExtra,
    at: ExtraAt,
    rest: serde_json::Map<String, serde_json::Value>,
) {
    for (key, value) in rest {
        extra.push(at, key, RawJson::new(value.to_string()));
    }
}

/// Takes `key` out of `rest` when it is a string; any other value (a `null`) stays, to be
/// written back as it came.
pub(crate) fn take_string(
    rest: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<String> {
    match rest.remove(key)? {
        serde_json::Value::String(text) => Some(text),
        other => {
            rest.insert(key.to_owned(), other);
            None
        }
    }
}
