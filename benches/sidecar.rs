//! Sidecar mode (#17) against cluster-wide mode: what the Kubernetes source
//! costs the API server and the process at start, in a cluster of 10,000
//! headless services / 100,000 endpoints over 100 namespaces, where the
//! sidecar's namespace (`ns-0`) holds 100 services.
//!
//! The release binary runs as a child process against the in-process fake
//! API server (`tests/support/fake_api`), once cluster-wide and once with
//! `namespaces = ["ns-0"]` while the fake API enforces only a Role in `ns-0`
//! (403 for anything else). For each it prints the objects and bytes the fake
//! API sent (list responses and watch streams) from spawn to `/ready`, the
//! time to `/ready`, RSS then and after a few idle seconds, and the request
//! log summarised by verb, resource and namespace. Nothing is asserted but
//! the answers: a sample of names is checked in each mode.
//!
//! Run with `cargo bench --bench sidecar`. Without `--bench` (as `cargo
//! test --all-targets` runs it) it is a smoke run with 300 services on the
//! debug binary: its numbers mean nothing.

// Printing numbers is what this bench is for.
#![allow(clippy::print_stdout)]

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Child;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use support::dns::{self, Proto};
use support::fake_api::FakeApi;
use support::fake_api::rbac::role;
use support::http;

/// Namespaces the services are spread over; the sidecar's is `ns-0`.
const NAMESPACES: usize = 100;
/// Ready endpoints per service.
const PODS: usize = 10;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (services, idle, wait) = if full {
        (10_000, Duration::from_secs(3), Duration::from_secs(120))
    } else {
        (300, Duration::from_millis(200), Duration::from_secs(20))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start the bench's tokio runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(600), bench(services, idle, wait)).await
    })
    .expect("the bench exceeded its time limit");
}

fn ns_of(s: usize) -> String {
    format!("ns-{}", s % NAMESPACES)
}

/// Service `svc-<s>`, its StatefulSet `web-<s>` and its one EndpointSlice
/// with `PODS` ready endpoints (10.x.y.1 .. 10.x.y.10, unique per service).
fn objects(s: usize) -> [Value; 3] {
    let (ns, svc) = (ns_of(s), format!("svc-{s}"));
    let ip = |i: usize| Ipv4Addr::new(10, (s >> 8) as u8, (s & 0xff) as u8, (i + 1) as u8);
    let endpoints: Vec<Value> = (0..PODS)
        .map(|i| {
            json!({
                "addresses": [ip(i).to_string()],
                "conditions": { "ready": true, "serving": true, "terminating": false },
                "hostname": format!("web-{i}"),
                "targetRef": { "kind": "Pod", "name": format!("web-{i}"), "namespace": ns },
            })
        })
        .collect();
    [
        json!({
            "kind": "Service",
            "metadata": { "name": svc, "namespace": ns, "labels": { "app": svc } },
            "spec": {
                "clusterIP": "None", "clusterIPs": ["None"], "selector": { "app": svc },
                "ports": [{ "name": "web", "port": 80, "protocol": "TCP" }],
            },
        }),
        json!({
            "kind": "StatefulSet",
            "metadata": { "name": format!("web-{s}"), "namespace": ns },
            "spec": {
                "replicas": PODS, "serviceName": svc,
                "selector": { "matchLabels": { "app": svc } },
                "template": {
                    "metadata": { "labels": { "app": svc } },
                    "spec": { "containers": [{ "name": "app", "image": "nginx" }] },
                },
            },
        }),
        json!({
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{svc}-abcde"), "namespace": ns,
                "labels": { "kubernetes.io/service-name": svc, "app": svc },
            },
            "addressType": "IPv4",
            "ports": [{ "name": "web", "port": 80, "protocol": "TCP" }],
            "endpoints": endpoints,
        }),
    ]
}

/// The server binary on the Kubernetes source, as a child process (killed
/// on drop), with `config` as its TOML configuration file.
struct Server {
    child: Child,
    dns: SocketAddr,
    admin: SocketAddr,
    started: Instant,
}

impl Server {
    fn spawn(api: &FakeApi, name: &str, config: &str) -> Server {
        let dns = SocketAddr::from(([127, 0, 0, 1], support::process::free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], support::process::free_port()));
        let path = api.dir().join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("write the server's config");
        let log = std::fs::File::create(api.dir().join(format!("{name}.log")))
            .expect("create the server's log");
        let mut cmd = support::process::serve_command(log, "warn");
        cmd.arg("--config")
            .arg(&path)
            .args(["--source", "kubernetes", "--kubeconfig"])
            .arg(api.kubeconfig())
            .args(["--listen", &dns.to_string(), "--admin", &admin.to_string()]);
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn the headless-dns binary");
        Server {
            child,
            dns,
            admin,
            started,
        }
    }

    fn rss_kb(&self) -> u64 {
        common::proc_kb(&self.child.id().to_string(), "status", "VmRSS")
    }

    /// Waits for `/ready`; the time since spawn.
    async fn wait_ready(&self, limit: Duration) -> Duration {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok((200, _)) = http::get(self.admin, "/ready").await {
                return self.started.elapsed();
            }
            assert!(Instant::now() < deadline, "not ready within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn rcode(&self, name: &str) -> ResponseCode {
        let m = dns::query(Proto::Udp, self.dns, name, RecordType::A).await;
        dns::rcode(&m)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One mode's figures.
struct Figures {
    ready: Duration,
    objects: u64,
    bytes: u64,
    rss_ready: u64,
    rss_steady: u64,
    requests: BTreeMap<String, usize>,
}

/// Runs the server with `config` until steady and measures it; checks
/// `served` names answer and `absent` ones are NXDOMAIN.
async fn run(
    api: &FakeApi,
    name: &str,
    config: &str,
    checks: (&[String], &[String]),
    idle: Duration,
    wait: Duration,
) -> Figures {
    let (objects0, bytes0) = api.traffic();
    let logged0 = api.requests().len();
    let server = Server::spawn(api, name, config);
    let ready = server.wait_ready(wait).await;
    let (objects, bytes) = api.traffic();
    let rss_ready = server.rss_kb();
    tokio::time::sleep(idle).await;
    let rss_steady = server.rss_kb();
    for n in checks.0 {
        assert_eq!(server.rcode(n).await, ResponseCode::NoError, "{name}: {n}");
    }
    for n in checks.1 {
        assert_eq!(server.rcode(n).await, ResponseCode::NXDomain, "{name}: {n}");
    }
    let mut requests = BTreeMap::new();
    for r in &api.requests()[logged0..] {
        let Some(plural) = r.plural else { continue };
        let scope = r.namespace.as_deref().unwrap_or("(cluster)");
        *requests
            .entry(format!("{} {plural} in {scope} -> {}", r.verb, r.status))
            .or_default() += 1;
    }
    Figures {
        ready,
        objects: objects - objects0,
        bytes: bytes - bytes0,
        rss_ready,
        rss_steady,
        requests,
    }
}

async fn bench(services: usize, idle: Duration, wait: Duration) {
    let api = FakeApi::start().await;
    for n in 0..NAMESPACES {
        api.apply(json!({ "kind": "Namespace", "metadata": { "name": format!("ns-{n}") } }));
    }
    for s in 0..services {
        for o in objects(s) {
            api.apply(o);
        }
    }
    let name = |s: usize| format!("web-0.svc-{s}.{}.svc.cluster.local", ns_of(s));
    let inside: Vec<String> = [0, NAMESPACES, services - NAMESPACES].map(name).to_vec();
    let outside: Vec<String> = [1, services - 1].map(name).to_vec();
    let all: Vec<String> = inside.iter().chain(&outside).cloned().collect();

    let wide = run(&api, "cluster-wide", "", (&all, &[]), idle, wait).await;
    // From here on only a Role in ns-0 is granted.
    api.grant(
        "ns-0",
        &role(&[
            ("", "services", &["list", "watch"]),
            ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
            ("apps", "statefulsets", &["list", "watch"]),
        ]),
    );
    let config = "[source]\nnamespaces = [\"ns-0\"]\n";
    let scoped = run(&api, "namespaced", config, (&inside, &outside), idle, wait).await;

    println!(
        "kubernetes source at start: {services} headless services ({} endpoints) in {NAMESPACES} namespaces; the sidecar's namespace holds {}",
        services * PODS,
        services / NAMESPACES
    );
    for (mode, f) in [("cluster-wide", &wide), ("--namespaces ns-0", &scoped)] {
        println!(
            "  {mode}: ready in {:.2} s; received {} objects, {:.1} MB; RSS at ready {} kB, steady {} kB",
            f.ready.as_secs_f64(),
            f.objects,
            f.bytes as f64 / 1e6,
            f.rss_ready,
            f.rss_steady
        );
        for (what, n) in &f.requests {
            println!("      {n:>3} x {what}");
        }
    }
}
