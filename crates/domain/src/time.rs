//! Monotonic time as the domain sees it: an opaque instant and the clock port that produces it.

use core::ops::{Add, Sub};
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

/// A point on a monotonic timeline, measured from an origin chosen by the [`Clock`].
///
/// The domain never reads the system clock itself; every rule takes an `Instant` from outside so
/// that a test can drive time by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(Duration);

impl Instant {
    /// The clock's origin.
    pub const ZERO: Self = Self(Duration::ZERO);

    /// An instant `elapsed` after the clock's origin.
    pub const fn from_elapsed(elapsed: Duration) -> Self {
        Self(elapsed)
    }

    /// Time since the clock's origin.
    pub const fn elapsed_since_origin(self) -> Duration {
        self.0
    }

    /// Time from `earlier` to `self`, zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Self) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// The later of two instants.
    #[must_use]
    pub fn max(self, other: Self) -> Self {
        if other > self { other } else { self }
    }
}

impl Add<Duration> for Instant {
    type Output = Self;

    fn add(self, rhs: Duration) -> Self {
        Self(self.0.saturating_add(rhs))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

/// Serialized as seconds since the clock's origin (a float), which is only meaningful next to
/// other instants of the same clock.
#[cfg(feature = "serde")]
impl serde::Serialize for Instant {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.0.as_secs_f64())
    }
}

/// The clock port: where the current time comes from.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// A clock that only moves when told to; for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at its origin.
    pub const fn new() -> Self {
        Self {
            nanos: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `at`; a clock never moves backwards, so an earlier `at` is ignored.
    pub fn set(&self, at: Instant) {
        let at = u64::try_from(at.elapsed_since_origin().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(at, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        Instant::from_elapsed(Duration::from_nanos(self.nanos.load(Ordering::SeqCst)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(3));
        assert_eq!(clock.now(), Instant::from_elapsed(Duration::from_secs(3)));
        clock.set(Instant::from_elapsed(Duration::from_secs(1)));
        assert_eq!(clock.now(), Instant::from_elapsed(Duration::from_secs(3)));
    }

    #[test]
    fn instant_difference_saturates() {
        let early = Instant::from_elapsed(Duration::from_secs(1));
        let late = early + Duration::from_secs(2);
        assert_eq!(late - early, Duration::from_secs(2));
        assert_eq!(early - late, Duration::ZERO);
    }
}
