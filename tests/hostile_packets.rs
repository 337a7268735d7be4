//! Hostile packets against the real server over real loopback sockets
//! (issue 7, "Bad input"): malformed queries, unknown classes, EDNS edge
//! cases and transfers, and a replay of the fuzz seeds and crash
//! reproducers through the fuzz targets' own checks (so CI covers them
//! without a nightly toolchain). After every hostile case the server must
//! still answer a normal query correctly.

mod support;

#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::dns::{BOTH, Proto, exchange_raw, framed, ip_strings, message, rcode, read_framed};
use support::fixtures::{POD, SRV, assert_still_answers, start};
use support::packets::{RAW_ID, header, opt, question};
use support::server::TestServer;
use support::within;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

/// Sends raw bytes and parses the reply, checking the id.
async fn raw(proto: Proto, s: &TestServer, packet: &[u8]) -> Message {
    let reply = exchange_raw(proto, s.dns, packet)
        .await
        .unwrap_or_else(|| panic!("{proto:?}: no reply to {packet:02x?}"));
    let m = Message::from_vec(&reply).expect("reply parses");
    assert_eq!(m.metadata.id, RAW_ID, "{proto:?}: id echoed");
    m
}

/// Packets that must get FORMERR, each with what is wrong with it.
fn formerr_cases() -> Vec<(&'static str, Vec<u8>)> {
    let q_end = [header(1, 0, 0, 0), question(POD, 1, 1)].concat().len();
    let mut long_label = header(1, 0, 0, 0);
    long_label.push(0x40);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut reserved_label = header(1, 0, 0, 0);
    reserved_label.extend_from_slice(&[0x80, b'a', 0, 0, 1, 0, 1]);
    let mut long_name = header(1, 0, 0, 0);
    for _ in 0..4 {
        long_name.push(63);
        long_name.extend_from_slice(&[b'a'; 63]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]); // 257 bytes with the root
    vec![
        ("QDCOUNT 0", header(0, 0, 0, 0)),
        (
            "QDCOUNT 2",
            [header(2, 0, 0, 0), question(POD, 1, 1), question("a", 1, 1)].concat(),
        ),
        (
            "QDCOUNT 2, one question sent",
            [header(2, 0, 0, 0), question(POD, 1, 1)].concat(),
        ),
        // The question's name is a pointer to itself.
        (
            "pointer loop in the question",
            [header(1, 0, 0, 0), vec![0xC0, 12, 0, 1, 0, 1]].concat(),
        ),
        // Two pointers pointing at each other.
        (
            "two-pointer loop in the question",
            [header(1, 0, 0, 0), vec![0xC0, 14, 0xC0, 12, 0, 1, 0, 1]].concat(),
        ),
        ("label length 0x40", long_label),
        ("label length 0x80", reserved_label),
        ("name of 257 bytes", long_name),
        (
            "OPT in the answer section",
            [header(1, 1, 0, 0), question(POD, 1, 1), opt(1232, 0)].concat(),
        ),
        (
            "OPT owner is a pointer loop",
            [
                header(1, 0, 0, 1),
                question(POD, 1, 1),
                vec![0xC0, q_end as u8],
                opt(1232, 0)[1..].to_vec(),
            ]
            .concat(),
        ),
        (
            "additional count beyond the packet",
            [header(1, 0, 0, 3), question(POD, 1, 1), opt(1232, 0)].concat(),
        ),
    ]
}

/// True when nothing comes back within 300 ms (the server answers loopback
/// queries in well under a millisecond).
async fn no_udp_reply(server: SocketAddr, packet: &[u8]) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(packet, server).await.unwrap();
    let mut buf = [0u8; 512];
    tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf))
        .await
        .is_err()
}

/// Truncated headers get no reply at all; over TCP the connection is not
/// dropped for it, the next message on it is answered.
async fn truncated_headers_are_ignored(s: &TestServer) {
    let a_query = [header(1, 0, 0, 0), question(POD, 1, 1)].concat();
    for n in [0, 1, 5, 11] {
        assert!(
            no_udp_reply(s.dns, &a_query[..n]).await,
            "{n}-byte UDP packet answered"
        );
        let mut c = TcpStream::connect(s.dns).await.unwrap();
        let query = message(POD, RecordType::A, None).to_vec().unwrap();
        let both = [framed(&a_query[..n]), framed(&query)].concat();
        c.write_all(&both).await.unwrap();
        let reply = read_framed(&mut c)
            .await
            .expect("reply on the same connection");
        assert_eq!(
            reply[..2],
            query[..2],
            "the {n}-byte message got no reply of its own"
        );
        assert_still_answers(s, "a truncated header").await;
    }
}

#[tokio::test]
async fn malformed_packets_get_formerr_and_the_server_goes_on() {
    within(Duration::from_secs(60), async {
        let s = start(|_| {}).await;
        let q_end = [header(1, 0, 0, 0), question(POD, 1, 1)].concat().len();
        for proto in BOTH {
            for (what, packet) in &formerr_cases() {
                let m = raw(proto, &s, packet).await;
                assert_eq!(rcode(&m), ResponseCode::FormErr, "{proto:?} {what}");
                assert!(m.answers.is_empty(), "{proto:?} {what}");
                assert_still_answers(&s, what).await;
            }
            // A record whose owner is a pointer to itself, in the additional
            // section: we never decompress names we do not use, so it cannot
            // loop, and the question is answered.
            let mut p = [header(1, 0, 0, 1), question(POD, 1, 1)].concat();
            p.extend_from_slice(&[0xC0, q_end as u8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
            let m = raw(proto, &s, &p).await;
            assert_eq!(
                ip_strings(&m),
                ["10.1.0.10"],
                "{proto:?} pointer loop skipped"
            );
            assert_still_answers(&s, "a pointer loop in the additional section").await;
        }
        truncated_headers_are_ignored(&s).await;
        s.stop().await;
    })
    .await;
}

/// EDNS payload below 512 is read as 512 (RFC 6891 §6.2.5): the SRV answer
/// with glue (between 100 and 512 bytes) comes whole; of 60 A records, the
/// 28 that fit in 512 besides the header, question (47) and OPT (11).
async fn small_edns_payloads_count_as_512(s: &TestServer) {
    let p = [header(1, 0, 0, 1), question(SRV, 33, 1), opt(100, 0)].concat();
    let reply = exchange_raw(Proto::Udp, s.dns, &p).await.expect("reply");
    assert!(
        reply.len() > 100 && reply.len() <= 512,
        "{} bytes",
        reply.len()
    );
    let m = Message::from_vec(&reply).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!((m.answers.len(), m.additionals.len()), (3, 4));
    let p = [
        header(1, 0, 0, 1),
        question("big.default.svc.cluster.local", 1, 1),
        opt(100, 0),
    ]
    .concat();
    let reply = exchange_raw(Proto::Udp, s.dns, &p).await.expect("reply");
    assert!(reply.len() <= 512);
    let m = Message::from_vec(&reply).unwrap();
    assert!(m.metadata.truncation, "{m:?}");
    assert_eq!(m.answers.len(), (512 - 47 - 11) / 16, "{m:?}");
}

#[tokio::test]
async fn classes_edns_any_and_transfers() {
    within(Duration::from_secs(60), async {
        let s = start(|_| {}).await;
        for proto in BOTH {
            // CHAOS and HESIOD: not served, REFUSED (also for our own names).
            for (name, qtype, class) in [("version.bind", 16, 3), (POD, 1, 3), (POD, 1, 4)] {
                let m = raw(
                    proto,
                    &s,
                    &[header(1, 0, 0, 0), question(name, qtype, class)].concat(),
                )
                .await;
                assert_eq!(
                    rcode(&m),
                    ResponseCode::Refused,
                    "{proto:?} {name} class {class}"
                );
                assert_still_answers(&s, "an unknown class").await;
            }
            // EDNS version 1: BADVERS (16 = 1 in OPT's extended rcode, 0 in the header).
            let p = [header(1, 0, 0, 1), question(POD, 1, 1), opt(1232, 1)].concat();
            let m = raw(proto, &s, &p).await;
            assert_eq!(u16::from(rcode(&m)), 16, "{proto:?} BADVERS");
            assert!(m.answers.is_empty());
            assert_eq!(
                m.edns.as_ref().map(|e| e.version()),
                Some(0),
                "we speak version 0"
            );
            assert_still_answers(&s, "EDNS version 1").await;
            // Transfers: REFUSED over both transports.
            for t in [RecordType::AXFR, RecordType::IXFR] {
                let m = s.query(proto, "cluster.local", t).await;
                assert_eq!(rcode(&m), ResponseCode::Refused, "{proto:?} {t}");
            }
        }
        small_edns_payloads_count_as_512(&s).await;
        assert_still_answers(&s, "EDNS payload 100").await;
        s.stop().await;

        // any = "refuse"
        let s = start(|c| c.dns.any = headless_dns::dns::AnyMode::Refuse).await;
        for proto in BOTH {
            let m = s.query(proto, POD, RecordType::ANY).await;
            assert_eq!(rcode(&m), ResponseCode::Refused, "{proto:?} ANY refused");
        }
        assert_still_answers(&s, "ANY refused").await;
        s.stop().await;
    })
    .await;
}

// ---- the fuzz corpus, without the fuzzer -----------------------------------

/// The files of `fuzz/<dir>/<target>/`, sorted (none if it does not exist).
fn inputs(dir: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Every seed of `target` (at least `min`) and every file of its minimized
/// corpus passes `check`.
fn replay(target: &str, min: usize, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let seeds = inputs("seeds", target);
    assert!(seeds.len() >= min, "{} seeds", seeds.len());
    for (path, bytes) in seeds.into_iter().chain(inputs("corpus-min", target)) {
        let r = std::panic::catch_unwind(|| check(&bytes));
        assert!(r.is_ok(), "{path} fails the fuzz target's checks");
    }
}

#[test]
fn fuzz_seeds_and_reproducers_replay_through_the_answer_checks() {
    replay("answer", 20, harness::check_answer);
    // The transfer target's packets (after its first byte) are queries too.
    replay("transfer", 20, |data| {
        harness::check_answer(data.get(1..).unwrap_or_default())
    });
}

#[test]
fn fuzz_seeds_and_reproducers_replay_through_the_transfer_checks() {
    replay("transfer", 20, harness::check_transfer);
    // The answer target's packets as transfer requests, from inside both
    // allow lists (peer 0): as they are, and signed (signing 1: validly;
    // 5: with a bad MAC). The first byte is the signing << 2 | the peer.
    for flags in [0, 1 << 2, 5 << 2] {
        replay("answer", 20, |packet| {
            harness::check_transfer(&[&[flags], packet].concat())
        });
    }
}

#[test]
fn fuzz_seeds_and_reproducers_replay_through_the_manifest_checks() {
    replay("manifest", 3, harness::check_manifest);
}
