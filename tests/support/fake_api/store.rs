//! The fake cluster's state: objects under one global resourceVersion, the
//! bounded change history that watches replay from, the open watches, and
//! the switches tests use to break the server on purpose.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::watch;

use super::rbac::Grant;
use super::resources::ResourceType;
use super::routing::ApiRequest;
use super::watch::{Frame, Watcher};

/// One change in the history.
pub(super) struct Change {
    pub rv: u64,
    pub rt: &'static ResourceType,
    pub old: Option<Value>,
    pub new: Option<Value>,
    /// For a deletion: the last state, stamped with the deletion's version.
    pub deleted: Option<Value>,
}

/// (plural, namespace or "", name).
pub(super) type Key = (&'static str, String, String);

pub(super) struct ClusterState {
    pub rv: u64,
    pub objects: BTreeMap<Key, Value>,
    pub history: VecDeque<Change>,
    /// Changes with `rv <= floor` are forgotten: resuming from before is 410.
    pub floor: u64,
    pub history_limit: usize,
    pub watchers: Vec<Watcher>,
    pub requests: Vec<ApiRequest>,
    pub fail_next: u32,
    /// Every resource request answers 503 (`FakeApi::set_down`).
    pub down: bool,
    /// Every resource request answers 429 with this `Retry-After` (seconds),
    /// as API Priority and Fairness does when it sheds load
    /// (`FakeApi::set_throttled`).
    pub throttled: Option<u32>,
    pub gone_as_http: bool,
    /// Every watch is answered, then its connection reset at once
    /// (`FakeApi::set_reset_on_watch`).
    pub reset_on_watch: bool,
    pub watches_paused: bool,
    pub held_lists: HashSet<&'static str>,
    pub next_uid: u64,
    /// The Roles granted (see `rbac`); `None`: every request is allowed.
    pub grants: Option<Vec<Grant>>,
}

impl ClusterState {
    pub fn new() -> Self {
        ClusterState {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            floor: 1,
            history_limit: 100_000,
            watchers: Vec::new(),
            requests: Vec::new(),
            fail_next: 0,
            down: false,
            throttled: None,
            gone_as_http: false,
            reset_on_watch: false,
            watches_paused: false,
            held_lists: HashSet::new(),
            next_uid: 1,
            grants: None,
        }
    }

    /// Tells every open watch about `change` and keeps it in the history.
    pub fn record(&mut self, change: Change) {
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

    /// Ends every open watch with a TCP reset of its connection; returns how
    /// many were open.
    pub fn reset_watchers(&mut self) -> usize {
        for w in &self.watchers {
            if let Some(reset) = &w.reset {
                reset.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.take_watchers(|| Frame::Abort)
    }

    /// Ends every open watch with `frame`; returns how many were open.
    pub fn take_watchers(&mut self, frame: impl Fn() -> Frame) -> usize {
        let n = self.watchers.iter().filter(|w| !w.tx.is_closed()).count();
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(frame());
        }
        n
    }
}

/// What the server sent in list responses and watch streams: objects
/// (list items, watch events other than bookmarks and errors) and bytes.
#[derive(Debug, Default)]
pub struct Traffic {
    objects: AtomicU64,
    bytes: AtomicU64,
}

impl Traffic {
    pub fn count(&self, objects: usize, bytes: usize) {
        self.objects.fetch_add(objects as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// (objects, bytes) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.objects.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

pub(super) struct Inner {
    pub state: Mutex<ClusterState>,
    pub traffic: Arc<Traffic>,
    /// Bumped whenever a pause or hold is lifted, to wake waiting requests.
    pub gate: watch::Sender<u64>,
    pub addr: SocketAddr,
}

impl Inner {
    pub fn lock(&self) -> MutexGuard<'_, ClusterState> {
        // A panic while holding the lock already fails the test; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while `blocked` holds, re-checking whenever a gate opens.
    pub async fn wait_gate(&self, blocked: impl Fn(&ClusterState) -> bool) {
        loop {
            let mut rx = self.gate.subscribe();
            let is_blocked = blocked(&self.lock());
            if !is_blocked {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Wakes requests waiting at a gate.
    pub fn open_gate(&self) {
        self.gate.send_modify(|g| *g += 1);
    }
}
