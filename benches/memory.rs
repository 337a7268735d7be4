//! Memory and re-list benchmark of the index alone (no YAML, no sockets):
//! RSS before and after 100,000 endpoints in 10,000 headless services are
//! applied, the peak during a full re-list of all of them (as after a 410
//! Gone), and the time each takes. Prints numbers; asserts nothing.
//!
//! Run with `cargo bench --bench memory`.

// Printing numbers is what this bench is for.
#![allow(clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use headless_dns::index::{
    EndpointRecord, IndexWriter, Kind, Object, ObjectKey, PortRecord, ServiceKind, ServiceRecord,
    SliceRecord, SourceEvent, ZoneSettings,
};

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn cluster(services: usize, pods: usize, generation: u8) -> Vec<SourceEvent> {
    let mut ev: Vec<SourceEvent> = Kind::ALL.iter().map(|k| SourceEvent::Reset(*k)).collect();
    for s in 0..services {
        let ns = format!("ns-{}", s % 100);
        let name = format!("svc-{s}");
        ev.push(SourceEvent::Upsert(Object::Service(ServiceRecord {
            key: ObjectKey::new(&ns, &name),
            kind: ServiceKind::Headless,
            ports: vec![PortRecord {
                name: Some("web".into()),
                protocol: "tcp".into(),
                port: 80,
            }],
            publish_not_ready: false,
        })));
        ev.push(SourceEvent::Upsert(Object::EndpointSlice(SliceRecord {
            key: ObjectKey::new(&ns, &format!("{name}-abcde")),
            service: name,
            ports: vec![PortRecord {
                name: Some("web".into()),
                protocol: "tcp".into(),
                port: 80,
            }],
            endpoints: (0..pods)
                .map(|i| EndpointRecord {
                    hostname: Some(format!("web-{i}")),
                    addresses: vec![IpAddr::V4(Ipv4Addr::new(
                        10 + generation,
                        (s >> 8) as u8,
                        s as u8,
                        i as u8 + 1,
                    ))],
                    ready: true,
                    serving: true,
                    terminating: false,
                    pod: Some(format!("web-{i}")),
                })
                .collect(),
        })));
    }
    ev.extend(Kind::ALL.iter().map(|k| SourceEvent::Synced(*k)));
    ev
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --all-targets` runs this without `--bench`: a small smoke
    // run then, so the test suite stays fast; `cargo bench` gets the real size.
    let full = std::env::args().any(|a| a == "--bench");
    let (services, pods) = if full { (10_000, 10) } else { (100, 10) };
    let base = rss_kb("VmRSS:");
    let mut w = IndexWriter::new(
        ZoneSettings {
            zone: "cluster.local".into(),
            ttl: 5,
            endpoint_pod_names: false,
        },
        &Kind::ALL,
    );
    let events = cluster(services, pods, 0);
    let with_events = rss_kb("VmRSS:");
    let t = Instant::now();
    w.apply_all(events);
    let sync = t.elapsed();
    let steady = rss_kb("VmRSS:");
    let events = cluster(services, pods, 1);
    let t = Instant::now();
    w.apply_all(events);
    let relist = t.elapsed();
    let after = rss_kb("VmRSS:");
    let peak = rss_kb("VmHWM:");
    println!(
        "index with {} endpoints in {services} services:",
        services * pods
    );
    println!(
        "  RSS before: {base} kB; the events alone: {} kB",
        with_events - base
    );
    println!(
        "  initial sync: {:.2} s; RSS after: {steady} kB (index: {} kB, {} B per endpoint)",
        sync.as_secs_f64(),
        steady - base,
        (steady - base) * 1024 / (services * pods) as u64
    );
    println!(
        "  full re-list with every IP changed: {:.2} s; RSS after: {after} kB; peak: {peak} kB ({:.2}x steady)",
        relist.as_secs_f64(),
        peak as f64 / steady as f64
    );
}
