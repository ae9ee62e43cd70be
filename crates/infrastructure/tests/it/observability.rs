//! Observability end to end: the span tree of a request with a failover, the Prometheus
//! exposition and its cardinality bound, health probes against the fake upstream, and alerts
//! fired, de-duplicated and resolved to a webhook receiver on 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use echelon_application::alerts::{
    AlertCondition, AlertEngine, AlertEngineOptions, AlertLevel, AlertMetric, AlertNotifier,
    AlertRule, AlertRules, AlertStatus, Comparison, LogNotifier, Notifiers, ReadingSource,
    SnapshotReadings,
};
use echelon_application::gateway::{EngineOptions, Gateway};
use echelon_application::health_check::{HealthCheckOptions, HealthChecker, ProbeResult};
use echelon_application::history::{EventHistory, HistoryEntry};
use echelon_domain::chat::{ChatRequest, Message, Role};
use echelon_domain::events::{EventSink, FanOut};
use echelon_domain::health::HealthState;
use echelon_domain::random::SplitMix64;
use echelon_domain::routing::{RouteDefaults, TableOptions};
use echelon_domain::secret::Secret;
use echelon_domain::spec::{
    HealthCheckSpec, HealthPolicy, Limits, ModelSpec, ProbeKind, ProviderKind, ProviderSpec,
    RotationStrategy, Topology,
};
use echelon_domain::time::{Clock, Instant};
use echelon_fake_upstream::{FakeUpstream, FakeUpstreamOptions, Faults};
use echelon_infrastructure::backend_factory::ProviderBackends;
use echelon_infrastructure::metrics::{LiveView, Metrics, MetricsOptions, UNKNOWN_ROUTE};
use echelon_infrastructure::telemetry::{ExportOptions, SpanEvents, tracer_provider};
use echelon_infrastructure::webhook::{WebhookNotifier, WebhookOptions};
use echelon_test_support as spec;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use opentelemetry::trace::{Status, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::support::CANARY;

const SECOND_KEY: &str = "sk-second-key-0b1d2e3f4a5c";

fn topology(base_url: &str, upstream_model: &str, check: HealthCheckSpec) -> Topology {
    let mut t = Topology::default();
    let provider = ProviderSpec {
        kind: ProviderKind::Openai,
        base_url: base_url.to_owned(),
        api_keys: vec![Secret::new(CANARY), Secret::new(SECOND_KEY)],
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        ..spec::provider("acme", 2)
    };
    t.providers.insert(provider.name.clone(), provider);
    let model = ModelSpec {
        limits: Limits {
            max_concurrency: Some(4),
            ..Limits::default()
        },
        ..spec::model("acme/model", upstream_model, None)
    };
    let instances = (0..2).map(|k| spec::instance(&model, k, 1)).collect();
    t.models.insert(model.model.clone(), model);
    let mut pool = spec::pool("main", RotationStrategy::RoundRobin, instances);
    pool.health = HealthPolicy {
        failure_threshold: 2,
        success_threshold: 1,
        recovery_time: Duration::from_millis(50),
    };
    pool.health_check = check;
    pool.fallback.max_instance_attempts = 2;
    t.pools.insert(pool.name.clone(), pool);
    t
}

fn check() -> HealthCheckSpec {
    HealthCheckSpec {
        enabled: true,
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(2),
        probe: ProbeKind::Models,
    }
}

fn gateway(mut topology: Topology, sink: Arc<dyn EventSink>) -> Arc<Gateway> {
    topology.route_defaults = RouteDefaults {
        retry_delay: Duration::from_millis(1),
        max_retries: 0,
        ..RouteDefaults::default()
    };
    let options = EngineOptions {
        table: TableOptions {
            sink,
            ..TableOptions::default()
        },
        ..EngineOptions::default()
    };
    Arc::new(
        Gateway::new(
            topology,
            Arc::new(ProviderBackends),
            Arc::new(SplitMix64::new(3)),
            options,
        )
        .unwrap(),
    )
}

fn request() -> ChatRequest {
    ChatRequest::new(vec![Message::text(Role::User, "hello there")])
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> String {
    attribute(span, key)
        .map(Value::to_string)
        .unwrap_or_default()
}

#[tokio::test]
async fn one_request_span_with_one_child_per_attempt_and_no_secrets() {
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    // The first request of this model name fails with a 500; the failover to the second key
    // answers.
    let gateway = gateway(
        topology(&upstream.base_url(), "fail-first-1", check()),
        Arc::new(SpanEvents),
    );
    let exporter = InMemorySpanExporter::default();
    let (provider, stats, flusher) = tracer_provider(
        Some(exporter.clone()),
        "echelon-test",
        ExportOptions::default(),
    );
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let guard = tracing::subscriber::set_default(subscriber);
    let served = gateway.complete("pool:main", request()).await.unwrap();
    drop(guard);
    assert_eq!(served.attempts.len(), 2);
    assert!(flusher.unwrap().flush(Duration::from_secs(5)).await);

    let spans = exporter.get_finished_spans().unwrap();
    let requests: Vec<_> = spans.iter().filter(|s| s.name == "chat").collect();
    let attempts: Vec<_> = spans.iter().filter(|s| s.name == "chat attempt").collect();
    assert_eq!(requests.len(), 1, "{spans:#?}");
    assert_eq!(attempts.len(), 2);
    assert_eq!(spans.len(), 3, "no other spans");
    let root = requests[0];
    let trace = root.span_context.trace_id();
    assert_eq!(root.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    for a in &attempts {
        assert_eq!(a.span_context.trace_id(), trace, "no orphan attempt");
        assert_eq!(a.parent_span_id, root.span_context.span_id());
        assert_eq!(text(a, "gen_ai.system"), "acme");
        assert_eq!(text(a, "gen_ai.request.model"), "fail-first-1");
    }
    let mut attempts = attempts;
    attempts.sort_by_key(|a| attribute(a, "echelon.attempt").map(Value::to_string));
    let (failed, answered) = (attempts[0], attempts[1]);
    assert!(
        matches!(failed.status, Status::Error { .. }),
        "{:?}",
        failed.status
    );
    assert_eq!(text(failed, "error.type"), "server");
    assert_eq!(text(failed, "http.response.status_code"), "500");
    assert_eq!(answered.status, Status::Ok);
    assert_eq!(text(answered, "gen_ai.response.model"), "fail-first-1");
    assert!(attribute(answered, "gen_ai.usage.input_tokens").is_some());
    assert!(attribute(answered, "gen_ai.usage.output_tokens").is_some());
    assert_eq!(root.status, Status::Ok);
    assert_eq!(text(root, "gen_ai.request.model"), "pool:main");
    assert_eq!(text(root, "gen_ai.response.model"), "fail-first-1");
    assert_eq!(text(root, "echelon.attempts"), "2");
    // Routing events land on the request's span: the failed key turned degraded.
    let events: Vec<&str> = root.events.iter().map(|e| e.name.as_ref()).collect();
    assert!(events.contains(&"health transition"), "{events:?}");

    // No key anywhere: attributes, events, status messages.
    let everything = format!("{spans:?}");
    assert!(!everything.contains(CANARY) && !everything.contains(SECOND_KEY));
    assert_eq!(stats.exported(), 3);
    assert_eq!(stats.dropped(), 0);
    let _ = provider.shutdown();
    upstream.stop().await;
}

#[tokio::test]
async fn a_streamed_request_span_covers_the_whole_answer_and_carries_its_usage() {
    use futures_util::StreamExt as _;
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let gateway = gateway(
        topology(&upstream.base_url(), "chunks-8+chunk-delay-20ms", check()),
        Arc::new(SpanEvents),
    );
    let exporter = InMemorySpanExporter::default();
    let (provider, _stats, flusher) = tracer_provider(
        Some(exporter.clone()),
        "echelon-test",
        ExportOptions::default(),
    );
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let guard = tracing::subscriber::set_default(subscriber);
    let mut streamed = request();
    streamed.stream = true;
    let mut served = gateway.stream("pool:main", streamed).await.unwrap();
    let mut pieces = 0_u32;
    while let Some(event) = served.value.next().await {
        if matches!(&event, echelon_application::stream::StreamEvent::Chunk(c) if c.has_content()) {
            pieces += 1;
        }
    }
    drop(served);
    drop(guard);
    assert!(flusher.unwrap().flush(Duration::from_secs(5)).await);
    let spans = exporter.get_finished_spans().unwrap();
    let root = spans
        .iter()
        .find(|s| s.name == "chat")
        .expect("a request span");
    assert_eq!(root.status, Status::Ok);
    assert!(
        attribute(root, "gen_ai.usage.output_tokens").is_some(),
        "{root:#?}"
    );
    let lasted = root
        .end_time
        .duration_since(root.start_time)
        .unwrap_or_default();
    // The upstream waits 20 ms between content pieces, so the answer took at least that long
    // for each gap: a lower bound that machine load can only make longer. A span that ended
    // with the response head would last a fraction of it.
    assert!(
        pieces >= 4,
        "the fake upstream streams several pieces: {pieces}"
    );
    let answer_took = Duration::from_millis(20) * (pieces - 1);
    assert!(
        lasted >= answer_took,
        "the span ends with the stream: it lasted {lasted:?}, the answer at least {answer_took:?}"
    );
    let _ = provider.shutdown();
    upstream.stop().await;
}

/// An exporter that never answers: the collector is down and hangs.
#[derive(Debug)]
struct HungCollector;

impl opentelemetry_sdk::trace::SpanExporter for HungCollector {
    async fn export(&self, _batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_collector_drops_spans_instead_of_blocking() {
    let options = ExportOptions {
        queue: 8,
        batch: 4,
        interval: Duration::from_millis(10),
        timeout: Duration::from_secs(1),
    };
    let (provider, stats, _) = tracer_provider(Some(HungCollector), "echelon-test", options);
    let tracer = provider.tracer("test");
    let started = tokio::time::Instant::now();
    for i in 0..1_000 {
        use opentelemetry::trace::{Span as _, Tracer as _};
        let mut span = tracer.start(format!("span-{i}"));
        span.set_attribute(KeyValue::new("i", i64::from(i)));
        span.end();
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Ending a thousand spans took no time at all, collector or not.
    assert_eq!(started.elapsed(), Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        stats.dropped_queue_full() > 900,
        "{}",
        stats.dropped_queue_full()
    );
    assert!(
        stats.dropped_export_failed() >= 4,
        "timed-out batches are counted: {} failed, {} full",
        stats.dropped_export_failed(),
        stats.dropped_queue_full()
    );
    assert_eq!(stats.exported(), 0);
}

/// Samples of an exposition by series name: labels and value.
type Parsed = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

/// `name{labels} value` lines of an exposition, by metric name.
fn parse(exposition: &str) -> Parsed {
    let mut types = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad type line {line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} twice"
            );
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name {name}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no TYPE line");
        if types[family] == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        }
        let mut map = BTreeMap::new();
        if !labels.is_empty() {
            for pair in labels.split("\",") {
                let (k, v) = pair.split_once("=\"").unwrap();
                map.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
            }
        }
        out.entry(name.to_owned()).or_default().push((map, value));
    }
    out
}

fn value(parsed: &Parsed, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parsed.get(name)?.iter().find_map(|(l, v)| {
        labels
            .iter()
            .all(|(k, want)| l.get(*k).is_some_and(|got| got == want))
            .then_some(*v)
    })
}

#[tokio::test]
async fn exposition_has_every_family_with_config_labels_and_a_hard_cardinality_bound() {
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let metrics = Arc::new(Metrics::new(MetricsOptions {
        max_series_per_metric: 20,
    }));
    let gateway = gateway(
        topology(&upstream.base_url(), "fail-first-1", check()),
        metrics.clone(),
    );
    let served = gateway.complete("pool:main", request()).await.unwrap();
    metrics.record_request(
        "pool:main",
        200,
        None,
        Duration::from_millis(40),
        Some(Duration::from_millis(15)),
    );
    metrics.record_request(UNKNOWN_ROUTE, 404, None, Duration::from_micros(50), None);
    metrics.record_reload(false);
    metrics.record_reload(true);
    assert_eq!(served.attempts.len(), 2);

    let snapshot = gateway.snapshot();
    let live = LiveView {
        snapshot: &snapshot,
        now: gateway.clock().now(),
        generation: gateway.generation().number,
    };
    let text = metrics.render(Some(live));
    let parsed = parse(&text);
    for family in [
        "echelon_requests_total",
        "echelon_request_duration_seconds_bucket",
        "echelon_time_to_first_token_seconds_count",
        "echelon_attempts_total",
        "echelon_attempt_duration_seconds_sum",
        "echelon_health_transitions_total",
        "echelon_config_reloads_total",
        "echelon_config_last_reload_success",
        "echelon_config_generation",
        "echelon_instance_in_flight",
        "echelon_instance_health",
        "echelon_instance_breaker_state",
        "echelon_instance_cooldown_remaining_seconds",
        "echelon_instance_key_dead",
        "echelon_instance_available",
        "echelon_instance_limiter_saturation",
        "echelon_pool_instances",
        "echelon_metrics_label_overflow_total",
    ] {
        assert!(parsed.contains_key(family), "{family} missing from\n{text}");
    }
    let first = [("instance", "acme/model#0")];
    assert_eq!(
        value(
            &parsed,
            "echelon_attempts_total",
            &[first[0], ("outcome", "server")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &parsed,
            "echelon_attempts_total",
            &[("instance", "acme/model#1"), ("outcome", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &parsed,
            "echelon_health_transitions_total",
            &[first[0], ("to", "degraded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &parsed,
            "echelon_instance_health",
            &[first[0], ("state", "degraded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &parsed,
            "echelon_instance_breaker_state",
            &[first[0], ("state", "closed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &parsed,
            "echelon_pool_instances",
            &[("pool", "pool:main"), ("state", "healthy")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &parsed,
            "echelon_requests_total",
            &[("route", "unknown"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &parsed,
            "echelon_config_reloads_total",
            &[("result", "error")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &parsed,
            "echelon_request_duration_seconds_bucket",
            &[("route", "pool:main"), ("le", "0.05")]
        ),
        Some(1.0)
    );
    // +Inf equals _count.
    assert_eq!(
        value(
            &parsed,
            "echelon_request_duration_seconds_bucket",
            &[("route", "pool:main"), ("le", "+Inf")]
        ),
        value(
            &parsed,
            "echelon_request_duration_seconds_count",
            &[("route", "pool:main")]
        )
    );
    // Instance labels are configured names only: never a key.
    assert!(!text.contains(CANARY) && !text.contains(SECOND_KEY));

    // 10,000 requests for bogus model names, reported as `unknown` as the HTTP layer does: no
    // new series at all.
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let before = series(&metrics.render(None));
    for _ in 0..10_000 {
        metrics.record_request(UNKNOWN_ROUTE, 404, None, Duration::from_micros(30), None);
    }
    assert_eq!(series(&metrics.render(None)), before);
    // Even a caller that wrongly passes raw names cannot grow the exposition past the cap.
    for i in 0..10_000 {
        let bogus = format!("bogus-model-{i}");
        metrics.record_request(&bogus, 404, None, Duration::from_micros(30), None);
    }
    let parsed = parse(&metrics.render(None));
    let routes: BTreeSet<&str> = parsed["echelon_requests_total"]
        .iter()
        .map(|(l, _)| l["route"].as_str())
        .collect();
    assert_eq!(routes.len(), 21, "20 series and `other`");
    assert!(routes.contains("other"));
    assert!(
        value(
            &parsed,
            "echelon_metrics_label_overflow_total",
            &[("family", "routes")]
        )
        .unwrap()
            > 9_000.0
    );
    upstream.stop().await;
}

/// A webhook receiver on 127.0.0.1 that answers 500 to the first `fail_first` posts.
struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    posts: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(fail_first: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let posts = Arc::new(AtomicU32::new(0));
        let (b, p) = (Arc::clone(&bodies), Arc::clone(&posts));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (bodies, posts) = (Arc::clone(&b), Arc::clone(&p));
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                            let (bodies, posts) = (Arc::clone(&bodies), Arc::clone(&posts));
                            async move {
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let n = posts.fetch_add(1, Ordering::SeqCst) + 1;
                                let status = if n <= fail_first {
                                    500
                                } else {
                                    bodies
                                        .lock()
                                        .unwrap()
                                        .push(serde_json::from_slice(&body).unwrap());
                                    200
                                };
                                let mut response = hyper::Response::new(Full::new(Bytes::new()));
                                *response.status_mut() =
                                    http::StatusCode::from_u16(status).unwrap();
                                Ok::<_, Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            bodies,
            posts,
            task,
        }
    }

    fn url(&self) -> Secret {
        Secret::new(format!("http://{}/hook?token=webhook-secret", self.addr))
    }

    async fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..500 {
            if self.bodies.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.bodies.lock().unwrap().clone()
    }
}

fn fast_webhooks() -> WebhookOptions {
    WebhookOptions {
        queue: 16,
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn probes_make_a_pool_unhealthy_and_healthy_again_and_the_alert_fires_and_resolves() {
    // The first four model lists (two rounds of two probes) are 500s, however slow the machine:
    // a time window here raced with a loaded machine's set-up.
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions {
            faults: Faults::parse("fail-first-4").unwrap(),
            ..FakeUpstreamOptions::default()
        },
    )
    .await
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let gateway = gateway(
        topology(&upstream.base_url(), "model-x", check()),
        metrics.clone(),
    );
    let checker = HealthChecker::new(
        gateway.clone(),
        metrics.clone(),
        HealthCheckOptions::default(),
    );

    let receiver = Receiver::start(1).await;
    let (webhook, webhook_task) =
        WebhookNotifier::start(vec![receiver.url()], fast_webhooks()).unwrap();
    metrics.observe_webhooks(webhook.stats());
    let notifier: Arc<dyn AlertNotifier> = Arc::new(Notifiers(vec![
        Arc::new(LogNotifier),
        Arc::new(webhook.clone()),
        metrics.clone(),
    ]));
    let rule = AlertRule {
        name: "pool-unhealthy".into(),
        level: AlertLevel::Critical,
        cooldown: Duration::from_secs(600),
        description: Some("less than half of a pool's instances are healthy".into()),
        condition: AlertCondition::Threshold {
            metric: AlertMetric::PoolHealthyRatio,
            target: Some("pool:main".into()),
            op: Comparison::Less,
            value: 0.5,
            window: Duration::from_millis(1),
        },
    };
    let rules = AlertRules::new(vec![rule]).unwrap();
    let engine = AlertEngine::new(&rules, notifier, AlertEngineOptions::default());
    let sources: Vec<Arc<dyn ReadingSource>> = vec![
        Arc::new(SnapshotReadings::new(gateway.clone())),
        metrics.clone(),
    ];
    let evaluate = || {
        let mut readings = Vec::new();
        for s in &sources {
            s.read(&mut readings);
        }
        engine.evaluate(gateway.clock().now(), readings)
    };
    let health = |k: usize| gateway.snapshot().pools[0].members[k].instance.health;

    // Two failed rounds: failure_threshold 2 makes both instances unhealthy.
    for _ in 0..2 {
        let report = checker.probe_now().await;
        assert!(
            report
                .probed
                .iter()
                .all(|(_, r)| matches!(r, ProbeResult::Failed(_)))
        );
    }
    assert_eq!(
        (health(0), health(1)),
        (HealthState::Unhealthy, HealthState::Unhealthy)
    );
    assert_eq!(
        upstream.model_list_requests(),
        4,
        "two probes per round, /v1/models only"
    );
    assert_eq!(upstream.total_requests(), 0, "no chat request was sent");
    let fired = evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].status, AlertStatus::Firing);
    assert!(evaluate().is_empty(), "de-duplicated while it holds");

    // The upstream comes back; after the rest (50 ms), one success each makes them healthy.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let report = checker.probe_now().await;
    assert!(report.probed.iter().all(|(_, r)| *r == ProbeResult::Ok));
    assert_eq!(
        (health(0), health(1)),
        (HealthState::Healthy, HealthState::Healthy)
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let resolved = evaluate();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].status, AlertStatus::Resolved);

    // The receiver got both notices (the first post was refused once and retried).
    let bodies = receiver.wait_for(2).await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0]["status"], "firing");
    assert_eq!(bodies[0]["rule"], "pool-unhealthy");
    assert_eq!(bodies[0]["level"], "critical");
    assert_eq!(bodies[0]["target"], "pool:main");
    assert_eq!(bodies[1]["status"], "resolved");
    assert_eq!(receiver.posts.load(Ordering::SeqCst), 3);
    // The notifier counts a delivery once it has read the answer, a moment after the receiver
    // kept the body.
    for _ in 0..500 {
        if webhook.stats().delivered() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(webhook.stats().retries(), 1);
    assert_eq!(webhook.stats().delivered(), 2);

    // Probes and alerts show in the metrics; probes are not user traffic.
    let parsed = parse(&metrics.render(None));
    assert_eq!(
        value(
            &parsed,
            "echelon_probes_total",
            &[("instance", "acme/model#0"), ("result", "failed")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &parsed,
            "echelon_probes_total",
            &[("instance", "acme/model#1"), ("result", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&parsed, "echelon_attempts_total", &[]), None);
    assert_eq!(
        value(
            &parsed,
            "echelon_alerts_firing",
            &[("rule", "pool-unhealthy"), ("level", "critical")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &parsed,
            "echelon_alert_notices_total",
            &[("rule", "pool-unhealthy"), ("status", "firing")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &parsed,
            "echelon_webhook_deliveries_total",
            &[("result", "delivered")]
        ),
        Some(2.0)
    );
    let view = engine.view();
    assert!(view.active.is_empty());
    assert_eq!(view.recent.len(), 2);
    assert_eq!(checker.statuses().len(), 2);

    webhook_task.shutdown().await;
    upstream.stop().await;
}

#[tokio::test]
async fn webhook_gives_up_after_its_attempts_and_drops_on_a_full_queue() {
    let receiver = Receiver::start(u32::MAX).await;
    let (webhook, task) = WebhookNotifier::start(
        vec![receiver.url()],
        WebhookOptions {
            queue: 2,
            ..fast_webhooks()
        },
    )
    .unwrap();
    let notice = echelon_application::alerts::AlertNotice {
        rule: "r".into(),
        level: AlertLevel::Warning,
        status: AlertStatus::Firing,
        target: None,
        value: None,
        summary: "s".into(),
        description: None,
        at: Instant::ZERO,
        since: Instant::ZERO,
    };
    // Far more than the queue holds, sent at once: the caller never waits.
    let started = std::time::Instant::now();
    for _ in 0..50 {
        webhook.notify(&notice);
    }
    assert!(started.elapsed() < Duration::from_millis(50));
    for _ in 0..400 {
        let s = webhook.stats();
        if s.failed() + s.dropped() == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = webhook.stats();
    assert!(stats.dropped() >= 47, "{}", stats.dropped());
    assert_eq!(stats.failed() + stats.dropped(), 50);
    assert_eq!(stats.delivered(), 0);
    // Three tries per delivered-to-the-worker notice.
    assert_eq!(
        receiver.posts.load(Ordering::SeqCst),
        u32::try_from(stats.failed() * 3).unwrap()
    );
    task.shutdown().await;
}

#[tokio::test]
async fn webhook_urls_follow_a_reload_and_none_queues_nothing() {
    let first = Receiver::start(0).await;
    let second = Receiver::start(0).await;
    let (webhook, task) = WebhookNotifier::start(Vec::new(), fast_webhooks()).unwrap();
    let notice = |rule: &str| echelon_application::alerts::AlertNotice {
        rule: rule.into(),
        level: AlertLevel::Warning,
        status: AlertStatus::Firing,
        target: None,
        value: None,
        summary: "s".into(),
        description: None,
        at: Instant::ZERO,
        since: Instant::ZERO,
    };
    // No URL: nothing is queued, so nothing is dropped either.
    for _ in 0..40 {
        webhook.notify(&notice("none"));
    }
    assert_eq!(webhook.stats().dropped(), 0);
    webhook.set_urls(vec![first.url()]);
    webhook.notify(&notice("to-first"));
    assert_eq!(first.wait_for(1).await[0]["rule"], "to-first");
    webhook.set_urls(vec![second.url()]);
    webhook.notify(&notice("to-second"));
    assert_eq!(second.wait_for(1).await[0]["rule"], "to-second");
    assert_eq!(
        first.posts.load(Ordering::SeqCst),
        1,
        "the old URL gets nothing new"
    );
    assert_eq!(webhook.stats().delivered(), 2);
    task.shutdown().await;
}

#[tokio::test]
async fn the_history_decorator_passes_every_event_on_to_the_metrics() {
    let upstream = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FakeUpstreamOptions::default(),
    )
    .await
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let clock = Arc::new(echelon_application::clock::TokioClock::new());
    let history = Arc::new(EventHistory::new(
        Arc::new(FanOut::new(vec![metrics.clone(), Arc::new(SpanEvents)])),
        clock,
        100,
    ));
    let gateway = gateway(
        topology(&upstream.base_url(), "fail-401", check()),
        history.clone(),
    );
    // Both keys are refused: the request fails, and both keys are dead.
    let failed = gateway.complete("acme/model", request()).await;
    assert!(failed.is_err());
    let snapshot = gateway.snapshot();
    assert!(
        snapshot.pools[0]
            .members
            .iter()
            .all(|m| m.instance.key_dead)
    );
    let parsed = parse(&metrics.render(None));
    assert_eq!(
        value(
            &parsed,
            "echelon_keys_dead_total",
            &[("instance", "acme/model#1")]
        ),
        Some(1.0)
    );
    // A model route is one stage: nothing to fall back to, so nothing in the history.
    assert!(
        history
            .entries()
            .iter()
            .all(|e| !matches!(e, HistoryEntry::Fallback { .. }))
    );
    upstream.stop().await;
}
