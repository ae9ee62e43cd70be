//! Integration tests of echelon-config: the shipped trees, error report snapshots, loading
//! behaviour, the watcher and a fuzz-style property test.

mod support;

mod behaviour;
mod fuzz;
mod shipped;
mod snapshots;
mod watch;
