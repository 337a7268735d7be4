//! Many secondaries of one primary (#31): how fresh 20 followers stay, what
//! they cost the primary, and what each costs in memory, with Knot as the
//! peer.
//!
//! The primary is the release binary on the demo (file source, embedded
//! manifests) with the simulator (`ready_delay_ms = 50`), transfers allowed
//! from 127.0.0.1 and a NOTIFY to every follower. Three rounds, each with its
//! own primary: 20 of our followers (`--source transfer`), then (when
//! `/usr/sbin/knotd` is installed) 20 Knot secondaries with Knot's stock
//! pacing, then 20 with `block-notify-after-transfer: on` (a leaf secondary
//! that notifies nobody: without it Knot holds back a refresh that follows
//! its previous transfer within a second; `Pacing` in
//! tests/transfer_support/secondary.rs). In each, web-1 is
//! recreated 100 times (`POST /sim/pods/default/web-1/delete`); for each
//! recreate the freshness of a follower is the time from the first moment
//! the primary answers web-1's new address until that follower does
//! (polled over UDP, at most 10 s: past that the update counts as lost).
//! Printed: p50/p99/max freshness over all (recreate, follower) pairs, lost
//! updates, the transfers and bytes the primary served per recreate (its
//! `headless_dns_transfer_*` counters), and after the run every follower's
//! RSS and `Anonymous` from `/proc/PID/smaps_rollup`, beside a Kubernetes
//! source sidecar (`--namespaces default`) of the same objects served by
//! the in-process fake API server, measured once synced and idle.
//!
//! Run with `cargo bench --bench followers`. Without `--bench` (as `cargo
//! test --all-targets` runs it) it is a smoke run: 2 followers of each
//! kind, 3 recreates, the debug binary; its numbers mean nothing.

// Printing numbers is what this bench is for.
#![allow(clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/transfer_support/mod.rs"]
mod transfer_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde::Deserialize;
use serde_json::{Value, json};
use support::dns::{Proto, exchange_raw, message};
use support::fake_api::FakeApi;
use support::http;
use support::process::{free_port, loopback};
use transfer_support::secondary::{Kind, Pacing, Secondary};

const KNOTD: &str = "/usr/sbin/knotd";
const ZONE: &str = "cluster.local";
const WEB_1: &str = "web-1.nginx.default.svc.cluster.local";
/// How long one follower may take to serve one update before it counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(10);

/// The size of a run.
#[derive(Clone, Copy)]
struct Plan {
    followers: usize,
    recreates: usize,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let plan = if std::env::args().any(|a| a == "--bench") {
        Plan {
            followers: 20,
            recreates: 100,
        }
    } else {
        Plan {
            followers: 2,
            recreates: 3,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start the bench's tokio runtime");
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(1800), bench(plan)).await })
        .expect("the bench exceeded its time limit");
}

/// Our binary as a child process (killed on drop).
struct Ours {
    child: Child,
    dns: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Ours {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ours {
    /// `headless-dns serve ARGS --listen 127.0.0.1:DNS_PORT --admin ...`,
    /// logging (warnings) to `<dir>/<name>.log`.
    fn spawn(dir: &Path, name: &str, dns_port: u16, args: &[&str]) -> Ours {
        let dns = loopback(dns_port);
        let admin = loopback(free_port());
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("create a log");
        let mut cmd = support::process::serve_command(log, "warn");
        cmd.args(args)
            .args(["--listen", &dns.to_string(), "--admin", &admin.to_string()]);
        let child = cmd.spawn().expect("spawn the headless-dns binary");
        Ours { child, dns, admin }
    }

    async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !matches!(http::get(self.admin, "/ready").await, Ok((200, _))) {
            assert!(Instant::now() < deadline, "not ready within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metrics(&self) -> String {
        http::get(self.admin, "/metrics").await.expect("/metrics").1
    }
}

/// The sum of every series of `name` (all label sets) in a metrics page.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One series, e.g. `name{kind="ixfr"}`; 0 if absent.
fn series(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The addresses `server` answers for web-1 over UDP; `None` without an answer.
async fn web_1_at(server: SocketAddr) -> Option<Vec<String>> {
    let bytes = message(WEB_1, RecordType::A, Some(1232)).to_vec().ok()?;
    let reply = exchange_raw(Proto::Udp, server, &bytes).await?;
    let m = hickory_proto::op::Message::from_vec(&reply).ok()?;
    Some(support::dns::ip_strings(&m))
}

/// Deletes web-1 on the primary (the simulator recreates it with a new
/// address); returns the new address and when the primary first served it.
async fn recreate_web_1(primary: &Ours) -> (Vec<String>, Instant) {
    let old = web_1_at(primary.dns).await.unwrap_or_default();
    let (status, body) = http::post(primary.admin, "/sim/pods/default/web-1/delete")
        .await
        .expect("the primary's admin API answers");
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = web_1_at(primary.dns).await.unwrap_or_default();
        if !now.is_empty() && now != old {
            return (now, Instant::now());
        }
        assert!(Instant::now() < deadline, "web-1 was not recreated");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `Rss` and `Anonymous` (kB) of `/proc/<pid>/smaps_rollup`.
fn memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_suffix(" kB")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    (field("Rss:"), field("Anonymous:"))
}

/// A follower of either kind.
enum Follower {
    Ours(Ours),
    Knot(Secondary),
}

impl Follower {
    fn addr(&self) -> SocketAddr {
        match self {
            Follower::Ours(o) => o.dns,
            Follower::Knot(k) => k.addr,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Follower::Ours(o) => o.child.id(),
            Follower::Knot(k) => k.pid(),
        }
    }
}

/// What one round measured.
struct Round {
    name: String,
    /// Freshness of every (recreate, follower) pair that was served.
    lags: Vec<Duration>,
    lost: usize,
    /// Primary counters over the recreates: transfers by kind, bytes, NOTIFYs sent.
    transfers: Vec<(&'static str, f64)>,
    bytes: f64,
    notifies: f64,
    /// (RSS, Anonymous) kB of each follower after the run, and of the primary.
    memory: Vec<(u64, u64)>,
    primary_memory: (u64, u64),
}

/// Waits (at most 60 s) until every follower serves web-1 as the primary does.
async fn converge(primary: &Ours, followers: &[Follower]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for f in followers {
        loop {
            let want = web_1_at(primary.dns).await;
            let got = web_1_at(f.addr()).await;
            if want.as_ref().is_some_and(|w| !w.is_empty()) && got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "follower {} did not load the zone: {got:?} vs {want:?}",
                f.addr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls every follower until it serves `want` (each at most
/// [`LOST_AFTER`] after `since`); their freshness, `None` when lost.
async fn freshness(
    followers: &[Follower],
    want: &[String],
    since: Instant,
) -> Vec<Option<Duration>> {
    let mut out: Vec<Option<Duration>> = vec![None; followers.len()];
    let mut pending: Vec<usize> = (0..followers.len()).collect();
    while !pending.is_empty() && since.elapsed() < LOST_AFTER {
        let answers =
            futures::future::join_all(pending.iter().map(|&i| web_1_at(followers[i].addr()))).await;
        let now = since.elapsed();
        let mut still = Vec::new();
        for (&i, got) in pending.iter().zip(answers) {
            if got.as_deref() == Some(want) {
                out[i] = Some(now);
            } else {
                still.push(i);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    out
}

/// The primary on the demo with the simulator, NOTIFYing `ports`.
fn primary(dir: &Path, name: &str, ports: &[u16]) -> Ours {
    let notify: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let config = format!(
        "[sim]\nenabled = true\nready_delay_ms = 50\n\n[transfer]\nallow = [\"127.0.0.1/32\"]\nnotify = [{}]\n",
        notify.join(", ")
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).expect("write the primary's config");
    let path = path.display().to_string();
    Ours::spawn(dir, name, free_port(), &["--config", &path])
}

/// Who follows in a round: ours, or Knot with the given pacing.
#[derive(Clone, Copy)]
enum Who {
    Ours,
    Knot(Pacing),
}

/// One round: a primary, `plan.followers` followers of `who`, the recreates.
async fn round(plan: Plan, dir: &Path, who: Who) -> Round {
    let ports: Vec<u16> = (0..plan.followers).map(|_| free_port()).collect();
    let name = match who {
        Who::Ours => "headless-dns",
        Who::Knot(Pacing::Stock) => "knot",
        Who::Knot(Pacing::Prompt) => "knot-prompt",
    };
    let primary = primary(dir, &format!("primary-{name}"), &ports);
    primary.wait_ready(Duration::from_secs(60)).await;
    let upstream = primary.dns.to_string();
    let followers: Vec<Follower> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            if let Who::Knot(pacing) = who {
                let k = Secondary::start_paced(Kind::Knot, port, primary.dns, ZONE, None, pacing);
                Follower::Knot(k)
            } else {
                let args = ["--source", "transfer", "--primary", &upstream];
                Follower::Ours(Ours::spawn(dir, &format!("follower-{i}"), port, &args))
            }
        })
        .collect();
    converge(&primary, &followers).await;
    let before = primary.metrics().await;
    let mut lags = Vec::new();
    let mut lost = 0;
    for _ in 0..plan.recreates {
        let (want, since) = recreate_web_1(&primary).await;
        for lag in freshness(&followers, &want, since).await {
            match lag {
                Some(l) => lags.push(l),
                None => lost += 1,
            }
        }
    }
    let after = primary.metrics().await;
    let delta = |s: &str| series(&after, s) - series(&before, s);
    let transfers = ["axfr", "ixfr", "ixfr_full", "ixfr_current"]
        .into_iter()
        .map(|k| {
            let s = format!("headless_dns_transfer_requests_total{{kind=\"{k}\"}}");
            (k, delta(&s))
        })
        .collect();
    let sent = "headless_dns_transfer_notify_total{result=\"sent\"}";
    let bytes = metric(&after, "headless_dns_transfer_bytes_total")
        - metric(&before, "headless_dns_transfer_bytes_total");
    let mem = followers.iter().map(|f| memory(f.pid())).collect();
    Round {
        name: name.into(),
        lags,
        lost,
        transfers,
        bytes,
        notifies: delta(sent),
        memory: mem,
        primary_memory: memory(primary.child.id()),
    }
}

/// The demo's objects (its Namespace, Services and StatefulSets), and an
/// EndpointSlice per service of `records` (a primary's `/records`) with the
/// endpoints the simulator made: the cluster a Kubernetes sidecar would see.
fn demo_objects(records: &Value) -> Vec<Value> {
    let mut out: Vec<Value> =
        serde_yaml_ng::Deserializer::from_str(headless_dns::sources::file::DEMO)
            .filter_map(|d| Value::deserialize(d).ok())
            .filter(|v| v.is_object())
            .collect();
    for svc in records["services"].as_array().into_iter().flatten() {
        let endpoints: Vec<Value> = svc["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                json!({
                    "addresses": e["addresses"],
                    "hostname": e["name"],
                    "conditions": { "ready": e["ready"], "serving": true, "terminating": e["terminating"] },
                    "targetRef": { "kind": "Pod", "name": e["pod"].as_str().unwrap_or(e["name"].as_str().unwrap_or("")), "namespace": svc["namespace"] },
                })
            })
            .collect();
        if endpoints.is_empty() {
            continue;
        }
        // "name/tcp:80" → a slice port.
        let ports: Vec<Value> = svc["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let (name, rest) = p.as_str()?.split_once('/')?;
                let (proto, port) = rest.split_once(':')?;
                Some(json!({ "name": name, "protocol": proto.to_ascii_uppercase(), "port": port.parse::<u16>().ok()? }))
            })
            .collect();
        let name = svc["name"].as_str().unwrap_or_default();
        out.push(json!({
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{name}-abcde"), "namespace": svc["namespace"],
                "labels": { "kubernetes.io/service-name": name },
            },
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }));
    }
    out
}

/// A Kubernetes-source sidecar of the demo's namespace, synced and idle
/// for a second: its (RSS, Anonymous) kB.
async fn sidecar(dir: &Path, records: &Value) -> (u64, u64) {
    let api = FakeApi::with_objects(demo_objects(records)).await;
    let kubeconfig = api.kubeconfig().display().to_string();
    let args = [
        "--source",
        "kubernetes",
        "--kubeconfig",
        &kubeconfig,
        "--namespaces",
        "default",
    ];
    let s = Ours::spawn(dir, "sidecar", free_port(), &args);
    s.wait_ready(Duration::from_secs(60)).await;
    let got = web_1_at(s.dns).await.unwrap_or_default();
    assert!(!got.is_empty(), "the sidecar answers web-1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    memory(s.child.id())
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn print_round(r: &mut Round, plan: Plan, version: &str) {
    r.lags.sort();
    let pairs = r.lags.len() + r.lost;
    let (p50, p99, max) = match r.lags.last() {
        Some(&max) => (quantile(&r.lags, 0.5), quantile(&r.lags, 0.99), max),
        None => Default::default(),
    };
    println!(
        "  {} followers ({version}): freshness over {pairs} (recreate, follower) pairs: p50 {}, p99 {}, max {}; lost updates {}",
        r.name,
        ms(p50),
        ms(p99),
        ms(max),
        r.lost
    );
    let per = plan.recreates as f64;
    let total: f64 = r.transfers.iter().map(|(_, n)| n).sum();
    let kinds: Vec<String> = r
        .transfers
        .iter()
        .map(|(k, n)| format!("{k} {:.2}", n / per))
        .collect();
    println!(
        "    primary, per recreate: {:.2} transfer requests ({}), {:.0} bytes sent ({:.0} per follower), {:.2} NOTIFYs sent",
        total / per,
        kinds.join(", "),
        r.bytes / per,
        r.bytes / per / plan.followers as f64,
        r.notifies / per
    );
    for (i, (rss, anon)) in r.memory.iter().enumerate() {
        println!(
            "    {} follower {i}: RSS {rss} kB, Anonymous {anon} kB",
            r.name
        );
    }
    let anon: Vec<u64> = r.memory.iter().map(|m| m.1).collect();
    println!(
        "    {} followers' Anonymous: min {} kB, max {} kB; primary RSS {} kB, Anonymous {} kB",
        r.name,
        anon.iter().min().unwrap_or(&0),
        anon.iter().max().unwrap_or(&0),
        r.primary_memory.0,
        r.primary_memory.1
    );
}

fn knot_version() -> Option<String> {
    let out = Command::new(KNOTD).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn bench(plan: Plan) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut ours = round(plan, dir.path(), Who::Ours).await;
    let records = {
        // A primary again, for the objects of the sidecar's cluster.
        let p = primary(dir.path(), "primary-objects", &[]);
        p.wait_ready(Duration::from_secs(60)).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while web_1_at(p.dns).await.unwrap_or_default().is_empty() {
            assert!(Instant::now() < deadline, "the demo's web-1 never came up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, body) = http::get(p.admin, "/records").await.expect("/records");
        serde_json::from_str::<Value>(&body).expect("/records is JSON")
    };
    let sidecar = sidecar(dir.path(), &records).await;
    let knot = match knot_version() {
        Some(v) => Some((
            round(plan, dir.path(), Who::Knot(Pacing::Stock)).await,
            round(plan, dir.path(), Who::Knot(Pacing::Prompt)).await,
            v,
        )),
        None => None,
    };
    println!(
        "{} followers of one primary (the demo, sim ready_delay_ms 50, NOTIFY to each), {} recreates of web-1:",
        plan.followers, plan.recreates
    );
    print_round(&mut ours, plan, "headless-dns --source transfer");
    match knot {
        Some((mut stock, mut prompt, v)) => {
            print_round(&mut stock, plan, &v);
            let v = format!("{v}, block-notify-after-transfer: on");
            print_round(&mut prompt, plan, &v);
        }
        None => println!("  knot followers: not run ({KNOTD} is not installed)"),
    }
    println!(
        "  kubernetes-source sidecar (--namespaces default, the same objects from the fake API, synced, idle): RSS {} kB, Anonymous {} kB",
        sidecar.0, sidecar.1
    );
}
