//! Duration histograms: one set of bucket bounds for everything we time (a
//! query's answer, an index publication), so every histogram renders alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds, in microseconds; a histogram has one bucket more
/// (+Inf).
pub const BUCKETS_US: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 1_000, 5_000, 25_000, 100_000];

/// Buckets per histogram, +Inf included.
pub const BUCKETS: usize = BUCKETS_US.len() + 1;

/// The bucket `elapsed` falls in: the first whose bound it does not exceed,
/// else the last (+Inf).
pub fn bucket(elapsed: Duration) -> usize {
    let us = elapsed.as_micros() as u64;
    BUCKETS_US
        .iter()
        .position(|bound| us <= *bound)
        .unwrap_or(BUCKETS_US.len())
}

/// Adds `took` to the histogram `buckets` and its nanosecond sum `sum_ns`.
pub fn observe(buckets: &[AtomicU64; BUCKETS], sum_ns: &AtomicU64, took: Duration) {
    buckets[bucket(took)].fetch_add(1, Ordering::Relaxed);
    sum_ns.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
}
