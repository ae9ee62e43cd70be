//! Non-streaming requests under faults: failover, retries, timeouts, deadline, client errors,
//! context length, rate limits, dead keys and the model that answered.

use echelon_domain::error::ErrorClass;
use echelon_domain::events::{Event, SkipReason};
use echelon_domain::plan::{AttemptResult, Verdict};
use echelon_domain::spec::Topology;

use crate::support::{
    Builder, Harness, Reply, assert_route, assert_verdict, failed, ms, rate_limited, request,
    results, secs, server_error,
};

/// Group `g`: `echelon1` = `a/m`, `echelon2` = `b/m`, one key each.
fn two_echelons(keys_a: usize) -> Builder {
    Builder::new()
        .provider("a", keys_a)
        .provider("b", 1)
        .model("a/m", Some(8_000))
        .model("b/m", Some(8_000))
        .group("g", &[&["a/m"], &["b/m"]])
}

fn harness(topology: Topology) -> Harness {
    Harness::new(topology)
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_per_max_retries_then_the_next_echelon_answers() {
    let h = harness(two_echelons(1).echelons(|e| e.max_retries = 2).build());
    h.backend.on("a/m", [server_error()]);
    let started = tokio::time::Instant::now();
    let served = h.answered().await;
    assert_eq!(h.backend.calls("a/m"), 3, "one attempt and two retries");
    assert_eq!(h.backend.calls("b/m"), 1);
    assert_eq!(
        results(&served.attempts),
        [
            ("a/m#0".into(), failed(ErrorClass::Server, Some(500))),
            ("a/m#0".into(), failed(ErrorClass::Server, Some(500))),
            ("a/m#0".into(), failed(ErrorClass::Server, Some(500))),
            ("b/m#0".into(), AttemptResult::Success),
        ]
    );
    assert_eq!(&*served.model, "m-up");
    assert_route(&served, "echelon2");
    let fallbacks: Vec<_> = h
        .sink
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Event::Fallback { from, to, .. } => Some((from.unwrap().to_string(), to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        fallbacks,
        [("echelon1".to_owned(), "g › echelon2".to_owned())]
    );
    // Backoff with full jitter under a doubling cap: 100 ms, then 200 ms at most.
    assert!(started.elapsed() <= ms(300), "{:?}", started.elapsed());
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn without_retries_every_key_is_tried_once_before_falling_down() {
    let h = harness(two_echelons(2).build());
    h.backend.on("a/m", [server_error()]);
    let served = h.answered().await;
    assert_eq!(h.backend.calls("a/m#0"), 1);
    assert_eq!(h.backend.calls("a/m#1"), 1);
    assert_eq!(h.backend.calls("b/m"), 1);
    assert_eq!(served.attempts.len(), 3);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn the_attempt_cap_bounds_a_request() {
    let mut b = Builder::two_echelons(5).echelons(|e| e.max_retries = 3);
    b.group_mut("g").fallback.max_attempts = 4;
    let h = harness(b.build());
    h.backend.on("a/m", [server_error()]);
    let f = h.failure().await;
    assert_eq!(h.backend.total_calls(), 4);
    assert_eq!(h.backend.calls("b/m"), 0);
    assert!(
        matches!(&f.verdict, Verdict::Exhausted { last_error: Some(e) } if e.class == ErrorClass::Server),
        "{:?}",
        f.verdict
    );
    assert_verdict!(f, Verdict::Exhausted { .. });
    assert_eq!(f.attempts.len(), 4);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_times_out_and_is_never_retried_in_place() {
    let h = harness(
        two_echelons(1)
            .echelons(|e| {
                e.timeout = secs(2);
                e.max_retries = 3;
            })
            .build(),
    );
    h.backend.on("a/m", [Reply::Hang]);
    let started = tokio::time::Instant::now();
    let served = h.answered().await;
    assert_eq!(
        started.elapsed(),
        secs(2),
        "moved on exactly at the attempt timeout"
    );
    assert_eq!(
        h.backend.calls("a/m"),
        1,
        "a timeout is not retried in place"
    );
    assert_eq!(h.backend.calls("b/m"), 1);
    assert_eq!(
        results(&served.attempts),
        [
            ("a/m#0".into(), failed(ErrorClass::Timeout, None)),
            ("b/m#0".into(), AttemptResult::Success),
        ]
    );
    assert_eq!(served.attempts[0].duration, Some(secs(2)));
    // The timeout is the upstream's fault: it counts against its health.
    assert_eq!(h.instance("a/m#0").stats.failures, 1);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_ends_a_request_with_504_without_hanging() {
    let mut b = two_echelons(1).echelons(|e| e.timeout = secs(3));
    b.group_mut("g").fallback.deadline = secs(5);
    let h = harness(b.build());
    h.backend.on("a/m", [Reply::Hang]);
    h.backend.on("b/m", [Reply::Hang]);
    let started = tokio::time::Instant::now();
    let f = h.failure().await;
    assert_eq!(started.elapsed(), secs(5));
    assert_eq!(f.verdict, Verdict::DeadlineExceeded);
    assert_verdict!(f, Verdict::DeadlineExceeded);
    assert_eq!(
        results(&f.attempts),
        [
            ("a/m#0".into(), failed(ErrorClass::Timeout, None)),
            // Cut by the request's own deadline: nobody's fault.
            ("b/m#0".into(), AttemptResult::Cancelled),
        ]
    );
    assert_eq!(h.instance("b/m#0").stats.failures, 0);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn the_engine_request_timeout_bounds_a_request_too() {
    let h = Harness::with_timeout(two_echelons(1).build(), secs(4));
    h.backend.on("a/m", [Reply::Hang]);
    let started = tokio::time::Instant::now();
    let f = h.failure().await;
    assert_eq!(started.elapsed(), secs(4));
    assert_eq!(f.verdict, Verdict::DeadlineExceeded);
    assert_eq!(h.backend.calls("b/m"), 0);
    assert_eq!(
        h.instance("a/m#0").stats.failures,
        0,
        "not the upstream's fault"
    );
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_new_request_timeout_bounds_the_requests_that_start_after_it() {
    let h = Harness::with_timeout(two_echelons(1).build(), secs(60));
    h.gateway.set_request_timeout(secs(2));
    assert_eq!(h.gateway.request_timeout(), secs(2));
    h.backend.on("a/m", [Reply::Hang]);
    let started = tokio::time::Instant::now();
    let f = h.failure().await;
    assert_eq!(started.elapsed(), secs(2));
    assert_eq!(f.verdict, Verdict::DeadlineExceeded);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn an_invalid_request_is_returned_as_it_is_after_one_attempt() {
    for class in [ErrorClass::InvalidRequest, ErrorClass::ContentFilter] {
        let h = harness(two_echelons(2).echelons(|e| e.max_retries = 2).build());
        let error = crate::support::fail(class, Some(400));
        h.backend.on("a/m", [Reply::Fail(error.clone())]);
        let f = h.failure().await;
        assert_eq!(f.verdict, Verdict::Rejected(error), "{class}");
        assert_verdict!(f, Verdict::Rejected(_));
        assert_eq!(
            h.backend.total_calls(),
            1,
            "{class}: one attempt, no retry, no fallback"
        );
        let a = h.instance("a/m#0");
        assert_eq!(a.health, echelon_domain::health::HealthState::Healthy);
        assert_eq!(a.breaker, echelon_domain::breaker::BreakerState::Closed);
        h.assert_idle();
    }
}

#[tokio::test(start_paused = true)]
async fn context_length_moves_only_to_a_larger_context_target() {
    let h = harness(
        Builder::new()
            .provider("a", 1)
            .provider("b", 1)
            .model("a/small", Some(8_192))
            .model("b/same", Some(8_192))
            .model("b/large", Some(128_000))
            .group("g", &[&["a/small"], &["b/same", "b/large"]])
            .build(),
    );
    let error = crate::support::fail(ErrorClass::ContextLength, Some(400))
        .with_code("context_length_exceeded");
    h.backend.on("a/small", [Reply::Fail(error.clone())]);
    h.backend.on("b/same", [Reply::Fail(error)]);
    for _ in 0..2 {
        // Twice, so the echelon's target rotation starts once with each target.
        let served = h.answered().await;
        assert_eq!(&*served.model, "large-up");
    }
    assert_eq!(h.backend.calls("a/small"), 2);
    assert_eq!(
        h.backend.calls("b/same"),
        0,
        "a window no larger is never tried"
    );
    assert_eq!(h.backend.calls("b/large"), 2);
    let skipped = h
        .sink
        .take()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::Skipped {
                    reason: SkipReason::ContextWindowTooSmall {
                        required_above: 8_192,
                        window: Some(8_192)
                    },
                    ..
                }
            )
        })
        .count();
    // The request whose rotation starts at b/same skips it, with the reason; the other one
    // starts at b/large and never looks at b/same.
    assert_eq!(skipped, 1);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_plain_400_for_a_prompt_over_the_window_counts_as_context_length() {
    // Anthropic and Gemini say "too long" only in prose: a plain 400. The request's size against
    // the configured window is what tells it apart from a request that is simply wrong.
    let h = harness(
        Builder::new()
            .provider("a", 1)
            .provider("b", 1)
            .model("a/small", Some(1_000))
            .model("b/large", Some(128_000))
            .group("g", &[&["a/small"], &["b/large"]])
            .build(),
    );
    let plain_400 = crate::support::fail(ErrorClass::InvalidRequest, Some(400));
    h.backend.on(
        "a/small",
        [
            Reply::Fail(plain_400.clone()),
            Reply::Fail(plain_400.clone()),
        ],
    );
    let long = echelon_domain::chat::ChatRequest::new(vec![echelon_domain::chat::Message::text(
        echelon_domain::chat::Role::User,
        "word ".repeat(2_000),
    )]);
    let served = h.gateway.complete("group:g", long).await.unwrap();
    assert_eq!(&*served.model, "large-up");
    assert_eq!(h.backend.calls("b/large"), 1);

    // A short request that gets the same 400 is simply wrong: returned as it is, nothing else tried.
    let f = h.failure().await;
    assert_eq!(f.verdict, Verdict::Rejected(plain_400));
    assert_eq!(h.backend.calls("b/large"), 1);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn context_length_without_a_larger_target_is_returned_after_one_attempt() {
    let h = harness(two_echelons(1).build());
    let error = crate::support::fail(ErrorClass::ContextLength, Some(400));
    h.backend.on("a/m", [Reply::Fail(error.clone())]);
    let f = h.failure().await;
    assert_eq!(f.verdict, Verdict::Rejected(error));
    assert_eq!(h.backend.total_calls(), 1);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_short_retry_after_is_waited_out_when_nothing_else_in_the_echelon_can_serve() {
    let h = harness(two_echelons(1).build());
    h.backend.on("a/m", [rate_limited(secs(2)), Reply::Answer]);
    let started = tokio::time::Instant::now();
    let served = h.answered().await;
    assert_eq!(started.elapsed(), secs(2), "waited exactly the Retry-After");
    assert_eq!(h.backend.calls("a/m"), 2);
    assert_eq!(
        h.backend.calls("b/m"),
        0,
        "a short wait beats dropping a tier"
    );
    assert_route(&served, "echelon1");
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_key_rotates_to_another_key_without_waiting() {
    let h = harness(two_echelons(2).build());
    h.backend.on_key("a/m#0", [rate_limited(secs(2))]);
    let started = tokio::time::Instant::now();
    let served = h.answered().await;
    assert_eq!(started.elapsed(), ms(0));
    assert_eq!(
        results(&served.attempts),
        [
            ("a/m#0".into(), failed(ErrorClass::RateLimited, Some(429))),
            ("a/m#1".into(), AttemptResult::Success),
        ]
    );
    let cooling = h.instance("a/m#0");
    assert!(cooling.cooldown_until.is_some());
    // The next request skips the cooling key at once.
    h.answered().await;
    assert_eq!(h.backend.calls("a/m#0"), 1);
    assert_eq!(h.backend.calls("a/m#1"), 2);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_moves_on_at_once() {
    let h = harness(two_echelons(1).build());
    h.backend.on("a/m", [rate_limited(secs(60))]);
    let started = tokio::time::Instant::now();
    let served = h.answered().await;
    assert_eq!(started.elapsed(), ms(0));
    assert_eq!(h.backend.calls("a/m"), 1);
    assert_eq!(h.backend.calls("b/m"), 1);
    assert_route(&served, "echelon2");
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn everything_rate_limited_answers_429_with_the_earliest_retry_after() {
    let h = harness(two_echelons(1).build());
    h.backend.on("a/m", [rate_limited(secs(30))]);
    h.backend.on("b/m", [rate_limited(secs(10))]);
    let f = h.failure().await;
    assert_eq!(
        f.verdict,
        Verdict::RateLimited {
            retry_after: secs(10)
        }
    );
    assert_verdict!(f, Verdict::RateLimited { .. });
    assert_eq!(h.backend.total_calls(), 2);
    // While everything cools down, the answer comes at once and costs no upstream call.
    tokio::time::advance(secs(4)).await;
    let f = h.failure().await;
    assert_eq!(
        f.verdict,
        Verdict::RateLimited {
            retry_after: secs(6)
        }
    );
    assert!(f.attempts.is_empty());
    assert_eq!(h.backend.total_calls(), 2);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_refused_key_is_marked_dead_and_the_next_key_serves() {
    let h = harness(two_echelons(2).build());
    h.backend.on_key(
        "a/m#0",
        [Reply::Fail(crate::support::fail(
            ErrorClass::Auth,
            Some(401),
        ))],
    );
    let served = h.answered().await;
    assert_eq!(
        results(&served.attempts),
        [
            ("a/m#0".into(), failed(ErrorClass::Auth, Some(401))),
            ("a/m#1".into(), AttemptResult::Success),
        ]
    );
    assert!(h.instance("a/m#0").key_dead);
    assert!(!h.instance("a/m#1").key_dead);
    for _ in 0..3 {
        h.answered().await;
    }
    assert_eq!(
        h.backend.calls("a/m#0"),
        1,
        "a dead key gets no more traffic"
    );
    assert_eq!(h.backend.calls("a/m#1"), 4);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn the_response_names_the_model_that_answered() {
    let mut b = two_echelons(1);
    b.topology
        .models
        .get_mut(&echelon_domain::name::ModelRef::new("b", "m"))
        .unwrap()
        .upstream_name = "fallback-2025-01".into();
    let h = harness(b.build());
    h.backend.on("a/m", [server_error()]);
    let served = h.answered().await;
    assert_eq!(&*served.model, "fallback-2025-01");
    assert_eq!(&*served.value.model, "fallback-2025-01");
    assert_eq!(served.route.to_string(), "g › echelon2 › b/m#0");
}

#[tokio::test(start_paused = true)]
async fn unknown_names_are_refused_before_any_attempt() {
    let h = harness(two_echelons(1).build());
    let e = h.gateway.complete("nope", request()).await.unwrap_err();
    assert_eq!(e.to_string(), "model `nope` not found");
    let e = h
        .gateway
        .complete("group:g.echelon9", request())
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "task group `g` has no echelon `echelon9`");
    assert_eq!(h.backend.total_calls(), 0);
}
