//! HTTP routing of the fake API server: discovery documents, list (with
//! `limit`/`continue` paging), get, and the hand-off to watch streams; every
//! request is logged for tests to assert on.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{Method, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::conn::Peer;
use super::rbac;
use super::resources::{RESOURCES, ResourceType};
use super::selector::Selector;
use super::store::Inner;
use super::table::table;
use super::watch::{Watcher, watch_response};

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
    /// Its API group (`""`: core), if the path named a resource type.
    pub group: Option<&'static str>,
    /// `get`, `list` or `watch` for a resource request; `""` for discovery.
    pub verb: &'static str,
    /// The namespace in the path; `None` for cluster scope and discovery.
    pub namespace: Option<String>,
    /// What the server answered: an HTTP status; a watch that got a 410 in
    /// its stream is recorded as 410 too.
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl ApiRequest {
    /// The value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        param(&self.query, key)
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

pub(super) fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A `Status` object, as the apiserver sends with every error.
pub(super) fn status(code: u16, reason: &str, message: impl Into<String>) -> Value {
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

pub(super) fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("static parts always build a response")
}

pub(super) fn status_response(code: u16, reason: &str, message: impl Into<String>) -> Response {
    json_response(code, &status(code, reason, message))
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

/// The one handler: every path goes through here.
pub(super) async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
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
    let (rt, verb, namespace) = match &target {
        None => (None, "", None),
        Some(Target::Collection { rt, namespace }) => (
            Some(*rt),
            if watch { "watch" } else { "list" },
            namespace.clone(),
        ),
        Some(Target::Object { rt, namespace, .. }) => {
            let ns = Some(namespace.clone()).filter(|n| !n.is_empty());
            (Some(*rt), "get", ns)
        }
    };
    let mut log = ApiRequest {
        method: req.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        watch,
        plural: rt.map(|r| r.plural),
        group: rt.map(|r| r.group),
        verb,
        namespace: namespace.clone(),
        status: 200,
        at: std::time::Instant::now(),
    };
    let refused = rt.filter(|rt| {
        let st = inner.lock();
        st.grants
            .as_ref()
            .is_some_and(|g| !rbac::allows(g, verb, rt, namespace.as_deref()))
    });
    let response = match target {
        None => discovery(&inner, &segs),
        Some(_) if refused.is_some() => {
            rbac::forbidden(verb, refused.expect("checked"), namespace.as_deref())
        }
        Some(_) if req.method() != Method::GET => status_response(
            405,
            "MethodNotAllowed",
            "the fake API server is read-only over HTTP; tests change it through FakeApi",
        ),
        Some(t) => {
            let reset = req
                .extensions()
                .get::<ConnectInfo<Peer>>()
                .map(|c| Arc::clone(&c.0.reset));
            resource(&inner, t, &query, watch, &accept, reset, &mut log).await
        }
    };
    if log.status == 200 {
        log.status = response.status().as_u16();
    }
    inner.lock().requests.push(log);
    response
}

/// The API groups other than core, with their one version.
fn groups() -> Vec<(&'static str, &'static str)> {
    let mut g: Vec<(&str, &str)> = RESOURCES
        .iter()
        .filter(|r| !r.group.is_empty())
        .map(|r| (r.group, r.version))
        .collect();
    g.dedup();
    g
}

fn group_json(g: &str, v: &str) -> Value {
    json!({
        "name": g,
        "versions": [{ "groupVersion": format!("{g}/{v}"), "version": v }],
        "preferredVersion": { "groupVersion": format!("{g}/{v}"), "version": v },
    })
}

/// The `APIResourceList` of one group version.
fn resource_list(g: &str, v: &str) -> Value {
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
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "34", "gitVersion": "v1.34.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/version`, `/api`, `/apis` and the group documents clients discover with.
fn discovery(inner: &Inner, segs: &[&str]) -> Response {
    let groups = groups();
    match segs {
        ["version"] => json_response(200, &version()),
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
        _ => {
            let message = format!(
                "the server could not find the requested resource ({})",
                segs.join("/")
            );
            status_response(404, "NotFound", message)
        }
    }
}

/// A get, list or watch of one resource type.
async fn resource(
    inner: &Arc<Inner>,
    target: Target,
    query: &[(String, String)],
    watch: bool,
    accept: &str,
    reset: Option<Arc<AtomicBool>>,
    log: &mut ApiRequest,
) -> Response {
    {
        let mut st = inner.lock();
        if st.down {
            return status_response(503, "ServiceUnavailable", "injected outage (set_down)");
        }
        if let Some(secs) = st.throttled {
            let mut r = status_response(429, "TooManyRequests", "injected load shedding");
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            return r;
        }
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
        } => return get(inner, rt, namespace, name),
        Target::Collection { rt, namespace } => (rt, namespace),
    };
    let labels = match Selector::parse(param(query, "labelSelector").unwrap_or(""), true) {
        Ok(s) => s,
        Err(e) => return status_response(400, "BadRequest", e),
    };
    let fields = match Selector::parse(param(query, "fieldSelector").unwrap_or(""), false) {
        Ok(s) => s,
        Err(e) => return status_response(400, "BadRequest", e),
    };
    let w = Watcher {
        rt,
        namespace,
        labels,
        fields,
        bookmarks: param(query, "allowWatchBookmarks") == Some("true"),
        tx: mpsc::unbounded_channel().0,
        traffic: Arc::clone(&inner.traffic),
        reset,
    };
    if watch {
        watch_response(inner, w, query, log).await
    } else {
        inner
            .wait_gate(|st| st.held_lists.contains(rt.plural))
            .await;
        let (limit, cont) = (param(query, "limit"), param(query, "continue"));
        list_response(inner, &w, limit, cont, accept)
    }
}

fn get(inner: &Inner, rt: &ResourceType, namespace: String, name: String) -> Response {
    let obj = inner
        .lock()
        .objects
        .get(&(rt.plural, namespace, name.clone()))
        .cloned();
    match obj {
        Some(o) => json_response(200, &o),
        None => {
            let message = format!("{}.{} \"{name}\" not found", rt.plural, rt.group);
            status_response(404, "NotFound", message)
        }
    }
}

/// Parses a continue token "<rv>|<namespace>|<name>": the list's version and
/// the last key served.
fn continue_token(c: &str) -> Option<(u64, (String, String))> {
    let mut parts = c.splitn(3, '|');
    let rv = parts.next()?.parse::<u64>().ok()?;
    let (ns, name) = (parts.next()?, parts.next()?);
    Some((rv, (ns.to_string(), name.to_string())))
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
    // Later pages show current objects; every change after the list's
    // version is replayed by the watch that follows, as with a real server
    // whose snapshot moved on.
    let (list_rv, after) = match cont.map(continue_token) {
        Some(Some((rv, after))) => (Some(rv), Some(after)),
        Some(None) => return status_response(400, "BadRequest", "invalid continue token"),
        None => (None, None),
    };
    let st = inner.lock();
    let rv = list_rv.unwrap_or(st.rv);
    let mut items = Vec::new();
    let mut next = None;
    // A page starts after the last key served, as the real server's range
    // read from etcd does (not a scan from the first object per page).
    let from = match after {
        Some((ns, name)) => Bound::Excluded((w.rt.plural, ns, name)),
        None => Bound::Included((w.rt.plural, String::new(), String::new())),
    };
    for ((plural, _, _), obj) in st.objects.range((from, Bound::Unbounded)) {
        if *plural != w.rt.plural {
            break;
        }
        if !w.selects(obj) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            next = items.last().map(|o: &Value| {
                let meta = &o["metadata"];
                let ns = meta["namespace"].as_str().unwrap_or("");
                format!("{rv}|{ns}|{}", meta["name"].as_str().unwrap_or(""))
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
    let body = json!({
        "kind": format!("{}List", w.rt.kind),
        "apiVersion": w.rt.api_version(),
        "metadata": meta,
        "items": items,
    })
    .to_string();
    inner.traffic.count(items.len(), body.len());
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("static parts always build a response")
}
