//! A Kubernetes cluster for the source tests, as the fake API server holds
//! it: object builders (namespaces, headless services, StatefulSets,
//! EndpointSlices, pods), the `web` StatefulSet behind headless service
//! `nginx`, the server pointed at the fake API, and a background checker
//! that queries while a test breaks things.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use headless_dns::config::{Config, SourceKind};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use super::dns::{self, Answer, Proto};
use super::eventually;
use super::fake_api::FakeApi;
use super::server::{TestServer, test_config};

/// Upper bound for one test; a hang fails instead of stalling CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// The watched kinds without `pods = "verified"`: Service, EndpointSlice,
/// Namespace, StatefulSet.
pub const WATCHED_KINDS: usize = 4;
/// Their plurals.
pub const WATCHED: [&str; WATCHED_KINDS] =
    ["services", "endpointslices", "namespaces", "statefulsets"];

/// The namespace of the `web` cluster.
pub const NS: &str = "default";

/// `<name>.cluster.local`.
pub fn fqdn(name: &str) -> String {
    format!("{name}.cluster.local")
}

/// `web-<i>.nginx.default.svc.cluster.local`.
pub fn pod_name(i: usize) -> String {
    fqdn(&format!("web-{i}.nginx.{NS}.svc"))
}

/// `nginx.default.svc.cluster.local`.
pub fn nginx() -> String {
    fqdn(&format!("nginx.{NS}.svc"))
}

/// A literal address.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test addresses are valid")
}

/// The address of `web-<i>` in its first life. Addresses fall as ordinals
/// rise, so an answer sorted by address is not mistaken for ordinal order.
pub fn web_ip(i: usize) -> IpAddr {
    ip(&format!("10.244.0.{}", 50 - i))
}

/// The addresses of `web-0` .. `web-<n-1>`, in ordinal order.
pub fn web_ips(n: usize) -> Vec<IpAddr> {
    (0..n).map(web_ip).collect()
}

/// The answers of the three-pod `web` cluster: each pod, then the set.
pub fn web_answers() -> Vec<(String, Answer)> {
    (0..3)
        .map(|i| (pod_name(i), Answer::ips(&[web_ip(i)])))
        .chain([(nginx(), Answer::ips(&web_ips(3)))])
        .collect()
}

pub fn namespace(name: &str) -> Value {
    json!({ "kind": "Namespace", "metadata": { "name": name } })
}

pub fn headless_service(ns: &str, name: &str, publish_not_ready: bool) -> Value {
    json!({
        "kind": "Service",
        "metadata": { "name": name, "namespace": ns, "labels": { "app": name } },
        "spec": {
            "clusterIP": "None",
            "clusterIPs": ["None"],
            "selector": { "app": name },
            "ports": [{ "name": "web", "port": 80, "protocol": "TCP" }],
            "publishNotReadyAddresses": publish_not_ready,
        },
    })
}

pub fn statefulset(ns: &str, name: &str, service: &str, replicas: u32) -> Value {
    json!({
        "kind": "StatefulSet",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "replicas": replicas,
            "serviceName": service,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "nginx" }] },
            },
        },
    })
}

/// A running pod of the `web` set with hostname `name` under subdomain nginx.
pub fn pod(ns: &str, name: &str, ip: &str, phase: &str) -> Value {
    json!({
        "kind": "Pod",
        "metadata": { "name": name, "namespace": ns, "labels": { "app": "web" } },
        "spec": {
            "containers": [{ "name": "app", "image": "nginx" }],
            "hostname": name,
            "subdomain": "nginx",
        },
        "status": {
            "phase": phase,
            "podIP": ip,
            "podIPs": [{ "ip": ip }],
            "conditions": [{ "type": "Ready", "status": "True" }],
        },
    })
}

/// One endpoint of a slice: a StatefulSet pod with its hostname.
#[derive(Clone, Copy)]
pub struct Endpoint<'a> {
    pub host: &'a str,
    pub ip: IpAddr,
    pub ready: bool,
    pub terminating: bool,
}

/// A ready, not terminating endpoint.
pub fn ready(host: &str, ip: IpAddr) -> Endpoint<'_> {
    Endpoint {
        host,
        ip,
        ready: true,
        terminating: false,
    }
}

/// The one EndpointSlice (`<service>-abcde`) of `service`.
pub fn endpoint_slice(ns: &str, service: &str, eps: &[Endpoint<'_>]) -> Value {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|e| {
            json!({
                "addresses": [e.ip.to_string()],
                "conditions": { "ready": e.ready, "serving": e.ready, "terminating": e.terminating },
                "hostname": e.host,
                "targetRef": { "kind": "Pod", "name": e.host, "namespace": ns },
            })
        })
        .collect();
    json!({
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-abcde"),
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{ "name": "web", "port": 80, "protocol": "TCP" }],
        "endpoints": endpoints,
    })
}

/// The `web` StatefulSet (governed by headless service `nginx`) with
/// `replicas` and the first `ready_pods` pods ready.
pub fn web_cluster(replicas: u32, ready_pods: usize) -> Vec<Value> {
    let names: Vec<String> = (0..ready_pods).map(|i| format!("web-{i}")).collect();
    let eps: Vec<Endpoint<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| ready(n, web_ip(i)))
        .collect();
    vec![
        namespace(NS),
        headless_service(NS, "nginx", false),
        statefulset(NS, "web", "nginx", replicas),
        endpoint_slice(NS, "nginx", &eps),
    ]
}

/// The web cluster (3 pods) plus a headless service with one ready pod:
/// (service, pod hostname, address).
pub fn web_cluster_and((service, pod, addr): (&str, &str, IpAddr)) -> Vec<Value> {
    let mut objects = web_cluster(3, 3);
    objects.push(headless_service(NS, service, false));
    objects.push(endpoint_slice(NS, service, &[ready(pod, addr)]));
    objects
}

/// Applies a slice for `nginx` with `web-<i>` ready at `web_ip(i)` for each i.
pub fn apply_web_slice(api: &FakeApi, pods: &[usize]) {
    let names: Vec<String> = pods.iter().map(|i| format!("web-{i}")).collect();
    let eps: Vec<Endpoint<'_>> = names
        .iter()
        .zip(pods)
        .map(|(n, i)| ready(n, web_ip(*i)))
        .collect();
    api.apply(endpoint_slice(NS, "nginx", &eps));
}

/// The test config with the Kubernetes source pointed at `api`.
pub fn k8s_config(api: &FakeApi) -> Config {
    let mut c = test_config(Vec::new());
    c.source.kind = SourceKind::Kubernetes;
    c.source.kubeconfig = Some(api.kubeconfig().to_path_buf());
    c
}

/// A fake cluster with `objects`, and the server synced against it.
pub async fn start_synced(objects: Vec<Value>) -> (FakeApi, TestServer) {
    let api = FakeApi::with_objects(objects).await;
    let server = TestServer::start(k8s_config(&api)).await;
    (api, server)
}

/// The web cluster plus a headless service `doomed` whose pod `d-0` the
/// 410 tests delete while no watch is connected: synced, `d-0` answering,
/// every watch open. Returns d-0's name too.
pub async fn start_with_doomed() -> (FakeApi, TestServer, String) {
    let (api, server) = start_synced(web_cluster_and(("doomed", "d-0", ip("10.246.0.1")))).await;
    let doomed = fqdn("d-0.doomed.default.svc");
    server
        .assert_a(&doomed, &Answer::ips(&[ip("10.246.0.1")]))
        .await;
    api.wait_for_watches(WATCHED_KINDS).await;
    (api, server, doomed)
}

/// Queries `expected` names round-robin (UDP, every 8th over TCP) in the
/// background, at most [`MAX_CHECKS`] queries, and counts answers that
/// differ from the expected ones.
pub struct Checker {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<(usize, usize, Vec<String>)>,
}

/// The most queries one [`Checker`] sends.
pub const MAX_CHECKS: usize = 2_000_000;

impl Checker {
    pub fn spawn(dns: SocketAddr, expected: Vec<(String, Answer)>) -> Checker {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let (s, d) = (Arc::clone(&stop), Arc::clone(&done));
        let task = tokio::spawn(async move {
            let (mut right, mut wrong, mut samples) = (0usize, 0usize, Vec::new());
            for i in 0..MAX_CHECKS {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let (name, want) = &expected[i % expected.len()];
                let proto = if i % 8 == 7 { Proto::Tcp } else { Proto::Udp };
                let got = Answer::of_result(&dns::try_query(proto, dns, name, RecordType::A).await);
                if &got == want {
                    right += 1;
                } else {
                    wrong += 1;
                    if samples.len() < 10 {
                        samples.push(format!("{name} over {proto:?}: {got:?}"));
                    }
                }
                d.fetch_add(1, Ordering::Relaxed);
            }
            (right, wrong, samples)
        });
        Checker { stop, done, task }
    }

    /// Waits until the checker has made `n` more queries.
    pub async fn progress(&self, n: usize) {
        let target = self.done.load(Ordering::Relaxed) + n;
        eventually(&format!("{n} more checked queries"), || async {
            let done = self.done.load(Ordering::Relaxed);
            if done >= target || self.task.is_finished() {
                Ok(())
            } else {
                Err(format!("{done} queries so far"))
            }
        })
        .await;
    }

    /// Stops and returns (right, wrong, first wrong answers).
    pub async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("checker did not panic")
    }
}
