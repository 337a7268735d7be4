//! Response-rate limiting (RRL) for UDP, per client network, off by default.
//!
//! Why: UDP source addresses can be forged, so a flood of queries "from" a
//! victim turns us into a reflector aimed at it. As in BIND and Knot, each
//! client network (IPv4 /24, IPv6 /56: one customer's allocation) gets a
//! budget of responses per second; responses over it are dropped, except that
//! every `slip`-th one is sent truncated (TC, no records), which costs the
//! victim little but lets a real client behind that network retry over TCP,
//! where addresses cannot be forged and no limit applies.
//!
//! The budget is a GCRA token bucket (a "theoretical arrival time" per
//! network): `rate` responses per second, and a burst of up to one second's
//! worth. Buckets live in a fixed table allocated once (`SHARDS` x `SLOTS`),
//! indexed by a keyed hash of the network, so memory does not grow with the
//! number of clients and an outsider cannot aim collisions. A network that
//! hashes to a slot held by another takes the slot over and both start afresh:
//! under more distinct networks than slots the limiter errs towards answering,
//! never towards dropping a client that stays under its rate.
//!
//! It must not do: allocate, or log, per packet. The listener calls it only
//! when enabled (one branch on the hot path when off).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use super::stats::DnsStats;

/// Independent locks, so UDP threads rarely wait on each other.
const SHARDS: usize = 64;
/// Buckets per shard: 64 x 256 = 16,384 networks tracked at once (512 KiB).
const SLOTS: usize = 256;

/// What to do with one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget: send it.
    Send,
    /// Over the budget: send nothing.
    Drop,
    /// Over the budget, but this one goes out truncated (TC set, no records).
    Slip,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// The client network (see [`network_of`]); 0 = unused.
    network: u128,
    /// Theoretical arrival time, nanoseconds since the limiter started: the
    /// bucket is empty while this is more than the burst ahead of now.
    tat: u64,
    /// Responses over the budget so far, for the slip.
    over: u32,
}

/// The limiter, shared by all UDP threads.
pub struct Rrl {
    /// Nanoseconds of budget one response costs (1e9 / rate).
    interval: u64,
    /// How far ahead of now the arrival time may run: one second's worth.
    burst: u64,
    /// Every `slip`-th response over the budget is sent truncated; 0 = none.
    slip: u32,
    start: Instant,
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Mutex<Box<[Bucket]>>]>,
}

/// The network a client belongs to: its /24 (IPv4, also when IPv4-mapped) or
/// /56 (IPv6) as a `u128` that no two networks share and that is never 0.
fn network_of(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        // ::ffff:a.b.c.0 — its bits 32..48 are set, which no /56 key has.
        IpAddr::V4(v4) => 0xffff_0000_0000 | u128::from(u32::from(v4) & 0xffff_ff00),
        // The low 72 bits are 0; the top bit marks "IPv6" so that ::/56 is not 0.
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 72) - 1)) | 1 << 71,
    }
}

impl Rrl {
    /// A limiter allowing `responses_per_second` per client network, or
    /// `None` when that is 0 (RRL off).
    pub fn new(responses_per_second: u32, slip: u32) -> Option<Self> {
        if responses_per_second == 0 {
            return None;
        }
        let interval = 1_000_000_000 / u64::from(responses_per_second);
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(vec![Bucket::default(); SLOTS].into_boxed_slice()))
            .collect();
        Some(Self {
            interval,
            // A burst of `rate` responses: the first is free, each further one
            // may run the arrival time one interval further ahead.
            burst: interval * u64::from(responses_per_second - 1),
            slip,
            start: Instant::now(),
            hasher: std::collections::hash_map::RandomState::new(),
            shards,
        })
    }

    /// Counts one response to `client` and says what to do with it.
    pub fn check(&self, client: IpAddr) -> Verdict {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.check_at(client, now)
    }

    /// Applies [`Rrl::check`] to the response `out` for `client`: true to
    /// send it (truncated in place on a slip), false to drop it. Drops and
    /// slips are counted in `stats`.
    pub fn admit(&self, client: IpAddr, out: &mut Vec<u8>, stats: &DnsStats) -> bool {
        match self.check(client) {
            Verdict::Send => true,
            Verdict::Drop => {
                stats.rate_limited(false);
                false
            }
            Verdict::Slip => {
                stats.rate_limited(true);
                crate::wire::truncate_response(out);
                true
            }
        }
    }

    /// [`Rrl::check`] at `now` nanoseconds after the limiter started.
    fn check_at(&self, client: IpAddr, now: u64) -> Verdict {
        let network = network_of(client);
        let h = self.hasher.hash_one(network) as usize;
        let shard = &self.shards[h % SHARDS];
        // A poisoned lock only means a thread panicked between two plain
        // stores; the buckets are still usable numbers.
        let mut buckets = shard.lock().unwrap_or_else(|p| p.into_inner());
        let b = &mut buckets[(h / SHARDS) % SLOTS];
        if b.network != network {
            *b = Bucket {
                network,
                tat: now,
                over: 0,
            };
        }
        let tat = b.tat.max(now);
        if tat - now <= self.burst {
            b.tat = tat + self.interval;
            return Verdict::Send;
        }
        b.over = b.over.wrapping_add(1);
        if self.slip > 0 && b.over.is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn off_at_zero() {
        assert!(Rrl::new(0, 2).is_none());
    }

    #[test]
    fn a_burst_then_the_rate_with_every_second_over_slipped() {
        let r = Rrl::new(5, 2).unwrap();
        let c = ip("192.0.2.7");
        let got: Vec<Verdict> = (0..9).map(|_| r.check_at(c, 0)).collect();
        use Verdict::{Drop, Send, Slip};
        assert_eq!(got, [Send, Send, Send, Send, Send, Drop, Slip, Drop, Slip]);
        // 200 ms later one more response is in the budget.
        assert_eq!(r.check_at(c, SEC / 5), Send);
        assert_eq!(r.check_at(c, SEC / 5), Drop);
        // After a quiet second the whole burst is back.
        let later: Vec<Verdict> = (0..5).map(|_| r.check_at(c, 2 * SEC)).collect();
        assert_eq!(later, [Send; 5]);
    }

    #[test]
    fn networks_are_slash_24_and_slash_56() {
        let r = Rrl::new(1, 0).unwrap();
        assert_eq!(r.check_at(ip("192.0.2.1"), 0), Verdict::Send);
        assert_eq!(r.check_at(ip("192.0.2.200"), 0), Verdict::Drop, "same /24");
        assert_eq!(
            r.check_at(ip("::ffff:192.0.2.9"), 0),
            Verdict::Drop,
            "mapped"
        );
        assert_eq!(r.check_at(ip("192.0.3.1"), 0), Verdict::Send, "next /24");
        assert_eq!(r.check_at(ip("2001:db8:0:100::1"), 0), Verdict::Send);
        assert_eq!(
            r.check_at(ip("2001:db8:0:1ff:ffff::1"), 0),
            Verdict::Drop,
            "same /56"
        );
        assert_eq!(r.check_at(ip("2001:db8:0:200::1"), 0), Verdict::Send);
        assert_eq!(
            r.check_at(ip("::1"), 0),
            Verdict::Send,
            "::/56 is a network too"
        );
        assert_ne!(network_of(ip("::")), 0);
    }

    #[test]
    fn slip_one_truncates_every_response_over_the_budget() {
        let r = Rrl::new(1, 1).unwrap();
        let c = ip("2001:db8::1");
        assert_eq!(r.check_at(c, 0), Verdict::Send);
        assert_eq!(r.check_at(c, 0), Verdict::Slip);
        assert_eq!(r.check_at(c, 0), Verdict::Slip);
    }

    #[test]
    fn more_networks_than_slots_still_get_their_first_answer() {
        let r = Rrl::new(1, 2).unwrap();
        for i in 0..(4 * SHARDS * SLOTS) as u32 {
            let c = IpAddr::V4((i << 8).into());
            assert_eq!(r.check_at(c, 0), Verdict::Send, "first response of {c}");
        }
    }
}
