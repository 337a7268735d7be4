//! Query counters for the hot path: lock-free, allocation-free, sharded.
//!
//! Each UDP thread (and tokio worker) increments relaxed atomics in its own
//! cache-line-aligned shard, picked once per thread, so two cores answering
//! at full speed never fight over one counter. The admin side sums the shards
//! when Prometheus scrapes (`telemetry::render`). Label values come from small
//! fixed sets: never a name from a query (cardinality stays bounded).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::histogram::{self, BUCKETS};
use crate::wire::{Rcode, qtype};

/// `proto` label values, indexed by `tcp as usize`.
pub const PROTOS: [&str; 2] = ["udp", "tcp"];
/// `type` label values.
pub const QTYPES: [&str; 10] = [
    "A", "AAAA", "SRV", "PTR", "TXT", "SOA", "NS", "CNAME", "ANY", "other",
];
/// `rcode` label values.
pub const RCODES: [&str; 8] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other",
];

const SHARDS: usize = 16;

/// One shard of counters.
#[repr(align(128))]
#[derive(Default)]
pub struct Shard {
    requests: [[AtomicU64; QTYPES.len()]; 2],
    responses: [[AtomicU64; RCODES.len()]; 2],
    truncated: [AtomicU64; 2],
    duration: [[AtomicU64; BUCKETS]; 2],
    duration_ns: [AtomicU64; 2],
    dropped: AtomicU64,
    rate_limited: [AtomicU64; 2],
}

/// Summed counters.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    /// `requests[proto][qtype]`
    pub requests: [[u64; QTYPES.len()]; 2],
    /// `responses[proto][rcode]`
    pub responses: [[u64; RCODES.len()]; 2],
    /// Truncated responses per proto.
    pub truncated: [u64; 2],
    /// Non-cumulative bucket counts per proto (last = +Inf).
    pub duration: [[u64; BUCKETS]; 2],
    /// Sum of durations per proto, nanoseconds.
    pub duration_ns: [u64; 2],
    /// Packets dropped unanswered (too short, responses, or a forward that
    /// produced nothing to send).
    pub dropped: u64,
    /// UDP responses over the rate limit, by [`RRL_ACTIONS`]: dropped, or sent truncated.
    pub rate_limited: [u64; 2],
}

/// `action` label values of the rate-limited counter.
pub const RRL_ACTIONS: [&str; 2] = ["drop", "slip"];

/// All shards.
pub struct DnsStats {
    shards: Box<[Shard]>,
}

impl Default for DnsStats {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// The label index of a query type (its position in [`QTYPES`]).
pub fn qtype_index(t: u16) -> usize {
    match t {
        qtype::A => 0,
        qtype::AAAA => 1,
        qtype::SRV => 2,
        qtype::PTR => 3,
        qtype::TXT => 4,
        qtype::SOA => 5,
        qtype::NS => 6,
        qtype::CNAME => 7,
        qtype::ANY => 8,
        _ => 9,
    }
}

/// The label index of a response code (its position in [`RCODES`]).
fn rcode_index(rcode: Rcode) -> usize {
    match rcode {
        Rcode::NoError => 0,
        Rcode::FormErr => 1,
        Rcode::ServFail => 2,
        Rcode::NxDomain => 3,
        Rcode::NotImp => 4,
        Rcode::Refused => 5,
        Rcode::BadVers => 6,
        Rcode::NotAuth => 7,
    }
}

impl DnsStats {
    /// Counts one answered query: its request and its response.
    pub fn record(
        &self,
        tcp: bool,
        qtype: Option<u16>,
        rcode: Rcode,
        truncated: bool,
        elapsed: Duration,
    ) {
        self.request(tcp, qtype);
        self.response(tcp, rcode_index(rcode), truncated, elapsed);
    }

    /// Counts one query received, by type (`None`: unparsed).
    pub fn request(&self, tcp: bool, qtype: Option<u16>) {
        let s = &self.shards[shard_index()];
        s.requests[tcp as usize][qtype.map_or(QTYPES.len() - 1, qtype_index)]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response written elsewhere (forwarded, or the SERVFAIL of a
    /// full forward queue) by the rcode and TC bit in its header; a packet
    /// too short to hold a header counts as dropped.
    pub fn response_packet(&self, tcp: bool, packet: &[u8], elapsed: Duration) {
        let (Some(flags), Some(code)) = (packet.get(2), packet.get(3)) else {
            return self.dropped();
        };
        // The header's 4-bit rcode: 0..=5 are the first RCODES in order.
        let code = usize::from(code & 0x0f);
        let index = if code <= 5 { code } else { RCODES.len() - 1 };
        self.response(tcp, index, flags & 0x02 != 0, elapsed);
    }

    fn response(&self, tcp: bool, rcode: usize, truncated: bool, elapsed: Duration) {
        let s = &self.shards[shard_index()];
        let p = tcp as usize;
        s.responses[p][rcode].fetch_add(1, Ordering::Relaxed);
        if truncated {
            s.truncated[p].fetch_add(1, Ordering::Relaxed);
        }
        s.duration[p][histogram::bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
        s.duration_ns[p].fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Counts a packet dropped without an answer.
    pub fn dropped(&self) {
        self.shards[shard_index()]
            .dropped
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response over the rate limit: dropped, or (`slip`) sent truncated.
    pub fn rate_limited(&self, slip: bool) {
        self.shards[shard_index()].rate_limited[slip as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Sums the shards.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for s in self.shards.iter() {
            for p in 0..2 {
                for (i, c) in s.requests[p].iter().enumerate() {
                    t.requests[p][i] += get(c);
                }
                for (i, c) in s.responses[p].iter().enumerate() {
                    t.responses[p][i] += get(c);
                }
                for (i, c) in s.duration[p].iter().enumerate() {
                    t.duration[p][i] += get(c);
                }
                t.truncated[p] += get(&s.truncated[p]);
                t.duration_ns[p] += get(&s.duration_ns[p]);
            }
            t.dropped += get(&s.dropped);
            for (i, c) in s.rate_limited.iter().enumerate() {
                t.rate_limited[i] += get(c);
            }
        }
        t
    }
}
