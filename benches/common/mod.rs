//! What the benches share, so that their numbers are about the same data:
//! the synthetic cluster and reading `/proc`.
//!
//! The cluster: service `s` is the headless `svc-<s>` in namespace
//! `ns-<s % 100>` with port `web`/TCP 80 and one EndpointSlice
//! `svc-<s>-abcde`, whose ready endpoints `web-<i>` (hostname and pod) have
//! the address `10+generation.<s / 256>.<s % 256>.<i + 1>` (generation 0, 1:
//! two versions of every address, for re-lists).

// Each bench binary uses a part of this module.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};

use headless_dns::index::{
    EndpointRecord, Kind, Object, ObjectKey, PortRecord, ServiceKind, ServiceRecord, SliceRecord,
    SourceEvent,
};

/// Service `s`'s namespace.
pub fn namespace(s: usize) -> String {
    format!("ns-{}", s % 100)
}

/// The address of pod `i` of service `s` in `generation`.
pub fn ip(s: usize, i: usize, generation: u8) -> Ipv4Addr {
    Ipv4Addr::new(10 + generation, (s >> 8) as u8, s as u8, i as u8 + 1)
}

/// The addresses of `pods` pods of service `s` in `generation`.
pub fn ips(s: usize, pods: usize, generation: u8) -> Vec<Ipv4Addr> {
    (0..pods).map(|i| ip(s, i, generation)).collect()
}

fn ports() -> Vec<PortRecord> {
    vec![PortRecord {
        name: Some("web".into()),
        protocol: "tcp".into(),
        port: 80,
    }]
}

/// Service `s`.
pub fn service(s: usize) -> Object {
    Object::Service(ServiceRecord {
        key: ObjectKey::new(&namespace(s), &format!("svc-{s}")),
        kind: ServiceKind::Headless,
        ports: ports().into(),
        publish_not_ready: false,
    })
}

/// Service `s`'s EndpointSlice with these pod addresses (`web-i` has `ips[i]`).
pub fn slice(s: usize, ips: &[Ipv4Addr]) -> Object {
    Object::EndpointSlice(SliceRecord {
        key: ObjectKey::new(&namespace(s), &format!("svc-{s}-abcde")),
        service: format!("svc-{s}"),
        ports: ports(),
        endpoints: ips
            .iter()
            .enumerate()
            .map(|(i, ip)| EndpointRecord {
                hostname: Some(format!("web-{i}")),
                addresses: vec![IpAddr::V4(*ip)],
                ready: true,
                serving: true,
                terminating: false,
                pod: Some(format!("web-{i}")),
            })
            .collect(),
    })
}

/// The cluster's objects, made as they are taken: each service, then its slice.
pub fn objects(services: usize, pods: usize, generation: u8) -> impl Iterator<Item = Object> {
    (0..services).flat_map(move |s| [service(s), slice(s, &ips(s, pods, generation))])
}

/// A whole (re-)list in one batch: `Reset` of every kind, the objects, `Synced`.
pub fn full_list(objects: impl IntoIterator<Item = Object>) -> Vec<SourceEvent> {
    let mut ev: Vec<SourceEvent> = Kind::ALL.iter().map(|k| SourceEvent::Reset(*k)).collect();
    ev.extend(objects.into_iter().map(SourceEvent::Upsert));
    ev.extend(Kind::ALL.iter().map(|k| SourceEvent::Synced(*k)));
    ev
}

/// A `kB` field (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/<file>` (`pid` may
/// be `self`); 0 if absent.
pub fn proc_kb(pid: &str, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|v| v.strip_prefix(':'))
                .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// User and system CPU time of a `/proc/.../stat` file (proc(5): fields 14
/// and 15, counted after the parenthesised command name, which may hold
/// spaces), in clock ticks; `None` if it cannot be read.
pub fn stat_ticks(path: &std::path::Path) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || fields.next()?.parse::<u64>().ok();
    Some((next()?, next()?))
}
