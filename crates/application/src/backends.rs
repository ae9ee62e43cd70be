//! Provider backends: one chat backend per configured provider, kept across reloads when the
//! provider did not change so its connection pool survives.

use std::collections::HashMap;
use std::sync::Arc;

use echelon_domain::name::ProviderName;
use echelon_domain::ports::DynChatBackend;
use echelon_domain::spec::{ProviderSpec, Topology};

/// A backend could not be built for a provider (bad base URL, TLS setup, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider `{provider}`: {reason}")]
pub struct BackendError {
    /// The provider at fault.
    pub provider: ProviderName,
    /// What went wrong, free of secrets.
    pub reason: String,
}

/// Builds chat backends from provider specs; implemented by the infrastructure adapters and
/// handed in by the composition root.
pub trait BackendFactory: Send + Sync {
    /// A backend serving every key and model of `provider`.
    ///
    /// # Errors
    /// When the provider's settings cannot produce a working client.
    fn build(&self, provider: &ProviderSpec) -> Result<Arc<dyn DynChatBackend>, BackendError>;
}

/// The backends of one configuration generation, by provider.
#[derive(Clone, Default)]
pub struct Backends {
    by_provider: HashMap<ProviderName, (ProviderSpec, Arc<dyn DynChatBackend>)>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_provider.keys()).finish()
    }
}

impl Backends {
    /// Builds a backend for every provider of `topology`, reusing the one in `previous` when the
    /// provider's spec is unchanged.
    ///
    /// # Errors
    /// The first provider whose backend cannot be built.
    pub fn build(
        topology: &Topology,
        factory: &dyn BackendFactory,
        previous: Option<&Backends>,
    ) -> Result<Self, BackendError> {
        let mut by_provider = HashMap::with_capacity(topology.providers.len());
        for (name, spec) in &topology.providers {
            let reused = previous
                .and_then(|p| p.by_provider.get(name))
                .filter(|(old, _)| old == spec)
                .map(|(_, backend)| Arc::clone(backend));
            let backend = match reused {
                Some(backend) => backend,
                None => factory.build(spec)?,
            };
            by_provider.insert(name.clone(), (spec.clone(), backend));
        }
        Ok(Self { by_provider })
    }

    /// The backend of a provider.
    pub fn get(&self, provider: &ProviderName) -> Option<&Arc<dyn DynChatBackend>> {
        self.by_provider.get(provider).map(|(_, backend)| backend)
    }
}
