//! Building a table: live state for every pool, model and echelon of a topology, carried over
//! from the previous table where the settings it depends on did not change.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::budget::RetryBudget;

use crate::instance::SharedInstance;
use crate::name::{GroupName, InstanceId, ModelRef, PoolName};
use crate::rotation::Rotation;
use crate::spec::{RotationStrategy, Topology};
use crate::time::Instant;

use super::echelon::{EchelonLive, EchelonRuntime, GroupRuntime};
use super::instances::{InstanceIndex, Instances};
use super::pool::{PoolIndex, PoolLabel, PoolLimits, PoolRuntime};
use super::{RoutingTable, TableOptions};

impl RoutingTable {
    /// Builds live state for `topology` at `now`, carrying over the live state of `previous` for
    /// every instance and echelon whose identity and relevant settings are unchanged.
    ///
    /// An instance listed in several places (several pools, or a pool and a direct model route)
    /// has one live state: it follows the health, breaker and rate-counting policy of the first
    /// pool listing it (by pool name; defaults when only routed directly) and the tightest limits
    /// of all its listings. Weights stay per pool.
    pub fn build(
        topology: Arc<Topology>,
        previous: Option<&RoutingTable>,
        options: TableOptions,
        now: Instant,
    ) -> Self {
        let instances = Instances::build(&topology, previous.map(|p| &p.instances), now);
        if options.shared_budgets {
            for instance in instances.iter() {
                instance.share_budgets();
            }
        }
        let pools = build_pools(&topology, &instances, previous, now);
        let models = build_models(&topology, &instances, previous, pools.len());
        let groups = build_groups(&topology, previous, now);
        // The budget's window outlives a reload that keeps its policy.
        let budget = match previous {
            Some(p) if *p.budget.policy() == topology.retry_budget => Arc::clone(&p.budget),
            _ => Arc::new(RetryBudget::new(topology.retry_budget)),
        };
        let mut table = Self {
            topology,
            options,
            instances,
            pools,
            models,
            groups,
            routes: super::Routes::default(),
            budget,
            built_at: now,
        };
        table.routes = table.build_routes();
        table
    }
}

/// The live states of `ids` (unknown ids left out) and their table indices, in order.
fn members<'a>(
    instances: &Instances,
    ids: impl Iterator<Item = &'a InstanceId>,
) -> (Box<[InstanceIndex]>, Box<[SharedInstance]>) {
    let (index, members): (Vec<_>, Vec<_>) = ids.filter_map(|id| instances.shared(id)).unzip();
    (index.into(), members.into())
}

fn pool_index(index: usize) -> PoolIndex {
    PoolIndex(u32::try_from(index).unwrap_or(u32::MAX))
}

fn build_pools(
    topology: &Topology,
    instances: &Instances,
    previous: Option<&RoutingTable>,
    now: Instant,
) -> BTreeMap<PoolName, Arc<PoolRuntime>> {
    let mut pools = BTreeMap::new();
    for (index, (name, spec)) in topology.pools.iter().enumerate() {
        let weights: Vec<u32> = spec.instances.iter().map(|i| i.weight).collect();
        let previous_pool = previous.and_then(|p| p.pools.get(name));
        let counters = previous_pool.map_or_else(Default::default, |p| Arc::clone(&p.counters));
        let limits = match previous_pool.and_then(|p| p.limits.as_ref()) {
            Some(old) if old.key == (spec.limits, spec.rate_algorithm) => Some(Arc::clone(old)),
            _ => PoolLimits::new(spec.limits, spec.rate_algorithm, now),
        };
        let (member_index, members) = members(instances, spec.instances.iter().map(|i| &i.id));
        let runtime = PoolRuntime {
            index: pool_index(index),
            label: PoolLabel::Pool(name.clone()),
            rotation: Rotation::new(spec.rotation, &weights),
            members,
            member_index,
            max_attempts: spec.fallback.max_instance_attempts.max(1),
            max_ejection_percent: spec.max_ejection_percent,
            counters,
            limits,
        };
        pools.insert(name.clone(), Arc::new(runtime));
    }
    pools
}

/// The implicit pool of every model: each key of its provider, in round robin.
fn build_models(
    topology: &Topology,
    instances: &Instances,
    previous: Option<&RoutingTable>,
    first_index: usize,
) -> BTreeMap<ModelRef, Arc<PoolRuntime>> {
    let mut models = BTreeMap::new();
    for (k, model) in topology.models.keys().enumerate() {
        let specs = topology.instances_of_model(model);
        let counters = previous
            .and_then(|p| p.models.get(model))
            .map_or_else(Default::default, |p| Arc::clone(&p.counters));
        let (member_index, members) = members(instances, specs.iter().map(|i| &i.id));
        let n = members.len();
        let runtime = PoolRuntime {
            index: pool_index(first_index + k),
            label: PoolLabel::Model(model.clone()),
            rotation: Rotation::new(RotationStrategy::RoundRobin, &vec![1; n]),
            members,
            member_index,
            max_attempts: u32::try_from(n).unwrap_or(u32::MAX).max(1),
            max_ejection_percent: crate::defaults::pool::MAX_EJECTION_PERCENT,
            counters,
            limits: None,
        };
        models.insert(model.clone(), Arc::new(runtime));
    }
    models
}

fn build_groups(
    topology: &Topology,
    previous: Option<&RoutingTable>,
    now: Instant,
) -> BTreeMap<GroupName, Arc<GroupRuntime>> {
    let mut groups = BTreeMap::new();
    for (name, spec) in &topology.task_groups {
        let prev = previous.and_then(|p| p.groups.get(name));
        let mut echelons: Vec<Arc<EchelonRuntime>> = spec
            .echelons
            .iter()
            .map(|e| {
                let breaker = e.breaker.unwrap_or(spec.breaker);
                let key = EchelonLive::key(breaker, e);
                let carried = prev
                    .and_then(|g| g.echelons.iter().find(|x| x.spec.name == e.name))
                    .filter(|x| x.live.key == key)
                    .map(|x| Arc::clone(&x.live));
                let live = carried.unwrap_or_else(|| Arc::new(EchelonLive::new(breaker, e, now)));
                Arc::new(EchelonRuntime {
                    group: name.clone(),
                    spec: e.clone(),
                    live,
                })
            })
            .collect();
        echelons.sort_by_key(|e| e.spec.priority);
        groups.insert(
            name.clone(),
            Arc::new(GroupRuntime {
                spec: spec.clone(),
                echelons,
                counters: prev.map_or_else(Default::default, |g| Arc::clone(&g.counters)),
            }),
        );
    }
    groups
}
