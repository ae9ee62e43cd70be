//! Integration tests of echelon-infrastructure: adapters over real sockets on 127.0.0.1.

mod engine;
mod mock;
mod observability;
mod openai_faults;
mod retry_hints;
mod secrets;
mod shared_state;
mod stream_ends;
mod support;
mod translation;
