//! The IXFR journal: the records each publication removed and added, under
//! the serials it went from and to, bounded by changes and bytes.
//!
//! A change's records sit back to back in one buffer (`zone`, `op`, length,
//! wire record: four bytes of overhead a record), so an entry costs one heap
//! block besides its ring slot. When a bound is passed the oldest changes go;
//! a secondary whose serial went with them gets the whole zone instead.
//!
//! Each namespace's transfer zone has a serial of its own: the serial of the
//! last change that touched a record inside it (or the serial history
//! started at). It moves only with its namespace, yet is one of the cluster
//! serials, so the same chain of changes answers its IXFR: from the change
//! that starts at the client's serial on, only the records inside the
//! namespace below its apex (the cluster zone's namespace marker at the apex
//! is not the namespace zone's: `zones`).

use std::collections::{BTreeMap, HashMap, VecDeque};

/// `op` of a removed record.
const DELETE: u8 = 0;
/// `op` of an added record.
const ADD: u8 = 1;

/// What one publication changed, in every zone.
#[derive(Debug)]
struct Change {
    /// The serial before it; the next change's is the one after it.
    from: u32,
    records: Box<[u8]>,
}

/// Bytes an entry costs besides its records: the ring slot and the boxed
/// buffer's allocation header, roughly.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Change>() + 16;

impl Change {
    /// (zone, op, wire record) of each record.
    fn records(&self) -> impl Iterator<Item = (u8, u8, &[u8])> {
        let mut rest = &*self.records;
        std::iter::from_fn(move || {
            let [zone, op, hi, lo, tail @ ..] = rest else {
                return None;
            };
            let len = u16::from_be_bytes([*hi, *lo]) as usize;
            let (record, next) = tail.split_at(len.min(tail.len()));
            rest = next;
            Some((*zone, *op, record))
        })
    }

    fn cost(&self) -> usize {
        ENTRY_OVERHEAD + self.records.len()
    }
}

/// Records of one publication while the writer collects them.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    buf: Vec<u8>,
}

impl Pending {
    fn push(&mut self, zone: u8, op: u8, record: &[u8]) {
        // Wire records are at most 65,535 bytes (RDLENGTH) plus the owner.
        let len = record.len().min(u16::MAX as usize);
        self.buf.extend_from_slice(&[zone, op]);
        self.buf.extend_from_slice(&(len as u16).to_be_bytes());
        self.buf.extend_from_slice(&record[..len]);
    }

    /// Records the difference between two sorted, duplicate-free lists of
    /// (zone, record); sets `changed[zone]` for every zone that differs.
    pub(crate) fn diff(
        &mut self,
        old: &[(u8, Vec<u8>)],
        new: &[(u8, Vec<u8>)],
        changed: &mut [bool],
    ) {
        let (mut i, mut j) = (0, 0);
        loop {
            let take_old = match (old.get(i), new.get(j)) {
                (None, None) => return,
                (Some(o), Some(n)) if o == n => {
                    i += 1;
                    j += 1;
                    continue;
                }
                (Some(o), Some(n)) => o < n,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            let ((zone, record), op) = if take_old {
                i += 1;
                (&old[i - 1], DELETE)
            } else {
                j += 1;
                (&new[j - 1], ADD)
            };
            self.push(*zone, op, record);
            if let Some(c) = changed.get_mut(*zone as usize) {
                *c = true;
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

    fn take(&mut self) -> Box<[u8]> {
        std::mem::take(&mut self.buf).into_boxed_slice()
    }
}

/// What the journal knows about a client's serial, for one zone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Since {
    /// The client has our serial (or a newer one): nothing to send.
    Current(u32),
    /// The records removed and added since the client's serial, and ours.
    Diff {
        current: u32,
        removed: Vec<Vec<u8>>,
        added: Vec<Vec<u8>>,
    },
    /// Not in the journal (too old, or never ours): send the whole zone.
    Unknown,
}

/// The bounded history.
#[derive(Debug)]
pub(crate) struct Journal {
    changes: VecDeque<Change>,
    bytes: usize,
    max_changes: usize,
    max_bytes: usize,
    /// The serial the newest change went to (or the first serial recorded).
    current: u32,
    /// The serial history started at: a namespace's serial until it changes.
    base: u32,
    /// Each namespace's serial, once it changed since `base`.
    namespaces: HashMap<Box<str>, u32>,
}

/// RFC 1982 §3.2: `a` is newer than `b`.
pub(crate) fn serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

impl Journal {
    /// An empty journal keeping at most `max_changes` changes and `max_bytes`.
    pub(crate) fn new(max_changes: usize, max_bytes: usize) -> Self {
        Self {
            changes: VecDeque::new(),
            bytes: 0,
            max_changes,
            max_bytes,
            current: 0,
            base: 0,
            namespaces: HashMap::new(),
        }
    }

    /// Starts the history at `serial` (the first synced publication).
    pub(crate) fn start(&mut self, serial: u32) {
        self.changes.clear();
        self.bytes = 0;
        self.current = serial;
        self.base = serial;
        self.namespaces.clear();
    }

    /// The serial of namespace `ns`'s transfer zone.
    pub(crate) fn namespace_serial(&self, ns: &str) -> u32 {
        self.namespaces.get(ns).copied().unwrap_or(self.base)
    }

    /// Records that the change to serial `to` touched namespace `ns`
    /// (called after [`Journal::push`] for that change).
    pub(crate) fn touch(&mut self, ns: &str, to: u32) {
        match self.namespaces.get_mut(ns) {
            Some(s) => *s = to,
            None => {
                self.namespaces.insert(ns.into(), to);
            }
        }
    }

    /// Appends the change from `from` to `to`, dropping the oldest changes
    /// while a bound is passed (the new one too, if it alone is too big).
    pub(crate) fn push(&mut self, from: u32, to: u32, pending: &mut Pending) {
        if from != self.current {
            // A gap in the chain: what came before cannot be replayed.
            self.start(from);
        }
        let change = Change {
            from,
            records: pending.take(),
        };
        self.bytes += change.cost();
        self.changes.push_back(change);
        self.current = to;
        while self.changes.len() > self.max_changes || self.bytes > self.max_bytes {
            let Some(old) = self.changes.pop_front() else {
                break;
            };
            self.bytes -= old.cost();
        }
    }

    /// Changes held.
    pub(crate) fn len(&self) -> usize {
        self.changes.len()
    }

    /// Bytes held (records plus per-change overhead).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The serial the journal is at.
    pub(crate) fn current(&self) -> u32 {
        self.current
    }

    /// What zone `zone` changed since serial `from`, condensed into one
    /// difference (RFC 1995 §5 lets a server merge consecutive ones).
    pub(crate) fn since(&self, zone: u8, from: u32) -> Since {
        self.since_where(from, self.current, |z, _| z == zone)
    }

    /// What namespace `ns`'s transfer zone (`suffix`: its name, lower-case
    /// wire format) changed since its serial `from`: the cluster zone's
    /// records below its apex, from the change that starts at `from` on.
    pub(crate) fn since_namespace(&self, ns: &str, suffix: &[u8], from: u32) -> Since {
        let current = self.namespace_serial(ns);
        self.since_where(from, current, |z, record| {
            z == 0
                && super::zones::owner_within(record, suffix)
                && !super::zones::owner_is(record, suffix)
        })
    }

    /// The records `keep` selects, changed since `from`, for a zone at `current`.
    fn since_where(&self, from: u32, current: u32, keep: impl Fn(u8, &[u8]) -> bool) -> Since {
        if from == current || serial_gt(from, current) {
            return Since::Current(current);
        }
        let Some(first) = self.changes.iter().position(|c| c.from == from) else {
            return Since::Unknown;
        };
        // Per record, its first and last operation: a record removed then
        // added back is unchanged, one added then removed never existed.
        let mut ops: BTreeMap<&[u8], (u8, u8)> = BTreeMap::new();
        for c in self.changes.range(first..) {
            for (_, op, record) in c.records().filter(|r| keep(r.0, r.2)) {
                ops.entry(record)
                    .and_modify(|e| e.1 = op)
                    .or_insert((op, op));
            }
        }
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        for (record, (first, last)) in ops {
            match (first, last) {
                (DELETE, DELETE) => removed.push(record.to_vec()),
                (ADD, ADD) => added.push(record.to_vec()),
                _ => {}
            }
        }
        Since::Diff {
            current,
            removed,
            added,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &str) -> (u8, Vec<u8>) {
        (0, s.as_bytes().to_vec())
    }

    fn change(j: &mut Journal, from: u32, to: u32, old: &[&str], new: &[&str]) {
        let old: Vec<_> = old.iter().map(|s| rec(s)).collect();
        let new: Vec<_> = new.iter().map(|s| rec(s)).collect();
        let mut p = Pending::default();
        let mut changed = [false];
        p.diff(&old, &new, &mut changed);
        j.push(from, to, &mut p);
    }

    #[test]
    fn differences_condense_and_unknown_serials_fall_back() {
        let mut j = Journal::new(10, 1 << 20);
        j.start(1);
        change(&mut j, 1, 2, &["a", "b"], &["a", "c"]);
        change(&mut j, 2, 3, &["c"], &["d"]);
        change(&mut j, 3, 4, &["d", "x"], &["b", "x"]);
        let b = |s: &str| s.as_bytes().to_vec();
        // From 1: b came back, c and d came and went: nothing but ...
        assert_eq!(
            j.since(0, 1),
            Since::Diff {
                current: 4,
                removed: vec![],
                added: vec![]
            }
        );
        assert_eq!(
            j.since(0, 2),
            Since::Diff {
                current: 4,
                removed: vec![b("c")],
                added: vec![b("b")]
            }
        );
        assert_eq!(j.since(0, 4), Since::Current(4));
        assert_eq!(j.since(0, 5), Since::Current(4));
        assert_eq!(j.since(0, 0), Since::Unknown);
        assert_eq!(
            j.since(1, 2),
            Since::Diff {
                current: 4,
                removed: vec![],
                added: vec![]
            }
        );
    }

    #[test]
    fn bounds_drop_the_oldest_changes() {
        let mut j = Journal::new(2, 1 << 20);
        j.start(1);
        for s in 1..5 {
            change(&mut j, s, s + 1, &["a"], &["b"]);
        }
        assert_eq!(j.len(), 2);
        assert_eq!(j.since(0, 2), Since::Unknown);
        assert!(matches!(j.since(0, 3), Since::Diff { .. }));
        let mut tiny = Journal::new(10, 10);
        tiny.start(1);
        change(&mut tiny, 1, 2, &["a"], &["b"]);
        assert_eq!((tiny.len(), tiny.bytes()), (0, 0));
        assert_eq!(tiny.since(0, 1), Since::Unknown);
        assert_eq!(tiny.since(0, 2), Since::Current(2));
    }

    /// A wire record owned by `owner` (dotted): the name, then a stub.
    fn owned(owner: &str) -> (u8, Vec<u8>) {
        let mut w = crate::wire::name::from_dotted(owner).unwrap();
        w.extend_from_slice(&[0, 1, 0, 1]);
        (0, w)
    }

    #[test]
    fn a_namespace_has_its_own_serial_and_differences() {
        let a = |n: &str| owned(&format!("{n}.a.svc.z"));
        let b = |n: &str| owned(&format!("{n}.b.svc.z"));
        let suffix = crate::wire::name::from_dotted("a.svc.z").unwrap();
        let mut j = Journal::new(10, 1 << 20);
        j.start(10);
        let push = |j: &mut Journal, from, to, old: Vec<_>, new: Vec<_>, ns: &[&str]| {
            let mut p = Pending::default();
            p.diff(&old, &new, &mut [false]);
            j.push(from, to, &mut p);
            for n in ns {
                j.touch(n, to);
            }
        };
        push(&mut j, 10, 11, vec![b("x")], vec![b("y")], &["b"]);
        assert_eq!(j.namespace_serial("a"), 10, "b's change leaves a's serial");
        assert_eq!(j.since_namespace("a", &suffix, 10), Since::Current(10));
        push(&mut j, 11, 12, vec![a("p")], vec![a("q")], &["a"]);
        push(&mut j, 12, 13, vec![b("y")], vec![b("z")], &["b"]);
        assert_eq!(j.namespace_serial("a"), 12);
        // From a's old serial: a's difference only, ending at a's serial.
        assert_eq!(
            j.since_namespace("a", &suffix, 10),
            Since::Diff {
                current: 12,
                removed: vec![a("p").1],
                added: vec![a("q").1],
            }
        );
        assert_eq!(j.since_namespace("a", &suffix, 12), Since::Current(12));
        assert_eq!(j.since_namespace("a", &suffix, 9), Since::Unknown);
        // The cluster zone's marker at a's apex (a came into being): a change
        // of the cluster zone, none of a's zone (not touched, not in it).
        push(&mut j, 13, 14, vec![], vec![owned("a.svc.z")], &[]);
        assert_eq!(j.namespace_serial("a"), 12);
        assert_eq!(j.since_namespace("a", &suffix, 12), Since::Current(12));
        assert_eq!(
            j.since(0, 13),
            Since::Diff {
                current: 14,
                removed: vec![],
                added: vec![owned("a.svc.z").1],
            }
        );
        push(&mut j, 14, 15, vec![a("q")], vec![a("r")], &["a"]);
        assert_eq!(
            j.since_namespace("a", &suffix, 12),
            Since::Diff {
                current: 15,
                removed: vec![a("q").1],
                added: vec![a("r").1],
            },
            "the marker is left out of a's differences"
        );
        // "b.svc.z" is not inside "a.svc.z", nor "xa.svc.z".
        assert!(!super::super::zones::owner_within(
            &owned("xa.svc.z").1,
            &suffix
        ));
        assert!(super::super::zones::owner_within(
            &owned("a.svc.z").1,
            &suffix
        ));
    }

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(serial_gt(1, u32::MAX));
        assert!(!serial_gt(u32::MAX, 1));
        assert!(serial_gt(5, 4));
        assert!(!serial_gt(4, 4));
    }
}
