//! The randomness port and a small deterministic generator for tests and embedders.

use core::sync::atomic::{AtomicU64, Ordering};

/// The randomness port: a source of uniformly distributed 64-bit values.
///
/// Strategies and jitter draw from it so that a test can replay exactly the same choices.
pub trait Random: Send + Sync {
    /// The next uniformly distributed value.
    fn next_u64(&self) -> u64;

    /// A uniform value in `0..bound`; `bound` must be non-zero.
    fn below(&self, bound: u64) -> u64 {
        debug_assert!(bound > 0, "below() needs a non-zero bound");
        // Lemire's multiply-shift: unbiased enough for load balancing and free of division.
        ((u128::from(self.next_u64()) * u128::from(bound.max(1))) >> 64) as u64
    }

    /// A uniform value in `[0, 1)`.
    fn unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// SplitMix64: a tiny, fast, seedable generator. Not for cryptography.
#[derive(Debug)]
pub struct SplitMix64 {
    state: AtomicU64,
}

impl SplitMix64 {
    /// A generator that yields the same sequence for the same seed.
    pub const fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }
}

impl Random for SplitMix64 {
    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a = SplitMix64::new(7);
        let b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn below_stays_in_range_and_unit_in_unit_interval() {
        let rng = SplitMix64::new(1);
        for _ in 0..10_000 {
            assert!(rng.below(3) < 3);
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
