//! Attempt plans: every fallback path, verdict and decision-table row, with a manual clock.

use core::time::Duration;

use echelon_domain::error::{ErrorClass, UpstreamError};
use echelon_domain::events::{Event, SkipReason};
use echelon_domain::instance::Unavailable;
use echelon_domain::plan::{AttemptResult, Outcome, RequestFacts, Step, Verdict, WaitReason};
use echelon_domain::spec::{FallbackStrategy, Limits, PoolFallbackStrategy, RotationStrategy};

use crate::support::{Builder, fail, fail_with, failing, ok, secs, served_only_by};

fn two_tiers(strategy: FallbackStrategy) -> Builder {
    Builder::new()
        .provider("a", 2)
        .provider("b", 1)
        .model("a/big", Some(128_000), Limits::default())
        .model("b/small", Some(8_000), Limits::default())
        .group("g", strategy, &[&["a/big"], &["b/small"]])
}

#[test]
fn echelon_down_tries_every_key_then_the_next_echelon() {
    let w = two_tiers(FallbackStrategy::EchelonDown).build();
    let (v, labels) = w.request("group:g", failing("a", ErrorClass::Server));
    assert_eq!(v, Verdict::Served);
    assert_eq!(labels.len(), 3);
    assert!(labels[0].starts_with("g › echelon1 › a/big#"));
    assert!(labels[1].starts_with("g › echelon1 › a/big#"));
    assert_ne!(labels[0], labels[1]);
    assert_eq!(labels[2], "g › echelon2 › b/small#0");
    assert!(w.sink.take().iter().any(|e| matches!(
        e,
        Event::Fallback { to, .. } if to == "g › echelon2"
    )));
}

#[test]
fn max_attempts_is_a_hard_cap() {
    let mut b = two_tiers(FallbackStrategy::EchelonDown);
    b.group_mut("g").fallback.max_attempts = 2;
    b.group_mut("g").echelons[0].max_retries = 5;
    let w = b.build();
    let (v, labels) = w.request("group:g", |_| fail(ErrorClass::Server));
    assert_eq!(labels.len(), 2);
    assert!(
        matches!(v, Verdict::Exhausted { last_error: Some(e) } if e.class == ErrorClass::Server)
    );
}

#[test]
fn everything_rate_limited_answers_429_with_earliest_retry_after() {
    let w = two_tiers(FallbackStrategy::EchelonDown).build();
    let mut waits = [40u64, 20, 30].into_iter();
    let (v, labels) = w.request("group:g", |_| {
        fail_with(
            UpstreamError::new(ErrorClass::RateLimited, "slow down")
                .with_status(429)
                .with_retry_after(secs(waits.next().unwrap())),
        )
    });
    assert_eq!(labels.len(), 3);
    // The three 429s end 40, 20 and 30 s after their attempts (10 ms apart).
    match v {
        Verdict::RateLimited { retry_after } => {
            assert!(
                retry_after > secs(19) && retry_after <= secs(20),
                "{retry_after:?}"
            );
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // A second request is answered at once, without any attempt.
    let (v, labels) = w.request("group:g", |_| ok());
    assert!(labels.is_empty());
    assert!(matches!(v, Verdict::RateLimited { .. }), "{v:?}");
}

#[test]
fn everything_open_or_dead_answers_503_at_once() {
    let w = two_tiers(FallbackStrategy::EchelonDown).build();
    let (v, _) = w.request("group:g", |_| {
        fail_with(UpstreamError::new(ErrorClass::Auth, "bad key").with_status(401))
    });
    assert!(matches!(v, Verdict::Exhausted { .. }));
    let mut plan = w.plan("group:g");
    match plan.next(w.now(), &w.rng) {
        Step::Done(Verdict::Unavailable { retry_after: None }) => {}
        other => panic!("expected 503, got {other:?}"),
    }
    assert!(
        plan.trace()
            .iter()
            .all(|s| s.reason == SkipReason::Instance(Unavailable::KeyDead))
    );
    assert_eq!(plan.trace().len(), 3);
}

#[test]
fn invalid_request_and_content_filter_go_back_as_they_are() {
    for class in [ErrorClass::InvalidRequest, ErrorClass::ContentFilter] {
        let w = two_tiers(FallbackStrategy::EchelonDown).build();
        let (v, labels) = w.request("group:g", |_| {
            fail_with(UpstreamError::new(class, "no").with_status(422))
        });
        assert_eq!(labels.len(), 1);
        assert!(
            matches!(&v, Verdict::Rejected(e) if e.status == Some(422)),
            "the upstream's status goes back with it: {v:?}"
        );
        assert!(matches!(v, Verdict::Rejected(e) if e.class == class));
    }
}

#[test]
fn content_filter_fallback_leaves_the_refusing_echelon_at_once() {
    let mut b = two_tiers(FallbackStrategy::EchelonDown);
    b.group_mut("g").fallback.content_filter_fallback = true;
    let w = b.build();
    // a/big has two keys; the refusal is the model's, so the second key is not tried.
    let (v, labels) = w.request("group:g", failing("a", ErrorClass::ContentFilter));
    assert_eq!(v, Verdict::Served);
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert!(labels[0].starts_with("g › echelon1 › a/big#"));
    assert_eq!(labels[1], "g › echelon2 › b/small#0");
    // Refused everywhere: the last refusal goes back as it is, not as a 502.
    let (v, labels) = w.request("group:g", |_| {
        fail_with(UpstreamError::new(ErrorClass::ContentFilter, "refused").with_status(400))
    });
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert!(
        matches!(&v, Verdict::Rejected(e) if e.class == ErrorClass::ContentFilter),
        "{v:?}"
    );
    // Other rejections still end the request where they happen.
    let (v, labels) = w.request("group:g", |_| {
        fail_with(UpstreamError::new(ErrorClass::InvalidRequest, "bad").with_status(400))
    });
    assert_eq!(labels.len(), 1);
    assert!(matches!(v, Verdict::Rejected(e) if e.class == ErrorClass::InvalidRequest));
}

#[test]
fn client_gone_stops_the_plan() {
    let w = two_tiers(FallbackStrategy::EchelonDown).build();
    let (v, labels) = w.request("group:g", |_| fail(ErrorClass::ClientGone));
    assert_eq!((v, labels.len()), (Verdict::ClientGone, 1));
}

#[test]
fn context_length_moves_only_to_larger_windows() {
    let w = Builder::new()
        .provider("a", 1)
        .model("a/small", Some(8_000), Limits::default())
        .model("a/same", Some(8_000), Limits::default())
        .model("a/unknown", None, Limits::default())
        .model("a/large", Some(200_000), Limits::default())
        .group(
            "g",
            FallbackStrategy::EchelonDown,
            &[&["a/small"], &["a/same", "a/unknown"], &["a/large"]],
        )
        .build();
    let (v, labels) = w.request(
        "group:g",
        served_only_by("a/large", ErrorClass::ContextLength),
    );
    assert_eq!(v, Verdict::Served);
    assert_eq!(
        labels,
        ["g › echelon1 › a/small#0", "g › echelon3 › a/large#0"]
    );
    // With no larger target the upstream's own error goes back.
    let (v, _) = w.request("group:g", |_| fail(ErrorClass::ContextLength));
    assert!(matches!(v, Verdict::Rejected(e) if e.class == ErrorClass::ContextLength));
}

#[test]
fn auth_marks_the_key_dead_and_moves_on() {
    let w = two_tiers(FallbackStrategy::EchelonDown).build();
    let mut first = true;
    let (v, labels) = w.request("group:g", |_| {
        if std::mem::take(&mut first) {
            fail(ErrorClass::Auth)
        } else {
            ok()
        }
    });
    assert_eq!((v, labels.len()), (Verdict::Served, 2));
    let dead = w.table.instances().filter(|i| i.is_key_dead()).count();
    assert_eq!(dead, 1);
    assert!(
        w.sink
            .take()
            .iter()
            .any(|e| matches!(e, Event::KeyDead { .. }))
    );
}

#[test]
fn provider_failover_skips_the_failed_provider_everywhere() {
    let w = Builder::new()
        .provider("a", 2)
        .provider("b", 1)
        .model("a/one", None, Limits::default())
        .model("a/two", None, Limits::default())
        .model("b/one", None, Limits::default())
        .group(
            "g",
            FallbackStrategy::ProviderFailover,
            &[&["a/one"], &["a/two"], &["b/one"]],
        )
        .build();
    let mut plan = w.plan("group:g");
    let v = w.run(&mut plan, failing("a", ErrorClass::Timeout));
    assert_eq!(v, Verdict::Served);
    let labels: Vec<_> = plan
        .attempts()
        .iter()
        .map(|a| a.label.to_string())
        .collect();
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert!(labels[1].ends_with("b/one#0"));
    assert!(plan.trace().iter().any(
        |s| matches!(&s.reason, SkipReason::ProviderFailed { provider } if provider.as_str() == "a")
    ));
    // A 429 is about a key, not the provider: echelon_down-style rotation continues.
    w.clock.advance(secs(600));
    let mut plan = w.plan("group:g");
    let v = w.run(&mut plan, failing("a", ErrorClass::RateLimited));
    assert_eq!(v, Verdict::Served);
}

#[test]
fn model_rotate_tries_each_model_once_without_retries() {
    let mut b = Builder::new()
        .provider("a", 3)
        .model("a/one", None, Limits::default())
        .model("a/two", None, Limits::default())
        .group(
            "g",
            FallbackStrategy::ModelRotate,
            &[&["a/one", "a/two"], &["a/one"]],
        );
    b.group_mut("g").echelons[0].max_retries = 3;
    let w = b.build();
    let (v, labels) = w.request("group:g", |_| fail(ErrorClass::Server));
    assert!(matches!(v, Verdict::Exhausted { .. }));
    assert_eq!(labels.len(), 3, "{labels:?}");
    assert!(labels[0].contains("a/one#") && labels[1].contains("a/two#"));
    assert!(labels[2].starts_with("g › echelon2 › a/one#"));
}

#[test]
fn group_fallback_follows_groups_and_single_echelons_and_drops_cycles() {
    let w = Builder::new()
        .provider("a", 1)
        .model("a/x", None, Limits::default())
        .model("a/y", None, Limits::default())
        .model("a/z", None, Limits::default())
        .group("first", FallbackStrategy::GroupFallback, &[&["a/x"]])
        .group(
            "second",
            FallbackStrategy::GroupFallback,
            &[&["a/y"], &["a/z"]],
        )
        .fallback_to("first", &["second.echelon2", "first", "second"])
        .fallback_to("second", &["first"])
        .build();
    let mut plan = w.plan("group:first");
    let v = w.run(&mut plan, served_only_by("a/y", ErrorClass::Server));
    assert_eq!(v, Verdict::Served);
    let labels: Vec<_> = plan
        .attempts()
        .iter()
        .map(|a| a.label.to_string())
        .collect();
    assert_eq!(
        labels,
        [
            "first › echelon1 › a/x#0",
            "second › echelon2 › a/z#0",
            "second › echelon1 › a/y#0"
        ]
    );
    let cycles: Vec<_> = plan
        .trace()
        .iter()
        .filter(|s| s.reason == SkipReason::Cycle)
        .map(|s| s.stage.as_str())
        .collect();
    assert_eq!(cycles, ["group:first", "group:first"]);
}

#[test]
fn pool_fallback_continues_with_fallback_pools() {
    let mut b = Builder::new()
        .provider("a", 2)
        .provider("b", 1)
        .model("a/m", None, Limits::default())
        .model("b/m", None, Limits::default())
        .pool(
            "main",
            RotationStrategy::RoundRobin,
            &[("a/m", 0, 1), ("a/m", 1, 1)],
        )
        .pool("spare", RotationStrategy::RoundRobin, &[("b/m", 0, 1)]);
    b.pool_mut("main").fallback.strategy = PoolFallbackStrategy::PoolFallback;
    b.pool_mut("main").fallback.max_instance_attempts = 1;
    b.pool_mut("main").fallback.fallback_pools = vec!["spare".into(), "main".into()];
    let w = b.build();
    let (v, labels) = w.request("pool:main", served_only_by("b", ErrorClass::Connect));
    assert_eq!(v, Verdict::Served);
    assert_eq!(
        labels.len(),
        2,
        "max_instance_attempts = 1 caps the main pool: {labels:?}"
    );
    assert!(labels[0].starts_with("pool:main › a/m#"));
    assert_eq!(labels[1], "pool:main › b/m#0");
}

#[test]
fn an_echelon_rotates_over_its_own_targets_and_never_leads_with_a_fallback_pool() {
    let mut b = Builder::new()
        .provider("a", 1)
        .provider("b", 1)
        .provider("c", 1)
        .model("a/m", None, Limits::default())
        .model("b/m", None, Limits::default())
        .model("c/m", None, Limits::default())
        .pool("main", RotationStrategy::RoundRobin, &[("a/m", 0, 1)])
        .pool("other", RotationStrategy::RoundRobin, &[("b/m", 0, 1)])
        .pool("spare", RotationStrategy::RoundRobin, &[("c/m", 0, 1)])
        .group(
            "g",
            FallbackStrategy::EchelonDown,
            &[&["pool:main", "pool:other"]],
        );
    b.pool_mut("main").fallback.strategy = PoolFallbackStrategy::PoolFallback;
    b.pool_mut("main").fallback.fallback_pools = vec!["spare".into()];
    let w = b.build();
    let mut firsts = Vec::new();
    for _ in 0..6 {
        let (v, labels) = w.request("group:g", |_| ok());
        assert_eq!(v, Verdict::Served);
        firsts.push(labels[0].clone());
    }
    assert!(
        firsts.iter().all(|l| !l.contains("c/m")),
        "the fallback pool took first attempts: {firsts:?}"
    );
    assert!(firsts.iter().any(|l| l.contains("a/m")) && firsts.iter().any(|l| l.contains("b/m")));
    // When the primaries fail, the fallback pool still serves.
    let (v, labels) = w.request("group:g", served_only_by("c", ErrorClass::Connect));
    assert_eq!(v, Verdict::Served, "{labels:?}");
    assert!(labels.last().unwrap().contains("c/m"));
}

#[test]
fn server_errors_retry_the_same_instance_with_full_jitter_backoff() {
    let mut b = Builder::new()
        .provider("a", 1)
        .model("a/m", None, Limits::default())
        .group("g", FallbackStrategy::EchelonDown, &[&["a/m"]]);
    b.group_mut("g").echelons[0].max_retries = 2;
    b.group_mut("g").fallback.retry_delay = Duration::from_millis(400);
    let w = b.build();
    let mut plan = w.plan("group:g");
    let mut waits = Vec::new();
    let mut attempts = 0;
    let v = loop {
        match plan.next(w.now(), &w.rng) {
            Step::Attempt(a) => {
                attempts += 1;
                plan.record(a, fail(ErrorClass::Overloaded), w.now(), &w.rng);
            }
            Step::Wait { until, reason, .. } => {
                assert_eq!(reason, WaitReason::Backoff);
                waits.push(until - w.now());
                w.clock.set(until);
            }
            Step::Done(v) => break v,
        }
    };
    assert_eq!(attempts, 3);
    assert_eq!(waits.len(), 2);
    assert!(waits[0] <= Duration::from_millis(400));
    assert!(waits[1] <= Duration::from_millis(800));
    assert!(matches!(v, Verdict::Exhausted { .. }));
}

#[test]
fn short_retry_after_is_waited_out_when_nothing_else_in_the_echelon_can_serve() {
    let w = two_tiers(FallbackStrategy::EchelonDown).build();
    let mut b = two_tiers(FallbackStrategy::EchelonDown);
    b.topology
        .providers
        .get_mut("a")
        .unwrap()
        .api_keys
        .truncate(1);
    let w1 = b.build();
    drop(w);
    let mut plan = w1.plan("group:g");
    let mut steps = Vec::new();
    let v = loop {
        match plan.next(w1.now(), &w1.rng) {
            Step::Attempt(a) => {
                steps.push(a.label.to_string());
                let o = if steps.len() == 1 {
                    fail_with(
                        UpstreamError::new(ErrorClass::RateLimited, "wait")
                            .with_retry_after(secs(2)),
                    )
                } else {
                    ok()
                };
                plan.record(a, o, w1.now(), &w1.rng);
            }
            Step::Wait { until, reason, .. } => {
                assert_eq!(reason, WaitReason::RetryAfter);
                assert_eq!(until - w1.now(), secs(2));
                steps.push("wait".into());
                w1.clock.set(until);
            }
            Step::Done(v) => break v,
        }
    };
    assert_eq!(v, Verdict::Served);
    assert_eq!(
        steps,
        ["g › echelon1 › a/big#0", "wait", "g › echelon1 › a/big#0"]
    );

    // A long Retry-After is not worth waiting: the request drops a tier.
    w1.clock.advance(secs(10));
    let mut first = true;
    let (v, labels) = w1.request("group:g", |_| {
        if std::mem::take(&mut first) {
            fail_with(
                UpstreamError::new(ErrorClass::RateLimited, "wait").with_retry_after(secs(60)),
            )
        } else {
            ok()
        }
    });
    assert_eq!(v, Verdict::Served);
    assert_eq!(labels[1], "g › echelon2 › b/small#0");
}

#[test]
fn saturated_echelon_spills_over_to_the_next() {
    let mut b = two_tiers(FallbackStrategy::EchelonDown);
    b.group_mut("g").echelons[0].concurrency_limit = Some(1);
    let w = b.build();
    let mut first = w.plan("group:g");
    let Step::Attempt(held) = first.next(w.now(), &w.rng) else {
        panic!("expected an attempt")
    };
    assert_eq!(held.echelon.as_ref().unwrap().as_str(), "echelon1");
    let mut second = w.plan("group:g");
    let Step::Attempt(a) = second.next(w.now(), &w.rng) else {
        panic!("expected an attempt")
    };
    assert_eq!(a.echelon.as_ref().unwrap().as_str(), "echelon2");
    assert!(matches!(
        second.trace()[0].reason,
        SkipReason::Echelon(Unavailable::Saturated(_))
    ));
    drop(held);
    let mut third = w.plan("group:g");
    let Step::Attempt(a) = third.next(w.now(), &w.rng) else {
        panic!("expected an attempt")
    };
    assert_eq!(a.echelon.as_ref().unwrap().as_str(), "echelon1");
}

#[test]
fn pool_limits_cap_concurrency_and_rate_and_spill_to_fallback_pools() {
    let mut b = Builder::new()
        .provider("a", 3)
        .provider("b", 1)
        .model("a/m", None, Limits::default())
        .model("b/m", None, Limits::default())
        .pool(
            "main",
            RotationStrategy::RoundRobin,
            &[("a/m", 0, 1), ("a/m", 1, 1), ("a/m", 2, 1)],
        )
        .pool("spare", RotationStrategy::RoundRobin, &[("b/m", 0, 1)]);
    b.pool_mut("main").limits = Limits {
        rpm: Some(3),
        tpm: None,
        max_concurrency: Some(1),
    };
    b.pool_mut("main").fallback.strategy = PoolFallbackStrategy::PoolFallback;
    b.pool_mut("main").fallback.fallback_pools = vec!["spare".into()];
    let w = b.build();

    // One attempt in flight fills the pool, although two of its keys are idle.
    let mut first = w.plan("pool:main");
    let Step::Attempt(held) = first.next(w.now(), &w.rng) else {
        panic!("expected an attempt")
    };
    assert_eq!(held.instance.model.provider.as_str(), "a");
    let mut second = w.plan("pool:main");
    let Step::Attempt(spilled) = second.next(w.now(), &w.rng) else {
        panic!("expected an attempt")
    };
    assert_eq!(spilled.instance.model.provider.as_str(), "b");
    assert!(matches!(
        second.trace()[0].reason,
        SkipReason::Pool(Unavailable::Saturated(_))
    ));
    // The slot comes back when the attempt ends, on every path.
    first.record(held, ok(), w.now(), &w.rng);
    drop(spilled);
    let (v, labels) = w.request("pool:main", |_| ok());
    assert_eq!(v, Verdict::Served);
    assert!(labels[0].contains("a/m"), "{labels:?}");

    // rpm = 3: the first attempt, the second (which was given the slot back) … the rest spill.
    let (_, labels) = w.request("pool:main", |_| ok());
    assert!(labels[0].contains("a/m"), "{labels:?}");
    let (_, labels) = w.request("pool:main", |_| ok());
    assert!(
        labels[0].contains("b/m"),
        "the pool's rpm is spent: {labels:?}"
    );
    w.clock.advance(secs(60));
    let (_, labels) = w.request("pool:main", |_| ok());
    assert!(labels[0].contains("a/m"), "rpm refills: {labels:?}");
}

#[test]
fn deadline_ends_the_plan_with_504_and_clips_timeouts() {
    let w = two_tiers(FallbackStrategy::EchelonDown).build();
    let route = w.route("group:g");
    let mut plan = w.table.plan(
        &route,
        RequestFacts {
            estimated_tokens: 1,
            now: w.now(),
            deadline: Some(w.now() + secs(5)),
        },
    );
    let Step::Attempt(a) = plan.next(w.now(), &w.rng) else {
        panic!("expected an attempt")
    };
    assert_eq!(a.timeouts.total, secs(5));
    w.clock.advance(secs(5));
    plan.record(a, fail(ErrorClass::Timeout), w.now(), &w.rng);
    assert!(matches!(
        plan.next(w.now(), &w.rng),
        Step::Done(Verdict::DeadlineExceeded)
    ));
}

#[test]
fn cancelled_and_dropped_attempts_release_every_permit() {
    let mut b = two_tiers(FallbackStrategy::EchelonDown);
    b.group_mut("g").echelons[0].concurrency_limit = Some(1);
    let w = b.build();
    let mut plan = w.plan("group:g");
    let Step::Attempt(a) = plan.next(w.now(), &w.rng) else {
        panic!()
    };
    let id = a.instance.clone();
    assert_eq!(w.table.instance(&id).unwrap().in_flight(), 1);
    plan.record(a, Outcome::Cancelled, w.now(), &w.rng);
    assert_eq!(w.table.instance(&id).unwrap().in_flight(), 0);
    assert_eq!(plan.attempts()[0].result, AttemptResult::Cancelled);
    let Step::Attempt(a) = plan.next(w.now(), &w.rng) else {
        panic!()
    };
    let id = a.instance.clone();
    drop(a);
    assert_eq!(w.table.instance(&id).unwrap().in_flight(), 0);
    let snap = w.table.group_snapshot(&"g".into(), w.now()).unwrap();
    assert_eq!(snap.echelons[0].in_flight, 0);
    // Both the recorded and the dropped attempt count as cancellations, everywhere.
    assert_eq!(snap.stats.cancelled, 2);
    assert_eq!(snap.echelons[0].stats.cancelled, 2);
    let instance = w.table.instance_snapshot(&id, w.now()).unwrap();
    assert_eq!(instance.stats.cancelled, instance.stats.attempts);
    assert_eq!(
        instance.stats.successes + instance.stats.failures + instance.stats.cancelled,
        instance.stats.attempts
    );
}

#[test]
fn echelon_breaker_opens_and_the_group_skips_it() {
    let mut b = two_tiers(FallbackStrategy::EchelonDown);
    b.group_mut("g").breaker.failure_threshold = 2;
    b.group_mut("g").fallback.max_attempts = 1;
    let w = b.build();
    for _ in 0..2 {
        w.request("group:g", |_| fail(ErrorClass::Server));
    }
    let (v, labels) = w.request("group:g", |_| ok());
    assert_eq!(v, Verdict::Served);
    assert_eq!(labels, ["g › echelon2 › b/small#0"]);
    assert!(w.sink.take().iter().any(|e| matches!(
        e,
        Event::Breaker {
            to: echelon_domain::breaker::BreakerState::Open,
            ..
        }
    )));
}

#[test]
fn unhealthy_instances_are_still_tried_when_nothing_else_is_left() {
    let mut b = Builder::new()
        .provider("a", 2)
        .model("a/m", None, Limits::default())
        .pool(
            "p",
            RotationStrategy::RoundRobin,
            &[("a/m", 0, 1), ("a/m", 1, 1)],
        );
    b.pool_mut("p").health.failure_threshold = 1;
    b.pool_mut("p").breaker.failure_threshold = 100;
    let w = b.build();
    // Both keys served recently, so one failure each makes them look unhealthy, not dead.
    for _ in 0..4 {
        w.request("pool:p", |_| ok());
    }
    w.request("pool:p", |_| fail(ErrorClass::Server));
    let mut plan = w.plan("pool:p");
    let Step::Attempt(a) = plan.next(w.now(), &w.rng) else {
        panic!("panic mode should still try")
    };
    assert!(a.panic);
}
