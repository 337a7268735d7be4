//! Autopath (issue #29) against the real server: `[dns] autopath` on, a real
//! unbound upstream on loopback (`support::unbound`), real queries over UDP
//! and TCP from loopback, whose namespace is the one `[source] namespaces`
//! entry (a sidecar's). Which client addresses are of which namespace (the
//! index's endpoints and pods) is checked on the answerer itself, whose
//! `answer_from` takes the client address a listener would pass; the stub
//! resolvers' view with real client addresses is `tests/autopath_stubs.rs`.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use headless_dns::Config;
use headless_dns::dns::{Answerer, Outcome};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType::{self, A, AAAA};
use hickory_proto::rr::{RData, Record};
use support::dns::{BOTH, Proto, authority_soa, exchange, message, rcode};
use support::server::TestServer;
use support::unbound::Unbound;
use support::within;

/// Namespace `default` with headless `nginx` (web-0, web-1); namespace
/// `other` with headless `db` (db-0) and an ExternalName `mail` to an
/// upstream name; one address (10.9.0.1) behind services of both.
const MANIFESTS: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Service
metadata: {name: nginx, namespace: default}
spec: {clusterIP: None, ports: [{name: web, protocol: TCP, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: nginx-1, namespace: default, labels: {kubernetes.io/service-name: nginx}}
addressType: IPv4
ports: [{name: web, protocol: TCP, port: 80}]
endpoints:
  - {addresses: ["10.1.0.10"], hostname: web-0}
  - {addresses: ["10.1.0.11"], hostname: web-1}
  - {addresses: ["10.9.0.1"], hostname: shared}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: other}
spec: {clusterIP: None, ports: [{name: sql, protocol: TCP, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: other, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: sql, protocol: TCP, port: 5432}]
endpoints:
  - {addresses: ["10.2.0.7"], hostname: db-0}
  - {addresses: ["10.9.0.1"], hostname: shared}
---
apiVersion: v1
kind: Service
metadata: {name: mail, namespace: other}
spec: {type: ExternalName, externalName: www.example.test}
---
apiVersion: v1
kind: Pod
metadata: {name: job-1, namespace: other}
status: {phase: Running, podIP: 10.2.0.99, podIPs: [{ip: 10.2.0.99}]}
"#;

/// The upstream's zone: `db` with A and AAAA, `www` with an A only.
const UPSTREAM: [&str; 3] = [
    "db.example.test. 300 IN A 192.0.2.10",
    "db.example.test. 300 IN AAAA 2001:db8::10",
    "www.example.test. 300 IN A 192.0.2.11",
];

async fn upstream() -> Unbound {
    Unbound::start("example.test", &UPSTREAM, "db.example.test").await
}

/// The answer section as `(owner, TTL, data)` text.
fn answers(m: &Message) -> Vec<(String, u32, String)> {
    m.answers
        .iter()
        .map(|r: &Record| (r.name.to_ascii(), r.ttl, r.data.to_string()))
        .collect()
}

/// The sum of every series of `name` in a Prometheus text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn metrics(s: &TestServer) -> String {
    support::http::get(s.admin, "/metrics")
        .await
        .expect("metrics")
        .1
}

/// `name qtype` asked of `s` over `proto` (with EDNS); the question comes
/// back as asked.
async fn ask(s: &TestServer, proto: Proto, name: &str, qtype: RecordType) -> Message {
    let m = exchange(proto, s.dns, &message(name, qtype, Some(1232))).await;
    let echoed = m.queries[0].name().to_ascii();
    assert_eq!(echoed, format!("{name}."), "the question as asked: {m:?}");
    m
}

/// External names, through the forwarder: an A in mixed case (the CNAME's
/// owner is the question as asked, its TTL at most `negative_ttl`, 5 s),
/// and an AAAA of a name with an A only (the CNAME and the upstream's
/// NODATA). Returns the queries sent.
async fn external_names(s: &TestServer, proto: Proto) -> f64 {
    let name = "DB.example.test.default.svc.cluster.local";
    let m = ask(s, proto, name, A).await;
    assert_eq!(rcode(&m), ResponseCode::NoError, "{proto:?} {m:?}");
    let got = answers(&m);
    assert_eq!(got.len(), 2, "{m:?}");
    assert_eq!(got[0], (format!("{name}."), 5, "DB.example.test.".into()));
    assert_eq!(
        (got[1].0.as_str(), got[1].2.as_str()),
        ("DB.example.test.", "192.0.2.10")
    );
    assert!(
        got[1].1 <= 300 && got[1].1 > 200,
        "the upstream's TTL: {m:?}"
    );
    assert!(
        m.metadata.recursion_available && !m.metadata.authoritative,
        "{m:?}"
    );
    let name = "www.example.test.default.svc.cluster.local";
    let m = ask(s, proto, name, AAAA).await;
    assert_eq!(rcode(&m), ResponseCode::NoError, "{m:?}");
    assert_eq!(
        answers(&m),
        [(format!("{name}."), 5, "www.example.test.".into())]
    );
    let soa = m
        .authorities
        .iter()
        .find(|r| matches!(r.data, RData::SOA(_)));
    assert_eq!(
        soa.map(|r| r.name.to_ascii()),
        Some("example.test.".into()),
        "{m:?}"
    );
    2.0
}

/// Names in our zone: another namespace's service from the second step
/// (authoritative), an ExternalName there completed upstream, and a name
/// that exists at the first step, never rewritten. Returns the queries sent.
async fn names_of_ours(s: &TestServer, proto: Proto) -> f64 {
    let m = ask(s, proto, "db.other.default.svc.cluster.local", A).await;
    let svc = "db.other.svc.cluster.local.";
    assert_eq!(
        answers(&m),
        [
            ("db.other.default.svc.cluster.local.".into(), 5, svc.into()),
            (svc.into(), 5, "10.2.0.7".into()),
            (svc.into(), 5, "10.9.0.1".into()),
        ]
    );
    assert!(m.metadata.authoritative, "{m:?}");
    let m = ask(s, proto, "mail.other.default.svc.cluster.local", A).await;
    let data: Vec<String> = answers(&m).into_iter().map(|a| a.2).collect();
    let chain = [
        "mail.other.svc.cluster.local.",
        "www.example.test.",
        "192.0.2.11",
    ];
    assert_eq!(data, chain, "{m:?}");
    let name = "web-0.nginx.default.svc.cluster.local";
    let m = ask(s, proto, name, A).await;
    assert_eq!(answers(&m), [(format!("{name}."), 5, "10.1.0.10".into())]);
    3.0
}

/// Every step misses (`other` is a namespace: other.svc.cluster.local, a
/// NODATA, is passed over): the asked name's own NXDOMAIN with our SOA; and
/// a first expansion of another namespace than the client's: today's
/// answer. Returns the queries sent.
async fn misses(s: &TestServer, proto: Proto) -> f64 {
    for name in [
        "nothere.default.svc.cluster.local",
        "other.default.svc.cluster.local",
    ] {
        let m = ask(s, proto, name, A).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain, "{name}: {m:?}");
        assert!(m.answers.is_empty(), "{m:?}");
        let owner = m.authorities.first().map(|r| r.name.to_ascii());
        assert_eq!(owner, Some("cluster.local.".into()), "{m:?}");
        assert!(authority_soa(&m).is_some());
    }
    let m = ask(s, proto, "db.example.test.other.svc.cluster.local", A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain, "{m:?}");
    3.0
}

#[tokio::test]
async fn sidecar_autopath_answers_the_first_existing_step_behind_a_cname() {
    within(Duration::from_secs(60), async {
        let up = upstream().await;
        let s = TestServer::with_manifests(MANIFESTS, |c| {
            c.dns.autopath = true;
            c.source.namespaces = vec!["default".into()];
            c.forward.upstreams = vec![up.addr.to_string()];
        })
        .await;
        let requests_before = metric(&metrics(&s).await, "headless_dns_dns_requests_total");
        let mut sent = 0.0;
        for proto in BOTH {
            sent += external_names(&s, proto).await;
            sent += names_of_ours(&s, proto).await;
            sent += misses(&s, proto).await;
        }
        let text = metrics(&s).await;
        let hits = metric(&text, "headless_dns_autopath_total{result=\"hit\"}");
        assert_eq!(hits, 8.0, "4 hits per protocol\n{text}");
        let missed = metric(&text, "headless_dns_autopath_total{result=\"miss\"}");
        assert_eq!(missed, 4.0, "2 misses per protocol\n{text}");
        // One request counted per query sent: the steps are not queries.
        let requests = metric(&text, "headless_dns_dns_requests_total") - requests_before;
        assert_eq!(requests, sent, "{text}");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn autopath_off_or_an_unknown_client_gets_todays_answer() {
    within(Duration::from_secs(60), async {
        let up = upstream().await;
        // Off (the default), in sidecar mode: NXDOMAIN; the counters stay 0.
        let off = TestServer::with_manifests(MANIFESTS, |c| {
            c.source.namespaces = vec!["default".into()];
            c.forward.upstreams = vec![up.addr.to_string()];
        })
        .await;
        // On, cluster-wide: loopback is no pod, so its namespace is unknown.
        let unknown = TestServer::with_manifests(MANIFESTS, |c| {
            c.dns.autopath = true;
            c.forward.upstreams = vec![up.addr.to_string()];
        })
        .await;
        for s in [&off, &unknown] {
            for proto in BOTH {
                for name in [
                    "db.example.test.default.svc.cluster.local",
                    "db.other.default.svc.cluster.local",
                ] {
                    let m = ask(s, proto, name, A).await;
                    assert_eq!(rcode(&m), ResponseCode::NXDomain, "{name} {proto:?}: {m:?}");
                    assert!(m.answers.is_empty());
                }
            }
        }
        for s in [&off, &unknown] {
            let text = metrics(s).await;
            assert!(
                text.contains("headless_dns_autopath_total{result=\"hit\"} 0"),
                "{text}"
            );
            assert_eq!(metric(&text, "headless_dns_autopath_total"), 0.0, "{text}");
        }
        off.stop().await;
        unknown.stop().await;
    })
    .await;
}

#[tokio::test]
async fn without_a_forwarder_only_steps_in_our_zone_can_hit() {
    within(Duration::from_secs(30), async {
        let s = TestServer::with_manifests(MANIFESTS, |c| {
            c.dns.autopath = true;
            c.source.namespaces = vec!["default".into()];
        })
        .await;
        for proto in BOTH {
            let m = ask(&s, proto, "db.other.default.svc.cluster.local", A).await;
            assert_eq!(answers(&m).len(), 3, "CNAME + 2 A: {m:?}");
            let m = ask(&s, proto, "db.example.test.default.svc.cluster.local", A).await;
            assert_eq!(rcode(&m), ResponseCode::NXDomain, "{m:?}");
        }
        s.stop().await;
    })
    .await;
}

/// The answerer of `MANIFESTS` with autopath on, cluster-wide.
fn answerer() -> Answerer {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("m.yaml");
    std::fs::write(&path, MANIFESTS).expect("write manifests");
    let mut c = Config::default();
    c.source.manifests = vec![path];
    c.sim.enabled = false;
    c.dns.autopath = true;
    let index = headless_dns::index_manifests(&c).expect("index the manifests");
    Answerer::new(index, c.dns_settings())
}

/// `name A` answered for a client at `client`: its rcode, and whether the
/// answer starts with a CNAME from the asked name (autopath's mark).
fn ask_from(a: &Answerer, name: &str, client: &str) -> (ResponseCode, bool) {
    let packet = message(name, A, None).to_vec().expect("encode");
    let mut out = Vec::new();
    let ip: IpAddr = client.parse().expect("an address");
    let outcome = a.answer_from(&packet, (false, ip), &mut out, std::time::Instant::now());
    assert_eq!(outcome, Outcome::Reply, "{name} from {client}");
    let m = Message::from_vec(&out).expect("a reply");
    let cname = m.answers.first().is_some_and(|r| {
        matches!(r.data, RData::CNAME(_)) && r.name.to_ascii() == format!("{name}.")
    });
    (rcode(&m), cname)
}

#[test]
fn the_clients_namespace_comes_from_the_endpoint_or_pod_at_its_address() {
    let cross = "db.other.default.svc.cluster.local";
    let back = "nginx.default.other.svc.cluster.local";
    let hit = (ResponseCode::NoError, true);
    let todays = (ResponseCode::NXDomain, false);
    let a = answerer();
    // web-0's address is an endpoint of `default`: autopath for default's names.
    assert_eq!(ask_from(&a, cross, "10.1.0.10"), hit);
    // db-0's is of `other`: default's first expansion is not its own ...
    assert_eq!(ask_from(&a, cross, "10.2.0.7"), todays);
    // ... its own is, and every step missing is today's answer too.
    assert_eq!(ask_from(&a, back, "10.2.0.7"), hit);
    assert_eq!(
        ask_from(&a, "db.default.other.svc.cluster.local", "10.2.0.7"),
        todays
    );
    // A running pod's address (the file source reads Pods; the Kubernetes
    // source watches them with pods = "verified").
    assert_eq!(ask_from(&a, back, "10.2.0.99"), hit);
    assert_eq!(ask_from(&a, cross, "10.2.0.99"), todays);
    // Unknown, shared by two namespaces, loopback without a configured one.
    for client in [
        "10.77.0.1",
        "10.9.0.1",
        "127.0.0.1",
        "::1",
        "::ffff:10.9.0.1",
    ] {
        assert_eq!(ask_from(&a, cross, client), todays, "{client}");
        assert_eq!(ask_from(&a, back, client), todays, "{client}");
    }
    // An IPv4-mapped address is its IPv4 client.
    assert_eq!(ask_from(&a, cross, "::ffff:10.1.0.10"), hit);
    // Names that exist are answered as they are.
    let m = ask_from(&a, "web-0.nginx.default.svc.cluster.local", "10.1.0.10");
    assert_eq!(m, (ResponseCode::NoError, false));
}
