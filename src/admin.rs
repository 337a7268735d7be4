//! The admin HTTP side door: health, readiness, metrics, the record browser
//! (the page at `/` and its JSON, `records`), and the simulator's controls.
//!
//! Built as `fn router(..) -> Router` apart from any socket, so tests can call
//! it directly and the binary serves it on the admin listener (127.0.0.1 by
//! default). Nothing here is on the DNS query path.
//!
//! Two doors: `/health`, `/ready` and `/metrics` answer whoever reaches the
//! listener (the kubelet, Prometheus); `/`, `/records` and `/sim/...` are
//! behind the [`gate`] (loopback clients, or the `[admin] token_file`
//! token, per `[admin] require_token`). The router needs the peer address:
//! serve it with `into_make_service_with_connect_info::<SocketAddr>()`
//! (without it every client counts as beyond loopback).

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use std::sync::Arc;

use crate::dns::Answerer;
use crate::dns::forward::ForwardStats;
use crate::history::History;
use crate::index::{Index, ObjectKey};
use crate::sources::sim::{SimCommand, SimError, SimHandle};
use crate::telemetry::Metrics;

pub mod gate;
mod records;

pub use gate::Gate;
pub use records::{EndpointJson, OrdinalJson, PENDING_LISTED, ServiceJson, StatefulSetJson};

/// The record browser: per headless service its StatefulSets' ordinals and
/// every name's address history, the change timeline and a chart, refreshed
/// from `/records` every second without reloading; no external assets.
const PAGE: &str = include_str!("admin.html");

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The index (read side).
    pub index: Index,
    /// The record browser's history.
    pub history: Arc<History>,
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
    /// Who may read the records and drive the simulator.
    pub gate: Arc<Gate>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let gated = Router::new()
        .route("/", get(|| async { axum::response::Html(PAGE) }))
        .route("/records", get(records::records))
        .route("/sim/statefulsets/{ns}/{name}/scale", post(sim::<Scale>))
        .route("/sim/pods/{ns}/{name}/delete", post(sim::<DeletePod>))
        .route("/sim/pods/{ns}/{name}/ready", post(sim::<SetReady>))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.gate),
            gate::guard,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(gated)
        .with_state(state)
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    s.metrics.record_history(s.history.stats());
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
