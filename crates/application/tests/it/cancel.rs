//! Cancellation: a caller that goes away drops the upstream call and releases every permit, at
//! every point of a request's life.

use std::time::Duration;

use echelon_domain::breaker::BreakerState;
use echelon_domain::error::ErrorClass;
use echelon_domain::spec::BreakerPolicy;
use futures_util::StreamExt as _;

use crate::support::{
    Builder, Harness, Piece, Reply, assert_route, fail, ms, request, secs, server_error,
};

/// Group `g`: `echelon1` = `pool:p` (`a/m#0`, concurrency 1, breaker tripping after one
/// failure), `echelon2` = `b/m`; both echelons allow one request at a time.
fn harness() -> Harness {
    let mut b = Builder::two_models(1)
        .pool("p", &[("a/m", 0)])
        .group("g", &[&["pool:p"], &["b/m"]])
        .echelons(|e| {
            e.concurrency_limit = Some(1);
            e.first_token_timeout = secs(30);
        });
    let pool = b.pool_mut("p");
    pool.instances[0].limits.max_concurrency = Some(1);
    pool.breaker = BreakerPolicy {
        failure_threshold: 1,
        recovery_time: secs(10),
        max_recovery_time: secs(10),
        ..BreakerPolicy::default()
    };
    Harness::new(b.build())
}

/// Polls `future` until `time` has passed, then drops it: a client that hangs up.
async fn hang_up<F: std::future::Future>(future: F, time: Duration) {
    let outcome = tokio::time::timeout(time, future).await;
    assert!(
        outcome.is_err(),
        "the request was meant to be still running"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_a_request_mid_attempt_drops_the_upstream_call_and_every_permit() {
    let h = harness();
    h.backend.on("a/m", [Reply::Hang, Reply::Answer]);
    hang_up(h.gateway.complete("group:g", request()), secs(1)).await;
    h.assert_idle();
    let a = h.instance("a/m#0");
    assert_eq!(a.stats.failures, 0, "a caller leaving is nobody's fault");
    assert_eq!(a.health, echelon_domain::health::HealthState::Healthy);
    assert_eq!(
        a.stats.attempts,
        a.stats.successes + a.stats.failures + a.stats.cancelled,
        "a dropped attempt is counted as cancelled: {:?}",
        a.stats
    );
    // The slot is free again: the next request is served by the same instance.
    let served = h.answered().await;
    assert_route(&served, "a/m#0");
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn dropping_a_request_during_a_backoff_wait_releases_everything() {
    let mut b = Builder::new()
        .provider("a", 1)
        .model("a/m", None)
        .group("g", &[&["a/m"]])
        .echelons(|e| e.max_retries = 3);
    b.group_mut("g").fallback.retry_delay = secs(10);
    let h = Harness::new(b.build());
    h.backend.on("a/m", [server_error()]);
    hang_up(h.gateway.complete("group:g", request()), ms(100)).await;
    assert_eq!(h.backend.calls("a/m"), 1, "hung up during the backoff wait");
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn dropping_a_stream_request_before_its_first_token_releases_everything() {
    let h = harness();
    h.backend
        .on("a/m", [Reply::Stream(vec![Piece::Role, Piece::Hang])]);
    hang_up(h.gateway.stream("group:g", request()), secs(2)).await;
    h.assert_idle();
    assert_eq!(h.instance("a/m#0").stats.failures, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_stream_mid_way_closes_the_upstream_and_releases_everything() {
    let h = harness();
    h.backend.on(
        "a/m",
        [Reply::Stream(vec![
            Piece::Role,
            Piece::Text("one "),
            Piece::Text("two "),
            Piece::Hang,
        ])],
    );
    let served = h.streamed().await;
    let mut stream = served.value;
    // Read the role chunk and the first word, then hang up.
    stream.next().await.unwrap();
    stream.next().await.unwrap();
    assert_eq!(
        h.backend.live(),
        1,
        "the upstream stream is open while relaying"
    );
    assert_eq!(h.instance("a/m#0").in_flight, 1);
    drop(stream);
    h.assert_idle();
    let a = h.instance("a/m#0");
    assert_eq!((a.stats.failures, a.stats.cancelled), (0, 1));
    assert_eq!(a.breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_half_open_trial_gives_its_slot_back() {
    let h = harness();
    h.backend
        .on("a/m", [server_error(), Reply::Hang, Reply::Answer]);
    // One failure opens the breaker; the fallback serves.
    let served = h.answered().await;
    assert_route(&served, "b/m");
    assert_eq!(h.instance("a/m#0").breaker, BreakerState::Open);
    tokio::time::advance(secs(13)).await;
    // The first request after the open time is the trial; its caller hangs up.
    hang_up(h.gateway.complete("group:g", request()), secs(1)).await;
    h.assert_idle();
    assert_eq!(h.instance("a/m#0").breaker, BreakerState::HalfOpen);
    // The trial slot came back: the next request is the trial, and closes the breaker.
    let served = h.answered().await;
    assert_route(&served, "a/m#0");
    assert_eq!(h.instance("a/m#0").breaker, BreakerState::Closed);
    assert_eq!(h.backend.calls("a/m"), 3);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn many_requests_cancelled_at_random_points_leave_nothing_held() {
    let h = harness();
    h.backend.on(
        "a/m",
        [Reply::After(
            ms(30),
            Box::new(Reply::Stream(vec![
                Piece::Role,
                Piece::Sleep(ms(20)),
                Piece::Text("a "),
                Piece::Sleep(ms(20)),
                Piece::Text("b"),
                Piece::Finish,
            ])),
        )],
    );
    h.backend.on(
        "b/m",
        [Reply::After(
            ms(15),
            Box::new(Reply::Fail(fail(ErrorClass::Server, Some(500)))),
        )],
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60u64 {
        let gateway = h.gateway.clone();
        tasks.spawn(async move {
            let give_up = ms(i * 3);
            if i % 2 == 0 {
                let _ = tokio::time::timeout(give_up, gateway.complete("group:g", request())).await;
            } else {
                let _ = tokio::time::timeout(give_up, async {
                    if let Ok(served) = gateway.stream("group:g", request()).await {
                        let mut stream = served.value;
                        while stream.next().await.is_some() {}
                    }
                })
                .await;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    h.assert_idle();
}
