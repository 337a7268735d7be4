//! A fake Kubernetes API server, so the Kubernetes source can be tested with
//! the real `kube` client (and `kubectl`) without a cluster.
//!
//! No kube-apiserver can be installed here, so this speaks just enough of the
//! real HTTP protocol: discovery (`/api`, `/apis`, `/api/v1`,
//! `/apis/<group>/<version>`, `/version`), list with a global, monotonically
//! increasing `resourceVersion` and `limit`/`continue` paging, get, and
//! `?watch=true&resourceVersion=N` streams of newline-delimited JSON events
//! (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`) replayed from a
//! bounded history. A resume from a version older than the history gets the
//! `410 Gone` the real server sends: an `ERROR` event carrying a `Status`
//! inside a 200 stream (or, on request, HTTP 410 on the watch request itself).
//! Label selectors (`k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (..)`,
//! `k notin (..)`) and simple field selectors (`path=v`, `path!=v`) filter both
//! lists and watches; `timeoutSeconds` ends a watch cleanly.
//!
//! It serves Namespaces, Services and Pods (core/v1), EndpointSlices
//! (discovery.k8s.io/v1) and StatefulSets (apps/v1), on plain HTTP at
//! `127.0.0.1:<ephemeral>`, and writes a kubeconfig pointing at itself.
//! Tests change the cluster through [`FakeApi`] (`apply`, `delete`) and break
//! it on purpose (`drop_watches`, `close_watches`, `expire_history`,
//! `pause_watches`, `hold_lists`, `fail_next`). The API is read-only over
//! HTTP: nothing here is a real apiserver, only its wire behaviour.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// One resource type the fake server serves.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// `Service`.
    pub kind: &'static str,
    /// `services`: the URL segment.
    pub plural: &'static str,
    /// `service`.
    pub singular: &'static str,
    /// API group; `""` is the core group (`/api/v1`).
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
}

impl ResourceType {
    /// `v1` or `<group>/<version>`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource type of a kind (`Service`, `EndpointSlice`, ...).
    pub fn by_kind(kind: &str) -> Option<&'static ResourceType> {
        RESOURCES.iter().find(|r| r.kind == kind)
    }

    fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }
}

/// Every resource type served.
pub static RESOURCES: [ResourceType; 5] = [
    ResourceType {
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        group: "",
        version: "v1",
        namespaced: false,
        short_names: &["ns"],
    },
    ResourceType {
        kind: "Service",
        plural: "services",
        singular: "service",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["svc"],
    },
    ResourceType {
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["po"],
    },
    ResourceType {
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        group: "discovery.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &[],
    },
    ResourceType {
        kind: "StatefulSet",
        plural: "statefulsets",
        singular: "statefulset",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &["sts"],
    },
];

/// A request the fake server received (for asserting on what a client asks).
#[derive(Clone, Debug)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Decoded query parameters in order.
    pub query: Vec<(String, String)>,
    /// `watch=true` (or `1`).
    pub watch: bool,
    /// The resource type, if the path named one.
    pub plural: Option<&'static str>,
    /// What the server answered: an HTTP status; a watch that got a 410 in
    /// its stream is recorded as 410 too.
    pub status: u16,
}

impl ApiRequest {
    /// The value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Display for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        write!(f, " -> {}", self.status)
    }
}

/// A parsed label or field selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selector {
    /// Parses the Kubernetes selector grammar; set-based forms only when
    /// `set_based` (label selectors), as field selectors have none.
    pub fn parse(s: &str, set_based: bool) -> Result<Self, String> {
        let mut terms = Vec::new();
        let (mut depth, mut start) = (0i32, 0usize);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    terms.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push(&s[start..]);
        let mut reqs = Vec::new();
        for t in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
            reqs.push(Self::term(t, set_based)?);
        }
        Ok(Self(reqs))
    }

    fn term(t: &str, set_based: bool) -> Result<Requirement, String> {
        let key = |k: &str| -> Result<String, String> {
            let k = k.trim();
            let ok = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
            if ok {
                Ok(k.to_string())
            } else {
                Err(format!("invalid selector key {k:?} in {t:?}"))
            }
        };
        if let Some(open) = t.find('(') {
            if !set_based || !t.ends_with(')') {
                return Err(format!("invalid selector term {t:?}"));
            }
            let head: Vec<&str> = t[..open].split_whitespace().collect();
            let values: Vec<String> = t[open + 1..t.len() - 1]
                .split(',')
                .map(|v| v.trim().to_string())
                .collect();
            return match head.as_slice() {
                [k, "in"] => Ok(Requirement::In(key(k)?, values)),
                [k, "notin"] => Ok(Requirement::NotIn(key(k)?, values)),
                _ => Err(format!("invalid set-based term {t:?}")),
            };
        }
        if let Some((k, v)) = t.split_once("!=") {
            return Ok(Requirement::NotEq(key(k)?, v.trim().to_string()));
        }
        if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            return Ok(Requirement::Eq(key(k)?, v.trim().to_string()));
        }
        if !set_based {
            return Err(format!("field selector {t:?} needs an operator"));
        }
        match t.strip_prefix('!') {
            Some(k) => Ok(Requirement::NotExists(key(k)?)),
            None => Ok(Requirement::Exists(key(t)?)),
        }
    }

    /// True when every requirement holds for `get` (key -> value).
    fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        })
    }

    /// Label selector match against `metadata.labels`.
    pub fn matches_labels(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.matches_with(|k| labels.get(k).and_then(Value::as_str))
    }

    /// Field selector match: dotted paths into the object; a missing field
    /// compares as the empty string, as the apiserver's field sets do.
    pub fn matches_fields(&self, obj: &Value) -> bool {
        self.matches_with(|k| {
            Some(
                k.split('.')
                    .try_fold(obj, |o, p| o.get(p))
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            )
        })
    }
}

/// What a watch stream's body receives.
enum Frame {
    /// One JSON event line (newline included).
    Line(Bytes),
    /// End the stream cleanly (terminating chunk), as the apiserver does on
    /// `timeoutSeconds`.
    End,
    /// Break the connection mid-stream (no terminating chunk).
    Abort,
}

struct Watcher {
    rt: &'static ResourceType,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Frame>,
}

impl Watcher {
    fn selects(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
            && self.labels.matches_labels(obj)
            && self.fields.matches_fields(obj)
    }

    /// The event this watcher sees for a change from `old` to `new`: an
    /// object that leaves the selection is DELETED for it, one that enters it
    /// ADDED (as the apiserver's watch filtering does).
    fn view_of(&self, ev: &Change) -> Option<(&'static str, Value)> {
        if ev.rt != self.rt {
            return None;
        }
        let was = ev.old.as_ref().is_some_and(|o| self.selects(o));
        match (&ev.new, was) {
            (Some(n), true) if self.selects(n) => Some(("MODIFIED", n.clone())),
            (Some(n), false) if self.selects(n) => Some(("ADDED", n.clone())),
            (Some(n), true) => Some(("DELETED", n.clone())),
            (None, true) => Some(("DELETED", ev.deleted.clone()?)),
            _ => None,
        }
    }

    fn send(&self, type_: &str, object: &Value) -> bool {
        self.tx.send(Frame::Line(event_line(type_, object))).is_ok()
    }
}

/// One change in the history.
struct Change {
    rv: u64,
    rt: &'static ResourceType,
    old: Option<Value>,
    new: Option<Value>,
    /// For a deletion: the last state, stamped with the deletion's version.
    deleted: Option<Value>,
}

type Key = (&'static str, String, String);

struct ClusterState {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    /// Changes with `rv <= floor` are forgotten: resuming from before is 410.
    floor: u64,
    history_limit: usize,
    watchers: Vec<Watcher>,
    requests: Vec<ApiRequest>,
    fail_next: u32,
    gone_as_http: bool,
    watches_paused: bool,
    held_lists: HashSet<&'static str>,
    next_uid: u64,
}

impl ClusterState {
    fn record(&mut self, change: Change) {
        self.watchers.retain(|w| match w.view_of(&change) {
            Some((t, o)) => w.send(t, &o),
            None => !w.tx.is_closed(),
        });
        self.history.push_back(change);
        while self.history.len() > self.history_limit {
            if let Some(c) = self.history.pop_front() {
                self.floor = c.rv;
            }
        }
    }

    fn take_watches_clean(&mut self) -> usize {
        self.take_watchers(|| Frame::End)
    }

    fn take_watchers(&mut self, frame: impl Fn() -> Frame) -> usize {
        let n = self.watchers.iter().filter(|w| !w.tx.is_closed()).count();
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(frame());
        }
        n
    }
}

struct Inner {
    state: Mutex<ClusterState>,
    /// Bumped whenever a pause or hold is lifted, to wake waiting requests.
    gate: watch::Sender<u64>,
    addr: SocketAddr,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, ClusterState> {
        // A panic while holding the lock already fails the test; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake API server. Dropping it stops the server and ends every
/// open watch.
pub struct FakeApi {
    inner: Arc<Inner>,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

fn event_line(type_: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({ "type": type_, "object": object }))
        .expect("a JSON value always serializes");
    v.push(b'\n');
    Bytes::from(v)
}

fn status(code: u16, reason: &str, message: impl Into<String>) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code,
    })
}

fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("static parts always build a response")
}

fn status_response(code: u16, reason: &str, message: impl Into<String>) -> Response {
    json_response(code, &status(code, reason, message))
}

impl FakeApi {
    /// Starts the server on `127.0.0.1:0` and writes its kubeconfig.
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server on loopback");
        let addr = listener
            .local_addr()
            .expect("a bound socket has an address");
        let inner = Arc::new(Inner {
            state: Mutex::new(ClusterState {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                floor: 1,
                history_limit: 100_000,
                watchers: Vec::new(),
                requests: Vec::new(),
                fail_next: 0,
                gone_as_http: false,
                watches_paused: false,
                held_lists: HashSet::new(),
                next_uid: 1,
            }),
            gate: watch::channel(0).0,
            addr,
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().expect("create a temp dir for the kubeconfig");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: http://{addr}
    insecure-skip-tls-verify: true
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: default
current-context: fake
users:
- name: fake
  user: {{}}
"
            ),
        )
        .expect("write the kubeconfig");
        FakeApi {
            inner,
            kubeconfig,
            dir,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The generated kubeconfig (context `fake`, no credentials).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A scratch directory that lives as long as the server (kubectl's cache).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates or replaces an object (JSON with `kind` and `metadata.name`;
    /// namespaced kinds default to namespace `default`). Bumps the global
    /// resourceVersion, stamps it on the object and tells open watches.
    /// Returns the new resourceVersion.
    pub fn apply(&self, mut obj: Value) -> u64 {
        let kind = obj["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("apply: object has no kind: {obj}"))
            .to_string();
        let rt = ResourceType::by_kind(&kind)
            .unwrap_or_else(|| panic!("apply: the fake API does not serve kind {kind}"));
        obj["apiVersion"] = json!(rt.api_version());
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("apply: object has no metadata.name: {obj}"))
            .to_string();
        let ns = if rt.namespaced {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            obj["metadata"]["namespace"] = json!(ns);
            ns
        } else {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            String::new()
        };
        let mut st = self.inner.lock();
        st.rv += 1;
        let rv = st.rv;
        let key = (rt.plural, ns, name);
        let old = st.objects.get(&key).cloned();
        let meta = &mut obj["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        match &old {
            Some(o) => {
                meta["uid"] = o["metadata"]["uid"].clone();
                meta["creationTimestamp"] = o["metadata"]["creationTimestamp"].clone();
            }
            None => {
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", st.next_uid));
                meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                st.next_uid += 1;
            }
        }
        st.objects.insert(key, obj.clone());
        st.record(Change {
            rv,
            rt,
            old,
            new: Some(obj),
            deleted: None,
        });
        rv
    }

    /// Deletes an object (`ns` is ignored for cluster-scoped kinds). Returns
    /// false if it did not exist (nothing changes then).
    pub fn delete(&self, kind: &str, ns: &str, name: &str) -> bool {
        let rt = ResourceType::by_kind(kind)
            .unwrap_or_else(|| panic!("delete: the fake API does not serve kind {kind}"));
        let ns = if rt.namespaced { ns } else { "" };
        let mut st = self.inner.lock();
        let Some(old) = st
            .objects
            .remove(&(rt.plural, ns.to_string(), name.to_string()))
        else {
            return false;
        };
        st.rv += 1;
        let rv = st.rv;
        let mut deleted = old.clone();
        deleted["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.record(Change {
            rv,
            rt,
            old: Some(old),
            new: None,
            deleted: Some(deleted),
        });
        true
    }

    /// The stored object, if any.
    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let rt = ResourceType::by_kind(kind)?;
        let ns = if rt.namespaced { ns } else { "" };
        self.inner
            .lock()
            .objects
            .get(&(rt.plural, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().rv
    }

    /// Breaks every open watch connection mid-stream (no terminating chunk:
    /// the client sees an I/O error). Returns how many were open.
    pub fn drop_watches(&self) -> usize {
        self.inner.lock().take_watchers(|| Frame::Abort)
    }

    /// Ends every open watch cleanly, as the apiserver does when a watch's
    /// `timeoutSeconds` runs out. Returns how many were open.
    pub fn close_watches(&self) -> usize {
        self.inner.lock().take_watches_clean()
    }

    /// Forgets the history: the next watch resuming from any version before
    /// the current one gets 410 Gone and must re-list.
    pub fn expire_history(&self) {
        let mut st = self.inner.lock();
        st.history.clear();
        st.floor = st.rv;
    }

    /// Keeps at most `n` changes of history (older resumes get 410).
    pub fn set_history_limit(&self, n: usize) {
        self.inner.lock().history_limit = n;
    }

    /// New watch requests wait (the request hangs) until [`FakeApi::resume_watches`].
    pub fn pause_watches(&self) {
        self.inner.lock().watches_paused = true;
    }

    /// Lets waiting and new watch requests through.
    pub fn resume_watches(&self) {
        self.inner.lock().watches_paused = false;
        self.inner.gate.send_modify(|g| *g += 1);
    }

    /// List requests for these resources (plurals) wait until
    /// [`FakeApi::release_lists`]: the client can never complete its first sync.
    pub fn hold_lists(&self, plurals: &[&str]) {
        let mut st = self.inner.lock();
        for p in plurals {
            let rt = RESOURCES
                .iter()
                .find(|r| r.plural == *p)
                .unwrap_or_else(|| panic!("hold_lists: unknown resource {p}"));
            st.held_lists.insert(rt.plural);
        }
    }

    /// Lets held list requests through.
    pub fn release_lists(&self) {
        self.inner.lock().held_lists.clear();
        self.inner.gate.send_modify(|g| *g += 1);
    }

    /// The next `n` list, get or watch requests fail with HTTP 500.
    pub fn fail_next(&self, n: u32) {
        self.inner.lock().fail_next = n;
    }

    /// Answer a too-old watch resume with HTTP 410 on the request itself
    /// instead of an ERROR event inside a 200 stream.
    pub fn set_gone_as_http_status(&self, yes: bool) {
        self.inner.lock().gone_as_http = yes;
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch that
    /// asked for bookmarks.
    pub fn send_bookmarks(&self) {
        let mut st = self.inner.lock();
        let rv = st.rv;
        st.watchers
            .retain(|w| !w.bookmarks || w.send("BOOKMARK", &bookmark(w.rt, rv, false)));
    }

    /// Open watch streams.
    pub fn open_watches(&self) -> usize {
        let mut st = self.inner.lock();
        st.watchers.retain(|w| !w.tx.is_closed());
        st.watchers.len()
    }

    /// Waits until at least `n` watches are open; false on timeout.
    pub async fn wait_for_watches(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.open_watches() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.inner.lock().requests.clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
        self.inner.lock().take_watches_clean();
    }
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({ "resourceVersion": rv.to_string(), "creationTimestamp": null });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({ "kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta })
}

/// What a resource path asks for.
enum Target {
    Collection {
        rt: &'static ResourceType,
        namespace: Option<String>,
    },
    Object {
        rt: &'static ResourceType,
        namespace: String,
        name: String,
    },
}

fn resource_target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let find = |p: &str| ResourceType::by_path(group, version, p);
    match rest {
        [plural] => Some(Target::Collection {
            rt: find(plural)?,
            namespace: None,
        }),
        [plural, name] => {
            let rt = find(plural).filter(|r| !r.namespaced)?;
            Some(Target::Object {
                rt,
                namespace: String::new(),
                name: name.to_string(),
            })
        }
        ["namespaces", ns, plural] => Some(Target::Collection {
            rt: find(plural).filter(|r| r.namespaced)?,
            namespace: Some(ns.to_string()),
        }),
        ["namespaces", ns, plural, name] => Some(Target::Object {
            rt: find(plural).filter(|r| r.namespaced)?,
            namespace: ns.to_string(),
            name: name.to_string(),
        }),
        _ => None,
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query: Vec<(String, String)> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let target = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => resource_target("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => resource_target(g, v, rest),
        _ => None,
    };
    let watch = query
        .iter()
        .any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
    let mut log = ApiRequest {
        method: req.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        watch,
        plural: target.as_ref().map(|t| match t {
            Target::Collection { rt, .. } | Target::Object { rt, .. } => rt.plural,
        }),
        status: 200,
    };
    let response = match target {
        None => discovery(&inner, &segs),
        Some(_) if req.method() != Method::GET => status_response(
            405,
            "MethodNotAllowed",
            "the fake API server is read-only over HTTP; tests change it through FakeApi",
        ),
        Some(t) => resource(&inner, t, &query, watch, &accept, &mut log).await,
    };
    if log.status == 200 {
        log.status = response.status().as_u16();
    }
    inner.lock().requests.push(log);
    response
}

fn discovery(inner: &Inner, segs: &[&str]) -> Response {
    let groups: Vec<(&str, &str)> = {
        let mut g: Vec<(&str, &str)> = RESOURCES
            .iter()
            .filter(|r| !r.group.is_empty())
            .map(|r| (r.group, r.version))
            .collect();
        g.dedup();
        g
    };
    let group_json = |g: &str, v: &str| {
        json!({
            "name": g,
            "versions": [{ "groupVersion": format!("{g}/{v}"), "version": v }],
            "preferredVersion": { "groupVersion": format!("{g}/{v}"), "version": v },
        })
    };
    let resource_list = |g: &str, v: &str| {
        let gv = if g.is_empty() {
            v.to_string()
        } else {
            format!("{g}/{v}")
        };
        let resources: Vec<Value> = RESOURCES
            .iter()
            .filter(|r| r.group == g && r.version == v)
            .map(|r| {
                json!({
                    "name": r.plural,
                    "singularName": r.singular,
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "list", "watch"],
                    "shortNames": r.short_names,
                })
            })
            .collect();
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources })
    };
    match segs {
        ["version"] => json_response(
            200,
            &json!({
                "major": "1", "minor": "34", "gitVersion": "v1.34.0-fake",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
                "platform": "linux/amd64",
            }),
        ),
        ["api"] => json_response(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": inner.addr.to_string() }],
            }),
        ),
        ["apis"] => json_response(
            200,
            &json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": groups.iter().map(|(g, v)| group_json(g, v)).collect::<Vec<_>>(),
            }),
        ),
        ["api", "v1"] => json_response(200, &resource_list("", "v1")),
        ["apis", g] if groups.iter().any(|(x, _)| x == g) => {
            let v = groups.iter().find(|(x, _)| x == g).map_or("v1", |(_, v)| v);
            let mut body = group_json(g, v);
            body["kind"] = json!("APIGroup");
            body["apiVersion"] = json!("v1");
            json_response(200, &body)
        }
        ["apis", g, v] if groups.iter().any(|(x, y)| x == g && y == v) => {
            json_response(200, &resource_list(g, v))
        }
        _ => status_response(
            404,
            "NotFound",
            format!(
                "the server could not find the requested resource ({})",
                segs.join("/")
            ),
        ),
    }
}

/// Waits while `blocked` holds, re-checking whenever a gate opens.
async fn wait_gate(inner: &Inner, blocked: impl Fn(&ClusterState) -> bool) {
    loop {
        let mut rx = inner.gate.subscribe();
        let is_blocked = blocked(&inner.lock());
        if !is_blocked {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn resource(
    inner: &Arc<Inner>,
    target: Target,
    query: &[(String, String)],
    watch: bool,
    accept: &str,
    log: &mut ApiRequest,
) -> Response {
    let param = |k: &str| param(query, k);
    {
        let mut st = inner.lock();
        if st.fail_next > 0 {
            st.fail_next -= 1;
            return status_response(500, "InternalError", "injected failure (fail_next)");
        }
    }
    let (rt, namespace) = match target {
        Target::Object {
            rt,
            namespace,
            name,
        } => {
            let obj = inner
                .lock()
                .objects
                .get(&(rt.plural, namespace, name.clone()))
                .cloned();
            return match obj {
                Some(o) => json_response(200, &o),
                None => status_response(
                    404,
                    "NotFound",
                    format!("{}.{} \"{name}\" not found", rt.plural, rt.group),
                ),
            };
        }
        Target::Collection { rt, namespace } => (rt, namespace),
    };
    let labels = match Selector::parse(param("labelSelector").unwrap_or(""), true) {
        Ok(s) => s,
        Err(e) => return status_response(400, "BadRequest", e),
    };
    let fields = match Selector::parse(param("fieldSelector").unwrap_or(""), false) {
        Ok(s) => s,
        Err(e) => return status_response(400, "BadRequest", e),
    };
    let w = Watcher {
        rt,
        namespace,
        labels,
        fields,
        bookmarks: param("allowWatchBookmarks") == Some("true"),
        tx: mpsc::unbounded_channel().0,
    };
    if watch {
        watch_response(inner, w, query, log).await
    } else {
        wait_gate(inner, |st| st.held_lists.contains(rt.plural)).await;
        list_response(inner, &w, param("limit"), param("continue"), accept)
    }
}

fn list_response(
    inner: &Inner,
    w: &Watcher,
    limit: Option<&str>,
    cont: Option<&str>,
    accept: &str,
) -> Response {
    let limit = limit
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // The continue token is "<rv>|<namespace>|<name>": the list's version and
    // the last key served. Later pages show current objects; every change
    // after <rv> is replayed by the watch that follows, as with a real
    // server whose snapshot moved on.
    let (list_rv, after) = match cont {
        Some(c) => {
            let mut parts = c.splitn(3, '|');
            match (
                parts.next().and_then(|r| r.parse::<u64>().ok()),
                parts.next(),
                parts.next(),
            ) {
                (Some(rv), Some(ns), Some(name)) => {
                    (Some(rv), Some((ns.to_string(), name.to_string())))
                }
                _ => return status_response(400, "BadRequest", "invalid continue token"),
            }
        }
        None => (None, None),
    };
    let st = inner.lock();
    let rv = list_rv.unwrap_or(st.rv);
    let mut items = Vec::new();
    let mut next = None;
    for ((plural, ns, name), obj) in &st.objects {
        if *plural != w.rt.plural || !w.selects(obj) {
            continue;
        }
        if let Some((ans, aname)) = &after
            && (ns, name) <= (ans, aname)
        {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            next = items.last().map(|o: &Value| {
                format!(
                    "{rv}|{}|{}",
                    o["metadata"]["namespace"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                )
            });
            break;
        }
        items.push(obj.clone());
    }
    drop(st);
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if let Some(n) = next {
        meta["continue"] = json!(n);
    }
    if accept.contains("as=Table") {
        return json_response(200, &table(w.rt, meta, &items));
    }
    json_response(
        200,
        &json!({
            "kind": format!("{}List", w.rt.kind),
            "apiVersion": w.rt.api_version(),
            "metadata": meta,
            "items": items,
        }),
    )
}

/// Server-side printing (`Accept: ...;as=Table`), which kubectl asks for:
/// the columns kubectl shows for each kind, plus the object's metadata.
fn table(rt: &ResourceType, meta: Value, items: &[Value]) -> Value {
    let col = |name: &str, format: &str| json!({ "name": name, "type": "string", "format": format, "description": "", "priority": 0 });
    let mut columns = vec![col("Name", "name")];
    let extra: fn(&Value) -> Vec<Value> = match rt.kind {
        "EndpointSlice" => {
            columns.extend([
                col("AddressType", ""),
                col("Ports", ""),
                col("Endpoints", ""),
            ]);
            |o| {
                let ports: Vec<String> = o["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["port"].as_u64().map(|n| n.to_string()))
                    .collect();
                let eps: Vec<String> = o["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect();
                vec![
                    o["addressType"].clone(),
                    json!(if ports.is_empty() {
                        "<unset>".into()
                    } else {
                        ports.join(",")
                    }),
                    json!(if eps.is_empty() {
                        "<unset>".into()
                    } else {
                        eps.join(",")
                    }),
                ]
            }
        }
        "Service" => {
            columns.extend([col("Type", ""), col("Cluster-IP", "")]);
            |o| {
                vec![
                    json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP")),
                    json!(o["spec"]["clusterIP"].as_str().unwrap_or("<none>")),
                ]
            }
        }
        "StatefulSet" => {
            columns.push(col("Replicas", ""));
            |o| {
                vec![json!(
                    o["spec"]["replicas"].as_u64().unwrap_or(1).to_string()
                )]
            }
        }
        _ => |_| Vec::new(),
    };
    columns.push(col("Age", ""));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            cells.extend(extra(o));
            cells.push(json!("1d"));
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn watch_response(
    inner: &Arc<Inner>,
    mut w: Watcher,
    query: &[(String, String)],
    log: &mut ApiRequest,
) -> Response {
    let param = |k: &str| param(query, k);
    let timeout = param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    let since: Option<u64> = match param("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(v) => match v.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                return status_response(
                    400,
                    "BadRequest",
                    format!("invalid resourceVersion {v:?}"),
                );
            }
        },
    };
    let initial_events = param("sendInitialEvents") == Some("true");
    let (tx, rx) = mpsc::unbounded_channel();
    w.tx = tx;
    loop {
        // Check the pause and register under one lock, so a watch either is
        // registered before a pause (and `drop_watches` ends it) or waits.
        let mut gate = inner.gate.subscribe();
        if inner.lock().watches_paused {
            if gate.changed().await.is_err() {
                return status_response(503, "ServiceUnavailable", "the fake API is stopping");
            }
            continue;
        }
        let mut st = inner.lock();
        if st.watches_paused {
            continue;
        }
        match since {
            Some(n) if n < st.floor => {
                let message = format!("too old resource version: {n} ({})", st.floor + 1);
                log.status = 410;
                if st.gone_as_http {
                    return status_response(410, "Expired", message);
                }
                let _ = w.tx.send(Frame::Line(event_line(
                    "ERROR",
                    &status(410, "Expired", message),
                )));
                let _ = w.tx.send(Frame::End);
            }
            Some(n) => {
                for c in st.history.iter().filter(|c| c.rv > n) {
                    if let Some((t, o)) = w.view_of(c) {
                        w.send(t, &o);
                    }
                }
                if w.bookmarks {
                    w.send("BOOKMARK", &bookmark(w.rt, st.rv, false));
                }
                st.watchers.push(w);
            }
            None => {
                // resourceVersion unset or "0": start with the current state.
                for ((plural, _, _), obj) in &st.objects {
                    if *plural == w.rt.plural && w.selects(obj) {
                        w.send("ADDED", obj);
                    }
                }
                if w.bookmarks {
                    w.send("BOOKMARK", &bookmark(w.rt, st.rv, initial_events));
                }
                st.watchers.push(w);
            }
        }
        break;
    }
    let frames = futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Frame::Line(b)) => Some((Ok(b), Some(rx))),
            // An error item makes hyper cut the connection without the
            // terminating chunk; nothing is polled after it.
            Some(Frame::Abort) => Some((
                Err(std::io::Error::other(
                    "watch dropped by the test (FakeApi::drop_watches)",
                )),
                None,
            )),
            Some(Frame::End) | None => None,
        }
    });
    let body = match timeout {
        Some(t) => Body::from_stream(frames.take_until(tokio::time::sleep(t))),
        None => Body::from_stream(frames),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("static parts always build a response")
}
