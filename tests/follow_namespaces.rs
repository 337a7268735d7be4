//! Per-namespace transfer zones (`<ns>.svc.<zone>`) and their followers:
//! zero-credential tenant sidecars. A primary on the file source with three
//! namespaces (team-a, team-b, and quiet with no services) serves each
//! namespace's zone with a serial of its own; a key confined to team-a takes
//! team-a's zone and nothing else; a follower of team-a's zone (our server
//! again, on the transfer source) answers team-a's names as the primary
//! does, hears of team-a's changes by a NOTIFY the primary sends to the
//! socket the follower checks from (the primary was told of no follower),
//! and hears nothing of team-b's. A restarted primary whose serial went
//! back is followed, and a NOTIFY signed with the wrong key changes nothing.
//! All real servers on loopback sockets; the first primary of the restart
//! test is the real binary (its serials are ahead of this process's).

mod support;
mod transfer_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use headless_dns::Config;
use headless_dns::config::{SourceKind, TsigKeyConfig};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType, TSigner};
use support::dns::{Answer, Proto, query, reverse_v4};
use support::process::{BIN, Running, free_port, loopback};
use support::server::{TestServer, metric, rewrite, test_config};
use support::{eventually, http, within};
use transfer_support::{SECRET, WRONG_SECRET, comparable, request, signer, soa_serial, tcp, udp};

const ZONE: &str = "cluster.local";
const LIMIT: Duration = Duration::from_secs(60);
/// The secret of `cluster-key`, which may transfer every zone.
const CLUSTER_SECRET: &str = "Y2x1c3Rlci1rZXktY2x1c3Rlci1rZXktY2x1c3Rlci1rZXkh";
const DB_0: &str = "db-0.db.team-a.svc.cluster.local";
const CACHE_0: &str = "cache-0.cache.team-b.svc.cluster.local";

/// Three namespaces: team-a (headless `db` with db-0 at `db0`, db-1; a
/// ClusterIP `api`), team-b (headless `cache` with cache-0 at `cache0`) and
/// quiet (no services).
fn manifests(db0: &str, cache0: &str) -> String {
    r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: v1
kind: Namespace
metadata: {name: quiet}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: team-a}
spec:
  clusterIP: None
  ports: [{name: pg, protocol: TCP, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: team-a
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, protocol: TCP, port: 5432}]
endpoints:
  - addresses: ["DB0"]
    hostname: db-0
    conditions: {ready: true}
  - addresses: ["10.2.0.11"]
    hostname: db-1
    conditions: {ready: true}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: team-a}
spec:
  type: ClusterIP
  clusterIP: 10.96.2.1
  ports: [{name: http, protocol: TCP, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: team-b}
spec:
  clusterIP: None
  ports: [{name: redis, protocol: TCP, port: 6379}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: cache-1
  namespace: team-b
  labels: {kubernetes.io/service-name: cache}
addressType: IPv4
ports: [{name: redis, protocol: TCP, port: 6379}]
endpoints:
  - addresses: ["CACHE0"]
    hostname: cache-0
    conditions: {ready: true}
"#
    .replace("DB0", db0)
    .replace("CACHE0", cache0)
}

fn key(name: &str, secret: &str, namespaces: &[&str]) -> TsigKeyConfig {
    TsigKeyConfig {
        name: name.into(),
        algorithm: "hmac-sha256".into(),
        secret: secret.into(),
        namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        key_file: None,
    }
}

/// `team-a-key` (team-a's zone only), `quiet-key` (quiet's only) and
/// `cluster-key` (every zone).
fn keys() -> Vec<TsigKeyConfig> {
    vec![
        key("team-a-key", SECRET, &["team-a"]),
        key("quiet-key", WRONG_SECRET, &["quiet"]),
        key("cluster-key", CLUSTER_SECRET, &[]),
    ]
}

fn team_a() -> TSigner {
    signer("team-a-key", SECRET)
}

fn cluster_key() -> TSigner {
    signer("cluster-key", CLUSTER_SECRET)
}

fn ns_zone(ns: &str) -> String {
    format!("{ns}.svc.{ZONE}")
}

/// A primary on [`manifests`], transfers allowed from loopback (unsigned
/// too), the keys of [`keys`], told of no secondary.
async fn primary(db0: &str, cache0: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::with_manifests(&manifests(db0, cache0), |c| {
        c.transfer.allow = vec!["127.0.0.1/32".parse().unwrap()];
        c.transfer.tsig = keys();
        tweak(c);
    })
    .await
}

/// A follower of `zone` at `primary`, signing with `key` (a name of
/// [`keys`]), checking every `refresh_ms`.
fn follower_config(primary: SocketAddr, zone: &str, key: &str, refresh_ms: u64) -> Config {
    let mut c = test_config(Vec::new());
    c.source.kind = SourceKind::Transfer;
    c.source.primary = Some(primary);
    c.source.primary_zone = Some(zone.into());
    c.source.primary_key = Some(key.into());
    c.source.refresh_ms = Some(refresh_ms);
    c.transfer.tsig = keys();
    c
}

fn served(kind: &str) -> String {
    format!("headless_dns_transfer_requests_total{{kind=\"{kind}\"}}")
}

const FOLLOW_NOTIFIES: &str = "headless_dns_follow_notify_total";

/// The serial of `zone` on `server`: the first SOA of its AXFR.
async fn serial(server: SocketAddr, zone: &str) -> u32 {
    let t = tcp(
        server,
        request(zone, RecordType::AXFR, None),
        Some(&cluster_key()),
    )
    .await;
    assert_eq!(t.rcode(), ResponseCode::NoError, "AXFR {zone}");
    soa_serial(&t.records()[0]).expect("an AXFR starts with the SOA")
}

fn owner(r: &Record) -> String {
    r.name.to_ascii().to_ascii_lowercase()
}

/// Whether `name` (lower-case, fully qualified) is `zone` or below it.
fn within_zone(name: &str, zone: &str) -> bool {
    let zone = format!("{zone}.");
    name == zone || name.ends_with(&format!(".{zone}"))
}

/// Zone-file lines of `records` without SOAs, sorted.
fn lines(records: &[Record], keep: impl Fn(&Record) -> bool) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .filter(|r| r.record_type() != RecordType::SOA && keep(r))
        .map(|r| r.to_string().to_ascii_lowercase())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_namespace_key_transfers_its_namespace_zone_and_nothing_else() {
    within(LIMIT, async {
        let p = primary("10.2.0.10", "10.3.0.10", |_| {}).await;
        let zone = ns_zone("team-a");
        let ours = tcp(
            p.dns,
            request(&zone, RecordType::AXFR, None),
            Some(&team_a()),
        )
        .await;
        assert_eq!(ours.rcode(), ResponseCode::NoError);
        assert!(ours.verified, "every message signed with team-a's key");
        let records = ours.records();
        let (first, last) = (&records[0], &records[records.len() - 1]);
        assert_eq!(owner(first), format!("{zone}."));
        assert_eq!(soa_serial(first), soa_serial(last), "SOA first and last");
        for r in &records {
            assert!(within_zone(&owner(r), &zone), "{r} is outside {zone}");
        }
        // Exactly the cluster zone's records below team-a, besides the apex
        // (the cluster zone has team-a's marker there: the namespace zone's
        // SOA says as much).
        let cluster = tcp(p.dns, request(ZONE, RecordType::AXFR, None), None).await;
        let apex = format!("{zone}.");
        let at_apex: Vec<RecordType> = cluster
            .records()
            .iter()
            .filter(|r| owner(r) == apex)
            .map(|r| r.record_type())
            .collect();
        assert_eq!(at_apex, [RecordType::Unknown(65280)]);
        let in_cluster = lines(&cluster.records(), |r| {
            within_zone(&owner(r), &zone) && owner(r) != apex
        });
        let in_ns = lines(&records, |r| owner(r) != apex);
        assert!(in_ns.len() >= 6, "db, db-0, db-1, SRVs, api: {in_ns:?}");
        assert_eq!(in_ns, in_cluster);
        assert!(
            in_ns
                .iter()
                .any(|l| l.starts_with(DB_0) && l.ends_with("10.2.0.10"))
        );
        assert!(
            !in_ns
                .iter()
                .any(|l| l.contains("team-b") || l.contains("10.3."))
        );

        // team-a's key: every other zone is REFUSED, signed (the signature is
        // good; the policy says no), whether it exists or not.
        let refusals = [
            (ns_zone("team-b"), RecordType::AXFR, None),
            (ns_zone("team-b"), RecordType::IXFR, Some(1)),
            (ZONE.to_string(), RecordType::AXFR, None),
            ("in-addr.arpa".to_string(), RecordType::AXFR, None),
            (ns_zone("nope"), RecordType::AXFR, None),
        ];
        for (z, qtype, s) in &refusals {
            let t = tcp(p.dns, request(z, *qtype, *s), Some(&team_a())).await;
            assert_eq!(t.rcode(), ResponseCode::Refused, "{qtype} {z}");
            assert!(t.verified, "the refusal of {qtype} {z} is signed");
            assert!(t.records().is_empty(), "{qtype} {z}: nothing of the zone");
        }
        let scope = "headless_dns_transfer_refused_total{reason=\"key_scope\"}";
        assert_eq!(metric(&p, scope).await, refusals.len() as f64);

        // A key without namespaces takes any namespace's zone; one that does
        // not exist is not ours (NOTAUTH). Unsigned clients in `allow` too.
        let b = tcp(
            p.dns,
            request(&ns_zone("team-b"), RecordType::AXFR, None),
            Some(&cluster_key()),
        )
        .await;
        assert_eq!(b.rcode(), ResponseCode::NoError);
        assert!(b.records().iter().any(|r| owner(r).starts_with(CACHE_0)));
        let nope = tcp(
            p.dns,
            request(&ns_zone("nope"), RecordType::AXFR, None),
            Some(&cluster_key()),
        )
        .await;
        assert_eq!(nope.rcode(), ResponseCode::NotAuth);
        let unsigned = tcp(p.dns, request(&zone, RecordType::AXFR, None), None).await;
        assert_eq!(unsigned.lines_without_soa(), ours.lines_without_soa());

        // The query path is unchanged: the namespace is a name of the
        // cluster zone there (NODATA, the cluster zone's SOA).
        for proto in [Proto::Udp, Proto::Tcp] {
            let m = query(proto, p.dns, &zone, RecordType::SOA).await;
            assert_eq!(Answer::of(&m), Answer::NoData, "{proto:?}");
            assert_eq!(owner(&m.authorities[0]), format!("{ZONE}."));
        }
    })
    .await;
}

#[tokio::test]
async fn a_namespace_zone_has_its_own_serial_and_differences() {
    within(LIMIT, async {
        let p = primary("10.2.0.10", "10.3.0.10", |_| {}).await;
        let (a0, b0, c0) = (
            serial(p.dns, &ns_zone("team-a")).await,
            serial(p.dns, &ns_zone("team-b")).await,
            serial(p.dns, ZONE).await,
        );
        // team-b changes: its serial and the cluster zone's move, team-a's not.
        rewrite(&p.manifest_path(), &manifests("10.2.0.10", "10.3.0.99"));
        p.wait_for_a(CACHE_0, Answer::ips(&["10.3.0.99".parse().unwrap()]))
            .await;
        let b1 = serial(p.dns, &ns_zone("team-b")).await;
        assert!(b1 > b0 && serial(p.dns, ZONE).await > c0);
        assert_eq!(serial(p.dns, &ns_zone("team-a")).await, a0);
        let current = tcp(
            p.dns,
            request(&ns_zone("team-a"), RecordType::IXFR, Some(a0)),
            Some(&team_a()),
        )
        .await;
        assert_eq!(current.records().len(), 1, "current: one SOA");
        assert_eq!(soa_serial(&current.records()[0]), Some(a0));

        // team-a changes: IXFR from its old serial has team-a's difference only.
        rewrite(&p.manifest_path(), &manifests("10.2.0.99", "10.3.0.99"));
        p.wait_for_a(DB_0, Answer::ips(&["10.2.0.99".parse().unwrap()]))
            .await;
        let a1 = serial(p.dns, &ns_zone("team-a")).await;
        assert!(a1 > a0);
        let ixfr = tcp(
            p.dns,
            request(&ns_zone("team-a"), RecordType::IXFR, Some(a0)),
            Some(&team_a()),
        )
        .await;
        let records = ixfr.records();
        let soas: Vec<u32> = records.iter().filter_map(soa_serial).collect();
        assert_eq!(soas, [a1, a0, a1, a1], "one condensed difference a0 -> a1");
        let second_new = records
            .iter()
            .enumerate()
            .filter(|(_, r)| soa_serial(r) == Some(a1))
            .nth(1)
            .map(|(i, _)| i)
            .unwrap();
        let removed = lines(&records[2..second_new], |_| true);
        let added = lines(&records[second_new + 1..records.len() - 1], |_| true);
        assert!(!removed.is_empty() && !added.is_empty());
        assert!(
            removed.iter().all(|l| l.ends_with("10.2.0.10")),
            "{removed:?}"
        );
        assert!(added.iter().all(|l| l.ends_with("10.2.0.99")), "{added:?}");
        for r in &records {
            assert!(within_zone(&owner(r), &ns_zone("team-a")), "{r}");
        }
        // An unknown serial gets the whole namespace zone; over UDP, a
        // current one gets its SOA.
        let full = tcp(
            p.dns,
            request(
                &ns_zone("team-a"),
                RecordType::IXFR,
                Some(a0.wrapping_sub(77)),
            ),
            Some(&team_a()),
        )
        .await;
        let axfr = tcp(
            p.dns,
            request(&ns_zone("team-a"), RecordType::AXFR, None),
            Some(&team_a()),
        )
        .await;
        assert_eq!(full.lines_without_soa(), axfr.lines_without_soa());
        assert!(served_kind(&p, "ixfr_full").await >= 1.0);
        let udp_check = udp(
            p.dns,
            request(&ns_zone("team-a"), RecordType::IXFR, Some(a1)),
            Some(&team_a()),
        )
        .await;
        assert!(udp_check.verified);
        let soa_only: Vec<u32> = udp_check.records().iter().filter_map(soa_serial).collect();
        assert_eq!((udp_check.records().len(), soa_only), (1, vec![a1]));
    })
    .await;
}

async fn served_kind(s: &TestServer, kind: &str) -> f64 {
    metric(s, &served(kind)).await
}

/// Asserts that `follower` answers every name of `zone` on `primary` (its
/// owners, their addresses' reverse names, missing names below it, the
/// apex) as `primary` does.
async fn assert_same_answers(primary: &TestServer, follower: &TestServer, zone: &str) {
    let axfr = tcp(
        primary.dns,
        request(zone, RecordType::AXFR, None),
        Some(&cluster_key()),
    )
    .await;
    let mut names: BTreeSet<String> = axfr.records().iter().map(owner).collect();
    let mut reverse = BTreeSet::new();
    for r in axfr.records() {
        if let hickory_proto::rr::RData::A(a) = &r.data {
            reverse.insert(reverse_v4(IpAddr::V4(a.0)));
        }
    }
    for missing in ["nope", "db-9.db", "_nope._tcp.db", "x.api"] {
        names.insert(format!("{missing}.{zone}."));
    }
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::CNAME,
        RecordType::SOA,
    ];
    let mut compared = 0;
    for name in &names {
        for t in types {
            let theirs = query(Proto::Udp, primary.dns, name, t).await;
            let ours = query(Proto::Udp, follower.dns, name, t).await;
            assert_eq!(comparable(&ours), comparable(&theirs), "{name} {t}");
            compared += 1;
        }
    }
    for name in &reverse {
        let theirs = query(Proto::Udp, primary.dns, name, RecordType::PTR).await;
        let ours = query(Proto::Udp, follower.dns, name, RecordType::PTR).await;
        assert_eq!(comparable(&ours), comparable(&theirs), "{name} PTR");
        compared += 1;
    }
    assert!(compared >= 20, "{compared} answers compared");
}

#[tokio::test]
async fn a_namespace_follower_answers_as_the_primary_and_follows_by_notify() {
    within(LIMIT, async {
        let p = primary("10.2.0.10", "10.3.0.10", |_| {}).await;
        // A refresh of a minute: only a NOTIFY brings a change in time. The
        // primary's `notify` list is empty: it learns the follower's socket.
        let f = TestServer::start(follower_config(
            p.dns,
            &ns_zone("team-a"),
            "team-a-key",
            60_000,
        ))
        .await;
        assert_same_answers(&p, &f, &ns_zone("team-a")).await;
        // Other namespaces do not exist here, as for a sidecar with
        // `namespaces = ["team-a"]`.
        for name in [
            CACHE_0,
            "team-b.svc.cluster.local",
            "quiet.svc.cluster.local",
        ] {
            assert_eq!(f.a(name).await, Answer::NxDomain, "{name}");
        }
        let notifies = metric(&f, FOLLOW_NOTIFIES).await;

        // team-b changes: nothing is sent to team-a's follower.
        rewrite(&p.manifest_path(), &manifests("10.2.0.10", "10.3.0.42"));
        p.wait_for_a(CACHE_0, Answer::ips(&["10.3.0.42".parse().unwrap()]))
            .await;
        // team-a changes: one NOTIFY, then the difference.
        rewrite(&p.manifest_path(), &manifests("10.2.0.42", "10.3.0.42"));
        f.wait_for_a(DB_0, Answer::ips(&["10.2.0.42".parse().unwrap()]))
            .await;
        assert_eq!(
            metric(&f, FOLLOW_NOTIFIES).await - notifies,
            1.0,
            "one NOTIFY: team-a's change, none for team-b's"
        );
        let acknowledged = "headless_dns_transfer_notify_total{result=\"acknowledged\"}";
        assert_eq!(metric(&p, acknowledged).await, 1.0);
        assert!(
            served_kind(&p, "ixfr").await >= 1.0,
            "the change came by IXFR"
        );
        assert_eq!(
            metric(&f, "headless_dns_follow_serial").await,
            f64::from(serial(p.dns, &ns_zone("team-a")).await)
        );
        assert_same_answers(&p, &f, &ns_zone("team-a")).await;
    })
    .await;
}

#[tokio::test]
async fn a_follower_of_a_namespace_without_services_answers_nodata_as_the_primary() {
    within(LIMIT, async {
        let p = primary("10.2.0.10", "10.3.0.10", |_| {}).await;
        let f = TestServer::start(follower_config(
            p.dns,
            &ns_zone("quiet"),
            "quiet-key",
            60_000,
        ))
        .await;
        let name = ns_zone("quiet");
        for t in [RecordType::A, RecordType::SRV, RecordType::SOA] {
            let theirs = query(Proto::Udp, p.dns, &name, t).await;
            let ours = query(Proto::Udp, f.dns, &name, t).await;
            assert_eq!(Answer::of(&ours), Answer::NoData, "{name} {t}");
            assert_eq!(comparable(&ours), comparable(&theirs), "{name} {t}");
        }
        assert_eq!(f.a(&format!("x.{name}")).await, Answer::NxDomain);
        assert_eq!(p.a(&format!("x.{name}")).await, Answer::NxDomain);
    })
    .await;
}

/// The real binary as a primary on `port`, its serials kept above
/// `floor` by a serial file; `dir` holds its files. Returns once `/ready`
/// says 200.
async fn binary_primary(dir: &std::path::Path, port: u16, floor: u32) -> Running {
    let manifests = dir.join("manifests.yaml");
    std::fs::write(&manifests, self::manifests("10.2.0.10", "10.3.0.10")).unwrap();
    let serial_file = dir.join("serial");
    std::fs::write(&serial_file, format!("{floor}\n")).unwrap();
    let key = |k: &TsigKeyConfig| {
        format!(
            "[[transfer.tsig]]\nname = {:?}\nsecret = {:?}\nnamespaces = {:?}\n",
            k.name, k.secret, k.namespaces
        )
    };
    let admin = loopback(free_port());
    let config = format!(
        "[dns]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 1\n\
         [admin]\nlisten = \"{admin}\"\n\
         [source]\nkind = \"file\"\nmanifests = [{manifests:?}]\npoll_interval_ms = 50\n\
         [sim]\nenabled = false\n\
         [transfer]\nallow = [\"127.0.0.1/32\"]\nserial_file = {serial_file:?}\n{keys}",
        keys = keys().iter().map(key).collect::<String>(),
    );
    let path = dir.join("primary.toml");
    std::fs::write(&path, config).unwrap();
    let running = Running::spawn(
        std::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn"),
        "the primary",
    );
    eventually("the primary's /ready to be 200", || async {
        match http::get(admin, "/ready").await {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    running
}

/// RFC 1982 leaves a secondary free to ignore a serial that went back (BIND
/// logs it and waits for `rndc retransfer`); a sidecar has no operator and
/// one primary, so ours takes the primary's whole zone instead.
#[tokio::test]
async fn a_primary_restarted_with_a_lower_serial_is_followed_again() {
    within(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        let high = now.wrapping_add(100_000_000);
        let first = binary_primary(dir.path(), port, high).await;
        let f = TestServer::spawn(follower_config(
            loopback(port),
            &ns_zone("team-a"),
            "team-a-key",
            200,
        ));
        f.wait_for_a(DB_0, Answer::ips(&["10.2.0.10".parse().unwrap()]))
            .await;
        let before = metric(&f, "headless_dns_follow_serial").await as u32;
        assert!(
            before > high,
            "the first primary's serial {before} is above {high}"
        );
        drop(first);
        // Restarted without its serial file (and in another process): its
        // serial follows the clock again, far below the follower's.
        let second = TestServer::with_manifests(&manifests("10.2.0.55", "10.3.0.10"), |c| {
            c.dns.listen = vec![loopback(port)];
            c.transfer.allow = vec!["127.0.0.1/32".parse().unwrap()];
            c.transfer.tsig = keys();
        })
        .await;
        let lower = serial(second.dns, &ns_zone("team-a")).await;
        assert!(lower < before);
        f.wait_for_a(DB_0, Answer::ips(&["10.2.0.55".parse().unwrap()]))
            .await;
        assert_eq!(metric(&f, "headless_dns_follow_serial").await as u32, lower);
        assert!(
            served_kind(&second, "axfr").await >= 1.0,
            "the whole zone, again"
        );
    })
    .await;
}

/// A NOTIFY for `zone`, signed with `key`, sent to `to` from loopback; the answer.
async fn notify(to: SocketAddr, zone: &str, key: &TSigner) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.add_query(Query::query(
        Name::from_ascii(format!("{zone}.")).unwrap(),
        RecordType::SOA,
    ));
    let _ = m.finalize(key, transfer_support::now()).unwrap();
    support::dns::exchange(Proto::Udp, to, &m).await
}

#[tokio::test]
async fn a_notify_with_the_wrong_key_or_zone_changes_nothing() {
    within(LIMIT, async {
        let p = primary("10.2.0.10", "10.3.0.10", |_| {}).await;
        let f = TestServer::start(follower_config(
            p.dns,
            &ns_zone("team-a"),
            "team-a-key",
            60_000,
        ))
        .await;
        let checks = served_kind(&p, "ixfr_current").await;
        let zone = ns_zone("team-a");
        let wrong = signer("team-a-key", WRONG_SECRET);
        let answer = notify(f.dns, &zone, &wrong).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NotAuth);
        let other_zone = notify(f.dns, &ns_zone("team-b"), &team_a()).await;
        assert_eq!(other_zone.metadata.response_code, ResponseCode::NotAuth);
        assert_eq!(metric(&f, FOLLOW_NOTIFIES).await, 0.0);
        // The right key: accepted, and the follower checks its serial.
        let answer = notify(f.dns, &zone, &team_a()).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.metadata.op_code, OpCode::Notify);
        assert_eq!(metric(&f, FOLLOW_NOTIFIES).await, 1.0);
        eventually("the follower to check its serial once", || async {
            match served_kind(&p, "ixfr_current").await - checks {
                1.0 => Ok(()),
                n => Err(format!("{n} checks")),
            }
        })
        .await;
        // Neither refused NOTIFY made it check (nothing more came since).
        assert_eq!(served_kind(&p, "ixfr_current").await - checks, 1.0);
    })
    .await;
}

/// A primary that reloads its configuration keeps the followers it learned:
/// the new configuration's first zone and every later change still reach a
/// follower whose refresh (a minute) is far off.
#[tokio::test]
async fn a_reloaded_primary_still_notifies_the_followers_it_learned() {
    within(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let primary = binary_primary(dir.path(), port, 1).await;
        let f = TestServer::spawn(follower_config(
            loopback(port),
            &ns_zone("team-a"),
            "team-a-key",
            60_000,
        ));
        f.wait_for_a(DB_0, Answer::ips(&["10.2.0.10".parse().unwrap()]))
            .await;
        // Another TTL: a new configuration, a new engine (SIGHUP).
        let path = dir.path().join("primary.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("threads = 1\n", "threads = 1\nttl = 7\n"),
        )
        .unwrap();
        primary.signal("-HUP");
        eventually("the primary to answer with the new TTL", || async {
            let m = query(Proto::Udp, loopback(port), DB_0, RecordType::A).await;
            match m.answers.first().map(|r| r.ttl) {
                Some(7) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        rewrite(
            &dir.path().join("manifests.yaml"),
            &manifests("10.2.0.66", "10.3.0.10"),
        );
        f.wait_for_a(DB_0, Answer::ips(&["10.2.0.66".parse().unwrap()]))
            .await;
        assert!(metric(&f, FOLLOW_NOTIFIES).await >= 1.0);
    })
    .await;
}
