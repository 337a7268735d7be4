//! What the file source remembers between reads: a digest per object, per
//! layer, and which layer's object the index serves when several define one.
//!
//! A layer is one manifest file (in the configured order) or, on top of
//! them all, the simulator. Each layer keeps a 64-bit hash per object it
//! defines, not the object: at 100,000 endpoints the objects were ~21 MB.
//! The rule for a key (kind, namespace, name) defined in several layers: the
//! highest layer wins (the simulator over every file, and a later file over
//! an earlier one, as `kubectl apply` of the files in order would leave it).
//! The index always holds the winning layer's object. When the winner stops
//! defining the key, the next layer down that defines it takes over: its
//! object is not in memory, so that file is re-read (a *refill*).

use std::collections::HashMap;

use crate::index::{Kind, Object, ObjectKey, SourceEvent};

/// An object's identity across layers.
pub(crate) type Key = (Kind, ObjectKey);

/// The per-layer digests; layer `i < files` is file `i`, the last the simulator.
pub(crate) struct Layers {
    maps: Vec<HashMap<Key, u64>>,
}

/// A layer's new content being read, object by object.
pub(crate) struct Change {
    layer: usize,
    next: HashMap<Key, u64>,
}

/// What ending a change leaves to do: removals to send, and keys to refill
/// from a lower layer `(layer, key)`.
#[derive(Default)]
pub(crate) struct Fallout {
    pub(crate) removes: Vec<SourceEvent>,
    pub(crate) refills: Vec<(usize, Key)>,
}

impl Layers {
    /// `layers` empty layers.
    pub(crate) fn new(layers: usize) -> Self {
        Self {
            maps: (0..layers).map(|_| HashMap::new()).collect(),
        }
    }

    /// The index of the top layer (the simulator's).
    pub(crate) fn top(&self) -> usize {
        self.maps.len() - 1
    }

    /// Whether any layer defines a key of `kind`.
    pub(crate) fn any_of(&self, kind: Kind) -> bool {
        self.maps.iter().any(|m| m.keys().any(|(k, _)| *k == kind))
    }

    /// Whether a layer above `layer` defines `key` (and so wins it).
    pub(crate) fn shadowed(&self, layer: usize, key: &Key) -> bool {
        self.maps[layer + 1..].iter().any(|m| m.contains_key(key))
    }

    /// The highest layer below `layer` that defines `key`.
    fn below(&self, layer: usize, key: &Key) -> Option<usize> {
        (0..layer).rev().find(|&l| self.maps[l].contains_key(key))
    }

    /// The digest `layer` defines `key` with.
    pub(crate) fn digest(&self, layer: usize, key: &Key) -> Option<u64> {
        self.maps[layer].get(key).copied()
    }

    /// Records that the index holds `layer`'s object for `key` with `digest`.
    pub(crate) fn set(&mut self, layer: usize, key: Key, digest: u64) {
        self.maps[layer].insert(key, digest);
    }

    /// Starts reading `layer`'s new content.
    pub(crate) fn begin(&self, layer: usize) -> Change {
        Change {
            layer,
            next: HashMap::with_capacity(self.maps[layer].len()),
        }
    }

    /// One object of the new content with its digest: returns it if the
    /// index must get it (this layer wins the key and the index holds
    /// something else). A key twice in one content: the later one wins.
    pub(crate) fn offer(&self, change: &mut Change, obj: Object, digest: u64) -> Option<Object> {
        let key = (obj.kind(), obj.key().clone());
        let layer = change.layer;
        let served = match change.next.get(&key) {
            Some(d) => Some(*d),
            None => self
                .digest(layer, &key)
                .or_else(|| self.below(layer, &key).and_then(|l| self.digest(l, &key))),
        };
        let send = !self.shadowed(layer, &key) && served != Some(digest);
        change.next.insert(key, digest);
        send.then_some(obj)
    }

    /// Ends a change whose content was read whole: the keys the layer no
    /// longer defines are removed, or refilled from the layer below.
    pub(crate) fn commit(&mut self, change: Change) -> Fallout {
        let layer = change.layer;
        let old = std::mem::replace(&mut self.maps[layer], change.next);
        let mut out = Fallout::default();
        for key in old.into_keys() {
            if self.maps[layer].contains_key(&key) || self.shadowed(layer, &key) {
                continue;
            }
            match self.below(layer, &key) {
                Some(l) => out.refills.push((l, key)),
                None => out.removes.push(SourceEvent::Remove(key.0, key.1)),
            }
        }
        out
    }

    /// Ends a change whose content broke off midway: what was read is
    /// kept (the index has it), nothing is removed.
    pub(crate) fn commit_partial(&mut self, change: Change) {
        self.maps[change.layer].extend(change.next);
    }

    /// A refill of `key` from `layer` found no such object (the file
    /// changed since): the layer forgets it, and the next one down takes
    /// over, or the key is removed.
    pub(crate) fn lost(&mut self, layer: usize, key: Key) -> Fallout {
        self.maps[layer].remove(&key);
        let mut out = Fallout::default();
        if self.shadowed(layer, &key) {
            return out;
        }
        match self.below(layer, &key) {
            Some(l) => out.refills.push((l, key)),
            None => out.removes.push(SourceEvent::Remove(key.0, key.1)),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::NamespaceRecord;

    fn ns(name: &str) -> Object {
        Object::Namespace(NamespaceRecord {
            key: ObjectKey::new("", name),
        })
    }

    fn key(name: &str) -> Key {
        (Kind::Namespace, ns(name).key().clone())
    }

    /// Sets `layer` to `objs` (name, digest); returns the names sent and the fallout.
    fn set(l: &mut Layers, layer: usize, objs: &[(&str, u64)]) -> (Vec<String>, Fallout) {
        let mut change = l.begin(layer);
        let sent = objs
            .iter()
            .filter_map(|(n, d)| l.offer(&mut change, ns(n), *d))
            .map(|o| o.key().name().to_string())
            .collect();
        (sent, l.commit(change))
    }

    #[test]
    fn the_top_layer_wins_and_hands_back_to_the_one_below() {
        let mut l = Layers::new(3);
        assert_eq!(set(&mut l, 0, &[("a", 1), ("b", 1)]).0, ["a", "b"]);
        // File 1 redefines a: it wins; an identical copy would send nothing.
        assert_eq!(set(&mut l, 1, &[("a", 2)]).0, ["a"]);
        // File 0 changes a: shadowed, nothing sent.
        let (sent, fallout) = set(&mut l, 0, &[("a", 3), ("b", 1)]);
        assert!(sent.is_empty() && fallout.refills.is_empty() && fallout.removes.is_empty());
        // File 1 drops a: file 0's a comes back by a refill.
        let (sent, fallout) = set(&mut l, 1, &[]);
        assert!(sent.is_empty());
        assert_eq!(fallout.refills, [(0, key("a"))]);
        // File 0 drops b: removed.
        let (_, fallout) = set(&mut l, 0, &[("a", 3)]);
        assert!(
            matches!(&fallout.removes[..], [SourceEvent::Remove(Kind::Namespace, k)] if k.name() == "b")
        );
    }

    #[test]
    fn a_new_winner_with_the_served_content_sends_nothing() {
        let mut l = Layers::new(2);
        set(&mut l, 0, &[("a", 1)]);
        assert!(set(&mut l, 1, &[("a", 1)]).0.is_empty());
        assert_eq!(
            set(&mut l, 1, &[("a", 1), ("a", 2)]).0,
            ["a"],
            "the later copy wins"
        );
        let mut change = l.begin(0);
        assert!(l.offer(&mut change, ns("a"), 9).is_none(), "shadowed");
        l.commit_partial(change);
        assert_eq!(l.digest(0, &key("a")), Some(9));
        let fallout = l.lost(0, key("a"));
        assert!(
            fallout.refills.is_empty() && fallout.removes.is_empty(),
            "file 1 still wins"
        );
        set(&mut l, 1, &[]);
        let fallout = l.lost(0, key("b"));
        assert_eq!(fallout.removes.len(), 1);
    }
}
