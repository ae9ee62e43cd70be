//! Integration tests of echelon-domain: routing tables, attempt plans and their invariants.

#[cfg(feature = "test-support")]
mod mocks;
mod plan;
mod properties;
mod routing;
mod support;
