//! Readings: the current value of each metric for each target, taken once per evaluation from
//! [`ReadingSource`]s. [`SnapshotReadings`] reads the routing table's snapshot (pool health,
//! upstream error rates, breakers, limiter saturation, fallbacks); the metrics registry of the
//! infrastructure adds request-level readings (error rates and latency percentiles per route).

use std::collections::BTreeMap;
use std::sync::Arc;

use echelon_domain::alert::AlertMetric;
use echelon_domain::breaker::BreakerState;
use echelon_domain::health::HealthState;
use echelon_domain::routing::{PoolSnapshot, TableSnapshot};
use echelon_domain::stats::Stats;

use super::series::Sample;
use crate::gateway::Gateway;

/// A metric's value for one target at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The metric.
    pub metric: AlertMetric,
    /// What it is about.
    pub target: String,
    /// The value.
    pub sample: Sample,
}

/// Something that reads metrics for the alert engine (the routing table's snapshot, the metrics
/// registry). Called once per evaluation, off the request path.
pub trait ReadingSource: Send + Sync {
    /// Appends the current readings to `out`.
    fn read(&self, out: &mut Vec<Reading>);
}

/// Readings of a routing table snapshot (see [`AlertMetric`] for what each metric means).
pub fn snapshot_readings(snapshot: &TableSnapshot, out: &mut Vec<Reading>) {
    let mut instances = BTreeMap::new();
    for pool in snapshot.pools.iter().chain(&snapshot.models) {
        let target = pool.pool.to_string();
        pool_readings(pool, &target, out);
        for member in &pool.members {
            instances
                .entry(member.instance.id.to_string())
                .or_insert(&member.instance);
        }
    }
    for (target, i) in instances {
        stats_readings(&i.stats, &target, out);
        out.push(Reading {
            metric: AlertMetric::BreakerOpen,
            target: target.clone(),
            sample: Sample::Gauge(breaker_open(i.breaker)),
        });
        if let Some(max) = i.limits.max_concurrency.filter(|m| *m > 0) {
            out.push(Reading {
                metric: AlertMetric::LimiterSaturation,
                target,
                sample: Sample::Gauge(f64::from(i.in_flight) / f64::from(max)),
            });
        }
    }
    for group in &snapshot.groups {
        let target = format!("group:{}", group.name);
        stats_readings(&group.stats, &target, out);
        for e in &group.echelons {
            let target = format!("group:{}.{}", group.name, e.name);
            stats_readings(&e.stats, &target, out);
            out.push(Reading {
                metric: AlertMetric::BreakerOpen,
                target: target.clone(),
                sample: Sample::Gauge(breaker_open(e.breaker)),
            });
            let concurrency = e
                .concurrency_limit
                .filter(|m| *m > 0)
                .map(|m| f64::from(e.in_flight) / f64::from(m));
            let rpm = e.rpm_limit.filter(|m| *m > 0).map(|m| {
                let available = f64::from(e.rpm_available.unwrap_or(m).min(m));
                1.0 - available / f64::from(m)
            });
            if let Some(saturation) = concurrency.into_iter().chain(rpm).reduce(f64::max) {
                out.push(Reading {
                    metric: AlertMetric::LimiterSaturation,
                    target,
                    sample: Sample::Gauge(saturation),
                });
            }
        }
    }
}

fn breaker_open(state: BreakerState) -> f64 {
    if state == BreakerState::Closed {
        0.0
    } else {
        1.0
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "instance counts and counters far below 2^52"
)]
fn pool_readings(pool: &PoolSnapshot, target: &str, out: &mut Vec<Reading>) {
    let total = pool.members.len();
    if total > 0 {
        let healthy = pool
            .members
            .iter()
            .filter(|m| m.instance.health == HealthState::Healthy)
            .count();
        out.push(Reading {
            metric: AlertMetric::PoolHealthyRatio,
            target: target.to_owned(),
            sample: Sample::Gauge(healthy as f64 / total as f64),
        });
        out.push(Reading {
            metric: AlertMetric::PoolAvailableRatio,
            target: target.to_owned(),
            sample: Sample::Gauge(pool.available as f64 / total as f64),
        });
    }
    let dead = pool.members.iter().filter(|m| m.instance.key_dead).count();
    out.push(Reading {
        metric: AlertMetric::KeysDead,
        target: target.to_owned(),
        sample: Sample::Gauge(dead as f64),
    });
    stats_readings(&pool.stats, target, out);
}

#[allow(clippy::cast_precision_loss, reason = "counters far below 2^52")]
fn stats_readings(stats: &Stats, target: &str, out: &mut Vec<Reading>) {
    let finished = (stats.successes + stats.failures) as f64;
    let readings = [
        (
            AlertMetric::UpstreamErrorRate,
            Sample::Ratio {
                numerator: stats.failures as f64,
                denominator: finished,
            },
        ),
        (
            AlertMetric::RateLimitedRatio,
            Sample::Ratio {
                numerator: stats.rate_limited as f64,
                denominator: finished,
            },
        ),
        (
            AlertMetric::Attempts,
            Sample::Counter(stats.attempts as f64),
        ),
        (
            AlertMetric::UpstreamFailures,
            Sample::Counter(stats.failures as f64),
        ),
        (
            AlertMetric::Fallbacks,
            Sample::Counter(stats.fallbacks as f64),
        ),
    ];
    for (metric, sample) in readings {
        out.push(Reading {
            metric,
            target: target.to_owned(),
            sample,
        });
    }
}

/// A [`ReadingSource`] over the gateway's live routing table.
#[derive(Debug, Clone)]
pub struct SnapshotReadings {
    gateway: Arc<Gateway>,
}

impl SnapshotReadings {
    /// Readings of `gateway`'s live table.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

impl ReadingSource for SnapshotReadings {
    fn read(&self, out: &mut Vec<Reading>) {
        snapshot_readings(&self.gateway.snapshot(), out);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use echelon_domain::time::Instant;

    use super::*;

    fn secs(s: u64) -> Instant {
        Instant::from_elapsed(Duration::from_secs(s))
    }

    #[test]
    fn snapshot_readings_cover_pools_instances_and_limits() {
        use echelon_domain::routing::{RoutingTable, TableOptions};
        use echelon_domain::spec::{HealthCheckSpec, ProbeKind};
        let topology = crate::health_check::tests::topology(
            HealthCheckSpec {
                enabled: true,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                probe: ProbeKind::Models,
            },
            2,
        );
        let table = RoutingTable::build(
            Arc::new(topology),
            None,
            TableOptions::default(),
            Instant::ZERO,
        );
        let sick = table.instances().next().unwrap().id().clone();
        table.record_probe(&sick, secs(1), false);
        table.record_probe(&sick, secs(2), false);
        let mut out = Vec::new();
        snapshot_readings(&table.snapshot(secs(2)), &mut out);
        let find = |metric: AlertMetric, target: &str| {
            out.iter()
                .find(|r| r.metric == metric && r.target == target)
                .map(|r| r.sample.clone())
        };
        assert_eq!(
            find(AlertMetric::PoolHealthyRatio, "pool:main"),
            Some(Sample::Gauge(0.5))
        );
        assert_eq!(
            find(AlertMetric::PoolHealthyRatio, "acme/fast"),
            Some(Sample::Gauge(0.5))
        );
        assert_eq!(
            find(AlertMetric::PoolAvailableRatio, "pool:main"),
            Some(Sample::Gauge(0.5))
        );
        assert_eq!(
            find(AlertMetric::KeysDead, "pool:main"),
            Some(Sample::Gauge(0.0))
        );
        assert_eq!(
            find(AlertMetric::BreakerOpen, "acme/fast#0"),
            Some(Sample::Gauge(0.0))
        );
        assert_eq!(
            find(AlertMetric::UpstreamErrorRate, "acme/fast#1"),
            Some(Sample::Ratio {
                numerator: 0.0,
                denominator: 0.0
            })
        );
        assert_eq!(
            find(AlertMetric::Attempts, "pool:main"),
            Some(Sample::Counter(0.0))
        );
        // Every reading names a metric of the catalogue with a sample of its kind.
        for r in &out {
            assert!(
                r.sample.fits(r.metric.kind()),
                "{} {:?}",
                r.metric,
                r.sample
            );
        }
    }
}
