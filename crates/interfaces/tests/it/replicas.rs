//! Three `echelon serve` processes sharing one real `redis-server`, in front of one fake
//! upstream: the fleet admits what one replica would, a 429 seen by one replica stops all three,
//! and a paused Redis (SIGSTOP) neither stops nor slows any answer, and sharing comes back after
//! SIGCONT.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::write;
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions};
use echelon_test_support::redis_server::RedisServer;
use serde_json::json;

/// `echelon serve`, killed by its PID when dropped.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The configuration every replica runs: one key with a 60 rpm limit, one that always answers
/// 429 with `Retry-After: 4` (twice, for two rounds), and one without limits.
fn tree(upstream: &FakeUpstream, redis: &RedisServer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "gateway.toml",
        &format!(
            "[state]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"replicas-test\"\nreplicas = 3\ntimeout = \"200ms\"\nretry_interval = \"500ms\"\n",
            redis.url()
        ),
    );
    write(
        root,
        "llms/_registry.toml",
        "[registry]\nversion = 1\n\n[global]\nhot_reload = false\n\n[route_defaults]\nretry_after_max_wait = \"0s\"\nmax_retries = 0\n",
    );
    write(
        root,
        "llms/providers/up.toml",
        &format!(
            "kind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-replicas\"\n\n[models.limited]\nrpm_limit = 60\n\n[models.cool]\nupstream = \"cool+429-retry-4\"\n\n[models.cool2]\nupstream = \"cool2+429-retry-4\"\n\n[models.free]\n",
            upstream.base_url()
        ),
    );
    dir
}

fn start_replica(config: &std::path::Path) -> Replica {
    let addr = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_echelon"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the echelon binary runs");
    Replica { child, addr }
}

async fn chat(client: &reqwest::Client, addr: SocketAddr, model: &str) -> u16 {
    client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn metrics(client: &reqwest::Client, addr: SocketAddr) -> String {
    match client.get(format!("http://{addr}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until every replica's metrics show the shared state in `mode`.
async fn wait_for_mode(
    client: &reqwest::Client,
    replicas: &[Replica],
    mode: &str,
    within: Duration,
) {
    let line = format!("echelon_shared_state_mode{{mode=\"{mode}\"}} 1");
    let started = Instant::now();
    for replica in replicas {
        while !metrics(client, replica.addr).await.contains(&line) {
            assert!(
                started.elapsed() < within,
                "replica {} not in mode {mode} within {within:?}",
                replica.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One 429 through `first`, then every other replica refuses the key without calling it.
async fn cooldown_is_shared(
    client: &reqwest::Client,
    upstream: &FakeUpstream,
    replicas: &[Replica],
    first: usize,
    model: &str,
) {
    let upstream_name = format!("{model}+429-retry-4");
    let before = upstream.requests(&upstream_name);
    let started = Instant::now();
    assert_eq!(
        chat(client, replicas[first].addr, &format!("up/{model}")).await,
        429
    );
    assert_eq!(upstream.requests(&upstream_name), before + 1);
    // A few sync intervals for the others to learn it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (i, replica) in replicas.iter().enumerate() {
        for _ in 0..3 {
            assert_eq!(
                chat(client, replica.addr, &format!("up/{model}")).await,
                429,
                "replica {i}"
            );
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the check ran past the deadline ({:?}); it proves nothing",
        started.elapsed()
    );
    assert_eq!(
        upstream.requests(&upstream_name),
        before + 1,
        "a replica sent to the key while the fleet's cooldown ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_limits_cooldowns_and_survive_a_paused_redis() {
    echelon_infrastructure::http_client::install_crypto_provider();
    let redis = RedisServer::start();
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let dir = tree(&upstream, &redis);
    let replicas: Vec<Replica> = (0..3).map(|_| start_replica(dir.path())).collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for replica in &replicas {
        let started = Instant::now();
        while chat(&client, replica.addr, "up/free").await != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "replica never served"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    wait_for_mode(&client, &replicas, "shared", Duration::from_secs(30)).await;

    // 1. Budgets: two clients per replica for four seconds against one key of 60 rpm. One
    // replica alone admits its full bucket (60) plus one a second; three replicas counting on
    // their own would admit three times that.
    let started = Instant::now();
    let answered = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for replica in &replicas {
        for _ in 0..2 {
            let (client, addr, answered) = (client.clone(), replica.addr, Arc::clone(&answered));
            workers.push(tokio::spawn(async move {
                while started.elapsed() < Duration::from_secs(4) {
                    let status = chat(&client, addr, "up/limited").await;
                    assert!(status == 200 || status == 429, "answered {status}");
                    answered.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = upstream.requests("limited");
    let single = 60.0 + elapsed;
    eprintln!(
        "budget: {admitted} of {} requests reached the upstream in {elapsed:.1}s; one replica admits {single:.0}",
        answered.load(Ordering::Relaxed)
    );
    assert!(
        (admitted as f64) >= 0.95 * 60.0 && (admitted as f64) <= 1.05 * single + 1.0,
        "the fleet admitted {admitted}, one replica admits {single:.0}"
    );

    // 2. A 429 with Retry-After seen by one replica stops all three until the deadline.
    cooldown_is_shared(&client, &upstream, &replicas, 0, "cool").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = upstream.requests("cool+429-retry-4");
    assert_eq!(chat(&client, replicas[1].addr, "up/cool").await, 429);
    assert_eq!(
        upstream.requests("cool+429-retry-4"),
        before + 1,
        "the key is back after the deadline"
    );

    // 3. Redis paused: every request is answered, none waits a second for Redis.
    redis.pause();
    let paused = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut answers = 0;
    while paused.elapsed() < Duration::from_secs(3) {
        for replica in &replicas {
            for model in ["up/free", "up/limited"] {
                let asked = Instant::now();
                let status = chat(&client, replica.addr, model).await;
                slowest = slowest.max(asked.elapsed());
                assert!(
                    status == 200 || status == 429,
                    "{model} answered {status} while Redis was paused"
                );
                answers += 1;
            }
        }
    }
    eprintln!("paused: {answers} answers, the slowest in {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a request waited {slowest:?}"
    );
    wait_for_mode(&client, &replicas, "fallback", Duration::from_secs(10)).await;
    assert_eq!(chat(&client, replicas[2].addr, "up/free").await, 200);
    // The mode is in the admin API and in `echelon status`.
    let status: serde_json::Value = serde_json::from_str(
        &client
            .get(format!("http://{}/admin/status", replicas[0].addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["shared_state"]["backend"], "redis", "{status}");
    assert_eq!(status["shared_state"]["mode"], "fallback", "{status}");
    let url = format!("http://{}", replicas[0].addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_echelon"))
            .args(["status", "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("shared state: redis, falling back to local state"),
        "{text}"
    );

    // 4. Redis resumed: sharing is back within 30 s, and with it the fleet's cooldowns.
    redis.resume();
    let resumed = Instant::now();
    wait_for_mode(&client, &replicas, "shared", Duration::from_secs(30)).await;
    eprintln!("resumed: sharing back in {:?}", resumed.elapsed());
    cooldown_is_shared(&client, &upstream, &replicas, 2, "cool2").await;
}
