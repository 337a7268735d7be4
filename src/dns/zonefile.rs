//! `export-zone`: the served cluster zone as an RFC 1035 zone file.
//!
//! Operators use it to see every name the server answers; benchmarks use it to
//! load the very same data into Knot or NSD. Written from the published
//! views, so it shows exactly what the query path serves (PTR records live in
//! the reverse zones and are not part of this file).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

use super::cluster::{SCHEMA_VERSION, SCHEMA_VERSION_TTL};
use crate::config::DnsSettings;
use crate::index::{EndpointView, Index, ServiceKind, ServiceView};

/// Renders the cluster zone served from `index`.
pub fn export(index: &Index, settings: &DnsSettings) -> String {
    let d = &settings.dns;
    let z = &d.zone;
    let (ttl, neg) = (d.ttl, d.negative_ttl);
    let mut out = String::new();
    let _ = writeln!(out, "$ORIGIN {z}.\n$TTL {ttl}");
    let _ = writeln!(
        out,
        "@ IN SOA ns.dns.{z}. hostmaster.{z}. ( {} 7200 1800 86400 {neg} )",
        index.serial()
    );
    let _ = writeln!(out, "@ IN NS ns.dns.{z}.");
    for ip in &d.nameserver_ips {
        let _ = writeln!(out, "ns.dns IN {} {ip}", rtype(ip));
    }
    let _ = writeln!(
        out,
        "dns-version {SCHEMA_VERSION_TTL} IN TXT \"{SCHEMA_VERSION}\""
    );
    for v in index.services() {
        service(&mut out, &v, z);
    }
    out
}

/// The record type of an address.
fn rtype(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "A" } else { "AAAA" }
}

/// Appends the records of one service (names relative to the zone `z`).
fn service(out: &mut String, v: &ServiceView, z: &str) {
    let r = &v.record;
    let base = format!("{}.{}.svc", r.key.name(), r.key.namespace());
    match &r.kind {
        ServiceKind::ClusterIp(ips) => {
            for ip in ips {
                let _ = writeln!(out, "{base} IN {} {ip}", rtype(ip));
            }
            for p in r.ports.iter() {
                if let Some(n) = &p.name {
                    let _ = writeln!(
                        out,
                        "_{n}._{}.{base} IN SRV 0 100 {} {base}.{z}.",
                        p.protocol, p.port
                    );
                }
            }
        }
        ServiceKind::ExternalName(target) => {
            let _ = writeln!(out, "{base} IN CNAME {target}.");
        }
        ServiceKind::Headless => {}
    }
    let served: Vec<_> = v.endpoints().filter(|e| e.served).collect();
    let headless = matches!(r.kind, ServiceKind::Headless);
    if headless {
        for e in &served {
            for ip in e.addresses.iter() {
                let _ = writeln!(out, "{base} IN {} {ip}", rtype(&ip));
            }
        }
    }
    for e in &served {
        for ip in e.addresses.iter() {
            let _ = writeln!(out, "{}.{base} IN {} {ip}", e.label, rtype(&ip));
        }
    }
    if headless {
        headless_srv(out, &served, &base, z);
    }
}

/// Appends a headless service's SRV records: one per served endpoint and
/// named port, weights split evenly as the query path does.
fn headless_srv(out: &mut String, served: &[EndpointView<'_>], base: &str, z: &str) {
    let ports: BTreeSet<(&str, &str)> = served
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
        let weight = (100 / targets.len().max(1)).max(1);
        for (label, port) in targets {
            let _ = writeln!(
                out,
                "_{n}._{proto}.{base} IN SRV 0 {weight} {port} {label}.{base}.{z}."
            );
        }
    }
}
