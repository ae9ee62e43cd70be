//! Builders for hand-made topologies and a driver that runs a plan against scripted outcomes.

use core::time::Duration;
use std::sync::Arc;

use echelon_domain::chat::Usage;
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::events::MemorySink;
use echelon_domain::name::{EchelonName, GroupName, ModelRef};
use echelon_domain::plan::{Attempt, Outcome, Plan, RequestFacts, Step, Verdict};
use echelon_domain::random::SplitMix64;
use echelon_domain::routing::{Route, RoutingTable, TableOptions};
use echelon_domain::spec::{
    FallbackStrategy, GroupRef, Limits, ModelSpec, PoolSpec, RotationStrategy, TaskGroupSpec,
    Topology,
};
use echelon_domain::time::{Clock, Instant, ManualClock};
use echelon_test_support as spec;

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A topology under construction.
#[derive(Default)]
pub struct Builder {
    pub topology: Topology,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A provider with `keys` keys.
    pub fn provider(mut self, name: &str, keys: usize) -> Self {
        self.topology
            .providers
            .insert(name.into(), spec::provider(name, keys));
        self
    }

    /// A model `provider/model` (upstream `model-upstream`) with a context window and limits.
    pub fn model(mut self, model: &str, context_window: Option<u32>, limits: Limits) -> Self {
        let upstream = format!("{}-upstream", ModelRef::parse(model).unwrap().model);
        let spec = ModelSpec {
            limits,
            ..spec::model(model, &upstream, context_window)
        };
        self.topology.models.insert(spec.model.clone(), spec);
        self
    }

    /// A pool of `(model, key, weight)` members; a model not added before has upstream `x`.
    pub fn pool(
        mut self,
        name: &str,
        rotation: RotationStrategy,
        members: &[(&str, u16, u32)],
    ) -> Self {
        let instances = members
            .iter()
            .map(|(model, key, weight)| {
                let known = self.topology.models.get(&ModelRef::parse(model).unwrap());
                let model = known
                    .cloned()
                    .unwrap_or_else(|| spec::model(model, "x", None));
                spec::instance(&model, *key, *weight)
            })
            .collect();
        self.topology
            .pools
            .insert(name.into(), spec::pool(name, rotation, instances));
        self
    }

    pub fn pool_mut(&mut self, name: &str) -> &mut PoolSpec {
        self.topology.pools.get_mut(name).unwrap()
    }

    /// A task group whose echelons list targets (`provider/model` or `pool:NAME`), by priority.
    pub fn group(mut self, name: &str, strategy: FallbackStrategy, echelons: &[&[&str]]) -> Self {
        let group = spec::group(name, strategy, spec::ladder(echelons));
        self.topology.task_groups.insert(name.into(), group);
        self
    }

    pub fn group_mut(&mut self, name: &str) -> &mut TaskGroupSpec {
        self.topology.task_groups.get_mut(name).unwrap()
    }

    pub fn fallback_to(mut self, group: &str, refs: &[&str]) -> Self {
        self.group_mut(group).fallback.fallback_groups = refs
            .iter()
            .map(|r| match r.split_once('.') {
                Some((g, e)) => GroupRef {
                    group: GroupName::new(g),
                    echelon: Some(EchelonName::new(e)),
                },
                None => GroupRef {
                    group: GroupName::new(*r),
                    echelon: None,
                },
            })
            .collect();
        self
    }

    pub fn build(self) -> World {
        World::new(self.topology)
    }
}

/// A routing table with its clock, generator and event log.
pub struct World {
    pub table: RoutingTable,
    pub clock: ManualClock,
    pub rng: SplitMix64,
    pub sink: Arc<MemorySink>,
}

impl World {
    pub fn new(topology: Topology) -> Self {
        let sink = Arc::new(MemorySink::new());
        let options = TableOptions {
            sink: sink.clone(),
            ..TableOptions::default()
        };
        let clock = ManualClock::new();
        clock.advance(secs(1_000));
        let table = RoutingTable::build(Arc::new(topology), None, options, clock.now());
        Self {
            table,
            clock,
            rng: SplitMix64::new(42),
            sink,
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn route(&self, name: &str) -> Route {
        self.table.resolve(name).unwrap()
    }

    pub fn plan(&self, name: &str) -> Plan {
        self.table.plan(
            &self.route(name),
            RequestFacts {
                estimated_tokens: 10,
                now: self.now(),
                deadline: None,
            },
        )
    }

    /// Runs a plan to its end; `outcome` answers each attempt. Waits advance the clock.
    pub fn run(&self, plan: &mut Plan, mut outcome: impl FnMut(&Attempt) -> Outcome) -> Verdict {
        for _ in 0..1_000 {
            match plan.next(self.now(), &self.rng) {
                Step::Attempt(a) => {
                    let o = outcome(&a);
                    self.clock.advance(Duration::from_millis(10));
                    plan.record(a, o, self.now(), &self.rng);
                }
                Step::Wait { until, .. } => self.clock.set(until),
                Step::Done(v) => return v,
            }
        }
        panic!("plan did not end");
    }

    /// Runs a request on `name` to its end and returns the verdict and attempt labels.
    pub fn request(
        &self,
        name: &str,
        outcome: impl FnMut(&Attempt) -> Outcome,
    ) -> (Verdict, Vec<String>) {
        let mut plan = self.plan(name);
        let v = self.run(&mut plan, outcome);
        (
            v,
            plan.attempts()
                .iter()
                .map(|a| a.label.to_string())
                .collect(),
        )
    }
}

pub fn ok() -> Outcome {
    Outcome::Success {
        latency: Duration::from_millis(10),
        ttft: None,
        usage: Some(Usage::new(5, 5)),
    }
}

pub fn fail(class: ErrorClass) -> Outcome {
    Outcome::Failure {
        error: UpstreamError::new(class, "scripted"),
        latency: Duration::from_millis(10),
    }
}

/// Whether an attempt goes to `to`: a provider (`a`) or a model (`a/large`).
fn goes_to(attempt: &Attempt, to: &str) -> bool {
    let model = &attempt.instance.model;
    model.provider.as_str() == to || model.to_string() == to
}

/// Attempts that go to `to` fail with `class`; every other attempt is served.
pub fn failing(to: &str, class: ErrorClass) -> impl Fn(&Attempt) -> Outcome + '_ {
    move |a| if goes_to(a, to) { fail(class) } else { ok() }
}

/// Only attempts that go to `to` are served; every other attempt fails with `class`.
pub fn served_only_by(to: &str, class: ErrorClass) -> impl Fn(&Attempt) -> Outcome + '_ {
    move |a| if goes_to(a, to) { ok() } else { fail(class) }
}

pub fn fail_with(error: UpstreamError) -> Outcome {
    Outcome::Failure {
        error,
        latency: Duration::from_millis(10),
    }
}

/// What a run of many requests came to.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests by verdict name (`served`, `unavailable`, ...).
    pub verdicts: std::collections::BTreeMap<&'static str, u32>,
    /// Attempts by instance label (`a/m#0`).
    pub attempts: std::collections::BTreeMap<String, u32>,
    /// The most attempts one request made.
    pub max_attempts: u32,
    /// Requests that made more than one attempt.
    pub retried: u32,
}

impl Tally {
    pub fn count(&self, verdict: &str) -> u32 {
        self.verdicts.get(verdict).copied().unwrap_or(0)
    }

    pub fn total_attempts(&self) -> u32 {
        self.attempts.values().sum()
    }

    pub fn attempts_of(&self, instance: &str) -> u32 {
        self.attempts.get(instance).copied().unwrap_or(0)
    }
}

/// One request of a concurrent run: its plan and what it waits for.
struct InFlight {
    plan: Plan,
    attempt: Option<Attempt>,
    /// When it may go on (a backoff, or the end of its attempt's latency).
    ready_at: Instant,
}

impl World {
    /// Runs `requests` requests on `name` with at most `concurrency` in flight, finishing the
    /// in-flight attempts in a random order (`order`, seeded), so that outcomes of concurrent
    /// requests interleave as they do in a real gateway; `outcome` answers each attempt. Every
    /// completion advances the clock by `step`.
    pub fn run_concurrent(
        &self,
        name: &str,
        requests: u32,
        concurrency: usize,
        step: Duration,
        order: &SplitMix64,
        mut outcome: impl FnMut(&Attempt) -> Outcome,
    ) -> Tally {
        use echelon_domain::random::Random;
        let mut tally = Tally::default();
        let mut started = 0;
        let mut active: Vec<InFlight> = Vec::new();
        let finish = |plan: Plan, verdict: &Verdict, tally: &mut Tally| {
            *tally.verdicts.entry(verdict.as_str()).or_default() += 1;
            let n = u32::try_from(plan.attempts().len()).unwrap();
            tally.max_attempts = tally.max_attempts.max(n);
            tally.retried += u32::from(n > 1);
            for a in plan.attempts() {
                *tally.attempts.entry(a.instance.to_string()).or_default() += 1;
            }
        };
        while started < requests || !active.is_empty() {
            while started < requests && active.len() < concurrency {
                started += 1;
                active.push(InFlight {
                    plan: self.plan(name),
                    attempt: None,
                    ready_at: self.now(),
                });
            }
            let now = self.now();
            let ready: Vec<usize> = (0..active.len())
                .filter(|&i| active[i].ready_at <= now)
                .collect();
            if ready.is_empty() {
                let next = active.iter().map(|r| r.ready_at).min().unwrap();
                self.clock.set(next);
                continue;
            }
            let i = ready[order.below(ready.len() as u64) as usize];
            let request = &mut active[i];
            if let Some(a) = request.attempt.take() {
                let o = outcome(&a);
                self.clock.advance(step);
                request.plan.record(a, o, self.now(), &self.rng);
            }
            match request.plan.next(self.now(), &self.rng) {
                Step::Attempt(a) => request.attempt = Some(a),
                Step::Wait { until, .. } => request.ready_at = until,
                Step::Done(v) => {
                    let done = active.swap_remove(i);
                    finish(done.plan, &v, &mut tally);
                }
            }
        }
        tally
    }
}
