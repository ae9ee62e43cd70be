//! Hot reload: live state carries over for unchanged instances, backends are reused, and
//! requests in flight finish on the generation they started on.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use echelon_domain::breaker::BreakerState;
use echelon_domain::error::ErrorClass;
use echelon_domain::health::HealthState;
use echelon_domain::name::ModelRef;
use echelon_domain::spec::BreakerPolicy;
use echelon_domain::time::Clock as _;
use futures_util::StreamExt as _;

use crate::support::{
    Builder, Harness, Piece, Reply, assert_idle, assert_route, drain, fail, finished_normally, ms,
    request, secs, server_error, text,
};

/// Group `g`: `echelon1` = `pool:p` (`a/m#0`, `a/m#1`; breaker opens after one failure for a
/// minute), `echelon2` = `b/m`.
fn builder() -> Builder {
    let mut b = Builder::new()
        .provider("a", 2)
        .provider("b", 1)
        .model("a/m", Some(8_000))
        .model("b/m", Some(8_000))
        .pool("p", &[("a/m", 0), ("a/m", 1)])
        .group("g", &[&["pool:p"], &["b/m"]]);
    b.pool_mut("p").breaker = BreakerPolicy {
        failure_threshold: 1,
        recovery_time: secs(60),
        max_recovery_time: secs(60),
        ..BreakerPolicy::default()
    };
    b
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_breaker_and_health_of_unchanged_instances_and_revives_dead_keys() {
    let h = Harness::new(builder().build());
    h.backend.on_key("a/m#0", [server_error()]);
    h.backend
        .on_key("a/m#1", [Reply::Fail(fail(ErrorClass::Auth, Some(401)))]);
    let served = h.answered().await;
    assert_route(&served, "b/m#0");
    assert_eq!(h.instance("a/m#0").breaker, BreakerState::Open);
    assert_eq!(h.instance("a/m#0").health, HealthState::Degraded);
    assert!(h.instance("a/m#1").key_dead);
    assert_eq!(h.instance("b/m#0").stats.successes, 1);
    assert_eq!(h.factory.builds.load(Ordering::SeqCst), 2);

    // The new tree adds a provider and changes b/m's context window; a/m is untouched.
    let mut next = builder().provider("c", 1).model("c/x", None);
    next.topology
        .models
        .get_mut(&ModelRef::new("b", "m"))
        .unwrap()
        .context_window = Some(16_000);
    assert_eq!(h.gateway.reload(next.build()).unwrap(), 2);
    assert_eq!(h.gateway.generation().number, 2);
    assert_eq!(
        h.factory.builds.load(Ordering::SeqCst),
        3,
        "only the new provider gets a new backend"
    );

    let a0 = h.instance("a/m#0");
    assert_eq!(
        a0.breaker,
        BreakerState::Open,
        "an open breaker survives a reload"
    );
    assert_eq!(a0.health, HealthState::Degraded);
    assert_eq!(a0.stats.failures, 1);
    assert!(!h.instance("a/m#1").key_dead, "a reload revives dead keys");
    assert_eq!(
        h.instance("b/m#0").stats.attempts,
        0,
        "a changed instance starts afresh"
    );
    // a/m#0 is still skipped; the revived key serves.
    h.backend.on_key("a/m#1", [Reply::Answer]);
    let served = h.answered().await;
    assert_route(&served, "a/m#1");
    assert_eq!(h.backend.calls("a/m#0"), 1);
    h.assert_idle();
}

/// The tree after the reload: group `g` now serves from `c/x` only; provider `a` is gone.
fn replacement() -> echelon_domain::spec::Topology {
    Builder::new()
        .provider("b", 1)
        .provider("c", 1)
        .model("b/m", None)
        .model("c/x", None)
        .group("g", &[&["c/x"], &["b/m"]])
        .build()
}

async fn until_called(h: &Harness, target: &str) {
    for _ in 0..1_000 {
        if h.backend.calls(target) > 0 {
            return;
        }
        tokio::time::sleep(ms(1)).await;
    }
    panic!("{target} was never called");
}

#[tokio::test(start_paused = true)]
async fn a_request_in_flight_finishes_on_the_old_generation() {
    let h = Harness::new(builder().build());
    h.backend
        .on("a/m", [Reply::After(secs(5), Box::new(Reply::Answer))]);
    let old = h.gateway.generation();
    let gateway = Arc::clone(&h.gateway);
    let in_flight = tokio::spawn(async move { gateway.complete("group:g", request()).await });
    until_called(&h, "a/m").await;

    h.gateway.reload(replacement()).unwrap();
    let served = h.answered().await;
    assert_eq!(&*served.model, "x-up", "new requests use the new tree");

    let served = in_flight.await.unwrap().unwrap();
    assert_eq!(&*served.model, "m-up");
    assert_route(&served, "a/m#0");
    assert_idle(&old.table.snapshot(h.gateway.clock().now()));
    assert_eq!(Arc::strong_count(&old), 1, "the old generation is released");
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_stream_in_flight_finishes_on_the_old_generation() {
    let h = Harness::new(builder().build());
    h.backend.on(
        "a/m",
        [Reply::Stream(vec![
            Piece::Role,
            Piece::Text("old "),
            Piece::Sleep(secs(2)),
            Piece::Text("tree"),
            Piece::Finish,
        ])],
    );
    let old = h.gateway.generation();
    let served = h.streamed().await;
    let mut stream = served.value;
    let first = stream.next().await.unwrap();
    h.gateway.reload(replacement()).unwrap();
    assert_eq!(h.gateway.generation().number, 2);
    let mut events = vec![first];
    events.extend(drain(stream).await);
    assert_eq!(text(&events), "old tree");
    assert!(finished_normally(&events));
    assert_eq!(
        Arc::strong_count(&old),
        1,
        "the stream released its generation"
    );
    let a = old
        .table
        .instance(&echelon_domain::name::InstanceId::new(
            ModelRef::new("a", "m"),
            0,
        ))
        .unwrap();
    assert_eq!(
        a.stats().successes,
        1,
        "the outcome is recorded on the old tree"
    );
    assert_eq!(a.in_flight(), 0);
    h.assert_idle();
}
