//! `export-zone`: the served cluster zone as an RFC 1035 zone file.
//!
//! Operators use it to see every name the server answers; benchmarks use it to
//! load the very same data into Knot or NSD. Written from the published
//! views, so it shows exactly what the query path serves (PTR records live in
//! the reverse zones and are not part of this file).

use std::fmt::Write;

use crate::dns::DnsSettings;
use crate::index::{Index, ServiceKind};

/// Renders the cluster zone served from `index`.
pub fn export(index: &Index, settings: &DnsSettings) -> String {
    let z = &settings.zone;
    let (ttl, neg) = (settings.ttl, settings.negative_ttl);
    let mut out = String::new();
    let _ = writeln!(out, "$ORIGIN {z}.\n$TTL {ttl}");
    let _ = writeln!(
        out,
        "@ IN SOA ns.dns.{z}. hostmaster.{z}. ( {} 7200 1800 86400 {neg} )",
        index.serial()
    );
    let _ = writeln!(out, "@ IN NS ns.dns.{z}.");
    for ip in &settings.nameserver_ips {
        let t = if ip.is_ipv4() { "A" } else { "AAAA" };
        let _ = writeln!(out, "ns.dns IN {t} {ip}");
    }
    let _ = writeln!(out, "dns-version 28800 IN TXT \"1.1.0\"");
    for v in index.services() {
        let r = &v.record;
        let base = format!("{}.{}.svc", r.key.name(), r.key.namespace());
        let addr = |ip: &std::net::IpAddr| if ip.is_ipv4() { "A" } else { "AAAA" };
        match &r.kind {
            ServiceKind::ClusterIp(ips) => {
                for ip in ips {
                    let _ = writeln!(out, "{base} IN {} {ip}", addr(ip));
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
        if matches!(r.kind, ServiceKind::Headless) {
            for e in &served {
                for ip in e.addresses.iter() {
                    let _ = writeln!(out, "{base} IN {} {ip}", addr(&ip));
                }
            }
        }
        for e in &served {
            for ip in e.addresses.iter() {
                let _ = writeln!(out, "{}.{base} IN {} {ip}", e.label, addr(&ip));
            }
        }
        if matches!(r.kind, ServiceKind::Headless) {
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
                let weight = (100 / targets.len().max(1)).max(1);
                for (label, port) in targets {
                    let _ = writeln!(
                        out,
                        "_{n}._{proto}.{base} IN SRV 0 {weight} {port} {label}.{base}.{z}."
                    );
                }
            }
        }
    }
    out
}
