//! Reload and shutdown of the real binary: a changed config file (or SIGHUP)
//! is applied without a gap, a broken one is refused while the running config
//! stays, a new listen address is bound, and SIGTERM drains (readiness 503
//! first) and exits 0, answering every query sent before it stopped. A
//! reload that cannot sync (namespaces the fake API's RBAC refuses) fails
//! after `reload_sync_timeout_ms` while the running config answers all
//! along, and SIGTERM during such a reload is honoured at once.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType::A;
use support::dns::{self, Proto, framed, message, read_framed};
use support::fake_api::FakeApi;
use support::fake_api::rbac::role;
use support::k8s;
use support::process::{BIN, Running, free_port, loopback};
use support::{eventually, eventually_within, http, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const MANIFEST: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: nginx, namespace: default}\nspec: {clusterIP: None}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: n1, namespace: default, labels: {kubernetes.io/service-name: nginx}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1], hostname: web-0}]\n";

/// How long the server keeps serving after SIGTERM, readiness at 503.
const LAMEDUCK: Duration = Duration::from_millis(800);

fn config(dns: u16, admin: u16, manifest: &Path, extra: &str) -> String {
    format!(
        "[dns]\nlisten = [\"127.0.0.1:{dns}\"]\nthreads = 1\n{extra}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nlameduck_ms = {}\n[source]\nmanifests = [\"{}\"]\n[sim]\nenabled = false\n",
        LAMEDUCK.as_millis(),
        manifest.display()
    )
}

/// `headless-dns serve --config <cfg>`, its log in `<dir>/log`.
fn serve(dir: &Path, cfg: &Path, rust_log: Option<&str>) -> Running {
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    Running::spawn(&mut cmd, "headless-dns serve")
}

/// Polls `name A` over UDP until `check` holds.
async fn wait_answer(addr: SocketAddr, name: &str, what: &str, check: impl Fn(&Message) -> bool) {
    eventually(what, || async {
        match dns::try_query(Proto::Udp, addr, name, A).await {
            Ok(m) if check(&m) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// What became of one query of the drain client.
#[derive(Debug)]
enum Sent {
    /// Answered (and right), written at `at`.
    Answered { at: Instant },
    /// The connection was refused at `at`: the server no longer listens.
    Refused { at: Instant },
    /// Written at `at` (or failed while being written), and never answered.
    Unanswered { at: Instant, why: String },
}

/// Sends one TCP query for `name` on a new connection.
async fn one_query(addr: SocketAddr, name: &str) -> Sent {
    let Ok(mut c) = TcpStream::connect(addr).await else {
        return Sent::Refused { at: Instant::now() };
    };
    let query = message(name, A, None).to_vec().unwrap();
    let written = c.write_all(&framed(&query)).await;
    let at = Instant::now();
    if let Err(e) = written {
        return Sent::Unanswered {
            at,
            why: format!("write: {e}"),
        };
    }
    match read_framed(&mut c).await {
        Some(r) => {
            let m = Message::from_vec(&r).unwrap();
            assert_eq!(m.answers.len(), 1, "every answer sent is right: {m:?}");
            Sent::Answered { at }
        }
        None => Sent::Unanswered {
            at,
            why: "no reply (closed, reset or silent)".into(),
        },
    }
}

/// Queries `name` over TCP one after another (a new connection each, at
/// most 100,000 or 30 s) until a query is not answered; returns them all.
fn drain_client(addr: SocketAddr, name: &'static str) -> tokio::task::JoinHandle<Vec<Sent>> {
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut sent = Vec::new();
        while sent.len() < 100_000 && Instant::now() < deadline {
            let s = one_query(addr, name).await;
            let done = !matches!(s, Sent::Answered { .. });
            sent.push(s);
            if done {
                break;
            }
        }
        sent
    })
}

/// SIGTERM with TCP queries in flight: `/ready` goes 503, every query sent
/// before the lameduck period ends is answered, the process exits 0.
async fn drain_on_sigterm(server: &mut Running, dns: SocketAddr, admin: SocketAddr) {
    let client = drain_client(dns, "web-0.nginx.default.svc.example.internal");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Taken before the signal: the server stops no earlier than this + LAMEDUCK.
    let term = Instant::now();
    server.signal("-TERM");
    let saw_503 = eventually_within(Duration::from_secs(5), "/ready 503", || async {
        match http::get(admin, "/ready").await {
            Ok((503, body)) if body.contains("shutting down") => Ok(true),
            Err(_) => Ok(false),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(saw_503, "readiness went 503 before the server stopped");
    let status = eventually_within(Duration::from_secs(10), "the server to exit", || {
        let exited = server.exited();
        async move { exited.ok_or_else(|| "still running".to_string()) }
    })
    .await;
    assert!(status.success(), "exit status {status:?}");
    let sent = client.await.unwrap();
    let (at, why) = match sent.last().expect("the client sent queries") {
        Sent::Answered { .. } => panic!("the client never saw the server stop"),
        Sent::Refused { at } => (*at, "connection refused"),
        Sent::Unanswered { at, why } => (*at, why.as_str()),
    };
    let answered_in_drain = sent
        .iter()
        .filter(|s| matches!(s, Sent::Answered { at } if *at > term))
        .count();
    eprintln!(
        "drain: {} queries, {answered_in_drain} answered after SIGTERM; the first \
         unanswered one was sent {} ({why})",
        sent.len(),
        since(term, at)
    );
    assert!(
        at >= term + LAMEDUCK,
        "a query sent {}, before the {LAMEDUCK:?} drain ended, was not answered: {why}",
        since(term, at)
    );
    assert!(
        answered_in_drain > 0,
        "queries were answered while draining"
    );
}

/// `at` relative to SIGTERM at `term`, as text.
fn since(term: Instant, at: Instant) -> String {
    match at.checked_duration_since(term) {
        Some(d) => format!("{d:?} after SIGTERM"),
        None => format!("{:?} before SIGTERM", term - at),
    }
}

/// Polls the log in `dir` until it reports a failed reload; returns it.
async fn reload_failure(dir: &Path) -> String {
    eventually_within(
        Duration::from_secs(10),
        "a reload error in the log",
        || async {
            let log = std::fs::read_to_string(dir.join("log")).unwrap();
            if log.contains("reload failed") {
                Ok(log)
            } else {
                Err(log)
            }
        },
    )
    .await
}

#[tokio::test]
async fn reload_on_change_and_sighup_and_graceful_shutdown() {
    within(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.yaml");
        std::fs::write(&manifest, MANIFEST).unwrap();
        let cfg = dir.path().join("c.toml");
        let (dns, admin) = (free_port(), free_port());
        let (dns_addr, admin_addr) = (loopback(dns), loopback(admin));
        std::fs::write(&cfg, config(dns, admin, &manifest, "ttl = 5")).unwrap();
        let mut server = serve(dir.path(), &cfg, Some("info"));
        let name = "web-0.nginx.default.svc.cluster.local";
        let ttl_is = |ttl| move |m: &Message| m.answers.first().is_some_and(|r| r.ttl == ttl);
        wait_answer(dns_addr, name, "first answer", ttl_is(5)).await;

        // Saving the file reloads it: the TTL changes, answers never stop.
        std::fs::write(&cfg, config(dns, admin, &manifest, "ttl = 7")).unwrap();
        wait_answer(dns_addr, name, "TTL 7 after the file changed", ttl_is(7)).await;

        // A broken config: reported, and the running one stays.
        std::fs::write(&cfg, config(dns, admin, &manifest, "ttl = \"seven\"")).unwrap();
        server.signal("-HUP");
        let log = reload_failure(dir.path()).await;
        assert!(
            log.contains("c.toml") && log.contains("line 4"),
            "the error names file and line:\n{log}"
        );
        let m = dns::query(Proto::Udp, dns_addr, name, A).await;
        assert_eq!(m.answers[0].ttl, 7, "still the running config");

        // SIGHUP with a new zone and a new port: the new listener answers the new zone.
        let dns2 = free_port();
        let dns2_addr = loopback(dns2);
        let zone = "ttl = 7\nzone = \"example.internal\"";
        std::fs::write(&cfg, config(dns2, admin, &manifest, zone)).unwrap();
        server.signal("-HUP");
        wait_answer(
            dns2_addr,
            "web-0.nginx.default.svc.example.internal",
            "new zone on the new port",
            |m| m.answers.len() == 1,
        )
        .await;

        drain_on_sigterm(&mut server, dns2_addr, admin_addr).await;
    })
    .await;
}

/// `<pod>`'s A answer: (rcode, addresses, TTL of the first record).
async fn web(addr: SocketAddr, pod: &str) -> (ResponseCode, Vec<String>, u32) {
    let name = format!("{pod}.nginx.default.svc.cluster.local");
    let m = dns::query(Proto::Udp, addr, &name, A).await;
    let ttl = m.answers.first().map_or(0, |r| r.ttl);
    (m.metadata.response_code, dns::ip_strings(&m), ttl)
}

#[tokio::test]
async fn a_reload_keeps_the_simulated_cluster() {
    within(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        let (dns, admin) = (free_port(), free_port());
        let (dns_addr, admin_addr) = (loopback(dns), loopback(admin));
        // The embedded demo under the simulator.
        let config = |ttl: u32| {
            format!(
                "[dns]\nlisten = [\"127.0.0.1:{dns}\"]\nthreads = 1\nttl = {ttl}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[sim]\nenabled = true\nready_delay_ms = 300\n"
            )
        };
        std::fs::write(&cfg, config(5)).unwrap();
        let _server = serve(dir.path(), &cfg, None);
        let web1 = "web-1.nginx.default.svc.cluster.local";
        wait_answer(dns_addr, web1, "web-1 up", |m| m.answers.len() == 1).await;

        // Web-1 is recreated with a new IP: the state a reload must not lose.
        let (_, before, _) = web(dns_addr, "web-1").await;
        let (status, body) = http::post(admin_addr, "/sim/pods/default/web-1/delete")
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        wait_answer(dns_addr, web1, "web-1 moved", |m| {
            m.answers.len() == 1 && dns::ip_strings(m) != before
        })
        .await;
        let (_, web0, _) = web(dns_addr, "web-0").await;
        let (_, web1, _) = web(dns_addr, "web-1").await;

        // Change the TTL and watch both pods across the reload, back to back:
        // every answer is right, until 200 of them carry the new TTL.
        std::fs::write(&cfg, config(7)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut after_reload = 0;
        while after_reload < 200 {
            for (pod, want) in [("web-0", &web0), ("web-1", &web1)] {
                let (rcode, ips, ttl) = web(dns_addr, pod).await;
                assert_eq!(
                    (rcode, &ips),
                    (ResponseCode::NoError, want),
                    "{pod} during the reload"
                );
                after_reload += usize::from(ttl == 7);
            }
            assert!(Instant::now() < deadline, "the reload did not happen");
        }
    })
    .await;
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
        let (dns, admin) = (free_port(), free_port());
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
        let server = Running(child);
        let pid = server.0.id();
        let name = "web-0.nginx.default.svc.cluster.local";
        wait_answer(dns_addr, name, "first answer", |m| !m.answers.is_empty()).await;
        assert_eq!(udp_threads(pid), 1);

        // Queries all along, over UDP and TCP, each must be answered.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checker = tokio::spawn({
            let stop = std::sync::Arc::clone(&stop);
            async move {
                let (mut ok, mut lost) = (0usize, Vec::new());
                for i in 0..100_000usize {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let proto = if i % 4 == 3 { Proto::Tcp } else { Proto::Udp };
                    let bytes = support::dns::message(name, A, None).to_vec().unwrap();
                    let sent = std::time::Instant::now();
                    // Right means NOERROR with web-0's address, not any reply.
                    let got = support::dns::try_exchange_raw(proto, dns_addr, &bytes)
                        .await
                        .map(|r| Message::from_vec(&r).map_err(|e| e.to_string()));
                    match got {
                        Ok(Ok(m))
                            if m.metadata.response_code == ResponseCode::NoError
                                && dns::ip_strings(&m) == ["10.0.0.1"] =>
                        {
                            ok += 1
                        }
                        other => lost.push(format!(
                            "#{i} {proto:?} after {:?}: {other:?}",
                            sent.elapsed()
                        )),
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
        assert!(
            lost.is_empty(),
            "{} of {} queries unanswered or wrong: {lost:?}",
            lost.len(),
            ok + lost.len()
        );
    })
    .await
    .expect("test timed out");
}

/// The namespace the server may read (a Role there), and one it may not.
const SHOP: &str = "shop";
const OTHER: &str = "other";
/// `db-0.db.shop.svc.cluster.local`, at [`DB_0`].
const DB_0_NAME: &str = "db-0.db.shop.svc.cluster.local";
const DB_0: &str = "10.1.0.1";

/// A fake API holding a headless service `db` with one pod in each of
/// [`SHOP`] and [`OTHER`], and a Role granted in [`SHOP`] only: every
/// request in [`OTHER`] gets 403.
async fn rbac_cluster() -> FakeApi {
    let mut objects = Vec::new();
    for (ns, addr) in [(SHOP, DB_0), (OTHER, "10.2.0.1")] {
        objects.extend([
            k8s::headless_service(ns, "db", false),
            k8s::statefulset(ns, "db", "db", 1),
            k8s::endpoint_slice(ns, "db", &[k8s::ready("db-0", k8s::ip(addr))]),
        ]);
    }
    let api = FakeApi::with_objects(objects).await;
    let role = role(&[
        ("", "services", &["list", "watch"]),
        ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
        ("apps", "statefulsets", &["list", "watch"]),
    ]);
    api.grant(SHOP, &role);
    api
}

/// A Kubernetes-source config reading `namespace` through `api`.
fn k8s_config(dns: u16, admin: u16, api: &FakeApi, namespace: &str, sync_ms: u64) -> String {
    format!(
        "[dns]\nlisten = [\"127.0.0.1:{dns}\"]\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nlameduck_ms = {}\n[source]\nkind = \"kubernetes\"\nkubeconfig = \"{}\"\nnamespaces = [\"{namespace}\"]\nreload_sync_timeout_ms = {sync_ms}\n",
        LAMEDUCK.as_millis(),
        api.kubeconfig().display()
    )
}

/// Queries [`DB_0_NAME`] back to back (UDP, every 4th over TCP) until told
/// to stop; returns how many were right (NOERROR, [`DB_0`]) and the wrong ones.
fn db_0_checker(
    dns: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut right, mut wrong) = (0usize, Vec::new());
        let mut i = 0usize;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 200_000 {
            let proto = if i % 4 == 3 { Proto::Tcp } else { Proto::Udp };
            match dns::try_query(proto, dns, DB_0_NAME, A).await {
                Ok(m)
                    if m.metadata.response_code == ResponseCode::NoError
                        && dns::ip_strings(&m) == [DB_0] =>
                {
                    right += 1
                }
                other => wrong.push(format!("#{i} over {proto:?}: {other:?}")),
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (right, wrong)
    })
}

/// Resource requests the fake API got in `namespace`.
fn requests_in(api: &FakeApi, namespace: &str) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.plural.is_some() && r.namespace.as_deref() == Some(namespace))
        .count()
}

/// One value of the metrics page (`name{labels}`); `None` if absent.
async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = http::get(admin, "/metrics").await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A reload to namespaces the Role cannot read never syncs: after
/// `reload_sync_timeout_ms` it fails with the reason in the log and the
/// metric, the running configuration answers all along (never SERVFAIL),
/// `/ready` stays 200 and the new engine stops asking the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_sync_fails_and_the_running_config_serves_on() {
    within(Duration::from_secs(90), async {
        let api = rbac_cluster().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        let (dns, admin) = (free_port(), free_port());
        let (dns_addr, admin_addr) = (loopback(dns), loopback(admin));
        std::fs::write(&cfg, k8s_config(dns, admin, &api, SHOP, 1500)).unwrap();
        let mut server = serve(dir.path(), &cfg, Some("info"));
        wait_answer(dns_addr, DB_0_NAME, "db-0 in shop", |m| {
            dns::ip_strings(m) == [DB_0]
        })
        .await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checker = db_0_checker(dns_addr, std::sync::Arc::clone(&stop));

        // To a namespace the Role does not cover: the new engine's lists
        // get 403 and it never syncs.
        std::fs::write(&cfg, k8s_config(dns, admin, &api, OTHER, 1500)).unwrap();
        let log = reload_failure(dir.path()).await;
        assert!(
            log.contains("has not synced within 1.5s")
                && log.contains("forbidden (403)")
                && log.contains("in namespace \"other\""),
            "the log names the timeout and the refusal:\n{log}"
        );
        assert!(requests_in(&api, OTHER) > 0, "the new engine asked");
        assert_eq!(
            metric(admin_addr, "headless_dns_reload_total{result=\"failed\"}").await,
            Some(1.0)
        );
        assert_eq!(
            metric(admin_addr, "headless_dns_reload_last_successful").await,
            Some(0.0)
        );
        let (status, body) = http::get(admin_addr, "/ready").await.unwrap();
        assert_eq!((status, body.as_str()), (200, "{\"ready\":true}"));

        // The half-built engine is gone: no request in `other` for longer
        // than its watchers' backoff (at most 1.6 s this early) would allow.
        let asked = requests_in(&api, OTHER);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            requests_in(&api, OTHER),
            asked,
            "the dropped engine asks on"
        );

        // A reload that syncs still applies, and counts.
        let good =
            k8s_config(dns, admin, &api, SHOP, 1500).replace("threads = 1", "threads = 1\nttl = 9");
        std::fs::write(&cfg, good).unwrap();
        wait_answer(dns_addr, DB_0_NAME, "TTL 9 after a good reload", |m| {
            m.answers.first().is_some_and(|r| r.ttl == 9)
        })
        .await;
        // Counted once the old engine has retired, a moment after the new
        // one answers.
        eventually("the reload counted as applied", || async {
            let applied = "headless_dns_reload_total{result=\"applied\"}";
            match (
                metric(admin_addr, applied).await,
                metric(admin_addr, "headless_dns_reload_last_successful").await,
            ) {
                (Some(1.0), Some(1.0)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (right, wrong) = checker.await.unwrap();
        assert!(right >= 100, "only {right} queries ran");
        assert!(
            wrong.is_empty(),
            "{} of {} answers were wrong: {wrong:?}",
            wrong.len(),
            right + wrong.len()
        );
        server.signal("-TERM");
        let status = eventually_within(Duration::from_secs(10), "the server to exit", || {
            let exited = server.exited();
            async move { exited.ok_or_else(|| "still running".to_string()) }
        })
        .await;
        assert!(status.success(), "exit status {status:?}");
    })
    .await;
}

/// SIGTERM while a reload waits for a sync that will not come is honoured
/// at once: the process exits 0 well within a pod's 30 s grace period
/// instead of after the reload's wait (here 120 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_reload_exits_at_once() {
    within(Duration::from_secs(90), async {
        let api = rbac_cluster().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        let (dns, admin) = (free_port(), free_port());
        let dns_addr = loopback(dns);
        std::fs::write(&cfg, k8s_config(dns, admin, &api, SHOP, 120_000)).unwrap();
        let mut server = serve(dir.path(), &cfg, Some("info"));
        wait_answer(dns_addr, DB_0_NAME, "db-0 in shop", |m| {
            dns::ip_strings(m) == [DB_0]
        })
        .await;
        std::fs::write(&cfg, k8s_config(dns, admin, &api, OTHER, 120_000)).unwrap();
        // The reload is under way once the new engine is refused in `other`.
        eventually("the new engine to ask in `other`", || async {
            match requests_in(&api, OTHER) {
                0 => Err("no request yet".to_string()),
                _ => Ok(()),
            }
        })
        .await;
        let term = Instant::now();
        server.signal("-TERM");
        let status = eventually_within(Duration::from_secs(10), "the server to exit", || {
            let exited = server.exited();
            async move { exited.ok_or_else(|| "still running".to_string()) }
        })
        .await;
        assert!(status.success(), "exit status {status:?}");
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(
            log.contains("shutdown during a reload"),
            "the shutdown cut the reload short:\n{log}"
        );
        eprintln!("exited {:?} after SIGTERM", term.elapsed());
    })
    .await;
}
