//! The cluster-domain zone: the Kubernetes DNS schema's name grammar.
//!
//! Names are read right to left from the zone apex, as numbered cases (the
//! CoreDNS `parseRequest` habit), with `rel` the number of labels left of the
//! zone:
//!
//! | rel | name                                   | node                                   |
//! |-----|----------------------------------------|----------------------------------------|
//! | 0   | `<zone>`                               | apex: SOA, NS                          |
//! | 1   | `dns-version`                          | TXT "1.1.0" (spec §2.2)                |
//! | 1   | `svc`, `pod`, `dns`                    | empty non-terminal (NODATA)            |
//! | 2   | `ns.dns`                               | the NS target's addresses              |
//! | 2   | `<ns>.svc`, `<ns>.pod`                 | NODATA if the namespace exists         |
//! | 3   | `<svc>.<ns>.svc`                       | ClusterIP / headless set / CNAME       |
//! | 3   | `<a-b-c-d>.<ns>.pod`                   | pod address (per `pods` mode)          |
//! | 4   | `<endpoint>.<svc>.<ns>.svc`            | endpoint A/AAAA                        |
//! | 4   | `_<proto>.<svc>.<ns>.svc`              | empty non-terminal above an SRV name   |
//! | 5   | `_<port>._<proto>.<svc>.<ns>.svc`      | SRV with glue                          |
//!
//! Everything else is NXDOMAIN. A headless service with no ready endpoint does
//! not exist (spec §2.4.1), and neither does anything below it. A missing
//! `<sts>-<n>` below its governing service with `n < replicas` is a pod about
//! to exist: its NXDOMAIN carries the short "pending" negative TTL so that
//! caches do not hide it once it is up.

use std::net::IpAddr;

use super::{Answerer, Hold, Node, PodsMode};
use crate::dns::wire::Query;
use crate::index::ServiceView;

/// Resolves a name inside the cluster zone to a node.
pub(crate) fn walk<'a>(a: &'a Answerer, q: &'a Query, rel: usize, hold: &'a mut Hold) -> Node<'a> {
    let missing = Node::Missing(a.settings.negative_ttl);
    let l = |i: usize| q.label(i);
    match rel {
        0 => Node::Apex,
        1 => match l(0) {
            b"dns-version" => Node::Version,
            b"svc" | b"pod" | b"dns" => Node::Empty,
            _ => missing,
        },
        2 => match l(1) {
            b"dns" if l(0) == b"ns" => Node::Addresses(&a.ns_host.0, &a.ns_host.1),
            b"svc" | b"pod" if a.index.has_namespace(q.labels_wire(0, 1)) => Node::Empty,
            _ => missing,
        },
        3 if l(2) == b"svc" => match view(a, q.labels_wire(0, 2), hold) {
            Some(v) if v.exists => Node::Service(v),
            _ => missing,
        },
        3 if l(2) == b"pod" => pod_address(a, q).unwrap_or(missing),
        4 if l(3) == b"svc" => {
            let Some(v) = view(a, q.labels_wire(1, 3), hold) else {
                return missing;
            };
            let label = l(0);
            if let Some(proto) = label.strip_prefix(b"_") {
                return if v.exists && v.has_srv_proto(proto) {
                    Node::Empty
                } else {
                    missing
                };
            }
            match v.name(label) {
                Some(ips) if v.exists => Node::Endpoint(ips),
                _ if v.is_pending_pod(label) => Node::Missing(a.settings.pending_negative_ttl),
                _ => missing,
            }
        }
        5 if l(4) == b"svc" => {
            let (Some(port), Some(proto)) = (l(0).strip_prefix(b"_"), l(1).strip_prefix(b"_"))
            else {
                return missing;
            };
            match view(a, q.labels_wire(2, 4), hold) {
                Some(v) if v.exists => v.srv(port, proto).map_or(missing, Node::Srv),
                _ => missing,
            }
        }
        _ => missing,
    }
}

/// Looks a service up and keeps it alive in `hold` for the answer's lifetime.
fn view<'a>(a: &Answerer, key: &[u8], hold: &'a mut Hold) -> Option<&'a ServiceView> {
    *hold = Hold::View(a.index.service(key)?);
    match hold {
        Hold::View(v) => Some(v),
        _ => None,
    }
}

/// `<a-b-c-d>.<ns>.pod.<zone>` (IPv6: `:` written as `-`).
fn pod_address<'a>(a: &Answerer, q: &Query) -> Option<Node<'a>> {
    if a.settings.pods == PodsMode::Disabled {
        return None;
    }
    let label = q.label(0);
    let mut buf = [0u8; 63];
    let buf = buf.get_mut(..label.len())?;
    let dashes = label.iter().filter(|b| **b == b'-').count();
    let sep = if dashes == 3 && !label.contains(&b':') {
        b'.'
    } else {
        b':'
    };
    for (d, s) in buf.iter_mut().zip(label) {
        *d = if *s == b'-' { sep } else { *s };
    }
    let ip: IpAddr = std::str::from_utf8(buf).ok()?.parse().ok()?;
    if a.settings.pods == PodsMode::Verified && !a.index.has_pod_ip(&ip, q.labels_wire(1, 2)) {
        return None;
    }
    Some(Node::PodAddress(ip))
}
