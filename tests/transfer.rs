//! Zone transfers against the real server on loopback: AXFR of every zone
//! (the records of a record list written by hand from the DNS spec, which
//! `export-zone` prints too, SOA first and last, many messages for a big
//! zone), IXFR from the journal (differences, one SOA, the whole zone
//! for an unknown serial; over TCP and UDP), the access list, TSIG (bad
//! keys get NOTAUTH and no records, good ones get every message signed),
//! the bound on concurrent transfers (IXFR differences included), the
//! cut-off of a stalled reader, a long transfer at the connection bound
//! (active while it progresses), and NOTIFY given up after five tries.
//! Real secondaries (Knot, BIND) are in `transfer_secondaries.rs`.

mod support;
mod transfer_support;

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::txt::Parser;
use support::dns::{Proto, exchange, message};
use support::http;
use support::server::{TestServer, metric, rewrite};
use transfer_support::{SECRET, WRONG_SECRET, request, signer, soa_serial, tcp, udp};

const FIXTURES: &str = include_str!("fixtures.yaml");
const ZONE: &str = "cluster.local";

/// Transfers allowed from 127.0.0.1 only.
fn allow_loopback(c: &mut headless_dns::Config) {
    c.transfer.allow = vec!["127.0.0.1/32".parse().unwrap()];
}

fn key(c: &mut headless_dns::Config, require: bool) {
    c.transfer.tsig = vec![headless_dns::config::TsigKeyConfig {
        name: "xfr-key".into(),
        algorithm: "hmac-sha256".into(),
        secret: SECRET.into(),
        namespaces: Vec::new(),
        key_file: None,
    }];
    c.transfer.require_tsig = require;
}

/// A headless service `big` with `pods` ready endpoints.
fn big_service(pods: usize) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: None, ports: [{name: web, port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big-1, namespace: default, labels: {kubernetes.io/service-name: big}}\naddressType: IPv4\nports: [{name: web, protocol: TCP, port: 80}]\nendpoints:\n",
    );
    for i in 0..pods {
        y.push_str(&format!(
            "  - {{addresses: [\"10.{}.{}.{}\"], hostname: big-{i}}}\n",
            2 + i / 62500,
            i / 250 % 250,
            i % 250 + 1
        ));
    }
    y
}

async fn serial(s: &TestServer) -> u32 {
    let m = s.query(Proto::Udp, ZONE, RecordType::SOA).await;
    soa_serial(&m.answers[0]).expect("SOA answer")
}

/// The records of `export-zone` for the same configuration, as hickory prints them.
/// hickory's zone parser does not read RFC 3597's generic form (`TYPE65280 \# 1
/// 00`, the namespaces' markers): those lines are taken apart here.
fn exported_lines(config: &headless_dns::Config) -> Vec<String> {
    let text = headless_dns::export_manifests(config).unwrap();
    let (generic, text): (Vec<&str>, Vec<&str>) =
        text.lines().partition(|l| l.contains(" TYPE65280 "));
    let markers: Vec<String> = generic
        .iter()
        .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [owner, ttl, "IN", "TYPE65280", "\\#", "1", "00"] => {
                format!("{owner} {ttl} in unknown aa==")
            }
            _ => panic!("not a namespace marker: {l}"),
        })
        .collect();
    let (_, sets) = Parser::new(
        text.join("\n"),
        None,
        Some(Name::from_ascii("cluster.local.").unwrap()),
    )
    .parse()
    .unwrap();
    let mut v: Vec<String> = sets
        .values()
        .flat_map(|s| s.records_without_rrsigs().cloned().collect::<Vec<_>>())
        .filter(|r| r.record_type() != RecordType::SOA)
        .map(|r| r.to_string().to_ascii_lowercase())
        .chain(markers)
        .collect();
    v.sort();
    v
}

/// The cluster zone of `fixtures.yaml` without its SOA, written by hand
/// from the Kubernetes DNS specification (schema 1.1.0), not by the code
/// under test: what AXFR and `export-zone` must both give.
const FIXTURES_ZONE: &[&str] = &[
    // The zone's own records; the nameserver is the listen address.
    "cluster.local. 5 IN NS ns.dns.cluster.local.",
    "ns.dns.cluster.local. 5 IN A 127.0.0.1",
    "dns-version.cluster.local. 28800 IN TXT 1.1.0",
    // Each namespace, services or none (quiet has none): a marker of the
    // private type 65280 with one zero octet (hickory prints "Unknown" and
    // the data in base64), so that secondaries answer NODATA there as the
    // primary does.
    "default.svc.cluster.local. 5 IN Unknown AA==",
    "quiet.svc.cluster.local. 5 IN Unknown AA==",
    // ClusterIP services: their addresses, an SRV per named port; and at
    // the service name itself an SRV per port, named or not (what an SRV
    // query for the name answers), weights 100 / ports.
    "api.default.svc.cluster.local. 5 IN A 10.96.0.10",
    "api.default.svc.cluster.local. 5 IN SRV 0 50 53 api.default.svc.cluster.local.",
    "api.default.svc.cluster.local. 5 IN SRV 0 50 80 api.default.svc.cluster.local.",
    "api.default.svc.cluster.local. 5 IN AAAA fd00:96::10",
    "_http._tcp.api.default.svc.cluster.local. 5 IN SRV 0 100 80 api.default.svc.cluster.local.",
    "_dns._udp.api.default.svc.cluster.local. 5 IN SRV 0 100 53 api.default.svc.cluster.local.",
    "multi.default.svc.cluster.local. 5 IN A 10.96.0.20",
    "multi.default.svc.cluster.local. 5 IN SRV 0 33 5432 multi.default.svc.cluster.local.",
    "multi.default.svc.cluster.local. 5 IN SRV 0 33 9000 multi.default.svc.cluster.local.",
    "multi.default.svc.cluster.local. 5 IN SRV 0 33 9187 multi.default.svc.cluster.local.",
    "_pg._tcp.multi.default.svc.cluster.local. 5 IN SRV 0 100 5432 multi.default.svc.cluster.local.",
    "_metrics._tcp.multi.default.svc.cluster.local. 5 IN SRV 0 100 9187 multi.default.svc.cluster.local.",
    // Headless nginx: ready endpoints only (web-2 is not ready, web-3 is
    // terminating), each by hostname, or by dashed address without one;
    // an SRV per endpoint for the named port, none for the unnamed 8080;
    // at the service name an SRV per endpoint and port, 8080 included.
    "nginx.default.svc.cluster.local. 5 IN A 10.1.0.10",
    "nginx.default.svc.cluster.local. 5 IN A 10.1.0.11",
    "nginx.default.svc.cluster.local. 5 IN A 10.1.0.50",
    "nginx.default.svc.cluster.local. 5 IN AAAA fd00::10",
    "web-0.nginx.default.svc.cluster.local. 5 IN A 10.1.0.10",
    "web-0.nginx.default.svc.cluster.local. 5 IN AAAA fd00::10",
    "web-1.nginx.default.svc.cluster.local. 5 IN A 10.1.0.11",
    "10-1-0-50.nginx.default.svc.cluster.local. 5 IN A 10.1.0.50",
    "_web._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 33 80 web-0.nginx.default.svc.cluster.local.",
    "_web._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 33 80 web-1.nginx.default.svc.cluster.local.",
    "_web._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 33 80 10-1-0-50.nginx.default.svc.cluster.local.",
    "nginx.default.svc.cluster.local. 5 IN SRV 0 16 80 web-0.nginx.default.svc.cluster.local.",
    "nginx.default.svc.cluster.local. 5 IN SRV 0 16 80 web-1.nginx.default.svc.cluster.local.",
    "nginx.default.svc.cluster.local. 5 IN SRV 0 16 80 10-1-0-50.nginx.default.svc.cluster.local.",
    "nginx.default.svc.cluster.local. 5 IN SRV 0 16 8080 web-0.nginx.default.svc.cluster.local.",
    "nginx.default.svc.cluster.local. 5 IN SRV 0 16 8080 web-1.nginx.default.svc.cluster.local.",
    "nginx.default.svc.cluster.local. 5 IN SRV 0 16 8080 10-1-0-50.nginx.default.svc.cluster.local.",
    // publishNotReadyAddresses: the not-ready p-0 too, never the
    // terminating p-1; no ports, no SRV. `empty` (no ready endpoint) has none.
    "peers.default.svc.cluster.local. 5 IN A 10.1.2.1",
    "p-0.peers.default.svc.cluster.local. 5 IN A 10.1.2.1",
    // ExternalName services: a CNAME each, in-zone targets, dangling
    // and looping ones included.
    "ext.default.svc.cluster.local. 5 IN CNAME example.com.",
    "alias.default.svc.cluster.local. 5 IN CNAME web-0.nginx.default.svc.cluster.local.",
    "alias2.default.svc.cluster.local. 5 IN CNAME alias.default.svc.cluster.local.",
    "toapi.default.svc.cluster.local. 5 IN CNAME api.default.svc.cluster.local.",
    "dangling.default.svc.cluster.local. 5 IN CNAME gone.default.svc.cluster.local.",
    "loop-a.default.svc.cluster.local. 5 IN CNAME loop-b.default.svc.cluster.local.",
    "loop-b.default.svc.cluster.local. 5 IN CNAME loop-a.default.svc.cluster.local.",
];

/// The IPv4 reverse zone of `fixtures.yaml` without its SOA and NS: a PTR
/// for each address a name above has, to that name (by hand too).
const FIXTURES_IN_ADDR: &[&str] = &[
    "10.0.1.10.in-addr.arpa. 5 IN PTR web-0.nginx.default.svc.cluster.local.",
    "11.0.1.10.in-addr.arpa. 5 IN PTR web-1.nginx.default.svc.cluster.local.",
    "50.0.1.10.in-addr.arpa. 5 IN PTR 10-1-0-50.nginx.default.svc.cluster.local.",
    "1.2.1.10.in-addr.arpa. 5 IN PTR p-0.peers.default.svc.cluster.local.",
    "10.0.96.10.in-addr.arpa. 5 IN PTR api.default.svc.cluster.local.",
    "20.0.96.10.in-addr.arpa. 5 IN PTR multi.default.svc.cluster.local.",
];

/// `lines`, sorted, as `lines_without_soa` gives records.
fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|l| l.to_ascii_lowercase()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn axfr_of_every_zone_is_the_zone_written_by_hand() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(FIXTURES, allow_loopback).await;
        let t = tcp(s.dns, request(ZONE, RecordType::AXFR, None), None).await;
        assert_eq!(t.rcode(), ResponseCode::NoError);
        let records = t.records();
        let (first, last) = (&records[0], records.last().unwrap());
        assert_eq!(first.record_type(), RecordType::SOA);
        assert_eq!(last.record_type(), RecordType::SOA);
        assert_eq!(soa_serial(first), Some(serial(&s).await));
        assert_eq!(soa_serial(first), soa_serial(last));
        assert!(t.messages.iter().all(|m| m.metadata.authoritative));
        // The records, against a list written by hand; `export-zone`
        // prints the same.
        assert_eq!(t.lines_without_soa(), sorted(FIXTURES_ZONE));
        let mut config = support::server::test_config(vec![s.manifest_path()]);
        allow_loopback(&mut config);
        assert_eq!(exported_lines(&config), sorted(FIXTURES_ZONE));

        // The reverse zones: every address the query path answers a PTR for.
        let v4 = tcp(s.dns, request("in-addr.arpa", RecordType::AXFR, None), None).await;
        let v4_ptrs: Vec<String> = v4
            .lines_without_soa()
            .into_iter()
            .filter(|l| l.contains(" ptr "))
            .collect();
        assert_eq!(v4_ptrs, sorted(FIXTURES_IN_ADDR));
        let v6 = tcp(s.dns, request("ip6.arpa", RecordType::AXFR, None), None).await;
        let ptrs: Vec<_> = v4
            .records()
            .into_iter()
            .chain(v6.records())
            .filter(|r| r.record_type() == RecordType::PTR)
            .collect();
        let has = |owner: &str, target: &str| {
            ptrs.iter().any(|r| {
                r.name.to_ascii() == owner
                    && matches!(&r.data, RData::PTR(p) if p.0.to_ascii() == target)
            })
        };
        assert!(has(
            "11.0.1.10.in-addr.arpa.",
            "web-1.nginx.default.svc.cluster.local."
        ));
        assert!(has(
            "10.0.96.10.in-addr.arpa.",
            "api.default.svc.cluster.local."
        ));
        assert!(
            v6.records()
                .iter()
                .any(|r| r.record_type() == RecordType::PTR)
        );
        for r in &ptrs {
            let m = s
                .query(Proto::Udp, &r.name.to_ascii(), RecordType::PTR)
                .await;
            assert!(
                m.answers.iter().any(|a| a.data == r.data),
                "{r} is not served: {m:?}"
            );
        }

        // AXFR over UDP, and of a zone that is not ours, get no records.
        let u = udp(s.dns, request(ZONE, RecordType::AXFR, None), None).await;
        assert_eq!(u.rcode(), ResponseCode::Refused);
        assert!(u.records().is_empty());
        let n = tcp(s.dns, request("example.com", RecordType::AXFR, None), None).await;
        assert_eq!(n.rcode(), ResponseCode::NotAuth);
        assert!(n.records().is_empty());
        s.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_big_zone_comes_in_many_messages() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(&big_service(3000), allow_loopback).await;
        let t = tcp(s.dns, request(ZONE, RecordType::AXFR, None), None).await;
        assert_eq!(t.rcode(), ResponseCode::NoError);
        assert!(t.messages.len() > 5, "{} messages", t.messages.len());
        let records = t.records();
        let count = |rt| records.iter().filter(|r| r.record_type() == rt).count();
        assert_eq!(count(RecordType::SOA), 2);
        // The service's 3000 addresses, each endpoint's, ns.dns's, and 3000
        // SRV at `_web._tcp`, 3000 more at the service name (every port).
        assert_eq!(count(RecordType::A), 6001);
        assert_eq!(count(RecordType::SRV), 6000);
        assert_eq!(records.last().unwrap().record_type(), RecordType::SOA);
        s.stop().await;
    })
    .await
    .unwrap();
}

/// Moves web-1 of the fixtures from 10.1.0.11 to 10.1.0.99 and waits until served.
async fn move_web_1(s: &TestServer) {
    rewrite(
        &s.manifest_path(),
        &FIXTURES.replace("10.1.0.11", "10.1.0.99"),
    );
    s.wait_for(
        "web-1.nginx.default.svc.cluster.local",
        RecordType::A,
        "web-1 at its new address",
        |m| support::dns::ip_strings(m) == ["10.1.0.99"],
    )
    .await;
}

#[tokio::test]
async fn ixfr_sends_differences_or_the_whole_zone() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(FIXTURES, allow_loopback).await;
        let before = serial(&s).await;
        let full_before = tcp(s.dns, request(ZONE, RecordType::AXFR, None), None).await;
        move_web_1(&s).await;
        let now = serial(&s).await;
        assert!(now > before, "serial {before} -> {now}");
        let full_now = tcp(s.dns, request(ZONE, RecordType::AXFR, None), None).await;
        let lines =
            |v: Vec<String>| -> std::collections::BTreeSet<String> { v.into_iter().collect() };
        let (old, new) = (
            lines(full_before.lines_without_soa()),
            lines(full_now.lines_without_soa()),
        );
        let gone: Vec<_> = old.difference(&new).cloned().collect();
        let came: Vec<_> = new.difference(&old).cloned().collect();
        assert_eq!(gone.len(), 2, "{gone:?}"); // web-1 and nginx's A 10.1.0.11
        for t in [
            tcp(s.dns, request(ZONE, RecordType::IXFR, Some(before)), None).await,
            udp(s.dns, request(ZONE, RecordType::IXFR, Some(before)), None).await,
        ] {
            assert_differences(&t, (before, now), &gone, &came);
        }
        // The reverse zone changed too: one PTR out, one in.
        let t = tcp(
            s.dns,
            request("in-addr.arpa", RecordType::IXFR, Some(before)),
            None,
        )
        .await;
        let ptr_owners: Vec<String> = t
            .records()
            .iter()
            .filter(|r| r.record_type() == RecordType::PTR)
            .map(|r| r.name.to_ascii())
            .collect();
        assert_eq!(
            ptr_owners,
            ["11.0.1.10.in-addr.arpa.", "99.0.1.10.in-addr.arpa."]
        );
        // Already current: one SOA.
        for t in [
            tcp(s.dns, request(ZONE, RecordType::IXFR, Some(now)), None).await,
            udp(s.dns, request(ZONE, RecordType::IXFR, Some(now)), None).await,
        ] {
            let r = t.records();
            assert_eq!(r.len(), 1);
            assert_eq!(soa_serial(&r[0]), Some(now));
        }
        // A serial the journal never had: the whole zone over TCP, the
        // current SOA alone over UDP (the client then asks over TCP).
        let unknown = before.wrapping_sub(100_000);
        let t = tcp(s.dns, request(ZONE, RecordType::IXFR, Some(unknown)), None).await;
        assert_eq!(t.lines_without_soa(), full_now.lines_without_soa());
        assert_ne!(t.records()[1].record_type(), RecordType::SOA);
        let u = udp(s.dns, request(ZONE, RecordType::IXFR, Some(unknown)), None).await;
        assert_eq!(u.records().len(), 1);
        assert_eq!(soa_serial(&u.records()[0]), Some(now));

        assert_transfer_metrics(&s).await;
        s.stop().await;
    })
    .await
    .unwrap();
}

/// An IXFR reply from `from` to `to`: SOA(to), SOA(from), the removed
/// records, SOA(to), the added ones, SOA(to); removed and added as `gone`
/// and `came` (sorted presentation lines).
fn assert_differences(
    t: &transfer_support::Transfer,
    (before, now): (u32, u32),
    gone: &[String],
    came: &[String],
) {
    // SOA(now) SOA(before) removed... SOA(now) added... SOA(now)
    let r = t.records();
    assert_eq!(t.rcode(), ResponseCode::NoError);
    let serials: Vec<_> = r.iter().map(soa_serial).collect();
    assert_eq!(serials[0], Some(now));
    assert_eq!(serials[1], Some(before));
    let second = serials
        .iter()
        .skip(2)
        .position(|s| *s == Some(now))
        .unwrap()
        + 2;
    assert_eq!(*serials.last().unwrap(), Some(now));
    let text = |rs: &[hickory_proto::rr::Record]| -> Vec<String> {
        let mut v: Vec<_> = rs
            .iter()
            .map(|r| r.to_string().to_ascii_lowercase())
            .collect();
        v.sort();
        v
    };
    assert_eq!(text(&r[2..second]), gone);
    assert_eq!(text(&r[second + 1..r.len() - 1]), came);
}

/// Every metric is exported (forwarding's and the follower's are off here) and the transfer
/// counters moved as the IXFR test's requests should have moved them.
async fn assert_transfer_metrics(s: &TestServer) {
    let (_, page) = http::request(s.admin, "GET", "/metrics").await.unwrap();
    for (name, _, _) in headless_dns::telemetry::METRICS {
        let forwarding = name.starts_with("headless_dns_forward_"); // off here
        let following = name.starts_with("headless_dns_follow_"); // a primary here
        assert!(
            forwarding || following || page.contains(name),
            "metric {name} missing from /metrics"
        );
    }
    let m = |k: &str| format!("headless_dns_transfer_requests_total{{kind=\"{k}\"}}");
    assert!(metric(s, &m("ixfr")).await >= 3.0);
    assert!(metric(s, &m("ixfr_current")).await >= 2.0);
    assert!(metric(s, &m("ixfr_full")).await >= 2.0);
    assert!(metric(s, "headless_dns_transfer_journal_changes").await >= 1.0);
    assert!(metric(s, "headless_dns_transfer_journal_bytes").await > 100.0);
}

/// AXFR from 127.0.0.2 (the whole 127/8 is loopback).
async fn axfr_from_127_0_0_2(server: SocketAddr) -> transfer_support::Transfer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = sock.connect(server).await.unwrap();
    let bytes = request(ZONE, RecordType::AXFR, None).to_vec().unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&bytes).await.unwrap();
    let len = s.read_u16().await.unwrap();
    let mut buf = vec![0; len as usize];
    s.read_exact(&mut buf).await.unwrap();
    transfer_support::Transfer {
        messages: vec![hickory_proto::op::Message::from_vec(&buf).unwrap()],
        verified: false,
    }
}

#[tokio::test]
async fn outsiders_and_bad_keys_get_no_records() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let manifests = format!("{FIXTURES}\n---\n{}", big_service(1500));
        let s = TestServer::with_manifests(&manifests, |c| {
            allow_loopback(c);
            key(c, true);
        })
        .await;
        let good = signer("xfr-key", SECRET);
        let axfr = || request(ZONE, RecordType::AXFR, None);
        // Outside `allow`: REFUSED.
        let t = axfr_from_127_0_0_2(s.dns).await;
        assert_eq!(t.rcode(), ResponseCode::Refused);
        assert!(t.records().is_empty());
        // Unsigned, with require_tsig: REFUSED.
        let t = tcp(s.dns, axfr(), None).await;
        assert_eq!(t.rcode(), ResponseCode::Refused);
        assert!(t.records().is_empty());
        // The right name with the wrong secret, or a key we do not know: NOTAUTH.
        for bad in [signer("xfr-key", WRONG_SECRET), signer("other-key", SECRET)] {
            let t = tcp(s.dns, axfr(), Some(&bad)).await;
            assert_eq!(t.rcode(), ResponseCode::NotAuth);
            assert!(t.records().is_empty());
        }
        // The right key: the zone, every message signed in a valid chain.
        let t = tcp(s.dns, axfr(), Some(&good)).await;
        assert_eq!(t.rcode(), ResponseCode::NoError);
        assert!(t.messages.len() > 2);
        assert!(t.verified, "a message's TSIG did not verify");
        assert!(t.records().len() > 4500);
        // Signed IXFR over UDP, and a signed SOA query: answered and signed.
        let now = serial(&s).await;
        let u = udp(
            s.dns,
            request(ZONE, RecordType::IXFR, Some(now)),
            Some(&good),
        )
        .await;
        assert!(u.verified);
        assert_eq!(u.records().len(), 1);
        for proto in [Proto::Udp, Proto::Tcp] {
            let mut q = message(ZONE, RecordType::SOA, Some(1232));
            let mut v = q.finalize(&good, transfer_support::now()).unwrap().unwrap();
            let bytes = support::dns::exchange_raw(proto, s.dns, &q.to_vec().unwrap())
                .await
                .unwrap();
            let m = v.verify(&bytes).unwrap_or_else(|e| {
                panic!("{e}: {:?}", hickory_proto::op::Message::from_vec(&bytes))
            });
            assert_eq!(m.answers.len(), 1);
        }
        // Unsigned ordinary queries are untouched.
        let m = exchange(Proto::Udp, s.dns, &message(ZONE, RecordType::SOA, None)).await;
        assert!(m.signature().is_none());
        let r = |why: &str| format!("headless_dns_transfer_refused_total{{reason=\"{why}\"}}");
        assert_eq!(metric(&s, &r("acl")).await, 1.0);
        assert_eq!(metric(&s, &r("unsigned")).await, 1.0);
        assert_eq!(metric(&s, &r("tsig")).await, 2.0);
        s.stop().await;
    })
    .await
    .unwrap();
}

/// Found by the `transfer` fuzz target's UDP size check: a signed answer
/// that fits the client's payload only without its TSIG record went out
/// whole, past the payload (seed `query_a_big_signed_edns_880`); RFC 8945
/// §5.3 has the question alone, TC, signed. And a BADKEY answer repeats the
/// unknown key's name: with a long question too it went past 512 bytes
/// (seed `raw_tsig_badkey_longest_names`); the question goes.
#[tokio::test]
async fn signed_answers_and_tsig_errors_fit_a_udp_client() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let manifests = format!("{FIXTURES}\n---\n{}", big_service(50));
        let s = TestServer::with_manifests(&manifests, |c| {
            allow_loopback(c);
            key(c, false);
        })
        .await;
        let name = "big.default.svc.cluster.local";
        let unsigned = message(name, RecordType::A, Some(1232)).to_vec().unwrap();
        let whole = support::dns::exchange_raw(Proto::Udp, s.dns, &unsigned)
            .await
            .unwrap();
        // A payload the answer fits exactly, without a TSIG record.
        let payload = whole.len() as u16;
        for proto in [Proto::Udp, Proto::Tcp] {
            let mut q = message(name, RecordType::A, Some(payload));
            let good = signer("xfr-key", SECRET);
            let mut v = q.finalize(&good, transfer_support::now()).unwrap().unwrap();
            let bytes = support::dns::exchange_raw(proto, s.dns, &q.to_vec().unwrap())
                .await
                .unwrap();
            let m = v.verify(&bytes).expect("signed");
            if proto == Proto::Udp {
                assert!(bytes.len() <= usize::from(payload), "{} bytes", bytes.len());
                assert!(m.metadata.truncation);
                assert!(m.answers.is_empty());
                assert_eq!(m.queries.len(), 1, "the question");
                assert_eq!(m.queries[0].name().to_ascii(), format!("{name}."));
            } else {
                assert!(!m.metadata.truncation);
                assert_eq!(m.answers.len(), 50);
            }
        }
        // The longest question, signed with the longest key name we do not have.
        let long = |c: char| {
            let l = |n| c.to_string().repeat(n);
            support::packets::wire_name(&[l(63), l(63), l(63), l(61)].join("."))
        };
        let mut rdata = support::packets::wire_name("hmac-sha256");
        rdata.extend_from_slice(&[0, 0, 0x65, 0x53, 0xf1, 0x00, 1, 44, 0, 32]);
        rdata.extend_from_slice(&[0; 32 + 6]);
        let mut packet = support::packets::header(1, 0, 0, 1);
        packet.extend_from_slice(&long('q'));
        packet.extend_from_slice(&[0, 6, 0, 1]);
        packet.extend_from_slice(&long('k'));
        packet.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]);
        packet.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        packet.extend_from_slice(&rdata);
        let bytes = support::dns::exchange_raw(Proto::Udp, s.dns, &packet)
            .await
            .unwrap();
        assert!(bytes.len() <= 512, "{} bytes", bytes.len());
        let m = hickory_proto::op::Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NotAuth);
        let tsig = m.signature().expect("a TSIG record");
        assert_eq!(tsig.data.error.map(u16::from), Some(17), "BADKEY");
        s.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stalled_reader_is_cut_off_and_transfers_are_bounded() {
    tokio::time::timeout(Duration::from_secs(90), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let s = TestServer::with_manifests(&big_service(40_000), |c| {
            allow_loopback(c);
            c.transfer.max_concurrent = 1;
            c.dns.tcp_idle_timeout_ms = 500;
        })
        .await;
        // A reader that asks for the zone and then reads nothing, with a
        // tiny receive buffer: the server's writes stall.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut stalled = sock.connect(s.dns).await.unwrap();
        let bytes = request(ZONE, RecordType::AXFR, None).to_vec().unwrap();
        stalled
            .write_all(&(bytes.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stalled.write_all(&bytes).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Its transfer holds the only slot: the next one is refused.
        let t = tcp(s.dns, request(ZONE, RecordType::AXFR, None), None).await;
        assert_eq!(t.rcode(), ResponseCode::Refused);
        assert_eq!(
            metric(&s, "headless_dns_transfer_refused_total{reason=\"busy\"}").await,
            1.0
        );
        // After the idle timeout the stalled one is cut off, freeing the slot
        // (the first message of a new transfer carries records again).
        let free = "the stalled transfer's slot to come free";
        support::eventually_within(Duration::from_secs(10), free, || async {
            let m =
                transfer_support::first_message(s.dns, request(ZONE, RecordType::AXFR, None)).await;
            let (rcode, answers) = (m.metadata.response_code, m.answers.len());
            if rcode == ResponseCode::NoError && answers > 0 {
                Ok(())
            } else {
                Err(format!("{rcode:?} with {answers} answers"))
            }
        })
        .await;
        // What the stalled reader gets is cut short: its last whole message
        // does not end with the closing SOA.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut rest)).await;
        let (mut at, mut last) = (0, None);
        while let Some(len) = rest
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        {
            let Some(m) = rest.get(at + 2..at + 2 + len) else {
                break;
            };
            last = Some(m);
            at += 2 + len;
        }
        let last = hickory_proto::op::Message::from_vec(last.expect("some messages")).unwrap();
        let end = last.answers.last().map(|r| r.record_type());
        assert_ne!(
            end,
            Some(RecordType::SOA),
            "the stalled reader got the whole zone ({} bytes)",
            rest.len()
        );
        s.stop().await;
    })
    .await
    .unwrap();
}

/// The whole length-prefixed messages in `bytes` (a TCP stream as read).
fn framed_messages(bytes: &[u8]) -> Vec<hickory_proto::op::Message> {
    let (mut at, mut out) = (0, Vec::new());
    while let Some(len) = bytes
        .get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    {
        let Some(m) = bytes.get(at + 2..at + 2 + len) else {
            break;
        };
        out.push(hickory_proto::op::Message::from_vec(m).unwrap());
        at += 2 + len;
    }
    out
}

/// A TCP connection with a 4 KiB receive buffer that has asked for the
/// zone: what the server writes beyond the kernel's buffers waits for it.
async fn slow_axfr(server: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut c = sock.connect(server).await.unwrap();
    let bytes = request(ZONE, RecordType::AXFR, None).to_vec().unwrap();
    c.write_all(&support::dns::framed(&bytes)).await.unwrap();
    c
}

/// Waits until the metrics page shows `series` at `want`.
async fn wait_metric(s: &TestServer, series: &str, want: f64) {
    support::eventually(&format!("{series} at {want}"), || async {
        match metric(s, series).await {
            v if v == want => Ok(()),
            v => Err(format!("{v}")),
        }
    })
    .await
}

/// A server on the manifest files `files` (name, text), with `tweak`
/// applied, once ready: big zones take a while to load in a debug build
/// beside the other tests, so the wait is longer than [`support::WAIT`].
async fn big_server(
    files: &[(&str, &str)],
    tweak: impl FnOnce(&mut headless_dns::Config),
) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = files
        .iter()
        .map(|(name, text)| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let mut c = support::server::test_config(paths);
    tweak(&mut c);
    let s = TestServer::spawn(c);
    support::eventually_within(Duration::from_secs(60), "/ready to be 200", || async {
        match http::get(s.admin, "/ready").await {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    (s, dir)
}

/// IXFR differences take one of the `max_concurrent` slots as AXFR does:
/// with the only slot held by a transfer, an IXFR that would send
/// differences is REFUSED over TCP and UDP (counted as busy), one that
/// needs only the SOA is answered, and once the slot is free the
/// differences come.
#[tokio::test]
async fn ixfr_beyond_max_concurrent_is_refused_like_axfr() {
    tokio::time::timeout(Duration::from_secs(90), async {
        // The big zone in a file of its own: the change below re-reads
        // only the small one.
        let big = big_service(40_000);
        let files = [("big.yaml", big.as_str()), ("fixtures.yaml", FIXTURES)];
        let (s, dir) = big_server(&files, |c| {
            allow_loopback(c);
            c.transfer.max_concurrent = 1;
        })
        .await;
        let before = serial(&s).await;
        rewrite(
            &dir.path().join("fixtures.yaml"),
            &FIXTURES.replace("10.1.0.11", "10.1.0.99"),
        );
        s.wait_for(
            "web-1.nginx.default.svc.cluster.local",
            RecordType::A,
            "web-1 at its new address",
            |m| support::dns::ip_strings(m) == ["10.1.0.99"],
        )
        .await;
        let now = serial(&s).await;

        // A reader that takes nothing holds the only slot.
        let stalled = slow_axfr(s.dns).await;
        let axfr = "headless_dns_transfer_requests_total{kind=\"axfr\"}";
        wait_metric(&s, axfr, 1.0).await;
        for t in [
            tcp(s.dns, request(ZONE, RecordType::IXFR, Some(before)), None).await,
            udp(s.dns, request(ZONE, RecordType::IXFR, Some(before)), None).await,
        ] {
            assert_eq!(t.rcode(), ResponseCode::Refused);
            assert!(t.records().is_empty(), "{:?}", t.records());
        }
        let busy = "headless_dns_transfer_refused_total{reason=\"busy\"}";
        assert_eq!(metric(&s, busy).await, 2.0);
        // Already current: one SOA, no slot needed.
        let t = tcp(s.dns, request(ZONE, RecordType::IXFR, Some(now)), None).await;
        assert_eq!(t.rcode(), ResponseCode::NoError);
        assert_eq!(t.records().len(), 1);
        assert_eq!(soa_serial(&t.records()[0]), Some(now));

        // The slot comes free with the reader gone: the differences come.
        drop(stalled);
        let t = support::eventually("the slot to come free", || async {
            let t = tcp(s.dns, request(ZONE, RecordType::IXFR, Some(before)), None).await;
            match t.rcode() {
                ResponseCode::NoError => Ok(t),
                rcode => Err(format!("{rcode:?}")),
            }
        })
        .await;
        let r = t.records();
        let serials: Vec<_> = r.iter().map(soa_serial).collect();
        assert_eq!(serials[..2], [Some(now), Some(before)]);
        assert_eq!(r.len(), 8, "SOA, SOA, 2 removed, SOA, 2 added, SOA: {r:?}");
        s.stop().await;
    })
    .await
    .unwrap();
}

/// The most a kernel send buffer holds here (`tcp_wmem`'s maximum): a
/// reader that has taken more than this since some moment knows the server
/// wrote after it.
fn max_send_buffer() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// At `tcp_max_connections` a new client takes the place of the least
/// recently active connection: a long AXFR to a slow reader is active with
/// every message it takes, so a connection idle since before then goes
/// instead and the transfer completes.
#[tokio::test]
async fn a_long_transfer_that_progresses_is_not_closed_first_at_the_connection_bound() {
    tokio::time::timeout(Duration::from_secs(120), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // ~160 bytes each: a zone of ~11 MB, more than twice what the kernel
        // buffers, so the transfer is still being written when it matters.
        const PODS: usize = 70_000;
        let big = big_service(PODS);
        let (s, _dir) = big_server(&[("big.yaml", big.as_str())], |c| {
            allow_loopback(c);
            c.dns.tcp_max_connections = 2;
        })
        .await;
        let mut slow = slow_axfr(s.dns).await;
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        // The transfer is under way.
        while got.len() < 64 << 10 {
            let n = slow.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
        }
        // Another client asks once, then idles.
        let mut idle = tokio::net::TcpStream::connect(s.dns).await.unwrap();
        let q = message(ZONE, RecordType::SOA, None).to_vec().unwrap();
        idle.write_all(&support::dns::framed(&q)).await.unwrap();
        assert!(support::dns::read_framed(&mut idle).await.is_some());
        // The transfer goes on past that query: more than the kernel can
        // have held for it, so the server has written since.
        let mark = got.len() + max_send_buffer() + (64 << 10);
        while got.len() < mark {
            let n = slow.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
        }
        // A third client: the idle connection makes room, not the transfer.
        let m = exchange(Proto::Tcp, s.dns, &message(ZONE, RecordType::SOA, None)).await;
        assert_eq!(m.answers.len(), 1);
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0))),
            "the idle connection was closed: {closed:?}"
        );
        let at_third = got.len();
        slow.read_to_end(&mut got).await.unwrap();
        eprintln!(
            "{} bytes, {at_third} read when the third client came",
            got.len()
        );
        // Still being written then (the kernel could not hold the rest), and
        // complete now.
        assert!(
            got.len() - at_third > max_send_buffer(),
            "the zone is too small to tell"
        );
        let messages = framed_messages(&got);
        let last = messages.last().unwrap().answers.last().unwrap();
        assert_eq!(
            last.record_type(),
            RecordType::SOA,
            "the transfer completed"
        );
        let count = |rt| {
            let of_type = |m: &hickory_proto::op::Message| {
                m.answers.iter().filter(|r| r.record_type() == rt).count()
            };
            messages.iter().map(of_type).sum::<usize>()
        };
        assert_eq!(count(RecordType::SOA), 2);
        // The service's addresses, each endpoint's, ns.dns's; two SRV each
        // (the named port's set and the service name's own).
        assert_eq!(count(RecordType::A), 2 * PODS + 1);
        assert_eq!(count(RecordType::SRV), 2 * PODS);
        s.stop().await;
    })
    .await
    .unwrap();
}

/// A secondary that never answers gets each NOTIFY five times (waits of
/// 0.5 s doubling, ~15 s in all), then it is given up and counted as
/// failed: its SOA refresh is the backstop, as with BIND and Knot.
#[tokio::test]
async fn a_notify_nobody_answers_is_sent_five_times_then_given_up() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = silent.local_addr().unwrap();
        // The first synced serial is announced for every zone.
        let s = TestServer::with_manifests(FIXTURES, |c| {
            allow_loopback(c);
            c.transfer.notify = vec![target];
        })
        .await;
        let zones = ["cluster.local.", "in-addr.arpa.", "ip6.arpa."];
        let failed = "headless_dns_transfer_notify_total{result=\"failed\"}";
        support::eventually_within(Duration::from_secs(45), "every NOTIFY given up", || async {
            match metric(&s, failed).await {
                n if n == zones.len() as f64 => Ok(()),
                n => Err(format!("{n} given up")),
            }
        })
        .await;
        silent.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let mut sent: Vec<String> = Vec::new();
        while let Ok(n) = silent.recv(&mut buf) {
            let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(m.op_code, hickory_proto::op::OpCode::Notify);
            sent.push(m.queries[0].name().to_ascii());
        }
        for zone in zones {
            let tries = sent.iter().filter(|z| *z == zone).count();
            assert_eq!(tries, 5, "NOTIFYs for {zone}: {sent:?}");
        }
        assert_eq!(
            metric(&s, "headless_dns_transfer_notify_total{result=\"sent\"}").await,
            15.0
        );
        s.stop().await;
    })
    .await
    .unwrap();
}

/// Sends `q` over UDP signed with `key`; the reply's bytes and the reply
/// checked against the signature.
async fn signed_udp(
    s: &TestServer,
    mut q: hickory_proto::op::Message,
    key: &hickory_proto::rr::TSigner,
) -> (Vec<u8>, hickory_proto::op::Message) {
    let mut verifier = q.finalize(key, transfer_support::now()).unwrap().unwrap();
    let bytes = support::dns::exchange_raw(Proto::Udp, s.dns, &q.to_vec().unwrap())
        .await
        .expect("a UDP reply");
    let m = verifier
        .verify(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {:?}", hickory_proto::op::Message::from_vec(&bytes)));
    (bytes, m.into())
}

/// A signed reply over UDP fits the client's payload with its TSIG record:
/// where it would not, it is the question alone with TC (RFC 8945 §5.3:
/// the client asks again over TCP), signed. Signed
/// replies and UDP transfers are counted as every UDP reply is.
#[tokio::test]
async fn signed_udp_replies_fit_the_payload_and_are_counted() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let manifests = format!("{FIXTURES}\n---\n{}", big_service(60));
        let s = TestServer::with_manifests(&manifests, |c| {
            allow_loopback(c);
            key(c, false);
        })
        .await;
        let good = signer("xfr-key", SECRET);
        let name = "big.default.svc.cluster.local";
        // 60 A records and a TSIG record do not fit in 512 bytes.
        let (bytes, m) = signed_udp(&s, message(name, RecordType::A, None), &good).await;
        assert!(bytes.len() <= 512, "{} bytes", bytes.len());
        assert!(m.metadata.truncation);
        // RFC 8945 §5.3: the question alone, TC, NOERROR, signed.
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty(), "{:?}", m.answers);
        // With EDNS 1232 everything fits, signed.
        let (bytes, m) = signed_udp(&s, message(name, RecordType::A, Some(1232)), &good).await;
        assert!(bytes.len() <= 1232 && !m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        // Each signed query and UDP transfer counts once, request and response.
        let requests =
            |t: &str| format!("headless_dns_dns_requests_total{{proto=\"udp\",type=\"{t}\"}}");
        let noerror = "headless_dns_dns_responses_total{proto=\"udp\",rcode=\"NOERROR\"}";
        let truncated = "headless_dns_dns_responses_truncated_total{proto=\"udp\"}";
        let before = [
            metric(&s, &requests("SOA")).await,
            metric(&s, &requests("other")).await,
            metric(&s, noerror).await,
            metric(&s, truncated).await,
        ];
        assert_eq!(before[3], 1.0, "the signed TC reply above");
        signed_udp(&s, message(ZONE, RecordType::SOA, None), &good).await;
        let now = serial(&s).await;
        let u = udp(s.dns, request(ZONE, RecordType::IXFR, Some(now)), None).await;
        assert_eq!(u.records().len(), 1);
        let after = [
            metric(&s, &requests("SOA")).await,
            metric(&s, &requests("other")).await,
            metric(&s, noerror).await,
            metric(&s, truncated).await,
        ];
        // The SOA query of `serial` counts too: two SOA, one IXFR, three replies.
        assert_eq!(
            after,
            [before[0] + 2.0, before[1] + 1.0, before[2] + 3.0, before[3]]
        );
        s.stop().await;
    })
    .await
    .unwrap();
}

/// Response-rate limiting covers signed replies and UDP transfers too: a
/// burst of them from one client is cut to the budget (one a second), every
/// response over it slipped (TC, no records, `rrl_slip = 1`).
#[tokio::test]
async fn signed_udp_replies_and_transfers_are_rate_limited() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(FIXTURES, |c| {
            allow_loopback(c);
            key(c, false);
            c.dns.rrl_responses_per_second = 1;
            c.dns.rrl_slip = 1;
        })
        .await;
        let good = signer("xfr-key", SECRET);
        let slip = "headless_dns_dns_rate_limited_total{action=\"slip\"}";
        let before = metric(&s, slip).await;
        let mut slipped = 0;
        for i in 0..30 {
            let mut q = if i % 2 == 0 {
                message(ZONE, RecordType::SOA, None)
            } else {
                request(ZONE, RecordType::IXFR, Some(1))
            };
            let _ = q.finalize(&good, transfer_support::now()).unwrap();
            let bytes = support::dns::exchange_raw(Proto::Udp, s.dns, &q.to_vec().unwrap())
                .await
                .expect("a reply: slipped, not dropped");
            let m = hickory_proto::op::Message::from_vec(&bytes).unwrap();
            if m.metadata.truncation && m.answers.is_empty() && m.signature().is_none() {
                slipped += 1;
            }
        }
        // A budget of one a second: all but one a second are slipped.
        assert!(slipped >= 10, "{slipped} of 30 slipped");
        assert!(metric(&s, slip).await - before >= f64::from(slipped));
        s.stop().await;
    })
    .await
    .unwrap();
}
