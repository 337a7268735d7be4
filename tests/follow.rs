//! Our server following our server: a primary on the file source serving
//! zone transfers, and a follower on the transfer source, both real servers
//! on loopback sockets. The follower answers every name of the zone as the
//! primary does (and transfers it on in turn); changes reach it by NOTIFY
//! and IXFR — also when the primary lists no secondary, by the NOTIFY it
//! sends where the follower's IXFR checks came from (a node-local cache) —
//! or by its refresh when a NOTIFY is lost; a primary that answers IXFR
//! checks with an error or not at all is checked by SOA query instead;
//! a namespace without services is NODATA on the follower and on a Knot
//! secondary as on the primary (the cluster zone's namespace marker), and
//! NXDOMAIN once deleted; TSIG is checked both ways; and when the primary is
//! gone, or signs with another key, the follower keeps its last good zone
//! (or stays SERVFAIL before its first one).

mod support;
mod transfer_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use headless_dns::Config;
use headless_dns::config::{SourceKind, TsigKeyConfig};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use support::dns::{Answer, BOTH, Proto, query, reverse_v4, try_query};
use support::process::{free_port, loopback};
use support::server::{TestServer, metric, rewrite, test_config};
use support::{eventually, http, within};
use transfer_support::secondary::{Kind, Secondary};
use transfer_support::{SECRET, WRONG_SECRET, comparable, request, tcp};

const FIXTURES: &str = include_str!("fixtures.yaml");
const ZONE: &str = "cluster.local";
const LIMIT: Duration = Duration::from_secs(60);
const WEB_0: &str = "web-0.nginx.default.svc.cluster.local";

fn tsig(c: &mut Config, secret: &str) {
    c.transfer.tsig = vec![TsigKeyConfig {
        name: "xfr-key".into(),
        algorithm: "hmac-sha256".into(),
        secret: secret.into(),
        namespaces: Vec::new(),
        key_file: None,
    }];
}

/// A primary on the fixtures, transfers allowed from loopback, NOTIFYs to
/// `notify`.
async fn primary(notify: Option<SocketAddr>, tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::with_manifests(FIXTURES, |c| {
        c.transfer.allow = vec!["127.0.0.1/32".parse().unwrap()];
        c.transfer.notify = notify.into_iter().collect();
        tweak(c);
    })
    .await
}

/// A follower of `primary` on `port` (0: any), checking every `refresh_ms`.
fn follower_config(primary: SocketAddr, port: u16, refresh_ms: u64) -> Config {
    let mut c = test_config(Vec::new());
    c.dns.listen = vec![loopback(port)];
    c.source.kind = SourceKind::Transfer;
    c.source.primary = Some(primary);
    c.source.refresh_ms = Some(refresh_ms);
    c
}

fn served(kind: &str) -> String {
    format!("headless_dns_transfer_requests_total{{kind=\"{kind}\"}}")
}

/// Every owner name of the primary's zone, every reverse name of its
/// addresses, and names that exist nowhere.
async fn names_to_compare(primary: &TestServer) -> (BTreeSet<String>, BTreeSet<String>) {
    let axfr = tcp(primary.dns, request(ZONE, RecordType::AXFR, None), None).await;
    let mut forward = BTreeSet::new();
    let mut reverse = BTreeSet::new();
    for r in axfr.records() {
        forward.insert(r.name.to_ascii().to_ascii_lowercase());
        match &r.data {
            RData::A(a) => reverse.insert(reverse_v4(IpAddr::V4(a.0))),
            RData::AAAA(a) => reverse.insert(
                hickory_proto::rr::Name::from(IpAddr::V6(a.0))
                    .to_ascii()
                    .to_ascii_lowercase(),
            ),
            _ => false,
        };
    }
    for missing in [
        "nope.default.svc.cluster.local.",
        "web-9.nginx.default.svc.cluster.local.",
        "_nope._tcp.nginx.default.svc.cluster.local.",
        "nginx.nope.svc.cluster.local.",
        // A headless service with no served endpoint: no records anywhere.
        "empty.default.svc.cluster.local.",
    ] {
        forward.insert(missing.into());
    }
    // The namespaces (their markers are in the zone: `quiet` has no
    // service), `svc` itself.
    forward.insert("default.svc.cluster.local.".into());
    forward.insert("quiet.svc.cluster.local.".into());
    forward.insert("svc.cluster.local.".into());
    reverse.insert("99.0.1.10.in-addr.arpa.".into());
    (forward, reverse)
}

/// Asserts that `follower` answers every name of `primary`'s zone (and its
/// reverse names, and missing names) exactly as `primary` does.
async fn assert_same_answers(primary: &TestServer, follower: &TestServer) {
    let (forward, reverse) = names_to_compare(primary).await;
    assert!(forward.len() > 20, "a real zone: {forward:?}");
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::CNAME,
    ];
    let queries = forward
        .iter()
        .flat_map(|n| types.iter().map(move |t| (n, *t)))
        .chain(reverse.iter().map(|n| (n, RecordType::PTR)));
    let mut compared = 0;
    for (name, rtype) in queries {
        let theirs = query(Proto::Udp, primary.dns, name, rtype).await;
        let ours = query(Proto::Udp, follower.dns, name, rtype).await;
        assert_eq!(
            comparable(&ours),
            comparable(&theirs),
            "{name} {rtype}: follower vs primary"
        );
        compared += 1;
    }
    assert!(compared > 100, "{compared} answers compared");
}

#[tokio::test]
async fn the_follower_answers_every_name_as_the_primary_does() {
    within(LIMIT, async {
        let primary = primary(None, |_| {}).await;
        let mut c = follower_config(primary.dns, 0, 60_000);
        c.transfer.allow = vec!["127.0.0.1/32".parse().unwrap()];
        let follower = TestServer::start(c).await;
        assert_same_answers(&primary, &follower).await;
        assert!(metric(&primary, &served("axfr")).await >= 2.0);
        // The follower is a primary in turn: its own AXFR carries the same
        // records (the serials are each server's own).
        let theirs = tcp(primary.dns, request(ZONE, RecordType::AXFR, None), None).await;
        let ours = tcp(follower.dns, request(ZONE, RecordType::AXFR, None), None).await;
        assert_eq!(ours.rcode(), ResponseCode::NoError);
        assert_eq!(ours.lines_without_soa(), theirs.lines_without_soa());
    })
    .await;
}

/// Moves web-0 (IPv4) from 10.1.0.10 to `to` on `primary`.
fn move_web_0(primary: &TestServer, to: &str) {
    let text = FIXTURES.replace("[\"10.1.0.10\"]", &format!("[\"{to}\"]"));
    rewrite(&primary.manifest_path(), &text);
}

async fn wait_for_web_0(s: &TestServer, ip: &str) {
    s.wait_for_a(WEB_0, Answer::ips(&[ip.parse().unwrap()]))
        .await;
}

#[tokio::test]
async fn a_change_reaches_the_follower_by_notify_and_ixfr() {
    within(LIMIT, async {
        let port = free_port();
        let primary = primary(Some(loopback(port)), |_| {}).await;
        // A refresh of a minute: only a NOTIFY brings the change in time.
        let follower = TestServer::start(follower_config(primary.dns, port, 60_000)).await;
        wait_for_web_0(&follower, "10.1.0.10").await;
        move_web_0(&primary, "10.1.0.77");
        wait_for_web_0(&primary, "10.1.0.77").await;
        wait_for_web_0(&follower, "10.1.0.77").await;
        assert!(metric(&primary, &served("ixfr")).await >= 1.0);
        let taken = |kind: &str| format!("headless_dns_follow_transfers_total{{kind=\"{kind}\"}}");
        assert!(metric(&follower, &taken("ixfr")).await >= 1.0);
        assert_eq!(metric(&follower, &taken("axfr")).await, 1.0);
        assert!(metric(&follower, "headless_dns_follow_notify_total").await >= 1.0);
        assert!(
            metric(
                &primary,
                "headless_dns_transfer_notify_total{result=\"acknowledged\"}"
            )
            .await
                >= 1.0
        );
        // And back, through a second IXFR from the follower's new serial.
        move_web_0(&primary, "10.1.0.10");
        wait_for_web_0(&follower, "10.1.0.10").await;
        assert!(metric(&primary, &served("ixfr")).await >= 2.0);
        assert_same_answers(&primary, &follower).await;
    })
    .await;
}

/// A node-local cache: a follower of the whole cluster zone that the
/// primary was not told of (`notify` empty), signing with a key the primary
/// requires, checking only every minute. The primary learns it from its
/// IXFR checks and NOTIFYs it there, signed; the change arrives long before
/// the refresh would bring it.
#[tokio::test]
async fn a_cluster_zone_follower_nobody_listed_is_notified_where_it_checks() {
    within(LIMIT, async {
        let primary = primary(None, |c| {
            tsig(c, SECRET);
            c.transfer.require_tsig = true;
        })
        .await;
        let mut c = follower_config(primary.dns, 0, 60_000);
        tsig(&mut c, SECRET);
        c.source.primary_key = Some("xfr-key".into());
        let follower = TestServer::start(c).await;
        wait_for_web_0(&follower, "10.1.0.10").await;
        let acknowledged = "headless_dns_transfer_notify_total{result=\"acknowledged\"}";
        let before = metric(&primary, acknowledged).await;
        let started = std::time::Instant::now();
        move_web_0(&primary, "10.1.0.71");
        wait_for_web_0(&primary, "10.1.0.71").await;
        wait_for_web_0(&follower, "10.1.0.71").await;
        // Far below the refresh: support::WAIT (20 s) bounds the waits.
        assert!(started.elapsed() < Duration::from_secs(45));
        // Brought by a NOTIFY the follower accepted and the primary saw
        // acknowledged (it lists no secondary: only a learned one can ack),
        // then an IXFR; no check failed.
        assert!(metric(&follower, "headless_dns_follow_notify_total").await >= 1.0);
        assert!(metric(&primary, acknowledged).await >= before + 1.0);
        let taken = |kind: &str| format!("headless_dns_follow_transfers_total{{kind=\"{kind}\"}}");
        assert!(metric(&follower, &taken("ixfr")).await >= 1.0);
        assert_eq!(metric(&follower, &taken("axfr")).await, 1.0);
        assert_eq!(
            metric(&follower, "headless_dns_follow_failures_total").await,
            0.0
        );
        // Its checks were IXFRs the primary answered with one SOA.
        assert!(
            metric(&primary, &served("ixfr_full")).await
                + metric(&primary, &served("ixfr_current")).await
                >= 1.0
        );
        // A second change, the same way.
        move_web_0(&primary, "10.1.0.10");
        wait_for_web_0(&follower, "10.1.0.10").await;
        assert!(metric(&primary, acknowledged).await >= before + 2.0);
    })
    .await;
}

/// How a [`Relay`] answers IXFR over UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IxfrOverUdp {
    /// Passed on to the primary like everything else.
    Pass,
    /// Answered with this rcode (NOTIMP, FORMERR: a primary that does not
    /// take IXFR over UDP).
    Refuse(ResponseCode),
    /// Dropped: no answer at all.
    Drop,
}

/// A relay on one loopback port (UDP and TCP) in front of `primary`: passes
/// everything on, but answers IXFR over UDP as `mode` says, and counts the
/// IXFR and SOA queries it got over UDP.
struct Relay {
    addr: SocketAddr,
    mode: std::sync::Arc<std::sync::Mutex<IxfrOverUdp>>,
    ixfr: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    soa: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tasks: tokio::task::JoinSet<()>,
}

impl Relay {
    async fn start(primary: SocketAddr, mode: IxfrOverUdp) -> Relay {
        use std::sync::Arc;
        use std::sync::atomic::Ordering;
        // The same port for UDP and TCP, as a DNS server has.
        let (udp, tcp) = (0..50)
            .find_map(|_| {
                let udp = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = std::net::TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("a loopback port free for UDP and TCP");
        udp.set_nonblocking(true).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let udp = Arc::new(tokio::net::UdpSocket::from_std(udp).unwrap());
        let tcp = tokio::net::TcpListener::from_std(tcp).unwrap();
        let addr = udp.local_addr().unwrap();
        let mode = Arc::new(std::sync::Mutex::new(mode));
        let ixfr: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let soa: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            while let Ok((mut client, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(primary).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        let (m, ix, so) = (Arc::clone(&mode), Arc::clone(&ixfr), Arc::clone(&soa));
        tasks.spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let packet = buf[..n].to_vec();
                let Ok(q) = Message::from_vec(&packet) else {
                    continue;
                };
                let qtype = q.queries.first().map(|q| q.query_type());
                let is_ixfr = qtype == Some(RecordType::IXFR);
                if is_ixfr {
                    ix.fetch_add(1, Ordering::Relaxed);
                } else if qtype == Some(RecordType::SOA) {
                    so.fetch_add(1, Ordering::Relaxed);
                }
                let mode = *m.lock().unwrap();
                match mode {
                    IxfrOverUdp::Refuse(rcode) if is_ixfr => {
                        let mut answer = Message::error_msg(q.id, q.op_code, rcode);
                        answer.add_queries(q.queries.clone());
                        let _ = udp.send_to(&answer.to_vec().unwrap(), from).await;
                    }
                    IxfrOverUdp::Drop if is_ixfr => {}
                    _ => {
                        let udp = Arc::clone(&udp);
                        tokio::spawn(async move {
                            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                            s.send_to(&packet, primary).await.unwrap();
                            let mut buf = vec![0u8; 65535];
                            let wait = Duration::from_secs(3);
                            if let Ok(Ok((n, _))) =
                                tokio::time::timeout(wait, s.recv_from(&mut buf)).await
                            {
                                let _ = udp.send_to(&buf[..n], from).await;
                            }
                        });
                    }
                }
            }
        });
        Relay {
            addr,
            mode,
            ixfr,
            soa,
            tasks,
        }
    }

    fn set(&self, mode: IxfrOverUdp) {
        *self.mode.lock().unwrap() = mode;
    }

    /// (IXFR, SOA) queries seen over UDP so far.
    fn seen(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        (
            self.ixfr.load(Ordering::Relaxed),
            self.soa.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Primaries that are not ours may not take IXFR over UDP: one that answers
/// such a check NOTIMP or FORMERR, or never, is checked by SOA query
/// instead (and changes still arrive, by IXFR over TCP), whether it does so
/// from the start or after a while; once an SOA query has answered, the
/// checks stay SOA queries (the IXFR is not tried at every refresh).
#[tokio::test]
async fn a_primary_that_does_not_answer_ixfr_checks_is_checked_by_soa_query() {
    within(LIMIT, async {
        let primary = primary(None, |_| {}).await;
        let cases = [
            (IxfrOverUdp::Refuse(ResponseCode::NotImp), true),
            (IxfrOverUdp::Refuse(ResponseCode::FormErr), false),
            (IxfrOverUdp::Drop, true),
            (IxfrOverUdp::Drop, false),
        ];
        for (i, (mode, from_the_start)) in cases.into_iter().enumerate() {
            let case = format!("{mode:?}, from the start: {from_the_start}");
            let relay = Relay::start(
                primary.dns,
                if from_the_start {
                    mode
                } else {
                    IxfrOverUdp::Pass
                },
            )
            .await;
            let follower = TestServer::start(follower_config(relay.addr, 0, 200)).await;
            let ip = |n: usize| format!("10.1.0.{}", 60 + 2 * i + n);
            move_web_0(&primary, &ip(0));
            wait_for_web_0(&follower, &ip(0)).await;
            if !from_the_start {
                // Checked by IXFR so far: now the primary stops taking them.
                assert!(relay.seen().0 >= 2, "{case}: {:?}", relay.seen());
                relay.set(mode);
            }
            move_web_0(&primary, &ip(1));
            wait_for_web_0(&follower, &ip(1)).await;
            // Falling back was no failed check; the change came by IXFR (TCP).
            let failures = metric(&follower, "headless_dns_follow_failures_total").await;
            assert_eq!(failures, 0.0, "{case}");
            let ixfr = "headless_dns_follow_transfers_total{kind=\"ixfr\"}";
            assert!(metric(&follower, ixfr).await >= 1.0, "{case}");
            // From now on SOA queries only: three more checks, no IXFR.
            let (ixfrs, soas) = relay.seen();
            assert!(soas >= 1, "{case}: {:?}", relay.seen());
            support::eventually("three more SOA checks", || async {
                match relay.seen() {
                    (_, s) if s >= soas + 3 => Ok(()),
                    seen => Err(format!("{case}: {seen:?}")),
                }
            })
            .await;
            assert_eq!(
                relay.seen().0,
                ixfrs,
                "{case}: the IXFR check was not tried again"
            );
            follower.stop().await;
        }
    })
    .await;
}

const QUIET: &str = "quiet.svc.cluster.local";

/// Whether `m` is NODATA: NOERROR, no answer, the zone's SOA in the
/// authority section (RFC 2308).
fn is_nodata(m: &Message) -> bool {
    m.metadata.response_code == ResponseCode::NoError
        && m.answers.is_empty()
        && m.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
}

/// Asserts what `server` answers for the namespace `quiet` (`nodata`: it
/// exists, else NXDOMAIN) and for one that never existed, over UDP and TCP.
async fn assert_namespaces(who: &str, server: SocketAddr, nodata: bool) {
    for proto in BOTH {
        for rtype in [RecordType::A, RecordType::AAAA, RecordType::SRV] {
            let m = query(proto, server, QUIET, rtype).await;
            if nodata {
                assert!(
                    is_nodata(&m),
                    "{who}: {QUIET} {rtype} over {proto:?}: {m:?}"
                );
            } else {
                assert_eq!(
                    m.metadata.response_code,
                    ResponseCode::NXDomain,
                    "{who}: {m:?}"
                );
            }
        }
        let m = query(proto, server, "nope.svc.cluster.local", RecordType::A).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "{who}: {m:?}"
        );
    }
}

/// Waits until `server` answers NODATA (`nodata`) or NXDOMAIN for `quiet`.
async fn wait_for_quiet(who: &str, server: SocketAddr, nodata: bool) {
    eventually(
        &format!("{who} to answer {QUIET} nodata: {nodata}"),
        || async {
            let m = query(Proto::Udp, server, QUIET, RecordType::A).await;
            let nx = m.metadata.response_code == ResponseCode::NXDomain;
            match (nodata, is_nodata(&m), nx) {
                (true, true, _) | (false, _, true) => Ok(()),
                _ => Err(format!("{m:?}")),
            }
        },
    )
    .await;
}

/// A namespace without services (`quiet`) is NODATA on the primary (it
/// exists); the cluster zone carries its marker, so our follower and a real
/// Knot secondary say NODATA too (not NXDOMAIN), and NXDOMAIN for a
/// namespace that does not exist. Deleting the namespace deletes the marker
/// by IXFR: NXDOMAIN everywhere; creating it again, NODATA again.
#[tokio::test]
async fn a_namespace_without_services_is_nodata_on_followers_until_deleted() {
    within(LIMIT, async {
        let knot_port = free_port();
        let primary = primary(Some(loopback(knot_port)), |_| {}).await;
        let follower = TestServer::start(follower_config(primary.dns, 0, 60_000)).await;
        let mut knot = Secondary::start(Kind::Knot, knot_port, primary.dns, ZONE, None);
        wait_for_web_0(&follower, "10.1.0.10").await;
        eventually("Knot to load the zone", || async {
            let m = try_query(Proto::Udp, knot.addr, WEB_0, RecordType::A).await;
            match Answer::of_result(&m) {
                Answer::Addrs(_) => Ok(()),
                other => Err(format!("{other:?}; log:\n{}", knot.log())),
            }
        })
        .await;
        let servers = [
            ("primary", primary.dns),
            ("follower", follower.dns),
            ("knot", knot.addr),
        ];
        for (who, server) in servers {
            assert_namespaces(who, server, true).await;
        }

        // quiet is deleted on the primary.
        let quiet = "apiVersion: v1\nkind: Namespace\nmetadata: {name: quiet}\n---\n";
        let without = FIXTURES.replace(quiet, "");
        assert_ne!(without, FIXTURES);
        rewrite(&primary.manifest_path(), &without);
        for (who, server) in servers {
            wait_for_quiet(who, server, false).await;
            assert_namespaces(who, server, false).await;
        }
        // By differences (the marker's deletion), not a whole zone.
        let taken = |kind: &str| format!("headless_dns_follow_transfers_total{{kind=\"{kind}\"}}");
        assert!(metric(&follower, &taken("ixfr")).await >= 1.0);
        assert_eq!(metric(&follower, &taken("axfr")).await, 1.0);
        knot.assert_running();
        assert!(knot.transfers().incremental >= 1, "{}", knot.log());

        // And back.
        rewrite(&primary.manifest_path(), FIXTURES);
        for (who, server) in servers {
            wait_for_quiet(who, server, true).await;
        }
        assert!(metric(&follower, &taken("ixfr")).await >= 2.0);
        assert_eq!(metric(&follower, &taken("axfr")).await, 1.0);
        assert_same_answers(&primary, &follower).await;
    })
    .await;
}

#[tokio::test]
async fn changes_in_quick_succession_all_reach_the_follower() {
    within(LIMIT, async {
        let port = free_port();
        let primary = primary(Some(loopback(port)), |_| {}).await;
        let follower = TestServer::start(follower_config(primary.dns, port, 60_000)).await;
        wait_for_web_0(&follower, "10.1.0.10").await;
        // Each change published on its own, the next at once: later ones
        // land while a NOTIFY (or the follower's transfer) is outstanding.
        for last in 81..=88 {
            let ip = format!("10.1.0.{last}");
            move_web_0(&primary, &ip);
            wait_for_web_0(&primary, &ip).await;
        }
        wait_for_web_0(&follower, "10.1.0.88").await;
        assert_same_answers(&primary, &follower).await;
    })
    .await;
}

#[tokio::test]
async fn a_lost_notify_is_caught_up_by_the_refresh() {
    within(LIMIT, async {
        // The primary tells nobody.
        let primary = primary(None, |_| {}).await;
        let follower = TestServer::start(follower_config(primary.dns, 0, 200)).await;
        wait_for_web_0(&follower, "10.1.0.10").await;
        move_web_0(&primary, "10.1.0.78");
        wait_for_web_0(&follower, "10.1.0.78").await;
        assert!(metric(&primary, &served("ixfr")).await >= 1.0);
    })
    .await;
}

#[tokio::test]
async fn notifies_from_elsewhere_are_refused() {
    within(LIMIT, async {
        let primary = primary(None, |_| {}).await;
        // The primary is on 127.0.0.1; a NOTIFY from 127.0.0.2 is not its.
        let follower = TestServer::start(follower_config(primary.dns, 0, 60_000)).await;
        let notify = notify_message();
        let from_elsewhere = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let answer = exchange_from(&from_elsewhere, follower.dns, &notify).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
        let from_primary = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let answer = exchange_from(&from_primary, follower.dns, &notify).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.metadata.op_code, hickory_proto::op::OpCode::Notify);
    })
    .await;
}

fn notify_message() -> Message {
    use hickory_proto::op::{MessageType, OpCode, Query};
    let mut m = Message::new(77, MessageType::Query, OpCode::Notify);
    m.add_query(Query::query(
        hickory_proto::rr::Name::from_ascii("cluster.local.").unwrap(),
        RecordType::SOA,
    ));
    m
}

async fn exchange_from(s: &tokio::net::UdpSocket, to: SocketAddr, m: &Message) -> Message {
    s.send_to(&m.to_vec().unwrap(), to).await.unwrap();
    let mut buf = vec![0; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), s.recv_from(&mut buf))
        .await
        .expect("an answer to the NOTIFY")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[tokio::test]
async fn tsig_right_key_follows_and_wrong_key_is_refused() {
    within(LIMIT, async {
        let port = free_port();
        let primary = primary(Some(loopback(port)), |c| {
            tsig(c, SECRET);
            c.transfer.require_tsig = true;
            c.transfer.notify_key = Some("xfr-key".into());
        })
        .await;
        let mut good = follower_config(primary.dns, port, 60_000);
        tsig(&mut good, SECRET);
        good.source.primary_key = Some("xfr-key".into());
        let good = TestServer::start(good).await;
        wait_for_web_0(&good, "10.1.0.10").await;
        // Signed NOTIFY → signed IXFR.
        move_web_0(&primary, "10.1.0.79");
        wait_for_web_0(&good, "10.1.0.79").await;
        assert!(metric(&primary, &served("ixfr")).await >= 1.0);

        // Same key name, another secret: every transfer is refused
        // (NOTAUTH), and the follower never serves a zone.
        let mut bad = follower_config(primary.dns, 0, 100);
        tsig(&mut bad, WRONG_SECRET);
        bad.source.primary_key = Some("xfr-key".into());
        let bad = TestServer::spawn(bad);
        let refused = "headless_dns_transfer_refused_total{reason=\"tsig\"}";
        let before = metric(&primary, refused).await;
        eventually("the primary to refuse the wrong key twice", || async {
            let now = metric(&primary, refused).await;
            if now >= before + 2.0 {
                Ok(())
            } else {
                Err(format!("{now}"))
            }
        })
        .await;
        assert_eq!(bad.a(WEB_0).await, Answer::ServFail);
        assert_ne!(bad.ready_status().await, 200);
        // Unsigned: refused too (require_tsig).
        let unsigned = TestServer::spawn(follower_config(primary.dns, 0, 100));
        let refused = "headless_dns_transfer_refused_total{reason=\"unsigned\"}";
        eventually("the primary to refuse an unsigned follower", || async {
            let now = metric(&primary, refused).await;
            if now >= 1.0 {
                Ok(())
            } else {
                Err(format!("{now}"))
            }
        })
        .await;
        assert_eq!(unsigned.a(WEB_0).await, Answer::ServFail);
    })
    .await;
}

#[tokio::test]
async fn with_the_primary_gone_the_last_good_zone_keeps_serving() {
    within(LIMIT, async {
        let primary = primary(None, |_| {}).await;
        let follower = TestServer::start(follower_config(primary.dns, 0, 50)).await;
        wait_for_web_0(&follower, "10.1.0.10").await;
        primary.stop().await;
        let serial = metric(&follower, "headless_dns_follow_serial").await;
        assert!(serial > 0.0);
        // Over 40 refreshes that all fail, every answer is the last good one.
        for _ in 0..40 {
            follower
                .assert_a(WEB_0, &Answer::ips(&["10.1.0.10".parse().unwrap()]))
                .await;
            assert_eq!(follower.ready_status().await, 200);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The lag shows it: the zone was last confirmed over 2 s ago (40
        // rounds of at least 50 ms), at the serial it still serves.
        assert!(metric(&follower, "headless_dns_follow_lag_seconds").await >= 2.0);
        // Checks leave from one unconnected UDP socket (where NOTIFYs also
        // arrive), so a closed port is no error: each check fails at its
        // time-outs (2 s for the IXFR check, 5 s for the SOA query after it).
        support::eventually("a failed check counted", || async {
            match metric(&follower, "headless_dns_follow_failures_total").await {
                n if n >= 1.0 => Ok(()),
                n => Err(format!("{n} failures")),
            }
        })
        .await;
        assert_eq!(
            metric(&follower, "headless_dns_follow_serial").await,
            serial
        );
        assert_eq!(
            metric(&follower, "headless_dns_follow_primary_serial").await,
            serial
        );
        assert_eq!(metric(&follower, "headless_dns_follow_expired").await, 0.0);
        let axfr = "headless_dns_follow_transfers_total{kind=\"axfr\"}";
        assert_eq!(metric(&follower, axfr).await, 1.0);
        let (_, body) = http::get(follower.admin, "/records").await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["follow"]["lag_ms"].as_u64().unwrap() >= 2000,
            "{}",
            v["follow"]
        );
    })
    .await;
}

#[tokio::test]
async fn past_the_expire_an_unreachable_primary_means_servfail() {
    within(LIMIT, async {
        let primary = primary(None, |_| {}).await;
        let mut c = follower_config(primary.dns, 0, 50);
        c.source.expire_ms = Some(400);
        let follower = TestServer::start(c).await;
        wait_for_web_0(&follower, "10.1.0.10").await;
        assert!(metric(&follower, "headless_dns_follow_serial").await > 0.0);
        primary.stop().await;
        follower.wait_for_a(WEB_0, Answer::ServFail).await;
        assert_eq!(metric(&follower, "headless_dns_follow_expired").await, 1.0);
        assert!(metric(&follower, "headless_dns_follow_failures_total").await >= 1.0);
        assert!(metric(&follower, "headless_dns_follow_lag_seconds").await >= 0.4);
        // Still ready: the process is fine, its zone is stale.
        assert_eq!(follower.ready_status().await, 200);
    })
    .await;
}

/// Polls `name A` on `server` (every 1 ms, up to 10 s) until it is `ip`;
/// returns when it first was.
async fn first_served(server: SocketAddr, name: &str, ip: IpAddr) -> std::time::Instant {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = query(Proto::Udp, server, name, RecordType::A).await;
        if Answer::of(&m) == Answer::ips(&[ip]) {
            return std::time::Instant::now();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never became {ip}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A measurement, not a check: how long after the primary serves a change
/// one follower serves it (NOTIFY → SOA → IXFR → index), over 100 changes.
#[tokio::test]
#[ignore = "a measurement: cargo test --test follow follower_lag -- --ignored --nocapture"]
async fn follower_lag() {
    let port = free_port();
    let primary = primary(Some(loopback(port)), |c| c.source.poll_interval_ms = 5).await;
    let follower = TestServer::start(follower_config(primary.dns, port, 60_000)).await;
    wait_for_web_0(&follower, "10.1.0.10").await;
    let mut lags = Vec::new();
    for i in 0..100u8 {
        let ip: IpAddr = format!("10.1.3.{}", i + 1).parse().unwrap();
        move_web_0(&primary, &ip.to_string());
        let served = first_served(primary.dns, WEB_0, ip).await;
        let followed = first_served(follower.dns, WEB_0, ip).await;
        lags.push(followed.saturating_duration_since(served));
    }
    lags.sort();
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    let out = format!(
        "follower lag over {} changes: p50 {:?} p90 {:?} p99 {:?} max {:?}\n",
        lags.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        lags[lags.len() - 1]
    );
    std::io::Write::write_all(&mut std::io::stderr(), out.as_bytes()).unwrap();
}
