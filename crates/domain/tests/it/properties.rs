//! Property tests: weighted fairness, breaker trials, limiter bounds, permit balance, attempt cap.
//!
//! The runner's seed is fixed so that the statistical checks (shares within ±2 percentage points
//! over 10,000 picks) are reproducible rather than flaky.

use core::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use echelon_domain::breaker::{BreakerPermit, CircuitBreaker};
use echelon_domain::error::ErrorClass;
use echelon_domain::events::NoopSink;
use echelon_domain::instance::SharedInstance;
use echelon_domain::limit::{LimitKind, RateLimiter};
use echelon_domain::plan::{Outcome, Step};
use echelon_domain::random::SplitMix64;
use echelon_domain::rotation::Rotation;
use echelon_domain::spec::{
    BreakerPolicy, FallbackStrategy, Limits, RateAlgorithm, RotationStrategy,
};
use echelon_domain::time::Instant;

use echelon_test_support::members;

use crate::support::{Builder, fail, ok};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5EED),
        failure_persistence: None,
        ..Config::default()
    }
}

fn shares_hold(
    rotation: &Rotation,
    m: &[SharedInstance],
    weights: &[u32],
    now: Instant,
    rng: &SplitMix64,
) -> Result<(), TestCaseError> {
    let available: Vec<bool> = m
        .iter()
        .map(|i| i.availability(now, 1, false).is_ok())
        .collect();
    let total: u64 = weights
        .iter()
        .zip(&available)
        .filter(|(_, a)| **a)
        .map(|(w, _)| u64::from(*w))
        .sum();
    let mut counts = vec![0u32; m.len()];
    for _ in 0..10_000 {
        let i = rotation
            .pick(m, now, rng, &mut |i| {
                m[i].availability(now, 1, false).is_ok()
            })
            .unwrap();
        counts[i] += 1;
    }
    for i in 0..m.len() {
        let expected = if available[i] {
            f64::from(weights[i]) / total as f64
        } else {
            0.0
        };
        let got = f64::from(counts[i]) / 10_000.0;
        prop_assert!(
            (got - expected).abs() <= 0.02,
            "member {i}: {got} vs {expected} (weights {weights:?})"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn weighted_shares_hold_in_any_order_and_after_cooldowns(
        weights in proptest::collection::vec(1u32..=10, 2..7),
        cooling in proptest::collection::vec(any::<bool>(), 7),
        strategy in prop_oneof![Just(RotationStrategy::WeightedRandom), Just(RotationStrategy::WeightedRoundRobin)],
        seed in any::<u64>(),
    ) {
        let m = members(weights.len());
        let rotation = Rotation::new(strategy, &weights);
        let rng = SplitMix64::new(seed);
        let t0 = Instant::ZERO;
        prop_assume!(cooling.iter().take(weights.len()).any(|c| !c));
        shares_hold(&rotation, &m, &weights, t0, &rng)?;
        // Some members cool down: the others keep their relative shares.
        for (i, member) in m.iter().enumerate() {
            if cooling[i] {
                member.start_cooldown(t0 + Duration::from_secs(30), None, &NoopSink);
            }
        }
        shares_hold(&rotation, &m, &weights, t0 + Duration::from_secs(1), &rng)?;
        // After the cooldowns everyone is back at their configured share.
        shares_hold(&rotation, &m, &weights, t0 + Duration::from_secs(31), &rng)?;
    }

    #[test]
    fn breaker_admits_at_most_half_open_requests_and_never_sticks(
        trials in 1u32..4,
        ops in proptest::collection::vec((0u8..5, 0usize..8, 0u64..3_000), 1..200),
    ) {
        let policy = BreakerPolicy {
            failure_threshold: 2,
            failure_rate: None,
            recovery_time: Duration::from_secs(1),
            max_recovery_time: Duration::from_secs(4),
            half_open_requests: trials,
        };
        let b = CircuitBreaker::new(policy);
        let rng = SplitMix64::new(1);
        let mut now = Instant::ZERO;
        let mut held: Vec<BreakerPermit> = Vec::new();
        for (op, pick, ms) in ops {
            match op {
                0 => if let Ok(p) = b.try_acquire(now) { held.push(p) },
                1 if !held.is_empty() => { let p = held.swap_remove(pick % held.len()); let _ = p.success(now, &rng); }
                2 if !held.is_empty() => { let p = held.swap_remove(pick % held.len()); let _ = p.failure(ErrorClass::Server, now, &rng); }
                3 if !held.is_empty() => { drop(held.swap_remove(pick % held.len())); }
                _ => now = now + Duration::from_millis(ms),
            }
            let in_trial = held.iter().filter(|p| p.is_trial()).count() as u32;
            prop_assert!(in_trial <= trials);
        }
        drop(held);
        // Whatever happened, after the longest open time a call is admitted again.
        now = now + Duration::from_secs(5);
        prop_assert!(b.try_acquire(now).is_ok());
    }

    #[test]
    fn limiters_never_over_admit(
        per_minute in 1u32..200,
        sliding in any::<bool>(),
        ops in proptest::collection::vec((0u64..5_000, 1u32..20), 1..300),
    ) {
        let algorithm = if sliding { RateAlgorithm::SlidingWindow } else { RateAlgorithm::TokenBucket };
        let limiter = RateLimiter::new(LimitKind::Tokens, per_minute, algorithm, Instant::ZERO);
        let mut now = Instant::ZERO;
        let mut admitted: Vec<(Instant, u64)> = Vec::new();
        for (ms, amount) in ops {
            now = now + Duration::from_millis(ms);
            if limiter.try_acquire(now, amount).is_ok() {
                admitted.push((now, u64::from(amount.min(per_minute))));
            }
        }
        let limit = u64::from(per_minute);
        for (i, (start, _)) in admitted.iter().enumerate() {
            let mut sum = 0u64;
            for (at, amount) in &admitted[i..] {
                sum += amount;
                let span = (*at - *start).as_secs_f64();
                let bound = if sliding {
                    if span < 60.0 { limit as f64 } else { break }
                } else {
                    limit as f64 + limit as f64 * span / 60.0
                };
                prop_assert!(sum as f64 <= bound + 1e-6, "{sum} admitted within {span}s, bound {bound}");
            }
        }
    }

    #[test]
    fn permits_return_to_zero_under_any_interleaving(
        script in proptest::collection::vec((0u8..6, 0usize..4), 1..120),
    ) {
        let mut b = Builder::new()
            .provider("a", 3)
            .model("a/m", None, Limits { max_concurrency: Some(2), ..Limits::default() })
            .group("g", FallbackStrategy::EchelonDown, &[&["a/m"], &["a/m"]]);
        b.group_mut("g").echelons[0].concurrency_limit = Some(3);
        b.group_mut("g").echelons[0].max_retries = 1;
        let w = b.build();
        let mut plans = Vec::new();
        let mut held = Vec::new();
        for (op, k) in script {
            match op {
                0 => plans.push(w.plan("group:g")),
                1 if !plans.is_empty() => {
                    let i = k % plans.len();
                    if let Step::Attempt(a) = plans[i].next(w.now(), &w.rng) { held.push((i, a)) }
                }
                2..=5 if !held.is_empty() => {
                    let (i, a) = held.swap_remove(k % held.len());
                    let outcome = match op {
                        2 => ok(),
                        3 => fail(ErrorClass::Server),
                        4 => fail(ErrorClass::Timeout),
                        _ => Outcome::Cancelled,
                    };
                    if k % 4 == 3 { drop(a) } else { plans[i].record(a, outcome, w.now(), &w.rng) }
                }
                _ => w.clock.advance(Duration::from_millis(300)),
            }
            for i in w.table.instances() {
                prop_assert!(i.in_flight() <= 2);
            }
        }
        drop(held);
        drop(plans);
        prop_assert!(w.table.instances().all(|i| i.in_flight() == 0));
        let g = w.table.group_snapshot(&"g".into(), w.now()).unwrap();
        prop_assert!(g.echelons.iter().all(|e| e.in_flight == 0));
    }

    #[test]
    fn a_plan_never_exceeds_max_attempts(
        max_attempts in 1u32..6,
        max_retries in 0u32..4,
        classes in proptest::collection::vec(0usize..ErrorClass::ALL.len(), 1..30),
    ) {
        let mut b = Builder::new()
            .provider("a", 3)
            .provider("b", 2)
            .model("a/m", Some(8_000), Limits::default())
            .model("b/m", Some(16_000), Limits::default())
            .group("g", FallbackStrategy::GroupFallback, &[&["a/m"], &["b/m"], &["a/m", "b/m"]])
            .fallback_to("g", &["g", "g.echelon1"]);
        b.group_mut("g").fallback.max_attempts = max_attempts;
        for e in &mut b.group_mut("g").echelons {
            e.max_retries = max_retries;
            e.retry_after_max_wait = Duration::from_secs(10);
        }
        let w = b.build();
        let mut plan = w.plan("group:g");
        let mut n = 0;
        w.run(&mut plan, |_| {
            let class = ErrorClass::ALL[classes[n % classes.len()]];
            n += 1;
            fail(class)
        });
        prop_assert!(plan.attempts().len() as u32 <= max_attempts);
        prop_assert!(w.table.instances().all(|i| i.in_flight() == 0));
    }
}
