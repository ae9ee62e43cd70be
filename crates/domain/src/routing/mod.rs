//! The routing table: live state for every instance, pool, echelon and group of a [`Topology`],
//! name resolution, and the precomputed stage lists that attempt plans walk.
//!
//! A table is built once per configuration ([`RoutingTable::build`]) and shared by every request.
//! On a hot reload the new table takes over the live state (health, breakers, limiters, latency,
//! statistics) of every instance and echelon whose identity and relevant settings did not change,
//! so a reload neither forgets an open breaker nor refills a drained bucket. Dead keys come back
//! to life on reload.
//!
//! # Layout
//!
//! - `options`: how a table is built ([`TableOptions`]).
//! - `build`: the table's live state from a topology, carried over from the previous table;
//!   `instances`: the dense store of instance states addressed by a typed index.
//! - `pool`, `echelon`: the run-time state of pools, echelons and groups, and the permits an
//!   attempt holds on them.
//! - `route`, `stages`: [`Route`] and the precomputed walk of stages every route follows.
//! - `resolve`: client-facing names; `snapshot`: the admin API's view of the live state.
//!
//! Plans ([`crate::plan`]) walk the stages; every `impl RoutingTable` lives in this folder.

mod build;
mod echelon;
mod instances;
mod options;
mod pool;
mod resolve;
mod route;
mod snapshot;
mod stages;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::budget::RetryBudget;
use crate::events::EventSink;
use crate::instance::SharedInstance;
use crate::name::{GroupName, InstanceId, ModelRef, PoolName};
use crate::plan::{Explanation, Plan, RequestFacts};
use crate::spec::Topology;
use crate::time::Instant;

pub use crate::spec::RouteDefaults;
pub(crate) use echelon::{EchelonPermit, EchelonRuntime};
pub(crate) use instances::InstanceIndex;
pub use options::TableOptions;
pub use pool::PoolLabel;
pub(crate) use pool::{PoolIndex, PoolPermit, PoolRuntime};
pub use resolve::ResolveError;
pub(crate) use route::Stage;
pub use route::{AttemptTimeouts, Route, RouteTarget};
pub use snapshot::{
    EchelonSnapshot, GroupSnapshot, InstanceSnapshot, PoolMemberSnapshot, PoolSnapshot,
    TableSnapshot,
};

use echelon::GroupRuntime;
use instances::Instances;
use stages::Routes;

/// The routing table. See the module docs.
#[derive(Debug)]
pub struct RoutingTable {
    topology: Arc<Topology>,
    options: TableOptions,
    instances: Instances,
    pools: BTreeMap<PoolName, Arc<PoolRuntime>>,
    models: BTreeMap<ModelRef, Arc<PoolRuntime>>,
    groups: BTreeMap<GroupName, Arc<GroupRuntime>>,
    routes: Routes,
    /// The fleet-wide retry budget, shared by every plan of the table.
    budget: Arc<RetryBudget>,
    built_at: Instant,
}

impl RoutingTable {
    /// Starts the attempt plan of one request on `route`.
    pub fn plan(&self, route: &Route, facts: RequestFacts) -> Plan {
        Plan::start(route, facts, &self.options, &self.budget)
    }

    /// The fleet-wide retry budget.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// A dry run of `route` at `now`: takes no permits and moves no rotation. Unhealthy
    /// candidates are listed as skipped even where the panic policy would still try them; the
    /// verdict accounts for that.
    pub fn explain(&self, route: &Route, now: Instant) -> Explanation {
        crate::plan::explain(route, now)
    }

    /// The topology this table was built from.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// The options it was built with.
    pub fn options(&self) -> &TableOptions {
        &self.options
    }

    /// When it was built.
    pub fn built_at(&self) -> Instant {
        self.built_at
    }

    /// The event sink.
    pub fn sink(&self) -> &dyn EventSink {
        &*self.options.sink
    }

    /// The live state of an instance.
    pub fn instance(&self, id: &InstanceId) -> Option<&SharedInstance> {
        self.instances.get(id)
    }

    /// Every instance's live state, by id.
    pub fn instances(&self) -> impl Iterator<Item = &SharedInstance> {
        self.instances.iter()
    }

    /// Records an active probe's result for an instance (see
    /// [`crate::instance::InstanceState::record_probe`]); false when the instance is unknown.
    pub fn record_probe(&self, id: &InstanceId, now: Instant, ok: bool) -> bool {
        self.instance(id)
            .map(|i| i.record_probe(now, ok, self.sink()))
            .is_some()
    }

    /// Every instance to probe, with its pool's health-check settings (the first pool listing
    /// it, by name, whose checks are enabled). Instances only routed directly are not probed.
    pub fn probe_targets(&self) -> Vec<(SharedInstance, crate::spec::HealthCheckSpec)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for pool in self.topology.pools.values() {
            if !pool.health_check.enabled {
                continue;
            }
            for i in &pool.instances {
                if seen.insert(i.id.clone())
                    && let Some(state) = self.instance(&i.id)
                {
                    out.push((Arc::clone(state), pool.health_check));
                }
            }
        }
        out
    }
}
