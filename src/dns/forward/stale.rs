//! Serve-stale (RFC 8767): the last good answer to each forwarded question,
//! kept past its TTL so that an upstream outage does not become the pods'.
//!
//! hickory-resolver's cache drops an entry when its TTL runs out and cannot
//! answer from it afterwards, so this small bounded map sits beside it: every
//! successful positive lookup is remembered with the instant it expires, and
//! when every upstream fails, an answer expired at most `stale_max_s` ago is
//! served with the short `stale_ttl_s`. Forwarding is the rare path (cluster
//! names never come here); the lock is held for one map operation only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::Query;
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};

/// A question as the cache keys it (the name lower-cased).
type Key = (Name, RecordType, DNSClass);

/// One remembered answer.
struct Entry {
    answers: Vec<Record>,
    /// When its TTL ran (or runs) out.
    expires: Instant,
}

/// The last good answers, at most `capacity` of them.
pub(super) struct StaleCache {
    /// How long after its expiry an answer may still be served.
    max_stale: Duration,
    /// The TTL stale answers go out with.
    ttl: u32,
    capacity: usize,
    /// A std `Mutex`: held for one insert or lookup, never across an `.await`.
    entries: Mutex<HashMap<Key, Entry>>,
}

impl StaleCache {
    /// A cache serving answers up to `max_stale` past expiry with `ttl`,
    /// holding at most `capacity` questions.
    pub(super) fn new(max_stale: Duration, ttl: u32, capacity: usize) -> Self {
        Self {
            max_stale,
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(q: &Query) -> Key {
        (q.name().to_lowercase(), q.query_type(), q.query_class())
    }

    /// Remembers `answers` to `q`, valid until `expires`. When full, answers
    /// too old to serve go first, then an arbitrary eighth of the rest.
    pub(super) fn remember(&self, q: &Query, answers: &[Record], expires: Instant) {
        if answers.is_empty() {
            return;
        }
        let key = Self::key(q);
        let entry = Entry {
            answers: answers.to_vec(),
            expires,
        };
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.capacity && !map.contains_key(&key) {
            let now = Instant::now();
            map.retain(|_, e| e.expires + self.max_stale > now);
            if map.len() >= self.capacity {
                let drop: Vec<Key> = map
                    .keys()
                    .take(self.capacity.div_ceil(8))
                    .cloned()
                    .collect();
                for k in drop {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, entry);
    }

    /// The answer to `q` if one expired at most `max_stale` ago (or is still
    /// valid: an upstream failure while hickory's own cache was full), with
    /// every TTL set to the stale TTL.
    pub(super) fn recall(&self, q: &Query) -> Option<Vec<Record>> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.get(&Self::key(q))?;
        if e.expires + self.max_stale < Instant::now() {
            return None;
        }
        let mut answers = e.answers.clone();
        drop(map);
        for r in &mut answers {
            r.ttl = self.ttl;
        }
        Some(answers)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::A;

    use super::*;

    fn a(name: &str, ip: [u8; 4]) -> (Query, Record) {
        let n = Name::from_str(name).unwrap();
        let r = Record::from_rdata(n.clone(), 300, RData::A(A(Ipv4Addr::from(ip))));
        (Query::query(n, RecordType::A), r)
    }

    #[test]
    fn serves_within_the_window_with_the_stale_ttl_and_not_after() {
        let c = StaleCache::new(Duration::from_secs(60), 30, 10);
        let (q, r) = a("www.example.test.", [192, 0, 2, 1]);
        assert!(c.recall(&q).is_none(), "never cached: nothing");
        c.remember(&q, &[r], Instant::now() - Duration::from_secs(30));
        let got = c.recall(&q).expect("expired 30 s ago, window 60 s");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ttl, 30);
        // The question's case does not matter.
        let (upper, _) = a("WWW.Example.TEST.", [0; 4]);
        assert!(c.recall(&upper).is_some());
        let (q2, r2) = a("old.example.test.", [192, 0, 2, 2]);
        c.remember(&q2, &[r2], Instant::now() - Duration::from_secs(61));
        assert!(c.recall(&q2).is_none(), "expired beyond the window");
    }

    #[test]
    fn stays_within_its_capacity() {
        let c = StaleCache::new(Duration::from_secs(60), 30, 16);
        for i in 0..100u8 {
            let (q, r) = a(&format!("n{i}.example.test."), [192, 0, 2, i]);
            c.remember(&q, &[r], Instant::now() + Duration::from_secs(300));
        }
        let len = c.entries.lock().unwrap().len();
        assert!((1..=16).contains(&len), "{len} entries");
        let (last, _) = a("n99.example.test.", [0; 4]);
        assert!(c.recall(&last).is_some(), "the newest answer is kept");
    }
}
