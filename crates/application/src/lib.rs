//! Echelon application layer: the use cases that route and execute requests over the domain model.
//!
//! [`gateway::Gateway`] serves chat requests by driving the domain's attempt planner against
//! provider backends, with per-attempt timeouts, one overall deadline, backoff, streaming
//! failover before the first token, and cancellation that releases every permit. The live routing
//! table and backends are swapped atomically on reload; requests in flight finish on the
//! generation they started with.

pub mod alerts;
pub mod backends;
pub mod clock;
pub mod gateway;
pub mod health_check;
pub mod history;
pub mod shared_state;
pub mod stream;
pub mod task;
