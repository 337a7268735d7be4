//! The writer's book of (re-)lists: which are in progress and the keys each
//! has seen so far, which have completed, and so whether every expected kind
//! has synced. A list covers one kind in every namespace (a cluster-wide
//! watch) or in one namespace (a namespaced watch, `--namespaces`), so two
//! namespaces of one kind re-list independently.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Kind, ObjectKey};

/// What one (re-)list covers: a kind, in every namespace (`None`) or in one.
pub(super) type Scope = (Kind, Option<Arc<str>>);

/// A re-list in progress: the keys it has seen so far, as 64-bit hashes (8
/// bytes a key instead of a copy of it); a collision would only keep one
/// deleted object until the next re-list.
pub(super) struct Relist {
    pub scope: Scope,
    pub seen: HashSet<u64>,
}

impl Relist {
    /// Whether an object of `kind` under `key` is in this re-list's reach.
    pub fn covers(&self, kind: Kind, key: &ObjectKey) -> bool {
        self.scope.0 == kind
            && self
                .scope
                .1
                .as_deref()
                .is_none_or(|ns| ns == key.namespace())
    }
}

/// Lists started, running and completed.
pub(super) struct Lists {
    expected: HashSet<Kind>,
    /// Namespaces whose lists together count as a kind's sync.
    expected_in: Vec<Arc<str>>,
    synced: HashSet<Scope>,
    /// Scopes whose first list has started: a later start is a re-list.
    listed: HashSet<Scope>,
    /// The re-lists in progress (one per scope; a handful at most).
    running: Vec<Relist>,
}

impl Lists {
    pub fn new(expected: &[Kind]) -> Self {
        Lists {
            expected: expected.iter().copied().collect(),
            expected_in: Vec::new(),
            synced: HashSet::new(),
            listed: HashSet::new(),
            running: Vec::new(),
        }
    }

    /// An expected kind also counts as synced once it has listed in every
    /// one of `namespaces`.
    pub fn expect_namespaces(&mut self, namespaces: &[String]) {
        self.expected_in = namespaces.iter().map(|n| Arc::from(n.as_str())).collect();
    }

    /// A list of `scope` starts (replacing one in progress); true when it is
    /// a re-list (not the scope's first).
    pub fn start(&mut self, scope: Scope) -> bool {
        let again = !self.listed.insert(scope.clone());
        self.running.retain(|r| r.scope != scope);
        self.running.push(Relist {
            scope,
            seen: HashSet::new(),
        });
        again
    }

    /// Notes that `key` (hashed to `hash`) was listed, or deleted (`present`
    /// false), for every running list that covers it.
    pub fn note(&mut self, kind: Kind, key: &ObjectKey, hash: u64, present: bool) {
        for r in self.running.iter_mut().filter(|r| r.covers(kind, key)) {
            if present {
                r.seen.insert(hash);
            } else {
                r.seen.remove(&hash);
            }
        }
    }

    /// The list of `scope` is complete: returns it if it was running.
    pub fn finish(&mut self, scope: Scope) -> Option<Relist> {
        let done = self
            .running
            .iter()
            .position(|r| r.scope == scope)
            .map(|i| self.running.swap_remove(i));
        self.synced.insert(scope);
        done
    }

    /// Whether every expected kind has completed a list: cluster-wide, or in
    /// every expected namespace.
    pub fn all_synced(&self) -> bool {
        self.expected.iter().all(|k| {
            self.synced.contains(&(*k, None))
                || (!self.expected_in.is_empty()
                    && self
                        .expected_in
                        .iter()
                        .all(|ns| self.synced.contains(&(*k, Some(Arc::clone(ns))))))
        })
    }
}
