//! Saturation and rate limits spill to the next echelon instead of failing, and echelon request
//! defaults reach the upstream.

use std::sync::Arc;

use echelon_domain::name::ModelRef;
use echelon_domain::plan::Verdict;

use crate::support::{Builder, Harness, Reply, assert_route, assert_verdict, ms, request, secs};

fn builder() -> Builder {
    Builder::two_echelons(1)
}

async fn until_called(h: &Harness, target: &str, times: usize) {
    for _ in 0..1_000 {
        if h.backend.calls(target) >= times {
            return;
        }
        tokio::time::sleep(ms(1)).await;
    }
    panic!("{target} was not called {times} times");
}

#[tokio::test(start_paused = true)]
async fn a_saturated_echelon_or_instance_spills_to_the_next_echelon_at_once() {
    let mut by_echelon = builder();
    by_echelon.group_mut("g").echelons[0].concurrency_limit = Some(1);
    let mut by_instance = builder();
    by_instance
        .topology
        .models
        .get_mut(&ModelRef::new("a", "m"))
        .unwrap()
        .limits
        .max_concurrency = Some(1);
    for b in [by_echelon, by_instance] {
        let h = Harness::new(b.build());
        h.backend
            .on("a/m", [Reply::After(secs(5), Box::new(Reply::Answer))]);
        let gateway = Arc::clone(&h.gateway);
        let first = tokio::spawn(async move { gateway.complete("group:g", request()).await });
        until_called(&h, "a/m", 1).await;

        let started = tokio::time::Instant::now();
        let served = h.answered().await;
        assert_eq!(started.elapsed(), ms(0), "no waiting for a busy echelon");
        assert_route(&served, "echelon2");
        assert!(served.attempts.len() == 1, "a skip is not an attempt");

        let served = first.await.unwrap().unwrap();
        assert_route(&served, "echelon1");
        assert_eq!(h.backend.calls("a/m"), 1);
        h.assert_idle();
    }
}

#[tokio::test(start_paused = true)]
async fn everything_saturated_answers_429_at_once_without_an_upstream_call() {
    let h = Harness::new(
        builder()
            .echelons(|e| e.concurrency_limit = Some(1))
            .build(),
    );
    h.backend
        .on("a/m", [Reply::After(secs(5), Box::new(Reply::Answer))]);
    h.backend
        .on("b/m", [Reply::After(secs(5), Box::new(Reply::Answer))]);
    let mut busy = Vec::new();
    for _ in 0..2 {
        let gateway = Arc::clone(&h.gateway);
        busy.push(tokio::spawn(async move {
            gateway.complete("group:g", request()).await
        }));
    }
    until_called(&h, "b/m", 1).await;
    until_called(&h, "a/m", 1).await;
    let f = h.failure().await;
    assert_eq!(
        f.verdict,
        Verdict::RateLimited {
            retry_after: secs(1)
        }
    );
    assert!(f.attempts.is_empty());
    assert_eq!(h.backend.total_calls(), 2);
    for task in busy {
        task.await.unwrap().unwrap();
    }
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn an_echelon_rpm_limit_spills_and_refills() {
    let mut b = builder();
    b.group_mut("g").echelons[0].rpm_limit = Some(2);
    let h = Harness::new(b.build());
    let mut routes = Vec::new();
    for _ in 0..3 {
        let served = h.answered().await;
        routes.push(served.route.to_string());
    }
    assert_eq!(
        routes,
        [
            "g › echelon1 › a/m#0",
            "g › echelon1 › a/m#0",
            "g › echelon2 › b/m#0"
        ]
    );
    // Two a minute: one request's worth comes back every thirty seconds.
    tokio::time::advance(secs(31)).await;
    let served = h.answered().await;
    assert_eq!(served.route.to_string(), "g › echelon1 › a/m#0");
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn echelon_defaults_fill_only_what_the_client_left_unset() {
    let mut b = builder();
    let defaults = &mut b.group_mut("g").echelons[0].defaults;
    defaults.max_tokens = Some(256);
    defaults.temperature = Some(0.25);
    let h = Harness::new(b.build());
    h.answered().await;
    let mut own = request();
    own.params.max_tokens = Some(10);
    h.gateway.stream("group:g", own).await.unwrap();
    let seen: Vec<_> = h
        .backend
        .requests()
        .iter()
        .map(|r| (r.params.max_tokens, r.params.temperature))
        .collect();
    assert_eq!(seen, [(Some(256), Some(0.25)), (Some(10), Some(0.25))]);
}

#[tokio::test(start_paused = true)]
async fn everything_open_or_dead_answers_503_at_once() {
    let mut b = Builder::two_models(1)
        .pool("pa", &[("a/m", 0)])
        .pool("pb", &[("b/m", 0)])
        .group("g", &[&["pool:pa"], &["pool:pb"]]);
    for pool in ["pa", "pb"] {
        b.pool_mut(pool).breaker = echelon_domain::spec::BreakerPolicy {
            failure_threshold: 1,
            recovery_time: secs(20),
            max_recovery_time: secs(20),
            ..echelon_domain::spec::BreakerPolicy::default()
        };
    }
    let h = Harness::new(b.build());
    h.backend.on("a/m", [crate::support::server_error()]);
    h.backend.on("b/m", [crate::support::server_error()]);
    let f = h.failure().await;
    assert_verdict!(f, Verdict::Exhausted { .. });
    assert_eq!(h.backend.total_calls(), 2);

    tokio::time::advance(secs(5)).await;
    let f = h.failure().await;
    let Verdict::Unavailable {
        retry_after: Some(after),
    } = f.verdict
    else {
        panic!("{:?}", f.verdict);
    };
    // Open for 20 s plus at most a fifth of jitter, 5 s of which have passed.
    assert!(after >= secs(15) && after <= secs(19), "{after:?}");
    assert_verdict!(f, Verdict::Unavailable { .. });
    assert!(f.attempts.is_empty());
    assert_eq!(
        h.backend.total_calls(),
        2,
        "no upstream call while everything is open"
    );
    let explained = h.gateway.explain("group:g").unwrap();
    assert_eq!(explained.verdict.map(|v| v.status), Some(503));

    // Dead keys everywhere: 503 without a time to come back.
    let h = Harness::new(builder().build());
    let auth = || {
        Reply::Fail(crate::support::fail(
            echelon_domain::error::ErrorClass::Auth,
            Some(401),
        ))
    };
    h.backend.on("a/m", [auth()]);
    h.backend.on("b/m", [auth()]);
    h.failure().await;
    let f = h.failure().await;
    assert_eq!(f.verdict, Verdict::Unavailable { retry_after: None });
    assert_eq!(h.backend.total_calls(), 2);
    h.assert_idle();
}
