//! Memory and re-list benchmark of the index alone (no YAML, no sockets):
//! RSS before and after 100,000 endpoints in 10,000 headless services are
//! applied, the peak during a full re-list of all of them (as after a 410
//! Gone), and the time each takes. Objects are made and applied a list page
//! at a time, as the Kubernetes source delivers them, so the peak is the
//! index's and not a bench-made copy of the cluster. Then the record
//! browser's history at its bound: the recorder installed and enough more
//! re-lists, each moving every pod, that every name holds its current and
//! `history_addresses` previous addresses. Prints numbers; asserts nothing.
//!
//! Run with `cargo bench --bench memory`.

// Printing numbers is what this bench is for.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use headless_dns::history::{History, Limits, recorder::Recorder};
use headless_dns::index::{IndexWriter, Kind, Object, SourceEvent, ZoneSettings};

mod common;

fn rss_kb(field: &str) -> u64 {
    common::proc_kb("self", "status", field)
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
    let base = rss_kb("VmRSS");
    let mut w = IndexWriter::new(ZoneSettings::default(), &Kind::ALL);
    let t = Instant::now();
    list(&mut w, common::objects(services, pods, 0));
    let sync = t.elapsed();
    let steady = rss_kb("VmRSS");
    let t = Instant::now();
    list(&mut w, common::objects(services, pods, 1));
    let relist = t.elapsed();
    let after = rss_kb("VmRSS");
    let peak = rss_kb("VmHWM");
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
    history_at_its_bound(&mut w, services, pods);
}

/// Installs the history recorder with the default per-name limits, every
/// name allowed a past (the default `history_names` keeps 2,000), and moves
/// every pod until each name's history is full; prints what it holds: the
/// bytes per name at the per-name bound.
fn history_at_its_bound(w: &mut IndexWriter, services: usize, pods: usize) {
    let limits = Limits {
        addresses: 5,
        names: services * pods,
        changes: 200,
    };
    let history = History::new(limits);
    w.observe(Box::new(Recorder::new(history.clone(), w.index())));
    let before = rss_kb("VmRSS");
    let t = Instant::now();
    for generation in 0..=limits.addresses as u8 {
        list(w, common::objects(services, pods, 2 + generation % 2));
    }
    let took = t.elapsed();
    let after = rss_kb("VmRSS");
    let s = history.stats();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "  history at its bound ({} re-lists moving every pod, {:.2} s): {} names, {} entries; RSS +{} kB ({} B per name)",
        limits.addresses + 1,
        took.as_secs_f64(),
        get(&s.names),
        get(&s.name_entries),
        after.saturating_sub(before),
        after.saturating_sub(before) * 1024 / (services * pods) as u64
    );
}
