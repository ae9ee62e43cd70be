//! The precomputed walk of every route of a table: which stages (echelons, pools and their
//! fallbacks) a plan visits, in which order, with which settings.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::name::{EchelonName, GroupName, ModelRef, PoolName};
use crate::plan::StageName;
use crate::spec::{EchelonTarget, FallbackStrategy, PoolFallbackStrategy, RequestDefaults};

use super::RoutingTable;
use super::echelon::{EchelonRuntime, GroupRuntime};
use super::pool::PoolRuntime;
use super::route::{AttemptTimeouts, RoutePlan, RouteSettings, Stage};

/// Every route's walk, by what the client can name.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) groups: BTreeMap<GroupName, Arc<RoutePlan>>,
    pub(crate) echelons: BTreeMap<(GroupName, EchelonName), Arc<RoutePlan>>,
    pub(crate) pools: BTreeMap<PoolName, Arc<RoutePlan>>,
    pub(crate) models: BTreeMap<ModelRef, Arc<RoutePlan>>,
}

impl RoutingTable {
    pub(super) fn build_routes(&self) -> Routes {
        let defaults = self.topology.route_defaults;
        let default_settings = RouteSettings {
            max_attempts: defaults.max_attempts.max(1),
            retry_delay: defaults.retry_delay,
            deadline: defaults.deadline,
            provider_failover: false,
            content_filter_fallback: false,
        };
        let mut routes = Routes::default();
        for (name, group) in &self.groups {
            let plan = self.group_plan(name, None);
            routes.groups.insert(name.clone(), Arc::new(plan));
            for e in &group.echelons {
                let plan = self.group_plan(name, Some(&e.spec.name));
                routes
                    .echelons
                    .insert((name.clone(), e.spec.name.clone()), Arc::new(plan));
            }
        }
        for name in self.pools.keys() {
            let mut cycles = Vec::new();
            let targets = self.expand_pool(name, &mut BTreeSet::new(), &mut cycles);
            let label: Arc<str> = Arc::from(format!("pool:{name}"));
            let stage_name = Arc::new(StageName::Route(Arc::clone(&label)));
            let stage = self.plain_stage(label, Some(stage_name), targets);
            routes.pools.insert(
                name.clone(),
                Arc::new(RoutePlan {
                    stages: Box::new([stage]),
                    settings: default_settings,
                    cycles: cycles.into(),
                }),
            );
        }
        for (model, pool) in &self.models {
            let stage =
                self.plain_stage(Arc::from(model.to_string()), None, vec![Arc::clone(pool)]);
            routes.models.insert(
                model.clone(),
                Arc::new(RoutePlan {
                    stages: Box::new([stage]),
                    settings: default_settings,
                    cycles: Box::new([]),
                }),
            );
        }
        routes
    }

    /// The one stage of a route without an echelon (`pool:NAME`; `provider/model` has no
    /// `name`: its attempts are labelled by their instance alone).
    fn plain_stage(
        &self,
        label: Arc<str>,
        name: Option<Arc<StageName>>,
        targets: Vec<Arc<PoolRuntime>>,
    ) -> Stage {
        let d = self.topology.route_defaults;
        Stage {
            label,
            name,
            group: None,
            group_counters: None,
            echelon: None,
            targets: targets.into(),
            per_target: None,
            rotating: 0,
            timeouts: AttemptTimeouts {
                total: d.timeout,
                first_token: d.first_token_timeout,
                idle: d.idle_timeout,
            },
            max_retries: d.max_retries,
            retry_after_max_wait: d.retry_after_max_wait,
            defaults: RequestDefaults::default(),
        }
    }

    /// A pool followed by its fallback pools (transitively, each once).
    fn expand_pool(
        &self,
        name: &PoolName,
        seen: &mut BTreeSet<PoolName>,
        cycles: &mut Vec<Arc<str>>,
    ) -> Vec<Arc<PoolRuntime>> {
        if !seen.insert(name.clone()) {
            cycles.push(Arc::from(format!("pool:{name}")));
            return Vec::new();
        }
        let Some(pool) = self.pools.get(name) else {
            return Vec::new();
        };
        let mut out = vec![Arc::clone(pool)];
        if let Some(spec) = self.topology.pools.get(name)
            && spec.fallback.strategy == PoolFallbackStrategy::PoolFallback
        {
            for next in &spec.fallback.fallback_pools {
                out.extend(self.expand_pool(next, seen, cycles));
            }
        }
        out
    }

    fn echelon_stage(&self, group: &GroupRuntime, echelon: &Arc<EchelonRuntime>) -> Stage {
        let e = &echelon.spec;
        let mut seen = BTreeSet::new();
        let mut cycles = Vec::new();
        let mut targets = Vec::new();
        let mut fallbacks = Vec::new();
        for target in &e.targets {
            match target {
                EchelonTarget::Model(model) => {
                    if let Some(pool) = self.models.get(model) {
                        targets.push(Arc::clone(pool));
                    }
                }
                EchelonTarget::Pool(pool) => {
                    let mut expanded = self.expand_pool(pool, &mut seen, &mut cycles).into_iter();
                    targets.extend(expanded.next());
                    fallbacks.extend(expanded);
                }
            }
        }
        let rotating = targets.len();
        // A fallback pool that the echelon also lists itself is already a primary target.
        fallbacks.retain(|f| !targets.iter().any(|t| t.index == f.index));
        let mut unique: Vec<Arc<PoolRuntime>> = Vec::with_capacity(fallbacks.len());
        for f in fallbacks {
            if !unique.iter().any(|u| u.index == f.index) {
                unique.push(f);
            }
        }
        targets.extend(unique);
        let model_rotate = group.spec.fallback_strategy == FallbackStrategy::ModelRotate;
        Stage {
            label: Arc::from(format!("{} › {}", group.spec.name, e.name)),
            name: Some(Arc::new(StageName::Echelon(
                group.spec.name.clone(),
                e.name.clone(),
            ))),
            group: Some(group.spec.name.clone()),
            group_counters: Some(Arc::clone(&group.counters)),
            echelon: Some(Arc::clone(echelon)),
            targets: targets.into(),
            per_target: model_rotate.then_some(1),
            rotating: if model_rotate { 0 } else { rotating },
            timeouts: AttemptTimeouts {
                total: e.timeout,
                first_token: e.first_token_timeout,
                idle: e.idle_timeout,
            },
            max_retries: if model_rotate { 0 } else { e.max_retries },
            retry_after_max_wait: e.retry_after_max_wait,
            defaults: e.defaults,
        }
    }

    /// The walk of a group (or one of its echelons), with `group_fallback` references followed
    /// transitively; a reference to a group or echelon already in the walk is dropped as a cycle.
    fn group_plan(&self, name: &GroupName, only: Option<&EchelonName>) -> RoutePlan {
        let root = &self.groups[name];
        let mut stages = Vec::new();
        let mut cycles = Vec::new();
        let mut seen_groups = BTreeSet::new();
        let mut seen_echelons = BTreeSet::new();
        let mut queue = VecDeque::new();
        queue.push_back((name.clone(), only.cloned()));
        while let Some((group_name, echelon)) = queue.pop_front() {
            let Some(group) = self.groups.get(&group_name) else {
                continue;
            };
            let whole = echelon.is_none();
            if seen_groups.contains(&group_name)
                || echelon
                    .as_ref()
                    .is_some_and(|e| seen_echelons.contains(&(group_name.clone(), e.clone())))
            {
                let label = match &echelon {
                    Some(e) => format!("group:{group_name}.{e}"),
                    None => format!("group:{group_name}"),
                };
                cycles.push(Arc::from(label));
                continue;
            }
            if whole {
                seen_groups.insert(group_name.clone());
            }
            for e in &group.echelons {
                if echelon.as_ref().is_some_and(|only| *only != e.spec.name)
                    || !seen_echelons.insert((group_name.clone(), e.spec.name.clone()))
                {
                    continue;
                }
                stages.push(self.echelon_stage(group, e));
            }
            // Fallback groups are followed for whole groups only: `group:NAME.echelonN` is a
            // request for that one echelon.
            if whole && group.spec.fallback_strategy == FallbackStrategy::GroupFallback {
                for r in &group.spec.fallback.fallback_groups {
                    queue.push_back((r.group.clone(), r.echelon.clone()));
                }
            }
        }
        let f = &root.spec.fallback;
        RoutePlan {
            stages: stages.into(),
            settings: RouteSettings {
                max_attempts: f.max_attempts.max(1),
                retry_delay: f.retry_delay,
                deadline: f.deadline,
                provider_failover: root.spec.fallback_strategy
                    == FallbackStrategy::ProviderFailover,
                content_filter_fallback: f.content_filter_fallback,
            },
            cycles: cycles.into(),
        }
    }
}
