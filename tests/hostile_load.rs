//! Load against the real server (issue 7, "Overload"): response-rate
//! limiting of a UDP burst, slow admin readers that must not slow DNS, and a
//! burst of 100,000 source events through the bounded queue.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use headless_dns::index::{
    EndpointRecord, IndexWriter, Kind, Object, ObjectKey, ServiceKind, ServiceRecord, SliceRecord,
    SourceEvent, ZoneSettings,
};
use headless_dns::sources::{QUEUE, run_writer};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::dns::{BOTH, Proto, exchange, ip_strings, message, rcode};
use support::fixtures::{POD, assert_still_answers, start, with_big_service};
use support::server::TestServer;
use support::{http, within};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

// ---- response-rate limiting ---------------------------------------------

/// Sends `n` queries for POD in one burst from one socket; returns
/// (answered, slipped, silent) after 500 ms without a reply (at most 10 s).
async fn burst(server: SocketAddr, n: u16) -> (usize, usize, usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..n {
        let mut m = message(POD, RecordType::A, Some(1232));
        m.metadata.id = i;
        sock.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    }
    let (mut answered, mut slipped) = (BTreeSet::new(), BTreeSet::new());
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while answered.len() + slipped.len() < n as usize && tokio::time::Instant::now() < deadline {
        let Ok(Ok((len, _))) =
            tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
        else {
            break;
        };
        let m = Message::from_vec(&buf[..len]).expect("reply parses");
        assert_eq!(rcode(&m), ResponseCode::NoError);
        if m.metadata.truncation {
            assert!(m.answers.is_empty(), "a slip carries no records");
            assert_eq!(m.queries.len(), 1, "a slip keeps the question");
            assert!(m.edns.is_some(), "a slip keeps OPT");
            slipped.insert(m.metadata.id);
        } else {
            assert_eq!(ip_strings(&m), ["10.1.0.10"]);
            answered.insert(m.metadata.id);
        }
    }
    let silent = n as usize - answered.len() - slipped.len();
    (answered.len(), slipped.len(), silent)
}

#[tokio::test]
async fn rate_limiting_drops_and_slips_a_burst_only_when_on() {
    within(Duration::from_secs(60), async {
        let s = start(|c| {
            c.dns.rrl_responses_per_second = 5;
            c.dns.rrl_slip = 2;
        })
        .await;
        let started = Instant::now();
        // The server's own readiness probe sent no DNS, so the budget is whole.
        let (answered, slipped, silent) = burst(s.dns, 100).await;
        let elapsed = started.elapsed().as_secs_f64();
        let budget = 5 + (5.0 * elapsed).ceil() as usize;
        assert!(
            (1..=budget).contains(&answered),
            "{answered} answered, budget {budget} in {elapsed:.2} s"
        );
        assert!(
            slipped >= 1 && silent >= 1,
            "{slipped} slipped, {silent} dropped"
        );
        assert!(
            slipped.abs_diff(silent) <= 1,
            "slip 2: every second response over the limit is truncated ({slipped} vs {silent})"
        );
        // TCP is never limited: a client told TC retries there and is answered.
        let m = exchange(Proto::Tcp, s.dns, &message(POD, RecordType::A, None)).await;
        assert_eq!(ip_strings(&m), ["10.1.0.10"]);
        s.stop().await;

        // Off (the default): the same burst is answered in full.
        let s = start(|_| {}).await;
        let (answered, slipped, silent) = burst(s.dns, 100).await;
        assert_eq!((answered, slipped, silent), (100, 0, 0));
        s.stop().await;
    })
    .await;
}

// ---- batched UDP ------------------------------------------------------------

/// The questions of the batching test, by query id: a pod (A), the same pod
/// over and over, and the 60-address service, whose reply without EDNS does
/// not fit 512 bytes and is truncated. Replies of all sizes share batches.
fn batch_question(id: u16) -> (&'static str, Option<u16>) {
    match id % 3 {
        0 => (POD, Some(1232)),
        1 => ("web-1.nginx.default.svc.cluster.local", None),
        _ => ("big.default.svc.cluster.local", None),
    }
}

/// Many clients' queries queued at once (the UDP thread takes them in
/// batches, `recvmmsg`/`sendmmsg`): every one is answered, to its own
/// sender, with its own answer.
#[tokio::test]
async fn a_burst_from_many_clients_is_answered_each_to_its_sender() {
    within(Duration::from_secs(60), async {
        let s = start(|_| {}).await;
        const CLIENTS: u16 = 16;
        const EACH: u16 = 24;
        let mut socks = Vec::new();
        for c in 0..CLIENTS {
            let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for i in 0..EACH {
                let id = c * 1000 + i;
                let (name, edns) = batch_question(id);
                let mut m = message(name, RecordType::A, edns);
                m.metadata.id = id;
                sock.send_to(&m.to_vec().unwrap(), s.dns).await.unwrap();
            }
            socks.push(sock);
        }
        let mut buf = vec![0u8; 65535];
        for (c, sock) in socks.iter().enumerate() {
            let mut seen = BTreeSet::new();
            while seen.len() < EACH as usize {
                let (len, from) =
                    tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
                        .await
                        .unwrap_or_else(|_| panic!("client {c}: {} of {EACH} answered", seen.len()))
                        .unwrap();
                assert_eq!(from, s.dns);
                let m = Message::from_vec(&buf[..len]).expect("reply parses");
                let id = m.metadata.id;
                assert_eq!(usize::from(id / 1000), c, "a reply for another client");
                assert!(seen.insert(id), "reply {id} twice");
                let (name, _) = batch_question(id);
                assert_eq!(m.queries[0].name().to_string(), format!("{name}."));
                match id % 3 {
                    0 => assert_eq!(ip_strings(&m), ["10.1.0.10"]),
                    1 => assert_eq!(ip_strings(&m), ["10.1.0.11"]),
                    _ => assert!(m.metadata.truncation && len <= 512, "{len} bytes"),
                }
            }
        }
        s.stop().await;
    })
    .await;
}

/// A lone query is answered at once, not held back to fill a batch: 30
/// queries in turn, each waiting for its reply, take well under the 6 s
/// they would if each waited for the UDP thread's 200 ms idle poll.
#[tokio::test]
async fn lone_queries_are_not_held_for_a_batch() {
    within(Duration::from_secs(60), async {
        let s = start(|_| {}).await;
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let started = Instant::now();
        for id in 0..30u16 {
            let mut m = message(POD, RecordType::A, None);
            m.metadata.id = id;
            sock.send_to(&m.to_vec().unwrap(), s.dns).await.unwrap();
            let (len, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
                .await
                .expect("answered")
                .unwrap();
            let m = Message::from_vec(&buf[..len]).unwrap();
            assert_eq!(
                (m.metadata.id, ip_strings(&m)),
                (id, vec!["10.1.0.10".to_string()])
            );
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "30 lone queries took {took:?}"
        );
        s.stop().await;
    })
    .await;
}

// ---- the admin API is not on the DNS path ----------------------------------

/// The fixture cluster plus `n` headless services of 10 endpoints each, so
/// `/records` is far larger than a socket buffer.
fn many_services(n: usize) -> String {
    let mut y = with_big_service();
    for s in 0..n {
        y.push_str(&format!(
            "\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: default}}\nspec: {{clusterIP: None, ports: [{{name: web, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{s}-1, namespace: default, labels: {{kubernetes.io/service-name: svc-{s}}}}}\naddressType: IPv4\nendpoints:\n"
        ));
        for k in 0..10 {
            y.push_str(&format!(
                "  - {{addresses: [\"10.{}.{}.{}\"], hostname: web-{k}}}\n",
                50 + s / 250,
                s % 250,
                k + 1
            ));
        }
    }
    y
}

#[tokio::test]
async fn slow_admin_readers_do_not_slow_dns() {
    within(Duration::from_secs(120), async {
        let s = TestServer::with_manifests(&many_services(400), |_| {}).await;
        let (_, records) = http::get(s.admin, "/records").await.unwrap();
        assert!(
            records.len() > 256 * 1024,
            "/records is {} bytes",
            records.len()
        );

        // 100 clients ask for /records and never read; 100 send half a request
        // line and stall (slowloris). All stay open for the rest of the test.
        let mut stalled = Vec::new();
        for i in 0..200 {
            let mut c = TcpStream::connect(s.admin).await.unwrap();
            let req: &[u8] = if i % 2 == 0 {
                b"GET /records HTTP/1.1\r\nHost: x\r\n\r\n"
            } else {
                b"GET /reco"
            };
            c.write_all(req).await.unwrap();
            stalled.push(c);
        }
        // Let the handlers run and fill the never-read sockets.
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Meanwhile every DNS query over UDP and TCP is answered, and right.
        for round in 0..200 {
            let svc = round % 400;
            let name = format!("web-3.svc-{svc}.default.svc.cluster.local");
            let want = format!("10.{}.{}.4", 50 + svc / 250, svc % 250);
            for proto in BOTH {
                let m = s.query(proto, &name, RecordType::A).await;
                assert_eq!(
                    ip_strings(&m),
                    std::slice::from_ref(&want),
                    "{proto:?} {name}"
                );
            }
        }
        // And the admin API itself still serves others.
        let (status, _) = http::get(s.admin, "/health").await.unwrap();
        assert_eq!(status, 200);
        drop(stalled);
        assert_still_answers(&s, "slow admin readers").await;
        s.stop().await;
    })
    .await;
}

// ---- a burst of source events ----------------------------------------------

/// The burst's i-th address: 10.9.x.y.
fn burst_ip(i: u32) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a09_0000 | i))
}

/// The slice of service `web` with `web-0` at [`burst_ip`]`(i)`.
fn burst_slice(i: u32) -> SourceEvent {
    SourceEvent::Upsert(Object::EndpointSlice(SliceRecord {
        key: ObjectKey::new("default", "web-1"),
        service: "web".into(),
        ports: vec![],
        endpoints: vec![EndpointRecord {
            hostname: Some("web-0".into()),
            addresses: vec![burst_ip(i)],
            ready: true,
            serving: true,
            terminating: false,
            pod: Some("web-0".into()),
        }],
    }))
}

/// A first sync of every kind with headless service `web` in it.
fn first_sync() -> Vec<SourceEvent> {
    let mut sync: Vec<SourceEvent> = Kind::ALL.iter().map(|k| SourceEvent::Reset(*k)).collect();
    sync.push(SourceEvent::Upsert(Object::Service(ServiceRecord {
        key: ObjectKey::new("default", "web"),
        kind: ServiceKind::Headless,
        ports: Vec::new().into(),
        publish_not_ready: false,
    })));
    sync.extend(Kind::ALL.iter().map(|k| SourceEvent::Synced(*k)));
    sync
}

#[tokio::test(flavor = "current_thread")]
async fn a_burst_of_100k_events_coalesces_through_the_bounded_queue() {
    let writer = IndexWriter::new(ZoneSettings::default(), &Kind::ALL);
    let index = writer.index();
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run_writer(writer, rx));
    for e in first_sync() {
        tx.send(e).await.unwrap();
    }
    let publishes = || {
        index
            .stats()
            .publishes
            .load(std::sync::atomic::Ordering::Relaxed)
    };

    // One pod's address changes 100,000 times as fast as the sender can go.
    const N: u32 = 100_000;
    let before = publishes();
    let mut most_queued = 0;
    for i in 1..=N {
        tx.send(burst_slice(i)).await.unwrap();
        most_queued = most_queued.max(tx.max_capacity() - tx.capacity());
    }
    drop(tx);
    task.await.unwrap();
    let publishes = publishes() - before;

    // Only the last address is served, nothing stale survives.
    assert!(
        index.reverse(&burst_ip(N)).is_some(),
        "the final address has its PTR"
    );
    for stale in [1, N / 2, N - 1] {
        assert!(
            index.reverse(&burst_ip(stale)).is_none(),
            "{} is stale",
            burst_ip(stale)
        );
    }
    // The queue never held more than its bound, and the writer published
    // once per batch, not once per event.
    eprintln!("{N} events: {publishes} publishes, at most {most_queued} queued (bound {QUEUE})");
    assert!(most_queued <= QUEUE);
    assert!(
        u64::from(N) / publishes.max(1) >= 50,
        "{publishes} publishes for {N} events"
    );
}
