//! Reverse zones (`in-addr.arpa`, `ip6.arpa`, or narrower ones from the config):
//! PTR records from the index's address map.
//!
//! Cluster IPs point at `<svc>.<ns>.svc.<zone>`, endpoint addresses at
//! `<endpoint>.<svc>.<ns>.svc.<zone>` (spec §2.3.3, §2.4.3); an address behind
//! several services has one PTR per name, as CoreDNS answers. A reverse name
//! that is not a whole address, or an address we do not know, is NXDOMAIN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Answerer, Hold, Node};
use crate::dns::wire::Query;

/// Resolves a name below a reverse zone apex.
pub(crate) fn walk<'a>(a: &'a Answerer, q: &'a Query, hold: &'a mut Hold) -> Node<'a> {
    let missing = Node::Missing(a.settings.negative_ttl);
    let Some(ip) = address_of(q) else {
        return missing;
    };
    match a.index.reverse(&ip) {
        Some(set) => {
            *hold = Hold::Ptr(set);
            match hold {
                Hold::Ptr(s) => Node::Ptr(s.targets()),
                _ => missing,
            }
        }
        None => missing,
    }
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
