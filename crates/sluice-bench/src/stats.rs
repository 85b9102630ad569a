//! Latency percentiles.

/// The `p`-th percentile (0..=100) of sorted samples, nearest-rank; 0 if empty.
pub(crate) fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latencies in microseconds, in fixed memory (27 KiB whatever the count):
/// exact below 2,048 µs, then 64 buckets per power of two (each at most 1.6%
/// wide). A percentile is the lower bound of its bucket; the maximum is exact.
#[derive(Clone)]
pub(crate) struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: u32,
}

/// Values below this have a bucket each.
const LINEAR: u32 = 2048;
/// Buckets per power of two above `LINEAR`.
const SUB_BITS: u32 = 6;

impl Histogram {
    pub(crate) fn new() -> Self {
        let top = Self::index(u32::MAX);
        Self {
            buckets: vec![0; top + 1],
            count: 0,
            max: 0,
        }
    }

    fn index(v: u32) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let log = 31 - v.leading_zeros(); // >= 11
        let sub = (v >> (log - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        (LINEAR + ((log - LINEAR.trailing_zeros()) << SUB_BITS) + sub) as usize
    }

    fn lower_bound(i: usize) -> u32 {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        if i < LINEAR {
            return i;
        }
        let k = i - LINEAR;
        let log = LINEAR.trailing_zeros() + (k >> SUB_BITS);
        let sub = k & ((1 << SUB_BITS) - 1);
        (1 << log) + (sub << (log - SUB_BITS))
    }

    pub(crate) fn record(&mut self, us: u32) {
        self.buckets[Self::index(us)] += 1;
        self.count += 1;
        self.max = self.max.max(us);
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    pub(crate) fn max(&self) -> u32 {
        self.max
    }

    /// The `p`-th percentile (0..=100), nearest rank; 0 if empty.
    pub(crate) fn percentile(&self, p: f64) -> u32 {
        if self.count == 0 {
            return 0;
        }
        let rank = (((p / 100.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == self.count {
            return self.max;
        }
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::lower_bound(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::{percentile, Histogram};

    #[test]
    fn histogram_buckets() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!((h.percentile(50.0), h.percentile(99.0)), (50, 99));
        assert_eq!((h.count(), h.max()), (100, 100));
        // Bucket bounds are increasing and each value falls in its own bucket.
        for v in [2047, 2048, 2049, 4095, 4096, 1_000_000, u32::MAX] {
            let i = Histogram::index(v);
            assert!(Histogram::lower_bound(i) <= v, "{v}");
            assert!(
                i + 1 == h.buckets.len() || Histogram::lower_bound(i + 1) > v,
                "{v}"
            );
            assert!(
                f64::from(v - Histogram::lower_bound(i)) <= f64::from(v) / 64.0,
                "{v}"
            );
        }
        let mut g = Histogram::new();
        g.record(1_000_000);
        h.merge(&g);
        assert_eq!(h.percentile(100.0), 1_000_000);
        assert!(h.percentile(99.5) >= 99);
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
