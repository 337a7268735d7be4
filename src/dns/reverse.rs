//! Reverse zones (`in-addr.arpa`, `ip6.arpa`, or narrower ones from the config):
//! PTR records from the index's address map.
//!
//! Cluster IPs point at `<svc>.<ns>.svc.<zone>`, endpoint addresses at
//! `<endpoint>.<svc>.<ns>.svc.<zone>` (spec §2.3.3, §2.4.3); an address behind
//! several services has one PTR per name, as CoreDNS answers. A partial
//! reverse name with a known address below it is an empty non-terminal
//! (NODATA, RFC 8020); any other name, or an address we do not know, is
//! NXDOMAIN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Answerer, KeepAlive, Node, Records};
use crate::index::PtrRecords;
use crate::wire::{Part, Query, RecordWriter, qtype};

/// Resolves a name below a reverse zone apex.
pub(crate) fn walk<'a>(a: &'a Answerer, q: &'a Query, keep: &'a mut KeepAlive) -> Node<'a> {
    let missing = Node::Missing {
        negative_ttl: a.settings.dns.negative_ttl,
    };
    let Some(ip) = address_of(q) else {
        // A partial name with addresses below it is an empty non-terminal.
        return match partial_of(q) {
            Some(p) if a.index.has_reverse_below(p) => Node::Empty,
            _ => missing,
        };
    };
    let Some(set) = a.index.reverse(&ip) else {
        return missing;
    };
    *keep = KeepAlive::Ptr(set);
    match keep {
        KeepAlive::Ptr(s) => Node::Ptr(PtrRecords::new(s.targets(), a.settings.dns.ttl)),
        _ => missing,
    }
}

/// The records of a reverse name of type `t` (`None`: NODATA).
pub(crate) fn records<'a>(
    a: &'a Answerer,
    ptrs: &'a PtrRecords<'a>,
    t: u16,
) -> Option<Records<'a>> {
    match t {
        qtype::PTR if !ptrs.is_empty() => Some((Part::Written(ptrs), None)),
        qtype::ANY => a.hinfo(),
        _ => None,
    }
}

/// The leading digits a partial reverse name stands for, numbered as
/// `Index::has_reverse_below` takes them: (1..=3 octets or 101..=131
/// nibbles, their value).
pub fn partial_of(q: &Query) -> Option<(u8, u128)> {
    let n = q.labels;
    if n < 3 || q.label(n - 1) != b"arpa" {
        return None;
    }
    let digits = n - 2;
    let (tag, max, radix) = match q.label(n - 2) {
        b"in-addr" => (0u8, 3, 256u128),
        b"ip6" => (100, 31, 16),
        _ => return None,
    };
    if digits > max {
        return None;
    }
    let mut v = 0u128;
    for i in (0..digits).rev() {
        let d = match (tag, q.label(i)) {
            (0, l) if !l.is_empty() && l.len() <= 3 && l.iter().all(u8::is_ascii_digit) => {
                std::str::from_utf8(l).ok()?.parse::<u128>().ok()?
            }
            (100, [c]) => (*c as char).to_digit(16)? as u128,
            _ => return None,
        };
        if d >= radix {
            return None;
        }
        v = v * radix + d;
    }
    Some((tag + digits as u8, v))
}

/// The address a full reverse name stands for.
pub fn address_of(q: &Query) -> Option<IpAddr> {
    let n = q.labels;
    if n < 2 || q.label(n - 1) != b"arpa" {
        return None;
    }
    match q.label(n - 2) {
        b"in-addr" if n == 6 => {
            let mut o = [0u8; 4];
            for (i, slot) in o.iter_mut().enumerate() {
                let l = q.label(3 - i);
                if l.is_empty() || l.len() > 3 || !l.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                *slot = std::str::from_utf8(l).ok()?.parse().ok()?;
            }
            Some(IpAddr::V4(Ipv4Addr::from(o)))
        }
        b"ip6" if n == 34 => {
            let mut v = 0u128;
            for i in (0..32).rev() {
                let l = q.label(i);
                let [c] = l else { return None };
                v = v << 4 | (*c as char).to_digit(16)? as u128;
            }
            Some(IpAddr::V6(Ipv6Addr::from(v)))
        }
        _ => None,
    }
}
