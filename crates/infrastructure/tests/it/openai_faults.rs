//! Every fault of the fake upstream through the OpenAI adapter: the right class, exact counts.

use std::time::Duration;

use echelon_domain::chat::{FinishReason, RawJson};
use echelon_domain::error::ErrorClass;
use echelon_domain::ports::ChatBackend as _;
use echelon_domain::spec::ProviderKind;
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions, Faults};
use echelon_infrastructure::provider::ProviderClient;
use futures_util::StreamExt as _;

use crate::support::{client, collect, complete, instance, request, spec, stream};

const PROMPT: &str = "one two three four five six seven";

async fn fake() -> FakeUpstream {
    FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap()
}

async fn setup() -> (FakeUpstream, ProviderClient) {
    let upstream = fake().await;
    let client = client(ProviderKind::Openai, &upstream.base_url());
    (upstream, client)
}

#[tokio::test]
async fn clean_answer_json_and_stream() {
    crate::support::init_tracing();
    let (upstream, client) = setup().await;
    let r = complete(&client, "gpt-test", &request(PROMPT))
        .await
        .unwrap();
    assert_eq!(r.message.joined_text(), PROMPT);
    assert_eq!(&*r.model, "gpt-test");
    assert_eq!(r.finish_reason, Some(FinishReason::Stop));
    assert!(r.usage.unwrap().output_tokens > 0);

    let s = collect(stream(&client, "gpt-test", &request(PROMPT)).await.unwrap()).await;
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.text(), PROMPT);
    assert_eq!(
        s.chunks.len(),
        1 + 7 + 1 + 1,
        "role, seven words, finish, usage"
    );
    let [.., finish, usage] = s.chunks.as_slice() else {
        panic!("{:?}", s.chunks);
    };
    assert_eq!(finish.finish_reason, Some(FinishReason::Stop));
    assert!(finish.usage.is_none());
    assert!(
        usage.usage.is_some() && !usage.has_choice(),
        "usage comes last, on a chunk of its own as the upstream sent it"
    );
    assert_eq!(s.finish_chunks(), 1);
    assert_eq!(upstream.requests("gpt-test"), 2);
}

#[tokio::test]
async fn error_statuses_are_classified_with_one_request_each() {
    crate::support::init_tracing();
    let (upstream, client) = setup().await;
    let table = [
        ("fail-500", ErrorClass::Server, 500),
        ("fail-502", ErrorClass::Server, 502),
        ("fail-503", ErrorClass::Server, 503),
        ("fail-504", ErrorClass::Timeout, 504),
        ("fail-401", ErrorClass::Auth, 401),
        ("fail-403", ErrorClass::Auth, 403),
        ("fail-422", ErrorClass::InvalidRequest, 422),
        ("fail-400", ErrorClass::InvalidRequest, 400),
        ("fail-529", ErrorClass::Overloaded, 529),
        ("429-retry-2", ErrorClass::RateLimited, 429),
        ("context-length", ErrorClass::ContextLength, 400),
        ("content-filter", ErrorClass::ContentFilter, 400),
    ];
    for (model, class, status) in table {
        let e = complete(&client, model, &request("hi")).await.unwrap_err();
        assert_eq!((e.class, e.status), (class, Some(status)), "{model} (json)");
        let Err(e) = stream(&client, model, &request("hi")).await else {
            panic!("{model}: a failing stream request must fail before the stream");
        };
        assert_eq!(
            (e.class, e.status),
            (class, Some(status)),
            "{model} (stream)"
        );
        assert_eq!(
            upstream.requests(model),
            2,
            "{model}: one upstream request per call"
        );
    }
    let e = complete(&client, "context-length", &request("hi"))
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
    assert_eq!(upstream.total_requests(), 2 * 12 + 1);
}

#[tokio::test]
async fn connection_reset_before_headers_is_connect_and_not_retried() {
    crate::support::init_tracing();
    let (upstream, client) = setup().await;
    let e = complete(&client, "reset", &request("hi"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Connect, "{e}");
    assert_eq!(e.status, None);
    let Err(e) = stream(&client, "reset", &request("hi")).await else {
        panic!("reset must fail the stream request");
    };
    assert_eq!(e.class, ErrorClass::Connect, "{e}");
    assert_eq!(upstream.requests("reset"), 2);
    // The pool recovers: the next call on the same client works.
    assert!(complete(&client, "ok", &request("hi")).await.is_ok());
}

#[tokio::test]
async fn refused_connection_is_connect() {
    crate::support::init_tracing();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client(ProviderKind::Openai, &format!("http://{addr}/v1"));
    let e = complete(&client, "m", &request("hi")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Connect, "{e}");
    let e = client.probe(&instance()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Connect);
}

#[tokio::test(start_paused = true)]
async fn hang_ends_at_the_request_timeout_backstop() {
    crate::support::init_tracing();
    let upstream = fake().await;
    let mut spec = spec(ProviderKind::Openai, &upstream.base_url());
    spec.request_timeout = Duration::from_secs(3);
    let client = ProviderClient::from_spec(&spec).unwrap();
    let started = tokio::time::Instant::now();
    let e = complete(&client, "hang", &request("hi")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Timeout, "{e}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(upstream.requests("hang"), 1);
}

#[tokio::test(start_paused = true)]
async fn latency_and_slow_first_token() {
    crate::support::init_tracing();
    let (upstream, client) = setup().await;
    let started = tokio::time::Instant::now();
    complete(&client, "latency-200ms", &request("hi"))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));

    let started = tokio::time::Instant::now();
    let mut s = stream(&client, "slow-first-token-2s", &request("a b"))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "headers come at once"
    );
    let mut first_content = None;
    while let Some(item) = s.next().await {
        let chunk = item.unwrap();
        if chunk.has_content() && first_content.is_none() {
            first_content = Some(started.elapsed());
        }
    }
    assert!(first_content.unwrap() >= Duration::from_secs(2));
    assert_eq!(upstream.total_requests(), 2);
}

#[tokio::test]
async fn cut_stream_ends_with_an_error_and_no_finish() {
    crate::support::init_tracing();
    let (upstream, client) = setup().await;
    let s = collect(
        stream(&client, "cut-after-3", &request(PROMPT))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s.text(), "one two three ");
    assert_eq!(s.error.as_ref().map(|e| e.class), Some(ErrorClass::Connect));
    assert_eq!(s.finish_chunks(), 0);
    assert_eq!(s.items_after_error, 0, "nothing after the error");

    let e = complete(&client, "cut-after-3", &request(PROMPT))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Connect, "{e}");
    assert_eq!(upstream.requests("cut-after-3"), 2);
}

#[tokio::test(start_paused = true)]
async fn stall_is_visible_to_the_caller_and_never_ends_cleanly() {
    crate::support::init_tracing();
    let (upstream, client) = setup().await;
    let mut s = stream(&client, "stall-after-2", &request(PROMPT))
        .await
        .unwrap();
    let mut text = String::new();
    while text != "one two " {
        let chunk = s.next().await.unwrap().unwrap();
        text.push_str(chunk.content.as_deref().unwrap_or(""));
    }
    // The caller's idle timeout is what notices a stall.
    assert!(
        tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .is_err()
    );
    // Left alone, the provider's request timeout ends it, with an error.
    let rest = collect(s).await;
    assert_eq!(
        rest.error.as_ref().map(|e| e.class),
        Some(ErrorClass::Timeout)
    );
    assert_eq!(rest.finish_chunks(), 0);
    assert_eq!(upstream.requests("stall-after-2"), 1);
}

#[tokio::test]
async fn malformed_chunk_and_error_event_are_errors_a_missing_done_is_not() {
    crate::support::init_tracing();
    let (upstream, client) = setup().await;
    let s = collect(
        stream(&client, "malformed-after-1", &request(PROMPT))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s.text(), "one ");
    let e = s.error.clone().unwrap();
    assert_eq!(e.class, ErrorClass::Connect);
    assert!(e.message.contains("malformed"), "{e}");
    assert_eq!(s.finish_chunks(), 0);

    // Every word and the finish chunk, then a clean close without [DONE]: complete.
    let s = collect(stream(&client, "no-done", &request(PROMPT)).await.unwrap()).await;
    assert_eq!(s.text(), PROMPT, "all content arrived");
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.finish_chunks(), 1, "the finish reason ends the answer");
    assert!(s.chunks.last().unwrap().usage.is_some(), "with its usage");

    let s = collect(
        stream(&client, "error-after-2", &request(PROMPT))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s.text(), "one two ");
    let e = s.error.clone().unwrap();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::Server, Some("server_error"))
    );

    let e = complete(&client, "malformed-after-1", &request(PROMPT))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Connect);
    assert_eq!(upstream.total_requests(), 4);
}

#[tokio::test]
async fn error_rate_fail_first_and_counts() {
    crate::support::init_tracing();
    let (upstream, client) = setup().await;
    let mut failures = 0;
    for _ in 0..100 {
        if let Err(e) = complete(&client, "error-rate-50", &request("hi")).await {
            assert_eq!(e.class, ErrorClass::Server);
            failures += 1;
        }
    }
    assert!((30..=70).contains(&failures), "{failures} failures of 100");
    assert_eq!(upstream.requests("error-rate-50"), 100);

    for attempt in 1..=3 {
        let result = complete(&client, "fail-first-2", &request("hi")).await;
        assert_eq!(result.is_ok(), attempt == 3, "attempt {attempt}");
    }
    assert_eq!(upstream.requests("fail-first-2"), 3);
}

#[tokio::test(start_paused = true)]
async fn primary_failing_for_a_while_recovers() {
    crate::support::init_tracing();
    let (upstream, client) = setup().await;
    let e = complete(&client, "fail-for-10s", &request("hi"))
        .await
        .unwrap_err();
    assert_eq!((e.class, e.status), (ErrorClass::Server, Some(503)));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        complete(&client, "fail-for-10s", &request("hi"))
            .await
            .is_ok()
    );
    assert_eq!(upstream.requests("fail-for-10s"), 2);
}

#[tokio::test]
async fn extra_fields_are_forwarded_and_usage_requested() {
    crate::support::init_tracing();
    let (upstream, client) = setup().await;
    let mut req = request("hi");
    req.extra = vec![
        ("user".into(), RawJson::new(r#""u-42""#)),
        (
            "response_format".into(),
            RawJson::new(r#"{"type":"json_object"}"#),
        ),
    ];
    collect(stream(&client, "gpt-test", &req).await.unwrap()).await;
    let body: serde_json::Value =
        serde_json::from_slice(&upstream.last_request().unwrap()).unwrap();
    assert_eq!(body["user"], "u-42");
    assert_eq!(body["response_format"]["type"], "json_object");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["model"], "gpt-test");
}

#[tokio::test]
async fn probe_lists_models_and_reports_failures() {
    crate::support::init_tracing();
    let (upstream, client) = setup().await;
    client.probe(&instance()).await.unwrap();
    assert_eq!(upstream.model_list_requests(), 1);
    assert_eq!(upstream.total_requests(), 0, "probes are not chat traffic");

    let options = FakeUpstreamOptions {
        faults: Faults::parse("fail-503").unwrap(),
        ..FakeUpstreamOptions::default()
    };
    let down = FakeUpstream::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let client = crate::support::client(ProviderKind::Openai, &down.base_url());
    let e = client.probe(&instance()).await.unwrap_err();
    assert_eq!((e.class, e.status), (ErrorClass::Server, Some(503)));
    down.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn graceful_stop_ends_stalled_streams_and_frees_the_port() {
    crate::support::init_tracing();
    let options = FakeUpstreamOptions {
        shutdown_grace: Duration::from_millis(50),
        ..FakeUpstreamOptions::default()
    };
    let upstream = FakeUpstream::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let addr = upstream.local_addr();
    let client = client(ProviderKind::Openai, &upstream.base_url());
    let mut s = stream(&client, "stall-after-1", &request(PROMPT))
        .await
        .unwrap();
    s.next().await.unwrap().unwrap();
    upstream.stop().await;
    let rest = collect(s).await;
    assert!(
        rest.error.is_some(),
        "a stopped server cuts the stalled stream"
    );
    std::net::TcpListener::bind(addr).expect("the port is free after stop");
}
