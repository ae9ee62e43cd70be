//! Integration tests of echelon-domain: routing tables, attempt plans and their invariants.

mod fleet;
mod plan;
mod properties;
mod routing;
mod support;
