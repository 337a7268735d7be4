//! Forwarding through a real upstream: Debian's unbound started on loopback
//! with a small local zone (installed by `.ci/test`).

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType::{A, SOA};
use support::dns::{Proto, TestServer, ip_strings, query, rcode, soa_negative_ttl};

/// The process, its address, and its directory (kept alive for its files).
struct Unbound(Child, SocketAddr, #[allow(dead_code)] tempfile::TempDir);
impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn unbound() -> Unbound {
    let dir = tempfile::tempdir().unwrap();
    let port = support::dns::free_port();
    let conf = dir.path().join("unbound.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  use-syslog: no\n  logfile: \"\"\n  chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  do-ip6: no\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  local-zone: \"example.test.\" static\n  local-data: \"example.test. 300 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 60\"\n  local-data: \"www.example.test. 300 IN A 192.0.2.10\"\n  local-data: \"api.example.test. 300 IN A 192.0.2.11\"\nremote-control:\n  control-enable: no\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let child = Command::new("unbound")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unbound is installed (.ci/test installs it)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let bytes = support::dns::message("www.example.test", A, None)
            .to_vec()
            .unwrap();
        if support::dns::exchange_raw(Proto::Udp, addr, &bytes)
            .await
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "unbound did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Unbound(child, addr, dir)
}

#[tokio::test]
async fn forwarding_through_a_real_upstream_with_cache() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let up = unbound().await;
        let upstream = up.1;
        let s = TestServer::with_manifests("", |c| {
            c.forward.upstreams = vec![upstream.to_string()];
            c.forward.timeout_ms = 500;
        })
        .await;
        for proto in [Proto::Udp, Proto::Tcp] {
            let m = s.query(proto, "www.example.test", A).await;
            assert_eq!(ip_strings(&m), ["192.0.2.10"], "{proto:?}");
            assert!(m.metadata.recursion_available);
            assert!(!m.metadata.authoritative);
        }
        let m = s.query(Proto::Udp, "nope.example.test", A).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
        assert!(
            soa_negative_ttl(&m).is_some(),
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
        // ... and an uncached name fails quickly with SERVFAIL.
        let started = Instant::now();
        let m = query(Proto::Udp, s.dns, "api.example.test", A).await;
        assert_eq!(rcode(&m), ResponseCode::ServFail);
        eprintln!("SERVFAIL after {:?}", started.elapsed());
        s.stop().await;
    })
    .await
    .expect("test timed out");
}

/// ExternalName services whose targets are outside our zones.
const EXTERNAL: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: upstream, namespace: default}\nspec: {type: ExternalName, externalName: www.example.test}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: nowhere, namespace: default}\nspec: {type: ExternalName, externalName: nope.example.test}\n";

#[tokio::test]
async fn externalname_out_of_zone_is_completed_through_the_forwarder() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let up = unbound().await;
        let upstream = up.1;
        let s = TestServer::with_manifests(EXTERNAL, |c| {
            c.forward.upstreams = vec![upstream.to_string()];
            c.forward.timeout_ms = 500;
        })
        .await;
        for proto in [Proto::Udp, Proto::Tcp] {
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
            assert!(soa_negative_ttl(&m).is_some(), "{m:?}");
        }
        s.stop().await;
    })
    .await
    .expect("test timed out");
}
