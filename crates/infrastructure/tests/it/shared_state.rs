//! The Redis adapter of the shared state port against a real `redis-server` of the test's own:
//! budgets granted from one bucket, cooldowns that only move later, dead keys, the fleet's one
//! breaker trial, leases, bounded calls while Redis is paused, and no password in any error.

use std::time::{Duration, Instant};

use echelon_domain::secret::Secret;
use echelon_domain::shared::{
    BreakerReport, BudgetSync, DeadReport, InstanceSync, SharedBreaker, SharedState, SyncBatch,
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
