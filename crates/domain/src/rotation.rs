//! Rotation strategies: which member of a pool takes the next request.
//!
//! A [`Rotation`] is built once per pool from its strategy and its members' weights, and is shared
//! by every request. [`Rotation::pick`] asks an `eligible` callback about candidates in the
//! strategy's order and returns the first one accepted; unavailable members are skipped without
//! disturbing the order of the others.
//!
//! Costs per pick, with `n` members and `s` members skipped on the way:
//!
//! | strategy | cost |
//! |---|---|
//! | `round_robin` | O(1 + s): an atomic cursor |
//! | `weighted_round_robin` | O((1 + s) log n): earliest-deadline-first on virtual time (Envoy's scheduler) |
//! | `weighted_random`, `random` | O(log n) per draw: prefix sums and binary search; rejection sampling, then one linear pass after 8 rejected draws |
//! | `p2c_ewma` | two draws as above |
//! | `least_connections`, `least_recently_used`, `fastest_response` | O(n): they compare every member |
//!
//! # Panic policy
//!
//! [`Rotation::pick_with_panic`] first looks for a member that is fully available. When none is,
//! and at least one member was refused *only* because it is unhealthy and still resting, it runs
//! a second pass that ignores health. That pass still honours dead keys, cooldowns, open
//! breakers, saturated limits and the request's own exclusions. The rule is Envoy's panic mode
//! with a threshold of zero healthy members: an instance that merely looks unhealthy may well
//! answer, so while nothing healthy is left, trying it beats turning possible capacity into an
//! error (LiteLLM #16060).

use core::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::events::SkipReason;
use crate::instance::{SharedInstance, Unavailable};
use crate::random::Random;
use crate::spec::RotationStrategy;
use crate::time::Instant;

/// Samples an instance needs before `fastest_response` trusts its latency; members with fewer are
/// explored first.
pub const FASTEST_MIN_SAMPLES: u64 = 3;

/// Random draws tried before a random strategy falls back to one linear pass over the members.
const REJECTION_DRAWS: usize = 8;

/// Virtual-time unit of the EDF scheduler: a member of weight `w` advances by `VIRTUAL / w`.
const VIRTUAL: u128 = 1 << 64;

/// The rotation state of one pool.
#[derive(Debug)]
pub struct Rotation {
    strategy: RotationStrategy,
    /// Cumulative weights: `prefix[i]` = weights of members `0..=i`.
    prefix: Box<[u64]>,
    /// Round-robin ticket; the member at `ticket % n` goes next.
    cursor: AtomicU64,
    /// EDF heap of `(next deadline, member)` for `weighted_round_robin`.
    edf: Mutex<BinaryHeap<Reverse<(u128, u32)>>>,
    strides: Box<[u128]>,
}

impl Rotation {
    /// A rotation over members with the given weights (a weight of 0 counts as 1).
    pub fn new(strategy: RotationStrategy, weights: &[u32]) -> Self {
        let mut total = 0u64;
        let prefix = weights
            .iter()
            .map(|w| {
                total += u64::from((*w).max(1));
                total
            })
            .collect();
        let strides: Box<[u128]> = weights
            .iter()
            .map(|w| VIRTUAL / u128::from((*w).max(1)))
            .collect();
        let heap = if strategy == RotationStrategy::WeightedRoundRobin {
            // Start every member half a stride in, so heavy members do not all go first.
            strides
                .iter()
                .enumerate()
                .map(|(i, s)| Reverse((s / 2, u32::try_from(i).unwrap_or(u32::MAX))))
                .collect()
        } else {
            BinaryHeap::new()
        };
        Self {
            strategy,
            prefix,
            cursor: AtomicU64::new(0),
            edf: Mutex::new(heap),
            strides,
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> RotationStrategy {
        self.strategy
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.prefix.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.prefix.is_empty()
    }

    /// The weight of member `i`.
    pub fn weight(&self, i: usize) -> u64 {
        self.prefix[i] - if i == 0 { 0 } else { self.prefix[i - 1] }
    }

    fn total_weight(&self) -> u64 {
        self.prefix.last().copied().unwrap_or(0)
    }

    /// Picks a member, asking `eligible` about candidates in the strategy's order (it may be
    /// asked about the same member more than once). `members` are the pool's live states in the
    /// order the rotation was built with.
    pub fn pick(
        &self,
        members: &[SharedInstance],
        now: Instant,
        rng: &dyn Random,
        eligible: &mut dyn FnMut(usize) -> bool,
    ) -> Option<usize> {
        let n = members.len().min(self.len());
        if n == 0 {
            return None;
        }
        match self.strategy {
            RotationStrategy::RoundRobin => self.round_robin(n, eligible),
            RotationStrategy::WeightedRoundRobin => self.earliest_deadline(n, eligible),
            RotationStrategy::WeightedRandom => self.random_member(n, true, rng, None, eligible),
            RotationStrategy::Random => self.random_member(n, false, rng, None, eligible),
            RotationStrategy::LeastConnections => {
                least_by(n, rng, eligible, |i| f64::from(members[i].in_flight()))
            }
            RotationStrategy::LeastRecentlyUsed => least_by(n, rng, eligible, |i| {
                members[i]
                    .last_used()
                    .map_or(-1.0, |t| t.elapsed_since_origin().as_secs_f64())
            }),
            RotationStrategy::FastestResponse => fastest(members, n, rng, eligible),
            RotationStrategy::P2cEwma => {
                let a = self.random_member(n, false, rng, None, eligible)?;
                let Some(b) = self.random_member(n, false, rng, Some(a), eligible) else {
                    return Some(a);
                };
                if members[b].p2c_cost(now) < members[a].p2c_cost(now) {
                    Some(b)
                } else {
                    Some(a)
                }
            }
        }
    }

    /// [`Rotation::pick`] with the panic policy (see the module docs). `check(i, ignore_health)`
    /// says whether member `i` may be used, or why not; refusals go to `on_skip`. Returns the
    /// member and whether it was picked in panic mode.
    pub fn pick_with_panic(
        &self,
        members: &[SharedInstance],
        now: Instant,
        rng: &dyn Random,
        check: &mut dyn FnMut(usize, bool) -> Result<(), SkipReason>,
        on_skip: &mut dyn FnMut(usize, SkipReason),
    ) -> Option<(usize, bool)> {
        let mut resting = false;
        let mut first = |i: usize| match check(i, false) {
            Ok(()) => true,
            Err(reason) => {
                resting |= matches!(reason, SkipReason::Instance(Unavailable::Unhealthy { .. }));
                on_skip(i, reason);
                false
            }
        };
        if let Some(i) = self.pick(members, now, rng, &mut first) {
            return Some((i, false));
        }
        if !resting {
            return None;
        }
        let mut second = |i: usize| match check(i, true) {
            Ok(()) => true,
            Err(reason) => {
                on_skip(i, reason);
                false
            }
        };
        self.pick(members, now, rng, &mut second).map(|i| (i, true))
    }

    /// Stable order from a shared ticket; after skipping to member `p`, the next picker starts
    /// after `p`, so a skipped member never shifts the turn of the others.
    fn round_robin(&self, n: usize, eligible: &mut dyn FnMut(usize) -> bool) -> Option<usize> {
        let ticket = self.cursor.fetch_add(1, Ordering::Relaxed);
        let n64 = n as u64;
        for step in 0..n64 {
            let position = ticket.wrapping_add(step);
            let i = (position % n64) as usize;
            if eligible(i) {
                if step > 0 {
                    self.cursor
                        .fetch_max(position.wrapping_add(1), Ordering::Relaxed);
                }
                return Some(i);
            }
        }
        None
    }

    /// Earliest deadline first: each member's next deadline advances by `VIRTUAL / weight` per
    /// turn. A skipped member is set aside for this pick and re-enters one stride after the
    /// winner's deadline, as if it had just been served: it earns no credit while unavailable,
    /// so it neither bursts when it comes back nor changes the interleaving of the others.
    fn earliest_deadline(
        &self,
        n: usize,
        eligible: &mut dyn FnMut(usize) -> bool,
    ) -> Option<usize> {
        // A panic inside `eligible` leaves the heap a valid heap (set-aside entries are lost until
        // the rotation is rebuilt), so a poisoned lock is still usable.
        let mut heap = self.edf.lock().unwrap_or_else(PoisonError::into_inner);
        let mut skipped: Vec<(u128, u32)> = Vec::new();
        let mut winner = None;
        while let Some(Reverse((deadline, member))) = heap.pop() {
            let i = member as usize;
            if i < n && eligible(i) {
                heap.push(Reverse((deadline + self.strides[i], member)));
                winner = Some((i, deadline));
                break;
            }
            skipped.push((deadline, member));
        }
        for (deadline, member) in skipped {
            let next = match winner {
                Some((_, now)) => now + self.strides[member as usize],
                None => deadline,
            };
            heap.push(Reverse((next, member)));
        }
        winner.map(|(i, _)| i)
    }

    /// A random member, in proportion to weight when `weighted`; `other` is excluded.
    fn random_member(
        &self,
        n: usize,
        weighted: bool,
        rng: &dyn Random,
        other: Option<usize>,
        eligible: &mut dyn FnMut(usize) -> bool,
    ) -> Option<usize> {
        let weight = |i: usize| if weighted { self.weight(i) } else { 1 };
        for _ in 0..REJECTION_DRAWS {
            let i = if weighted {
                let r = rng.below(self.total_weight());
                self.prefix.partition_point(|&p| p <= r)
            } else {
                rng.below(n as u64) as usize
            };
            if i < n && Some(i) != other && eligible(i) {
                return Some(i);
            }
        }
        // Many members are unavailable: one pass over all of them, then an exact draw among the
        // eligible ones, so shares stay proportional whatever is cooling.
        let mut total = 0u64;
        let candidates: Vec<(usize, u64)> = (0..n)
            .filter(|&i| Some(i) != other && eligible(i))
            .map(|i| {
                total += weight(i);
                (i, total)
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let r = rng.below(total);
        let at = candidates.partition_point(|&(_, cumulative)| cumulative <= r);
        candidates.get(at).map(|&(i, _)| i)
    }
}

/// The eligible member with the smallest `key`; ties go to a uniformly random one of them, so no
/// member wins ties by its position (LiteLLM #37622).
fn least_by(
    n: usize,
    rng: &dyn Random,
    eligible: &mut dyn FnMut(usize) -> bool,
    key: impl Fn(usize) -> f64,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    let mut ties = 0u64;
    for i in 0..n {
        let k = key(i);
        // Compare before asking: members that cannot win are never checked.
        if best.is_some_and(|(_, b)| k > b) || !eligible(i) {
            continue;
        }
        match best {
            Some((_, b)) if k == b => {
                ties += 1;
                if rng.below(ties + 1) == 0 {
                    best = Some((i, k));
                }
            }
            _ => {
                best = Some((i, k));
                ties = 0;
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Explore members with fewer than [`FASTEST_MIN_SAMPLES`] samples first (fewest samples plus in
/// flight, so concurrent requests spread over them), then the lowest latency average.
fn fastest(
    members: &[SharedInstance],
    n: usize,
    rng: &dyn Random,
    eligible: &mut dyn FnMut(usize) -> bool,
) -> Option<usize> {
    let mut unsampled = Vec::new();
    let mut sampled = Vec::new();
    for (i, member) in members.iter().enumerate().take(n) {
        if member.samples() < FASTEST_MIN_SAMPLES {
            unsampled.push(i);
        } else {
            sampled.push(i);
        }
    }
    let explore = least_by(unsampled.len(), rng, &mut |k| eligible(unsampled[k]), |k| {
        let m = &members[unsampled[k]];
        (m.samples() + u64::from(m.in_flight())) as f64
    });
    if let Some(k) = explore {
        return Some(unsampled[k]);
    }
    least_by(sampled.len(), rng, &mut |k| eligible(sampled[k]), |k| {
        members[sampled[k]].ewma_ms().unwrap_or(0.0)
    })
    .map(|k| sampled[k])
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;
    use std::sync::Arc;

    use crate::events::NoopSink;
    use crate::instance::{InstancePolicy, InstanceState};
    use crate::name::{InstanceId, ModelRef};
    use crate::random::SplitMix64;
    use crate::spec::{InstanceSpec, Limits};

    fn members(n: usize) -> Vec<SharedInstance> {
        (0..n)
            .map(|i| {
                Arc::new(InstanceState::new(
                    InstanceSpec {
                        id: InstanceId::new(ModelRef::new("p", "m"), i as u16),
                        upstream_name: "m".into(),
                        weight: 1,
                        limits: Limits::default(),
                        context_window: None,
                    },
                    InstancePolicy::default(),
                    Instant::ZERO,
                ))
            })
            .collect()
    }

    fn picks(
        rotation: &Rotation,
        members: &[SharedInstance],
        rng: &dyn Random,
        count: usize,
        available: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        (0..count)
            .map(|_| {
                rotation
                    .pick(members, Instant::ZERO, rng, &mut |i| available(i))
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn round_robin_skips_without_shifting_the_others() {
        let m = members(4);
        let r = Rotation::new(RotationStrategy::RoundRobin, &[1; 4]);
        let rng = SplitMix64::new(1);
        assert_eq!(picks(&r, &m, &rng, 5, |_| true), [0, 1, 2, 3, 0]);
        // Member 2 cools down: the order of the others stays 0, 1, 3.
        assert_eq!(picks(&r, &m, &rng, 6, |i| i != 2), [1, 3, 0, 1, 3, 0]);
        assert_eq!(picks(&r, &m, &rng, 4, |_| true), [1, 2, 3, 0]);
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves_deterministically() {
        let m = members(3);
        let r = Rotation::new(RotationStrategy::WeightedRoundRobin, &[5, 1, 1]);
        let rng = SplitMix64::new(1);
        let seq = picks(&r, &m, &rng, 7, |_| true);
        assert_eq!(seq, [0, 0, 0, 1, 2, 0, 0]);
        let again = picks(&r, &m, &rng, 700, |_| true);
        let count = |k| again.iter().filter(|&&i| i == k).count();
        assert_eq!((count(0), count(1), count(2)), (500, 100, 100));
    }

    #[test]
    fn weighted_round_robin_does_not_burst_after_a_cooldown() {
        let m = members(2);
        let r = Rotation::new(RotationStrategy::WeightedRoundRobin, &[1, 1]);
        let rng = SplitMix64::new(1);
        picks(&r, &m, &rng, 50, |i| i == 0);
        let seq = picks(&r, &m, &rng, 6, |_| true);
        assert_eq!(seq.iter().filter(|&&i| i == 1).count(), 3);
    }

    #[test]
    fn weighted_random_follows_weights_even_when_first_is_light() {
        // LiteLLM #33329: the first member's weight must not decide whether weights apply.
        let m = members(3);
        let r = Rotation::new(RotationStrategy::WeightedRandom, &[1, 3, 6]);
        let rng = SplitMix64::new(9);
        let seq = picks(&r, &m, &rng, 10_000, |_| true);
        let share = |k| seq.iter().filter(|&&i| i == k).count() as f64 / 10_000.0;
        assert!((share(0) - 0.1).abs() < 0.02);
        assert!((share(1) - 0.3).abs() < 0.02);
        assert!((share(2) - 0.6).abs() < 0.02);
        // With the heavy member cooling, the others keep a 1:3 ratio.
        let seq = picks(&r, &m, &rng, 10_000, |i| i != 2);
        let share = |k| seq.iter().filter(|&&i| i == k).count() as f64 / 10_000.0;
        assert!((share(0) - 0.25).abs() < 0.02);
    }

    #[test]
    fn random_covers_all_and_none_when_nothing_is_eligible() {
        let m = members(5);
        let r = Rotation::new(RotationStrategy::Random, &[1; 5]);
        let rng = SplitMix64::new(2);
        let seq = picks(&r, &m, &rng, 1_000, |i| i % 2 == 0);
        assert!(seq.iter().all(|i| i % 2 == 0));
        assert!([0, 2, 4].iter().all(|k| seq.contains(k)));
        assert_eq!(r.pick(&m, Instant::ZERO, &rng, &mut |_| false), None);
    }

    #[test]
    fn least_connections_spreads_ties_and_prefers_idle() {
        let m = members(4);
        let r = Rotation::new(RotationStrategy::LeastConnections, &[1; 4]);
        let rng = SplitMix64::new(3);
        let seq = picks(&r, &m, &rng, 400, |_| true);
        // LiteLLM #37622: ties must not all go to the first member.
        for k in 0..4 {
            let c = seq.iter().filter(|&&i| i == k).count();
            assert!((60..140).contains(&c), "member {k} got {c}");
        }
        let _busy: Vec<_> = [0, 1, 3]
            .iter()
            .map(|&i| m[i].acquire(Instant::ZERO, 1, false, &NoopSink).unwrap())
            .collect();
        assert_eq!(picks(&r, &m, &rng, 3, |_| true), [2, 2, 2]);
    }

    #[test]
    fn least_recently_used_takes_the_longest_idle() {
        let m = members(3);
        let r = Rotation::new(RotationStrategy::LeastRecentlyUsed, &[1; 3]);
        let rng = SplitMix64::new(4);
        let at = |s| Instant::from_elapsed(Duration::from_secs(s));
        drop(m[0].acquire(at(5), 1, false, &NoopSink).unwrap());
        drop(m[1].acquire(at(3), 1, false, &NoopSink).unwrap());
        drop(m[2].acquire(at(4), 1, false, &NoopSink).unwrap());
        assert_eq!(picks(&r, &m, &rng, 1, |_| true), [1]);
        assert_eq!(picks(&r, &m, &rng, 1, |i| i != 1), [2]);
    }

    #[test]
    fn fastest_response_explores_then_exploits() {
        let m = members(3);
        let r = Rotation::new(RotationStrategy::FastestResponse, &[1; 3]);
        let rng = SplitMix64::new(5);
        let latencies = [300u64, 50, 120];
        for (i, member) in m.iter().enumerate() {
            // Member 0 gets its minimum samples; the others are still unsampled.
            let samples = if i == 0 { FASTEST_MIN_SAMPLES } else { 0 };
            for _ in 0..samples {
                let p = member.acquire(Instant::ZERO, 1, false, &NoopSink).unwrap();
                member.record_success(
                    p,
                    Instant::ZERO,
                    Duration::from_millis(latencies[i]),
                    None,
                    None,
                    &NoopSink,
                    &rng,
                );
            }
        }
        let first = picks(&r, &m, &rng, 1, |_| true)[0];
        assert_ne!(first, 0, "unsampled members are explored first");
        for (i, member) in m.iter().enumerate().skip(1) {
            for _ in 0..FASTEST_MIN_SAMPLES {
                let p = member.acquire(Instant::ZERO, 1, false, &NoopSink).unwrap();
                member.record_success(
                    p,
                    Instant::ZERO,
                    Duration::from_millis(latencies[i]),
                    None,
                    None,
                    &NoopSink,
                    &rng,
                );
            }
        }
        assert_eq!(picks(&r, &m, &rng, 3, |_| true), [1, 1, 1]);
        assert_eq!(picks(&r, &m, &rng, 1, |i| i != 1), [2]);
    }

    #[test]
    fn p2c_avoids_rate_limited_fast_keys() {
        use crate::error::{ErrorClass, UpstreamError};
        let m = members(2);
        let r = Rotation::new(RotationStrategy::P2cEwma, &[1; 2]);
        let rng = SplitMix64::new(6);
        for (i, ms) in [(0, 200u64), (1, 200)] {
            let p = m[i].acquire(Instant::ZERO, 1, false, &NoopSink).unwrap();
            m[i].record_success(
                p,
                Instant::ZERO,
                Duration::from_millis(ms),
                None,
                None,
                &NoopSink,
                &rng,
            );
        }
        // Member 0 answers 429 in 2 ms, twice; it must not attract traffic.
        for _ in 0..2 {
            let p = m[0].acquire(Instant::ZERO, 1, false, &NoopSink).unwrap();
            let e = UpstreamError::new(ErrorClass::RateLimited, "slow down");
            m[0].record_failure(
                p,
                Instant::ZERO,
                &e,
                Duration::from_millis(2),
                Duration::ZERO,
                &NoopSink,
                &rng,
            );
        }
        let seq = picks(&r, &m, &rng, 100, |_| true);
        assert!(seq.iter().all(|&i| i == 1));
    }

    #[test]
    fn panic_mode_tries_unhealthy_members_only_when_nothing_healthy_is_left() {
        let m = members(3);
        let r = Rotation::new(RotationStrategy::RoundRobin, &[1; 3]);
        let rng = SplitMix64::new(7);
        let unhealthy = SkipReason::Instance(Unavailable::Unhealthy {
            until: Instant::ZERO,
        });
        let mut skipped = Vec::new();
        let got = r.pick_with_panic(
            &m,
            Instant::ZERO,
            &rng,
            &mut |i, ignore| match (i, ignore) {
                (0, _) => Err(SkipReason::Instance(Unavailable::KeyDead)),
                (_, false) => Err(unhealthy.clone()),
                _ => Ok(()),
            },
            &mut |i, reason| skipped.push((i, reason)),
        );
        assert!(matches!(got, Some((1 | 2, true))));
        assert!(skipped.contains(&(0, SkipReason::Instance(Unavailable::KeyDead))));
        // A dead key alone never triggers panic mode.
        let got = r.pick_with_panic(
            &m,
            Instant::ZERO,
            &rng,
            &mut |_, _| Err(SkipReason::Instance(Unavailable::KeyDead)),
            &mut |_, _| {},
        );
        assert_eq!(got, None);
    }
}
