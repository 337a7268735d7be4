//! Criterion benches of the query path and the index, without sockets:
//! answer a pod A / service A / SRV / NXDOMAIN / PTR query, apply one endpoint
//! change, and re-list 100,000 endpoints (10,000 services x 10 pods).
//!
//! Run with `cargo bench --bench index`. CI only compiles them.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use headless_dns::Config;
use headless_dns::dns::Answerer;
use headless_dns::index::{IndexWriter, Kind, SourceEvent, ZoneSettings};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

mod common;

use common::{full_list, objects};

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
    w.apply_all(full_list(objects(1000, 10, 0)));
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
    w.apply_all(full_list(objects(1000, 10, 0)));
    let mut flip = 0usize;
    c.bench_function("index/apply_one_endpoint_change", |b| {
        b.iter(|| {
            flip += 1;
            let slice = common::slice(0, &common::ips(0, 10, (flip % 2) as u8));
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
                full_list(objects(10_000, 10, generation))
            },
            |events| w.apply_all(events),
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, queries, apply, relist_100k);
criterion_main!(benches);
