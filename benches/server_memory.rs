//! Memory of the whole server process, fed by the Kubernetes source and
//! measured from outside: the release binary runs as a child process against
//! the in-process fake API server (`tests/support/fake_api`) holding
//! 10,000 headless services with 10 ready endpoints each (100,000 endpoints,
//! plus their Namespaces and StatefulSets), and the child's `VmRSS`/`VmHWM`
//! are read from `/proc/<pid>/status`.
//!
//! `benches/memory.rs` measures the index alone; issue #6's targets are about
//! the process (≤ 40 MB steady with 100,000 endpoints, a full re-list peaking
//! at ≤ 1.2x steady, initial sync ≤ 2 s), which also holds the kube client,
//! its list pages and watch buffers, the runtime's threads and the allocator's
//! slack. So this bench reports, without asserting any of them:
//!
//! - an empty server's RSS (same binary, fake API with no objects): the
//!   baseline the bytes per endpoint are counted above;
//! - the time from spawn to `/ready` (every kind listed), RSS then and after
//!   a few idle seconds (steady state);
//! - the peak while every slice changes its addresses through the open watch
//!   streams; while every kind re-lists after `410 Gone` with every address
//!   changed; and while every kind re-lists after `410 Gone` with nothing
//!   changed. Each peak is `VmHWM` after resetting it (`clear_refs`) and the
//!   largest `VmRSS` sampled every 20 ms, as a multiple of steady state.
//!
//! Then the same cluster through the file source (Namespaces, Services and
//! EndpointSlices in one multi-document YAML file): the time to index every
//! endpoint, steady RSS, and the peak while the file is replaced with every
//! address changed (the file source re-reads and diffs the whole file).
//!
//! DNS answers are checked before and after each step, so the numbers are of
//! a working server. Times are wall clock and share the machine with the fake
//! API (in this process); a re-list's time includes the source's reconnect
//! backoff, which grows when re-lists follow each other within 10 s.
//!
//! Run with `cargo bench --bench server_memory` (Cargo builds the release
//! binary first; `-- --file-only` skips the Kubernetes source's part). Without `--bench` (as `cargo test --all-targets` runs it)
//! it is a smoke run with 100 services that takes a few seconds, on the debug
//! binary that profile builds: its numbers mean nothing.

// Printing numbers is what this bench is for.
#![allow(clippy::print_stdout)]

mod common;
#[path = "server_memory/process.rs"]
mod process;
#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use support::dns::{self, Proto};
use support::fake_api::FakeApi;
use support::http;

use process::{Sampler, breakdown, cpu_secs, proc_kb, reset_peak, rss_kb};

const BIN: &str = env!("CARGO_BIN_EXE_headless-dns");
/// Namespaces the services are spread over.
const NAMESPACES: usize = 100;
/// Ready endpoints (StatefulSet pods) per service.
const PODS: usize = 10;
/// The kinds the source watches without `pods = "verified"`.
const KINDS: [&str; 4] = ["Service", "EndpointSlice", "Namespace", "StatefulSet"];
/// How often a wait polls the server.
const POLL: Duration = Duration::from_millis(10);

/// The size of one run.
struct Scale {
    services: usize,
    /// How long the server idles before "steady" RSS is read.
    idle: Duration,
    /// Upper bound for any one wait (sync, a change to show up).
    wait: Duration,
    /// Upper bound for the whole run.
    total: Duration,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --all-targets` runs this without `--bench`: a small smoke
    // run then, so the test suite stays fast; `cargo bench` gets the real size.
    let scale = if std::env::args().any(|a| a == "--bench") {
        Scale {
            services: 10_000,
            idle: Duration::from_secs(3),
            wait: Duration::from_secs(120),
            total: Duration::from_secs(600),
        }
    } else {
        Scale {
            services: 100,
            idle: Duration::from_millis(200),
            wait: Duration::from_secs(20),
            total: Duration::from_secs(60),
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start the bench's tokio runtime");
    let limit = scale.total;
    rt.block_on(async { tokio::time::timeout(limit, bench(&scale)).await })
        .expect("the bench exceeded its time limit");
}

// ---------------------------------------------------------------- cluster

fn namespace(ns: usize) -> Value {
    json!({ "kind": "Namespace", "metadata": { "name": format!("ns-{ns}") } })
}

fn ns_of(s: usize) -> String {
    format!("ns-{}", s % NAMESPACES)
}

fn service(s: usize) -> Value {
    json!({
        "kind": "Service",
        "metadata": { "name": format!("svc-{s}"), "namespace": ns_of(s), "labels": { "app": format!("svc-{s}") } },
        "spec": {
            "clusterIP": "None",
            "clusterIPs": ["None"],
            "selector": { "app": format!("svc-{s}") },
            "ports": [{ "name": "web", "port": 80, "protocol": "TCP" }],
        },
    })
}

/// The StatefulSet governed by `svc-<s>`, named `web-<s>` (one per service
/// in a namespace).
fn statefulset(s: usize) -> Value {
    json!({
        "kind": "StatefulSet",
        "metadata": { "name": format!("web-{s}"), "namespace": ns_of(s) },
        "spec": {
            "replicas": PODS,
            "serviceName": format!("svc-{s}"),
            "selector": { "matchLabels": { "app": format!("svc-{s}") } },
            "template": {
                "metadata": { "labels": { "app": format!("svc-{s}") } },
                "spec": { "containers": [{ "name": "app", "image": "nginx" }] },
            },
        },
    })
}

/// The address of endpoint `i` of service `s` in `generation`: unique across
/// the cluster and across generations (10.0.0.1 .. 10.119.255.10).
fn pod_ip(s: usize, i: usize, generation: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        (generation * 40 + (s >> 8)) as u8,
        (s & 0xff) as u8,
        (i + 1) as u8,
    )
}

fn endpoint_slice(s: usize, generation: usize) -> Value {
    let ns = ns_of(s);
    let endpoints: Vec<Value> = (0..PODS)
        .map(|i| {
            json!({
                "addresses": [pod_ip(s, i, generation).to_string()],
                "conditions": { "ready": true, "serving": true, "terminating": false },
                "hostname": format!("web-{i}"),
                "targetRef": { "kind": "Pod", "name": format!("web-{i}"), "namespace": ns },
            })
        })
        .collect();
    json!({
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("svc-{s}-abcde"),
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": format!("svc-{s}"),
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{ "name": "web", "port": 80, "protocol": "TCP" }],
        "endpoints": endpoints,
    })
}

/// Applies a new version of every slice. Yields now and then so that the
/// fake API's watch streams are written while the changes pile up.
async fn apply_slices(api: &FakeApi, services: usize, generation: usize) {
    for s in 0..services {
        api.apply(endpoint_slice(s, generation));
        if s % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
}

fn pod_name(s: usize, i: usize) -> String {
    format!("web-{i}.svc-{s}.{}.svc.cluster.local", ns_of(s))
}

// ----------------------------------------------------------------- server

/// The server binary running as a child process; killed when dropped, so a
/// panic anywhere in the bench does not leave it behind.
struct Server {
    child: Child,
    dns: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    started: Instant,
}

impl Server {
    /// The server on the Kubernetes source, against `api`.
    fn spawn(api: &FakeApi) -> Server {
        let kubeconfig = api.kubeconfig().as_os_str();
        Self::spawn_with(
            &[
                "--source".as_ref(),
                "kubernetes".as_ref(),
                "--kubeconfig".as_ref(),
                kubeconfig,
            ],
            api.dir(),
        )
    }

    /// The server with these source arguments; its log goes to `dir`.
    fn spawn_with(source: &[&std::ffi::OsStr], dir: &Path) -> Server {
        let dns = SocketAddr::from(([127, 0, 0, 1], support::process::free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], support::process::free_port()));
        let log = dir.join("server.log");
        let stderr = std::fs::File::create(&log).expect("create the server's log file");
        // `HEADLESS_DNS_BENCH_BIN` measures another build (say, the commit before a change).
        let bin = std::env::var_os("HEADLESS_DNS_BENCH_BIN").unwrap_or_else(|| BIN.into());
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(source)
            .arg("--listen")
            .arg(dns.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // The operator's environment must not change what is measured.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("HEADLESS_DNS_") {
                cmd.env_remove(k);
            }
        }
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn the headless-dns binary");
        Server {
            child,
            dns,
            admin,
            log,
            started,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of the server's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Polls `check` every [`POLL`] until it yields a value; panics after
    /// `limit` with the server's log.
    async fn wait<T, F>(&self, what: &str, limit: Duration, mut check: impl FnMut() -> F) -> T
    where
        F: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; server log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for `/ready` (every watched kind listed); returns the time since
    /// the process was spawned.
    async fn wait_ready(&self, limit: Duration) -> Duration {
        self.wait("/ready to be 200", limit, || async {
            match http::get(self.admin, "/ready").await {
                Ok((200, _)) => Some(()),
                _ => None,
            }
        })
        .await;
        self.started.elapsed()
    }

    async fn metrics(&self) -> String {
        http::get(self.admin, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// How many (re-)lists of each watched kind have completed.
    async fn syncs(&self) -> [u64; KINDS.len()] {
        let text = self.metrics().await;
        KINDS.map(|k| {
            metric(
                &text,
                "headless_dns_source_events_total",
                &[("kind", k), ("type", "synced")],
            ) as u64
        })
    }

    /// The A records of `name` over `proto`, or the rcode if not NOERROR.
    async fn a(&self, proto: Proto, name: &str) -> Result<Vec<Ipv4Addr>, ResponseCode> {
        let m = dns::try_query(proto, self.dns, name, RecordType::A)
            .await
            .unwrap_or_else(|e| panic!("A {name} over {proto:?}: {e}"));
        match dns::rcode(&m) {
            ResponseCode::NoError => Ok(dns::ips(&m)
                .into_iter()
                .filter_map(|ip| match ip {
                    std::net::IpAddr::V4(v4) => Some(v4),
                    std::net::IpAddr::V6(_) => None,
                })
                .collect()),
            rc => Err(rc),
        }
    }

    /// Asserts the answers of the first and last service, pod and service
    /// names, over UDP and TCP, in `generation`.
    async fn check_answers(&self, services: usize, generation: usize) {
        for s in [0, services - 1] {
            for proto in [Proto::Udp, Proto::Tcp] {
                for i in [0, PODS - 1] {
                    let name = pod_name(s, i);
                    let got = self.a(proto, &name).await;
                    assert_eq!(got, Ok(vec![pod_ip(s, i, generation)]), "{name} {proto:?}");
                }
                let name = format!("svc-{s}.{}.svc.cluster.local", ns_of(s));
                let mut got = self.a(proto, &name).await.expect("service A is NOERROR");
                got.sort();
                let want: Vec<Ipv4Addr> = (0..PODS).map(|i| pod_ip(s, i, generation)).collect();
                assert_eq!(got, want, "{name} {proto:?}");
            }
        }
    }

    /// Waits until `web-<PODS-1>` of the last service answers its address in
    /// `generation`: slices arrive in order, so then every change has.
    async fn wait_generation(&self, services: usize, generation: usize, limit: Duration) {
        let s = services - 1;
        let name = pod_name(s, PODS - 1);
        let want = Ok(vec![pod_ip(s, PODS - 1, generation)]);
        self.wait(
            &format!("{name} to be generation {generation}"),
            limit,
            || {
                let (name, want) = (&name, &want);
                async move { (self.a(Proto::Udp, name).await == *want).then_some(()) }
            },
        )
        .await;
    }

    /// Waits until every watched kind has completed one more list than in
    /// `before`.
    async fn wait_relisted(&self, before: [u64; KINDS.len()], limit: Duration) {
        self.wait("every kind to complete a re-list", limit, || async {
            let now = self.syncs().await;
            now.iter().zip(before).all(|(n, b)| *n > b).then_some(())
        })
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample of `name` whose labels include `labels`; 0 if
/// none.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// One measured change: how long it took to show and what RSS did.
struct Phase {
    /// From the first change to the server answering all of it.
    took: Duration,
    sampled_peak: u64,
    samples: u32,
    hwm: Option<u64>,
    after: u64,
    after_breakdown: String,
}

impl Phase {
    fn print(&self, what: &str, steady: u64) {
        let peak = self.hwm.unwrap_or(0).max(self.sampled_peak);
        println!("  {what}:");
        println!(
            "    served in {:.2} s; peak {peak} kB = {:.2}x steady (VmHWM {}, largest of {} samples {} kB)",
            self.took.as_secs_f64(),
            peak as f64 / steady as f64,
            self.hwm
                .map_or("not resettable".to_string(), |h| format!("{h} kB")),
            self.samples,
            self.sampled_peak,
        );
        println!(
            "    RSS after: {} kB ({})",
            self.after, self.after_breakdown
        );
    }
}

/// Runs `change` (which returns once the server shows it) while sampling the
/// server's RSS, then lets it idle for `idle`.
async fn measure<F: std::future::Future<Output = ()>>(
    server: &Server,
    scale: &Scale,
    change: F,
) -> Phase {
    let pid = server.pid();
    let resettable = reset_peak(pid);
    let sampler = Sampler::start(pid, scale.total);
    let t = Instant::now();
    change.await;
    let took = t.elapsed();
    tokio::time::sleep(scale.idle).await;
    let (sampled_peak, samples) = sampler.finish();
    Phase {
        took,
        sampled_peak,
        samples,
        hwm: resettable.then(|| proc_kb(pid, "status", "VmHWM")),
        after: rss_kb(pid),
        after_breakdown: breakdown(pid),
    }
}

// ------------------------------------------------------------------ bench

/// The baseline: the same binary against an empty cluster, its RSS in kB
/// and where it lies.
async fn empty_server(scale: &Scale) -> (u64, String) {
    let api = FakeApi::start().await;
    let server = Server::spawn(&api);
    server.wait_ready(scale.wait).await;
    tokio::time::sleep(scale.idle).await;
    let miss = server.a(Proto::Udp, &pod_name(0, 0)).await;
    assert_eq!(miss, Err(ResponseCode::NXDomain), "empty cluster");
    (rss_kb(server.pid()), breakdown(server.pid()))
}

async fn bench(scale: &Scale) {
    let services = scale.services;
    let endpoints = services * PODS;

    let empty = empty_server(scale).await;
    // `-- --file-only`: only the file source's part (after the empty server).
    if std::env::args().any(|a| a == "--file-only") {
        println!("  empty server: RSS {} kB ({})", empty.0, empty.1);
        return bench_file(scale, empty.0).await;
    }

    let api = FakeApi::start().await;
    for n in 0..NAMESPACES.min(services) {
        api.apply(namespace(n));
    }
    for s in 0..services {
        api.apply(service(s));
        api.apply(statefulset(s));
        api.apply(endpoint_slice(s, 0));
    }

    let server = Server::spawn(&api);
    let pid = server.pid();
    let sync = server.wait_ready(scale.wait).await;
    let (sync_user, sync_sys) = cpu_secs(pid);
    let synced_rss = rss_kb(pid);
    let sync_peak = proc_kb(pid, "status", "VmHWM");
    let indexed = metric(&server.metrics().await, "headless_dns_index_endpoints", &[]) as usize;
    assert_eq!(indexed, endpoints, "endpoints in the index after sync");
    server.check_answers(services, 0).await;
    tokio::time::sleep(scale.idle).await;
    let steady = rss_kb(pid);
    let steady_breakdown = breakdown(pid);

    // Every slice changes, delivered through the open watch streams.
    let watched = measure(&server, scale, async {
        apply_slices(&api, services, 1).await;
        server.wait_generation(services, 1, scale.wait).await;
    })
    .await;
    server.check_answers(services, 1).await;

    // Every slice changes while no watch is connected.
    let relist_changed =
        relist_after_410(&server, &api, scale, apply_slices(&api, services, 2)).await;
    server.check_answers(services, 2).await;

    // The common 410: nothing the server watches changed, but its version is
    // too old (a change to an unwatched Pod moves the version on).
    let bump = async {
        api.apply(json!({
            "kind": "Pod",
            "metadata": { "name": "version-bump", "namespace": "ns-0" },
        }));
    };
    let relist_same = relist_after_410(&server, &api, scale, bump).await;
    server.check_answers(services, 2).await;

    let sync = SyncFigures {
        wall: sync,
        user: sync_user,
        system: sync_sys,
        rss: synced_rss,
        peak: sync_peak,
    };
    let steady = (steady, steady_breakdown);
    let phases = [
        (
            "every slice's addresses changed, delivered by the watches",
            watched,
        ),
        (
            "410 Gone, full re-list of every kind, every address changed",
            relist_changed,
        ),
        (
            "410 Gone, full re-list of every kind, nothing changed",
            relist_same,
        ),
    ];
    report_kubernetes(scale, &empty, &sync, &steady, &phases);
    drop(server);
    bench_file(scale, empty.0).await;
}

/// The initial sync of the Kubernetes source.
struct SyncFigures {
    wall: Duration,
    user: f64,
    system: f64,
    /// RSS right after it, kB.
    rss: u64,
    /// VmHWM during it, kB.
    peak: u64,
}

fn report_kubernetes(
    scale: &Scale,
    (empty_rss, empty_breakdown): &(u64, String),
    sync: &SyncFigures,
    (steady, steady_breakdown): &(u64, String),
    phases: &[(&str, Phase)],
) {
    let services = scale.services;
    let endpoints = services * PODS;
    println!(
        "headless-dns process, kubernetes source (fake API), {endpoints} endpoints in {services} headless services, {} namespaces:",
        NAMESPACES.min(services)
    );
    println!("  empty server: RSS {empty_rss} kB ({empty_breakdown})");
    println!(
        "  initial sync (spawn to /ready): {:.2} s, server CPU {:.2} s (user {:.2}, system {:.2}); RSS then {} kB, peak during it (VmHWM) {} kB",
        sync.wall.as_secs_f64(),
        sync.user + sync.system,
        sync.user,
        sync.system,
        sync.rss,
        sync.peak,
    );
    print_steady(scale, *steady, steady_breakdown, *empty_rss, endpoints);
    for (what, phase) in phases {
        phase.print(what, *steady);
    }
}

/// Applies `change` while no watch is connected and then forgets the
/// history that would replay it, so every kind gets 410 Gone and re-lists;
/// measured until every kind has.
async fn relist_after_410(
    server: &Server,
    api: &FakeApi,
    scale: &Scale,
    change: impl std::future::Future<Output = ()>,
) -> Phase {
    let before = server.syncs().await;
    measure(server, scale, async {
        api.pause_watches();
        api.drop_watches();
        change.await;
        api.expire_history();
        api.resume_watches();
        server.wait_relisted(before, scale.wait).await;
    })
    .await
}

/// Prints the steady-state line of a run.
fn print_steady(scale: &Scale, steady: u64, breakdown: &str, empty_rss: u64, endpoints: usize) {
    println!(
        "  steady ({:.1} s idle): RSS {steady} kB = {:.1} MB ({breakdown}); {} B per endpoint above the empty server",
        scale.idle.as_secs_f64(),
        steady as f64 / 1024.0,
        (steady.saturating_sub(empty_rss)) * 1024 / endpoints as u64,
    );
}

/// The cluster as a manifest file: Namespaces, Services and EndpointSlices
/// (no StatefulSets: with the file source those start the simulator), as
/// multi-document YAML, replaced atomically (written aside, renamed).
fn write_manifests(path: &Path, services: usize, generation: usize) {
    let mut docs = Vec::new();
    let namespaces = (0..NAMESPACES.min(services)).map(namespace);
    let cluster = (0..services).flat_map(|s| [service(s), endpoint_slice(s, generation)]);
    for mut doc in namespaces.chain(cluster) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let api_version = match kind.as_str() {
            "EndpointSlice" => "discovery.k8s.io/v1",
            _ => "v1",
        };
        doc["apiVersion"] = json!(api_version);
        docs.push(serde_yaml_ng::to_string(&doc).expect("YAML of a JSON value"));
    }
    let aside = path.with_extension("new");
    std::fs::write(&aside, docs.join("---\n")).expect("write the manifest file");
    std::fs::rename(&aside, path).expect("replace the manifest file");
}

/// The same cluster through the file source: initial load, and a rewrite of
/// the file with every address changed (the file source's re-list: it
/// re-reads and diffs the whole file).
async fn bench_file(scale: &Scale, empty_rss: u64) {
    let services = scale.services;
    let endpoints = services * PODS;
    let dir = tempfile::tempdir().expect("a scratch directory");
    let path = dir.path().join("cluster.yaml");
    write_manifests(&path, services, 0);
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());

    let server = Server::spawn_with(&["--manifests".as_ref(), path.as_os_str()], dir.path());
    let pid = server.pid();
    // Ready (the first full diff applied; until then queries get SERVFAIL)
    // with every endpoint indexed.
    let sync = server.wait_ready(scale.wait).await;
    let indexed = metric(&server.metrics().await, "headless_dns_index_endpoints", &[]) as usize;
    assert_eq!(indexed, endpoints, "endpoints in the index once ready");
    let sync_peak = proc_kb(pid, "status", "VmHWM");
    server.check_answers(services, 0).await;
    tokio::time::sleep(scale.idle).await;
    let steady = rss_kb(pid);
    let steady_breakdown = breakdown(pid);

    let rewrite = measure(&server, scale, async {
        write_manifests(&path, services, 1);
        server.wait_generation(services, 1, scale.wait).await;
    })
    .await;
    server.check_answers(services, 1).await;

    println!(
        "headless-dns process, file source, the same cluster in one {:.1} MB manifest file:",
        size as f64 / 1e6
    );
    println!(
        "  initial load (spawn to /ready, every endpoint indexed): {:.2} s; peak during it (VmHWM) {sync_peak} kB",
        sync.as_secs_f64()
    );
    print_steady(scale, steady, &steady_breakdown, empty_rss, endpoints);
    rewrite.print(
        "the file rewritten with every address changed (re-read and diffed)",
        steady,
    );
}
