//! What a resolver follows beyond one name's own records (issue #15), over
//! UDP and TCP against the real server: ExternalName chains inside our zones,
//! and empty non-terminals (RFC 8020) as names come and go.

mod support;

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType::{self, A, AAAA, CNAME, PTR, SRV, TXT};
use support::dns::{BOTH, Proto, authority_soa, exchange, message, rcode};
use support::fixtures::FIXTURES;
use support::server::{TestServer, rewrite};
use support::within;
const NOERR: ResponseCode = ResponseCode::NoError;
const NX: ResponseCode = ResponseCode::NXDomain;

fn rendered(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

/// ExternalName chains followed inside our zones, as CoreDNS: (name, type,
/// rcode, answers, SOA in authority).
const CHAINS: &[(&str, RecordType, ResponseCode, &[&str], bool)] = &[
    (
        "alias.default.svc.cluster.local",
        A,
        NOERR,
        &["web-0.nginx.default.svc.cluster.local.", "10.1.0.10"],
        false,
    ),
    (
        "alias.default.svc.cluster.local",
        AAAA,
        NOERR,
        &["web-0.nginx.default.svc.cluster.local.", "fd00::10"],
        false,
    ),
    (
        "alias2.default.svc.cluster.local",
        A,
        NOERR,
        &[
            "alias.default.svc.cluster.local.",
            "web-0.nginx.default.svc.cluster.local.",
            "10.1.0.10",
        ],
        false,
    ),
    // any asked type: the target's SRV set
    (
        "toapi.default.svc.cluster.local",
        SRV,
        NOERR,
        &[
            "api.default.svc.cluster.local.",
            "0 50 80 api.default.svc.cluster.local.",
            "0 50 53 api.default.svc.cluster.local.",
        ],
        false,
    ),
    // the target has no such records: NODATA after the CNAME
    (
        "alias.default.svc.cluster.local",
        TXT,
        NOERR,
        &["web-0.nginx.default.svc.cluster.local."],
        true,
    ),
    // a dangling target: the CNAME and the target's NXDOMAIN (RFC 6604)
    (
        "dangling.default.svc.cluster.local",
        A,
        NX,
        &["gone.default.svc.cluster.local."],
        true,
    ),
    // a loop ends; each CNAME once
    (
        "loop-a.default.svc.cluster.local",
        A,
        NOERR,
        &[
            "loop-b.default.svc.cluster.local.",
            "loop-a.default.svc.cluster.local.",
        ],
        false,
    ),
    // CNAME asked: the CNAME alone, not followed
    (
        "alias2.default.svc.cluster.local",
        CNAME,
        NOERR,
        &["alias.default.svc.cluster.local."],
        false,
    ),
    // out of zone, forwarding off: the CNAME alone
    (
        "ext.default.svc.cluster.local",
        AAAA,
        NOERR,
        &["example.com."],
        false,
    ),
];

#[tokio::test]
async fn externalname_chains_over_udp_and_tcp() {
    within(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(FIXTURES, |_| {}).await;
        for proto in BOTH {
            for (name, qtype, code, answers, soa) in CHAINS {
                let m = s.query(proto, name, *qtype).await;
                let what = format!("{proto:?} {name} {qtype:?}");
                assert_eq!(rcode(&m), *code, "{what}: {m:?}");
                assert_eq!(rendered(&m), *answers, "{what}");
                assert!(m.metadata.authoritative, "{what}: AA");
                assert_eq!(authority_soa(&m).is_some(), *soa, "{what}: SOA: {m:?}");
                assert_eq!(m.answers[0].name.to_ascii(), format!("{name}."), "{what}");
                assert!(m.answers.iter().all(|r| r.ttl == 5), "{what}: TTL");
            }
        }
        // EDNS is echoed on the chain path too
        let m = exchange(
            Proto::Udp,
            s.dns,
            &message("alias.default.svc.cluster.local", A, Some(1232)),
        )
        .await;
        assert!(m.edns.is_some(), "OPT echoed: {m:?}");
        assert_eq!(m.answers.len(), 2);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn empty_non_terminals_follow_the_names_below_them() {
    within(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(FIXTURES, |c| {
            c.dns.pods = headless_dns::dns::PodsMode::Verified
        })
        .await;
        for proto in BOTH {
            for (name, qtype) in [
                ("0.1.10.in-addr.arpa", PTR),
                ("default.pod.cluster.local", A),
                ("pod.cluster.local", A),
                ("_tcp.nginx.default.svc.cluster.local", SRV),
            ] {
                let m = s.query(proto, name, qtype).await;
                assert_eq!(rcode(&m), NOERR, "{proto:?} {name}: {m:?}");
                assert!(m.answers.is_empty() && authority_soa(&m).is_some());
            }
        }
        // nginx (10.1.0.x) goes: nothing is left under 0.1.10.in-addr.arpa.
        let without: Vec<&str> = FIXTURES
            .split("\n---\n")
            .filter(|d| !d.contains("name: nginx") && !d.contains("service-name: nginx"))
            .collect();
        rewrite(&s.manifest_path(), &without.join("\n---\n"));
        s.wait_for(
            "0.1.10.in-addr.arpa",
            PTR,
            "NXDOMAIN once nginx is gone",
            |m| rcode(m) == NX,
        )
        .await;
        let m = s.query(Proto::Tcp, "0.1.10.in-addr.arpa", PTR).await;
        assert_eq!(rcode(&m), NX, "{m:?}");
        let m = s.query(Proto::Tcp, "1.10.in-addr.arpa", PTR).await;
        assert_eq!(rcode(&m), NOERR, "peers' 10.1.2.1 is still below: {m:?}");
        let m = s.query(Proto::Udp, "0.96.10.in-addr.arpa", PTR).await;
        assert_eq!(rcode(&m), NOERR, "api's cluster IP is still below: {m:?}");
        s.stop().await;
    })
    .await;
}
