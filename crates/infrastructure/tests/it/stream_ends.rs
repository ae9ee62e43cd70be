//! How a stream ends, for every provider kind, over real sockets against the fake upstream
//! speaking that kind's dialect: a clean close after the final chunk is a complete answer with
//! or without the end marker; a close before it, or a malformed chunk, is an explicit error and
//! never a finish reason.

use echelon_domain::chat::FinishReason;
use echelon_domain::error::ErrorClass;
use echelon_domain::spec::ProviderKind;
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions};
use echelon_infrastructure::provider::ProviderClient;

use crate::support::{Collected, client, collect, request, stream};

const PROMPT: &str = "one two three four five";
const KINDS: [ProviderKind; 3] = [
    ProviderKind::Openai,
    ProviderKind::Anthropic,
    ProviderKind::Gemini,
];

async fn fake() -> FakeUpstream {
    FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap()
}

/// A client of `kind` pointed at the fake, at the API root that kind's config would normalise to.
fn client_of(kind: ProviderKind, upstream: &FakeUpstream) -> ProviderClient {
    let base = upstream.base_url();
    let root = match kind {
        ProviderKind::Gemini => base.replace("/v1", "/v1beta"),
        _ => base,
    };
    client(kind, &root)
}

/// The upstream model name of a kind with faults: `+` joins them, `__` in a Gemini name (which
/// cannot hold `+`); the fake counts either under the `+` form.
fn named(kind: ProviderKind, faults: &str) -> String {
    let name = format!("{kind:?}+{faults}");
    match kind {
        ProviderKind::Gemini => name.replace('+', "__"),
        _ => name,
    }
}

async fn run(kind: ProviderKind, upstream: &FakeUpstream, faults: &str) -> Collected {
    let client = client_of(kind, upstream);
    let name = named(kind, faults);
    let model = &format!("{kind:?}+{faults}");
    let s = collect(stream(&client, &name, &request(PROMPT)).await.unwrap()).await;
    assert_eq!(upstream.requests(model), 1, "{kind:?} {model}: one request");
    assert_eq!(
        s.items_after_error, 0,
        "{kind:?} {model}: nothing after an error"
    );
    s
}

fn assert_complete(kind: ProviderKind, faults: &str, s: &Collected) {
    assert!(s.error.is_none(), "{kind:?} {faults}: {:?}", s.error);
    assert_eq!(s.text(), PROMPT, "{kind:?} {faults}");
    assert_eq!(s.finish_chunks(), 1, "{kind:?} {faults}: one finish chunk");
    let finish = s.chunks.iter().find(|c| c.finish_reason.is_some()).unwrap();
    assert_eq!(
        finish.finish_reason,
        Some(FinishReason::Stop),
        "{kind:?} {faults}"
    );
    // The usage comes with the finish chunk (Anthropic, Gemini) or on a chunk of its own after
    // it, as the OpenAI-compatible upstream sent it.
    let usage = s
        .chunks
        .last()
        .and_then(|c| c.usage)
        .unwrap_or_else(|| panic!("{kind:?} {faults}: usage last"));
    assert!(usage.output_tokens > 0, "{kind:?} {faults}: {usage:?}");
}

fn assert_cut(kind: ProviderKind, faults: &str, s: &Collected, text: &str, what: &str) {
    assert_eq!(s.text(), text, "{kind:?} {faults}");
    let e = s
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("{kind:?} {faults}: an error"));
    assert_eq!(e.class, ErrorClass::Connect, "{kind:?} {faults}: {e}");
    assert!(e.message.contains(what), "{kind:?} {faults}: {e}");
    assert_eq!(
        s.finish_chunks(),
        0,
        "{kind:?} {faults}: never a finish reason"
    );
}

#[tokio::test]
async fn a_clean_close_after_the_final_chunk_is_complete_for_every_kind() {
    crate::support::init_tracing();
    let upstream = fake().await;
    for kind in KINDS {
        let faults = "ok";
        assert_complete(kind, faults, &run(kind, &upstream, faults).await);
        // No `[DONE]` / `message_stop` (Gemini never sends one): still the whole answer.
        let faults = "no-done";
        assert_complete(kind, faults, &run(kind, &upstream, faults).await);
    }
    upstream.stop().await;
}

#[tokio::test]
async fn a_close_before_the_final_chunk_is_a_cut_for_every_kind() {
    crate::support::init_tracing();
    let upstream = fake().await;
    for kind in KINDS {
        // The connection aborted mid-body.
        let faults = "cut-after-2";
        let s = run(kind, &upstream, faults).await;
        assert_cut(kind, faults, &s, "one two ", "");
        // A clean close in the middle, and after every word but before the final chunk: both
        // are cuts.
        let faults = "end-after-2";
        let s = run(kind, &upstream, faults).await;
        assert_cut(kind, faults, &s, "one two ", "incomplete");
        let faults = "end-after-5";
        let s = run(kind, &upstream, faults).await;
        assert_cut(kind, faults, &s, PROMPT, "incomplete");
    }
    upstream.stop().await;
}

#[tokio::test]
async fn a_malformed_chunk_ends_the_stream_with_an_error_for_every_kind() {
    crate::support::init_tracing();
    let upstream = fake().await;
    for kind in KINDS {
        let faults = "malformed-after-2";
        let s = run(kind, &upstream, faults).await;
        // Neither dropped (the words after it never show up) nor forwarded (no garbage text).
        assert_cut(kind, faults, &s, "one two ", "malformed");
    }
    upstream.stop().await;
}

#[tokio::test]
async fn an_error_event_mid_stream_is_classified_for_every_kind() {
    crate::support::init_tracing();
    let upstream = fake().await;
    for kind in KINDS {
        let faults = "error-after-1";
        let s = run(kind, &upstream, faults).await;
        assert_eq!(s.text(), "one ", "{kind:?}");
        let e = s
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{kind:?}: an error"));
        assert_eq!(e.class, ErrorClass::Server, "{kind:?}: {e}");
        assert_eq!(s.finish_chunks(), 0, "{kind:?}");
    }
    upstream.stop().await;
}
