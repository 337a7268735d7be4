//! Memory and re-list benchmark of the index alone (no YAML, no sockets):
//! RSS before and after 100,000 endpoints in 10,000 headless services are
//! applied, the peak during a full re-list of all of them (as after a 410
//! Gone), and the time each takes. Objects are made and applied a list page
//! at a time, as the Kubernetes source delivers them, so the peak is the
//! index's and not a bench-made copy of the cluster. Prints numbers; asserts
//! nothing.
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

/// The objects of a synthetic cluster; `generation` shifts every address.
fn cluster(services: usize, pods: usize, generation: u8) -> impl Iterator<Item = Object> {
    (0..services).flat_map(move |s| {
        let ns = format!("ns-{}", s % 100);
        let name = format!("svc-{s}");
        let port = || PortRecord {
            name: Some("web".into()),
            protocol: "tcp".into(),
            port: 80,
        };
        let service = Object::Service(ServiceRecord {
            key: ObjectKey::new(&ns, &name),
            kind: ServiceKind::Headless,
            ports: vec![port()],
            publish_not_ready: false,
        });
        let slice = Object::EndpointSlice(SliceRecord {
            key: ObjectKey::new(&ns, &format!("{name}-abcde")),
            service: name,
            ports: vec![port()],
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
        });
        [service, slice]
    })
}

/// Feeds a full (re-)list to the writer the way the Kubernetes source does:
/// `Reset`, the objects in pages of [`PAGE`] (one batch each), `Synced`.
fn list(w: &mut IndexWriter, objects: impl Iterator<Item = Object>) {
    w.apply_all(Kind::ALL.iter().map(|k| SourceEvent::Reset(*k)));
    let mut page = Vec::with_capacity(PAGE);
    for o in objects {
        page.push(SourceEvent::Upsert(o));
        if page.len() == PAGE {
            w.apply_all(page.drain(..));
        }
    }
    w.apply_all(page.drain(..));
    w.apply_all(Kind::ALL.iter().map(|k| SourceEvent::Synced(*k)));
}

/// Objects per list page (the Kubernetes source lists with `?limit=500`).
const PAGE: usize = 500;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --all-targets` runs this without `--bench`: a small smoke
    // run then, so the test suite stays fast; `cargo bench` gets the real size.
    let full = std::env::args().any(|a| a == "--bench");
    let (services, pods) = if full { (10_000, 10) } else { (100, 10) };
    let base = rss_kb("VmRSS:");
    let mut w = IndexWriter::new(ZoneSettings::default(), &Kind::ALL);
    let t = Instant::now();
    list(&mut w, cluster(services, pods, 0));
    let sync = t.elapsed();
    let steady = rss_kb("VmRSS:");
    let t = Instant::now();
    list(&mut w, cluster(services, pods, 1));
    let relist = t.elapsed();
    let after = rss_kb("VmRSS:");
    let peak = rss_kb("VmHWM:");
    println!(
        "index with {} endpoints in {services} services:",
        services * pods
    );
    println!("  RSS before: {base} kB; objects arrive in pages of {PAGE}");
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
