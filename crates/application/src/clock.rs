//! The clock adapter: domain instants on tokio's timeline, so paused-time tests drive both.

use echelon_domain::time::{Clock, Instant};

/// A [`Clock`] that reads tokio's clock, measured from the moment it was created.
///
/// Under `tokio::time::pause` it stands still until the test advances it, which keeps every
/// timed rule of the domain deterministic in tests of the request engine.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }

    /// The tokio instant for a domain instant, for `sleep_until` and `timeout_at`.
    pub fn to_tokio(&self, at: Instant) -> tokio::time::Instant {
        self.origin + at.elapsed_since_origin()
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::from_elapsed(self.origin.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let clock = TokioClock::new();
        assert_eq!(clock.now(), Instant::ZERO);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), Instant::from_elapsed(Duration::from_secs(5)));
        let at = clock.now() + Duration::from_secs(1);
        assert_eq!(
            clock.to_tokio(at) - tokio::time::Instant::now(),
            Duration::from_secs(1)
        );
    }
}
