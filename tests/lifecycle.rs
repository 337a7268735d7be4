//! Reload and shutdown of the real binary: a changed config file (or SIGHUP)
//! is applied without a gap, a broken one is refused while the running config
//! stays, a new listen address is bound, and SIGTERM drains (readiness 503
//! first) and exits 0 with queries in flight.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType::A;
use support::dns::{Proto, http, query};

const BIN: &str = env!("CARGO_BIN_EXE_headless-dns");
const MANIFEST: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: nginx, namespace: default}\nspec: {clusterIP: None}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: n1, namespace: default, labels: {kubernetes.io/service-name: nginx}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1], hostname: web-0}]\n";

fn config(dns: u16, admin: u16, manifest: &std::path::Path, extra: &str) -> String {
    format!(
        "[dns]\nlisten = [\"127.0.0.1:{dns}\"]\nthreads = 1\n{extra}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nlameduck_ms = 800\n[source]\nmanifests = [\"{}\"]\n[sim]\nenabled = false\n",
        manifest.display()
    )
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

async fn wait_answer(
    addr: SocketAddr,
    name: &str,
    what: &str,
    check: impl Fn(&hickory_proto::op::Message) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let bytes = support::dns::message(name, A, None).to_vec().unwrap();
        if let Some(r) = support::dns::exchange_raw(Proto::Udp, addr, &bytes).await {
            let m = hickory_proto::op::Message::from_vec(&r).unwrap();
            if check(&m) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reload_on_change_and_sighup_and_graceful_shutdown() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.yaml");
        std::fs::write(&manifest, MANIFEST).unwrap();
        let cfg = dir.path().join("c.toml");
        let (dns, admin) = (support::dns::free_port(), support::dns::free_port());
        let dns_addr: SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
        let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        std::fs::write(&cfg, config(dns, admin, &manifest, "ttl = 5")).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Server(child);
        let name = "web-0.nginx.default.svc.cluster.local";
        wait_answer(dns_addr, name, "first answer", |m| {
            m.answers.first().is_some_and(|r| r.ttl == 5)
        })
        .await;

        // Saving the file reloads it: the TTL changes, answers never stop.
        std::fs::write(&cfg, config(dns, admin, &manifest, "ttl = 7")).unwrap();
        wait_answer(dns_addr, name, "TTL 7 after the file changed", |m| {
            m.answers.first().is_some_and(|r| r.ttl == 7)
        })
        .await;

        // A broken config: reported, and the running one stays.
        std::fs::write(&cfg, config(dns, admin, &manifest, "ttl = \"seven\"")).unwrap();
        signal(&server.0, "-HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
            if log.contains("reload failed") {
                assert!(
                    log.contains("c.toml") && log.contains("line 4"),
                    "the error names file and line:\n{log}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "no reload error logged:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let m = query(Proto::Udp, dns_addr, name, A).await;
        assert_eq!(m.answers[0].ttl, 7, "still the running config");

        // SIGHUP with a new zone and a new port: the new listener answers the new zone.
        let dns2 = support::dns::free_port();
        let dns2_addr: SocketAddr = format!("127.0.0.1:{dns2}").parse().unwrap();
        std::fs::write(
            &cfg,
            config(
                dns2,
                admin,
                &manifest,
                "ttl = 7\nzone = \"example.internal\"",
            ),
        )
        .unwrap();
        signal(&server.0, "-HUP");
        wait_answer(
            dns2_addr,
            "web-0.nginx.default.svc.example.internal",
            "new zone on the new port",
            |m| m.answers.len() == 1,
        )
        .await;

        // SIGTERM with TCP queries in flight: /ready goes 503, the process exits 0.
        let client = tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..2000 {
                let bytes =
                    support::dns::message("web-0.nginx.default.svc.example.internal", A, None)
                        .to_vec()
                        .unwrap();
                match support::dns::exchange_raw(Proto::Tcp, dns2_addr, &bytes).await {
                    Some(r) => {
                        let m = hickory_proto::op::Message::from_vec(&r).unwrap();
                        assert_eq!(m.answers.len(), 1, "every answer sent is right");
                        ok += 1;
                    }
                    None => break,
                }
            }
            ok
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        signal(&server.0, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut saw_503 = false;
        while Instant::now() < deadline && !saw_503 {
            match http(admin_addr, "GET", "/ready").await {
                Ok((503, body)) => saw_503 = body.contains("shutting down"),
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => break,
            }
        }
        assert!(saw_503, "readiness went 503 before the server stopped");
        let status = loop {
            if let Some(s) = server.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline + Duration::from_secs(5),
                "did not exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "exit status {status:?}");
        let answered = client.await.unwrap();
        assert!(answered > 0, "queries were in flight");
    })
    .await
    .expect("test timed out");
}

/// Web-1's A answer: (rcode, addresses, TTL of the first record).
async fn web(addr: SocketAddr, pod: &str) -> (hickory_proto::op::ResponseCode, Vec<String>, u32) {
    let name = format!("{pod}.nginx.default.svc.cluster.local");
    let m = query(Proto::Udp, addr, &name, A).await;
    let ttl = m.answers.first().map_or(0, |r| r.ttl);
    (m.metadata.response_code, support::dns::ip_strings(&m), ttl)
}

#[tokio::test]
async fn a_reload_keeps_the_simulated_cluster() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        let (dns, admin) = (support::dns::free_port(), support::dns::free_port());
        let dns_addr: SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
        let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        // The embedded demo under the simulator.
        let config = |ttl: u32| {
            format!(
                "[dns]\nlisten = [\"127.0.0.1:{dns}\"]\nthreads = 1\nttl = {ttl}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[sim]\nenabled = true\nready_delay_ms = 300\n"
            )
        };
        std::fs::write(&cfg, config(5)).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Server(child);
        wait_answer(dns_addr, "web-1.nginx.default.svc.cluster.local", "web-1 up", |m| {
            m.answers.len() == 1
        })
        .await;

        // Web-1 is recreated with a new IP: the state a reload must not lose.
        let (_, before, _) = web(dns_addr, "web-1").await;
        let (status, body) = http(admin_addr, "POST", "/sim/pods/default/web-1/delete")
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        wait_answer(dns_addr, "web-1.nginx.default.svc.cluster.local", "web-1 moved", |m| {
            m.answers.len() == 1 && support::dns::ip_strings(m) != before
        })
        .await;
        let (_, web0, _) = web(dns_addr, "web-0").await;
        let (_, web1, _) = web(dns_addr, "web-1").await;

        // Change the TTL and watch both pods across the reload.
        std::fs::write(&cfg, config(7)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut after_reload = 0;
        while after_reload < 200 {
            for (pod, want) in [("web-0", &web0), ("web-1", &web1)] {
                let (rcode, ips, ttl) = web(dns_addr, pod).await;
                assert_eq!(
                    (rcode, &ips),
                    (hickory_proto::op::ResponseCode::NoError, want),
                    "{pod} during the reload"
                );
                if ttl == 7 {
                    after_reload += 1;
                }
            }
            assert!(Instant::now() < deadline, "the reload did not happen");
        }
        drop(server);
    })
    .await
    .expect("test timed out");
}

/// The UDP threads (`dns-udp-N`) of process `pid`, from /proc.
fn udp_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with("dns-udp-"))
        .count()
}

/// A reload that changes `threads` applies it (new UDP sockets beside the
/// old ones, the TCP listener kept) while queries go on being answered.
#[tokio::test]
async fn reload_changes_the_udp_thread_count_without_a_gap() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.yaml");
        std::fs::write(&manifest, MANIFEST).unwrap();
        let cfg = dir.path().join("c.toml");
        let (dns, admin) = (support::dns::free_port(), support::dns::free_port());
        let dns_addr: SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
        let with = |threads: usize, ttl: u32| {
            config(dns, admin, &manifest, &format!("ttl = {ttl}"))
                .replace("threads = 1", &format!("threads = {threads}"))
        };
        std::fs::write(&cfg, with(1, 5)).unwrap();
        let log = dir.path().join("log");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Server(child);
        let pid = server.0.id();
        let name = "web-0.nginx.default.svc.cluster.local";
        wait_answer(dns_addr, name, "first answer", |m| !m.answers.is_empty()).await;
        assert_eq!(udp_threads(pid), 1);

        // Queries all along, over UDP and TCP, each must be answered.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checker = tokio::spawn({
            let stop = std::sync::Arc::clone(&stop);
            async move {
                let (mut ok, mut lost) = (0usize, 0usize);
                for i in 0..100_000usize {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let proto = if i % 4 == 3 { Proto::Tcp } else { Proto::Udp };
                    let bytes = support::dns::message(name, A, None).to_vec().unwrap();
                    match support::dns::exchange_raw(proto, dns_addr, &bytes).await {
                        Some(_) => ok += 1,
                        None => lost += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (ok, lost)
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(&cfg, with(3, 9)).unwrap();
        wait_answer(dns_addr, name, "TTL 9 after the reload", |m| {
            m.answers.first().is_some_and(|r| r.ttl == 9)
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while udp_threads(pid) != 3 {
            assert!(
                Instant::now() < deadline,
                "{} UDP threads after reloading with threads = 3",
                udp_threads(pid)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, lost) = checker.await.unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("reload failed"), "{text}");
        assert!(ok >= 50, "only {ok} queries ran");
        assert_eq!(lost, 0, "{lost} of {} queries unanswered", ok + lost);
    })
    .await
    .expect("test timed out");
}
