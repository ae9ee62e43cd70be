//! The Redis adapter of the shared state port against a real `redis-server` of the test's own:
//! budgets granted from one bucket, cooldowns that only move later, dead keys, the fleet's one
//! breaker trial, leases, bounded calls while Redis is paused, and no password in any error;
//! then two replicas' syncs adopting each other's news.

use std::sync::Arc;
use std::time::{Duration, Instant};

use echelon_application::gateway::{EngineOptions, Gateway};
use echelon_application::shared_state::{SharedStateOptions, SharedStateSync};
use echelon_domain::breaker::BreakerState;
use echelon_domain::events::NoopSink;
use echelon_domain::health::HealthState;
use echelon_domain::instance::InstanceState;
use echelon_domain::name::{InstanceId, ModelRef};
use echelon_domain::random::SplitMix64;
use echelon_domain::routing::TableOptions;
use echelon_domain::spec::{Limits, ModelSpec, Topology};
use echelon_domain::time::Clock as _;
use echelon_infrastructure::backend_factory::ProviderBackends;

use echelon_domain::secret::Secret;
use echelon_domain::shared::{
    BreakerReport, BudgetSync, DeadReport, FailMode, InstanceSync, SharedBreaker, SharedState,
    SharingMode, SyncBatch,
};
use echelon_infrastructure::state::{RedisOptions, RedisState};
use echelon_test_support::redis_server::RedisServer;

fn client(url: &str, prefix: &str) -> RedisState {
    RedisState::new(&RedisOptions {
        url: Secret::new(url),
        key_prefix: prefix.to_owned(),
        timeout: Duration::from_millis(300),
    })
    .unwrap()
}

fn budget(want: i64, debt: u64) -> SyncBatch {
    SyncBatch {
        replica: "a".into(),
        budgets: vec![BudgetSync {
            key: "rpm:p/m#0".into(),
            per_minute: 60,
            debt,
            want,
        }],
        instances: Vec::new(),
    }
}

fn instance(
    replica: &str,
    cooldown: Option<Duration>,
    dead: DeadReport,
    breaker: BreakerReport,
) -> SyncBatch {
    SyncBatch {
        replica: replica.into(),
        budgets: Vec::new(),
        instances: vec![InstanceSync {
            key: "p/m#0".into(),
            cooldown,
            dead,
            breaker,
            probe: None,
        }],
    }
}

fn quiet(replica: &str) -> SyncBatch {
    instance(
        replica,
        None,
        DeadReport::Unchanged,
        BreakerReport::Unchanged,
    )
}

#[tokio::test]
async fn budgets_are_granted_from_one_bucket_per_prefix() {
    let redis = RedisServer::start();
    let a = client(&redis.url(), "gw");
    let b = client(&redis.url(), "gw");
    let other = client(&redis.url(), "other-gw");
    // The bucket starts full at 60: two replicas share it.
    assert_eq!(a.sync(&budget(50, 0)).await.unwrap().granted, [50]);
    let granted = b.sync(&budget(50, 0)).await.unwrap().granted[0];
    assert!((10..=11).contains(&granted), "granted {granted}");
    // A debt is paid even from an empty bucket; nothing new comes with it.
    assert_eq!(a.sync(&budget(5, 3)).await.unwrap().granted, [3]);
    // Units handed back are there for the other replica.
    assert_eq!(a.sync(&budget(-20, 0)).await.unwrap().granted, [-20]);
    let granted = b.sync(&budget(30, 0)).await.unwrap().granted[0];
    assert!((17..=19).contains(&granted), "granted {granted}");
    // Another prefix is another gateway with budgets of its own.
    assert_eq!(other.sync(&budget(60, 0)).await.unwrap().granted, [60]);
}

#[tokio::test]
async fn cooldowns_only_move_later_and_dead_keys_are_the_fleets() {
    let redis = RedisServer::start();
    let a = client(&redis.url(), "gw");
    let b = client(&redis.url(), "gw");
    let long = a
        .sync(&instance(
            "a",
            Some(Duration::from_secs(30)),
            DeadReport::Unchanged,
            BreakerReport::Unchanged,
        ))
        .await
        .unwrap();
    assert!(long.instances[0].cooldown.unwrap() > Duration::from_secs(29));
    // A shorter Retry-After elsewhere does not shorten the fleet's deadline.
    let short = b
        .sync(&instance(
            "b",
            Some(Duration::from_secs(1)),
            DeadReport::Unchanged,
            BreakerReport::Unchanged,
        ))
        .await
        .unwrap();
    assert!(short.instances[0].cooldown.unwrap() > Duration::from_secs(29));

    a.sync(&instance(
        "a",
        None,
        DeadReport::Dead,
        BreakerReport::Unchanged,
    ))
    .await
    .unwrap();
    assert!(b.sync(&quiet("b")).await.unwrap().instances[0].dead);
    b.sync(&instance(
        "b",
        None,
        DeadReport::Revived,
        BreakerReport::Unchanged,
    ))
    .await
    .unwrap();
    assert!(!a.sync(&quiet("a")).await.unwrap().instances[0].dead);
}

#[tokio::test]
async fn an_open_breaker_holds_the_fleet_and_admits_one_trial() {
    let redis = RedisServer::start();
    let a = client(&redis.url(), "gw");
    let b = client(&redis.url(), "gw");
    let c = client(&redis.url(), "gw");
    let opened = instance(
        "a",
        None,
        DeadReport::Unchanged,
        BreakerReport::Opened {
            remaining: Duration::from_millis(300),
        },
    );
    a.sync(&opened).await.unwrap();
    let SharedBreaker::Hold { remaining } = b.sync(&quiet("b")).await.unwrap().instances[0].breaker
    else {
        panic!("b is not held by a's open breaker");
    };
    assert!(remaining <= Duration::from_millis(300));
    // Redis's clock decides when the open time is over.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        b.sync(&quiet("b")).await.unwrap().instances[0].breaker,
        SharedBreaker::Trial
    );
    assert_eq!(
        b.sync(&quiet("b")).await.unwrap().instances[0].breaker,
        SharedBreaker::Trial
    );
    for other in [("a", &a), ("c", &c)] {
        let state = other.1.sync(&quiet(other.0)).await.unwrap().instances[0].breaker;
        assert!(
            matches!(state, SharedBreaker::Hold { .. }),
            "{} got {state:?}",
            other.0
        );
    }
    // The trial succeeded: the fleet's breaker is closed for everyone.
    let closed = b
        .sync(&instance(
            "b",
            None,
            DeadReport::Unchanged,
            BreakerReport::Closed,
        ))
        .await
        .unwrap();
    assert_eq!(closed.instances[0].breaker, SharedBreaker::Closed);
    assert_eq!(
        c.sync(&quiet("c")).await.unwrap().instances[0].breaker,
        SharedBreaker::Closed
    );
}

#[tokio::test]
async fn a_lease_has_one_holder_until_it_expires() {
    let redis = RedisServer::start();
    let a = client(&redis.url(), "gw");
    let b = client(&redis.url(), "gw");
    assert!(
        a.lease("probe:p/m#0", "a", Duration::from_millis(200))
            .await
            .unwrap()
    );
    assert!(
        !b.lease("probe:p/m#0", "b", Duration::from_millis(200))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        b.lease("probe:p/m#0", "b", Duration::from_millis(200))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_paused_redis_costs_one_timeout_and_sharing_resumes_after_it() {
    let redis = RedisServer::start();
    let a = client(&redis.url(), "gw");
    a.ping().await.unwrap();
    redis.pause();
    for _ in 0..3 {
        let started = Instant::now();
        let error = a.sync(&budget(1, 0)).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited {:?}",
            started.elapsed()
        );
        assert!(error.message.contains("timed out"), "{error}");
    }
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.sync(&budget(1, 0)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the client did not recover after SIGCONT"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn errors_never_show_the_password() {
    let redis = RedisServer::start_with(&["--requirepass", "right-horse-battery"]);
    let wrong = client(
        &format!("redis://:wrong-staple-9@127.0.0.1:{}", redis.port()),
        "gw",
    );
    let error = wrong.ping().await.unwrap_err().to_string();
    assert!(!error.contains("wrong-staple-9"), "{error}");
    let right = client(
        &format!("redis://:right-horse-battery@127.0.0.1:{}", redis.port()),
        "gw",
    );
    right.ping().await.unwrap();
    let unreachable = client("redis://:wrong-staple-9@127.0.0.1:9", "gw");
    let error = unreachable.ping().await.unwrap_err().to_string();
    assert!(!error.contains("wrong-staple-9"), "{error}");
}

/// A replica: a gateway over one mock key with a 60 rpm limit, and its sync with Redis.
struct Replica {
    gateway: Arc<Gateway>,
    sync: SharedStateSync,
}

impl Replica {
    fn new(redis: &RedisServer, name: &str) -> Self {
        let mut topology = Topology::default();
        topology
            .providers
            .insert("p".into(), echelon_test_support::provider("p", 1));
        let model = ModelSpec {
            limits: Limits {
                rpm: Some(60),
                ..Limits::default()
            },
            ..echelon_test_support::model("p/m", "m", None)
        };
        topology.models.insert(model.model.clone(), model);
        let gateway = Arc::new(
            Gateway::new(
                topology,
                Arc::new(ProviderBackends),
                Arc::new(SplitMix64::new(7)),
                EngineOptions {
                    table: TableOptions {
                        shared_budgets: true,
                        ..TableOptions::default()
                    },
                    ..EngineOptions::default()
                },
            )
            .unwrap(),
        );
        let sync = SharedStateSync::new(
            Arc::clone(&gateway),
            Arc::new(client(&redis.url(), "fleet")),
            SharedStateOptions {
                replica: name.into(),
                ..SharedStateOptions::default()
            },
        );
        Self { gateway, sync }
    }

    fn instance(&self) -> Arc<InstanceState> {
        let table = Arc::clone(&self.gateway.generation().table);
        let id = InstanceId::new(ModelRef::new("p", "m"), 0);
        Arc::clone(table.instance(&id).unwrap())
    }

    fn now(&self) -> echelon_domain::time::Instant {
        self.gateway.clock().now()
    }

    async fn sync(&self) {
        self.sync.sync_once().await.unwrap();
    }
}

#[tokio::test]
async fn replicas_adopt_each_others_cooldowns_dead_keys_breakers_probes_and_budgets() {
    let redis = RedisServer::start();
    let (a, b) = (Replica::new(&redis, "a"), Replica::new(&redis, "b"));
    let (ia, ib) = (a.instance(), b.instance());
    // Before its first sync a replica holds no slice of the budget, so it admits nothing.
    assert_eq!(ib.rate_available(b.now()).0, Some(0));
    a.sync().await;
    b.sync().await;
    assert_eq!(ib.rate_available(b.now()).0, Some(1));

    ia.start_cooldown(a.now() + Duration::from_secs(30), None, &NoopSink);
    ia.mark_key_dead(&NoopSink);
    a.sync().await;
    b.sync().await;
    let left = ib.cooldown_until(b.now()).unwrap() - b.now();
    assert!(left > Duration::from_secs(29), "{left:?}");
    assert!(ib.is_key_dead());
    // A probe on b revives the key; a learns it.
    ib.record_probe(b.now(), true, &NoopSink);
    b.sync().await;
    a.sync().await;
    assert!(!ia.is_key_dead());

    // A probe verdict from a reaches b's health.
    a.sync.report_probe(ia.id(), false);
    a.sync().await;
    b.sync().await;
    assert_eq!(ib.health().state(), HealthState::Degraded);

    // a's breaker opens: b refuses too, then one of them holds the trial.
    ia.breaker().hold_open(a.now() + Duration::from_millis(300));
    a.sync().await;
    b.sync().await;
    assert_eq!(ib.breaker().state(b.now()), BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.sync().await;
    b.sync().await;
    assert_eq!(
        ia.breaker().state(a.now()),
        BreakerState::HalfOpen,
        "a holds the trial"
    );
    assert_eq!(
        ib.breaker().state(b.now()),
        BreakerState::Open,
        "b waits for a's trial"
    );
    // a's trial succeeds: the fleet's breaker closes, b's with it.
    ia.breaker().reset();
    a.sync().await;
    b.sync().await;
    assert_eq!(ib.breaker().state(b.now()), BreakerState::Closed);
}

/// A replica whose Redis is unreachable, syncing every 20 ms.
fn unreachable_replica(fail_mode: FailMode) -> (Arc<Gateway>, Arc<SharedStateSync>) {
    let redis = RedisServer::start();
    let replica = Replica::new(&redis, "alone");
    drop(redis);
    let gateway = Arc::clone(&replica.gateway);
    let sync = Arc::new(SharedStateSync::new(
        Arc::clone(&gateway),
        Arc::new(client("redis://127.0.0.1:9", "fleet")),
        SharedStateOptions {
            replica: "alone".into(),
            sync_interval: Duration::from_millis(20),
            retry_interval: Duration::from_millis(50),
            replicas: 3,
            fail_mode,
            ..SharedStateOptions::default()
        },
    ));
    (gateway, sync)
}

async fn wait_for_fallback(sync: &SharedStateSync) {
    let started = Instant::now();
    while sync.status().mode() != SharingMode::Fallback {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never fell back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn without_redis_local_mode_grants_a_share_and_closed_mode_grants_nothing() {
    let (gateway, sync) = unreachable_replica(FailMode::Local);
    let task = Arc::clone(&sync).spawn();
    wait_for_fallback(&sync).await;
    let id = InstanceId::new(ModelRef::new("p", "m"), 0);
    let started = Instant::now();
    loop {
        let table = Arc::clone(&gateway.generation().table);
        let rpm = table.instance(&id).unwrap().rpm_limiter().unwrap();
        // The local share is 60 / 3 = 20 a minute, handed out a slice at a time.
        if rpm.lease().balance() > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no local grant"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let snapshot = sync.status().snapshot();
    assert_eq!(snapshot.fallbacks, 1);
    assert!(snapshot.last_error.is_some());
    task.shutdown().await;

    let (gateway, sync) = unreachable_replica(FailMode::Closed);
    let task = Arc::clone(&sync).spawn();
    wait_for_fallback(&sync).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let table = Arc::clone(&gateway.generation().table);
    let instance = table.instance(&id).unwrap();
    assert_eq!(instance.rpm_limiter().unwrap().lease().balance(), 0);
    assert!(
        instance
            .availability(gateway.clock().now(), 1, false)
            .is_err()
    );
    task.shutdown().await;
}
