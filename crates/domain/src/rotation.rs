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
//! # Ejection limit and panic mode
//!
//! [`Rotation::pick_with_panic`] keeps a pool serving when every member is a little broken
//! (issue 10). Members out of rotation for breaker or health reasons are *ejected*; dead keys and
//! cooldowns (a 429's Retry-After, an exhausted announced quota) are *hard exclusions* and stay
//! out whatever happens.
//!
//! - **Ejection limit** (Envoy's `max_ejection_percent`): at most that share of the members not
//!   hard-excluded (and always at least one) are ejected at a time. When more are, the least-bad
//!   of them come back into rotation until the limit holds again.
//! - **Panic mode**: when no member is in rotation and some are ejected, the least-bad ejected
//!   member serves anyway.
//!
//! Least-bad means: the earliest breaker deadline (or end of rest), then the best success rate
//! over the last ten seconds. A member whose recent calls almost all failed (under
//! [`PANIC_MIN_SUCCESS`]) or that has no recent calls at all is never brought back early: when
//! every ejected member is like that, it is a real outage, and the pool answers at once (503 with
//! Retry-After, and the ladder goes on) instead of adding load; the breakers' half-open trials
//! find the way back. A member brought back is admitted past its open breaker and its health (a
//! success closes its breaker), never past its limits.
//!
//! The computation only runs when a pick meets an ejected member, so a healthy pool pays nothing.

use core::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::events::SkipReason;
use crate::instance::{Ejection, SharedInstance};
use crate::random::Random;
use crate::spec::RotationStrategy;
use crate::time::Instant;

/// Samples an instance needs before `fastest_response` trusts its latency; members with fewer are
/// explored first.
pub const FASTEST_MIN_SAMPLES: u64 = 3;

/// Least share of recent successes an ejected member needs to be brought back by the ejection
/// limit or panic mode; below it the member is failing nearly everything.
pub const PANIC_MIN_SUCCESS: f64 = 0.1;

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

    /// [`Rotation::pick`] with the ejection limit and panic mode (see the module docs), for a
    /// pool that ejects at most `max_ejection_percent` of its members. `check(i, panic)` says
    /// whether member `i` may be used, or why not (`panic`: asking neither health nor breaker);
    /// refusals go to `on_skip`. Returns the member and whether it was brought back past its
    /// ejection.
    pub fn pick_with_panic(
        &self,
        members: &[SharedInstance],
        now: Instant,
        rng: &dyn Random,
        max_ejection_percent: u32,
        check: &mut dyn FnMut(usize, bool) -> Result<(), SkipReason>,
        on_skip: &mut dyn FnMut(usize, SkipReason),
    ) -> Option<(usize, bool)> {
        let mut view: Option<EjectionView> = None;
        let mut brought_back = None;
        let mut first = |i: usize| match check(i, false) {
            Ok(()) => true,
            Err(reason) => {
                if matches!(&reason, SkipReason::Instance(u) if u.is_ejection()) {
                    let v = view.get_or_insert_with(|| {
                        EjectionView::of(members, now, max_ejection_percent)
                    });
                    if v.over_limit.contains(&i) && check(i, true).is_ok() {
                        brought_back = Some(i);
                        return true;
                    }
                }
                on_skip(i, reason);
                false
            }
        };
        if let Some(i) = self.pick(members, now, rng, &mut first) {
            return Some((i, brought_back == Some(i)));
        }
        // Nothing in rotation could serve; ejected members met on the way make it panic mode.
        let view = view?;
        for &i in &view.least_bad {
            match check(i, true) {
                Ok(()) => return Some((i, true)),
                Err(reason) => on_skip(i, reason),
            }
        }
        None
    }

    /// Stable order from a shared ticket;    /// Stable order from a shared ticket; after skipping to member `p`, the next picker starts
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

/// Which ejected members of a pool may come back at a given time: the facts behind one pick's
/// ejection limit and panic mode.
#[derive(Debug, Default)]
struct EjectionView {
    /// Ejected members that may come back (recent successes at least [`PANIC_MIN_SUCCESS`]),
    /// least bad first.
    least_bad: Vec<usize>,
    /// Those of them that come back because the pool is over its ejection limit.
    over_limit: Vec<usize>,
}

impl EjectionView {
    fn of(members: &[SharedInstance], now: Instant, max_ejection_percent: u32) -> Self {
        let mut counted = 0usize;
        let mut ejected: Vec<(usize, Instant, Option<f64>)> = Vec::new();
        for (i, m) in members.iter().enumerate() {
            match m.ejection(now) {
                Ejection::Excluded => {}
                Ejection::InRotation => counted += 1,
                Ejection::Ejected {
                    back_at,
                    recent_success,
                } => {
                    counted += 1;
                    ejected.push((i, back_at.unwrap_or(now), recent_success));
                }
            }
        }
        let limit = (counted * max_ejection_percent.min(100) as usize / 100).max(1);
        let over = ejected.len().saturating_sub(limit);
        let mut least_bad: Vec<(usize, Instant, f64)> = ejected
            .into_iter()
            .filter_map(|(i, back, success)| {
                success
                    .filter(|s| *s >= PANIC_MIN_SUCCESS)
                    .map(|s| (i, back, s))
            })
            .collect();
        least_bad.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)).then(a.0.cmp(&b.0)));
        let least_bad: Vec<usize> = least_bad.into_iter().map(|(i, _, _)| i).collect();
        let over_limit = least_bad.iter().copied().take(over).collect();
        Self {
            least_bad,
            over_limit,
        }
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

    /// Records `ok` successes, then `failed` server errors, on member `m` at `at`.
    fn outcomes(m: &InstanceState, at: Instant, ok: u32, failed: u32) {
        use crate::error::{ErrorClass, UpstreamError};
        let rng = SplitMix64::new(9);
        for _ in 0..ok {
            let p = m.acquire(at, 1, false, &NoopSink).unwrap();
            m.record_success(p, at, Duration::from_millis(5), None, None, &NoopSink, &rng);
        }
        for _ in 0..failed {
            let p = m.acquire(at, 1, false, &NoopSink).unwrap();
            let e = UpstreamError::new(ErrorClass::Server, "boom");
            m.record_failure(p, at, &e, Duration::ZERO, Duration::ZERO, &NoopSink, &rng);
        }
    }

    /// One pick with the members' real availability; the members it skipped.
    fn pick_real(
        r: &Rotation,
        m: &[SharedInstance],
        at: Instant,
        percent: u32,
    ) -> (Option<(usize, bool)>, Vec<usize>) {
        let rng = SplitMix64::new(7);
        let mut skipped = Vec::new();
        let got = r.pick_with_panic(
            m,
            at,
            &rng,
            percent,
            &mut |i, panic| {
                m[i].availability(at, 1, panic)
                    .map_err(SkipReason::Instance)
            },
            &mut |i, _| skipped.push(i),
        );
        (got, skipped)
    }

    #[test]
    fn panic_mode_serves_from_the_least_bad_ejected_member() {
        let m = members(3);
        let r = Rotation::new(RotationStrategy::RoundRobin, &[1; 3]);
        let t = Instant::from_elapsed(Duration::from_secs(1));
        m[0].mark_key_dead(&NoopSink);
        // Member 1 served most of its recent calls before a streak opened its breaker; member 2
        // failed every call.
        outcomes(&m[1], t, 30, 10);
        outcomes(&m[2], t, 0, 10);
        assert!(m[1].availability(t, 1, false).is_err());
        assert!(m[2].availability(t, 1, false).is_err());
        for _ in 0..3 {
            let (got, skipped) = pick_real(&r, &m, t, 50);
            assert_eq!(got, Some((1, true)));
            assert!(
                skipped.contains(&0),
                "the dead key is skipped, never brought back"
            );
        }
        // The member brought back is admitted past its open breaker; its success closes it.
        let p = m[1].acquire(t, 1, true, &NoopSink).unwrap();
        m[1].record_success(
            p,
            t,
            Duration::ZERO,
            None,
            None,
            &NoopSink,
            &SplitMix64::new(1),
        );
        assert_eq!(
            m[1].breaker().state(t),
            crate::breaker::BreakerState::Closed
        );
    }

    #[test]
    fn every_member_failing_everything_is_an_outage_not_a_panic() {
        let m = members(3);
        let r = Rotation::new(RotationStrategy::RoundRobin, &[1; 3]);
        let t = Instant::from_elapsed(Duration::from_secs(1));
        for member in &m {
            outcomes(member, t, 0, 10);
        }
        assert_eq!(pick_real(&r, &m, t, 50).0, None);
        // Nor once the recent calls have left the window: no evidence of success, no early
        // return; the half-open trial at the end of the open time is the way back.
        let later = t + Duration::from_secs(20);
        assert_eq!(pick_real(&r, &m, later, 50).0, None);
        let back = t + Duration::from_secs(40);
        assert!(matches!(pick_real(&r, &m, back, 50).0, Some((_, false))));
    }

    #[test]
    fn ejection_limit_keeps_most_of_a_pool_in_rotation() {
        // Four members: three ejected, but at most half (two) may be out at once, so the
        // least-bad ejected one comes back into rotation; the one failing everything stays out.
        let m = members(4);
        let r = Rotation::new(RotationStrategy::RoundRobin, &[1; 4]);
        let t = Instant::from_elapsed(Duration::from_secs(1));
        outcomes(&m[1], t, 40, 10);
        outcomes(&m[2], t, 10, 10);
        outcomes(&m[3], t, 0, 10);
        let mut seen = [0u32; 4];
        for _ in 0..40 {
            let (got, _) = pick_real(&r, &m, t, 50);
            let (i, brought_back) = got.unwrap();
            assert_eq!(brought_back, i != 0);
            seen[i] += 1;
        }
        assert_eq!(seen[3], 0);
        assert_eq!(seen[2], 0, "only as many come back as the limit needs");
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
        // With no limit (100 %), every ejected member stays out while one serves.
        let (got, _) = pick_real(&r, &m, t, 100);
        assert_eq!(got, Some((0, false)));
    }

    #[test]
    fn a_dead_key_alone_never_triggers_panic_mode() {
        let m = members(2);
        let r = Rotation::new(RotationStrategy::RoundRobin, &[1; 2]);
        for member in &m {
            member.mark_key_dead(&NoopSink);
        }
        assert_eq!(pick_real(&r, &m, Instant::ZERO, 50).0, None);
    }
}
