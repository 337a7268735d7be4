//! Index semantics driven by synthetic events, no sockets: the re-list
//! contract, deletes removing everything an object contributed, ordinal order.

use std::net::IpAddr;

use super::published::PtrRef;
use super::*;

fn settings() -> ZoneSettings {
    ZoneSettings::default()
}

fn svc(ns: &str, name: &str) -> Object {
    Object::Service(ServiceRecord {
        key: ObjectKey::new(ns, name),
        kind: ServiceKind::Headless,
        ports: Arc::from([]),
        publish_not_ready: false,
    })
}

fn slice(ns: &str, name: &str, service: &str, eps: &[(&str, &str, bool)]) -> Object {
    Object::EndpointSlice(SliceRecord {
        key: ObjectKey::new(ns, name),
        service: service.into(),
        ports: vec![PortRecord {
            name: Some("web".into()),
            protocol: "tcp".into(),
            port: 80,
        }],
        endpoints: eps
            .iter()
            .map(|(h, ip, ready)| EndpointRecord {
                hostname: Some(h.to_string()),
                addresses: vec![ip.parse().unwrap()],
                ready: *ready,
                serving: *ready,
                terminating: false,
                pod: None,
            })
            .collect(),
    })
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
    assert_eq!(view.a().count, 4);
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

#[test]
fn a_reader_holds_a_whole_view_while_the_writer_replaces_it() {
    let (mut w, index) = web_with([slice("d", "s1", "web", &[("web-0", "10.0.0.1", true)])]);
    let before = index.service(&service_key("d", "web")).unwrap();
    w.apply_all([SourceEvent::Upsert(slice(
        "d",
        "s1",
        "web",
        &[("web-0", "10.0.0.7", true)],
    ))]);
    let after = index.service(&service_key("d", "web")).unwrap();
    assert_eq!(
        before.endpoint(0).addresses.to_vec(),
        ["10.0.0.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        after.endpoint(0).addresses.to_vec(),
        ["10.0.0.7".parse::<IpAddr>().unwrap()]
    );
    let serial = index.serial();
    w.apply_all([SourceEvent::Upsert(slice(
        "d",
        "s1",
        "web",
        &[("web-0", "10.0.0.7", true)],
    ))]);
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
