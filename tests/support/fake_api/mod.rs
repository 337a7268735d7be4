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
//! it on purpose (`drop_watches`, `close_watches`, `expire_history`, `compact`,
//! `pause_watches`, `hold_lists`, `fail_next`, `set_down`; `churn`: a seeded
//! mix of watch faults). The API is read-only over
//! HTTP: nothing here is a real apiserver, only its wire behaviour.
//!
//! With [`FakeApi::grant`] it answers as under namespaced RBAC: 403 for what
//! no granted Role allows. Every request is logged ([`FakeApi::requests`]),
//! with its arrival time, and what lists and watches sent is counted
//! ([`FakeApi::traffic`]).
//!
//! Layout: `resources` (the kinds served), `selector` (label and field
//! selectors), `rbac` (Roles), `store` (objects, history, open watches), `routing`
//! (discovery, get, list), `watch` (event streams), `table` (kubectl's
//! server-side printing), `churn` (the seeded fault mix of issue #27).

pub mod churn;
mod conn;
pub mod rbac;
mod resources;
mod routing;
mod selector;
mod store;
mod table;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use serde_json::{Value, json};

use k8s_openapi::api::rbac::v1::Role;
use rbac::Grant;
use resources::ResourceType;
pub use routing::ApiRequest;
use store::{Change, ClusterState, Inner};
use watch::{Frame, bookmark};

/// The running fake API server. Dropping it stops the server and ends every
/// open watch.
pub struct FakeApi {
    inner: Arc<Inner>,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

/// A kubeconfig for `http://{addr}`: context `fake`, no credentials.
fn kubeconfig(addr: std::net::SocketAddr) -> String {
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
    )
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
            state: Mutex::new(ClusterState::new()),
            gate: tokio::sync::watch::channel(0).0,
            addr,
            traffic: Default::default(),
        });
        let app = Router::new()
            .fallback(routing::handle)
            .with_state(Arc::clone(&inner))
            .into_make_service_with_connect_info::<conn::Peer>();
        let listener = conn::ResettableListener(listener);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().expect("create a temp dir for the kubeconfig");
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig(addr)).expect("write the kubeconfig");
        FakeApi {
            inner,
            kubeconfig: path,
            dir,
            server,
        }
    }

    /// Starts the server holding `objects` (see [`FakeApi::apply`]).
    pub async fn with_objects(objects: impl IntoIterator<Item = Value>) -> FakeApi {
        let api = FakeApi::start().await;
        for o in objects {
            api.apply(o);
        }
        api
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

    /// Resets the connection of every open watch (TCP RST: the client reads
    /// `ECONNRESET`), as when an apiserver dies or a load balancer drops its
    /// connections. Returns how many were open.
    pub fn reset_watches(&self) -> usize {
        self.inner.lock().reset_watchers()
    }

    /// Ends every open watch cleanly, as the apiserver does when a watch's
    /// `timeoutSeconds` runs out. Returns how many were open.
    pub fn close_watches(&self) -> usize {
        self.inner.lock().take_watchers(|| Frame::End)
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
        self.inner.open_gate();
    }

    /// List requests for these resources (plurals) wait until
    /// [`FakeApi::release_lists`]: the client can never complete its first sync.
    pub fn hold_lists(&self, plurals: &[&str]) {
        let mut st = self.inner.lock();
        for p in plurals {
            let rt = ResourceType::by_plural(p)
                .unwrap_or_else(|| panic!("hold_lists: unknown resource {p}"));
            st.held_lists.insert(rt.plural);
        }
    }

    /// Lets held list requests through.
    pub fn release_lists(&self) {
        self.inner.lock().held_lists.clear();
        self.inner.open_gate();
    }

    /// An outage (`true`): open watches break, and every list, get or watch
    /// request answers 503 until `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        let mut st = self.inner.lock();
        st.down = down;
        if down {
            st.take_watchers(|| Frame::Abort);
        }
    }

    /// Load shedding (`Some(seconds)`): open watches break, and every list,
    /// get or watch request answers 429 Too Many Requests with that
    /// `Retry-After`, until `set_throttled(None)`.
    pub fn set_throttled(&self, retry_after: Option<u32>) {
        let mut st = self.inner.lock();
        st.throttled = retry_after;
        if retry_after.is_some() {
            st.take_watchers(|| Frame::Abort);
        }
    }

    /// The next `n` list, get or watch requests fail with HTTP 500.
    pub fn fail_next(&self, n: u32) {
        self.inner.lock().fail_next = n;
    }

    /// Answers every watch request (200, replaying what it missed) and
    /// resets its connection 5 ms later, as a broken proxy in front of the
    /// API server might, until `set_reset_on_watch(false)`.
    pub fn set_reset_on_watch(&self, yes: bool) {
        self.inner.lock().reset_on_watch = yes;
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

    /// Waits (at most [`super::WAIT`]) until at least `n` watches are open;
    /// panics if they are not.
    pub async fn wait_for_watches(&self, n: usize) {
        super::eventually(&format!("{n} open watches"), || async {
            match self.open_watches() {
                open if open >= n => Ok(()),
                open => Err(format!("{open} open")),
            }
        })
        .await
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.inner.lock().requests.clone()
    }

    /// Objects and bytes sent in list responses and watch streams so far.
    pub fn traffic(&self) -> (u64, u64) {
        self.inner.traffic.get()
    }

    /// Binds `role` in `namespace`: from the first grant on, requests no
    /// granted rule allows get 403 (see `rbac`).
    pub fn grant(&self, namespace: &str, role: &Role) {
        let grant = Grant {
            namespace: namespace.to_string(),
            rules: role.rules.clone().unwrap_or_default(),
        };
        self.inner.lock().grants.get_or_insert_default().push(grant);
    }

    /// Replaces every grant with none: every resource request gets 403.
    /// Later [`FakeApi::grant`]s add to that.
    pub fn revoke_all(&self) {
        self.inner.lock().grants = Some(Vec::new());
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
        self.inner.lock().take_watchers(|| Frame::End);
    }
}
