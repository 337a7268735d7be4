//! Freshness benchmark: how long from an endpoint change entering the index to
//! the new answer being served over UDP, while the server is busy.
//!
//! Issue #6 sets the target: p99 <= 5 ms at 30,000 queries/s of background
//! load and 1,000 endpoint changes/s. The index bench times apply+publish
//! without sockets and the dnsperf runs time queries without changes; this
//! one measures the two together, end to end, the way a client sees it.
//!
//! Everything runs in this process through the crate's public entry points,
//! wired as `run` wires them: an `IndexWriter` fed through a bounded
//! `mpsc::channel(sources::QUEUE)` into `sources::run_writer` on a tokio
//! runtime, and one UDP thread (`dns::server::spawn_udp`) answering on
//! `127.0.0.1:0`. Three more threads:
//! - load: paced UDP client, 30 queries every millisecond (pod A and service
//!   A names of the cluster), counting sent, answered and lost;
//! - changer+prober (main thread): every millisecond, an EndpointSlice
//!   upsert moving one pod to a fresh IP (t0 just before the send), then
//!   queries for that pod from its own socket until a reply carries the new
//!   IP (t1 when it is received), pausing `PROBE_GAP` between a stale reply
//!   and the next probe. t1 - t0 includes one query round trip and up to one
//!   gap (~0.1 ms with the sleep's slack).
//!
//! Prints numbers; asserts only that answers are right, nothing about speed.
//!
//! Run with `cargo bench --bench freshness` (1,000 headless services x 10
//! pods, 10 s). `cargo test --all-targets` runs it without `--bench`: a 1 s
//! smoke run on 100 services then.

// Printing numbers is what this bench is for.
#![allow(clippy::print_stdout)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use headless_dns::Config;
use headless_dns::dns::{Answerer, server};
use headless_dns::index::{IndexWriter, Kind, SourceEvent, ZoneSettings};
use headless_dns::sources;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Pods per service (StatefulSet replicas `web-0..web-9`).
const PODS: usize = 10;
/// Background queries per second.
const LOAD_QPS: u64 = 30_000;
/// Endpoint changes per second (one per tick).
const TICK: Duration = Duration::from_millis(1);
/// A change not seen in answers within this long counts as a timeout.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(1);
/// A probe with no reply within this long is sent again (a new ID).
const PROBE_RETRY: Duration = Duration::from_millis(5);
/// Pause after a reply with the old address before asking again, so the
/// prober adds a few thousand queries/s, not a closed loop's worth; it bounds
/// the resolution of a sample to about this plus the sleep's slack.
const PROBE_GAP: Duration = Duration::from_micros(50);

mod common;

use common::namespace;

/// A full list of the cluster with these addresses (`ips[s][i]`: pod `i` of
/// service `s`).
fn cluster(ips: &[Vec<Ipv4Addr>]) -> Vec<SourceEvent> {
    common::full_list(
        ips.iter()
            .enumerate()
            .flat_map(|(s, pods)| [common::service(s), common::slice(s, pods)]),
    )
}

fn pod_name(s: usize, i: usize) -> String {
    format!("web-{i}.svc-{s}.{}.svc.cluster.local", namespace(s))
}

fn service_name(s: usize) -> String {
    format!("svc-{s}.{}.svc.cluster.local", namespace(s))
}

/// An A query for `name` (RFC 1035 §4.1), no EDNS; the ID is patched per send.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn set_id(q: &mut [u8], id: u16) {
    q[..2].copy_from_slice(&id.to_be_bytes());
}

/// Skips a (possibly compressed) name at `at`; the offset after it.
fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *p.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + l as usize,
        }
    }
}

/// The reply's ID and the addresses of its A answers; None if it is no
/// NOERROR response.
fn a_answers(p: &[u8]) -> Option<(u16, Vec<Ipv4Addr>)> {
    let header = p.get(..12)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    if header[2] & 0x80 == 0 || header[3] & 0x0f != 0 {
        return None;
    }
    let qd = u16::from_be_bytes([header[4], header[5]]);
    let an = u16::from_be_bytes([header[6], header[7]]);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(p, at)? + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..an {
        at = skip_name(p, at)?;
        let rr = p.get(at..at + 10)?;
        let rdlen = u16::from_be_bytes([rr[8], rr[9]]) as usize;
        let rdata = p.get(at + 10..at + 10 + rdlen)?;
        if rr[..2] == [0, 1] && rdlen == 4 {
            ips.push(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
        }
        at += 10 + rdlen;
    }
    Some((id, ips))
}

/// A small deterministic PRNG (xorshift64*): no `rand` dependency needed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// What the background load achieved.
#[derive(Default)]
struct Load {
    sent: u64,
    answered: u64,
    errors: u64,
    elapsed: Duration,
}

/// Sends `LOAD_QPS` queries/s to `server` until `stop`, in batches every
/// `TICK` (catching up after a late wake-up by at most 10 ticks' worth);
/// replies are read without blocking. Bounded by `limit` in time.
fn load(server: SocketAddr, services: usize, stop: &AtomicBool, limit: Duration) -> Load {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the load socket");
    sock.connect(server).expect("connect the load socket");
    sock.set_nonblocking(true)
        .expect("non-blocking load socket");
    // 80% pod A, 20% service A (10 records), spread over the whole cluster.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut packets: Vec<Vec<u8>> = (0..4096)
        .map(|n| {
            let s = rng.below(services);
            if n % 5 == 4 {
                query(&service_name(s))
            } else {
                query(&pod_name(s, rng.below(PODS)))
            }
        })
        .collect();
    let per_tick = LOAD_QPS * TICK.as_micros() as u64 / 1_000_000;
    let mut r = Load::default();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let mut drain_until = None;
    loop {
        let now = Instant::now();
        if drain_until.is_none() && (stop.load(Ordering::Relaxed) || now - start > limit) {
            r.elapsed = now - start;
            drain_until = Some(now + Duration::from_millis(200));
        }
        if drain_until.is_some_and(|d| now > d || r.answered >= r.sent) {
            break;
        }
        if drain_until.is_none() {
            let due = (now - start).as_micros() as u64 * LOAD_QPS / 1_000_000;
            let batch = due.saturating_sub(r.sent).min(10 * per_tick);
            for _ in 0..batch {
                let p = &mut packets[(r.sent % 4096) as usize];
                set_id(p, r.sent as u16);
                match sock.send(p) {
                    Ok(_) => r.sent += 1,
                    Err(_) => break, // send buffer full: try again next tick
                }
            }
        }
        while let Ok(n) = sock.recv(&mut buf) {
            match a_answers(&buf[..n]) {
                Some((_, ips)) if !ips.is_empty() => r.answered += 1,
                _ => {
                    r.answered += 1;
                    r.errors += 1;
                }
            }
        }
        std::thread::sleep(TICK);
    }
    r
}

/// utime + stime of a `/proc/.../stat` file in clock ticks; 0 if unreadable.
fn stat_ticks(path: &std::path::Path) -> u64 {
    common::stat_ticks(path).map_or(0, |(user, system)| user + system)
}

/// CPU time (user + system) of this process's threads whose name starts
/// with `prefix`, from /proc (ticks of 10 ms: USER_HZ is 100 on Linux).
fn thread_cpu(prefix: &str) -> Duration {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten() {
        let Ok(task) = task else { continue };
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            ticks += stat_ticks(&task.path().join("stat"));
        }
    }
    Duration::from_millis(ticks * 10)
}

/// CPU time of the whole process so far.
fn process_cpu() -> Duration {
    Duration::from_millis(stat_ticks(std::path::Path::new("/proc/self/stat")) * 10)
}

/// One probe socket: queries one pod name until a reply carries `want`.
struct Prober {
    sock: UdpSocket,
    buf: [u8; 4096],
    next_id: u16,
    /// Probe queries sent.
    sent: u64,
    /// Probes sent again after `PROBE_RETRY` without a reply.
    retries: u64,
}

impl Prober {
    /// When a reply with `want` arrived (None: not within `CHANGE_TIMEOUT`).
    /// Any reply to a probe sent for this change counts, so a late reply to
    /// an earlier probe is as good as the latest one.
    fn wait_for(&mut self, name: &str, want: Ipv4Addr, t0: Instant) -> Option<Instant> {
        let mut q = query(name);
        let first = self.next_id;
        loop {
            if t0.elapsed() > CHANGE_TIMEOUT {
                return None;
            }
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            set_id(&mut q, id);
            self.sent += 1;
            if self.sock.send(&q).is_err() {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            let asked = Instant::now();
            // Read replies to this change's probes until one shows the old
            // address (ask again) or the new one (done).
            loop {
                match self.sock.recv(&mut self.buf) {
                    Ok(n) => {
                        let now = Instant::now();
                        let Some((rid, ips)) = a_answers(&self.buf[..n]) else {
                            break;
                        };
                        if rid.wrapping_sub(first) > id.wrapping_sub(first) {
                            continue; // a reply to an earlier change's probe
                        }
                        if ips.contains(&want) {
                            return Some(now);
                        }
                        if rid == id {
                            std::thread::sleep(PROBE_GAP);
                            break;
                        }
                    }
                    Err(_) => {
                        if asked.elapsed() >= PROBE_RETRY || t0.elapsed() > CHANGE_TIMEOUT {
                            self.retries += 1;
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// The value at quantile `q` (nearest rank) of sorted `v`, in microseconds.
fn quantile(v: &[Duration], q: f64) -> u128 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1].as_micros()
}

/// The publish-duration bucket bound at quantile `q` of a bucket delta.
fn bucket_quantile(counts: &[u64], q: f64) -> String {
    let total: u64 = counts.iter().sum();
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if total > 0 && seen as f64 >= q * total as f64 {
            return match headless_dns::histogram::BUCKETS_US.get(i) {
                Some(b) => format!("<= {b} µs"),
                None => "> 100 ms".into(),
            };
        }
    }
    "n/a".into()
}

fn publish_counts(index: &headless_dns::index::Index) -> (Vec<u64>, u64, u64) {
    let s = index.stats();
    (
        s.publish_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect(),
        s.publishes.load(Ordering::Relaxed),
        s.publish_ns.load(Ordering::Relaxed),
    )
}

/// The server under test, wired as `headless_dns::run` wires it: the index
/// writer task on a one-thread runtime and one UDP thread.
struct Server {
    runtime: tokio::runtime::Runtime,
    tx: mpsc::Sender<SourceEvent>,
    writer_task: tokio::task::JoinHandle<()>,
    index: headless_dns::index::Index,
    stop: CancellationToken,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
    /// How long the initial full list took to be served.
    sync: Duration,
}

impl Server {
    /// Starts the writer, syncs it with `ips`, then starts the UDP thread.
    fn start(ips: &[Vec<Ipv4Addr>]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("index-writer")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let writer = IndexWriter::new(ZoneSettings::default(), &Kind::ALL);
        let index = writer.index();
        let (tx, rx) = mpsc::channel(sources::QUEUE);
        let writer_task = runtime.spawn(sources::run_writer(writer, rx));
        let t = Instant::now();
        for e in cluster(ips) {
            tx.blocking_send(e).expect("the writer is running");
        }
        runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(60), index.wait_synced()).await
            })
            .expect("initial sync within 60 s");
        let sync = t.elapsed();

        // The real UDP query path: one socket, one thread.
        let mut settings = Config::default().dns_settings();
        settings.dns.ttl = 5;
        let answerer = Arc::new(Answerer::new(index.clone(), settings));
        let sockets = server::bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)), 1, 256 * 1024)
            .expect("bind 127.0.0.1:0");
        let addr = sockets[0].local_addr().expect("bound address");
        let stop = CancellationToken::new();
        let udp_threads = server::spawn_udp(
            &answerer,
            sockets,
            None,
            None,
            &stop,
            &Default::default(),
            Default::default(),
        )
        .expect("start the UDP thread");
        Self {
            runtime,
            tx,
            writer_task,
            index,
            stop,
            udp_threads,
            addr,
            sync,
        }
    }

    fn shut_down(self) {
        self.stop.cancel();
        for t in self.udp_threads {
            let _ = t.join();
        }
        drop(self.tx);
        let writer_task = self.writer_task;
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), writer_task).await });
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// CPU of the UDP thread, the writer thread and the whole process.
fn cpu_now() -> (Duration, Duration, Duration) {
    (
        thread_cpu("dns-udp"),
        thread_cpu("index-writer"),
        process_cpu(),
    )
}

/// What the changing phase measured.
struct Changes {
    /// Change sent -> new address received, sorted.
    samples: Vec<Duration>,
    timeouts: u64,
    /// How long the changes ran.
    elapsed: Duration,
    /// CPU (UDP thread, writer thread, process) used meanwhile.
    cpu: (Duration, Duration, Duration),
    /// Publish-latency bucket counts, publishes and their total ns meanwhile.
    publish: (Vec<u64>, u64, u64),
}

/// One change per tick for `run`: a random pod moves to a fresh address and
/// the prober waits for an answer carrying it.
fn run_changes(
    server: &Server,
    prober: &mut Prober,
    ips: &mut [Vec<Ipv4Addr>],
    run: Duration,
) -> Changes {
    let services = ips.len();
    let cpu_before = cpu_now();
    let publish_before = publish_counts(&server.index);
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut fresh = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let max_changes = run.as_millis() as usize;
    let mut samples = Vec::with_capacity(max_changes);
    let mut timeouts = 0u64;
    let start = Instant::now();
    let mut tick = start;
    for _ in 0..max_changes {
        if start.elapsed() > run {
            break;
        }
        let (s, i) = (rng.below(services), rng.below(PODS));
        fresh += 1;
        let ip = Ipv4Addr::from(fresh);
        ips[s][i] = ip;
        let event = SourceEvent::Upsert(common::slice(s, &ips[s]));
        let name = pod_name(s, i);
        let t0 = Instant::now();
        server
            .tx
            .blocking_send(event)
            .expect("the writer is running");
        match prober.wait_for(&name, ip, t0) {
            Some(t1) => samples.push(t1 - t0),
            None => timeouts += 1,
        }
        tick += TICK;
        let now = Instant::now();
        if tick > now {
            std::thread::sleep(tick - now);
        } else {
            tick = now; // late: go on, no catch-up burst
        }
    }
    let elapsed = start.elapsed();
    let cpu_after = cpu_now();
    let publish_after = publish_counts(&server.index);
    samples.sort();
    Changes {
        samples,
        timeouts,
        elapsed,
        cpu: (
            cpu_after.0.saturating_sub(cpu_before.0),
            cpu_after.1.saturating_sub(cpu_before.1),
            cpu_after.2.saturating_sub(cpu_before.2),
        ),
        publish: (
            publish_after
                .0
                .iter()
                .zip(&publish_before.0)
                .map(|(a, b)| a - b)
                .collect(),
            publish_after.1 - publish_before.1,
            publish_after.2 - publish_before.2,
        ),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --all-targets` runs this without `--bench`: a small smoke
    // run then, so the test suite stays fast; `cargo bench` gets the real size.
    let full = std::env::args().any(|a| a == "--bench");
    let (services, run) = if full {
        (1_000, Duration::from_secs(10))
    } else {
        (100, Duration::from_secs(1))
    };
    let mut ips: Vec<Vec<Ipv4Addr>> = (0..services).map(|s| common::ips(s, PODS, 0)).collect();
    let server = Server::start(&ips);
    let addr = server.addr;

    let mut prober = Prober {
        sock: UdpSocket::bind("127.0.0.1:0").expect("bind the probe socket"),
        buf: [0; 4096],
        next_id: 0,
        sent: 0,
        retries: 0,
    };
    prober.sock.connect(addr).expect("connect the probe socket");
    prober
        .sock
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("probe read timeout");
    // Served before any change: the initial address.
    let before = prober.wait_for(&pod_name(0, 0), ips[0][0], Instant::now());
    assert!(
        before.is_some(),
        "web-0.svc-0 not served its initial address"
    );

    let load_stop = Arc::new(AtomicBool::new(false));
    let load_thread = {
        let load_stop = Arc::clone(&load_stop);
        std::thread::Builder::new()
            .name("load".into())
            .spawn(move || load(addr, services, &load_stop, run + Duration::from_secs(5)))
            .expect("start the load thread")
    };
    // Let the load reach its rate before changes start.
    std::thread::sleep(Duration::from_millis(200));
    let changes = run_changes(&server, &mut prober, &mut ips, run);
    load_stop.store(true, Ordering::Relaxed);
    let bg = load_thread.join().expect("the load thread");
    let sync = server.sync;
    server.shut_down();
    report(services, full, sync, &bg, &prober, &changes);
}

fn report(services: usize, full: bool, sync: Duration, bg: &Load, prober: &Prober, c: &Changes) {
    let samples = &c.samples;
    let timeouts = c.timeouts;
    let changes = samples.len() as u64 + timeouts;
    let secs = c.elapsed.as_secs_f64();
    println!(
        "freshness: {services} headless services x {PODS} pods ({} endpoints), initial sync {:.0} ms, {} run",
        services * PODS,
        sync.as_secs_f64() * 1000.0,
        if full { "full" } else { "smoke" }
    );
    println!(
        "  background load: {:.0} qps achieved over {:.2} s (target {LOAD_QPS}); sent {}, answered {}, lost {}, non-NOERROR/empty {}",
        bg.sent as f64 / bg.elapsed.as_secs_f64(),
        bg.elapsed.as_secs_f64(),
        bg.sent,
        bg.answered,
        bg.sent.saturating_sub(bg.answered),
        bg.errors
    );
    println!(
        "  changes: {changes} in {secs:.2} s = {:.0}/s (target 1000); probe queries {} ({:.1} per change), re-sent after {} ms silence {}",
        changes as f64 / secs,
        prober.sent,
        prober.sent as f64 / changes.max(1) as f64,
        PROBE_RETRY.as_millis(),
        prober.retries
    );
    println!(
        "  freshness (send to index -> reply with the new IP received), µs: p50 {} p90 {} p99 {} p99.9 {} max {}; timeouts (> {} s) {timeouts}",
        quantile(samples, 0.5),
        quantile(samples, 0.9),
        quantile(samples, 0.99),
        quantile(samples, 0.999),
        samples.last().map_or(0, Duration::as_micros),
        CHANGE_TIMEOUT.as_secs()
    );
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / secs;
    println!(
        "  CPU during the changes: UDP thread {:.0}%, writer thread {:.0}%, whole process (incl. load and prober) {:.0}%",
        pct(c.cpu.0),
        pct(c.cpu.1),
        pct(c.cpu.2)
    );
    let (delta, publishes, ns) = &c.publish;
    println!(
        "  index publishes: {publishes}, mean {:.0} µs, p99 {} (index.stats() buckets)",
        *ns as f64 / (*publishes).max(1) as f64 / 1000.0,
        bucket_quantile(delta, 0.99)
    );
}
