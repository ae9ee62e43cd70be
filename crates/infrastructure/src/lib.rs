//! Echelon infrastructure: driven adapters for provider HTTP APIs, telemetry and shared state.
//!
//! - [`provider`]: the chat backend port over OpenAI-compatible servers, Anthropic, Gemini and the
//!   in-process mock; start at [`provider::ProviderClient::from_spec`].
//! - [`http_client`]: the one upstream HTTP client builder (no redirects, no hidden retries).
//! - [`backend_factory`]: the application's backend factory port over [`provider`].
//! - [`state`]: the shared state port over Redis, for a fleet of replicas.
//! - [`wire`]: the OpenAI wire format shared by the edge, the adapter and the fake upstream.

pub mod backend_factory;
pub mod http_client;
pub mod metrics;
pub mod provider;
pub mod state;
pub mod telemetry;
pub mod webhook;
pub mod wire;
