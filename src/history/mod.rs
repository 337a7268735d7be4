//! What the record browser remembers: each name's previous addresses and
//! readiness states, a timeline of the last index changes with their
//! event-to-answer latency, and queries per second over the last minutes.
//!
//! The index only keeps the present. This history is written on the writer's
//! side, at publish time, by a [`recorder::Recorder`] riding on the index
//! writer as a `PublishObserver` (so it works alike for every source), and
//! read by the admin side. The query path never touches it.
//!
//! Memory is bounded by [`Limits`]: per name, `addresses` previous address
//! sets and readiness states; at most `names` names with a past (those whose
//! past changed longest ago are forgotten first: a full rewrite of a
//! 100,000-endpoint cluster would otherwise keep ~165 bytes for every name);
//! `changes` timeline entries. Only names with a past are stored (after the
//! initial sync of a quiet cluster, none): one that never changed is
//! described by its view alone ([`NameHistory::present`]). Names are kept
//! while their service's view has them, or while they are a pod a governing
//! StatefulSet still wants (a deleted pod's past survives its recreation).
//! Each service's history is an `Arc` replaced copy-on-write, so a reader
//! holds the lock only to clone a few `Arc`s, and the writer only for the
//! services one publication touched.

pub mod rates;
pub mod recorder;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::index::{EndpointView, ObjectKey};

/// How much history is kept (`[admin] history_addresses`, `history_names`,
/// `history_changes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Previous address sets, and previous readiness states, per name.
    pub addresses: usize,
    /// Names with a past, across all services.
    pub names: usize,
    /// Timeline entries.
    pub changes: usize,
}

/// A name's readiness as DNS sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Ready (and served).
    Ready,
    /// In the service but not ready: not served unless the service
    /// publishes not-ready addresses.
    NotReady,
    /// Terminating: never served.
    Terminating,
    /// Not in the service at all.
    Gone,
}

impl State {
    /// Endpoint `e`'s readiness as DNS sees it.
    pub fn of(e: &EndpointView<'_>) -> State {
        if e.terminating {
            State::Terminating
        } else if e.ready {
            State::Ready
        } else {
            State::NotReady
        }
    }

    /// The name `/records` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::NotReady => "not_ready",
            State::Terminating => "terminating",
            State::Gone => "gone",
        }
    }
}

/// An address set, IPv4 first: one address inline (almost every name has
/// exactly one), several (or none) in one boxed slice. Serialized as a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addresses {
    /// The one address.
    One(IpAddr),
    /// None, or several.
    Many(Box<[IpAddr]>),
}

impl Addresses {
    /// The set of `addrs`.
    pub fn of(addrs: impl Iterator<Item = IpAddr>) -> Addresses {
        let mut addrs = addrs.peekable();
        match (addrs.next(), addrs.peek()) {
            (Some(a), None) => Addresses::One(a),
            (first, _) => Addresses::Many(first.into_iter().chain(addrs).collect()),
        }
    }

    /// The addresses.
    pub fn as_slice(&self) -> &[IpAddr] {
        match self {
            Addresses::One(a) => std::slice::from_ref(a),
            Addresses::Many(all) => all,
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl Default for Addresses {
    fn default() -> Self {
        Addresses::Many(Box::default())
    }
}

impl Serialize for Addresses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

/// One address set a name had: from `from_ms` until `until_ms` (Unix ms;
/// `None` while it still has it). 40 bytes, no heap block of its own for
/// one address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Spell {
    /// The addresses, IPv4 first.
    pub addresses: Addresses,
    /// When the name got them.
    pub from_ms: u64,
    /// When it lost them.
    pub until_ms: Option<NonZeroU64>,
}

/// A readiness state a name entered at `at_ms` (Unix ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// The state entered.
    pub state: State,
    /// When.
    pub at_ms: u64,
}

/// One name's past, newest first in each list. Boxed slices of their exact
/// length: most names never change, and those that do rarely.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NameHistory {
    /// Address sets: the current one first (if it has one), then up to
    /// [`Limits::addresses`] previous ones.
    pub addresses: Box<[Spell]>,
    /// Readiness states: the current one first, then up to
    /// [`Limits::addresses`] previous ones.
    pub states: Box<[Transition]>,
    /// When its past last changed, in [`History`]'s own count (0: in this
    /// update, not numbered yet); what the oldest-first forgetting goes by.
    #[serde(skip)]
    pub seq: u64,
}

impl NameHistory {
    /// The history of endpoint `e` that has no past: its addresses and
    /// state since it last changed (which, without a past, is when it
    /// appeared). Names without a past are not stored; this stands in.
    pub fn present(e: &EndpointView<'_>) -> NameHistory {
        let addresses = Addresses::of(e.addresses.iter());
        let spell = Spell {
            addresses,
            from_ms: e.changed_ms,
            until_ms: None,
        };
        NameHistory {
            addresses: if spell.addresses.is_empty() {
                Box::default()
            } else {
                Box::new([spell])
            },
            states: Box::new([Transition {
                state: State::of(e),
                at_ms: e.changed_ms,
            }]),
            seq: 0,
        }
    }

    /// The state the name is in now.
    pub fn state(&self) -> State {
        self.states.first().map_or(State::Gone, |t| t.state)
    }

    /// Entries held (for the size metric).
    fn entries(&self) -> usize {
        self.addresses.len() + self.states.len()
    }
}

/// One service's names' histories, by DNS label.
#[derive(Clone, Debug, Default)]
pub struct ServiceHistory {
    /// Label (`web-1`) to its history.
    pub names: BTreeMap<Box<str>, NameHistory>,
}

impl ServiceHistory {
    fn entries(&self) -> usize {
        self.names.values().map(NameHistory::entries).sum()
    }
}

/// What happened to one name (or the service) in a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// The service appeared.
    ServiceAdded,
    /// The service went away, with its names.
    ServiceRemoved,
    /// A governing StatefulSet's desired replicas changed.
    Scaled {
        /// The StatefulSet.
        statefulset: Box<str>,
        /// Replicas before.
        from: u32,
        /// Replicas after.
        to: u32,
    },
    /// A name appeared.
    Added {
        /// Its addresses.
        addresses: Addresses,
        /// Its state.
        state: State,
    },
    /// A name went away.
    Removed,
    /// A name's addresses changed.
    Moved {
        /// Before (empty: it had none).
        from: Addresses,
        /// After.
        to: Addresses,
    },
    /// A name's readiness changed.
    State {
        /// Before.
        from: State,
        /// After.
        to: State,
    },
}

/// One entry of a change: the name (empty for the service itself) and what
/// happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    /// The DNS label, or `""` for the service.
    pub name: Box<str>,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// One timeline entry: a service's answers changed by one publication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The service's namespace.
    pub namespace: Box<str>,
    /// The service's name.
    pub service: Box<str>,
    /// When the batch of source events behind it reached the index writer
    /// (Unix µs).
    pub arrived_us: u64,
    /// When the new answers were published to the query path (Unix µs).
    pub served_us: u64,
    /// What changed, at most [`MAX_ITEMS`].
    pub items: Vec<Item>,
    /// Further items left out.
    pub more: usize,
}

impl Change {
    /// The event-to-answer latency, microseconds.
    pub fn latency_us(&self) -> u64 {
        self.served_us.saturating_sub(self.arrived_us)
    }
}

/// Items kept per timeline entry; a scale-up by 500 lists the first ones and
/// counts the rest.
pub const MAX_ITEMS: usize = 20;

/// The state shared by the recorder (writer side) and the admin readers.
#[derive(Default)]
struct Inner {
    /// Only services with a name that has a past.
    services: HashMap<ObjectKey, Arc<ServiceHistory>>,
    /// Newest first.
    changes: VecDeque<Arc<Change>>,
    /// Names as their past changed, oldest first: (service, label, seq).
    /// An entry whose name changed again since (a later seq) or lost its
    /// past is stale and skipped.
    aging: VecDeque<(ObjectKey, Box<str>, u64)>,
    /// The last seq handed out.
    seq: u64,
}

/// Sizes, for `/metrics`: kept current by the recorder.
#[derive(Debug, Default)]
pub struct HistoryStats {
    /// Names with a history.
    pub names: AtomicU64,
    /// Address-set and readiness entries across all names.
    pub name_entries: AtomicU64,
    /// Timeline entries.
    pub changes: AtomicU64,
}

/// The history: one per engine, shared by the recorder and the admin side.
pub struct History {
    limits: Limits,
    /// A std `Mutex`: held for a few map operations, never across `.await`,
    /// and never by the query path.
    inner: Mutex<Inner>,
    stats: HistoryStats,
    rates: rates::Rates,
}

impl History {
    /// An empty history keeping `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::default(),
            stats: HistoryStats::default(),
            rates: rates::Rates::default(),
        })
    }

    /// What it keeps.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sizes for the metrics.
    pub fn stats(&self) -> &HistoryStats {
        &self.stats
    }

    /// Queries per second over the last minutes.
    pub fn rates(&self) -> &rates::Rates {
        &self.rates
    }

    /// The history of service `key`, if it has one.
    pub fn service(&self, key: &ObjectKey) -> Option<Arc<ServiceHistory>> {
        self.lock().services.get(key).cloned()
    }

    /// The timeline, newest first.
    pub fn changes(&self) -> Vec<Arc<Change>> {
        self.lock().changes.iter().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it leaves consistent maps (each step is one
        // insert or remove): go on with them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the history of service `key` (made if missing) and keeps
    /// the result. The lock is held meanwhile: `f` is one service's diff, and
    /// readers only clone `Arc`s under it. The history is copied first only
    /// when a reader still holds it (copy-on-write). Names `f` touched (seq
    /// 0) are numbered; past [`Limits::names`], the oldest are forgotten.
    fn update(&self, key: &ObjectKey, f: impl FnOnce(&mut ServiceHistory)) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        // Taken out and put back only with a name left: a service without
        // a past (most, after the initial sync) costs no map entry.
        let mut shared = inner.services.remove(key).unwrap_or_default();
        let before = (shared.names.len(), shared.entries());
        let h = Arc::make_mut(&mut shared);
        f(h);
        for (label, n) in h.names.iter_mut().filter(|(_, n)| n.seq == 0) {
            inner.seq += 1;
            n.seq = inner.seq;
            inner
                .aging
                .push_back((key.clone(), label.clone(), inner.seq));
        }
        let after = (h.names.len(), h.entries());
        if !h.names.is_empty() {
            inner.services.insert(key.clone(), shared);
        }
        self.count(before, after);
        self.forget_oldest(inner);
    }

    /// Forgets the pasts changed longest ago while more than
    /// [`Limits::names`] names have one; drops stale aging entries once they
    /// outnumber the live ones.
    fn forget_oldest(&self, inner: &mut Inner) {
        // The counter `count` keeps: only the recorder (one task) changes it.
        let names = || self.stats.names.load(Ordering::Relaxed) as usize;
        while names() > self.limits.names {
            let Some((key, label, seq)) = inner.aging.pop_front() else {
                break;
            };
            let Some(h) = inner.services.get_mut(&key) else {
                continue;
            };
            if h.names.get(&label).is_none_or(|n| n.seq != seq) {
                continue;
            }
            let h = Arc::make_mut(h);
            let before = (h.names.len(), h.entries());
            h.names.remove(&label);
            let after = (h.names.len(), h.entries());
            if h.names.is_empty() {
                inner.services.remove(&key);
            }
            self.count(before, after);
        }
        if inner.aging.len() > names() + names() / 4 + 256 {
            let services = &inner.services;
            inner.aging.retain(|(key, label, seq)| {
                services
                    .get(key)
                    .and_then(|h| h.names.get(label))
                    .is_some_and(|n| n.seq == *seq)
            });
            if inner.aging.capacity() > 2 * inner.aging.len() + 1024 {
                inner.aging.shrink_to_fit();
            }
        }
    }

    /// Drops the history of service `key`.
    fn remove(&self, key: &ObjectKey) {
        let old = self.lock().services.remove(key);
        if let Some(h) = old {
            self.count((h.names.len(), h.entries()), (0, 0));
        }
    }

    /// Moves the size counters from `old` to `new` (names, entries).
    fn count(&self, old: (usize, usize), new: (usize, usize)) {
        let adjust = |c: &AtomicU64, new: usize, old: usize| {
            c.fetch_add(new as u64, Ordering::Relaxed);
            c.fetch_sub(old as u64, Ordering::Relaxed);
        };
        adjust(&self.stats.names, new.0, old.0);
        adjust(&self.stats.name_entries, new.1, old.1);
    }

    /// Adds `change` to the timeline, dropping the oldest past the limit.
    fn push_change(&self, change: Change) {
        if self.limits.changes == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.changes.push_front(Arc::new(change));
        inner.changes.truncate(self.limits.changes);
        self.stats
            .changes
            .store(inner.changes.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
