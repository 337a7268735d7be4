//! The real server, in-process (`headless_dns::run`) on loopback sockets
//! bound on ephemeral ports before it starts, so tests never race for a port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use headless_dns::config::Config;
use headless_dns::{Listeners, run};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::dns::{self, Answer, BOTH, Proto};
use super::{eventually, http};

/// A config for tests: loopback, ephemeral ports, one UDP thread, the given
/// manifests polled every 50 ms, no simulator.
pub fn test_config(manifests: Vec<PathBuf>) -> Config {
    let mut c = Config::default();
    c.dns.listen = vec!["127.0.0.1:0".parse().expect("literal address")];
    c.dns.threads = 1;
    c.admin.listen = Some("127.0.0.1:0".parse().expect("literal address"));
    c.source.manifests = manifests;
    c.source.poll_interval_ms = 50;
    c.sim.enabled = false;
    c
}

/// A running server. Dropping it tells it to stop; [`TestServer::stop`]
/// also waits for it and checks it ended cleanly.
pub struct TestServer {
    /// The DNS address (UDP and TCP).
    pub dns: SocketAddr,
    /// The admin HTTP address.
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<headless_dns::Result<()>>>,
    /// Where the manifests live, if the test wrote any.
    dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts `config` and returns at once (the index may not be synced).
    pub fn spawn(config: Config) -> TestServer {
        super::init_logs();
        let listeners = Listeners::bind(&config).expect("bind loopback listeners");
        let dns = listeners.udp[0].local_addr().expect("bound");
        let admin = listeners
            .admin
            .as_ref()
            .expect("admin listener configured")
            .local_addr()
            .expect("bound");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, listeners, async {
            let _ = rx.await;
        }));
        TestServer {
            dns,
            admin,
            stop: Some(tx),
            task: Some(task),
            dir: None,
        }
    }

    /// Starts `config` and waits until `/ready` says 200.
    pub async fn start(config: Config) -> TestServer {
        let s = TestServer::spawn(config);
        s.wait_ready().await;
        s
    }

    /// Starts a server on the given manifest text (written to
    /// `manifests.yaml`), with `tweak` applied to [`test_config`].
    pub async fn with_manifests(text: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let path = dir.path().join("manifests.yaml");
        std::fs::write(&path, text).expect("write the manifests");
        let mut c = test_config(vec![path]);
        tweak(&mut c);
        let mut s = TestServer::start(c).await;
        s.dir = Some(dir);
        s
    }

    /// The manifests file of [`TestServer::with_manifests`].
    pub fn manifest_path(&self) -> PathBuf {
        let dir = self.dir.as_ref().expect("started with_manifests");
        dir.path().join("manifests.yaml")
    }

    /// `/ready`'s status code.
    pub async fn ready_status(&self) -> u16 {
        http::get(self.admin, "/ready")
            .await
            .expect("admin /ready answers")
            .0
    }

    /// Waits until `/ready` says 200.
    pub async fn wait_ready(&self) {
        eventually("/ready to be 200", || async {
            match http::get(self.admin, "/ready").await {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// One query and its reply; panics when none comes.
    pub async fn query(&self, proto: Proto, name: &str, rtype: RecordType) -> Message {
        dns::query(proto, self.dns, name, rtype).await
    }

    /// The outcome of `name A` over UDP.
    pub async fn a(&self, name: &str) -> Answer {
        Answer::of(&self.query(Proto::Udp, name, RecordType::A).await)
    }

    /// Polls until `check` holds for the answer to `name`/`rtype` over UDP;
    /// returns that answer.
    pub async fn wait_for(
        &self,
        name: &str,
        rtype: RecordType,
        what: &str,
        check: impl Fn(&Message) -> bool,
    ) -> Message {
        eventually(what, || async {
            let m = self.query(Proto::Udp, name, rtype).await;
            if check(&m) {
                Ok(m)
            } else {
                Err(format!("{m:?}"))
            }
        })
        .await
    }

    /// Polls until `name A` answers `want`.
    pub async fn wait_for_a(&self, name: &str, want: Answer) {
        eventually(&format!("{name} A to be {want:?}"), || async {
            match self.a(name).await {
                got if got == want => Ok(()),
                got => Err(format!("got {got:?}")),
            }
        })
        .await
    }

    /// Asserts `name A` answers `want` over both UDP and TCP.
    pub async fn assert_a(&self, name: &str, want: &Answer) {
        for proto in BOTH {
            let got = Answer::of(&self.query(proto, name, RecordType::A).await);
            assert_eq!(&got, want, "{name} A over {proto:?}");
        }
    }

    /// Stops the server and checks it ended without error within 10 s.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("server stops within 10 s")
            .expect("server task did not panic")
            .expect("server ran without error");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Writes `text` to `path` in one step for the poller (write, then rename).
pub fn rewrite(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename it into place");
}

/// The value of the `/metrics` series starting with `series` (name and
/// labels, e.g. `headless_dns_follow_serial`) on `s`; 0 when it is absent.
pub async fn metric(s: &TestServer, series: &str) -> f64 {
    let (_, body) = http::request(s.admin, "GET", "/metrics").await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
