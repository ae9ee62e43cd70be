//! Series math: samples of a metric for one target over time, and the value of a window read
//! from them (the table in the [module docs](super)).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use echelon_domain::alert::MetricKind;
use echelon_domain::time::Instant;

/// Cumulative histogram buckets: `counts[i]` observations at most `bounds[i]`, and the last
/// count (one more than `bounds`) every observation.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample {
    /// Upper bounds of the finite buckets, ascending.
    pub bounds: Arc<[f64]>,
    /// Cumulative counts, `bounds.len() + 1` of them.
    pub counts: Vec<u64>,
}

impl HistogramSample {
    /// The `q` quantile (0–1) with linear interpolation inside a bucket, as Prometheus's
    /// `histogram_quantile` does; `None` without observations. Observations above the last
    /// bound are placed at the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = *self.counts.last()?;
        if total == 0 || self.counts.len() != self.bounds.len() + 1 {
            return None;
        }
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (i, &count) in self.counts.iter().enumerate() {
            let Some(&upper) = self.bounds.get(i) else {
                return self.bounds.last().copied();
            };
            #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            if count as f64 >= rank && count > below {
                let inside = (count - below) as f64;
                let into = (rank - below as f64).max(0.0);
                return Some(lower + (upper - lower) * (into / inside));
            }
            below = count;
            lower = upper;
        }
        self.bounds.last().copied()
    }

    pub(crate) fn minus(&self, earlier: &Self) -> Self {
        let reset =
            earlier.counts.len() != self.counts.len() || self.counts.last() < earlier.counts.last();
        let counts = if reset {
            self.counts.clone()
        } else {
            self.counts
                .iter()
                .zip(&earlier.counts)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect()
        };
        Self {
            bounds: Arc::clone(&self.bounds),
            counts,
        }
    }
}

/// One reading of a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A value at this moment.
    Gauge(f64),
    /// A cumulative count.
    Counter(f64),
    /// Cumulative numerator and denominator.
    Ratio {
        /// E.g. failed attempts so far.
        numerator: f64,
        /// E.g. finished attempts so far.
        denominator: f64,
    },
    /// Cumulative histogram buckets.
    Histogram(HistogramSample),
}

impl Sample {
    pub(crate) fn fits(&self, kind: MetricKind) -> bool {
        matches!(
            (self, kind),
            (Self::Gauge(_), MetricKind::Gauge)
                | (Self::Counter(_), MetricKind::Counter)
                | (Self::Ratio { .. }, MetricKind::Ratio)
                | (Self::Histogram(_), MetricKind::Quantile(_))
        )
    }

    pub(crate) fn zero_like(&self) -> Self {
        match self {
            Self::Gauge(_) => Self::Gauge(0.0),
            Self::Counter(_) => Self::Counter(0.0),
            Self::Ratio { .. } => Self::Ratio {
                numerator: 0.0,
                denominator: 0.0,
            },
            Self::Histogram(h) => Self::Histogram(HistogramSample {
                bounds: Arc::clone(&h.bounds),
                counts: vec![0; h.counts.len()],
            }),
        }
    }
}

/// The samples of one metric for one target, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Series {
    pub(crate) samples: VecDeque<(Instant, Sample)>,
}

impl Series {
    /// The sample at or before `at` (the window's baseline), else the first one after it.
    fn baseline(&self, at: Instant) -> Option<&(Instant, Sample)> {
        self.samples
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .or_else(|| self.samples.front())
    }

    /// The latest sample at or before `at`.
    fn last_at(&self, at: Instant) -> Option<&(Instant, Sample)> {
        self.samples.iter().rev().find(|(t, _)| *t <= at)
    }

    /// The value over `(from, to]`, see the module docs.
    pub(crate) fn over(&self, kind: MetricKind, from: Instant, to: Instant) -> Option<f64> {
        match kind {
            MetricKind::Gauge => {
                let values: Vec<f64> = self
                    .samples
                    .iter()
                    .filter(|(t, _)| *t > from && *t <= to)
                    .filter_map(|(_, s)| match s {
                        Sample::Gauge(v) => Some(*v),
                        _ => None,
                    })
                    .collect();
                if values.is_empty() {
                    // No sample inside the window (evaluations sparser than the window): the
                    // latest value stands for it.
                    return match self.last_at(to) {
                        Some((_, Sample::Gauge(v))) => Some(*v),
                        _ => None,
                    };
                }
                #[allow(clippy::cast_precision_loss, reason = "few samples")]
                let n = values.len() as f64;
                Some(values.iter().sum::<f64>() / n)
            }
            MetricKind::Counter => {
                let (t0, _) = self.baseline(from)?;
                let (t1, _) = self.last_at(to)?;
                (t1 > t0).then(|| self.increase(*t0, *t1, |s| counter(s).unwrap_or(0.0)))
            }
            MetricKind::Ratio => {
                let (t0, _) = self.baseline(from)?;
                let (t1, _) = self.last_at(to)?;
                if t1 <= t0 {
                    return None;
                }
                let numerator = self.increase(*t0, *t1, |s| ratio(s).0);
                let denominator = self.increase(*t0, *t1, |s| ratio(s).1);
                (denominator > 0.0).then(|| numerator / denominator)
            }
            MetricKind::Quantile(q) => {
                let (t0, s0) = self.baseline(from)?;
                let (t1, s1) = self.last_at(to)?;
                match (s0, s1) {
                    (Sample::Histogram(h0), Sample::Histogram(h1)) if t1 > t0 => {
                        h1.minus(h0).quantile(q)
                    }
                    _ => None,
                }
            }
        }
    }

    /// The change over the window ending at `now`, see the module docs.
    pub(crate) fn trend(&self, kind: MetricKind, now: Instant, window: Duration) -> Option<f64> {
        let start = now.saturating_back(window);
        match kind {
            MetricKind::Gauge => {
                let (_, first) = self.baseline(start)?;
                let (_, last) = self.last_at(now)?;
                match (first, last) {
                    (Sample::Gauge(a), Sample::Gauge(b)) => Some(b - a),
                    _ => None,
                }
            }
            MetricKind::Counter => self.over(kind, start, now),
            MetricKind::Ratio => {
                let recent = self.over(kind, start, now)?;
                let before = self
                    .over(kind, start.saturating_back(window), start)
                    .unwrap_or(0.0);
                Some(recent - before)
            }
            MetricKind::Quantile(_) => {
                let recent = self.over(kind, start, now)?;
                let before = self.over(kind, start.saturating_back(window), start)?;
                Some(recent - before)
            }
        }
    }

    /// The increase of `value` between the samples at `t0` and `t1`, counting a decrease as a
    /// restart from zero.
    fn increase(&self, t0: Instant, t1: Instant, value: impl Fn(&Sample) -> f64) -> f64 {
        let mut total = 0.0;
        let mut previous: Option<f64> = None;
        for (_, s) in self.samples.iter().filter(|(t, _)| *t >= t0 && *t <= t1) {
            let v = value(s);
            if let Some(p) = previous {
                total += if v >= p { v - p } else { v };
            }
            previous = Some(v);
        }
        total
    }
}

fn counter(s: &Sample) -> Option<f64> {
    match s {
        Sample::Counter(v) => Some(*v),
        _ => None,
    }
}

fn ratio(s: &Sample) -> (f64, f64) {
    match s {
        Sample::Ratio {
            numerator,
            denominator,
        } => (*numerator, *denominator),
        _ => (0.0, 0.0),
    }
}

pub(crate) trait SaturatingBack {
    fn saturating_back(self, by: Duration) -> Self;
}

impl SaturatingBack for Instant {
    fn saturating_back(self, by: Duration) -> Self {
        Instant::from_elapsed(self.elapsed_since_origin().saturating_sub(by))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let h = HistogramSample {
            bounds: Arc::from(vec![1.0, 2.0, 4.0]),
            counts: vec![50, 90, 100, 100],
        };
        assert_eq!(h.quantile(0.5), Some(1.0));
        assert!((h.quantile(0.7).unwrap() - 1.5).abs() < 1e-9);
        assert!((h.quantile(0.95).unwrap() - 3.0).abs() < 1e-9);
        let empty = HistogramSample {
            bounds: Arc::from(vec![1.0]),
            counts: vec![0, 0],
        };
        assert_eq!(empty.quantile(0.95), None);
        let overflow = HistogramSample {
            bounds: Arc::from(vec![1.0]),
            counts: vec![0, 10],
        };
        assert_eq!(overflow.quantile(0.95), Some(1.0));
    }

    fn secs(s: u64) -> Instant {
        Instant::from_elapsed(Duration::from_secs(s))
    }

    fn series(samples: &[(u64, Sample)]) -> Series {
        Series {
            samples: samples.iter().map(|(t, s)| (secs(*t), s.clone())).collect(),
        }
    }

    #[test]
    fn a_counter_that_goes_down_restarted_from_zero() {
        let s = series(&[
            (0, Sample::Counter(100.0)),
            (30, Sample::Counter(130.0)),
            (60, Sample::Counter(5.0)),
        ]);
        assert_eq!(s.over(MetricKind::Counter, secs(0), secs(60)), Some(35.0));
    }

    #[test]
    fn a_gauge_window_without_samples_takes_the_latest_value() {
        let s = series(&[(0, Sample::Gauge(0.25)), (10, Sample::Gauge(0.75))]);
        assert_eq!(s.over(MetricKind::Gauge, secs(0), secs(10)), Some(0.75));
        assert_eq!(s.over(MetricKind::Gauge, secs(100), secs(200)), Some(0.75));
        assert_eq!(
            s.trend(MetricKind::Gauge, secs(10), Duration::from_secs(10)),
            Some(0.5)
        );
    }
}
