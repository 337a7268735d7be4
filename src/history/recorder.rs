//! The writer-side half of the history: a [`PublishObserver`] that diffs
//! each replaced service view against the service's history, moves names'
//! addresses and readiness into their past, and adds a timeline entry.
//!
//! It runs on the index writer's task, after the writer built the new view
//! and before readers are told: the query path never waits for it. Until the
//! index has synced it keeps names' histories but adds no timeline entries,
//! so the initial load does not flood the timeline with "service added".

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU64;
use std::sync::Arc;

use super::{
    Addresses, Change, History, Item, MAX_ITEMS, NameHistory, ServiceHistory, Spell, State,
    Transition, What,
};
use crate::index::observe::PublishObserver;
use crate::index::{EndpointView, Index, ServiceView};

/// The index writer's history observer.
pub struct Recorder {
    history: Arc<History>,
    index: Index,
    /// Timeline entries are added once the index has synced.
    recording: bool,
    /// The publication in progress: when its events arrived (Unix µs), its
    /// time stamp for names' histories (Unix ms), and its timeline entries,
    /// stored at [`PublishObserver::end`] with the time answers were served.
    arrived_us: u64,
    now_ms: u64,
    pending: Vec<Change>,
}

impl Recorder {
    /// A recorder writing into `history`; `index` says when it has synced.
    pub fn new(history: Arc<History>, index: Index) -> Self {
        Self {
            history,
            index,
            recording: false,
            arrived_us: 0,
            now_ms: 0,
            pending: Vec::new(),
        }
    }
}

impl PublishObserver for Recorder {
    fn begin(&mut self, arrived_us: u64) {
        self.arrived_us = arrived_us;
        self.now_ms = crate::clock::unix_ms();
        self.recording = self.index.is_synced();
        self.pending.clear();
    }

    fn service(&mut self, old: Option<&Arc<ServiceView>>, new: Option<&Arc<ServiceView>>) {
        let Some(key) = old.or(new).map(|v| v.record.key.clone()) else {
            return;
        };
        let mut items = Items::default();
        match new {
            None => {
                self.history.remove(&key);
                items.push("", What::ServiceRemoved);
            }
            Some(new) => {
                if old.is_none() {
                    items.push("", What::ServiceAdded);
                }
                scaled(old.map(|v| &**v), new, &mut items);
                let keep = self.history.limits().addresses + 1;
                let now = self.now_ms;
                let old = old.map(|v| &**v);
                self.history
                    .update(&key, |h| update_names(h, old, new, now, keep, &mut items));
            }
        }
        if self.recording && !items.list.is_empty() {
            let Items {
                list: mut items,
                more,
            } = items;
            // The timeline holds up to `history_changes` of these: pushed,
            // the list has room for four items (~300 bytes) where most
            // changes have one or two.
            items.shrink_to_fit();
            self.pending.push(Change {
                namespace: key.namespace().into(),
                service: key.name().into(),
                arrived_us: self.arrived_us,
                served_us: 0,
                items,
                more,
            });
        }
    }

    fn end(&mut self, _serial: u32) {
        // The writer calls this once the new views are in the maps readers
        // look in: from now on DNS answers with them.
        let served_us = crate::clock::unix_us().max(self.arrived_us);
        for mut c in self.pending.drain(..) {
            c.served_us = served_us;
            self.history.push_change(c);
        }
    }
}

/// A change's items while they are found: the first [`MAX_ITEMS`], and a
/// count of the rest (a scale-up by 500 makes 20 items, not 500).
#[derive(Default)]
struct Items {
    list: Vec<Item>,
    more: usize,
}

impl Items {
    fn push(&mut self, name: &str, what: What) {
        if self.list.len() < MAX_ITEMS {
            self.list.push(Item {
                name: name.into(),
                what,
            });
        } else {
            self.more += 1;
        }
    }
}

/// Governing StatefulSets whose desired replicas changed between the views.
fn scaled(old: Option<&ServiceView>, new: &ServiceView, items: &mut Items) {
    let Some(old) = old else { return };
    for g in new.statefulsets.iter() {
        let before = old.statefulsets.iter().find(|o| o.name == g.name);
        if let Some(b) = before.filter(|b| b.replicas != g.replicas) {
            let what = What::Scaled {
                statefulset: g.name.clone(),
                from: b.replicas,
                to: g.replicas,
            };
            items.push("", what);
        }
    }
}

/// Brings each name's history from `old` up to `view` at `now` (Unix ms),
/// keeping at most `keep` address sets and states per name. A name without
/// a stored past is compared with its endpoint in `old`, and stored only
/// once it changes. A name whose past changes gets seq 0. Names `view` no
/// longer has are kept only while a governing StatefulSet still wants them.
fn update_names(
    h: &mut ServiceHistory,
    old: Option<&ServiceView>,
    view: &ServiceView,
    now: u64,
    keep: usize,
    items: &mut Items,
) {
    let before: HashMap<&str, EndpointView<'_>> = old
        .map(|o| o.endpoints().map(|e| (e.label, e)).collect())
        .unwrap_or_default();
    let mut present = HashSet::with_capacity(view.endpoint_count());
    for e in view.endpoints() {
        present.insert(e.label);
        let state = State::of(&e);
        let n = match (h.names.get_mut(e.label), before.get(e.label)) {
            (Some(n), _) => n,
            (None, Some(was)) => {
                if State::of(was) == state && was.addresses.iter().eq(e.addresses.iter()) {
                    continue; // still no past
                }
                h.names
                    .entry(e.label.into())
                    .or_insert(NameHistory::present(was))
            }
            (None, None) => {
                let addresses = Addresses::of(e.addresses.iter());
                items.push(e.label, What::Added { addresses, state });
                continue; // new: no past yet
            }
        };
        for what in [readdress(n, &e, now, keep), transition(n, state, now, keep)]
            .into_iter()
            .flatten()
        {
            n.seq = 0; // its past changed: numbered anew by `History::update`
            items.push(e.label, what);
        }
    }
    // Names of the old view that went: their past starts now.
    for (label, was) in &before {
        if !present.contains(label) && !h.names.contains_key(*label) {
            h.names.insert((*label).into(), NameHistory::present(was));
        }
    }
    h.names.retain(|label, n| {
        if present.contains(&**label) {
            return true;
        }
        if n.state() != State::Gone {
            close_current(n, now);
            transition(n, State::Gone, now, keep);
            n.seq = 0;
            items.push(label, What::Removed);
        }
        view.is_pending_pod(label.as_bytes())
    });
}

/// Ends the name's current address spell, if it has one, at `now`.
fn close_current(n: &mut NameHistory, now: u64) {
    if let Some(cur) = n.addresses.first_mut().filter(|s| s.until_ms.is_none()) {
        cur.until_ms = Some(NonZeroU64::new(now).unwrap_or(NonZeroU64::MIN));
    }
}

/// `list` with `first` in front, cut to `keep`.
fn push_front<T>(list: &mut Box<[T]>, first: T, keep: usize) {
    let mut v = std::mem::take(list).into_vec();
    v.insert(0, first);
    v.truncate(keep);
    *list = v.into_boxed_slice();
}

/// Starts a new address spell when endpoint `e`'s addresses are not the
/// ones its name has now (also when it had none: back after being gone).
/// Returns the move. Allocates nothing when nothing moved.
fn readdress(n: &mut NameHistory, e: &EndpointView<'_>, now: u64, keep: usize) -> Option<What> {
    let current = n.addresses.first().filter(|s| s.until_ms.is_none());
    if current.is_some_and(|s| {
        s.addresses
            .as_slice()
            .iter()
            .copied()
            .eq(e.addresses.iter())
    }) {
        return None;
    }
    let addrs = Addresses::of(e.addresses.iter());
    // "From" is the last address set it had, current or not: "web-1 was
    // 10.244.0.7, now 10.244.0.9" also across a delete and recreate.
    let from = n
        .addresses
        .first()
        .map(|s| s.addresses.clone())
        .unwrap_or_default();
    close_current(n, now);
    if !addrs.is_empty() {
        let spell = Spell {
            addresses: addrs.clone(),
            from_ms: now,
            until_ms: None,
        };
        push_front(&mut n.addresses, spell, keep);
    }
    Some(What::Moved { from, to: addrs })
}

/// Records the name entering `state`, if it is not in it. Returns the change.
fn transition(n: &mut NameHistory, state: State, now: u64, keep: usize) -> Option<What> {
    let from = n.state();
    if from == state {
        return None;
    }
    push_front(&mut n.states, Transition { state, at_ms: now }, keep);
    Some(What::State { from, to: state })
}
