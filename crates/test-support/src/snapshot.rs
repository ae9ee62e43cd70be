//! Reading a routing table's snapshot in tests: one instance wherever it is listed, and the check
//! that nothing holds a permit once the requests are over.

use echelon_domain::routing::{InstanceSnapshot, TableSnapshot};

/// The state of instance `id` (`provider/model#key`), in a pool or under its model.
pub fn instance_in(snapshot: &TableSnapshot, id: &str) -> InstanceSnapshot {
    snapshot
        .pools
        .iter()
        .chain(&snapshot.models)
        .flat_map(|p| &p.members)
        .map(|m| &m.instance)
        .find(|i| i.id.to_string() == id)
        .cloned()
        .unwrap_or_else(|| panic!("no instance {id} in the snapshot"))
}

/// Asserts that no instance or echelon has a request in flight; `context` opens each message.
pub fn assert_idle(snapshot: &TableSnapshot, context: &str) {
    for pool in snapshot.pools.iter().chain(&snapshot.models) {
        for m in &pool.members {
            assert_eq!(
                m.instance.in_flight, 0,
                "{context}: {} still in flight",
                m.instance.id
            );
        }
    }
    for group in &snapshot.groups {
        for e in &group.echelons {
            assert_eq!(
                e.in_flight, 0,
                "{context}: {} › {} still in flight",
                group.name, e.name
            );
        }
    }
}
