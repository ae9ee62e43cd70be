//! Streaming under faults: failover until the first content token, an explicit failure event
//! after it, idle and total limits, and the time-to-first-token limit.

use std::time::Duration;

use echelon_application::stream::StreamEvent;
use echelon_domain::error::ErrorClass;
use echelon_domain::plan::{AttemptResult, Verdict};

use crate::support::{
    Builder, Harness, Piece, Reply, assert_route, assert_verdict, drain, fail, failed, failures,
    finished_normally, ms, request, results, secs, text,
};

/// A stream of `n` dots `gap` apart, then its finish.
fn dots(n: usize, gap: Duration) -> Reply {
    let mut pieces = vec![Piece::Role];
    for _ in 0..n {
        pieces.extend([Piece::Text("."), Piece::Sleep(gap)]);
    }
    pieces.push(Piece::Finish);
    Reply::Stream(pieces)
}

/// Group `g`: `echelon1` = `a/m`, `echelon2` = `b/m`.
fn harness(change: impl FnMut(&mut echelon_domain::spec::EchelonSpec)) -> Harness {
    Harness::new(Builder::two_echelons(1).echelons(change).build())
}

#[tokio::test(start_paused = true)]
async fn a_clean_stream_ends_normally_and_records_a_success() {
    let h = harness(|_| {});
    let served = h.streamed().await;
    assert_eq!(&*served.model, "m-up");
    assert_eq!(served.value.model().as_ref(), "m-up");
    let events = drain(served.value).await;
    assert_eq!(text(&events), "hello world");
    assert!(failures(&events).is_empty());
    assert!(finished_normally(&events));
    let a = h.instance("a/m#0");
    assert_eq!(a.stats.successes, 1);
    assert_eq!(
        a.stats.output_tokens, 2,
        "usage of the final chunk is recorded"
    );
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn an_error_before_the_first_content_fails_over() {
    for broken in [
        // Refused before the stream started.
        Reply::Fail(fail(ErrorClass::Server, Some(503))),
        // An error event after the role chunk, before any content.
        Reply::Stream(vec![
            Piece::Role,
            Piece::Fail(fail(ErrorClass::Server, None)),
        ]),
        // Cut after the role chunk.
        Reply::Stream(vec![
            Piece::Role,
            Piece::Fail(fail(ErrorClass::Connect, None)),
        ]),
    ] {
        let h = harness(|_| {});
        h.backend.on("a/m", [broken.clone()]);
        let served = h.streamed().await;
        assert!(
            served.route.to_string().contains("echelon2"),
            "{broken:?}: {}",
            served.route
        );
        let events = drain(served.value).await;
        assert_eq!(text(&events), "hello world", "{broken:?}");
        assert!(failures(&events).is_empty(), "{broken:?}");
        assert!(finished_normally(&events));
        assert!(
            events.iter().all(|e| match e {
                StreamEvent::Chunk(c) => c.model.as_deref() == Some("m-up"),
                StreamEvent::Failed(_) => false,
            }),
            "only the fallback's chunks reach the client"
        );
        assert_eq!(h.backend.calls("a/m"), 1);
        assert_eq!(h.backend.calls("b/m"), 1);
        assert_eq!(h.instance("a/m#0").stats.failures, 1);
        h.assert_idle();
    }
}

#[tokio::test(start_paused = true)]
async fn an_error_after_the_first_content_ends_the_stream_with_one_failure_event() {
    let h = harness(|_| {});
    let cut = fail(ErrorClass::Connect, None);
    h.backend.on(
        "a/m",
        [Reply::Stream(vec![
            Piece::Role,
            Piece::Text("hel"),
            Piece::Text("lo"),
            Piece::Fail(cut.clone()),
            // Whatever the upstream would send after its failure never reaches the client.
            Piece::Text(" world"),
            Piece::Finish,
        ])],
    );
    let served = h.streamed().await;
    let events = drain(served.value).await;
    assert_eq!(text(&events), "hello");
    assert_eq!(failures(&events), [&cut]);
    assert!(
        matches!(events.last(), Some(StreamEvent::Failed(_))),
        "the failure is the last event"
    );
    assert!(!finished_normally(&events), "no normal end after a failure");
    assert_eq!(
        h.backend.calls("b/m"),
        0,
        "no failover after content was sent"
    );
    let a = h.instance("a/m#0");
    assert_eq!((a.stats.successes, a.stats.failures), (0, 1));
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_stall_after_content_fails_after_the_idle_timeout() {
    let h = harness(|e| {
        e.idle_timeout = secs(3);
        e.timeout = secs(60);
    });
    h.backend.on(
        "a/m",
        [Reply::Stream(vec![
            Piece::Role,
            Piece::Text("hel"),
            Piece::Sleep(secs(1)),
            Piece::Text("lo"),
            Piece::Hang,
        ])],
    );
    let served = h.streamed().await;
    let started = tokio::time::Instant::now();
    let events = drain(served.value).await;
    assert_eq!(
        started.elapsed(),
        secs(1) + secs(3),
        "the idle timer restarts with every chunk"
    );
    assert_eq!(text(&events), "hello");
    let errors = failures(&events);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].class, ErrorClass::Timeout);
    assert_eq!(&*errors[0].message, "stream stalled: no chunk for 3s");
    assert!(!finished_normally(&events));
    assert_eq!(h.instance("a/m#0").stats.failures, 1);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_trickling_stream_fails_at_the_attempt_total_time() {
    let h = harness(|e| {
        e.idle_timeout = secs(3);
        e.timeout = secs(5);
    });
    h.backend.on("a/m", [dots(20, secs(1))]);
    let started = tokio::time::Instant::now();
    let served = h.streamed().await;
    let events = drain(served.value).await;
    assert_eq!(started.elapsed(), secs(5));
    let errors = failures(&events);
    assert_eq!(errors.len(), 1, "{events:?}");
    assert_eq!(errors[0].class, ErrorClass::Timeout);
    assert!(!finished_normally(&events));
    assert_eq!(text(&events), ".....");
    // The echelon's own limit ran out, not the request's: the upstream was too slow.
    assert_eq!(h.instance("a/m#0").stats.failures, 1);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_token_fails_over_after_the_first_token_timeout() {
    let h = harness(|e| e.first_token_timeout = secs(2));
    h.backend.on(
        "a/m",
        [Reply::Stream(vec![
            Piece::Role,
            Piece::Sleep(secs(10)),
            Piece::Text("late"),
            Piece::Finish,
        ])],
    );
    let started = tokio::time::Instant::now();
    let served = h.streamed().await;
    assert_eq!(started.elapsed(), secs(2));
    assert_eq!(
        results(&served.attempts),
        [
            ("a/m#0".into(), failed(ErrorClass::Timeout, None)),
            ("b/m#0".into(), AttemptResult::Pending),
        ]
    );
    let events = drain(served.value).await;
    assert_eq!(text(&events), "hello world");
    assert!(finished_normally(&events));
    assert_eq!(h.backend.calls("a/m"), 1);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn headers_that_never_come_count_against_the_first_token_timeout() {
    let h = harness(|e| e.first_token_timeout = secs(2));
    h.backend.on("a/m", [Reply::Hang]);
    let started = tokio::time::Instant::now();
    let served = h.streamed().await;
    assert_eq!(started.elapsed(), secs(2));
    assert!(finished_normally(&drain(served.value).await));
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn role_chunks_before_the_first_content_are_relayed_once() {
    let h = harness(|_| {});
    let served = h.streamed().await;
    let events = drain(served.value).await;
    let roles = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Chunk(c) if c.role.is_some()))
        .count();
    assert_eq!(roles, 1);
    assert_eq!(events.len(), 4, "role, two words, finish: {events:?}");
}

#[tokio::test(start_paused = true)]
async fn an_empty_answer_is_a_clean_end() {
    let h = harness(|_| {});
    h.backend
        .on("a/m", [Reply::Stream(vec![Piece::Role, Piece::Finish])]);
    let served = h.streamed().await;
    let events = drain(served.value).await;
    assert!(failures(&events).is_empty());
    assert!(finished_normally(&events));
    assert_eq!(h.backend.calls("b/m"), 0);
    assert_eq!(h.instance("a/m#0").stats.successes, 1);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_everywhere_before_content_is_a_clean_error() {
    let h = harness(|e| e.first_token_timeout = ms(500));
    h.backend.on("a/m", [Reply::Hang]);
    h.backend.on(
        "b/m",
        [Reply::Stream(vec![
            Piece::Role,
            Piece::Fail(fail(ErrorClass::Server, None)),
        ])],
    );
    let f = crate::support::failure(h.gateway.stream("group:g", request()).await);
    assert_verdict!(f, Verdict::Exhausted { .. });
    assert_eq!(
        results(&f.attempts),
        [
            ("a/m#0".into(), failed(ErrorClass::Timeout, None)),
            ("b/m#0".into(), failed(ErrorClass::Server, None)),
        ]
    );
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn the_request_deadline_ends_a_relayed_stream_without_blaming_the_upstream() {
    let mut b = Builder::two_echelons(1).echelons(|e| {
        e.timeout = secs(30);
        e.idle_timeout = secs(10);
    });
    b.group_mut("g").fallback.deadline = secs(3);
    let h = Harness::new(b.build());
    h.backend.on("a/m", [dots(10, ms(700))]);
    let started = tokio::time::Instant::now();
    let served = h.streamed().await;
    let events = drain(served.value).await;
    assert_eq!(
        started.elapsed(),
        secs(3),
        "the request's deadline bounds the stream"
    );
    let errors = failures(&events);
    assert_eq!(errors.len(), 1, "the client still sees an explicit failure");
    assert_eq!(errors[0].class, ErrorClass::Timeout);
    assert!(!finished_normally(&events));
    let a = h.instance("a/m#0");
    assert_eq!(
        (a.stats.failures, a.stats.cancelled),
        (0, 1),
        "the request's own deadline is nobody's fault: {:?}",
        a.stats
    );
    assert_eq!(a.health, echelon_domain::health::HealthState::Healthy);
    h.assert_idle();
}

#[tokio::test(start_paused = true)]
async fn a_short_retry_after_before_the_first_token_is_waited_out() {
    let h = harness(|_| {});
    h.backend.on(
        "a/m",
        [crate::support::rate_limited(secs(2)), Reply::Answer],
    );
    let started = tokio::time::Instant::now();
    let served = h.streamed().await;
    assert_eq!(started.elapsed(), secs(2));
    assert_route(&served, "echelon1");
    assert!(finished_normally(&drain(served.value).await));
    assert_eq!(h.backend.calls("b/m"), 0);
    h.assert_idle();
}
