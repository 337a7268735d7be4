//! The admin HTTP side door: health, readiness, the record browser's JSON,
//! and the simulator's controls.
//!
//! Built as `fn router(..) -> Router` apart from any socket, so tests can call
//! it directly and the binary serves it on the admin listener (127.0.0.1 by
//! default). Nothing here is on the DNS query path.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::dns::Answerer;
use crate::dns::forward::ForwardStats;
use crate::index::{Index, ObjectKey, ServiceKind, ServiceView};
use crate::sources::sim::{SimCommand, SimError, SimHandle};
use crate::telemetry::Metrics;

/// The record browser: one table per headless service, pods in ordinal order,
/// refreshed from `/records` every second.
const PAGE: &str = include_str!("admin.html");

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The index (read side).
    pub index: Index,
    /// The simulator, when it runs.
    pub sim: Option<SimHandle>,
    /// The query path (for its counters).
    pub dns: Arc<Answerer>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Forwarding counters, when forwarding is on.
    pub forward: Option<Arc<ForwardStats>>,
    /// Set when shutting down: readiness answers 503 from then on.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Set when a serving thread or task died: health answers 503.
    pub fault: crate::fault::Fault,
    /// API permissions the Kubernetes source is refused: readiness answers
    /// 503 naming them while any is.
    pub access: crate::sources::access::Access,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(|| async { axum::response::Html(PAGE) }))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/records", get(records))
        .route("/metrics", get(metrics))
        .route("/sim/statefulsets/{ns}/{name}/scale", post(sim::<Scale>))
        .route("/sim/pods/{ns}/{name}/delete", post(sim::<DeletePod>))
        .route("/sim/pods/{ns}/{name}/ready", post(sim::<SetReady>))
        .with_state(state)
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(&s.dns, &s.index, s.forward.as_deref()),
    )
}

/// 200 while every serving thread and task lives; 503 naming what died.
async fn health(State(s): State<AdminState>) -> (StatusCode, String) {
    match s.fault.what() {
        None => (StatusCode::OK, "ok\n".into()),
        Some(what) => (StatusCode::SERVICE_UNAVAILABLE, format!("{what} died\n")),
    }
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    if s.draining.load(std::sync::atomic::Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "reason": "shutting down"})),
        )
    } else if let Some(reason) = s.access.problem() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "reason": reason})),
        )
    } else if s.index.is_synced() {
        (StatusCode::OK, Json(serde_json::json!({"ready": true})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                serde_json::json!({"ready": false, "reason": "sources have not completed their first sync"}),
            ),
        )
    }
}

/// `/records` filters.
#[derive(Deserialize)]
pub struct RecordsFilter {
    namespace: Option<String>,
    service: Option<String>,
}

/// One service in `/records`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServiceJson {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIP, Headless or ExternalName.
    #[serde(rename = "type")]
    pub kind: String,
    /// The DNS name.
    pub fqdn: String,
    /// Cluster IPs.
    pub cluster_ips: Vec<String>,
    /// ExternalName target.
    pub external_name: Option<String>,
    /// Ports as `name/proto:port`.
    pub ports: Vec<String>,
    /// Endpoints in ordinal order.
    pub endpoints: Vec<EndpointJson>,
}

/// One endpoint in `/records`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EndpointJson {
    /// DNS label.
    pub name: String,
    /// Full DNS name.
    pub fqdn: String,
    /// Addresses.
    pub addresses: Vec<String>,
    /// Ready condition.
    pub ready: bool,
    /// Served in DNS.
    pub served: bool,
    /// Terminating condition.
    pub terminating: bool,
    /// Pod name.
    pub pod: Option<String>,
    /// Milliseconds since its addresses or readiness last changed.
    pub changed_ms_ago: u64,
}

async fn records(
    State(s): State<AdminState>,
    Query(f): Query<RecordsFilter>,
) -> Json<serde_json::Value> {
    let zone = &s.index.settings().zone;
    let now = crate::clock::unix_ms();
    let services: Vec<ServiceJson> = s
        .index
        .services()
        .iter()
        .filter(|v| f.matches(&v.record.key))
        .map(|v| service_json(v, zone, now))
        .collect();
    Json(
        serde_json::json!({ "synced": s.index.is_synced(), "serial": s.index.serial(), "services": services }),
    )
}

impl RecordsFilter {
    /// Whether the service `key` passes the filter (names compare ignoring case).
    fn matches(&self, key: &ObjectKey) -> bool {
        let passes = |wanted: &Option<String>, name: &str| {
            wanted
                .as_deref()
                .is_none_or(|w| w.eq_ignore_ascii_case(name))
        };
        passes(&self.namespace, key.namespace()) && passes(&self.service, key.name())
    }
}

/// One service of `/records`, with its endpoints' ages relative to `now`
/// (Unix milliseconds).
fn service_json(v: &ServiceView, zone: &str, now: u64) -> ServiceJson {
    let r = &v.record;
    let fqdn = format!("{}.{}.svc.{zone}", r.key.name(), r.key.namespace());
    let (kind, cluster_ips, external_name) = match &r.kind {
        ServiceKind::ClusterIp(ips) => (
            "ClusterIP",
            ips.iter().map(|i| i.to_string()).collect(),
            None,
        ),
        ServiceKind::Headless => ("Headless", Vec::new(), None),
        ServiceKind::ExternalName(n) => ("ExternalName", Vec::new(), Some(n.clone())),
    };
    let ports = r
        .ports
        .iter()
        .map(|p| {
            let name = p.name.as_deref().unwrap_or("");
            format!("{name}/{}:{}", p.protocol, p.port)
        })
        .collect();
    let endpoints = v
        .endpoints()
        .map(|e| EndpointJson {
            fqdn: format!("{}.{fqdn}", e.label),
            name: e.label.to_string(),
            addresses: e.addresses.iter().map(|a| a.to_string()).collect(),
            ready: e.ready,
            served: e.served,
            terminating: e.terminating,
            pod: e.pod.map(str::to_string),
            changed_ms_ago: now.saturating_sub(e.changed_ms),
        })
        .collect();
    ServiceJson {
        namespace: r.key.namespace().to_string(),
        name: r.key.name().to_string(),
        kind: kind.into(),
        fqdn,
        cluster_ips,
        external_name,
        ports,
        endpoints,
    }
}

/// The `{ns}/{name}` of a `/sim/...` path.
#[derive(Deserialize)]
struct ObjectPath {
    ns: String,
    name: String,
}

/// The query of a `/sim/...` request: what to do to the object the path names.
trait SimRequest: DeserializeOwned + Send + 'static {
    fn command(self, key: ObjectKey) -> SimCommand;
}

/// `?replicas=N` of `/sim/statefulsets/{ns}/{name}/scale`.
#[derive(Deserialize)]
struct Scale {
    replicas: u32,
}

/// `/sim/pods/{ns}/{name}/delete` (no query).
#[derive(Deserialize)]
struct DeletePod {}

/// `?value=true|false` of `/sim/pods/{ns}/{name}/ready`.
#[derive(Deserialize)]
struct SetReady {
    value: bool,
}

impl SimRequest for Scale {
    fn command(self, key: ObjectKey) -> SimCommand {
        let replicas = self.replicas;
        SimCommand::Scale { key, replicas }
    }
}

impl SimRequest for DeletePod {
    fn command(self, key: ObjectKey) -> SimCommand {
        SimCommand::DeletePod { key }
    }
}

impl SimRequest for SetReady {
    fn command(self, key: ObjectKey) -> SimCommand {
        SimCommand::SetReady {
            key,
            ready: self.value,
        }
    }
}

/// Hands a `/sim/...` request to the simulator and reports its answer.
async fn sim<R: SimRequest>(
    State(s): State<AdminState>,
    Path(p): Path<ObjectPath>,
    Query(request): Query<R>,
) -> (StatusCode, String) {
    let Some(sim) = &s.sim else {
        return (
            StatusCode::NOT_FOUND,
            "the simulator is not enabled (file source with [sim] enabled)\n".into(),
        );
    };
    let cmd = request.command(ObjectKey::new(&p.ns, &p.name));
    match sim.send(cmd).await {
        Ok(msg) => (StatusCode::OK, msg + "\n"),
        Err(e @ SimError::NotFound(_)) => (StatusCode::NOT_FOUND, format!("{e}\n")),
        Err(e @ SimError::Invalid(_)) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}
