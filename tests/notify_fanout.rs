//! NOTIFY to many secondaries at once, against the real server on loopback:
//! 400 UDP sockets listed in `[transfer] notify` (a few over IPv6), most
//! answering, some refusing, some silent, each get a NOTIFY per zone with the zone's serial,
//! the counters add up, and the server's open file descriptors stay far
//! below the number of targets (NOTIFYs share a socket per source address
//! instead of binding one each). Its own test binary: it counts the
//! process's descriptors, which other tests running beside it would move.

mod support;
mod transfer_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use support::dns::Proto;
use support::server::{TestServer, metric};
use transfer_support::soa_serial;

const FIXTURES: &str = include_str!("fixtures.yaml");
const ZONES: [&str; 3] = ["cluster.local.", "in-addr.arpa.", "ip6.arpa."];
const TARGETS: usize = 400;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Answers,
    Refuses,
    Silent,
}

/// One in ten silent, one in ten refusing, the rest answering.
fn kind(i: usize) -> Kind {
    match i % 10 {
        0 => Kind::Silent,
        1 => Kind::Refuses,
        _ => Kind::Answers,
    }
}

/// What a target received: (zone, serial) per NOTIFY.
type Received = Arc<Mutex<Vec<(String, u32)>>>;

/// A secondary on `socket` that records each NOTIFY and answers it as
/// `kind` says.
async fn secondary(socket: tokio::net::UdpSocket, kind: Kind, got: Received) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let m = Message::from_vec(&buf[..n]).expect("a NOTIFY that parses");
        assert_eq!(m.op_code, OpCode::Notify);
        let serial = soa_serial(&m.answers[0]).expect("the SOA in the answer section");
        got.lock()
            .unwrap()
            .push((m.queries[0].name().to_ascii(), serial));
        let rcode = match kind {
            Kind::Silent => continue,
            Kind::Answers => ResponseCode::NoError,
            Kind::Refuses => ResponseCode::Refused,
        };
        let mut r = Message::new(m.id, MessageType::Response, OpCode::Notify);
        r.metadata.authoritative = true;
        r.metadata.response_code = rcode;
        r.add_query(m.queries[0].clone());
        let _ = socket.send_to(&r.to_vec().unwrap(), from).await;
    }
}

/// The entries of /proc/self/fd: this process's open descriptors.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_secondaries_share_a_few_sockets_and_each_hears_of_every_zone() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut targets: Vec<(SocketAddr, Kind, Received)> = Vec::new();
        for i in 0..TARGETS {
            // A few over IPv6: their NOTIFYs leave from a second socket.
            let at = if i % 50 == 7 {
                "[::1]:0"
            } else {
                "127.0.0.1:0"
            };
            let socket = tokio::net::UdpSocket::bind(at).await.unwrap();
            let got = Received::default();
            targets.push((socket.local_addr().unwrap(), kind(i), Arc::clone(&got)));
            tokio::spawn(secondary(socket, kind(i), got));
        }
        // The descriptors of the test itself (its 400 sockets included),
        // then the most seen while the server runs, sampled every 2 ms.
        let before = open_fds();
        let most = Arc::new(AtomicUsize::new(before));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (most, done) = (Arc::clone(&most), Arc::clone(&done));
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    most.fetch_max(open_fds(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.0).collect();
        // The first synced serial is announced for every zone.
        let s = TestServer::with_manifests(FIXTURES, |c| {
            c.transfer.allow = vec!["127.0.0.1/32".parse().unwrap()];
            c.transfer.notify = addrs;
        })
        .await;
        let ready = open_fds();
        let count = |kind: Kind| targets.iter().filter(|t| t.1 == kind).count() as f64;
        let jobs = TARGETS as f64 * ZONES.len() as f64;
        let acked = "headless_dns_transfer_notify_total{result=\"acknowledged\"}";
        let failed = "headless_dns_transfer_notify_total{result=\"failed\"}";
        // Silent ones take their five tries, ~15 s.
        support::eventually_within(Duration::from_secs(60), "every NOTIFY done", || async {
            match (metric(&s, acked).await, metric(&s, failed).await) {
                (a, f) if a + f == jobs => Ok(()),
                (a, f) => Err(format!("{a} acknowledged, {f} failed of {jobs}")),
            }
        })
        .await;
        done.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        let most = most.load(Ordering::Relaxed);
        eprintln!(
            "open fds: {before} before the server, {ready} once ready, at most {most} \
             while NOTIFYing {TARGETS} targets x {} zones",
            ZONES.len()
        );
        assert!(
            most - before < 64,
            "the server held {} descriptors for {TARGETS} targets",
            most - before
        );

        let m = s.query(Proto::Udp, "cluster.local", RecordType::SOA).await;
        let serial = soa_serial(&m.answers[0]).expect("SOA answer");
        let zones = ZONES.len() as f64;
        assert_eq!(metric(&s, acked).await, count(Kind::Answers) * zones);
        assert_eq!(
            metric(&s, failed).await,
            (count(Kind::Refuses) + count(Kind::Silent)) * zones
        );
        let mut received = 0;
        for (addr, kind, got) in &targets {
            let got = got.lock().unwrap().clone();
            received += got.len();
            let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
            for (zone, s) in &got {
                assert_eq!(*s, serial, "{addr} ({kind:?}) told {zone} at {s}");
                *per_zone.entry(zone.as_str()).or_default() += 1;
            }
            for zone in ZONES {
                let n = per_zone.get(zone).copied().unwrap_or(0);
                match kind {
                    // A lost datagram is sent again: at least once.
                    Kind::Answers | Kind::Refuses => {
                        assert!(n >= 1, "{addr} ({kind:?}) never told of {zone}: {got:?}")
                    }
                    Kind::Silent => assert_eq!(n, 5, "{addr} told of {zone}: {got:?}"),
                }
            }
            assert_eq!(per_zone.len(), ZONES.len(), "{addr}: {got:?}");
        }
        assert_eq!(
            metric(&s, "headless_dns_transfer_notify_total{result=\"sent\"}").await,
            received as f64,
            "every NOTIFY sent arrived"
        );
        s.stop().await;
    })
    .await
    .unwrap();
}
