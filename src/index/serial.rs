//! The SOA serial: the Unix time of the last change, but strictly increasing.
//!
//! Secondaries compare serials (RFC 1982) to decide whether to transfer, so
//! two different contents must never share one. A burst of changes within a
//! second takes `previous + 1`, running ahead of the clock for a while. A
//! process-wide high-water mark keeps this true across reloads (a new
//! engine's index starts above anything the old one published); across
//! restarts the clock does, unless changes outran it, which is what
//! `[transfer] serial_file` (a floor kept by the transfer journal) is for.

use std::sync::atomic::{AtomicU32, Ordering};

/// The highest serial any index of this process has published.
static HIGH_WATER: AtomicU32 = AtomicU32::new(0);

/// The serial after `previous` at Unix time `now_secs`: the later of the
/// clock and `previous + 1`, and above every serial this process has used.
pub fn next(previous: u32, now_secs: u32) -> u32 {
    let high = HIGH_WATER.load(Ordering::Relaxed);
    let serial = now_secs
        .max(previous.wrapping_add(1))
        .max(high.wrapping_add(1));
    HIGH_WATER.fetch_max(serial, Ordering::Relaxed);
    serial
}

/// The serial a new index starts with (nothing published yet).
pub fn initial(now_secs: u32) -> u32 {
    now_secs.max(HIGH_WATER.load(Ordering::Relaxed).wrapping_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_increase_within_a_second_and_follow_the_clock() {
        let a = next(1_000, 1_000);
        let b = next(a, 1_000);
        assert!(b > a);
        assert!(next(b, b + 100) == b + 100);
        // A new index starts above all of them.
        assert!(initial(1_000) > b + 100);
    }
}
