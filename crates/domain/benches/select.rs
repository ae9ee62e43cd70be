//! Cost of one selection per rotation strategy for 3, 100 and 10,000 instances, and of one full
//! attempt plan through a three-echelon task group.

use core::hint::black_box;
use core::time::Duration;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use echelon_domain::plan::{Outcome, RequestFacts, Step};
use echelon_domain::random::SplitMix64;
use echelon_domain::rotation::Rotation;
use echelon_domain::routing::{RoutingTable, TableOptions};
use echelon_domain::spec::{
    EchelonSpec, FallbackStrategy, Limits, ModelSpec, RotationStrategy, Topology,
};
use echelon_domain::time::Instant;
use echelon_test_support::{self as spec, members};

fn selection(c: &mut Criterion) {
    let now = Instant::from_elapsed(Duration::from_secs(1));
    for (strategy, name) in RotationStrategy::ALL {
        let mut group = c.benchmark_group(format!("select/{name}"));
        for n in [3usize, 100, 10_000] {
            let m = members(n);
            let weights: Vec<u32> = (0..n).map(|i| (i % 7 + 1) as u32).collect();
            let rotation = Rotation::new(strategy, &weights);
            let rng = SplitMix64::new(1);
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    rotation.pick(&m, now, &rng, &mut |i| {
                        m[i].availability(now, 1, false).is_ok()
                    })
                });
            });
        }
        group.finish();
    }
}

fn topology() -> Topology {
    let mut t = Topology::default();
    for tier in 1..=3 {
        let provider = format!("p{tier}");
        t.providers
            .insert(provider.as_str().into(), spec::provider(&provider, 3));
        let model = ModelSpec {
            limits: Limits {
                rpm: Some(1_000_000),
                tpm: None,
                max_concurrency: Some(64),
            },
            ..spec::model(&format!("{provider}/m"), "m", Some(32_000))
        };
        let name = model.model.clone();
        t.models.insert(name.clone(), model);
        let instances = t.instances_of_model(&name);
        let pool = format!("pool{tier}");
        t.pools.insert(
            pool.as_str().into(),
            spec::pool(&pool, RotationStrategy::WeightedRoundRobin, instances),
        );
    }
    let echelons = (1..=3)
        .map(|tier| EchelonSpec {
            breaker: None,
            concurrency_limit: Some(1_000),
            rpm_limit: Some(1_000_000),
            max_retries: 1,
            ..spec::echelon(
                &format!("echelon{tier}"),
                tier,
                &[&format!("pool:pool{tier}")],
            )
        })
        .collect();
    let mut group = spec::group("g", FallbackStrategy::EchelonDown, echelons);
    group.fallback.max_attempts = 6;
    t.task_groups.insert("g".into(), group);
    t
}

fn planning(c: &mut Criterion) {
    let now = Instant::from_elapsed(Duration::from_secs(1));
    let table = RoutingTable::build(Arc::new(topology()), None, TableOptions::default(), now);
    let rng = SplitMix64::new(2);
    let success = Outcome::Success {
        latency: Duration::from_millis(80),
        ttft: None,
        usage: None,
    };
    let serve = |table: &RoutingTable| {
        let route = table.resolve("group:g").unwrap();
        let mut plan = table.plan(
            &route,
            RequestFacts {
                estimated_tokens: 200,
                now,
                deadline: None,
            },
        );
        loop {
            match plan.next(now, &rng) {
                Step::Attempt(a) => plan.record(a, success.clone(), now, &rng),
                Step::Done(v) => break v,
                Step::Wait { .. } => unreachable!("nothing waits in this setup"),
            }
        }
    };
    let mut group = c.benchmark_group("plan/three_echelons");
    group.bench_function("served_by_first", |b| b.iter(|| black_box(serve(&table))));
    // Every key of the first two echelons is dead: the plan skips six instances and two
    // echelons before it reaches the third.
    let fallback = RoutingTable::build(Arc::new(topology()), None, TableOptions::default(), now);
    for i in fallback.instances() {
        if i.id().model.provider.as_str() != "p3" {
            i.mark_key_dead(fallback.sink());
        }
    }
    group.bench_function("served_by_third", |b| {
        b.iter(|| black_box(serve(&fallback)))
    });
    group.finish();
}

criterion_group!(benches, selection, planning);
criterion_main!(benches);
