//! Names of configured things: providers, models, pools, task groups, echelons, wrappers, instances.
//!
//! Every name is cheap to clone (`Arc<str>`) because names travel with each routing decision, metric
//! and trace event. Names only ever come from configuration, never from request input, which keeps
//! metric label sets bounded.

use core::fmt;
use std::sync::Arc;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Wraps a configured name.
            pub fn new(name: impl Into<Arc<str>>) -> Self {
                Self(name.into())
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as shared text: a reference count increment, no copy.
            pub fn shared(&self) -> Arc<str> {
                Arc::clone(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Hash, Eq and Ord derive from the inner `str`, so maps keyed by names can be looked up
        // by `&str`.
        impl core::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(name: &str) -> Self {
                Self::new(name)
            }
        }
    };
}

name_type!(
    /// A provider account set, e.g. `openai` (one `providers/*.toml` file).
    ProviderName
);
name_type!(
    /// A model id as configured under a provider, e.g. `gpt-4o-mini`.
    ModelName
);
name_type!(
    /// A polling pool.
    PoolName
);
name_type!(
    /// A task group.
    GroupName
);
name_type!(
    /// An echelon (tier) inside a task group, e.g. `echelon1`.
    EchelonName
);
name_type!(
    /// A wrapper: the client-facing model name.
    WrapperName
);

/// A model as addressed in configuration and requests: `provider/model`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelRef {
    /// The provider part.
    pub provider: ProviderName,
    /// The model part.
    pub model: ModelName,
}

impl ModelRef {
    /// Builds a reference from its parts.
    pub fn new(provider: impl Into<ProviderName>, model: impl Into<ModelName>) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
        }
    }

    /// Parses `provider/model`; the model part may itself contain slashes
    /// (`openrouter/meta-llama/llama-3-70b`).
    pub fn parse(text: &str) -> Option<Self> {
        let (provider, model) = text.split_once('/')?;
        if provider.is_empty() || model.is_empty() {
            return None;
        }
        Some(Self::new(
            ProviderName::new(provider),
            ModelName::new(model),
        ))
    }
}

impl From<String> for ProviderName {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

impl From<String> for ModelName {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

impl fmt::Debug for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for ModelRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One instance: a model reached through one key of a provider, e.g. `openai/gpt-4o-mini#2`.
///
/// The key is identified by its index in the provider's `api_keys`, never by its value.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId {
    /// The model this instance serves.
    pub model: ModelRef,
    /// Index of the key in the provider's key list (0 for a single `api_key`).
    pub key_index: u16,
}

impl InstanceId {
    /// Builds an instance id.
    pub fn new(model: ModelRef, key_index: u16) -> Self {
        Self { model, key_index }
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.model, self.key_index)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for InstanceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ref_parses_provider_and_keeps_slashes_in_model() {
        let r = ModelRef::parse("openrouter/meta-llama/llama-3-70b").unwrap();
        assert_eq!(r.provider.as_str(), "openrouter");
        assert_eq!(r.model.as_str(), "meta-llama/llama-3-70b");
        assert_eq!(r.to_string(), "openrouter/meta-llama/llama-3-70b");
        assert!(ModelRef::parse("no-slash").is_none());
        assert!(ModelRef::parse("/x").is_none());
        assert!(ModelRef::parse("x/").is_none());
    }

    #[test]
    fn instance_id_shows_key_index_not_key() {
        let id = InstanceId::new(ModelRef::new("openai", "gpt-4o"), 2);
        assert_eq!(id.to_string(), "openai/gpt-4o#2");
    }
}
