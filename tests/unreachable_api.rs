//! The Kubernetes API unreachable at start, with the real binary: not ready,
//! SERVFAIL (never NXDOMAIN), retries with a bounded backoff (no log flood),
//! no crash, and the kubeconfig's token never appears in the log.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::dns::{Proto, http, query, rcode};

const BIN: &str = env!("CARGO_BIN_EXE_headless-dns");
const TOKEN: &str = "sekret-token-do-not-log-4242";

#[tokio::test]
async fn unreachable_api_server_means_servfail_backoff_and_no_secrets() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        // An API address where nothing listens.
        let closed = support::dns::free_port();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://127.0.0.1:{closed}\"}}\nusers:\n- name: u\n  user: {{token: {TOKEN}}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
            ),
        )
        .unwrap();
        let (dns, admin) = (support::dns::free_port(), support::dns::free_port());
        let log_path = dir.path().join("log");
        let mut child = Command::new(BIN)
            .args(["serve", "--source", "kubernetes", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{dns}"), "--admin", &format!("127.0.0.1:{admin}")])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let dns_addr = format!("127.0.0.1:{dns}").parse().unwrap();
        let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
        // Up and answering (SERVFAIL), not ready.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((status, body)) = http(admin_addr, "GET", "/ready").await {
                assert_eq!(status, 503, "{body}");
                break;
            }
            assert!(Instant::now() < deadline, "admin never came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        for proto in [Proto::Udp, Proto::Tcp] {
            let m = query(proto, dns_addr, "web-0.nginx.default.svc.cluster.local", RecordType::A).await;
            assert_eq!(rcode(&m), ResponseCode::ServFail, "never NXDOMAIN before the first sync");
        }
        // Let it retry for a few seconds.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(child.try_wait().unwrap().is_none(), "still running");
        assert_eq!(http(admin_addr, "GET", "/ready").await.unwrap().0, 503);
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap();
        let failures = log.lines().filter(|l| l.contains("watch failed")).count();
        let secs = started.elapsed().as_secs_f64();
        eprintln!("{failures} watch-failure lines in {secs:.1} s");
        assert!(failures >= 4, "it retries (one line per failed attempt per kind): {failures}");
        // Backoff: 4 watched kinds, attempts at most every 0.1 s doubling to 5 s.
        assert!(failures <= 4 * 12, "bounded by the backoff, no log flood: {failures} lines");
        assert!(!log.contains(TOKEN), "the kubeconfig token must never be logged");
    })
    .await
    .expect("test timed out");
}
