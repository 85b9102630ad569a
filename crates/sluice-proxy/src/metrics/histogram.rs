//! A lock-free histogram with fixed buckets: one atomic counter per bucket
//! plus a sum, so an observation is a bucket search over a few bounds and
//! two relaxed `fetch_add`s (no lock, no allocation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (inclusive, seconds) of the decision latency buckets:
/// authorize plus destination validation, from about 1 µs to 100 ms.
pub(super) const DECISION_BOUNDS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 1e-1,
];

/// Upper bounds (seconds) of the middleware stage latency buckets: built-in
/// stages run in microseconds, a registered gRPC service in milliseconds up
/// to its timeout.
pub(super) const MIDDLEWARE_BOUNDS: &[f64] = &[
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Most buckets a histogram may have (its bounds, plus `+Inf`).
const MAX_BUCKETS: usize = 24;

/// Fixed-bucket histogram of durations. Bucket `i` counts observations `<=
/// bounds[i]` and `> bounds[i - 1]`; the last bucket counts the rest (`+Inf`).
/// Counts are kept per bucket (not cumulative) and summed when encoded.
pub(super) struct Histogram {
    /// Bounds in nanoseconds (compared on the hot path), same order as `bounds`.
    bounds_ns: [u64; MAX_BUCKETS],
    /// Bounds in seconds, as encoded in `le`.
    bounds: &'static [f64],
    buckets: [AtomicU64; MAX_BUCKETS],
    sum_ns: AtomicU64,
}

/// A consistent-enough copy of a histogram for encoding.
#[derive(Debug, PartialEq)]
pub(super) struct Snapshot {
    /// `(le, cumulative count)` for every bound, then `+Inf` (`le = None`).
    pub(super) cumulative: Vec<(Option<f64>, u64)>,
    pub(super) sum_seconds: f64,
    pub(super) count: u64,
}

impl Histogram {
    /// A histogram over `bounds` (strictly increasing seconds, fewer than
    /// [`MAX_BUCKETS`]; checked in debug builds and by the tests).
    pub(super) fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.len() < MAX_BUCKETS);
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        let mut bounds_ns = [u64::MAX; MAX_BUCKETS];
        for (ns, s) in bounds_ns.iter_mut().zip(bounds) {
            // Bounds are small positive constants: the cast cannot overflow.
            *ns = (s * 1e9).round() as u64;
        }
        Self {
            bounds_ns,
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// The bucket an observation of `ns` nanoseconds falls in.
    fn bucket(&self, ns: u64) -> usize {
        let n = self.bounds.len();
        self.bounds_ns[..n]
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(n)
    }

    /// Records one observation.
    pub(super) fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[self.bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The cumulative counts, sum and count. `count` is the `+Inf` bucket,
    /// so the two always agree in one encoding.
    pub(super) fn snapshot(&self) -> Snapshot {
        let mut cumulative = Vec::with_capacity(self.bounds.len() + 1);
        let mut total = 0u64;
        for (i, bucket) in self.buckets[..=self.bounds.len()].iter().enumerate() {
            total += bucket.load(Ordering::Relaxed);
            cumulative.push((self.bounds.get(i).copied(), total));
        }
        Snapshot {
            cumulative,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_valid() {
        for bounds in [DECISION_BOUNDS, MIDDLEWARE_BOUNDS] {
            assert!(bounds.len() < MAX_BUCKETS);
            assert!(bounds.windows(2).all(|w| w[0] < w[1]));
            assert!(bounds.iter().all(|b| *b > 0.0));
        }
        assert_eq!(DECISION_BOUNDS.first(), Some(&1e-6));
        assert_eq!(DECISION_BOUNDS.last(), Some(&0.1));
    }

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::new(DECISION_BOUNDS);
        let us = Duration::from_micros;
        // (observation, index of the bucket it must land in)
        let table = [
            (Duration::ZERO, 0),
            (Duration::from_nanos(1000), 0), // on the bound: inclusive
            (Duration::from_nanos(1001), 1),
            (us(2), 1),
            (us(3), 2),
            (us(10), 3),
            (us(11), 4),
            (us(999), 9),
            (Duration::from_millis(1), 9),
            (Duration::from_millis(100), 15),
            (Duration::from_millis(101), 16), // +Inf
            (Duration::from_secs(3600), 16),
        ];
        for (d, want) in table {
            let ns = u64::try_from(d.as_nanos()).unwrap();
            assert_eq!(h.bucket(ns), want, "{d:?}");
        }
        for (d, _) in table {
            h.observe(d);
        }
        let s = h.snapshot();
        assert_eq!(s.count, table.len() as u64);
        assert_eq!(s.cumulative.len(), DECISION_BOUNDS.len() + 1);
        assert_eq!(s.cumulative[0], (Some(1e-6), 2));
        assert_eq!(s.cumulative[1], (Some(2.5e-6), 4));
        assert_eq!(s.cumulative[2], (Some(5e-6), 5));
        assert_eq!(s.cumulative[9], (Some(1e-3), 9));
        assert_eq!(s.cumulative[14], (Some(5e-2), 9));
        assert_eq!(s.cumulative[15], (Some(0.1), 10));
        assert_eq!(s.cumulative[16], (None, 12));
        let want_sum: f64 = table.iter().map(|(d, _)| d.as_secs_f64()).sum();
        assert!((s.sum_seconds - want_sum).abs() < 1e-6, "{}", s.sum_seconds);
        // Cumulative counts never decrease.
        assert!(s.cumulative.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn empty_histogram_is_all_zero() {
        let s = Histogram::new(MIDDLEWARE_BOUNDS).snapshot();
        assert_eq!(s.count, 0);
        assert_eq!(s.sum_seconds, 0.0);
        assert!(s.cumulative.iter().all(|(_, n)| *n == 0));
        assert_eq!(s.cumulative.last(), Some(&(None, 0)));
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = std::sync::Arc::new(Histogram::new(DECISION_BOUNDS));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = std::sync::Arc::clone(&h);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.observe(Duration::from_nanos((i * 7919 + t) % 200_000_000));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.snapshot().count, 40_000);
    }
}
