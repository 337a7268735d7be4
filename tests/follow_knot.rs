//! Our follower following Knot: `knotd` is the primary of an ordinary zone
//! file of Kubernetes-shaped names, written here by hand (a headless
//! service of a StatefulSet with a dual-stack pod and a named port, a
//! headless service whose pods have no hostname, a ClusterIP service, an
//! ExternalName), and our server follows it on the transfer source. It
//! loads the zone by AXFR and answers those names as the Kubernetes DNS
//! spec says (and as Knot itself does), reverse names included, derived
//! from the endpoints. Then the zone file changes and `knotc zone-reload`
//! makes Knot compute the differences (`zonefile-load: difference`) and
//! NOTIFY us: we follow by IXFR (our counters show it, and Knot's log),
//! and the page's JSON shows the primary and serial. Our serial checks are
//! IXFRs over UDP, which Knot answers with its SOA alone (RFC 1995 §2).
//!
//! `knotd`/`knotc` come from Debian's `knot` (`.ci/test` installs it);
//! without them the test fails, it does not skip.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use headless_dns::Config;
use headless_dns::config::SourceKind;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use support::dns::{Proto, ip_strings, ptr_targets, query};
use support::process::{free_port, loopback};
use support::server::{TestServer, metric, test_config};
use support::{eventually, http, within};

const LIMIT: Duration = Duration::from_secs(90);

/// The zone at serial 1. `shop/db`: headless, StatefulSet `db` (db-0
/// dual-stack, db-1), port `pg`/TCP 5432. `shop/jobs`: headless, pods
/// without a hostname (dashed labels), no ports. `shop/api`: ClusterIP
/// 10.96.5.5, port `http`/TCP 80. `shop/ext`: ExternalName example.com.
/// SRV weights as the spec's implementation (CoreDNS) splits them.
const ZONE_V1: &str = "\
$ORIGIN cluster.local.
$TTL 5
@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5
@ IN NS ns.dns.cluster.local.
ns.dns IN A 10.96.0.10
db.shop.svc IN A 10.244.1.10
db.shop.svc IN A 10.244.2.11
db.shop.svc IN AAAA fd00::10
db-0.db.shop.svc IN A 10.244.1.10
db-0.db.shop.svc IN AAAA fd00::10
db-1.db.shop.svc IN A 10.244.2.11
_pg._tcp.db.shop.svc IN SRV 0 50 5432 db-0.db.shop.svc
_pg._tcp.db.shop.svc IN SRV 0 50 5432 db-1.db.shop.svc
db.shop.svc IN SRV 0 50 5432 db-0.db.shop.svc
db.shop.svc IN SRV 0 50 5432 db-1.db.shop.svc
jobs.shop.svc IN A 10.244.3.7
10-244-3-7.jobs.shop.svc IN A 10.244.3.7
api.shop.svc IN A 10.96.5.5
_http._tcp.api.shop.svc IN SRV 0 100 80 api.shop.svc
api.shop.svc IN SRV 0 100 80 api.shop.svc
ext.shop.svc IN CNAME example.com.
";

/// Serial 2: db-1 recreated with a new address, db-2 added (scale-up),
/// the ExternalName pointed elsewhere.
fn zone_v2() -> String {
    ZONE_V1
        .replace(" 1 7200 1800", " 2 7200 1800")
        .replace("10.244.2.11", "10.244.2.12")
        .replace("SRV 0 50", "SRV 0 33")
        .replace("example.com.", "example.org.")
        + "db.shop.svc IN A 10.244.1.20\n\
           db-2.db.shop.svc IN A 10.244.1.20\n\
           _pg._tcp.db.shop.svc IN SRV 0 33 5432 db-2.db.shop.svc\n\
           db.shop.svc IN SRV 0 33 5432 db-2.db.shop.svc\n"
}

const DB_1: &str = "db-1.db.shop.svc.cluster.local";

/// Knot as the primary of `cluster.local` from a zone file, NOTIFYing
/// `notify`; killed on drop.
struct Knot {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Knot {
    fn start(zone: &str, notify: SocketAddr) -> Knot {
        let bin = "/usr/sbin/knotd";
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: install Debian package knot (.ci/test does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        // Differences between the reloaded file and the zone Knot holds go
        // to its journal, from which it answers IXFR.
        let conf = format!(
            "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{port}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n\
             log:\n  - target: \"{d}/knot.log\"\n    any: debug\n\
             database:\n  storage: \"{d}/db\"\n\
             remote:\n  - id: follower\n    address: {}@{}\n\
             acl:\n  - id: transfer\n    address: 127.0.0.1\n    action: transfer\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    zonefile-load: difference\n    journal-content: changes\n\
             zone:\n  - domain: cluster.local\n    file: cluster.local.zone\n    notify: follower\n    acl: transfer\n",
            notify.ip(),
            notify.port()
        );
        std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
        // The journal's database: without it a reload cannot keep differences.
        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("cluster.local.zone"), zone).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("start knotd");
        Knot {
            addr: loopback(port),
            dir,
            child,
        }
    }

    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("knot.log"), read("stderr.log"))
    }

    /// Writes the zone file anew and has Knot reload it.
    fn reload(&self, zone: &str) {
        std::fs::write(self.dir.path().join("cluster.local.zone"), zone).unwrap();
        let out = Command::new("knotc")
            .arg("-s")
            .arg(self.dir.path().join("knot.sock"))
            .args(["zone-reload", "cluster.local"])
            .output()
            .expect("knotc runs (Debian package knot)");
        assert!(
            out.status.success(),
            "knotc zone-reload: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Waits until Knot serves the zone at `serial`.
    async fn wait_serial(&self, serial: u32) {
        eventually(&format!("knot to serve serial {serial}"), || async {
            let m =
                support::dns::try_query(Proto::Udp, self.addr, "cluster.local", RecordType::SOA)
                    .await
                    .map_err(|e| format!("{e}; log:\n{}", self.log()))?;
            match m.answers.first().map(|r| &r.data) {
                Some(RData::SOA(s)) if s.serial == serial => Ok(()),
                other => Err(format!("{other:?}; log:\n{}", self.log())),
            }
        })
        .await;
    }
}

fn follower_config(primary: SocketAddr, port: u16) -> Config {
    let mut c = test_config(Vec::new());
    c.dns.listen = vec![loopback(port)];
    c.source.kind = SourceKind::Transfer;
    c.source.primary = Some(primary);
    // A refresh of a minute: only Knot's NOTIFY brings the change in time.
    c.source.refresh_ms = Some(60_000);
    c
}

fn transfers(kind: &str) -> String {
    format!("headless_dns_follow_transfers_total{{kind=\"{kind}\"}}")
}

/// The answer section as sorted lines (owner, TTL, type, data), lower-case.
fn answer_lines(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .map(|r| r.to_string().to_ascii_lowercase())
        .collect();
    v.sort();
    v
}

/// SRV answers as sorted `port target` strings.
fn srv(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(format!("{} {}", s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Asserts our answers for every owner name of `zone` (and a missing one)
/// are Knot's, for every type a Kubernetes name has.
async fn assert_same_as_knot(knot: &Knot, ours: &TestServer, zone: &str) {
    let owners: BTreeSet<String> = zone
        .lines()
        .filter(|l| l.contains(".svc "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|o| format!("{o}.cluster.local"))
        .chain(["nope.db.shop.svc.cluster.local".to_string()])
        .collect();
    assert!(owners.len() >= 8, "{owners:?}");
    for name in &owners {
        for rtype in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::CNAME,
        ] {
            let theirs = query(Proto::Udp, knot.addr, name, rtype).await;
            let got = query(Proto::Udp, ours.dns, name, rtype).await;
            assert_eq!(
                (got.metadata.response_code, answer_lines(&got)),
                (theirs.metadata.response_code, answer_lines(&theirs)),
                "{name} {rtype}: ours vs Knot's"
            );
        }
    }
}

/// What the spec says for the serial-1 names (no answer is Knot's here).
async fn assert_spec_answers(s: &TestServer) {
    let q = |name: &'static str, t: RecordType| query(Proto::Udp, s.dns, name, t);
    let base = "db.shop.svc.cluster.local";
    // Headless: the service name answers every ready pod's address.
    let m = q(base, RecordType::A).await;
    assert_eq!(sorted(ip_strings(&m)), ["10.244.1.10", "10.244.2.11"]);
    assert_eq!(ip_strings(&q(base, RecordType::AAAA).await), ["fd00::10"]);
    // Each pod by hostname, both families.
    let m = q("db-0.db.shop.svc.cluster.local", RecordType::A).await;
    assert_eq!(ip_strings(&m), ["10.244.1.10"]);
    let m = q("db-0.db.shop.svc.cluster.local", RecordType::AAAA).await;
    assert_eq!(ip_strings(&m), ["fd00::10"]);
    // A named port's SRV: one per pod, targeting its hostname.
    let m = q("_pg._tcp.db.shop.svc.cluster.local", RecordType::SRV).await;
    assert_eq!(
        srv(&m),
        [
            "5432 db-0.db.shop.svc.cluster.local.",
            "5432 db-1.db.shop.svc.cluster.local."
        ]
    );
    // A pod without a hostname: its dashed address.
    let m = q("10-244-3-7.jobs.shop.svc.cluster.local", RecordType::A).await;
    assert_eq!(ip_strings(&m), ["10.244.3.7"]);
    // ClusterIP: the cluster IP, and SRV targeting the service.
    let m = q("api.shop.svc.cluster.local", RecordType::A).await;
    assert_eq!(ip_strings(&m), ["10.96.5.5"]);
    let m = q("_http._tcp.api.shop.svc.cluster.local", RecordType::SRV).await;
    assert_eq!(srv(&m), ["80 api.shop.svc.cluster.local."]);
    // ExternalName: a CNAME.
    let m = q("ext.shop.svc.cluster.local", RecordType::CNAME).await;
    assert!(
        matches!(&m.answers[..], [r] if matches!(&r.data, RData::CNAME(c) if c.0.to_ascii() == "example.com.")),
        "{m:?}"
    );
    // Reverse names, which the zone does not carry: from the endpoints.
    let m = q("10.1.244.10.in-addr.arpa", RecordType::PTR).await;
    assert_eq!(ptr_targets(&m), ["db-0.db.shop.svc.cluster.local"]);
    let m = q("7.3.244.10.in-addr.arpa", RecordType::PTR).await;
    assert_eq!(ptr_targets(&m), ["10-244-3-7.jobs.shop.svc.cluster.local"]);
    let m = q("5.5.96.10.in-addr.arpa", RecordType::PTR).await;
    assert_eq!(ptr_targets(&m), ["api.shop.svc.cluster.local"]);
    // Names that do not exist.
    let m = q("db-5.db.shop.svc.cluster.local", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn our_follower_follows_a_knot_primary_by_axfr_then_notify_and_ixfr() {
    within(LIMIT, async {
        let port = free_port();
        let knot = Knot::start(ZONE_V1, loopback(port));
        knot.wait_serial(1).await;
        let ours = TestServer::start(follower_config(knot.addr, port)).await;
        assert_eq!(metric(&ours, &transfers("axfr")).await, 1.0);
        assert_spec_answers(&ours).await;
        assert_same_as_knot(&knot, &ours, ZONE_V1).await;

        let v2 = zone_v2();
        knot.reload(&v2);
        knot.wait_serial(2).await;
        ours.wait_for(DB_1, RecordType::A, "db-1's new address", |m| {
            ip_strings(m) == ["10.244.2.12"]
        })
        .await;
        assert_same_as_knot(&knot, &ours, &v2).await;
        let m = query(
            Proto::Udp,
            ours.dns,
            "_pg._tcp.db.shop.svc.cluster.local",
            RecordType::SRV,
        )
        .await;
        assert_eq!(srv(&m).len(), 3, "{m:?}");
        // By NOTIFY and differences, not a second whole zone.
        assert!(metric(&ours, "headless_dns_follow_notify_total").await >= 1.0);
        assert_eq!(metric(&ours, &transfers("ixfr")).await, 1.0);
        assert_eq!(metric(&ours, &transfers("axfr")).await, 1.0);
        assert_eq!(metric(&ours, "headless_dns_follow_serial").await, 2.0);
        assert!(
            knot.log().contains("IXFR, outgoing"),
            "Knot sent no IXFR:\n{}",
            knot.log()
        );
        // Our serial checks are IXFRs over UDP (a primary of ours learns
        // from them where to NOTIFY); Knot answers one with its SOA alone,
        // the serial the check wants, and no check failed.
        let answer = ixfr_over_udp(knot.addr, 1).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        let serials: Vec<u32> = answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SOA(soa) => Some(soa.serial),
                _ => None,
            })
            .collect();
        assert_eq!(serials.first(), Some(&2), "{answer:?}");
        assert_eq!(
            metric(&ours, "headless_dns_follow_failures_total").await,
            0.0
        );
        // The page's JSON: whom we follow, at which serial, not expired.
        let (status, body) = http::get(ours.admin, "/records").await.unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let f = &v["follow"];
        assert_eq!(f["primary"], knot.addr.to_string(), "{f}");
        assert_eq!(
            (f["serial"].as_u64(), f["primary_serial"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(f["expired"], false);
        assert_eq!(f["transfers"]["ixfr"], 1);
        assert!(f["lag_ms"].as_u64().unwrap() < 60_000, "{f}");
    })
    .await;
}

/// Knot's answer to an IXFR over UDP from `serial`.
async fn ixfr_over_udp(server: SocketAddr, serial: u32) -> Message {
    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::SOA;
    use hickory_proto::rr::{Name, Record};
    let zone = Name::from_ascii("cluster.local.").unwrap();
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(zone.clone(), RecordType::IXFR));
    let soa = SOA::new(Name::root(), Name::root(), serial, 0, 0, 0, 0);
    m.add_authority(Record::from_rdata(zone, 0, RData::SOA(soa)));
    support::dns::exchange(Proto::Udp, server, &m).await
}
