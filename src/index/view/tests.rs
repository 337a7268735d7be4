//! A view's SRV records and glue, parsed back by hickory.

use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::index::stored::StoredSlice;
use crate::index::{
    EndpointRecord, ObjectKey, PortRecord, ServiceKind, ServiceRecord, SliceRecord, ZoneSettings,
};
use crate::wire::name;
use hickory_proto::op::{Message, OpCode, Query};
use hickory_proto::rr::{RData, RecordType};

/// Endpoint `web-<i>` with these addresses.
fn endpoint(i: usize, addresses: &[&str], ready: bool) -> EndpointRecord {
    EndpointRecord {
        hostname: Some(format!("web-{i}")),
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        ready,
        serving: ready,
        terminating: false,
        pod: Some(format!("web-{i}")),
    }
}

/// A headless service `web` in `d` with `n` ready endpoints web-0..
fn view(n: usize) -> ServiceView {
    view_of(
        (0..n)
            .map(|i| endpoint(i, &[&format!("10.0.{}.{}", i >> 8, i as u8)], true))
            .collect(),
    )
}

/// A headless service `web` in `d` with these endpoints in one slice.
fn view_of(endpoints: Vec<EndpointRecord>) -> ServiceView {
    let port = PortRecord {
        name: Some("http".into()),
        protocol: "tcp".into(),
        port: 80,
    };
    let record = SliceRecord {
        key: ObjectKey::new("d", "web-abc"),
        service: "web".into(),
        ports: vec![port.clone()],
        endpoints,
    };
    let slice = StoredSlice::new(&record, record.ports.as_slice().into());
    let settings = ZoneSettings::default();
    build(Inputs {
        settings: &settings,
        record: Arc::new(ServiceRecord {
            key: ObjectKey::new("d", "web"),
            kind: ServiceKind::Headless,
            ports: vec![port].into(),
            publish_not_ready: false,
        }),
        slices: vec![&slice],
        statefulsets: Box::default(),
        id: 0,
        old: None,
        now: 0,
    })
}

/// The view of [`view`]`(n)` and its SRV response for
/// `_http._tcp.web.d.svc.cluster.local`, parsed by hickory: `n` records, each
/// with its glue.
fn srv_response(n: usize) -> (ServiceView, Message) {
    let v = view(n);
    let m = srv_message(&v);
    assert_eq!(m.answers.len(), n);
    assert_eq!(m.additionals.len(), n);
    (v, m)
}

/// The SRV response of `v`, checking the sizes it measured.
fn srv_message(v: &ServiceView) -> Message {
    let owner = name::fqdn("_http._tcp.web.d.svc.cluster.local").unwrap();
    let srv = v.srv(b"http", b"tcp").unwrap();
    let mut q = Message::response(7, OpCode::Query);
    q.add_query(Query::query(owner, RecordType::SRV));
    let mut wire = q.to_vec().unwrap();
    wire[6..8].copy_from_slice(&srv.count().to_be_bytes());
    wire[10..12].copy_from_slice(&srv.glue_count().to_be_bytes());
    let start = wire.len();
    srv.write_answer(&mut wire);
    assert_eq!(wire.len() - start, srv.answer_len());
    srv.write_glue(&mut wire);
    assert_eq!(wire.len() - start, srv.answer_len() + srv.glue_len());
    Message::from_vec(&wire).unwrap()
}

#[test]
fn srv_targets_and_glue_parse_back_in_ordinal_order() {
    let (_, m) = srv_response(12);
    for (i, (a, g)) in m.answers.iter().zip(&m.additionals).enumerate() {
        let target = format!("web-{i}.web.d.svc.cluster.local.");
        match &a.data {
            RData::SRV(srv) => {
                assert_eq!(srv.target.to_string(), target);
                assert_eq!((srv.priority, srv.weight, srv.port), (0, 8, 80));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(g.name.to_string(), target, "glue owner");
        assert_eq!(
            g.data,
            RData::A(std::net::Ipv4Addr::new(10, 0, 0, i as u8).into())
        );
    }
}

#[test]
fn glue_beyond_pointer_reach_spells_its_owner() {
    // 1,000 SRV records: most targets sit past offset 0x3FFF.
    let (v, m) = srv_response(1000);
    for (i, g) in m.additionals.iter().enumerate() {
        assert_eq!(
            g.name.to_string(),
            format!("web-{i}.web.d.svc.cluster.local.")
        );
    }
    assert_eq!(
        v.name(b"web-999").map(Addrs::to_vec),
        Some(vec![IpAddr::from([10, 0, 3, 231])])
    );
    assert_eq!(v.name(b"web-1000"), None);
}

/// The service name's answer of type `t` in `v`, parsed back by hickory,
/// checking the count and size the writer gave before writing.
fn address_answer(v: &ServiceView, t: RecordType) -> Vec<IpAddr> {
    let set = if t == RecordType::A { v.a() } else { v.aaaa() };
    let owner = name::fqdn("web.d.svc.cluster.local").unwrap();
    let mut q = Message::response(7, OpCode::Query);
    q.add_query(Query::query(owner.clone(), t));
    let mut wire = q.to_vec().unwrap();
    wire[6..8].copy_from_slice(&set.count().to_be_bytes());
    let start = wire.len();
    set.write(&mut wire);
    assert_eq!(wire.len() - start, set.len(), "{t}");
    let m = Message::from_vec(&wire).unwrap();
    m.answers
        .iter()
        .map(|r| {
            assert_eq!(
                (&r.name, r.ttl),
                (&owner, ZoneSettings::default().ttl),
                "{t}"
            );
            match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

fn ips(s: &[&str]) -> Vec<IpAddr> {
    s.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn service_address_sets_hold_each_served_address_once_in_ordinal_order() {
    // Written per query: served endpoints only, ordinal order, both families.
    let v = view_of(vec![
        endpoint(2, &["10.0.0.2", "fd00::2"], true),
        endpoint(0, &["10.0.0.9"], true),
        endpoint(1, &["10.0.0.1", "fd00::1"], false),
        endpoint(10, &["fd00::a"], true),
    ]);
    // IPv4: web-1's words lie between web-0's and web-2's; IPv6: one run.
    assert!(matches!(v.a, AddressSet::Served(2)), "{:?}", v.a);
    assert!(
        matches!(v.aaaa, AddressSet::Run { words: 8, .. }),
        "{:?}",
        v.aaaa
    );
    assert_eq!(
        address_answer(&v, RecordType::A),
        ips(&["10.0.0.9", "10.0.0.2"])
    );
    assert_eq!(
        address_answer(&v, RecordType::AAAA),
        ips(&["fd00::2", "fd00::a"])
    );
    // Every endpoint served, one family: one run of the packed array.
    let v = view(3);
    assert!(matches!(v.a, AddressSet::Run { words: 3, .. }), "{:?}", v.a);
    assert_eq!(
        address_answer(&v, RecordType::A),
        ips(&["10.0.0.0", "10.0.0.1", "10.0.0.2"])
    );
    assert!(address_answer(&v, RecordType::AAAA).is_empty());
    // Two endpoints sharing an address: encoded once, each address once.
    let v = view_of(vec![
        endpoint(0, &["10.0.0.5", "fd00::5"], true),
        endpoint(1, &["10.0.0.7", "fd00::5"], true),
        endpoint(2, &["10.0.0.5"], true),
    ]);
    assert!(matches!(v.a, AddressSet::Encoded(_)), "{:?}", v.a);
    assert_eq!(
        address_answer(&v, RecordType::A),
        ips(&["10.0.0.5", "10.0.0.7"])
    );
    assert_eq!(address_answer(&v, RecordType::AAAA), ips(&["fd00::5"]));
    assert_eq!(v.a().count(), 2);
}

#[test]
fn an_endpoint_entry_and_a_ptr_set_stay_small() {
    assert_eq!(std::mem::size_of::<EndpointEntry>(), 28);
    assert_eq!(std::mem::size_of::<NameKey>(), 8);
    assert_eq!(std::mem::size_of::<PtrSet>(), 16);
    // With its Arc's two counters, a view fills jemalloc's 256-byte class
    // (the next is 320): 10,000 services at 100,000 endpoints.
    assert!(std::mem::size_of::<ServiceView>() <= 240);
    // The change time survives its 48 bits.
    for ms in [0, 1_796_194_736_123, (1 << 48) - 1] {
        let e = EndpointEntry {
            changed: EndpointEntry::pack_ms(ms),
            label: Default::default(),
            pod: Default::default(),
            addrs: Default::default(),
            ports: 0,
            flags: 0,
        };
        assert_eq!(e.changed_ms(), ms);
    }
}
