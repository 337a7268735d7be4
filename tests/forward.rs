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

/// unbound's config: `port` on 127.0.0.1, a static zone `example.test`.
fn unbound_conf(port: u16, dir: &std::path::Path) -> String {
    format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  use-syslog: no\n  logfile: \"\"\n  chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  do-ip6: no\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  local-zone: \"example.test.\" static\n  local-data: \"example.test. 300 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 60\"\n  local-data: \"www.example.test. 300 IN A 192.0.2.10\"\n  local-data: \"api.example.test. 300 IN A 192.0.2.11\"\nremote-control:\n  control-enable: no\n",
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
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
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
