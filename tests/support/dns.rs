//! A test server on 127.0.0.1:0 and a small DNS client built on hickory-proto.
//!
//! Queries are real packets over real sockets; replies are parsed by hickory,
//! never compared as bytes.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use headless_dns::config::Config;
use headless_dns::{Listeners, run};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// UDP or TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

pub const BOTH: [Proto; 2] = [Proto::Udp, Proto::Tcp];

/// A running server.
pub struct TestServer {
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<headless_dns::Result<()>>>,
    pub dir: tempfile::TempDir,
}

/// A config for tests: loopback, ephemeral ports, one UDP thread, the given manifests.
pub fn test_config(manifests: Vec<PathBuf>) -> Config {
    let mut c = Config::default();
    c.dns.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.dns.threads = 1;
    c.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    c.source.manifests = manifests;
    c.source.poll_interval_ms = 50;
    c.sim.enabled = false;
    c
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

impl TestServer {
    /// Starts the server and waits until `/ready` says 200.
    pub async fn start(config: Config, dir: tempfile::TempDir) -> TestServer {
        init_logs();
        let listeners = Listeners::bind(&config).expect("bind loopback");
        let dns = listeners.udp[0].local_addr().unwrap();
        let admin = listeners.admin.as_ref().unwrap().local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, listeners, async {
            let _ = rx.await;
        }));
        let s = TestServer {
            dns,
            admin,
            stop: Some(tx),
            task: Some(task),
            dir,
        };
        s.wait_ready().await;
        s
    }

    /// Starts a server on the given manifest text (written to `manifests.yaml`).
    pub async fn with_manifests(text: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifests.yaml");
        std::fs::write(&path, text).unwrap();
        let mut c = test_config(vec![path]);
        tweak(&mut c);
        TestServer::start(c, dir).await
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.dir.path().join("manifests.yaml")
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((200, _)) = http(self.admin, "GET", "/ready").await {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn query(&self, proto: Proto, name: &str, rtype: RecordType) -> Message {
        query(proto, self.dns, name, rtype).await
    }

    /// Polls (bounded) until `check` holds for the answer to `name`/`rtype` over UDP.
    pub async fn wait_for(
        &self,
        name: &str,
        rtype: RecordType,
        what: &str,
        check: impl Fn(&Message) -> bool,
    ) -> Message {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.query(Proto::Udp, name, rtype).await;
            if check(&m) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last answer: {m:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

pub fn message(name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(4242);
    NEXT.fetch_add(7, Ordering::Relaxed)
}

/// Sends `msg` and parses the reply.
pub async fn exchange(proto: Proto, server: SocketAddr, msg: &Message) -> Message {
    let bytes = msg.to_vec().unwrap();
    let reply = exchange_raw(proto, server, &bytes).await.expect("no reply");
    let m = Message::from_vec(&reply).expect("reply parses");
    assert_eq!(m.metadata.id, msg.metadata.id, "reply id");
    m
}

/// Sends raw bytes; `None` when no reply came within 2 s or the connection failed.
pub async fn exchange_raw(proto: Proto, server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let fut = async {
        match proto {
            Proto::Udp => {
                let s = UdpSocket::bind("127.0.0.1:0").await?;
                s.send_to(bytes, server).await?;
                let mut buf = vec![0u8; 65535];
                let (n, _) = s.recv_from(&mut buf).await?;
                buf.truncate(n);
                Ok::<_, std::io::Error>(buf)
            }
            Proto::Tcp => {
                let mut s = TcpStream::connect(server).await?;
                s.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
                s.write_all(bytes).await?;
                let len = s.read_u16().await? as usize;
                let mut buf = vec![0u8; len];
                s.read_exact(&mut buf).await?;
                Ok(buf)
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()?
        .ok()
}

/// A loopback port free for both UDP and TCP right now, for servers started
/// as a separate process (which must be told a port rather than bind 0).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

pub async fn query(proto: Proto, server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    exchange(proto, server, &message(name, rtype, Some(1232))).await
}

pub fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// Addresses in the answer section, in order.
pub fn ips(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

pub fn ip_strings(m: &Message) -> Vec<String> {
    ips(m).iter().map(|i| i.to_string()).collect()
}

/// SOA minimum and TTL from the authority section.
pub fn soa_negative_ttl(m: &Message) -> Option<(u32, u32)> {
    m.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some((soa.minimum, r.ttl)),
        _ => None,
    })
}

/// A minimal HTTP/1.1 client for the admin API.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut resp))
        .await
        .map_err(|_| std::io::Error::other("http timeout"))??;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Writes `text` to `path` atomically enough for the poller (write + rename).
pub fn rewrite(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
