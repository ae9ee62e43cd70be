//! Routing tables: name resolution, hot-reload carry-over, explain and snapshots.

use std::sync::Arc;

use echelon_domain::breaker::BreakerState;
use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::events::SkipReason;
use echelon_domain::instance::Unavailable;
use echelon_domain::name::{InstanceId, ModelRef, WrapperName};
use echelon_domain::plan::{RequestFacts, Step};
use echelon_domain::routing::{
    ResolveError, RouteDefaults, RouteTarget, RoutingTable, TableOptions,
};
use echelon_domain::spec::{
    FallbackStrategy, Limits, RotationStrategy, WrapperSpec, WrapperTarget,
};

use crate::support::{Builder, fail, fail_with, ok, secs};

fn builder() -> Builder {
    let mut b = Builder::new()
        .provider("a", 2)
        .model(
            "a/m",
            Some(32_000),
            Limits {
                rpm: Some(100),
                ..Limits::default()
            },
        )
        .pool(
            "p",
            RotationStrategy::WeightedRandom,
            &[("a/m", 0, 3), ("a/m", 1, 1)],
        )
        .group("g", FallbackStrategy::EchelonDown, &[&["pool:p"], &["a/m"]]);
    b.topology.wrappers.insert(
        "chat".into(),
        WrapperSpec {
            name: "chat".into(),
            target: WrapperTarget::TaskGroup("g".into()),
            description: None,
        },
    );
    b
}

#[test]
fn resolves_every_kind_of_name() {
    let w = builder().build();
    let r = w.table.resolve("chat").unwrap();
    assert_eq!(r.wrapper, Some(WrapperName::new("chat")));
    assert_eq!(r.label(), "chat › group:g");
    assert_eq!(
        w.table.resolve("group:g.echelon2").unwrap().target,
        RouteTarget::Group {
            group: "g".into(),
            echelon: Some("echelon2".into())
        }
    );
    assert_eq!(
        w.table.resolve("pool:p").unwrap().target,
        RouteTarget::Pool("p".into())
    );
    assert_eq!(
        w.table.resolve("a/m").unwrap().target,
        RouteTarget::Model(ModelRef::new("a", "m"))
    );
    assert_eq!(
        w.table.resolve("a/unknown").unwrap_err(),
        ResolveError::NotFound {
            name: "a/unknown".into()
        }
    );
    assert_eq!(
        w.table.resolve("group:g.echelon9").unwrap_err().to_string(),
        "task group `g` has no echelon `echelon9`"
    );
    assert!(w.table.resolve("group:nope").is_err());
    let names = w.table.names();
    for n in [
        "chat",
        "group:g",
        "group:g.echelon1",
        "group:g.echelon2",
        "pool:p",
        "a/m",
    ] {
        assert!(names.contains(&n.to_owned()), "{n} missing from {names:?}");
    }
}

#[test]
fn single_echelon_route_serves_only_that_echelon() {
    let w = builder().build();
    let (_, labels) = w.request("group:g.echelon2", |_| fail(ErrorClass::Server));
    assert!(
        labels.iter().all(|l| l.starts_with("g › echelon2 › ")),
        "{labels:?}"
    );
}

#[test]
fn reload_carries_live_state_over_for_unchanged_instances() {
    let w = builder().build();
    let id = InstanceId::new(ModelRef::new("a", "m"), 0);
    let state = w.table.instance(&id).unwrap();
    state.start_cooldown(w.now() + secs(30), None, w.table.sink());
    state.mark_key_dead(w.table.sink());
    let unchanged = RoutingTable::build(
        w.table.topology().clone(),
        Some(&w.table),
        TableOptions::default(),
        w.now(),
    );
    let carried = unchanged.instance(&id).unwrap();
    assert!(Arc::ptr_eq(carried, state));
    assert_eq!(carried.cooldown_until(w.now()), Some(w.now() + secs(30)));
    assert!(!carried.is_key_dead(), "a reload revives dead keys");

    // Tighter limits are a relevant change: fresh live state.
    let mut changed = (**w.table.topology()).clone();
    changed
        .models
        .get_mut(&ModelRef::new("a", "m"))
        .unwrap()
        .limits
        .rpm = Some(10);
    let fresh = RoutingTable::build(
        Arc::new(changed),
        Some(&unchanged),
        TableOptions::default(),
        w.now(),
    );
    assert!(!Arc::ptr_eq(fresh.instance(&id).unwrap(), state));
    assert_eq!(fresh.instance(&id).unwrap().cooldown_until(w.now()), None);
}

#[test]
fn routes_without_an_echelon_follow_the_topology_route_defaults_across_a_reload() {
    let w = builder().build();
    let defaults = RouteDefaults::default();
    assert_eq!(w.route("pool:p").max_attempts(), defaults.max_attempts);
    assert_eq!(w.route("a/m").max_attempts(), defaults.max_attempts);
    let group = w.route("group:g").max_attempts();

    let mut changed = (**w.table.topology()).clone();
    changed.route_defaults = RouteDefaults {
        max_attempts: 1,
        timeout: secs(7),
        ..defaults
    };
    let reloaded = RoutingTable::build(
        Arc::new(changed),
        Some(&w.table),
        TableOptions::default(),
        w.now(),
    );
    for name in ["pool:p", "a/m"] {
        let route = reloaded.resolve(name).unwrap();
        assert_eq!(route.max_attempts(), 1, "{name}");
        let mut plan = reloaded.plan(
            &route,
            RequestFacts {
                estimated_tokens: 1,
                now: w.now(),
                deadline: None,
            },
        );
        let Step::Attempt(attempt) = plan.next(w.now(), &w.rng) else {
            panic!("{name} serves");
        };
        assert_eq!(attempt.timeouts.total, secs(7), "{name}");
    }
    assert_eq!(
        reloaded.resolve("group:g").unwrap().max_attempts(),
        group,
        "task groups keep their own settings"
    );
}

#[test]
fn reload_keeps_an_open_echelon_breaker() {
    let mut b = builder();
    b.group_mut("g").breaker.failure_threshold = 1;
    let w = b.build();
    w.request("group:g", |_| fail(ErrorClass::Timeout));
    let before = w.table.group_snapshot(&"g".into(), w.now()).unwrap();
    assert_eq!(before.echelons[0].breaker, BreakerState::Open);
    let reloaded = RoutingTable::build(
        w.table.topology().clone(),
        Some(&w.table),
        TableOptions::default(),
        w.now(),
    );
    let after = reloaded.group_snapshot(&"g".into(), w.now()).unwrap();
    assert_eq!(after.echelons[0].breaker, BreakerState::Open);
    assert_eq!(after.stats, before.stats);
}

#[test]
fn one_live_state_per_key_across_pools_and_direct_routes() {
    let w = builder().build();
    let e = UpstreamError::new(ErrorClass::RateLimited, "x").with_retry_after(secs(60));
    let mut first = true;
    w.request("pool:p", |_| {
        if std::mem::take(&mut first) {
            fail_with(e.clone())
        } else {
            ok()
        }
    });
    let cooling: Vec<_> = w
        .table
        .instances()
        .filter(|i| i.cooldown_until(w.now()).is_some())
        .collect();
    assert_eq!(cooling.len(), 1);
    let explanation = w.table.explain(&w.route("a/m"), w.now());
    let skipped: Vec<_> = explanation.stages[0].targets[0]
        .candidates
        .iter()
        .filter(|c| {
            matches!(
                c.skip,
                Some(SkipReason::Instance(Unavailable::CoolingDown { .. }))
            )
        })
        .collect();
    assert_eq!(skipped.len(), 1, "the direct route sees the pool's 429");
}

#[test]
fn explain_lists_every_candidate_and_the_immediate_verdict() {
    let w = builder().build();
    let route = w.route("chat");
    let e = w.table.explain(&route, w.now());
    assert_eq!(e.route, "chat › group:g");
    assert_eq!(e.stages.len(), 2);
    assert_eq!(e.stages[0].label, "g › echelon1");
    assert_eq!(e.stages[0].targets[0].candidates.len(), 2);
    assert_eq!(e.stages[0].targets[0].candidates[0].weight, 3);
    assert!(e.verdict.is_none());
    for i in w.table.instances() {
        i.start_cooldown(w.now() + secs(7), None, w.table.sink());
    }
    let e = w.table.explain(&route, w.now());
    let v = e.verdict.unwrap();
    assert_eq!((v.status, v.retry_after), (429, Some(secs(7))));
}

#[test]
fn snapshots_count_attempts_per_instance_pool_echelon_and_group() {
    let w = builder().build();
    let mut n = 0;
    w.request("group:g", |_| {
        n += 1;
        if n == 1 {
            fail(ErrorClass::Server)
        } else {
            ok()
        }
    });
    let snap = w.table.snapshot(w.now());
    let pool = &snap.pools[0];
    assert_eq!(
        (
            pool.stats.attempts,
            pool.stats.failures,
            pool.stats.successes
        ),
        (2, 1, 1)
    );
    assert_eq!(pool.members.len(), 2);
    let g = &snap.groups[0];
    assert_eq!((g.stats.attempts, g.stats.successes), (2, 1));
    assert_eq!(g.echelons[0].stats.attempts, 2);
    let per_instance: u64 = pool.members.iter().map(|m| m.instance.stats.attempts).sum();
    assert_eq!(per_instance, 2);
    assert_eq!(
        pool.members
            .iter()
            .map(|m| m.instance.stats.input_tokens)
            .sum::<u64>(),
        5
    );
}

#[test]
fn probes_revive_dead_keys() {
    let w = builder().build();
    let id = InstanceId::new(ModelRef::new("a", "m"), 1);
    w.table.instance(&id).unwrap().mark_key_dead(w.table.sink());
    assert!(w.table.probe_targets().iter().any(|(i, _)| i.id() == &id));
    assert!(w.table.record_probe(&id, w.now(), true));
    assert!(!w.table.instance(&id).unwrap().is_key_dead());
}
