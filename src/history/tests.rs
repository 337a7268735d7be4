//! The history recorder on a real index writer fed synthetic events: address
//! spells, readiness transitions, names kept while a StatefulSet wants them,
//! the bounds, and the timeline.

use std::net::IpAddr;
use std::sync::Arc;

use super::recorder::Recorder;
use super::*;
use crate::index::{
    IndexWriter, Kind, Object, PodManagement, SourceEvent, StatefulSetRecord, ZoneSettings,
    fixtures,
};

fn svc() -> Object {
    fixtures::headless("d", "nginx")
}

fn sts(replicas: u32) -> Object {
    Object::StatefulSet(StatefulSetRecord {
        key: ObjectKey::new("d", "web"),
        service_name: "nginx".into(),
        replicas,
        pod_management: PodManagement::OrderedReady,
    })
}

/// The slice of `nginx` with endpoints (hostname, address, ready).
fn slice(eps: &[(&str, &str, bool)]) -> Object {
    fixtures::slice(("d", "web-sim", "nginx"), None, eps, true)
}

fn writer(addresses: usize, changes: usize) -> (IndexWriter, Arc<History>) {
    let mut w = IndexWriter::new(ZoneSettings::default(), &[]);
    let h = History::new(Limits {
        addresses,
        names: 10_000,
        changes,
    });
    w.observe(Box::new(Recorder::new(Arc::clone(&h), w.index())));
    (w, h)
}

fn up(w: &mut IndexWriter, objs: impl IntoIterator<Item = Object>) {
    w.apply_all(objs.into_iter().map(SourceEvent::Upsert));
}

/// A writer (5 addresses, 50 changes) with `web` (2 replicas) and its pods
/// web-0 10.0.0.1 and web-1 10.0.0.2, both ready.
fn two_ready_pods() -> (IndexWriter, Arc<History>) {
    let (mut w, h) = writer(5, 50);
    let eps = [("web-0", "10.0.0.1", true), ("web-1", "10.0.0.2", true)];
    up(&mut w, [svc(), sts(2), slice(&eps)]);
    (w, h)
}

/// Sets the endpoints of `nginx`'s one slice.
fn set(w: &mut IndexWriter, eps: &[(&str, &str, bool)]) {
    up(w, [slice(eps)]);
}

fn ips(s: &Spell) -> Vec<String> {
    s.addresses
        .as_slice()
        .iter()
        .map(IpAddr::to_string)
        .collect()
}

fn one(ip: &str) -> Addresses {
    Addresses::One(ip.parse().unwrap())
}

fn name(h: &History, label: &str) -> Option<NameHistory> {
    h.service(&ObjectKey::new("d", "nginx"))?
        .names
        .get(label)
        .cloned()
}

#[test]
fn a_moved_pod_keeps_its_previous_address_and_states() {
    let (mut w, h) = two_ready_pods();
    set(
        &mut w,
        &[("web-0", "10.0.0.1", true), ("web-1", "10.0.0.9", false)],
    );
    let n = name(&h, "web-1").unwrap();
    assert_eq!(n.addresses.len(), 2);
    assert_eq!(ips(&n.addresses[0]), ["10.0.0.9"]);
    assert_eq!(n.addresses[0].until_ms, None);
    assert_eq!(ips(&n.addresses[1]), ["10.0.0.2"]);
    assert!(
        n.addresses[1]
            .until_ms
            .is_some_and(|u| u.get() >= n.addresses[1].from_ms)
    );
    let states: Vec<State> = n.states.iter().map(|t| t.state).collect();
    assert_eq!(states, [State::NotReady, State::Ready]);
    assert_eq!(name(&h, "web-0"), None, "web-0 has no past: nothing stored");

    let changes = h.changes();
    let c = &changes[0];
    assert_eq!((&*c.namespace, &*c.service), ("d", "nginx"));
    assert!(c.served_us >= c.arrived_us && c.arrived_us > 0);
    let moved = What::Moved {
        from: one("10.0.0.2"),
        to: one("10.0.0.9"),
    };
    assert_eq!(
        c.items[0],
        Item {
            name: "web-1".into(),
            what: moved
        }
    );
    assert_eq!(
        c.items[1].what,
        What::State {
            from: State::Ready,
            to: State::NotReady
        }
    );
}

#[test]
fn a_deleted_pod_is_kept_while_wanted_and_remembered_when_it_returns() {
    let (mut w, h) = two_ready_pods();
    set(&mut w, &[("web-0", "10.0.0.1", true)]);
    let n = name(&h, "web-1").expect("web-1 is still wanted: kept");
    assert_eq!(n.state(), State::Gone);
    assert!(n.addresses[0].until_ms.is_some());
    set(
        &mut w,
        &[("web-0", "10.0.0.1", true), ("web-1", "10.0.0.3", true)],
    );
    let n = name(&h, "web-1").unwrap();
    assert_eq!(ips(&n.addresses[0]), ["10.0.0.3"]);
    assert_eq!(ips(&n.addresses[1]), ["10.0.0.2"]);
    let moved = &h.changes()[0].items[0];
    assert_eq!(
        moved.what,
        What::Moved {
            from: one("10.0.0.2"),
            to: one("10.0.0.3"),
        },
        "the move names the address it had before it went"
    );
    // Scaled down to 1: web-1 is no longer wanted, its history goes.
    up(&mut w, [sts(1), slice(&[("web-0", "10.0.0.1", true)])]);
    assert!(name(&h, "web-1").is_none());
    let scaled = What::Scaled {
        statefulset: "web".into(),
        from: 2,
        to: 1,
    };
    assert!(
        h.changes()[0].items.iter().any(|i| i.what == scaled),
        "{:?}",
        h.changes()[0]
    );
}

#[test]
fn history_and_timeline_stay_within_their_limits() {
    let (mut w, h) = writer(2, 3);
    up(&mut w, [svc(), sts(1)]);
    for i in 1..=10 {
        set(&mut w, &[("web-0", &format!("10.0.0.{i}"), true)]);
    }
    let n = name(&h, "web-0").unwrap();
    assert_eq!(n.addresses.len(), 3, "current + 2 previous");
    assert_eq!(ips(&n.addresses[0]), ["10.0.0.10"]);
    assert_eq!(ips(&n.addresses[2]), ["10.0.0.8"]);
    assert_eq!(h.changes().len(), 3);
    let s = h.stats();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(s.names.load(Relaxed), 1);
    assert_eq!(s.name_entries.load(Relaxed), 4, "3 address sets + 1 state");
    assert_eq!(s.changes.load(Relaxed), 3);
}

#[test]
fn a_removed_service_takes_its_history_and_many_changes_are_counted() {
    let (mut w, h) = writer(5, 50);
    up(&mut w, [svc()]);
    let many: Vec<(String, String)> = (0..30)
        .map(|i| (format!("web-{i}"), format!("10.0.1.{i}")))
        .collect();
    let eps: Vec<(&str, &str, bool)> = many
        .iter()
        .map(|(n, ip)| (n.as_str(), ip.as_str(), true))
        .collect();
    up(&mut w, [slice(&eps)]);
    let c = &h.changes()[0];
    assert_eq!((c.items.len(), c.more), (MAX_ITEMS, 30 - MAX_ITEMS));
    w.apply_all([SourceEvent::Remove(
        crate::index::Kind::Service,
        ObjectKey::new("d", "nginx"),
    )]);
    assert!(h.service(&ObjectKey::new("d", "nginx")).is_none());
    assert_eq!(h.changes()[0].items[0].what, What::ServiceRemoved);
    assert_eq!(
        h.stats().names.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn names_without_a_past_are_not_stored() {
    let (mut w, h) = writer(5, 50);
    let eps = [("web-0", "10.0.0.1", true), ("web-1", "10.0.0.2", true)];
    up(&mut w, [svc(), sts(2), slice(&eps)]);
    // The StatefulSet changes (the view is rebuilt), the names do not.
    up(&mut w, [sts(3), slice(&eps)]);
    let stats = h.stats();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        stats.names.load(Relaxed),
        0,
        "{:?}",
        h.service(&ObjectKey::new("d", "nginx"))
    );
    assert_eq!(stats.name_entries.load(Relaxed), 0);
    // One name changes: only it is stored, its first spell from when it appeared.
    set(&mut w, &[eps[0], ("web-1", "10.0.0.2", false)]);
    assert_eq!(stats.names.load(Relaxed), 1);
    let n = name(&h, "web-1").unwrap();
    assert_eq!(n.addresses.len(), 1, "same address: one spell");
    assert_eq!(
        n.states.iter().map(|t| t.state).collect::<Vec<_>>(),
        [State::NotReady, State::Ready]
    );
    assert!(n.states[1].at_ms <= n.states[0].at_ms);
}

#[test]
fn past_the_name_bound_the_oldest_pasts_are_forgotten() {
    let (mut w, h) = writer(5, 50);
    let h2 = History::new(Limits {
        addresses: 5,
        names: 2,
        changes: 50,
    });
    w.observe(Box::new(Recorder::new(Arc::clone(&h2), w.index())));
    // Each pod's address ends in the digit given for it.
    let pods = |[a, b, c]: [&str; 3]| {
        slice(&[
            ("web-0", &format!("10.0.0.1{a}"), true),
            ("web-1", &format!("10.0.1.1{b}"), true),
            ("web-2", &format!("10.0.2.1{c}"), true),
        ])
    };
    up(&mut w, [svc(), sts(3), pods(["0"; 3])]);
    // All three move in one update, then web-2 alone, then web-0 alone.
    up(&mut w, [pods(["1"; 3])]);
    assert_eq!(
        h.stats().names.load(Ordering::Relaxed),
        3,
        "unbounded: all three"
    );
    assert_eq!(h2.stats().names.load(Ordering::Relaxed), 2);
    up(&mut w, [pods(["1", "1", "2"])]);
    up(&mut w, [pods(["2", "1", "2"])]);
    let kept = |label: &str| {
        h2.service(&ObjectKey::new("d", "nginx"))
            .is_some_and(|s| s.names.contains_key(label))
    };
    assert!(
        kept("web-0") && kept("web-2"),
        "the two changed last keep their past"
    );
    assert!(
        !kept("web-1"),
        "web-1's past changed longest ago: forgotten"
    );
    assert_eq!(h2.stats().names.load(Ordering::Relaxed), 2);
    let web0 = h2.service(&ObjectKey::new("d", "nginx")).unwrap().names["web-0"].clone();
    assert_eq!(
        web0.addresses.len(),
        2,
        "a name that lost its past starts a new one"
    );
    assert_eq!(ips(&web0.addresses[0]), ["10.0.0.12"]);
    // The service itself goes: nothing is left, the bound's count included.
    w.apply_all([SourceEvent::Remove(
        Kind::Service,
        ObjectKey::new("d", "nginx"),
    )]);
    assert_eq!(h2.stats().names.load(Ordering::Relaxed), 0);
    assert!(h2.service(&ObjectKey::new("d", "nginx")).is_none());
}
