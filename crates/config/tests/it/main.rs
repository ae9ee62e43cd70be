//! Integration tests of echelon-config: the shipped trees, error report snapshots, loading
//! behaviour, the watcher, a fuzz-style property test and the LiteLLM import.

mod support;

mod behaviour;
mod fuzz;
mod import;
mod shipped;
mod snapshots;
mod watch;
