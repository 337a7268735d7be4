//! Watch streams: `?watch=true&resourceVersion=N` answered with
//! newline-delimited JSON events replayed from the history, then live ones;
//! 410 Gone for a version older than the history; bookmarks on request.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::resources::ResourceType;
use super::routing::{ApiRequest, param, status, status_response};
use super::selector::Selector;
use super::store::{Change, ClusterState, Inner, Traffic};

/// What a watch stream's body receives.
pub(super) enum Frame {
    /// One JSON event line (newline included).
    Line(Bytes),
    /// End the stream cleanly (terminating chunk), as the apiserver does on
    /// `timeoutSeconds`.
    End,
    /// Break the connection mid-stream (no terminating chunk).
    Abort,
}

/// One open watch (or, for a list, the same filter without a stream).
pub(super) struct Watcher {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: Selector,
    pub bookmarks: bool,
    pub tx: mpsc::UnboundedSender<Frame>,
    /// Where what this watch sends is counted.
    pub traffic: Arc<Traffic>,
    /// Set, its connection ends with a reset when the stream is cut.
    pub reset: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Watcher {
    pub fn selects(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
            && self.labels.matches_labels(obj)
            && self.fields.matches_fields(obj)
    }

    /// The event this watcher sees for a change from `old` to `new`: an
    /// object that leaves the selection is DELETED for it, one that enters it
    /// ADDED (as the apiserver's watch filtering does).
    pub fn view_of(&self, ev: &Change) -> Option<(&'static str, Value)> {
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

    pub fn send(&self, type_: &str, object: &Value) -> bool {
        let line = event_line(type_, object);
        let objects = usize::from(matches!(type_, "ADDED" | "MODIFIED" | "DELETED"));
        self.traffic.count(objects, line.len());
        self.tx.send(Frame::Line(line)).is_ok()
    }
}

pub(super) fn event_line(type_: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({ "type": type_, "object": object }))
        .expect("a JSON value always serializes");
    v.push(b'\n');
    Bytes::from(v)
}

pub(super) fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({ "resourceVersion": rv.to_string(), "creationTimestamp": null });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({ "kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta })
}

/// Answers a watch request: registers `w` (after any pause) and streams its
/// events until the test ends it or `timeoutSeconds` runs out.
pub(super) async fn watch_response(
    inner: &Arc<Inner>,
    mut w: Watcher,
    query: &[(String, String)],
    log: &mut ApiRequest,
) -> Response {
    let timeout = param(query, "timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    let since: Option<u64> = match param(query, "resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(v) => match v.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                let message = format!("invalid resourceVersion {v:?}");
                return status_response(400, "BadRequest", message);
            }
        },
    };
    let initial_events = param(query, "sendInitialEvents") == Some("true");
    let (tx, rx) = mpsc::unbounded_channel();
    w.tx = tx;
    // Check the pause and register under one lock, so a watch either is
    // registered before a pause (and `drop_watches` ends it) or waits.
    loop {
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
        // Answered, and then reset (`set_reset_on_watch`).
        let doomed = st.reset_on_watch.then(|| (w.tx.clone(), w.reset.clone()));
        if let Some(gone) = register(&mut st, w, since, initial_events, log) {
            return gone;
        }
        if let Some((tx, reset)) = doomed {
            // A moment later, so the client has read the answer (a reset
            // drops what it has not read yet).
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if let Some(r) = reset {
                    r.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let _ = tx.send(Frame::Abort);
            });
        }
        break;
    }
    stream(rx, timeout)
}

/// Replays what `w` missed since `since` (or the current state) and adds it
/// to the open watches; a resume from before the history gets 410 Gone, as
/// an HTTP status when the test asked for that (returned) or in the stream.
fn register(
    st: &mut ClusterState,
    w: Watcher,
    since: Option<u64>,
    initial_events: bool,
    log: &mut ApiRequest,
) -> Option<Response> {
    match since {
        Some(n) if n < st.floor => {
            let message = format!("too old resource version: {n} ({})", st.floor + 1);
            log.status = 410;
            if st.gone_as_http {
                return Some(status_response(410, "Expired", message));
            }
            let gone = event_line("ERROR", &status(410, "Expired", message));
            let _ = w.tx.send(Frame::Line(gone));
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
    None
}

/// The streaming response body of one watch.
fn stream(rx: mpsc::UnboundedReceiver<Frame>, timeout: Option<Duration>) -> Response {
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
