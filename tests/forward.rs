//! Forwarding through a real upstream: Debian's unbound started on loopback
//! with a small local zone (installed by `.ci/test`).

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType::{A, SOA};
use support::dns::{BOTH, Proto, authority_soa, ip_strings, rcode, try_query};
use support::process::{Running, free_port, loopback};
use support::server::TestServer;
use support::{eventually, within};

/// unbound's config: `port` on 127.0.0.1, a static zone `example.test`
/// (`short.example.test` with a 1 s TTL, for serve-stale).
fn unbound_conf(port: u16, dir: &std::path::Path) -> String {
    format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  use-syslog: no\n  logfile: \"\"\n  chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  do-ip6: no\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  local-zone: \"example.test.\" static\n  local-data: \"example.test. 300 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 60\"\n  local-data: \"www.example.test. 300 IN A 192.0.2.10\"\n  local-data: \"api.example.test. 300 IN A 192.0.2.11\"\n  local-data: \"short.example.test. 1 IN A 192.0.2.12\"\nremote-control:\n  control-enable: no\n",
        d = dir.display()
    )
}

/// The running unbound and its address; the process is killed and its
/// directory removed when this is dropped.
struct Unbound {
    addr: SocketAddr,
    _process: Running,
    _dir: tempfile::TempDir,
}

async fn unbound() -> Unbound {
    unbound_on(free_port()).await
}

/// unbound on `port` (again, after a stop).
async fn unbound_on(port: u16) -> Unbound {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("unbound.conf");
    std::fs::write(&conf, unbound_conf(port, dir.path())).unwrap();
    let child = Running::spawn(
        Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "unbound (.ci/test installs it)",
    );
    let addr = loopback(port);
    eventually("unbound to answer", || async {
        try_query(Proto::Udp, addr, "www.example.test", A)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    Unbound {
        addr,
        _process: child,
        _dir: dir,
    }
}

/// The forwarder's upstream timeout in these tests.
const TIMEOUT_MS: u64 = 500;

#[tokio::test]
async fn forwarding_through_a_real_upstream_with_cache() {
    within(Duration::from_secs(60), async {
        let up = unbound().await;
        let upstream = up.addr;
        let s = TestServer::with_manifests("", |c| {
            c.forward.upstreams = vec![upstream.to_string()];
            c.forward.timeout_ms = TIMEOUT_MS;
        })
        .await;
        for proto in BOTH {
            let m = s.query(proto, "www.example.test", A).await;
            assert_eq!(ip_strings(&m), ["192.0.2.10"], "{proto:?}");
            assert!(m.metadata.recursion_available);
            assert!(!m.metadata.authoritative);
        }
        let m = s.query(Proto::Udp, "nope.example.test", A).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
        assert!(
            authority_soa(&m).is_some(),
            "negative answer carries the upstream SOA"
        );
        // Cluster names are still ours, authoritative.
        let m = s.query(Proto::Udp, "cluster.local", SOA).await;
        assert!(m.metadata.authoritative);

        // Upstream gone: the cached answer is still served ...
        drop(up);
        let m = s.query(Proto::Udp, "www.example.test", A).await;
        assert_eq!(
            ip_strings(&m),
            ["192.0.2.10"],
            "second answer from the cache"
        );
        // ... and an uncached name fails quickly with SERVFAIL: within the
        // upstream timeout plus a generous 2 s for scheduling (a correctness
        // bound: a forwarder that hangs or retries without end fails it).
        let started = Instant::now();
        let m = s.query(Proto::Udp, "api.example.test", A).await;
        let took = started.elapsed();
        assert_eq!(rcode(&m), ResponseCode::ServFail);
        let bound = Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(2);
        assert!(took < bound, "SERVFAIL after {took:?}, want < {bound:?}");
        eprintln!("SERVFAIL after {took:?}");
        s.stop().await;
    })
    .await;
}

/// The TTLs of a response's answers.
fn ttls(m: &hickory_proto::op::Message) -> Vec<u32> {
    m.answers.iter().map(|r| r.ttl).collect()
}

/// Serve-stale (RFC 8767): with the upstream stopped, a name answered before
/// (its 1 s TTL run out) is answered from the expired answer with the stale
/// TTL, within the upstream timeout, over UDP and TCP, and counted; a name
/// never answered gets SERVFAIL; once the upstream is back the answer is
/// fresh again.
#[tokio::test]
async fn serve_stale_while_the_upstream_is_down_then_fresh_again() {
    within(Duration::from_secs(60), async {
        let port = free_port();
        let up = unbound_on(port).await;
        let upstream = up.addr;
        let s = TestServer::with_manifests("", |c| {
            c.forward.upstreams = vec![upstream.to_string()];
            c.forward.timeout_ms = TIMEOUT_MS;
            c.forward.stale_max_s = 60;
            c.forward.stale_ttl_s = 7;
        })
        .await;
        let m = s.query(Proto::Udp, "short.example.test", A).await;
        assert_eq!(ip_strings(&m), ["192.0.2.12"]);
        assert!(ttls(&m).iter().all(|t| *t <= 1), "{m:?}");

        drop(up);
        // Past the 1 s TTL: hickory's cache no longer has it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for proto in BOTH {
            let started = Instant::now();
            let m = s.query(proto, "short.example.test", A).await;
            let took = started.elapsed();
            assert_eq!(rcode(&m), ResponseCode::NoError, "{proto:?}: {m:?}");
            assert_eq!(ip_strings(&m), ["192.0.2.12"], "{proto:?}");
            assert_eq!(ttls(&m), [7], "{proto:?}: the stale TTL");
            // A correctness bound, as above: the stale answer goes out when
            // the upstream timeout runs out, not after some retry schedule.
            let bound = Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(2);
            assert!(
                took < bound,
                "{proto:?}: stale after {took:?}, want < {bound:?}"
            );
            eprintln!("{proto:?}: stale answer after {took:?}");
        }
        let m = s.query(Proto::Udp, "api.example.test", A).await;
        assert_eq!(rcode(&m), ResponseCode::ServFail, "never answered: {m:?}");
        let (_, metrics) = support::http::get(s.admin, "/metrics").await.unwrap();
        assert_eq!(sum_of(&metrics, "headless_dns_forward_stale_total"), 2.0);

        // The upstream back on the same port: fresh answers again (TTL 1).
        let _up = unbound_on(port).await;
        eventually("a fresh answer once the upstream is back", || async {
            let m = s.query(Proto::Udp, "short.example.test", A).await;
            match (ip_strings(&m).as_slice(), ttls(&m).as_slice()) {
                ([ip], [ttl]) if ip == "192.0.2.12" && *ttl <= 1 => Ok(()),
                _ => Err(format!("{m:?}")),
            }
        })
        .await;
        s.stop().await;
    })
    .await;
}

/// ExternalName services whose targets are outside our zones.
const EXTERNAL: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: upstream, namespace: default}\nspec: {type: ExternalName, externalName: www.example.test}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: nowhere, namespace: default}\nspec: {type: ExternalName, externalName: nope.example.test}\n";

#[tokio::test]
async fn externalname_out_of_zone_is_completed_through_the_forwarder() {
    within(Duration::from_secs(60), async {
        let up = unbound().await;
        let upstream = up.addr;
        let s = TestServer::with_manifests(EXTERNAL, |c| {
            c.forward.upstreams = vec![upstream.to_string()];
            c.forward.timeout_ms = TIMEOUT_MS;
        })
        .await;
        for proto in BOTH {
            let name = "upstream.default.svc.cluster.local";
            let m = s.query(proto, name, A).await;
            let got: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
            assert_eq!(got, ["www.example.test.", "192.0.2.10"], "{proto:?}: {m:?}");
            assert_eq!(m.answers[0].name.to_ascii(), format!("{name}."));
            assert_eq!(m.answers[1].name.to_ascii(), "www.example.test.");
            assert_eq!(rcode(&m), ResponseCode::NoError);
            // A target upstream does not know: our CNAME, its NXDOMAIN and SOA.
            let m = s.query(proto, "nowhere.default.svc.cluster.local", A).await;
            assert_eq!(rcode(&m), ResponseCode::NXDomain, "{proto:?}: {m:?}");
            assert_eq!(m.answers.len(), 1);
            assert!(authority_soa(&m).is_some(), "{m:?}");
        }
        s.stop().await;
    })
    .await;
}

/// The sum of the series of `name` (every label set) in a Prometheus text.
fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// (requests, responses + dropped, SERVFAIL responses) from `/metrics`.
async fn query_counters(admin: SocketAddr) -> (f64, f64, f64) {
    let (_, m) = support::http::get(admin, "/metrics").await.unwrap();
    let servfail = sum_of(
        &m,
        "headless_dns_dns_responses_total{proto=\"udp\",rcode=\"SERVFAIL\"}",
    );
    (
        sum_of(&m, "headless_dns_dns_requests_total"),
        sum_of(&m, "headless_dns_dns_responses_total")
            + sum_of(&m, "headless_dns_dns_dropped_total"),
        servfail,
    )
}

/// Waits until every one of `n` queries has its response counted (forwarded
/// answers are counted when they go out) and returns the counters.
async fn settled(admin: SocketAddr, n: f64) -> (f64, f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = query_counters(admin).await;
        if c.1 >= n || Instant::now() > deadline {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every query is counted once by type and every response once by rcode,
/// whichever path answered it: local, forwarded (UDP and TCP), refused,
/// malformed, dropped.
#[tokio::test]
async fn metrics_count_every_path_once() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let up = unbound().await;
        let s = TestServer::with_manifests("", |c| {
            c.forward.upstreams = vec![up.addr.to_string()];
        })
        .await;
        let before = query_counters(s.admin).await;
        let mut n = 0.0;
        for (proto, name, rtype) in [
            (Proto::Udp, "cluster.local", SOA),
            (Proto::Tcp, "nope.default.svc.cluster.local", A),
            (Proto::Udp, "www.example.test", A),
            (Proto::Tcp, "api.example.test", A),
            (Proto::Udp, "nope.example.test", A),
            (
                Proto::Tcp,
                "cluster.local",
                hickory_proto::rr::RecordType::AXFR,
            ),
        ] {
            s.query(proto, name, rtype).await;
            n += 1.0;
        }
        // A header with no question (FORMERR) and a runt (dropped unanswered).
        let formerr = [0x12, 0x34, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(
            support::dns::exchange_raw(Proto::Udp, s.dns, &formerr)
                .await
                .is_some()
        );
        let _ = support::dns::exchange_raw(Proto::Udp, s.dns, &[0x12, 0x34, 1]).await;
        n += 2.0;
        let after = settled(s.admin, before.1 + n).await;
        assert_eq!(after.0 - before.0, n - 1.0, "requests: all but the runt");
        assert_eq!(after.1 - before.1, n, "responses + dropped");
        s.stop().await;
    })
    .await
    .expect("test timed out");
}

/// With the forward queue full, the SERVFAILs sent at once are counted too.
#[tokio::test]
async fn metrics_count_queue_full_servfails() {
    tokio::time::timeout(Duration::from_secs(60), async {
        // An upstream that never answers: forwarded queries wait for the timeout.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let upstream = silent.local_addr().unwrap();
        let s = TestServer::with_manifests("", |c| {
            c.forward.upstreams = vec![upstream.to_string()];
            c.forward.timeout_ms = 300;
            c.forward.max_inflight = 1;
        })
        .await;
        let before = query_counters(s.admin).await;
        const N: u16 = 20;
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..N {
            let mut m = support::dns::message(&format!("q{i}.example.test"), A, None);
            m.metadata.id = i;
            client.send_to(&m.to_vec().unwrap(), s.dns).await.unwrap();
        }
        let after = settled(s.admin, before.1 + f64::from(N)).await;
        assert_eq!(after.0 - before.0, f64::from(N), "requests");
        assert_eq!(after.1 - before.1, f64::from(N), "responses + dropped");
        assert!(
            after.2 - before.2 >= f64::from(N) - 2.0,
            "queue-full and timed-out queries are SERVFAILs: {after:?} {before:?}"
        );
        drop(silent);
        s.stop().await;
    })
    .await
    .expect("test timed out");
}

/// Sends `n` queries for `name` from one socket as fast as it can and counts
/// the responses that come back within `window`.
async fn burst(server: SocketAddr, name: &str, n: u16, window: Duration) -> usize {
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..n {
        let mut m = support::dns::message(name, A, None);
        m.metadata.id = i;
        client.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    }
    let mut got = 0;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, client.recv_from(&mut buf)).await {
        got += 1;
    }
    got
}

/// With RRL on, forwarded answers and the SERVFAILs of a full forward queue
/// go through the limiter like local ones: a burst gets limited.
#[tokio::test]
async fn rrl_limits_forwarded_answers_and_queue_full_servfails() {
    tokio::time::timeout(Duration::from_secs(60), async {
        const N: u16 = 40;
        let up = unbound().await;
        let s = TestServer::with_manifests("", |c| {
            c.forward.upstreams = vec![up.addr.to_string()];
            c.dns.rrl_responses_per_second = 5;
            c.dns.rrl_slip = 0;
        })
        .await;
        let got = burst(s.dns, "www.example.test", N, Duration::from_millis(1500)).await;
        assert!(got > 0, "some forwarded answers within the budget");
        assert!(
            got <= 20,
            "{got} of {N} forwarded answers sent: not limited"
        );
        s.stop().await;

        // An upstream that never answers and a queue of one: nearly every
        // query gets the queue-full SERVFAIL, and those are limited too.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let upstream = silent.local_addr().unwrap();
        let s = TestServer::with_manifests("", |c| {
            c.forward.upstreams = vec![upstream.to_string()];
            c.forward.timeout_ms = 5000;
            c.forward.max_inflight = 1;
            c.dns.rrl_responses_per_second = 5;
            c.dns.rrl_slip = 0;
        })
        .await;
        let got = burst(s.dns, "q.example.test", N, Duration::from_millis(1000)).await;
        assert!(got > 0, "some SERVFAILs within the budget");
        assert!(
            got <= 15,
            "{got} of {N} queue-full SERVFAILs sent: not limited"
        );
        drop(silent);
        s.stop().await;
    })
    .await
    .expect("test timed out");
}
