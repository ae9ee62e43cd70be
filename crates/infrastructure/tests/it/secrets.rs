//! A canary key never shows up in errors, their Debug forms, or trace-level logs.

use std::time::Duration;

use echelon_domain::spec::ProviderKind;
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions};
use echelon_infrastructure::provider::ProviderClient;

use crate::support::{CANARY, Canned, Recorder, collect, complete, request, spec, stream};

#[tokio::test]
async fn canary_key_never_leaks() {
    crate::support::init_tracing();
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let mut spec = spec(ProviderKind::Openai, &upstream.base_url());
    spec.request_timeout = Duration::from_secs(5);
    let client = ProviderClient::from_spec(&spec).unwrap();
    let mut texts = vec![format!("{client:?}"), format!("{spec:?}")];

    for model in [
        "fail-401",
        "leak-key",
        "fail-500",
        "reset",
        "context-length",
        "429-retry-1",
    ] {
        let e = complete(&client, model, &request("hi")).await.unwrap_err();
        if model == "leak-key" {
            assert!(e.message.contains("[redacted]"), "{e}");
        }
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
    }
    for model in ["cut-after-1", "malformed-after-1", "end-after-1"] {
        let s = collect(stream(&client, model, &request("a b c")).await.unwrap()).await;
        let e = s.error.unwrap();
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
    }
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut spec = spec.clone();
        spec.base_url = format!("http://{addr}/v1?key={CANARY}");
        ProviderClient::from_spec(&spec).unwrap()
    };
    let e = complete(&refused, "m", &request("hi")).await.unwrap_err();
    texts.push(e.to_string());
    texts.push(format!("{e:?}"));

    // Gemini: the key goes in a header, never in the URL.
    let server = Recorder::start(Canned::json(
        401,
        br#"{"error":{"code":401,"message":"no","status":"UNAUTHENTICATED"}}"#.to_vec(),
    ))
    .await;
    let gemini = ProviderClient::from_spec(&crate::support::spec(
        ProviderKind::Gemini,
        &server.root(ProviderKind::Gemini),
    ))
    .unwrap();
    let e = complete(&gemini, "gemini-2.5-flash", &request("hi"))
        .await
        .unwrap_err();
    texts.push(e.to_string());
    let seen = server.only();
    assert!(!seen.path_and_query.contains(CANARY));
    assert_eq!(seen.headers["x-goog-api-key"], CANARY);

    // Every test of this binary logs through the same TRACE subscriber; none may show the key.
    let logs = crate::support::logs().contents();
    assert!(
        logs.contains("upstream answered"),
        "logs were captured: {logs}"
    );
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"));
    assert!(!logs.contains(CANARY), "canary in logs:\n{logs}");
    assert!(
        !logs.contains("?key="),
        "query strings are not logged:\n{logs}"
    );
    for text in texts {
        assert!(!text.contains(CANARY), "canary in: {text}");
    }
}
