//! Criterion benches of the query path and the index, without sockets:
//! answer a pod A / service A / SRV / NXDOMAIN / PTR query, apply one endpoint
//! change, and re-list 100,000 endpoints (10,000 services x 10 pods).
//!
//! Run with `cargo bench --bench index`. CI only compiles them.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use headless_dns::Config;
use headless_dns::dns::Answerer;
use headless_dns::index::{
    EndpointRecord, IndexWriter, Kind, Object, ObjectKey, PortRecord, ServiceKind, ServiceRecord,
    SliceRecord, SourceEvent, ZoneSettings,
};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

fn ip(s: usize, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, (s >> 8) as u8, s as u8, i as u8 + 1))
}

fn cluster(services: usize, pods: usize, generation: usize) -> Vec<Object> {
    let mut out = Vec::with_capacity(services * 2);
    for s in 0..services {
        let ns = format!("ns-{}", s % 10);
        let name = format!("svc-{s}");
        out.push(Object::Service(ServiceRecord {
            key: ObjectKey::new(&ns, &name),
            kind: ServiceKind::Headless,
            ports: vec![],
            publish_not_ready: false,
        }));
        out.push(Object::EndpointSlice(SliceRecord {
            key: ObjectKey::new(&ns, &format!("{name}-abcde")),
            service: name,
            ports: vec![PortRecord {
                name: Some("web".into()),
                protocol: "tcp".into(),
                port: 80,
            }],
            endpoints: (0..pods)
                .map(|i| EndpointRecord {
                    hostname: Some(format!("web-{i}")),
                    addresses: vec![ip(s + generation, i)],
                    ready: true,
                    serving: true,
                    terminating: false,
                    pod: None,
                })
                .collect(),
        }));
    }
    out
}

fn relist(objects: Vec<Object>) -> Vec<SourceEvent> {
    let mut ev: Vec<SourceEvent> = Kind::ALL.iter().map(|k| SourceEvent::Reset(*k)).collect();
    ev.extend(objects.into_iter().map(SourceEvent::Upsert));
    ev.extend(Kind::ALL.iter().map(|k| SourceEvent::Synced(*k)));
    ev
}

fn writer() -> IndexWriter {
    IndexWriter::new(ZoneSettings::default(), &Kind::ALL)
}

fn packet(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn queries(c: &mut Criterion) {
    let mut w = writer();
    w.apply_all(relist(cluster(1000, 10, 0)));
    let a = Answerer::new(w.index(), Config::default().dns_settings());
    let mut out = Vec::with_capacity(4096);
    for (label, name, t) in [
        (
            "answer/pod_a",
            "web-3.svc-5.ns-5.svc.cluster.local",
            RecordType::A,
        ),
        (
            "answer/service_a_10",
            "svc-5.ns-5.svc.cluster.local",
            RecordType::A,
        ),
        (
            "answer/srv_10_glue",
            "_web._tcp.svc-5.ns-5.svc.cluster.local",
            RecordType::SRV,
        ),
        (
            "answer/nxdomain",
            "nx-123.svc-5.ns-5.svc.cluster.local",
            RecordType::A,
        ),
        ("answer/ptr", "4.5.0.10.in-addr.arpa", RecordType::PTR),
    ] {
        let p = packet(name, t);
        c.bench_function(label, |b| {
            b.iter(|| a.answer(black_box(&p), false, &mut out))
        });
    }
}

fn apply(c: &mut Criterion) {
    let mut w = writer();
    w.apply_all(relist(cluster(1000, 10, 0)));
    let mut flip = 0usize;
    c.bench_function("index/apply_one_endpoint_change", |b| {
        b.iter(|| {
            flip += 1;
            let mut objs = cluster(1, 10, flip % 2);
            let slice = objs.pop().unwrap();
            w.apply_all([SourceEvent::Upsert(slice)]);
        })
    });
}

fn relist_100k(c: &mut Criterion) {
    let mut g = c.benchmark_group("index");
    g.sample_size(10);
    let mut w = writer();
    let mut generation = 0;
    g.bench_function("relist_100k_endpoints", |b| {
        b.iter_batched(
            || {
                generation = (generation + 1) % 2;
                relist(cluster(10_000, 10, generation))
            },
            |events| w.apply_all(events),
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, queries, apply, relist_100k);
criterion_main!(benches);
