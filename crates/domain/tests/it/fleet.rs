//! Pools where every member is a little broken (issue 10): the breaker trips on evidence, the
//! ejection limit and panic mode keep capacity in rotation, a real outage is answered at once.
//! Many requests run interleaved, 32 in flight, on the fake clock with seeded failures.

use core::time::Duration;

use echelon_domain::breaker::BreakerState;
use echelon_domain::error::ErrorClass;
use echelon_domain::events::Event;
use echelon_domain::health::HealthState;
use echelon_domain::plan::{Attempt, Outcome, Verdict};
use echelon_domain::random::{Random, SplitMix64};
use echelon_domain::spec::{Limits, RotationStrategy};

use crate::support::{Builder, World, fail, ok};

/// A pool `p` of `n` keys of `a/m`, round robin, every default untouched.
fn pool(n: u16) -> World {
    let members: Vec<(&str, u16, u32)> = (0..n).map(|k| ("a/m", k, 1)).collect();
    Builder::new()
        .provider("a", usize::from(n))
        .model("a/m", None, Limits::default())
        .pool("p", RotationStrategy::RoundRobin, &members)
        .build()
}

/// Each key `#k` fails `rates[k]` percent of its attempts at random (seeded).
fn failing_at(rates: &[u64], seed: u64) -> impl FnMut(&Attempt) -> Outcome {
    let rng = SplitMix64::new(seed);
    let rates = rates.to_vec();
    move |a| {
        if rng.below(100) < rates[usize::from(a.instance.key_index)] {
            fail(ErrorClass::Server)
        } else {
            ok()
        }
    }
}

fn opened(w: &World) -> usize {
    w.sink
        .take()
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Breaker {
                    to: BreakerState::Open,
                    ..
                } | Event::Health {
                    to: HealthState::Unhealthy,
                    ..
                }
            )
        })
        .count()
}

#[test]
fn members_failing_a_fifth_at_random_are_never_ejected() {
    let w = pool(3);
    let order = SplitMix64::new(1);
    let t = w.run_concurrent(
        "pool:p",
        20_000,
        32,
        Duration::from_micros(300),
        &order,
        failing_at(&[20, 20, 20], 2),
    );
    assert_eq!(opened(&w), 0, "no breaker opened, no member went unhealthy");
    let served = t.count("served");
    assert!(served >= 19_700, "served {served} of 20,000: {t:?}");
    assert_eq!(t.count("unavailable"), 0, "{t:?}");
    assert!(t.max_attempts <= 3);
    for k in 0..3 {
        let share = f64::from(t.attempts_of(&format!("a/m#{k}"))) / f64::from(t.total_attempts());
        assert!((0.30..0.37).contains(&share), "key {k}: {share}");
    }
}

#[test]
fn a_member_failing_everything_is_ejected_within_a_handful_of_requests() {
    let w = pool(3);
    let order = SplitMix64::new(3);
    let t = w.run_concurrent(
        "pool:p",
        20_000,
        32,
        Duration::from_micros(300),
        &order,
        failing_at(&[100, 0, 0], 4),
    );
    assert_eq!(
        t.count("served"),
        20_000,
        "zero client-visible errors: {t:?}"
    );
    let dead = t.attempts_of("a/m#0");
    // Ten for the streak, the calls already in flight, and a half-open trial now and then.
    assert!(dead <= 60, "the dead key got {dead} attempts: {t:?}");
    assert!(f64::from(dead) < 0.01 * f64::from(t.total_attempts()));
}

#[test]
fn when_every_member_fails_everything_the_pool_answers_at_once() {
    let w = pool(3);
    let order = SplitMix64::new(5);
    let t = w.run_concurrent(
        "pool:p",
        5_000,
        32,
        Duration::from_micros(300),
        &order,
        failing_at(&[100, 100, 100], 6),
    );
    assert_eq!(t.count("served"), 0);
    assert!(t.count("unavailable") > 4_800, "{t:?}");
    assert!(t.total_attempts() < 200, "{t:?}");
    let mut plan = w.plan("pool:p");
    let verdict = w.run(&mut plan, |_| ok());
    match verdict {
        Verdict::Unavailable { retry_after } => assert!(retry_after.is_some()),
        other => panic!("an outage answers 503 with Retry-After, got {other:?}"),
    }
}

#[test]
fn panic_mode_serves_from_members_that_mostly_succeed_after_all_were_ejected() {
    // Streaks took every member out (a tight threshold makes it happen at once), but each one
    // still serves most calls: the pool keeps serving instead of answering 503.
    let mut b = Builder::new()
        .provider("a", 2)
        .model("a/m", None, Limits::default())
        .pool(
            "p",
            RotationStrategy::RoundRobin,
            &[("a/m", 0, 1), ("a/m", 1, 1)],
        );
    b.pool_mut("p").health.failure_threshold = 2;
    b.pool_mut("p").breaker.failure_threshold = 2;
    let w = b.build();
    for _ in 0..10 {
        w.request("pool:p", |_| ok());
    }
    // Two failures on each key: both ejected.
    w.request("pool:p", |_| fail(ErrorClass::Server));
    w.request("pool:p", |_| fail(ErrorClass::Server));
    let mut plan = w.plan("pool:p");
    let verdict = w.run(&mut plan, |_| ok());
    assert_eq!(verdict, Verdict::Served);
    assert!(plan.attempts().len() == 1);
}

#[test]
fn a_total_outage_costs_at_most_one_and_a_half_attempts_per_request() {
    // Breakers and health that never eject: only the retry budget stands between the outage and
    // three attempts per request.
    let mut b = Builder::new()
        .provider("a", 3)
        .model("a/m", None, Limits::default())
        .pool(
            "p",
            RotationStrategy::RoundRobin,
            &[("a/m", 0, 1), ("a/m", 1, 1), ("a/m", 2, 1)],
        );
    b.pool_mut("p").breaker.failure_threshold = u32::MAX;
    b.pool_mut("p").breaker.failure_rate = None;
    b.pool_mut("p").health.failure_threshold = u32::MAX;
    let w = b.build();
    let start = w.now();
    let order = SplitMix64::new(7);
    let t = w.run_concurrent(
        "pool:p",
        20_000,
        32,
        Duration::from_micros(300),
        &order,
        failing_at(&[100, 100, 100], 8),
    );
    let seconds = (w.now() - start).as_secs_f64();
    let attempts = f64::from(t.total_attempts());
    // Half a retry per request, plus the floor of ten a second.
    assert!(
        attempts <= 1.5 * 20_000.0 + 10.0 * (seconds + 10.0),
        "{attempts} attempts in {seconds:.1}s: {t:?}"
    );
    assert!(attempts / 20_000.0 < 1.53, "{t:?}");
    assert!(t.count("retry_budget_spent") > 9_000, "{t:?}");
    let budget = w.table.retry_budget().snapshot(w.now());
    assert!(budget.refused > 9_000);
}
