//! Name resolution: what a client-facing name (a wrapper, `group:NAME`, `group:NAME.echelonN`,
//! `pool:NAME`, `provider/model`) points at, and every name a client can send.

use std::sync::Arc;

use crate::name::{EchelonName, GroupName, ModelRef, PoolName, WrapperName};
use crate::spec::WrapperTarget;

use super::RoutingTable;
use super::route::{Route, RouteTarget};

/// Why a name does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No wrapper, group, pool or model has this name.
    #[error("model `{name}` not found")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The group exists but has no such echelon.
    #[error("task group `{group}` has no echelon `{echelon}`")]
    UnknownEchelon {
        /// The group.
        group: GroupName,
        /// The echelon asked for.
        echelon: String,
    },
}

impl RoutingTable {
    /// Every name a client can send: wrappers, `group:NAME`, `group:NAME.echelonN`, `pool:NAME`
    /// and `provider/model`.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .topology
            .wrappers
            .keys()
            .map(ToString::to_string)
            .collect();
        for (group, runtime) in &self.groups {
            names.push(format!("group:{group}"));
            for e in &runtime.echelons {
                names.push(format!("group:{group}.{}", e.spec.name));
            }
        }
        names.extend(self.pools.keys().map(|p| format!("pool:{p}")));
        names.extend(self.models.keys().map(ToString::to_string));
        names
    }

    /// Resolves a client-facing name: `group:NAME`, `group:NAME.echelonN`, `pool:NAME`, a
    /// wrapper name, or `provider/model`, in that order.
    pub fn resolve(&self, name: &str) -> Result<Route, ResolveError> {
        let not_found = || ResolveError::NotFound {
            name: name.to_owned(),
        };
        if let Some(rest) = name.strip_prefix("group:") {
            return self.group_route(rest, None).ok_or_else(not_found)?;
        }
        if let Some(rest) = name.strip_prefix("pool:") {
            return self
                .pool_route(&PoolName::new(rest), None)
                .ok_or_else(not_found);
        }
        if let Some(wrapper) = self.topology.wrappers.get(name) {
            let w = Some(wrapper.name.clone());
            return match &wrapper.target {
                WrapperTarget::TaskGroup(group) => {
                    self.group_route(group.as_str(), w).ok_or_else(not_found)?
                }
                WrapperTarget::Pool(pool) => self.pool_route(pool, w).ok_or_else(not_found),
                WrapperTarget::Direct(model) => self.model_route(model, w).ok_or_else(not_found),
            };
        }
        ModelRef::parse(name)
            .and_then(|model| self.model_route(&model, None))
            .ok_or_else(not_found)
    }

    fn group_route(
        &self,
        text: &str,
        wrapper: Option<WrapperName>,
    ) -> Option<Result<Route, ResolveError>> {
        if let Some(plan) = self.routes.groups.get(text) {
            return Some(Ok(Route {
                wrapper,
                target: RouteTarget::Group {
                    group: GroupName::new(text),
                    echelon: None,
                },
                plan: Arc::clone(plan),
            }));
        }
        let (group, echelon) = text.rsplit_once('.')?;
        let group = GroupName::new(group);
        self.groups.get(&group)?;
        let key = (group.clone(), EchelonName::new(echelon));
        let Some(plan) = self.routes.echelons.get(&key) else {
            return Some(Err(ResolveError::UnknownEchelon {
                group,
                echelon: echelon.to_owned(),
            }));
        };
        Some(Ok(Route {
            wrapper,
            target: RouteTarget::Group {
                group,
                echelon: Some(key.1),
            },
            plan: Arc::clone(plan),
        }))
    }

    fn pool_route(&self, pool: &PoolName, wrapper: Option<WrapperName>) -> Option<Route> {
        self.routes.pools.get(pool).map(|plan| Route {
            wrapper,
            target: RouteTarget::Pool(pool.clone()),
            plan: Arc::clone(plan),
        })
    }

    fn model_route(&self, model: &ModelRef, wrapper: Option<WrapperName>) -> Option<Route> {
        self.routes.models.get(model).map(|plan| Route {
            wrapper,
            target: RouteTarget::Model(model.clone()),
            plan: Arc::clone(plan),
        })
    }
}
