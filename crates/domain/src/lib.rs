//! Echelon domain: the model of pools, instances, echelons and their rules, free of I/O and runtimes.
//!
//! This crate stands alone: another service can embed it to pick an instance from a pool, drive a
//! circuit breaker, check a limiter or plan the attempts of a task group. Time and randomness come
//! in from outside through the [`time::Clock`] and [`random::Random`] ports, so every rule is
//! deterministic under test.
//!
//! # Map
//!
//! - [`spec`]: validated configuration values and the [`spec::Topology`] that holds them;
//!   [`defaults`]: every default of the configuration, written once.
//! - [`routing`]: the [`routing::RoutingTable`] built from a topology (live state that survives
//!   hot reloads), name resolution into a [`routing::Route`], snapshots for the admin API.
//! - [`plan`]: the attempt planner: [`plan::Plan::next`] yields [`plan::Step`]s,
//!   [`plan::Plan::record`] takes [`plan::Outcome`]s; [`routing::RoutingTable::explain`] is its
//!   dry run.
//! - [`instance`], [`health`], [`breaker`], [`limit`], [`rotation`]: the rules, usable one by one.
//! - [`error`]: error classes and the decision table; [`events`]: the event sink port and
//!   [`events::SkipReason`]; [`ports`]: the chat backend port; [`shared`]: the
//!   shared state port of a fleet of replicas.
//!
//! # Embedding
//!
//! Build a table, resolve a name, and drive the plan with your own transport (see
//! `examples/embed.rs` for a complete program):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use echelon_domain::error::{ErrorClass, UpstreamError};
//! use echelon_domain::name::ModelRef;
//! use echelon_domain::plan::{Outcome, RequestFacts, Step, Verdict};
//! use echelon_domain::random::SplitMix64;
//! use echelon_domain::routing::{RoutingTable, TableOptions};
//! use echelon_domain::secret::Secret;
//! use echelon_domain::spec::{Cost, Limits, ModelSpec, ProviderKind, ProviderSpec, Topology};
//! use echelon_domain::time::{Clock, ManualClock};
//!
//! let mut topology = Topology::default();
//! topology.providers.insert("acme".into(), ProviderSpec {
//!     name: "acme".into(),
//!     kind: ProviderKind::Openai,
//!     base_url: "https://llm.acme.example/v1".into(),
//!     api_keys: vec![Secret::new("key-1"), Secret::new("key-2")],
//!     headers: Vec::new(),
//!     connect_timeout: Duration::from_secs(2),
//!     request_timeout: Duration::from_secs(60),
//!     mock: None,
//! });
//! let model = ModelRef::new("acme", "fast");
//! topology.models.insert(model.clone(), ModelSpec {
//!     model,
//!     upstream_name: "fast-2025".into(),
//!     context_window: Some(128_000),
//!     limits: Limits::default(),
//!     cost: Cost::default(),
//! });
//!
//! let clock = ManualClock::new();
//! let rng = SplitMix64::new(1);
//! let table = RoutingTable::build(Arc::new(topology), None, TableOptions::default(), clock.now());
//! let route = table.resolve("acme/fast").unwrap();
//! let facts = RequestFacts { estimated_tokens: 100, now: clock.now(), deadline: None };
//! let mut plan = table.plan(&route, facts);
//! let mut calls = 0;
//! let verdict = loop {
//!     match plan.next(clock.now(), &rng) {
//!         Step::Attempt(attempt) => {
//!             // Call `attempt.instance` as `attempt.upstream_model` within `attempt.timeouts`.
//!             calls += 1;
//!             let outcome = if calls == 1 {
//!                 let error = UpstreamError::new(ErrorClass::RateLimited, "slow down");
//!                 Outcome::Failure { error, latency: Duration::from_millis(30) }
//!             } else {
//!                 Outcome::Success { latency: Duration::from_millis(200), ttft: None, usage: None }
//!             };
//!             plan.record(attempt, outcome, clock.now(), &rng);
//!         }
//!         Step::Wait { until, .. } => clock.set(until),
//!         Step::Done(verdict) => break verdict,
//!     }
//! };
//! // The first key was rate limited; the second one served.
//! assert_eq!(verdict, Verdict::Served);
//! assert_eq!(plan.attempts().len(), 2);
//! ```

#![warn(missing_docs)]

pub mod alert;
pub mod breaker;
pub mod budget;
pub mod chat;
pub mod defaults;
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
pub mod shared;
pub mod spec;
pub mod stats;
pub mod time;
pub mod window;
