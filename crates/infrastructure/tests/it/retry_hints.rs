//! The waits a 429 announces, read from live responses of the fake upstream.

use std::time::Duration;

use echelon_domain::error::ErrorClass;
use echelon_domain::spec::ProviderKind;
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions};

use crate::support::{Canned, Recorder, client, complete, request};

async fn wait_for(model: &str) -> Option<Duration> {
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let client = client(ProviderKind::Openai, &upstream.base_url());
    let e = complete(&client, model, &request("hi")).await.unwrap_err();
    assert_eq!(
        (e.class, e.status),
        (ErrorClass::RateLimited, Some(429)),
        "{model}"
    );
    assert_eq!(upstream.requests(model), 1);
    e.retry_after
}

#[tokio::test]
async fn retry_after_seconds() {
    crate::support::init_tracing();
    assert_eq!(wait_for("429-retry-7").await, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn retry_after_milliseconds() {
    crate::support::init_tracing();
    assert_eq!(
        wait_for("429-retry-ms-1500").await,
        Some(Duration::from_millis(1500))
    );
}

#[tokio::test]
async fn retry_after_http_date() {
    crate::support::init_tracing();
    // An HTTP-date has whole seconds, so the wait is 30 s give or take the second boundary.
    let wait = wait_for("429-retry-date-30").await.unwrap();
    assert!(
        (Duration::from_secs(28)..=Duration::from_secs(31)).contains(&wait),
        "{wait:?}"
    );
}

#[tokio::test]
async fn openai_reset_header() {
    crate::support::init_tracing();
    assert_eq!(
        wait_for("429-reset-6m0s").await,
        Some(Duration::from_secs(360))
    );
}

#[tokio::test]
async fn gemini_retry_info_in_the_body() {
    crate::support::init_tracing();
    let body = br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"17s"}]}}"#;
    let server = Recorder::start(Canned::json(429, body.to_vec())).await;
    let client = client(ProviderKind::Gemini, &server.root(ProviderKind::Gemini));
    let e = complete(&client, "gemini-2.5-flash", &request("hi"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::RateLimited);
    assert_eq!(e.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
    assert_eq!(e.retry_after, Some(Duration::from_secs(17)));
}

#[tokio::test]
async fn anthropic_overloaded_and_rate_limited() {
    crate::support::init_tracing();
    let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let server = Recorder::start(Canned::json(529, body.to_vec())).await;
    let anthropic = client(
        ProviderKind::Anthropic,
        &server.root(ProviderKind::Anthropic),
    );
    let e = complete(&anthropic, "claude", &request("hi"))
        .await
        .unwrap_err();
    assert_eq!((e.class, e.status), (ErrorClass::Overloaded, Some(529)));

    let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    let mut canned = Canned::json(429, body.to_vec());
    canned.headers.push(("retry-after", "12".to_owned()));
    canned
        .headers
        .push(("anthropic-ratelimit-requests-remaining", "0".to_owned()));
    canned.headers.push((
        "anthropic-ratelimit-requests-reset",
        "2000-01-01T00:00:00Z".to_owned(),
    ));
    let server = Recorder::start(canned).await;
    let anthropic = client(
        ProviderKind::Anthropic,
        &server.root(ProviderKind::Anthropic),
    );
    let e = complete(&anthropic, "claude", &request("hi"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::RateLimited);
    assert_eq!(e.code.as_deref(), Some("rate_limit_error"));
    assert_eq!(
        e.retry_after,
        Some(Duration::from_secs(12)),
        "retry-after wins"
    );
}

#[tokio::test]
async fn a_quota_serves_its_requests_then_answers_429_until_the_window_ends() {
    crate::support::init_tracing();
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let client = client(ProviderKind::Openai, &upstream.base_url());
    let model = "quota-2-per-60s";
    for _ in 0..2 {
        complete(&client, model, &request("hi")).await.unwrap();
    }
    let e = complete(&client, model, &request("hi")).await.unwrap_err();
    assert_eq!((e.class, e.status), (ErrorClass::RateLimited, Some(429)));
    let wait = e.retry_after.unwrap();
    assert!(
        (Duration::from_secs(58)..=Duration::from_secs(60)).contains(&wait),
        "the wait runs to the end of the window: {wait:?}"
    );
    // Another model name has its own quota.
    complete(&client, "other+quota-2-per-60s", &request("hi"))
        .await
        .unwrap();
    assert_eq!(upstream.requests(model), 3);
}
