//! Labels of attempts and served routes, kept as parts and written out only when shown.
//!
//! An attempt's label is `group › echelon › provider/model#k` (or `pool:NAME › …`, or the
//! instance alone). The planner keeps its parts (names it already holds, shared), so handing out
//! an attempt formats nothing; the human form (`›`) and the ASCII form of the
//! `x-echelon-route` header (`>`) are both written here, from the same parts.

use core::fmt;
use std::sync::Arc;

use crate::name::{EchelonName, GroupName, InstanceId, WrapperName};

/// The separator of the human form.
const HUMAN: &str = " › ";
/// The separator of the ASCII form (HTTP header values).
const ASCII: &str = " > ";

/// The stage part of an attempt's label; built once per stage with the routing table and
/// shared by every attempt in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageName {
    /// An echelon of a task group: `group › echelon`.
    Echelon(GroupName, EchelonName),
    /// A route without an echelon, by its label (`pool:NAME`).
    Route(Arc<str>),
}

/// Where an attempt went: its stage and its instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLabel {
    /// The stage; `None` on a direct model route, where the instance says it all.
    pub stage: Option<Arc<StageName>>,
    /// The instance.
    pub instance: InstanceId,
}

impl AttemptLabel {
    fn write(&self, f: &mut dyn fmt::Write, separator: &str) -> fmt::Result {
        match self.stage.as_deref() {
            Some(StageName::Echelon(group, echelon)) => {
                write!(f, "{group}{separator}{echelon}{separator}")?;
            }
            Some(StageName::Route(label)) => write!(f, "{label}{separator}")?,
            None => {}
        }
        write!(f, "{}", self.instance)
    }
}

impl fmt::Display for AttemptLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, HUMAN)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for AttemptLabel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// How a request was served: the wrapper the client named, if any, and the attempt that served
/// it (`wrapper › group › echelon › provider/model#k`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLabel {
    /// The wrapper the client named.
    pub wrapper: Option<WrapperName>,
    /// The attempt that served the request.
    pub attempt: AttemptLabel,
}

impl RouteLabel {
    /// The ASCII form for an HTTP header (`wrapper > group > echelon > provider/model#k`):
    /// separators as `>`, and any other character a header value cannot hold left out.
    pub fn to_header(&self) -> String {
        let mut out = String::new();
        // Writing into a `String` cannot fail.
        let _ = self.write(&mut Ascii(&mut out), ASCII);
        out
    }

    fn write(&self, f: &mut dyn fmt::Write, separator: &str) -> fmt::Result {
        if let Some(wrapper) = &self.wrapper {
            f.write_str(wrapper.as_str())?;
            f.write_str(separator)?;
        }
        self.attempt.write(f, separator)
    }
}

impl fmt::Display for RouteLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, HUMAN)
    }
}

/// Keeps only what a header value can hold: visible ASCII and spaces.
struct Ascii<'a>(&'a mut String);

impl fmt::Write for Ascii<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0
            .extend(s.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::ModelRef;

    fn instance() -> InstanceId {
        InstanceId::new(ModelRef::new("openai", "gpt-4o"), 1)
    }

    #[test]
    fn one_set_of_parts_gives_the_human_form_and_the_header_form() {
        let rows = [
            (
                Some("chat"),
                Some(StageName::Echelon("g".into(), "echelon2".into())),
                "chat › g › echelon2 › openai/gpt-4o#1",
                "chat > g > echelon2 > openai/gpt-4o#1",
            ),
            (
                None,
                Some(StageName::Route(Arc::from("pool:fast"))),
                "pool:fast › openai/gpt-4o#1",
                "pool:fast > openai/gpt-4o#1",
            ),
            (
                Some("direct"),
                None,
                "direct › openai/gpt-4o#1",
                "direct > openai/gpt-4o#1",
            ),
        ];
        for (wrapper, stage, human, header) in rows {
            let attempt = AttemptLabel {
                stage: stage.map(Arc::new),
                instance: instance(),
            };
            let route = RouteLabel {
                wrapper: wrapper.map(WrapperName::new),
                attempt: attempt.clone(),
            };
            assert_eq!(route.to_string(), human);
            assert_eq!(route.to_header(), header);
            assert!(human.ends_with(&attempt.to_string()));
        }
    }

    #[test]
    fn the_header_form_keeps_only_what_a_header_value_can_hold() {
        let route = RouteLabel {
            wrapper: Some(WrapperName::new("chät\u{7}")),
            attempt: AttemptLabel {
                stage: None,
                instance: instance(),
            },
        };
        assert_eq!(route.to_header(), "cht > openai/gpt-4o#1");
    }
}
