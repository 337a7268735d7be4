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
//! | 3   | `<svc>.<ns>.svc`                       | ClusterIP / headless set / CNAME; SRV  |
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
//!
//! `walk` finds the node; `records` picks its records for the query type.

use std::net::IpAddr;

use super::{Answerer, KeepAlive, Node, PodsMode, Records, non_empty};
use crate::config::DnsConfig;
use crate::index::{AddrRecords, ServiceView};
use crate::wire::{Part, Query, RecordWriter, RrSet, qtype, rrset};

/// The `dns-version` TXT value required by the Kubernetes DNS spec 1.1.0 (§2.2).
pub const SCHEMA_VERSION: &str = "1.1.0";
/// TTL of the `dns-version` record, as CoreDNS serves it (seconds).
pub const SCHEMA_VERSION_TTL: u32 = 28800;

/// The cluster zone's fixed records, encoded once.
#[derive(Debug)]
pub(super) struct ClusterZone {
    /// A and AAAA of `ns.dns.<zone>`, the NS target.
    ns_host: (RrSet, RrSet),
    /// TXT of `dns-version.<zone>`.
    version: RrSet,
}

impl ClusterZone {
    /// The fixed records of cluster zone `zone` (normalized).
    pub(super) fn new(zone: &str, dns: &DnsConfig) -> Self {
        let (ns_host, version) = (format!("ns.dns.{zone}"), format!("dns-version.{zone}"));
        Self {
            ns_host: rrset::address_sets(&ns_host, dns.ttl, &dns.nameserver_ips),
            version: rrset::txt_set(&version, SCHEMA_VERSION_TTL, SCHEMA_VERSION),
        }
    }
}

/// Resolves a name inside the cluster zone to a node.
pub(crate) fn walk<'a>(
    a: &'a Answerer,
    q: &'a Query,
    rel: usize,
    keep: &'a mut KeepAlive,
) -> Node<'a> {
    let missing = Node::Missing {
        negative_ttl: a.settings.dns.negative_ttl,
    };
    let l = |i: usize| q.label(i);
    match rel {
        0 => Node::Apex,
        1 => match l(0) {
            b"dns-version" => Node::Version,
            b"svc" | b"pod" | b"dns" => Node::Empty,
            _ => missing,
        },
        2 => match l(1) {
            b"dns" if l(0) == b"ns" => Node::Addresses(&a.cluster.ns_host.0, &a.cluster.ns_host.1),
            b"svc" | b"pod" if a.index.has_namespace(q.labels_wire(0, 1)) => Node::Empty,
            _ => missing,
        },
        3 if l(2) == b"svc" => match view(a, q.labels_wire(0, 2), keep) {
            // SRV of the service name: its own set, written like an SRV name's.
            Some(v) if v.exists && q.qtype == qtype::SRV && v.cname().is_none() => {
                let srv = v.bare_srv();
                Node::Srv {
                    answer: srv.answer(),
                    glue: srv.glue(),
                }
            }
            Some(v) if v.exists => Node::Service {
                view: v,
                v4: v.a(),
                v6: v.aaaa(),
            },
            _ => missing,
        },
        3 if l(2) == b"pod" => pod_address(a, q).unwrap_or(missing),
        4 if l(3) == b"svc" => match view(a, q.labels_wire(1, 3), keep) {
            Some(v) => below_service(a, v, l(0)).unwrap_or(missing),
            None => missing,
        },
        5 if l(4) == b"svc" => {
            let (Some(port), Some(proto)) = (l(0).strip_prefix(b"_"), l(1).strip_prefix(b"_"))
            else {
                return missing;
            };
            match view(a, q.labels_wire(2, 4), keep) {
                Some(v) if v.exists => v.srv(port, proto).map_or(missing, |srv| Node::Srv {
                    answer: srv.answer(),
                    glue: srv.glue(),
                }),
                _ => missing,
            }
        }
        _ => missing,
    }
}

/// `<label>.<svc>.<ns>.svc`: an endpoint, or the `_<proto>` level above an
/// SRV name; `None` when missing with the zone's negative TTL.
fn below_service<'a>(a: &Answerer, v: &'a ServiceView, label: &[u8]) -> Option<Node<'a>> {
    if let Some(proto) = label.strip_prefix(b"_") {
        return (v.exists && v.has_srv_proto(proto)).then_some(Node::Empty);
    }
    let ttl = a.settings.dns.ttl;
    match v.name(label) {
        Some(ips) if v.exists => Some(Node::Endpoint {
            v4: AddrRecords::new(ips.only_v4(), ttl),
            v6: AddrRecords::new(ips.only_v6(), ttl),
        }),
        _ if v.is_pending_pod(label) => Some(Node::Missing {
            negative_ttl: a.settings.dns.pending_negative_ttl,
        }),
        _ => None,
    }
}

/// Looks a service up and keeps it alive in `keep` for the answer's lifetime.
fn view<'a>(a: &Answerer, key: &[u8], keep: &'a mut KeepAlive) -> Option<&'a ServiceView> {
    *keep = KeepAlive::View(a.index.service(key)?);
    match keep {
        KeepAlive::View(v) => Some(v),
        _ => None,
    }
}

/// `<a-b-c-d>.<ns>.pod.<zone>` (IPv6: `:` written as `-`).
fn pod_address<'a>(a: &Answerer, q: &Query) -> Option<Node<'a>> {
    let pods = a.settings.dns.pods;
    if pods == PodsMode::Disabled {
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
    if pods == PodsMode::Verified && !a.index.has_pod_ip(&ip, q.labels_wire(1, 2)) {
        return None;
    }
    Some(Node::PodAddress(ip))
}

/// The records of a cluster-zone node of type `t` (`None`: NODATA). A name
/// with records answers ANY with one HINFO (RFC 8482 §4.2).
pub(crate) fn records<'a>(a: &'a Answerer, node: &'a Node<'a>, t: u16) -> Option<Records<'a>> {
    match node {
        Node::Version => match t {
            qtype::TXT => non_empty(a.cluster.version.borrowed()),
            qtype::ANY => a.hinfo(),
            _ => None,
        },
        Node::Addresses(v4, v6) => match t {
            qtype::A => non_empty(v4.borrowed()),
            qtype::AAAA => non_empty(v6.borrowed()),
            qtype::ANY if !v4.is_empty() || !v6.is_empty() => a.hinfo(),
            _ => None,
        },
        Node::Endpoint { v4, v6 } => match t {
            qtype::A if !v4.is_empty() => Some((Part::Written(v4), None)),
            qtype::AAAA if !v6.is_empty() => Some((Part::Written(v6), None)),
            qtype::ANY if !v4.is_empty() || !v6.is_empty() => a.hinfo(),
            _ => None,
        },
        Node::Service { view, v4, v6 } => match (view.cname(), t) {
            (Some(c), _) => non_empty(c),
            (None, qtype::A) if !v4.is_empty() => Some((Part::Written(v4), None)),
            (None, qtype::AAAA) if !v6.is_empty() => Some((Part::Written(v6), None)),
            (None, qtype::ANY) => a.hinfo(),
            _ => None,
        },
        Node::Srv { answer, glue } => match t {
            qtype::SRV if !answer.is_empty() => Some((
                Part::Written(answer),
                (!glue.is_empty()).then_some(Part::Written(glue)),
            )),
            qtype::ANY => a.hinfo(),
            _ => None,
        },
        Node::PodAddress(ip) => match (t, ip) {
            (qtype::A, IpAddr::V4(_)) | (qtype::AAAA, IpAddr::V6(_)) => {
                Some((Part::Address(*ip, a.settings.dns.ttl), None))
            }
            (qtype::ANY, _) => a.hinfo(),
            _ => None,
        },
        Node::Apex | Node::Empty | Node::Ptr(_) | Node::Missing { .. } => None,
    }
}
