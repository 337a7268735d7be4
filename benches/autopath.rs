//! Autopath (issue #29): what a pod's lookup of an external name costs with
//! autopath off and on, through the forwarder to a real upstream.
//!
//! Two servers run in this process (`headless_dns::run`, release-built under
//! `cargo bench`), one with `[dns] autopath` off and one with it on, both in
//! sidecar mode (`[source] namespaces = ["default"]`: a loopback client is
//! of `default`) and forwarding to Debian's unbound on loopback
//! (`support::unbound`), which serves `h<i>.example.test` (A and AAAA). The
//! client is a stub that looks up as glibc's `getaddrinfo` does with a pod's
//! resolv.conf (`search default.svc.cluster.local svc.cluster.local
//! cluster.local`, `ndots:5`): A and AAAA of each expansion, then of the
//! name itself, until one of the pair has an answer. Each lookup asks a name
//! no earlier lookup asked, so every one reaches unbound (the forwarder's
//! cache is cold for it), the two modes taking turns.
//!
//! A second round asks one name again and again, answered from the
//! forwarder's cache: what is left is the round trips and the server's work.
//!
//! Printed: queries per lookup (the stub's count and the server's
//! `headless_dns_dns_requests_total`), p50/p99 lookup time per mode, and
//! on/off ratios. Nothing is asserted but that every lookup resolves. On
//! loopback a round trip costs tens of microseconds; across nodes each of
//! the three saved is a network round trip more.
//!
//! Run with `cargo bench --bench autopath`. Without `--bench` (as `cargo
//! test --all-targets` runs it) it is a smoke run of 20 lookups per mode
//! on the debug build: its numbers mean nothing.

// Printing numbers is what this bench is for.
#![allow(clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use support::server::TestServer;
use support::unbound::Unbound;

/// The pod's search list, in order; the bare name comes last.
const SEARCH: [&str; 3] = [
    "default.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let lookups = if full { 2000 } else { 20 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start the bench's tokio runtime");
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(600), bench(lookups)).await })
        .expect("the bench exceeded its time limit");
}

/// One mode's results.
#[derive(Default)]
struct Mode {
    /// Lookup durations.
    times: Vec<Duration>,
    /// Queries the stub sent.
    sent: u64,
}

async fn bench(lookups: usize) {
    let names: Vec<String> = (0..2 * lookups)
        .map(|i| format!("h{i}.example.test"))
        .collect();
    let data: Vec<String> = names
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            let (hi, lo) = (i / 250, i % 250 + 1);
            [
                format!("{n}. 300 IN A 192.0.{}.{lo}", 100 + hi),
                format!("{n}. 300 IN AAAA 2001:db8::{hi}:{lo}"),
            ]
        })
        .collect();
    let data: Vec<&str> = data.iter().map(String::as_str).collect();
    let up = Unbound::start("example.test", &data, "h0.example.test").await;
    let server = |autopath: bool| {
        TestServer::with_manifests("", move |c| {
            c.dns.autopath = autopath;
            c.source.namespaces = vec!["default".into()];
            c.forward.upstreams = vec![up.addr.to_string()];
        })
    };
    let (off, on) = (server(false).await, server(true).await);
    println!(
        "autopath bench: {lookups} lookups per mode, glibc-style stub (A+AAAA per name), ndots:5, 3 search domains, unbound upstream on loopback"
    );
    // Cold: a name no lookup asked before (the forwarder's cache misses).
    let pairs: Vec<[String; 2]> = names
        .chunks(2)
        .map(|p| [p[0].clone(), p[1].clone()])
        .collect();
    compare(&off, &on, "fresh name (forwarder cache cold)", pairs).await;
    // Warm: one name again and again (answered from the forwarder's cache).
    let pairs = vec![["h0.example.test".to_string(), "h1.example.test".to_string()]; lookups];
    compare(&off, &on, "same name (forwarder cache warm)", pairs).await;
    off.stop().await;
    on.stop().await;
}

/// Looks up each pair's first name on `off`, its second on `on`, taking
/// turns; prints queries per lookup, p50/p99 per mode and on/off ratios.
async fn compare(off: &TestServer, on: &TestServer, what: &str, pairs: Vec<[String; 2]>) {
    let lookups = pairs.len() as f64;
    let before = [requests(off).await, requests(on).await];
    let (dns_off, dns_on) = (off.dns, on.dns);
    let (m_off, m_on) = tokio::task::spawn_blocking(move || {
        let (mut m_off, mut m_on) = (Mode::default(), Mode::default());
        for [a, b] in &pairs {
            lookup(dns_off, a, &mut m_off);
            lookup(dns_on, b, &mut m_on);
        }
        (m_off, m_on)
    })
    .await
    .expect("the stub's thread");
    let seen = [
        requests(off).await - before[0],
        requests(on).await - before[1],
    ];
    println!("  {what}:");
    let stats = [("off", &m_off, seen[0]), ("on", &m_on, seen[1])].map(|(mode, m, seen)| {
        let (p50, p99) = (percentile(&m.times, 50), percentile(&m.times, 99));
        println!(
            "    autopath {mode:>3}: {:.2} queries/lookup sent, {:.2} seen by the server; lookup p50 {} p99 {}",
            m.sent as f64 / lookups,
            seen / lookups,
            micros(p50),
            micros(p99),
        );
        (m.sent as f64, p50, p99)
    });
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "    on/off: queries {:.2}, p50 {:.2}, p99 {:.2}",
        stats[1].0 / stats[0].0,
        ratio(stats[1].1, stats[0].1),
        ratio(stats[1].2, stats[0].2),
    );
}

/// `headless_dns_dns_requests_total`, all series.
async fn requests(s: &TestServer) -> f64 {
    let (_, text) = support::http::get(s.admin, "/metrics")
        .await
        .expect("metrics");
    text.lines()
        .filter(|l| l.starts_with("headless_dns_dns_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Looks `name` up as glibc does and records it in `m`; panics if it does
/// not resolve.
fn lookup(server: SocketAddr, name: &str, m: &mut Mode) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the stub's socket");
    sock.connect(server).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = Instant::now();
    let candidates = SEARCH
        .iter()
        .map(|d| format!("{name}.{d}."))
        .chain(std::iter::once(format!("{name}.")));
    for (i, fqdn) in candidates.enumerate() {
        let id = (i as u16) * 2;
        let mut answered = false;
        for (k, qtype) in [RecordType::A, RecordType::AAAA].into_iter().enumerate() {
            sock.send(&query(&fqdn, qtype, id + k as u16))
                .expect("send");
            m.sent += 1;
        }
        let mut buf = [0u8; 1500];
        for _ in 0..2 {
            let n = sock.recv(&mut buf).expect("a reply within 5 s");
            let (rcode, ancount) = (buf[3] & 0x0f, u16::from_be_bytes([buf[6], buf[7]]));
            answered |= n >= 12 && rcode == 0 && ancount > 0;
        }
        if answered {
            m.times.push(started.elapsed());
            return;
        }
    }
    panic!("{name} did not resolve");
}

/// A query for `fqdn`, `qtype` with RD, as a stub sends it.
fn query(fqdn: &str, qtype: RecordType, id: u16) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    let name = Name::from_ascii(fqdn).expect("a name");
    msg.add_query(Query::query(name, qtype));
    msg.to_vec().expect("encode")
}

fn percentile(times: &[Duration], p: usize) -> Duration {
    let mut v = times.to_vec();
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}
