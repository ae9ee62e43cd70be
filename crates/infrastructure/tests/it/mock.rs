//! The in-process mock provider: echo, fixed replies, latency, seeded failures, streaming.

use std::time::Duration;

use echelon_domain::chat::{FinishReason, Role};
use echelon_domain::error::ErrorClass;
use echelon_domain::ports::ChatBackend as _;
use echelon_domain::spec::{MockBehaviour, ProviderKind};
use echelon_infrastructure::provider::ProviderClient;

use crate::support::{collect, complete, instance, request, spec, stream};

fn mock(behaviour: MockBehaviour) -> ProviderClient {
    let mut spec = spec(ProviderKind::Mock, "http://unused.invalid");
    spec.mock = Some(behaviour);
    ProviderClient::from_spec(&spec).unwrap()
}

#[tokio::test]
async fn echoes_or_replies_with_usage() {
    crate::support::init_tracing();
    let echo = mock(MockBehaviour::default());
    let r = complete(&echo, "mock-1", &request("hello there mock"))
        .await
        .unwrap();
    assert_eq!(r.message.joined_text(), "hello there mock");
    assert_eq!(&*r.model, "mock-1");
    let usage = r.usage.unwrap();
    assert_eq!(usage.output_tokens, 4, "16 characters, four a token");
    assert!(usage.input_tokens > 0);

    let fixed = mock(MockBehaviour {
        reply: Some("fixed answer".into()),
        ..MockBehaviour::default()
    });
    let r = complete(&fixed, "m", &request("anything")).await.unwrap();
    assert_eq!(r.message.joined_text(), "fixed answer");
    assert_eq!(r.finish_reason, Some(FinishReason::Stop));

    let mut short = request("a rather long message that will not fit");
    short.params.max_tokens = Some(2);
    let r = complete(&echo, "m", &short).await.unwrap();
    assert_eq!(r.message.joined_text(), "a rather");
    assert_eq!(r.finish_reason, Some(FinishReason::Length));
}

#[tokio::test(start_paused = true)]
async fn latency_runs_on_the_tokio_clock() {
    crate::support::init_tracing();
    let slow = mock(MockBehaviour {
        latency: Duration::from_secs(3),
        ..MockBehaviour::default()
    });
    let started = tokio::time::Instant::now();
    complete(&slow, "m", &request("hi")).await.unwrap();
    assert_eq!(started.elapsed().as_secs(), 3);
    slow.probe(&instance()).await.unwrap();
    assert_eq!(started.elapsed().as_secs(), 6);
}

#[tokio::test]
async fn failures_are_seeded_and_reproducible() {
    crate::support::init_tracing();
    let run = || async {
        let flaky = mock(MockBehaviour {
            error_rate: 0.5,
            ..MockBehaviour::default()
        });
        let mut outcomes = Vec::new();
        for _ in 0..1000 {
            match complete(&flaky, "m", &request("hi")).await {
                Ok(_) => outcomes.push(true),
                Err(e) => {
                    assert_eq!((e.class, e.status), (ErrorClass::Server, Some(500)));
                    outcomes.push(false);
                }
            }
        }
        outcomes
    };
    let first = run().await;
    assert_eq!(first, run().await, "same provider name, same failures");
    let failures = first.iter().filter(|ok| !**ok).count();
    assert!((400..=600).contains(&failures), "{failures} of 1000");

    let dead = mock(MockBehaviour {
        error_rate: 1.0,
        ..MockBehaviour::default()
    });
    assert!(
        dead.probe(&instance()).await.is_err(),
        "a dead mock fails its probe"
    );
}

#[tokio::test]
async fn stream_has_role_words_and_a_final_chunk() {
    crate::support::init_tracing();
    let client = mock(MockBehaviour::default());
    let text = "one two three four five six seven eight nine ten eleven twelve";
    let s = collect(stream(&client, "m", &request(text)).await.unwrap()).await;
    assert!(s.error.is_none());
    assert_eq!(s.chunks[0].role, Some(Role::Assistant));
    assert_eq!(s.text(), text);
    let content_chunks = s.chunks.iter().filter(|c| c.has_content()).count();
    assert!((2..=8).contains(&content_chunks), "{content_chunks}");
    let last = s.chunks.last().unwrap();
    assert_eq!(last.finish_reason, Some(FinishReason::Stop));
    assert!(last.usage.is_some());
    assert_eq!(s.finish_chunks(), 1);
}
