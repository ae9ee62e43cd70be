//! Echelon domain: the model of pools, instances, echelons and their rules, free of I/O and runtimes.
//!
//! This crate stands alone: another service can embed it to pick an instance from a pool, drive a
//! circuit breaker, check a limiter or plan the attempts of a task group. Time and randomness come
//! in from outside through the [`time::Clock`] and [`random::Random`] ports, so every rule is
//! deterministic under test.

#![warn(missing_docs)]

pub mod breaker;
pub mod chat;
pub mod error;
pub mod events;
pub mod health;
pub mod instance;
pub mod limit;
pub mod name;
pub mod plan;
pub mod ports;
pub mod random;
pub mod rotation;
pub mod routing;
pub mod secret;
pub mod spec;
pub mod stats;
pub mod time;
