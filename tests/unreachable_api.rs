//! The Kubernetes API unreachable at start, with the real binary: not ready,
//! SERVFAIL (never NXDOMAIN), retries with a bounded backoff (no log flood),
//! no crash, and the kubeconfig's token never appears in the log.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::dns::{BOTH, query, rcode};
use support::process::{BIN, Running, free_port, loopback};
use support::{eventually, http, within};

const TOKEN: &str = "sekret-token-do-not-log-4242";

/// A kubeconfig for an API server at `127.0.0.1:port`, with [`TOKEN`].
fn kubeconfig(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\nusers:\n- name: u\n  user: {{token: {TOKEN}}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
    )
}

#[tokio::test]
async fn unreachable_api_server_means_servfail_backoff_and_no_secrets() {
    within(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        // An API address where nothing listens.
        let kubeconfig_path = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig_path, kubeconfig(free_port())).unwrap();
        let (dns, admin) = (free_port(), free_port());
        let log_path = dir.path().join("log");
        let mut child = Running::spawn(
            Command::new(BIN)
                .args(["serve", "--source", "kubernetes", "--kubeconfig"])
                .arg(&kubeconfig_path)
                .args(["--listen", &format!("127.0.0.1:{dns}")])
                .args(["--admin", &format!("127.0.0.1:{admin}")])
                .env("RUST_LOG", "debug")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log_path).unwrap()),
            "headless-dns serve",
        );
        let (dns_addr, admin_addr) = (loopback(dns), loopback(admin));
        // Up and answering (SERVFAIL), not ready.
        let (status, body) = eventually("the admin API to come up", || async {
            http::get(admin_addr, "/ready")
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        assert_eq!(status, 503, "{body}");
        let started = Instant::now();
        for proto in BOTH {
            let m = query(
                proto,
                dns_addr,
                "web-0.nginx.default.svc.cluster.local",
                RecordType::A,
            )
            .await;
            assert_eq!(
                rcode(&m),
                ResponseCode::ServFail,
                "never NXDOMAIN before the first sync"
            );
        }
        // Let it retry for a few seconds.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(child.exited().is_none(), "still running");
        assert_eq!(http::get(admin_addr, "/ready").await.unwrap().0, 503);
        drop(child);
        let log = std::fs::read_to_string(&log_path).unwrap();
        let failures = log.lines().filter(|l| l.contains("watch failed")).count();
        let secs = started.elapsed().as_secs_f64();
        eprintln!("{failures} watch-failure lines in {secs:.1} s");
        assert!(
            failures >= 4,
            "it retries (one line per failed attempt per kind): {failures}"
        );
        // Backoff: 4 watched kinds, attempts at most every 0.1 s doubling to 5 s.
        assert!(
            failures <= 4 * 12,
            "bounded by the backoff, no log flood: {failures} lines"
        );
        assert!(
            !log.contains(TOKEN),
            "the kubeconfig token must never be logged"
        );
    })
    .await;
}
