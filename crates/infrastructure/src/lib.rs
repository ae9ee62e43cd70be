//! Echelon infrastructure: driven adapters for provider HTTP APIs, telemetry and shared state.
