//! Index semantics driven by synthetic events, no sockets: the re-list
//! contract, deletes removing everything an object contributed, ordinal order.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};

use super::published::PtrRef;
use super::*;
use crate::wire::RecordWriter;

fn settings() -> ZoneSettings {
    ZoneSettings::default()
}

fn svc(ns: &str, name: &str) -> Object {
    fixtures::headless(ns, name)
}

fn slice(ns: &str, name: &str, service: &str, eps: &[(&str, &str, bool)]) -> Object {
    fixtures::slice((ns, name, service), Some("web"), eps, false)
}

fn labels(index: &Index, ns: &str, name: &str) -> Vec<String> {
    index
        .service(&service_key(ns, name))
        .map(|v| {
            v.endpoints()
                .filter(|e| e.served)
                .map(|e| e.label.to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A writer with nothing to sync whose index holds service `web` in `d` and
/// `slices` of it, applied as one batch.
fn web_with(slices: impl IntoIterator<Item = Object>) -> (IndexWriter, Index) {
    let mut w = IndexWriter::new(settings(), &[]);
    let index = w.index();
    w.apply_all(
        std::iter::once(svc("d", "web"))
            .chain(slices)
            .map(SourceEvent::Upsert),
    );
    (w, index)
}

fn list(kind: Kind, objs: Vec<Object>) -> Vec<SourceEvent> {
    let mut v = vec![SourceEvent::Reset(kind)];
    v.extend(objs.into_iter().map(SourceEvent::Upsert));
    v.push(SourceEvent::Synced(kind));
    v
}

#[test]
fn ready_only_after_every_kind_synced() {
    let mut w = IndexWriter::new(settings(), &[Kind::Service, Kind::EndpointSlice]);
    let index = w.index();
    w.apply_all(list(Kind::Service, vec![svc("d", "web")]));
    assert!(!index.is_synced());
    w.apply_all(list(Kind::EndpointSlice, vec![]));
    assert!(index.is_synced());
}

#[test]
fn relist_keeps_serving_until_synced_then_swaps_whole() {
    let mut w = IndexWriter::new(settings(), &[Kind::Service, Kind::EndpointSlice]);
    let index = w.index();
    w.apply_all(list(Kind::Service, vec![svc("d", "web"), svc("d", "gone")]));
    w.apply_all(list(
        Kind::EndpointSlice,
        vec![slice(
            "d",
            "s1",
            "web",
            &[("web-0", "10.0.0.1", true), ("web-1", "10.0.0.2", true)],
        )],
    ));
    assert_eq!(labels(&index, "d", "web"), ["web-0", "web-1"]);

    // A re-list starts (say after 410 Gone): nothing is deleted until it ends.
    w.apply_all([
        SourceEvent::Reset(Kind::Service),
        SourceEvent::Upsert(svc("d", "web")),
    ]);
    assert!(
        index.service(&service_key("d", "gone")).is_some(),
        "old state answers during a re-list"
    );
    w.apply_all([SourceEvent::Synced(Kind::Service)]);
    assert!(
        index.service(&service_key("d", "gone")).is_none(),
        "not re-listed means deleted"
    );
    assert_eq!(
        labels(&index, "d", "web"),
        ["web-0", "web-1"],
        "untouched service unchanged"
    );
}

/// Namespaced watches (`--namespaces a,b`): each namespace's re-list removes
/// only what it no longer lists in its own namespace, and the index is ready
/// once every expected namespace has listed.
#[test]
fn a_namespaced_relist_removes_only_in_its_namespace() {
    use SourceEvent::{ResetIn, SyncedIn, Upsert};
    let mut w = IndexWriter::new(settings(), &[Kind::Service]);
    w.expect_namespaces(&["a".into(), "b".into()]);
    let index = w.index();
    let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
    let has = |ns: &str, name: &str| index.service(&service_key(ns, name)).is_some();
    let k = Kind::Service;
    w.apply_all([
        ResetIn(k, a.clone()),
        Upsert(svc("a", "x")),
        SyncedIn(k, a.clone()),
    ]);
    assert!(!index.is_synced(), "namespace b has not listed yet");
    w.apply_all([
        ResetIn(k, b.clone()),
        Upsert(svc("b", "y")),
        Upsert(svc("b", "z")),
        SyncedIn(k, b.clone()),
    ]);
    assert!(index.is_synced());
    w.apply_all([ResetIn(k, a.clone()), SyncedIn(k, a.clone())]);
    assert!(!has("a", "x"), "not re-listed in a: gone");
    assert!(has("b", "y") && has("b", "z"), "b's objects stay");
    // Two re-lists at once, interleaved: each ends on its own namespace.
    w.apply_all([
        ResetIn(k, b.clone()),
        ResetIn(k, a.clone()),
        Upsert(svc("a", "x")),
        Upsert(svc("b", "y")),
        SyncedIn(k, a.clone()),
    ]);
    assert!(has("a", "x") && has("b", "z"), "b's re-list is still going");
    w.apply_all([SyncedIn(k, b)]);
    assert!(has("a", "x") && has("b", "y"));
    assert!(!has("b", "z"), "not re-listed in b: gone");
    assert_eq!(
        index.stats().relists[k.index()].load(AtomicOrdering::Relaxed),
        3,
        "re-lists after each namespace's first"
    );
}

#[test]
fn deletes_remove_everything_an_object_contributed() {
    let (mut w, index) = web_with([
        slice("d", "s1", "web", &[("web-0", "10.0.0.1", true)]),
        slice("d", "s2", "web", &[("web-1", "10.0.0.2", true)]),
    ]);
    let ip: IpAddr = "10.0.0.2".parse().unwrap();
    assert!(index.reverse(&ip).is_some());
    assert!(index.has_namespace(b"\x01d"));
    w.apply_all([SourceEvent::Remove(
        Kind::EndpointSlice,
        ObjectKey::new("d", "s2"),
    )]);
    assert_eq!(labels(&index, "d", "web"), ["web-0"]);
    assert!(
        index.reverse(&ip).is_none(),
        "PTR of a removed endpoint is gone"
    );
    w.apply_all([SourceEvent::Remove(
        Kind::Service,
        ObjectKey::new("d", "web"),
    )]);
    assert!(index.service(&service_key("d", "web")).is_none());
    assert!(index.reverse(&"10.0.0.1".parse().unwrap()).is_none());
    assert!(
        !index.has_namespace(b"\x01d"),
        "no Namespace object, no service: gone"
    );
}

#[test]
fn ordinal_order_across_slices_and_readiness() {
    let (mut w, index) = web_with([
        slice(
            "d",
            "s1",
            "web",
            &[
                ("web-10", "10.0.0.10", true),
                ("web-2", "10.0.0.2", true),
                ("other", "10.0.0.9", true),
            ],
        ),
        slice(
            "d",
            "s2",
            "web",
            &[("web-0", "10.0.0.1", true), ("web-1", "10.0.0.3", false)],
        ),
    ]);
    assert_eq!(
        labels(&index, "d", "web"),
        ["web-0", "web-2", "web-10", "other"]
    );
    let view = index.service(&service_key("d", "web")).unwrap();
    assert_eq!(view.a().count(), 4);
    assert!(
        !view.is_pending_pod(b"web-1"),
        "no StatefulSet governs this service"
    );
    w.apply_all([SourceEvent::Upsert(Object::StatefulSet(
        StatefulSetRecord {
            key: ObjectKey::new("d", "web"),
            service_name: "web".into(),
            replicas: 3,
            pod_management: PodManagement::OrderedReady,
        },
    ))]);
    let view = index.service(&service_key("d", "web")).unwrap();
    assert!(view.is_pending_pod(b"web-1"));
    assert!(!view.is_pending_pod(b"web-3"));
}

/// Generation `g` of slice d/s1 of service d/web: `1 + g % 4` ready
/// endpoints `web-<i>` at [`generation_ip`]`(g, i)`, so every address of a
/// view says which generation it belongs to.
fn generation(g: u32) -> SourceEvent {
    let eps: Vec<(String, String, bool)> = (0..1 + g % 4)
        .map(|i| (format!("web-{i}"), generation_ip(g, i).to_string(), true))
        .collect();
    let eps: Vec<(&str, &str, bool)> = eps.iter().map(|(h, ip, r)| (&**h, &**ip, *r)).collect();
    SourceEvent::Upsert(slice("d", "s1", "web", &eps))
}

/// `10.<g / 256>.<g % 256>.<i + 1>`.
fn generation_ip(g: u32, i: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(10, (g / 256) as u8, g as u8, i as u8 + 1)
}

/// Checks that `v` is one whole [`generation`]: endpoints, names and the
/// service's A set all of the same one. Returns it.
fn whole_generation(v: &ServiceView) -> u32 {
    let eps: Vec<EndpointView<'_>> = v.endpoints().collect();
    let first = eps.first().expect("a view of web has endpoints").addresses;
    let o = first.v4().next().expect("an IPv4 address").octets();
    let g = u32::from(o[1]) * 256 + u32::from(o[2]);
    assert_eq!(eps.len() as u32, 1 + g % 4, "endpoints of generation {g}");
    let a = v.a();
    assert_eq!(
        usize::from(a.count()),
        eps.len(),
        "A records of generation {g}"
    );
    let mut bytes = Vec::new();
    a.write(&mut bytes);
    // One A record is 16 bytes: owner pointer, type, class, TTL, length, address.
    let records: Vec<&[u8]> = bytes.chunks(16).collect();
    assert_eq!(records.len(), eps.len(), "A set bytes of generation {g}");
    for (i, e) in eps.iter().enumerate() {
        let ip = generation_ip(g, i as u32);
        assert_eq!(e.label, format!("web-{i}"), "generation {g}");
        assert_eq!(e.addresses.to_vec(), [IpAddr::V4(ip)], "generation {g}");
        let named = v.name(e.label.as_bytes()).map(|a| a.to_vec());
        assert_eq!(named, Some(vec![IpAddr::V4(ip)]), "generation {g}");
        assert_eq!(
            records[i][12..],
            ip.octets(),
            "A record {i} of generation {g}"
        );
    }
    g
}

/// Reads d/web until `done` (at most 1,000,000 times), keeping the last 16
/// views and re-checking them after every read: each must stay the whole
/// generation it was. Counts the generations it saw in `seen`.
fn read_views(index: &Index, done: &AtomicBool, seen: &AtomicUsize) {
    let key = service_key("d", "web");
    let mut held: std::collections::VecDeque<(u32, Arc<ServiceView>)> = Default::default();
    let mut last = 0;
    for _ in 0..1_000_000 {
        if done.load(AtomicOrdering::Acquire) {
            break;
        }
        let view = index.service(&key).expect("web exists throughout");
        let g = whole_generation(&view);
        assert!(g >= last, "generation {g} read after {last}");
        if g != last {
            seen.fetch_add(1, AtomicOrdering::Relaxed);
        }
        last = g;
        held.push_back((g, view));
        if held.len() > 16 {
            held.pop_front();
        }
        for (g, view) in &held {
            assert_eq!(whole_generation(view), *g, "a held view changed");
        }
    }
}

#[test]
fn a_reader_holds_a_whole_view_while_the_writer_replaces_it() {
    let mut w = IndexWriter::new(settings(), &[]);
    let index = w.index();
    w.apply_all([SourceEvent::Upsert(svc("d", "web")), generation(1)]);
    let before = index.service(&service_key("d", "web")).unwrap();
    let (done, seen) = (AtomicBool::new(false), AtomicUsize::new(0));
    let published = std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_views(&index, &done, &seen));
        // Publish until at least 200 generations are out and the reader has
        // seen 10 of them (at most 20,000 generations or 10 s).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut g = 1;
        while g < 20_000
            && (g < 200 || seen.load(AtomicOrdering::Relaxed) < 10)
            && !reader.is_finished()
            && std::time::Instant::now() < deadline
        {
            g += 1;
            w.apply_all([generation(g)]);
        }
        done.store(true, AtomicOrdering::Release);
        reader.join().expect("the reader's checks held");
        g
    });
    let seen = seen.into_inner();
    eprintln!("{published} generations published, the reader saw {seen}");
    assert!(
        seen >= 10,
        "the reader saw the writer publish ({seen} generations)"
    );
    // The first view is still generation 1, the current one the last.
    assert_eq!(whole_generation(&before), 1);
    let after = index.service(&service_key("d", "web")).unwrap();
    assert_eq!(whole_generation(&after), published);
    let serial = index.serial();
    w.apply_all([generation(published)]);
    assert_eq!(index.serial(), serial, "a no-op update publishes nothing");
}

fn ptr_names(index: &Index, ip: &str) -> Vec<String> {
    index
        .reverse(&ip.parse().unwrap())
        .map(|s| {
            s.targets()
                .iter()
                .map(|t| t.to_text("cluster.local"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn reverse_entries_follow_views_through_sharing_moves_and_reuse() {
    let mut w = IndexWriter::new(settings(), &[]);
    let index = w.index();
    let a = [("a-0", "10.0.0.1", true), ("a-1", "10.0.0.2", true)];
    w.apply_all(
        [
            svc("d", "a"),
            slice("d", "a1", "a", &a),
            svc("d", "b"),
            slice("d", "b1", "b", &[("b-0", "10.0.0.1", true)]),
        ]
        .map(SourceEvent::Upsert),
    );
    assert_eq!(
        ptr_names(&index, "10.0.0.1"),
        ["a-0.a.d.svc.cluster.local", "b-0.b.d.svc.cluster.local"],
        "an address behind two services has both names"
    );
    assert_eq!(ptr_names(&index, "10.0.0.2"), ["a-1.a.d.svc.cluster.local"]);
    // a-0 goes: a-1 moves to the first position of a's view.
    w.apply_all([SourceEvent::Upsert(slice("d", "a1", "a", &a[1..]))]);
    assert_eq!(ptr_names(&index, "10.0.0.1"), ["b-0.b.d.svc.cluster.local"]);
    assert_eq!(ptr_names(&index, "10.0.0.2"), ["a-1.a.d.svc.cluster.local"]);
    // b goes; c comes (and may get b's number): none of b's names is left.
    w.apply_all([
        SourceEvent::Remove(Kind::Service, ObjectKey::new("d", "b")),
        SourceEvent::Remove(Kind::EndpointSlice, ObjectKey::new("d", "b1")),
    ]);
    assert!(ptr_names(&index, "10.0.0.1").is_empty());
    w.apply_all(
        [
            svc("d", "c"),
            slice("d", "c1", "c", &[("c-0", "10.0.0.3", true)]),
        ]
        .map(SourceEvent::Upsert),
    );
    assert!(ptr_names(&index, "10.0.0.1").is_empty());
    assert_eq!(ptr_names(&index, "10.0.0.3"), ["c-0.c.d.svc.cluster.local"]);
    assert_eq!(ptr_names(&index, "10.0.0.2"), ["a-1.a.d.svc.cluster.local"]);
    assert_eq!(
        std::mem::size_of::<(u32, PtrRef)>(),
        12,
        "an IPv4 reverse entry"
    );
}
