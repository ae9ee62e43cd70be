//! The HTTP server's limits over real sockets: unfinished heads, idle keep-alive connections,
//! slow bodies, oversized heads and the connection cap, and a drain with many requests in
//! flight. Timeouts are configured short so the tests are fast; every wait on a socket has a
//! generous bound, so a loaded machine only makes them slower.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::write;
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions};
use echelon_infrastructure::metrics::{ConnectionTimeout, Metrics};
use echelon_interfaces::app::{self, BuildOptions};
use echelon_interfaces::http::{self, ConnectionLimits, RunningServer, ServerOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single socket wait may take before the test fails.
const SOCKET_WAIT: Duration = Duration::from_secs(30);

struct Gateway {
    server: RunningServer,
    upstream: FakeUpstream,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start(limits: ConnectionLimits, shutdown_grace: Duration) -> Gateway {
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "gateway.toml",
        "[server]\nrequest_timeout = \"20s\"\n",
    );
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nhot_reload = false\n",
    );
    write(
        root,
        "llms/providers/primary.toml",
        &format!(
            "kind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-limits\"\n\n\
             [models.ok]\nupstream = \"ok\"\n\n[models.slow]\nupstream = \"latency-1500ms\"\n",
            upstream.base_url()
        ),
    );
    let config = app::load(root).unwrap_or_else(|report| panic!("{report}"));
    let components = app::build(root, config, BuildOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = http::start(
        listener,
        &components,
        ServerOptions {
            max_body_size: 64 * 1024,
            shutdown_grace,
            limits,
            tls: None,
        },
        std::future::pending(),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .timeout(SOCKET_WAIT)
        .build()
        .unwrap();
    Gateway {
        server,
        upstream,
        client,
        _dir: dir,
    }
}

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_secs(20),
        body_read_timeout: Duration::from_millis(800),
        max_header_size: 8 * 1024,
        max_connections: 1024,
    }
}

impl Gateway {
    fn metrics(&self) -> &Arc<Metrics> {
        &self.server.state.metrics
    }

    async fn chat(&self, model: &str) -> (u16, String) {
        chat(&self.client, self.server.addr, model).await
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.server.addr).await.unwrap()
    }

    fn in_flight(&self) -> u32 {
        let snapshot = self.server.state.gateway.snapshot();
        snapshot
            .models
            .iter()
            .chain(&snapshot.pools)
            .flat_map(|p| &p.members)
            .map(|m| m.instance.in_flight)
            .sum()
    }
}

async fn chat(client: &reqwest::Client, addr: std::net::SocketAddr, model: &str) -> (u16, String) {
    let response = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Reads until the server closes the connection; the bytes it sent before closing.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        match tokio::time::timeout(SOCKET_WAIT, stream.read(&mut buf))
            .await
            .expect("the server closes the connection")
        {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits until `condition` holds, polling; fails after [`SOCKET_WAIT`].
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + SOCKET_WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_unfinished_heads_are_all_closed_while_requests_are_served() {
    let gw = start(limits(), Duration::from_secs(1)).await;
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..500 {
        let mut stream = gw.connect().await;
        stream
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-")
            .await
            .unwrap();
        held.push(stream);
    }
    // Normal clients are served while the 500 hold their connections.
    for _ in 0..5 {
        let (status, body) = gw.chat("primary/ok").await;
        assert_eq!(status, 200, "{body}");
    }
    let closers = held
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { read_to_close(&mut stream).await }));
    for closer in closers {
        let answer = closer.await.unwrap();
        assert!(answer.is_empty(), "closed without an answer: {answer:?}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(40),
        "all 500 closed within 40 s (took {elapsed:?})"
    );
    let connections = gw.metrics().connections();
    assert_eq!(connections.timed_out_total(ConnectionTimeout::Header), 500);
    let (status, _) = gw.chat("primary/ok").await;
    assert_eq!(status, 200, "still serving after the flood");
    let exposition = gw.server.state.metrics.render(None);
    assert!(
        exposition.contains("echelon_http_connections_timed_out_total{phase=\"header\"} 500"),
        "{exposition}"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout_and_busy_ones_are_not() {
    let gw = start(
        ConnectionLimits {
            idle_timeout: Duration::from_millis(600),
            ..limits()
        },
        Duration::from_secs(1),
    )
    .await;
    // A request that takes longer than the idle timeout is not cut by it.
    let (status, body) = gw.chat("primary/slow").await;
    assert_eq!(status, 200, "{body}");

    // Silent from the start.
    let mut silent = gw.connect().await;
    // One request, then quiet: a keep-alive connection.
    let mut kept = gw.connect().await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0_u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    read_to_close(&mut kept).await;
    assert!(read_to_close(&mut silent).await.is_empty());
    let connections = gw.metrics().connections();
    // The client's own pooled connection may have idled out too.
    assert!(connections.timed_out_total(ConnectionTimeout::Idle) >= 2);
    assert_eq!(connections.timed_out_total(ConnectionTimeout::Header), 0);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let gw = start(limits(), Duration::from_secs(1)).await;
    let mut stream = gw.connect().await;
    stream
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut stream).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let error: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(error["error"]["code"], "request_timeout");
    assert_eq!(
        gw.metrics()
            .connections()
            .timed_out_total(ConnectionTimeout::Body),
        1
    );
}

#[tokio::test]
async fn a_head_over_the_size_limit_is_answered_431() {
    let gw = start(limits(), Duration::from_secs(1)).await;
    let mut stream = gw.connect().await;
    let big = "a".repeat(9 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nhost: gateway\r\nx-big: {big}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = String::from_utf8(read_to_close(&mut stream).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // A head just under the limit is served.
    let mut stream = gw.connect().await;
    let fits = "a".repeat(7 * 1024);
    let request = format!(
        "GET /healthz HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\nx-big: {fits}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = String::from_utf8(read_to_close(&mut stream).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_with_503_and_a_freed_slot_is_reused() {
    let gw = start(
        ConnectionLimits {
            max_connections: 3,
            ..limits()
        },
        Duration::from_secs(1),
    )
    .await;
    let connections = gw.metrics().connections();
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = gw.connect().await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0_u8; 12];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        open.push(stream);
    }
    assert_eq!(connections.open_now(), 3);
    let mut refused = gw.connect().await;
    let answer = String::from_utf8(read_to_close(&mut refused).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    assert_eq!(connections.refused_total(), 1);

    drop(open.pop());
    eventually("the closed connection's slot is free", || {
        connections.open_now() == 2
    })
    .await;
    let mut again = gw.connect().await;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut again).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(connections.refused_total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_sixty_requests_in_flight_before_it_returns() {
    const IN_FLIGHT: usize = 60;
    let gw = start(limits(), Duration::from_secs(20)).await;
    let addr = gw.server.addr;
    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let client = gw.client.clone();
            tokio::spawn(async move { chat(&client, addr, "primary/slow").await })
        })
        .collect();
    eventually("every request has reached the upstream", || {
        gw.upstream.requests("latency-1500ms") == IN_FLIGHT as u64
    })
    .await;
    assert_eq!(gw.in_flight() as usize, IN_FLIGHT);
    let state = Arc::clone(&gw.server.state);
    let (server, upstream) = (gw.server, gw.upstream);
    let shutdown = tokio::spawn(server.shutdown());
    eventually("readiness fails", || {
        state.draining.load(std::sync::atomic::Ordering::Acquire)
    })
    .await;
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    tokio::time::timeout(SOCKET_WAIT, shutdown)
        .await
        .expect("the drain ends once the requests are done")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
    let snapshot = state.gateway.snapshot();
    let in_flight: u32 = snapshot
        .models
        .iter()
        .flat_map(|p| &p.members)
        .map(|m| m.instance.in_flight)
        .sum();
    assert_eq!(in_flight, 0);
    assert_eq!(state.metrics.connections().open_now(), 0);
    drop(upstream);
}
