//! The application's [`BackendFactory`] port, served by the provider adapters of this crate.

use std::sync::Arc;

use echelon_application::backends::{BackendError, BackendFactory};
use echelon_domain::ports::DynChatBackend;
use echelon_domain::spec::ProviderSpec;

use crate::provider::ProviderClient;

/// Builds a [`ProviderClient`] (HTTP adapter or in-process mock) for each configured provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProviderBackends;

impl BackendFactory for ProviderBackends {
    fn build(&self, provider: &ProviderSpec) -> Result<Arc<dyn DynChatBackend>, BackendError> {
        match ProviderClient::from_spec(provider) {
            Ok(client) => Ok(Arc::new(client)),
            Err(error) => Err(BackendError {
                provider: error.provider().clone(),
                reason: error.reason(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use echelon_domain::name::ProviderName;
    use echelon_domain::secret::Secret;
    use echelon_domain::spec::ProviderKind;

    use super::*;

    fn spec(base_url: &str) -> ProviderSpec {
        ProviderSpec {
            name: ProviderName::new("openai"),
            kind: ProviderKind::Openai,
            base_url: base_url.to_owned(),
            api_keys: vec![Secret::new("sk-canary-factory")],
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            mock: None,
        }
    }

    #[test]
    fn builds_a_backend_or_says_which_provider_is_wrong() {
        assert!(
            ProviderBackends
                .build(&spec("http://127.0.0.1:9/v1"))
                .is_ok()
        );
        let error = ProviderBackends.build(&spec("not a url")).err().unwrap();
        assert_eq!(error.provider.as_str(), "openai");
        assert!(!error.to_string().contains("sk-canary"));
        assert!(
            error.to_string().starts_with("provider `openai`: "),
            "{error}"
        );
    }
}
