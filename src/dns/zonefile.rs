//! The records of our zones, one service at a time: what `export-zone`
//! prints and what zone transfers (`crate::transfer`) send.
//!
//! Operators use the zone file to see every name the server answers;
//! benchmarks load the very same data into Knot or NSD; secondaries pull the
//! same records by AXFR/IXFR. Written from the published views, so it shows
//! exactly what the query path serves. PTR records live in the reverse zones
//! and are not part of the zone file (transfers of those zones carry them).
//!
//! One record is not an answer of the query path: each existing namespace's
//! marker at `<ns>.svc.<zone>`, of the private-use type
//! [`NAMESPACE_MARKER`] (RFC 6895 §3.1) with one zero octet of data (empty
//! data would be legal DNS, but hickory-proto, which our followers and many
//! tools parse with, refuses records without data outside UPDATE messages). The query path says
//! NODATA for an existing namespace and NXDOMAIN for any other (Kubernetes
//! DNS spec, what CoreDNS does); a namespace without services has no other
//! name in the zone, so without the marker a server loading the zone (Knot
//! or BIND as our secondaries, our own followers) would say NXDOMAIN there.
//! With it they say NODATA for every standard type: only a query for the
//! private type itself gets the record from them, which tells no
//! more than NODATA does, that the namespace exists. Our followers read it
//! back as the namespace (`transfer::follow`). No standard type fits: an
//! empty TXT or a HINFO would be answered to ordinary queries of those
//! types, and an empty non-terminal cannot be written in a zone file.

use std::fmt::{self, Write};
use std::net::IpAddr;

use super::cluster::{SCHEMA_VERSION, SCHEMA_VERSION_TTL};
use crate::config::DnsSettings;
use crate::index::{EndpointView, Index, SERVICE_ITSELF, ServiceKind, ServiceView};

/// SOA refresh, retry and expire (seconds), as the query path serves them.
pub const SOA_TIMERS: [u32; 3] = [7200, 1800, 86400];

/// The record type of a namespace's marker (see the module docs): the first
/// of RFC 6895's private-use types (65280-65534).
pub const NAMESPACE_MARKER: u16 = 65280;

/// The data of one record; names are lower-case FQDNs without trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordData {
    /// SOA: primary name server, mailbox, serial, the negative TTL (MINIMUM).
    Soa(String, String, u32, u32),
    /// Name server.
    Ns(String),
    /// An IPv4 or IPv6 address (A or AAAA by family).
    Address(IpAddr),
    /// ExternalName alias.
    Cname(String),
    /// SRV: weight, port, target (priority 0).
    Srv(u16, u16, String),
    /// Reverse pointer.
    Ptr(String),
    /// One TXT string.
    Txt(&'static str),
    /// A namespace's marker: type [`NAMESPACE_MARKER`], data one zero octet.
    Namespace,
}

/// One resource record of class IN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneRecord {
    /// Owner name: lower-case FQDN without trailing dot.
    pub owner: String,
    /// TTL, seconds.
    pub ttl: u32,
    /// Type and data.
    pub data: RecordData,
}

/// Appends `name` (dotted) in uncompressed wire format; false if it is not
/// a valid DNS name.
fn push_name(out: &mut Vec<u8>, name: &str) -> bool {
    match crate::wire::name::from_dotted(name) {
        Some(wire) => {
            out.extend_from_slice(&wire);
            true
        }
        None => false,
    }
}

impl ZoneRecord {
    /// The record type's number.
    pub fn rtype(&self) -> u16 {
        match &self.data {
            RecordData::Soa(..) => 6,
            RecordData::Ns(_) => 2,
            RecordData::Address(IpAddr::V4(_)) => 1,
            RecordData::Address(IpAddr::V6(_)) => 28,
            RecordData::Cname(_) => 5,
            RecordData::Srv(..) => 33,
            RecordData::Ptr(_) => 12,
            RecordData::Txt(_) => 16,
            RecordData::Namespace => NAMESPACE_MARKER,
        }
    }

    /// The record in uncompressed wire format (RFC 1035 §4.1.3), or `None`
    /// when a name in it is not a valid DNS name.
    pub fn wire(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.owner.len() + 40);
        if !push_name(&mut out, &self.owner) {
            return None;
        }
        out.extend_from_slice(&self.rtype().to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&self.ttl.to_be_bytes());
        let len_at = out.len();
        out.extend_from_slice(&[0, 0]);
        let ok = match &self.data {
            RecordData::Soa(mname, rname, serial, minimum) => {
                let ok = push_name(&mut out, mname) && push_name(&mut out, rname);
                out.extend_from_slice(&serial.to_be_bytes());
                for t in SOA_TIMERS.iter().chain([minimum]) {
                    out.extend_from_slice(&t.to_be_bytes());
                }
                ok
            }
            RecordData::Ns(n) | RecordData::Cname(n) | RecordData::Ptr(n) => push_name(&mut out, n),
            RecordData::Address(IpAddr::V4(a)) => {
                out.extend_from_slice(&a.octets());
                true
            }
            RecordData::Address(IpAddr::V6(a)) => {
                out.extend_from_slice(&a.octets());
                true
            }
            RecordData::Srv(weight, port, target) => {
                out.extend_from_slice(&0u16.to_be_bytes());
                out.extend_from_slice(&weight.to_be_bytes());
                out.extend_from_slice(&port.to_be_bytes());
                push_name(&mut out, target)
            }
            RecordData::Txt(s) => {
                out.push(s.len() as u8);
                out.extend_from_slice(s.as_bytes());
                true
            }
            RecordData::Namespace => {
                out.push(0);
                true
            }
        };
        let rdlen = out.len() - len_at - 2;
        out[len_at..len_at + 2].copy_from_slice(&(rdlen as u16).to_be_bytes());
        ok.then_some(out)
    }
}

impl fmt::Display for ZoneRecord {
    /// One zone-file line with absolute names: `owner. TTL IN TYPE data`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}. {} IN ", self.owner, self.ttl)?;
        match &self.data {
            RecordData::Soa(m, r, serial, min) => {
                let [refresh, retry, expire] = SOA_TIMERS;
                write!(f, "SOA {m}. {r}. {serial} {refresh} {retry} {expire} {min}")
            }
            RecordData::Ns(n) => write!(f, "NS {n}."),
            RecordData::Address(ip @ IpAddr::V4(_)) => write!(f, "A {ip}"),
            RecordData::Address(ip) => write!(f, "AAAA {ip}"),
            RecordData::Cname(n) => write!(f, "CNAME {n}."),
            RecordData::Srv(w, p, t) => write!(f, "SRV 0 {w} {p} {t}."),
            RecordData::Ptr(n) => write!(f, "PTR {n}."),
            RecordData::Txt(s) => write!(f, "TXT \"{s}\""),
            // RFC 3597 §5: an unknown type and its data in hex.
            RecordData::Namespace => write!(f, "TYPE{NAMESPACE_MARKER} \\# 1 00"),
        }
    }
}

/// The apex records of `zone` (the cluster zone or a reverse zone): SOA with
/// `serial` first, then NS; the cluster zone adds the name server's
/// addresses and `dns-version`.
pub fn apex_records(settings: &DnsSettings, zone: &str, serial: u32) -> Vec<ZoneRecord> {
    let d = &settings.dns;
    let (z, ttl) = (&d.zone, d.ttl);
    let ns = format!("ns.dns.{z}");
    let rec = |owner: &str, ttl, data| ZoneRecord {
        owner: owner.to_string(),
        ttl,
        data,
    };
    let soa = RecordData::Soa(
        ns.clone(),
        format!("hostmaster.{z}"),
        serial,
        d.negative_ttl,
    );
    let mut out = vec![
        rec(zone, ttl, soa),
        rec(zone, ttl, RecordData::Ns(ns.clone())),
    ];
    if zone == z {
        for ip in &d.nameserver_ips {
            out.push(rec(&ns, ttl, RecordData::Address(*ip)));
        }
        let version = format!("dns-version.{z}");
        out.push(rec(
            &version,
            SCHEMA_VERSION_TTL,
            RecordData::Txt(SCHEMA_VERSION),
        ));
    }
    out
}

/// The marker of namespace `ns` (lower-case) in the cluster zone (see the
/// module docs).
pub fn namespace_record(settings: &DnsSettings, ns: &str) -> ZoneRecord {
    ZoneRecord {
        owner: format!("{ns}.svc.{}", settings.dns.zone),
        ttl: settings.dns.ttl,
        data: RecordData::Namespace,
    }
}

/// Appends the cluster-zone records of one service: its own addresses (or
/// CNAME), its endpoints' names and its SRV records.
pub fn service_records(v: &ServiceView, settings: &DnsSettings, out: &mut Vec<ZoneRecord>) {
    let (z, ttl) = (&settings.dns.zone, settings.dns.ttl);
    let r = &v.record;
    let base = format!("{}.{}.svc.{z}", r.key.name(), r.key.namespace());
    let mut push = |owner: String, data| {
        out.push(ZoneRecord { owner, ttl, data });
    };
    match &r.kind {
        ServiceKind::ClusterIp(ips) => {
            for ip in ips {
                push(base.clone(), RecordData::Address(*ip));
            }
            for p in r.ports.iter() {
                if let Some(n) = &p.name {
                    let owner = format!("_{n}._{}.{base}", p.protocol);
                    push(owner, RecordData::Srv(100, p.port, base.clone()));
                }
            }
        }
        ServiceKind::ExternalName(target) => {
            push(base.clone(), RecordData::Cname(target.to_string()));
        }
        ServiceKind::Headless => {}
    }
    let served: Vec<_> = v.endpoints().filter(|e| e.served).collect();
    if matches!(r.kind, ServiceKind::Headless) {
        for ip in served.iter().flat_map(|e| e.addresses.iter()) {
            push(base.clone(), RecordData::Address(ip));
        }
    }
    for e in &served {
        for ip in e.addresses.iter() {
            push(format!("{}.{base}", e.label), RecordData::Address(ip));
        }
    }
    if matches!(r.kind, ServiceKind::Headless) {
        headless_srv(&served, &base, &mut push);
    }
    if !matches!(r.kind, ServiceKind::ExternalName(_)) {
        bare_srv(v, &served, &base, &mut push);
    }
}

/// The SRV records of the service name itself, as the query path answers
/// them (CoreDNS's): every port, named or not — one per port number of a
/// ClusterIP service, targeting it; one per served endpoint and port number
/// (ascending) of a headless one. Weights split 100 among them.
fn bare_srv(
    v: &ServiceView,
    served: &[EndpointView<'_>],
    base: &str,
    push: &mut impl FnMut(String, RecordData),
) {
    let mut targets: Vec<(Option<&str>, u16)> = Vec::new();
    if let ServiceKind::ClusterIp(_) = &v.record.kind {
        for p in v.record.ports.iter() {
            if !targets.iter().any(|(_, port)| *port == p.port) {
                targets.push((None, p.port));
            }
        }
    } else {
        for e in served {
            let ports: std::collections::BTreeSet<u16> = e.ports.iter().map(|p| p.port).collect();
            targets.extend(ports.into_iter().map(|p| (Some(e.label), p)));
        }
    }
    let weight = 100usize
        .checked_div(targets.len())
        .map_or(0, |w| w.max(1) as u16);
    for (label, port) in targets {
        let target = label.map_or_else(|| base.to_string(), |l| format!("{l}.{base}"));
        push(base.to_string(), RecordData::Srv(weight, port, target));
    }
}

/// The SRV records of a headless service: one per named port and endpoint.
fn headless_srv(
    served: &[EndpointView<'_>],
    base: &str,
    push: &mut impl FnMut(String, RecordData),
) {
    let ports: std::collections::BTreeSet<(&str, &str)> = served
        .iter()
        .flat_map(|e| e.ports.iter())
        .filter_map(|p| p.name.as_deref().map(|n| (n, p.protocol.as_str())))
        .collect();
    for (n, proto) in ports {
        let targets: Vec<_> = served
            .iter()
            .flat_map(|e| {
                e.ports
                    .iter()
                    .filter(move |p| p.name.as_deref() == Some(n) && p.protocol == proto)
                    .map(move |p| (e.label, p.port))
            })
            .collect();
        let weight = (100 / targets.len().max(1)).max(1) as u16;
        for (label, port) in targets {
            let target = format!("{label}.{base}");
            push(
                format!("_{n}._{proto}.{base}"),
                RecordData::Srv(weight, port, target),
            );
        }
    }
}

/// Appends the PTR records one service contributes to the reverse zones
/// (whichever of them holds each address is the caller's business).
pub fn ptr_records(v: &ServiceView, settings: &DnsSettings, out: &mut Vec<ZoneRecord>) {
    let k = &v.record.key;
    let base = format!("{}.{}.svc.{}", k.name(), k.namespace(), settings.dns.zone);
    for (ip, endpoint) in v.ptrs() {
        let target = if endpoint == SERVICE_ITSELF {
            base.clone()
        } else {
            format!("{}.{base}", v.endpoint(endpoint as usize).label)
        };
        out.push(ZoneRecord {
            owner: crate::wire::name::reverse_name(ip),
            ttl: settings.dns.ttl,
            data: RecordData::Ptr(target),
        });
    }
}

/// Renders the cluster zone served from `index`.
pub fn export(index: &Index, settings: &DnsSettings) -> String {
    let z = &settings.dns.zone;
    let mut out = String::new();
    let _ = writeln!(out, "$ORIGIN {z}.\n$TTL {}", settings.dns.ttl);
    let mut records = apex_records(settings, z, index.serial());
    for ns in index.namespaces() {
        records.push(namespace_record(settings, &ns));
    }
    for v in index.services() {
        service_records(&v, settings, &mut records);
    }
    for r in records {
        let _ = writeln!(out, "{r}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::serialize::binary::BinDecodable;

    fn settings() -> DnsSettings {
        crate::config::Config::default().dns_settings()
    }

    #[test]
    fn wire_records_decode_as_their_text() {
        let s = settings();
        let mut all = apex_records(&s, "cluster.local", 42);
        all.push(ZoneRecord {
            owner: "_http._tcp.web.default.svc.cluster.local".into(),
            ttl: 5,
            data: RecordData::Srv(50, 80, "web-0.web.default.svc.cluster.local".into()),
        });
        all.push(ZoneRecord {
            owner: "7.1.244.10.in-addr.arpa".into(),
            ttl: 5,
            data: RecordData::Ptr("web-0.web.default.svc.cluster.local".into()),
        });
        all.push(ZoneRecord {
            owner: "x.default.svc.cluster.local".into(),
            ttl: 5,
            data: RecordData::Address("fd00::1".parse().unwrap()),
        });
        all.push(namespace_record(&s, "quiet"));
        for r in all {
            let wire = r.wire().unwrap();
            let decoded = Record::from_bytes(&wire).unwrap();
            assert_eq!(u16::from(decoded.record_type()), r.rtype());
            let mine = r.to_string();
            // hickory prints the same owner, TTL, class and type (a private
            // type as "Unknown": ours is RFC 3597's "TYPE65280", checked
            // above by number).
            let theirs = decoded.to_string();
            let words = if r.data == RecordData::Namespace {
                3
            } else {
                4
            };
            let head = |s: &str| {
                s.split_whitespace()
                    .take(words)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            assert_eq!(head(&mine), head(&theirs), "{mine} vs {theirs}");
        }
    }

    #[test]
    fn a_namespace_marker_is_a_private_type_record_of_one_octet() {
        let r = namespace_record(&settings(), "quiet");
        assert_eq!(
            r.to_string(),
            "quiet.svc.cluster.local. 5 IN TYPE65280 \\# 1 00"
        );
        let wire = r.wire().unwrap();
        let owner = crate::wire::name::from_dotted("quiet.svc.cluster.local").unwrap();
        assert_eq!(wire[..owner.len()], owner[..]);
        // Type 65280, class IN, TTL 5, one zero octet of data.
        assert_eq!(wire[owner.len()..], [0xff, 0, 0, 1, 0, 0, 0, 5, 0, 1, 0]);
    }

    #[test]
    fn a_name_too_long_has_no_wire_form() {
        let r = ZoneRecord {
            owner: format!("{}.cluster.local", "a".repeat(64)),
            ttl: 5,
            data: RecordData::Txt("x"),
        };
        assert!(r.wire().is_none());
    }
}
