//! Black-box DNS behaviour against the real server: every record type of the
//! Kubernetes DNS spec, NXDOMAIN vs NODATA, case, EDNS, truncation, malformed
//! packets and names outside the zone, over both UDP and TCP.

mod support;

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use support::dns::{
    BOTH, NegativeTtl, Proto, authority_soa, exchange, exchange_raw, ip_strings, ips, message,
    rcode,
};
use support::fixtures::FIXTURES;
use support::server::TestServer;
use support::within;

/// A server on the fixture cluster, `tweak` applied to its config.
async fn fixtures(tweak: impl FnOnce(&mut headless_dns::Config)) -> TestServer {
    TestServer::with_manifests(FIXTURES, tweak).await
}

fn rendered(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

struct Case {
    name: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answers: &'static [&'static str],
}

const fn case(
    name: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answers: &'static [&'static str],
) -> Case {
    Case {
        name,
        qtype,
        rcode,
        answers,
    }
}

use RecordType::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
const NOERR: ResponseCode = ResponseCode::NoError;
const NX: ResponseCode = ResponseCode::NXDomain;

/// The spec's record checklist (kubernetes/dns docs/specification.md, 1.1.0) plus
/// the ordinary DNS rules it leaves to the RFCs. An empty answer list with
/// NOERROR is NODATA.
const CASES: &[Case] = &[
    // §2.2 schema version
    case("dns-version.cluster.local", TXT, NOERR, &["1.1.0"]),
    case("dns-version.cluster.local", A, NOERR, &[]),
    // apex
    case("cluster.local", NS, NOERR, &["ns.dns.cluster.local."]),
    case("cluster.local", A, NOERR, &[]),
    case("ns.dns.cluster.local", A, NOERR, &["127.0.0.1"]),
    // §2.4.1 headless A/AAAA: ready endpoints only, ordinal order, dashed name last
    case(
        "nginx.default.svc.cluster.local",
        A,
        NOERR,
        &["10.1.0.10", "10.1.0.11", "10.1.0.50"],
    ),
    case(
        "nginx.default.svc.cluster.local",
        AAAA,
        NOERR,
        &["fd00::10"],
    ),
    case(
        "web-0.nginx.default.svc.cluster.local",
        A,
        NOERR,
        &["10.1.0.10"],
    ),
    case(
        "web-0.nginx.default.svc.cluster.local",
        AAAA,
        NOERR,
        &["fd00::10"],
    ),
    case("web-1.nginx.default.svc.cluster.local", AAAA, NOERR, &[]),
    case("web-1.nginx.default.svc.cluster.local", TXT, NOERR, &[]),
    case(
        "10-1-0-50.nginx.default.svc.cluster.local",
        A,
        NOERR,
        &["10.1.0.50"],
    ),
    // not ready, terminating, unknown
    case("web-2.nginx.default.svc.cluster.local", A, NX, &[]),
    case("web-3.nginx.default.svc.cluster.local", A, NX, &[]),
    case("web-9.nginx.default.svc.cluster.local", A, NX, &[]),
    case("a.web-0.nginx.default.svc.cluster.local", A, NX, &[]),
    // §2.4.2 headless SRV: N endpoints x named ports, per-endpoint targets
    case(
        "_web._tcp.nginx.default.svc.cluster.local",
        SRV,
        NOERR,
        &[
            "0 33 80 web-0.nginx.default.svc.cluster.local.",
            "0 33 80 web-1.nginx.default.svc.cluster.local.",
            "0 33 80 10-1-0-50.nginx.default.svc.cluster.local.",
        ],
    ),
    case("_web._udp.nginx.default.svc.cluster.local", SRV, NX, &[]),
    case("_nope._tcp.nginx.default.svc.cluster.local", SRV, NX, &[]),
    case("_tcp.nginx.default.svc.cluster.local", SRV, NOERR, &[]),
    case("_web._tcp.nginx.default.svc.cluster.local", A, NOERR, &[]),
    // §2.3 ClusterIP A/AAAA (dual stack) and SRV
    case("api.default.svc.cluster.local", A, NOERR, &["10.96.0.10"]),
    case(
        "api.default.svc.cluster.local",
        AAAA,
        NOERR,
        &["fd00:96::10"],
    ),
    case(
        "_http._tcp.api.default.svc.cluster.local",
        SRV,
        NOERR,
        &["0 100 80 api.default.svc.cluster.local."],
    ),
    case(
        "_dns._udp.api.default.svc.cluster.local",
        SRV,
        NOERR,
        &["0 100 53 api.default.svc.cluster.local."],
    ),
    case("_dns._tcp.api.default.svc.cluster.local", SRV, NX, &[]),
    // SRV on the bare service name (CoreDNS): every port, named or not
    case(
        "nginx.default.svc.cluster.local",
        SRV,
        NOERR,
        &[
            "0 16 80 web-0.nginx.default.svc.cluster.local.",
            "0 16 8080 web-0.nginx.default.svc.cluster.local.",
            "0 16 80 web-1.nginx.default.svc.cluster.local.",
            "0 16 8080 web-1.nginx.default.svc.cluster.local.",
            "0 16 80 10-1-0-50.nginx.default.svc.cluster.local.",
            "0 16 8080 10-1-0-50.nginx.default.svc.cluster.local.",
        ],
    ),
    case(
        "api.default.svc.cluster.local",
        SRV,
        NOERR,
        &[
            "0 50 80 api.default.svc.cluster.local.",
            "0 50 53 api.default.svc.cluster.local.",
        ],
    ),
    case(
        "multi.default.svc.cluster.local",
        SRV,
        NOERR,
        &[
            "0 33 5432 multi.default.svc.cluster.local.",
            "0 33 9000 multi.default.svc.cluster.local.",
            "0 33 9187 multi.default.svc.cluster.local.",
        ],
    ),
    case("peers.default.svc.cluster.local", SRV, NOERR, &[]),
    // §2.5 ExternalName
    case("ext.default.svc.cluster.local", A, NOERR, &["example.com."]),
    case(
        "ext.default.svc.cluster.local",
        CNAME,
        NOERR,
        &["example.com."],
    ),
    // §2.4.1: a headless service with no ready endpoint does not exist
    case("empty.default.svc.cluster.local", A, NX, &[]),
    case("e-0.empty.default.svc.cluster.local", A, NX, &[]),
    // publishNotReadyAddresses serves not-ready endpoints, never terminating ones
    case("peers.default.svc.cluster.local", A, NOERR, &["10.1.2.1"]),
    case("p-1.peers.default.svc.cluster.local", A, NX, &[]),
    // namespaces and other empty non-terminals
    case("default.svc.cluster.local", A, NOERR, &[]),
    case("quiet.svc.cluster.local", A, NOERR, &[]),
    case("missing.svc.cluster.local", A, NX, &[]),
    case("svc.cluster.local", A, NOERR, &[]),
    case("nosvc.default.svc.cluster.local", A, NX, &[]),
    case("x.y.z.default.svc.cluster.local", A, NX, &[]),
    case("other.cluster.local", A, NX, &[]),
    // pods records are disabled by default
    case("10-1-0-10.default.pod.cluster.local", A, NX, &[]),
    // §2.3.3 / §2.4.3 PTR
    case(
        "10.0.96.10.in-addr.arpa",
        PTR,
        NOERR,
        &["api.default.svc.cluster.local."],
    ),
    case(
        "10.0.1.10.in-addr.arpa",
        PTR,
        NOERR,
        &["web-0.nginx.default.svc.cluster.local."],
    ),
    case(
        "50.0.1.10.in-addr.arpa",
        PTR,
        NOERR,
        &["10-1-0-50.nginx.default.svc.cluster.local."],
    ),
    case(
        "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
        PTR,
        NOERR,
        &["web-0.nginx.default.svc.cluster.local."],
    ),
    case("12.0.1.10.in-addr.arpa", PTR, NX, &[]),
    case("1.2.3.4.5.in-addr.arpa", PTR, NX, &[]),
    // RFC 8020: names with names below them are empty non-terminals (NODATA)
    case("0.1.10.in-addr.arpa", PTR, NOERR, &[]),
    case("1.10.in-addr.arpa", PTR, NOERR, &[]),
    case("10.in-addr.arpa", PTR, NOERR, &[]),
    case("0.96.10.in-addr.arpa", PTR, NOERR, &[]),
    case("9.1.10.in-addr.arpa", PTR, NX, &[]),
    case("11.in-addr.arpa", PTR, NX, &[]),
    case("d.f.ip6.arpa", PTR, NOERR, &[]),
    case("0.0.d.f.ip6.arpa", PTR, NOERR, &[]),
    case("e.f.ip6.arpa", PTR, NX, &[]),
    case("_udp.api.default.svc.cluster.local", SRV, NOERR, &[]),
    case("_sctp.api.default.svc.cluster.local", SRV, NX, &[]),
    case("dns.cluster.local", A, NOERR, &[]),
];

#[tokio::test]
async fn spec_records_over_udp_and_tcp() {
    within(Duration::from_secs(60), async {
        let s = fixtures(|_| {}).await;
        for proto in BOTH {
            for c in CASES {
                let m = s.query(proto, c.name, c.qtype).await;
                let what = format!("{proto:?} {} {:?}", c.name, c.qtype);
                assert_eq!(rcode(&m), c.rcode, "{what}: {m:?}");
                assert_eq!(rendered(&m), c.answers, "{what}");
                assert!(m.metadata.authoritative, "{what}: AA");
                if c.answers.is_empty() {
                    // RFC 2308: NXDOMAIN and NODATA carry the zone's SOA.
                    assert!(
                        authority_soa(&m).is_some(),
                        "{what}: SOA in authority: {m:?}"
                    );
                    let zone_apex = m.authorities[0].name.to_ascii().to_ascii_lowercase();
                    assert!(
                        zone_apex == "cluster.local." || zone_apex.ends_with("arpa."),
                        "{what}: SOA owner {zone_apex}"
                    );
                } else {
                    assert!(
                        m.authorities.is_empty(),
                        "{what}: no authority on positive answers"
                    );
                    for r in &m.answers {
                        let ttl = if c.qtype == TXT { 28800 } else { 5 };
                        assert_eq!(r.ttl, ttl, "{what}: TTL");
                    }
                }
            }
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn soa_negative_ttls_and_pending_pods() {
    within(Duration::from_secs(30), async {
        let s = fixtures(|c| {
            c.dns.negative_ttl = 30;
            c.dns.pending_negative_ttl = 2;
        })
        .await;
        let m = s.query(Proto::Udp, "cluster.local", SOA).await;
        match &m.answers[0].data {
            RData::SOA(soa) => {
                assert_eq!(soa.mname.to_ascii(), "ns.dns.cluster.local.");
                assert_eq!(soa.rname.to_ascii(), "hostmaster.cluster.local.");
                assert_eq!(soa.minimum, 30);
            }
            other => panic!("{other:?}"),
        }
        // web-2 (not ready) and web-3 (terminating) are below replicas=4: about to exist.
        for pending in ["web-2", "web-3"] {
            let m = s
                .query(
                    Proto::Udp,
                    &format!("{pending}.nginx.default.svc.cluster.local"),
                    A,
                )
                .await;
            assert_eq!(rcode(&m), NX);
            assert_eq!(authority_soa(&m), Some(NegativeTtl::both(2)), "{pending}");
        }
        let m = s
            .query(Proto::Udp, "web-4.nginx.default.svc.cluster.local", A)
            .await;
        assert_eq!(
            authority_soa(&m),
            Some(NegativeTtl::both(30)),
            "web-4 is beyond replicas"
        );
        let m = s
            .query(Proto::Udp, "nope.nginx.default.svc.cluster.local", A)
            .await;
        assert_eq!(authority_soa(&m), Some(NegativeTtl::both(30)));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn case_is_matched_insensitively_and_echoed() {
    within(Duration::from_secs(30), async {
        let s = fixtures(|_| {}).await;
        for proto in BOTH {
            let name = "WeB-0.NGINX.Default.svc.Cluster.LOCAL.";
            let m = s.query(proto, name, A).await;
            assert_eq!(
                ips(&m),
                vec!["10.1.0.10".parse::<std::net::IpAddr>().unwrap()]
            );
            assert_eq!(
                m.queries[0].name().to_ascii(),
                name,
                "question echoed as asked"
            );
            assert_eq!(m.answers[0].name.to_ascii(), name, "owner as asked");
            let m = s
                .query(proto, "_WEB._Tcp.nginx.DEFAULT.svc.cluster.local", SRV)
                .await;
            assert_eq!(m.answers.len(), 3);
            // glue: every SRV target has its addresses in the additional section
            let glue: Vec<String> = m
                .additionals
                .iter()
                .map(|r| format!("{} {}", r.name, r.data))
                .collect();
            assert!(
                glue.contains(&"web-0.nginx.default.svc.cluster.local. 10.1.0.10".to_string()),
                "{glue:?}"
            );
            assert!(
                glue.contains(&"web-0.nginx.default.svc.cluster.local. fd00::10".to_string()),
                "{glue:?}"
            );
            assert!(
                glue.contains(&"10-1-0-50.nginx.default.svc.cluster.local. 10.1.0.50".to_string()),
                "{glue:?}"
            );
            // the bare service name: every port of every endpoint, glue once per target
            let m = s.query(proto, "NGINX.default.svc.cluster.local", SRV).await;
            assert_eq!(m.answers.len(), 6);
            let mut glue: Vec<String> = m
                .additionals
                .iter()
                .map(|r| format!("{} {}", r.name, r.data).to_ascii_lowercase())
                .collect();
            glue.sort();
            assert_eq!(
                glue,
                [
                    "10-1-0-50.nginx.default.svc.cluster.local. 10.1.0.50",
                    "web-0.nginx.default.svc.cluster.local. 10.1.0.10",
                    "web-0.nginx.default.svc.cluster.local. fd00::10",
                    "web-1.nginx.default.svc.cluster.local. 10.1.0.11",
                ]
            );
            let m = s.query(proto, "api.default.svc.cluster.local", SRV).await;
            let glue: Vec<String> = m.additionals.iter().map(|r| r.data.to_string()).collect();
            assert_eq!(glue, ["10.96.0.10", "fd00:96::10"]);
        }
        s.stop().await;
    })
    .await;
}

fn big_service(pods: usize) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: None, ports: [{name: web, port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big-1, namespace: default, labels: {kubernetes.io/service-name: big}}\naddressType: IPv4\nports: [{name: web, protocol: TCP, port: 80}]\nendpoints:\n",
    );
    for i in 0..pods {
        y.push_str(&format!(
            "  - {{addresses: [\"10.2.{}.{}\"], hostname: big-{i}}}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    y
}

#[tokio::test]
async fn truncation_edns_and_tcp_retry() {
    within(Duration::from_secs(30), async {
        let chain = "---\napiVersion: v1\nkind: Service\nmetadata: {name: tobig, namespace: default}\nspec: {type: ExternalName, externalName: big.default.svc.cluster.local}\n";
        let manifests = format!("{}{chain}", big_service(200));
        let s = TestServer::with_manifests(&manifests, |_| {}).await;
        let name = "big.default.svc.cluster.local";
        // After the header and question (47 bytes), 16 bytes per A record.
        let fit = |payload: usize| (payload - 47) / 16;
        let first = |n: usize| (1..=n).map(|i| format!("10.2.0.{i}")).collect::<Vec<_>>();
        // No EDNS: 512 bytes; 200 A records do not fit, so TC with the
        // first 29, whole (RFC 2181 §9; musl never retries over TCP).
        let m = exchange(Proto::Udp, s.dns, &message(name, A, None)).await;
        assert!(m.metadata.truncation, "TC without EDNS");
        assert_eq!(ip_strings(&m), first(fit(512)));
        assert!(m.edns.is_none(), "no OPT when the query had none");
        // EDNS 1232: still too big (200 x 16 bytes), TC with the first 73
        // (room kept for OPT), OPT echoed with our size.
        let m = exchange(Proto::Udp, s.dns, &message(name, A, Some(4096))).await;
        assert!(m.metadata.truncation);
        assert_eq!(ip_strings(&m), first(fit(1232 - 11)));
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        // A client retries over TCP and gets everything, in ordinal order.
        let m = exchange(Proto::Tcp, s.dns, &message(name, A, None)).await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 200);
        let got: Vec<String> = ips(&m).iter().map(|i| i.to_string()).collect();
        assert_eq!(got[0], "10.2.0.1");
        assert_eq!(got[2], "10.2.0.3");
        assert_eq!(got[199], "10.2.0.200");
        // A small answer fits in 512 and is not truncated.
        let m = exchange(
            Proto::Udp,
            s.dns,
            &message("big-7.big.default.svc.cluster.local", A, None),
        )
        .await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 1);
        // SRV with 200 targets: TC over UDP, whole with glue over TCP.
        let m = exchange(
            Proto::Tcp,
            s.dns,
            &message("_web._tcp.big.default.svc.cluster.local", SRV, None),
        )
        .await;
        assert_eq!(m.answers.len(), 200);
        assert_eq!(m.additionals.len(), 200);
        // The bare service name's SRV set, likewise: over UDP TC with the
        // first SRV records that fit and no glue, whole over TCP.
        let bare = message("big.default.svc.cluster.local", SRV, None);
        let m = exchange(Proto::Udp, s.dns, &bare).await;
        assert!(m.metadata.truncation && m.additionals.is_empty(), "{m:?}");
        let targets: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(srv) => srv.target.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        let expect: Vec<String> = (0..targets.len())
            .map(|i| format!("big-{i}.big.default.svc.cluster.local."))
            .collect();
        // Each record: 18 bytes and a target of 36 or 37 (an 11-byte label).
        assert!(targets.len() >= (512 - 47) / 55, "{targets:?}");
        assert_eq!(targets, expect);
        let m = exchange(Proto::Tcp, s.dns, &bare).await;
        assert_eq!((m.answers.len(), m.additionals.len()), (200, 200));
        // A chain to it: over UDP (with EDNS too) TC with the CNAME and the
        // first A records that fit; CNAME + 200 A over TCP.
        let via = "tobig.default.svc.cluster.local";
        for edns in [None, Some(1232)] {
            let m = exchange(Proto::Udp, s.dns, &message(via, A, edns)).await;
            assert!(m.metadata.truncation, "{m:?}");
            assert_eq!(m.answers[0].record_type(), CNAME);
            let got = ip_strings(&m);
            assert!(got.len() >= 20, "{got:?}");
            assert_eq!(got, first(got.len()));
            assert_eq!(m.edns.is_some(), edns.is_some());
        }
        let m = exchange(Proto::Tcp, s.dns, &message(via, A, None)).await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 201);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_packets_refused_and_unsupported_queries() {
    within(Duration::from_secs(30), async {
        let s = fixtures(|_| {}).await;
        for proto in BOTH {
            // outside our zones: REFUSED, not authoritative
            let m = s.query(proto, "example.org", A).await;
            assert_eq!(rcode(&m), ResponseCode::Refused);
            assert!(!m.metadata.authoritative);
            // zone transfers are refused
            let m = s.query(proto, "cluster.local", RecordType::AXFR).await;
            assert_eq!(rcode(&m), ResponseCode::Refused);
            // ANY: RFC 8482 minimal answer
            let m = s
                .query(
                    proto,
                    "web-0.nginx.default.svc.cluster.local",
                    RecordType::ANY,
                )
                .await;
            assert_eq!(rcode(&m), NOERR);
            assert_eq!(m.answers.len(), 1);
            assert_eq!(m.answers[0].record_type(), RecordType::HINFO);
            // EDNS version 1: BADVERS
            let mut q = message("web-0.nginx.default.svc.cluster.local", A, Some(1232));
            q.edns.as_mut().unwrap().set_version(1);
            let m = exchange(proto, s.dns, &q).await;
            // 16 is BADVERS in an OPT context (hickory names the shared code BADSIG).
            assert_eq!(u16::from(rcode(&m)), 16);
            assert!(m.answers.is_empty());
            // NOTIFY: NOTIMP
            let mut q = message("cluster.local", SOA, None);
            q.metadata.op_code = hickory_proto::op::OpCode::Notify;
            let m = exchange(proto, s.dns, &q).await;
            assert_eq!(rcode(&m), ResponseCode::NotImp);
        }
        // Garbage after a readable header: FORMERR with the same id.
        let garbage = [
            0xAB, 0xCD, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3F, b'x',
        ];
        for proto in BOTH {
            let reply = exchange_raw(proto, s.dns, &garbage)
                .await
                .expect("FORMERR reply");
            let m = Message::from_vec(&reply).unwrap();
            assert_eq!(m.metadata.id, 0xABCD);
            assert_eq!(rcode(&m), ResponseCode::FormErr);
        }
        // Shorter than a header: dropped, no reply; the server goes on.
        assert!(exchange_raw(Proto::Udp, s.dns, &[1, 2, 3]).await.is_none());
        let m = s
            .query(Proto::Udp, "web-0.nginx.default.svc.cluster.local", A)
            .await;
        assert_eq!(rcode(&m), NOERR);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn pod_records_insecure_and_verified() {
    within(Duration::from_secs(30), async {
        let s = fixtures(|c| c.dns.pods = headless_dns::dns::PodsMode::Insecure).await;
        let m = s
            .query(Proto::Udp, "1-2-3-4.default.pod.cluster.local", A)
            .await;
        assert_eq!(rendered(&m), ["1.2.3.4"]);
        let m = s
            .query(Proto::Udp, "fd00--1.default.pod.cluster.local", AAAA)
            .await;
        assert_eq!(rendered(&m), ["fd00::1"]);
        s.stop().await;
        let s = fixtures(|c| c.dns.pods = headless_dns::dns::PodsMode::Verified).await;
        let m = s
            .query(Proto::Udp, "10-1-0-10.default.pod.cluster.local", A)
            .await;
        assert_eq!(
            rendered(&m),
            ["10.1.0.10"],
            "a pod with that IP exists in default"
        );
        let m = s
            .query(Proto::Udp, "10-1-0-10.quiet.pod.cluster.local", A)
            .await;
        assert_eq!(rcode(&m), NX, "not in that namespace");
        let m = s
            .query(Proto::Udp, "1-2-3-4.default.pod.cluster.local", A)
            .await;
        assert_eq!(rcode(&m), NX, "no such pod");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn endpoint_pod_names_option() {
    within(Duration::from_secs(30), async {
        let s = fixtures(|c| c.dns.endpoint_pod_names = true).await;
        let m = s
            .query(
                Proto::Tcp,
                "worker-7f9c-abcde.nginx.default.svc.cluster.local",
                A,
            )
            .await;
        assert_eq!(rendered(&m), ["10.1.0.50"]);
        let m = s
            .query(Proto::Tcp, "10-1-0-50.nginx.default.svc.cluster.local", A)
            .await;
        assert_eq!(rcode(&m), NX);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn not_ready_before_first_sync_is_servfail() {
    within(Duration::from_secs(30), async {
        // File sources sync at once, so check the rule on an index that has not
        // completed its first list (the Kubernetes-source tests do it end to end).
        use headless_dns::dns::{Answerer, Outcome};
        use headless_dns::index::{IndexWriter, Kind, ZoneSettings};
        let writer = IndexWriter::new(ZoneSettings::default(), &[Kind::Service]);
        let a = Answerer::new(
            writer.index(),
            headless_dns::Config::default().dns_settings(),
        );
        let q = message("web-0.nginx.default.svc.cluster.local", A, None)
            .to_vec()
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(a.answer(&q, false, &mut out), Outcome::Reply);
        assert_eq!(
            rcode(&Message::from_vec(&out).unwrap()),
            ResponseCode::ServFail
        );
    })
    .await;
}
