//! Restarts through the hand-over socket (`[dns] handover_socket`), with the
//! real binary: under UDP and TCP load a new instance takes the sockets over
//! and the old one exits 0 with no query lost, again and again, across a
//! change of listen and admin addresses; with the Kubernetes source the old
//! instance answers all through the new one's initial list; an old instance
//! killed part-way leaves the new one serving what was queued meanwhile; and
//! peers that speak the protocol wrong (another version, a hang-up) leave
//! exactly one instance serving.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType::A;
use serde_json::{Value, json};
use support::dns::{self, Proto};
use support::fake_api::FakeApi;
use support::k8s::{fqdn, web_cluster};
use support::load::{tcp_load, udp_load};
use support::process::{Running, free_port, loopback};
use support::{eventually, within};

const MANIFEST: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: nginx, namespace: default}\nspec: {clusterIP: None}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: n1, namespace: default, labels: {kubernetes.io/service-name: nginx}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1], hostname: web-0}]\n";

/// The name every query asks.
const NAME: &str = "web-0.nginx.default.svc.cluster.local";

/// One instance's config file: `dns` ports, the admin port, the hand-over
/// socket, and `source` (the `[source]` table's lines).
fn config(dir: &Path, name: &str, dns: &[u16], admin: u16, source: &str) -> PathBuf {
    let listen: Vec<String> = dns.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let text = format!(
        "[dns]\nlisten = [{}]\nthreads = 2\nhandover_socket = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nlameduck_ms = 0\n[source]\n{source}\n[sim]\nenabled = false\n",
        listen.join(", "),
        dir.join("handover.sock").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The manifest source's `[source]` lines.
fn manifests(dir: &Path) -> String {
    let m = dir.join("manifest.yaml");
    std::fs::write(&m, MANIFEST).unwrap();
    format!("manifests = [\"{}\"]", m.display())
}

/// `headless-dns serve --config <cfg>`, its log in `<dir>/<name>.log`.
fn serve(dir: &Path, name: &str, cfg: &Path) -> Running {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = support::process::serve_command(log, "info");
    cmd.arg("--config").arg(cfg);
    Running::spawn(&mut cmd, "headless-dns serve")
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Waits (at most 30 s) for `p` to exit and returns its status.
async fn exit_status(p: &mut Running, dir: &Path, name: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = p.exited() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not exit; its log:\n{}",
            log(dir, name)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `p` to exit 0 (the old instance after a hand-over).
async fn exits_zero(p: &mut Running, dir: &Path, name: &str) {
    let s = exit_status(p, dir, name).await;
    assert!(
        s.success(),
        "{name} exited {s}; its log:\n{}",
        log(dir, name)
    );
}

/// Waits until `addr` answers `name` with one record.
async fn answers(addr: SocketAddr, name: &str) {
    eventually(&format!("{addr} to answer {name}"), || async {
        match dns::try_query(Proto::Udp, addr, name, A).await {
            Ok(m) if m.answers.len() == 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Waits until `name`'s log holds `text`.
async fn logged(dir: &Path, name: &str, text: &str) {
    eventually(&format!("{name}'s log to say {text:?}"), || async {
        let l = log(dir, name);
        if l.contains(text) { Ok(()) } else { Err(l) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn handover_under_load_loses_no_query_repeatedly_and_across_a_config_change() {
    within(Duration::from_secs(150), async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let source = manifests(dir);
        let (p1, p2, admin1, admin2) = (free_port(), free_port(), free_port(), free_port());
        let one = config(dir, "one", &[p1], admin1, &source);
        let two = config(dir, "two", &[p1, p2], admin2, &source);
        let mut a = serve(dir, "a", &one);
        answers(loopback(p1), NAME).await;
        logged(dir, "a", "hand-over socket ready").await;
        let mode = std::fs::metadata(dir.join("handover.sock")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the hand-over socket is the owner's only");

        let udp = udp_load(loopback(p1), NAME, 2000, Duration::from_secs(90));
        let tcp = tcp_load(loopback(p1), NAME, 2, Duration::from_secs(90));
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The same configuration, twice over.
        let mut b = serve(dir, "b", &one);
        exits_zero(&mut a, dir, "a").await;
        logged(dir, "b", "the previous instance stopped; serving alone").await;
        let mut c = serve(dir, "c", &one);
        exits_zero(&mut b, dir, "b").await;
        // A second listen address and another admin port: bound fresh.
        let mut d = serve(dir, "d", &two);
        exits_zero(&mut c, dir, "c").await;
        answers(loopback(p2), NAME).await;
        let (status, _) = support::http::get(loopback(admin2), "/ready").await.unwrap();
        assert_eq!(status, 200);
        assert!(
            std::net::TcpStream::connect(loopback(admin1)).is_err(),
            "the old admin port is closed"
        );
        // Back to one address: the dropped one is closed once d exits.
        let mut e = serve(dir, "e", &one);
        exits_zero(&mut d, dir, "d").await;
        assert!(
            std::net::TcpStream::connect(loopback(p2)).is_err(),
            "the dropped listen address is closed"
        );
        answers(loopback(p1), NAME).await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let u = udp.finish();
        let t = tcp.finish();
        eprintln!(
            "udp: {} sent ({:.0}/s), {} lost, {} good; tcp: {} good, {} asked again on a new connection",
            u.sent,
            u.rate(),
            u.lost(),
            u.good,
            t.good,
            t.retried
        );
        assert!(u.sent > 1000, "the load ran: {u:?}");
        assert_eq!(u.lost(), 0, "udp queries lost across 4 hand-overs");
        assert_eq!(u.good, u.sent, "every udp answer NOERROR with the record: {:?}", u.bad);
        assert!(t.bad.is_empty() && t.refused == 0, "tcp: {t:?}");
        assert!(t.good > 100, "tcp load ran: {t:?}");
        let last = log(dir, "e");
        assert!(last.contains("listening sockets taken over"), "{last}");
        drop(e.0.kill());
    })
    .await;
}

/// The Kubernetes source: the old instance answers all through the new
/// one's initial list (held by the fake API), a SIGTERM meanwhile included;
/// then an old instance killed
/// part-way (the new one still listing) leaves the new one serving, and
/// the queries sent meanwhile, queued in the kernel, answered.
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_sync_is_waited_for_and_an_old_instance_killed_part_way() {
    within(Duration::from_secs(150), async {
        let api = FakeApi::with_objects(web_cluster(1, 1)).await;
        let dir = api.dir().to_path_buf();
        let source = format!(
            "kind = \"kubernetes\"\nkubeconfig = \"{}\"\nreload_sync_timeout_ms = 60000",
            api.kubeconfig().display()
        );
        let (port, admin) = (free_port(), free_port());
        let cfg = config(&dir, "k8s", &[port], admin, &source);
        let name = fqdn("web-0.nginx.default.svc");
        let mut a = serve(&dir, "a", &cfg);
        answers(loopback(port), &name).await;
        logged(&dir, "a", "hand-over socket ready").await;

        // b's initial list is held for 2 s: a answers meanwhile.
        let udp = udp_load(loopback(port), &name, 1000, Duration::from_secs(60));
        api.hold_lists(&["endpointslices"]);
        let mut b = serve(&dir, "b", &cfg);
        logged(&dir, "b", "listening sockets taken over").await;
        // As the kubelet does once the new pod looks ready: a waits for the
        // hand-over instead of leaving the sockets unread.
        a.signal("-TERM");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            a.exited().is_none(),
            "a serves while b lists, SIGTERM or not"
        );
        logged(&dir, "a", "finishing the hand-over first").await;
        api.release_lists();
        exits_zero(&mut a, &dir, "a").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let u = udp.finish();
        eprintln!("held sync: {} sent, {} lost", u.sent, u.lost());
        assert!(u.sent > 1000, "{u:?}");
        assert_eq!(u.lost(), 0, "queries lost while b listed and took over");
        assert_eq!(u.good, u.sent, "{:?}", u.bad);

        // c takes the sockets, b is killed while c still lists.
        let udp = udp_load(loopback(port), &name, 200, Duration::from_secs(60));
        api.hold_lists(&["endpointslices"]);
        let mut c = serve(&dir, "c", &cfg);
        logged(&dir, "c", "listening sockets taken over").await;
        b.0.kill().unwrap();
        let _ = b.0.wait();
        let killed = udp.started().elapsed();
        tokio::time::sleep(Duration::from_millis(800)).await;
        api.release_lists();
        logged(&dir, "c", "did not confirm it stopped").await;
        answers(loopback(port), &name).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let u = udp.finish();
        // Sent after b died and before c answered: nobody read them then.
        let queued = u
            .latencies
            .iter()
            .filter(|(sent, _)| *sent > killed + Duration::from_millis(50))
            .filter(|(sent, lat)| {
                *sent < killed + Duration::from_millis(700) && *lat > Duration::from_millis(50)
            })
            .count();
        eprintln!(
            "killed part-way: {} sent, {} lost, {queued} answered after waiting in the queue",
            u.sent,
            u.lost()
        );
        assert!(
            queued > 0,
            "queries queued while nobody read were answered by c: {u:?}"
        );
        assert!(u.bad.is_empty(), "{:?}", u.bad);
        drop(c.0.kill());
    })
    .await;
}

/// Writes one protocol message.
fn send(s: &mut UnixStream, msg: &Value) {
    let body = serde_json::to_vec(msg).unwrap();
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
}

/// Reads one protocol message (descriptors, if any, are closed unread).
fn recv(s: &mut UnixStream) -> std::io::Result<Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body).unwrap())
}

/// Peers that get the protocol wrong: an old instance of another protocol
/// version (the new one exits, naming it), one that hangs up after the
/// hello (the new one binds afresh and serves); new instances that speak
/// another version, or take the sockets and vanish, or give up (the old
/// one serves on each time).
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_handover_leaves_exactly_one_instance_serving() {
    within(Duration::from_secs(120), async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let source = manifests(dir);
        let (port, admin) = (free_port(), free_port());
        let cfg = config(dir, "cfg", &[port], admin, &source);
        let path = dir.join("handover.sock");

        // An "old instance" that refuses: the new one exits non-zero.
        let fake = UnixListener::bind(&path).unwrap();
        let refuser = std::thread::spawn(move || {
            let (mut s, _) = fake.accept().unwrap();
            let hello = recv(&mut s).unwrap();
            send(
                &mut s,
                &json!({"msg": "refused", "reason": "speaks version 7 only"}),
            );
            hello
        });
        let mut a = serve(dir, "a", &cfg);
        let status = exit_status(&mut a, dir, "a").await;
        let hello = refuser.join().unwrap();
        assert_eq!(hello["msg"], "hello");
        assert_eq!(hello["min"], 1, "{hello}");
        assert!(!status.success(), "refused: exits non-zero");
        assert!(
            log(dir, "a").contains("speaks version 7 only"),
            "{}",
            log(dir, "a")
        );
        assert!(
            dns::try_query(Proto::Udp, loopback(port), NAME, A)
                .await
                .is_err(),
            "nobody serves"
        );

        // One that hangs up after the hello: the new one binds and serves.
        std::fs::remove_file(&path).unwrap();
        let fake = UnixListener::bind(&path).unwrap();
        let hangs_up = std::thread::spawn(move || {
            let (mut s, _) = fake.accept().unwrap();
            recv(&mut s).unwrap();
        });
        let mut b = serve(dir, "b", &cfg);
        hangs_up.join().unwrap();
        answers(loopback(port), NAME).await;
        logged(dir, "b", "binding afresh").await;
        logged(dir, "b", "hand-over socket ready").await;

        // New instances that get it wrong: b serves on after each.
        let mut s = UnixStream::connect(&path).unwrap();
        send(
            &mut s,
            &json!({"msg": "hello", "min": 9, "max": 9, "version": "9", "pid": 1, "wait_ms": 1000}),
        );
        let reply = recv(&mut s).unwrap();
        assert_eq!(reply["msg"], "refused", "{reply}");
        drop(s);
        let mut s = UnixStream::connect(&path).unwrap();
        send(
            &mut s,
            &json!({"msg": "hello", "min": 1, "max": 1, "version": "t", "pid": 1, "wait_ms": 1000}),
        );
        let sockets = recv(&mut s).unwrap();
        assert_eq!(sockets["msg"], "sockets", "{sockets}");
        let kinds: Vec<&str> = sockets["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["udp", "udp", "tcp", "admin"],
            "every socket offered"
        );
        drop(s); // vanishes holding nothing
        logged(dir, "b", "hand-over failed; this instance serves on").await;
        let mut s = UnixStream::connect(&path).unwrap();
        send(
            &mut s,
            &json!({"msg": "hello", "min": 1, "max": 1, "version": "t", "pid": 1, "wait_ms": 1000}),
        );
        recv(&mut s).unwrap();
        send(&mut s, &json!({"msg": "taken"}));
        send(&mut s, &json!({"msg": "abort", "reason": "test gives up"}));
        logged(dir, "b", "test gives up").await;
        drop(s);
        answers(loopback(port), NAME).await;
        assert!(b.exited().is_none(), "b serves on");
        // And a real successor still takes over afterwards.
        let mut c = serve(dir, "c", &cfg);
        exits_zero(&mut b, dir, "b").await;
        answers(loopback(port), NAME).await;
        drop(c.0.kill());
    })
    .await;
}
