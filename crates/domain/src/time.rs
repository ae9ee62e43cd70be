//! Monotonic time as the domain sees it: an opaque instant and the clock port that produces it,
//! and [`DurationText`], the one way Echelon writes a duration for people and for the admin API.

use core::fmt;
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

/// A duration written the way configuration files write it: `0s`, `250ms`, `1.5s`, `30s`, `5m`,
/// `1h30m`, `12.5us`. Exact to the nanosecond, so `echelon-config` parses it back to the same
/// value; [`DurationText::approx`] rounds first, for table cells and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

impl DurationText {
    /// The duration rounded for reading at a glance: whole seconds from 10 s, tenths of a second
    /// from 1 s, whole milliseconds from 1 ms, whole microseconds below.
    pub fn approx(duration: Duration) -> Self {
        let nanos = duration.as_nanos();
        let step: u128 = match nanos {
            10_000_000_000.. => 1_000_000_000,
            1_000_000_000.. => 100_000_000,
            1_000_000.. => 1_000_000,
            _ => 1_000,
        };
        let rounded = (nanos + step / 2) / step * step;
        Self(Duration::from_nanos(
            u64::try_from(rounded).unwrap_or(u64::MAX),
        ))
    }
}

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        if d.subsec_nanos() == 0 {
            let mut secs = d.as_secs();
            for (unit, size) in [("d", 86_400u64), ("h", 3600), ("m", 60), ("s", 1)] {
                if secs >= size {
                    write!(f, "{}{unit}", secs / size)?;
                    secs %= size;
                }
            }
            return Ok(());
        }
        let nanos = d.as_nanos();
        let (unit, size, digits) = match nanos {
            1_000_000_000.. => ("s", 1_000_000_000u128, 9),
            1_000_000.. => ("ms", 1_000_000, 6),
            1_000.. => ("us", 1_000, 3),
            _ => ("ns", 1, 0),
        };
        write!(f, "{}", nanos / size)?;
        let fraction = nanos % size;
        if fraction != 0 {
            let text = format!("{fraction:0digits$}");
            write!(f, ".{}", text.trim_end_matches('0'))?;
        }
        f.write_str(unit)
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

    #[test]
    fn durations_are_written_as_configuration_writes_them() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(2 * 86_400 + 1), "2d1s"),
            (Duration::from_micros(12_345), "12.345ms"),
            (Duration::from_nanos(12_500), "12.5us"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::new(90, 250_000_000), "90.25s"),
        ];
        for (duration, text) in cases {
            assert_eq!(DurationText(duration).to_string(), text);
        }
    }

    #[test]
    fn approximate_durations_round_to_what_a_glance_needs() {
        let cases = [
            (Duration::from_micros(12_345), "12ms"),
            (Duration::from_millis(1234), "1.2s"),
            (Duration::from_millis(12_600), "13s"),
            (Duration::from_nanos(12_600), "13us"),
            (Duration::from_millis(75_000), "1m15s"),
            (Duration::from_millis(2000), "2s"),
        ];
        for (duration, text) in cases {
            assert_eq!(DurationText::approx(duration).to_string(), text);
        }
    }
}
