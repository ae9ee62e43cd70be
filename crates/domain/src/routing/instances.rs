//! Every instance of a table, stored densely and addressed by a typed index, and the carry-over
//! of their live state across a reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::instance::{InstancePolicy, InstanceState, SharedInstance};
use crate::limit::tighter;
use crate::name::InstanceId;
use crate::secret::Secret;
use crate::spec::{InstanceSpec, Limits, Topology};
use crate::time::Instant;

/// An instance's position in its table's store: its identity within one table (and in the
/// plans built from it), cheaper to compare and hash than its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct InstanceIndex(u32);

/// What an instance's live state was built from; a change means fresh live state on reload.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    spec: InstanceSpec,
    policy: InstancePolicy,
    base_url: String,
    key: Option<Secret>,
}

#[derive(Debug)]
struct Slot {
    state: SharedInstance,
    fingerprint: Fingerprint,
}

/// The instances of a table, in id order.
#[derive(Debug, Default)]
pub(crate) struct Instances {
    slots: Vec<Slot>,
}

impl Instances {
    /// The live state of every instance of `topology` at `now`, carried over from `previous` for
    /// every instance whose fingerprint is unchanged (its dead key revived).
    ///
    /// An instance listed in several places (several pools, or a pool and a direct model route)
    /// has one live state: it follows the health, breaker and rate-counting policy of the first
    /// pool listing it (by pool name; defaults when only routed directly) and the tightest limits
    /// of all its listings.
    pub(crate) fn build(topology: &Topology, previous: Option<&Instances>, now: Instant) -> Self {
        // Every listing: pool members first (pools by name), then direct model routes.
        let mut merged: BTreeMap<InstanceId, (InstanceSpec, InstancePolicy)> = BTreeMap::new();
        let pool_listings = topology.pools.values().flat_map(|pool| {
            let policy = InstancePolicy {
                health: pool.health,
                breaker: pool.breaker,
                rate_algorithm: pool.rate_algorithm,
            };
            pool.instances.iter().map(move |i| (i.clone(), policy))
        });
        let model_listings = topology.models.keys().flat_map(|m| {
            topology
                .instances_of_model(m)
                .into_iter()
                .map(|i| (i, InstancePolicy::default()))
        });
        for (spec, policy) in pool_listings.chain(model_listings) {
            merged
                .entry(spec.id.clone())
                .and_modify(|(s, _)| {
                    s.limits = Limits {
                        rpm: tighter(s.limits.rpm, spec.limits.rpm),
                        tpm: tighter(s.limits.tpm, spec.limits.tpm),
                        max_concurrency: tighter(
                            s.limits.max_concurrency,
                            spec.limits.max_concurrency,
                        ),
                    };
                })
                .or_insert_with(|| (InstanceSpec { weight: 1, ..spec }, policy));
        }
        let slots = merged
            .into_iter()
            .map(|(id, (spec, policy))| {
                let provider = topology.providers.get(&id.model.provider);
                let fingerprint = Fingerprint {
                    spec: spec.clone(),
                    policy,
                    base_url: provider.map(|p| p.base_url.clone()).unwrap_or_default(),
                    key: provider.and_then(|p| p.api_keys.get(usize::from(id.key_index)).cloned()),
                };
                let carried = previous
                    .and_then(|p| p.slot(&id))
                    .filter(|old| old.fingerprint == fingerprint)
                    .map(|old| {
                        old.state.revive_key();
                        Arc::clone(&old.state)
                    });
                let state =
                    carried.unwrap_or_else(|| Arc::new(InstanceState::new(spec, policy, now)));
                Slot { state, fingerprint }
            })
            .collect();
        Self { slots }
    }

    fn slot(&self, id: &InstanceId) -> Option<&Slot> {
        self.index_of(id).map(|i| &self.slots[i.0 as usize])
    }

    /// The index of the instance `id`.
    pub(crate) fn index_of(&self, id: &InstanceId) -> Option<InstanceIndex> {
        self.slots
            .binary_search_by(|s| s.state.id().cmp(id))
            .ok()
            .and_then(|i| u32::try_from(i).ok())
            .map(InstanceIndex)
    }

    /// The live state of the instance `id`.
    pub(crate) fn get(&self, id: &InstanceId) -> Option<&SharedInstance> {
        self.slot(id).map(|s| &s.state)
    }

    /// The live state at `index`, with the index.
    pub(crate) fn shared(&self, id: &InstanceId) -> Option<(InstanceIndex, SharedInstance)> {
        let index = self.index_of(id)?;
        Some((index, Arc::clone(&self.slots[index.0 as usize].state)))
    }

    /// Every live state, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &SharedInstance> {
        self.slots.iter().map(|s| &s.state)
    }
}
