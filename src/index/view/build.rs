//! Building a service's view: merge the endpoints of its slices by label,
//! order them by ordinal, pack them, and lay out (or, where irregular,
//! pre-encode) the service's own sets.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::super::ZoneSettings;
use super::super::addrs::{AddrSpan, AddrWord};
use super::super::record::{self, Ordinal, PortRecord, ServiceKind, ServiceRecord};
use super::super::stored::StoredSlice;
use super::super::strings::StrSpan;
use super::srv::SrvName;
use super::{
    AddressSet, EndpointEntry, EndpointView, IS_HOSTNAME, NAMED, NameKey, READY, SERVED, SERVING,
    ServiceView, TERMINATING, WireSpan, label_hash,
};
use crate::wire::{name, rrset};

/// What a view is built from.
pub(in crate::index) struct Inputs<'a> {
    pub settings: &'a ZoneSettings,
    pub record: Arc<ServiceRecord>,
    pub slices: Vec<&'a StoredSlice>,
    pub statefulsets: Box<[super::Governed]>,
    pub id: u32,
    pub old: Option<&'a ServiceView>,
    pub now: u64,
}

/// An endpoint while endpoints of all slices are merged by label.
struct Merged<'a> {
    is_hostname: bool,
    addresses: Vec<IpAddr>,
    ready: bool,
    serving: bool,
    terminating: bool,
    served: bool,
    pod: Option<&'a str>,
    ports: Vec<&'a Arc<[PortRecord]>>,
}

/// The endpoints, ordered and packed into the buffers a view keeps.
#[derive(Default)]
struct Packed {
    text: String,
    addrs: Vec<AddrWord>,
    ports: Vec<Arc<[PortRecord]>>,
    entries: Vec<EndpointEntry>,
}

/// A service's own sets (where they are, or pre-encoded), and what its name makes valid.
#[derive(Default)]
struct Sets<'r> {
    exists: bool,
    wire: Vec<u8>,
    fqdn: WireSpan,
    a: AddressSet,
    aaaa: AddressSet,
    cname: Option<WireSpan>,
    /// SRV names: (ClusterIP port, port name, protocol).
    srv: Vec<(u16, &'r str, &'r str)>,
    names: Vec<NameKey>,
}

/// Builds a service's view: merges its slices' endpoints by label, orders them
/// by ordinal and lays out the record sets that span endpoints.
pub(in crate::index) fn build(inp: Inputs<'_>) -> ServiceView {
    let (settings, record, now) = (inp.settings, inp.record, inp.now);
    let merged = merge(&record, &inp.slices, settings.endpoint_pod_names);
    let Packed {
        mut text,
        mut addrs,
        ports,
        mut entries,
    } = pack(merged, inp.old, now);
    let sets = match service_wire(settings, &record) {
        Some(fqdn) => encode_sets(settings, &record, fqdn, &mut entries, &addrs, &text, &ports),
        None => Sets::default(),
    };
    let srv: Box<[SrvName]> = sets
        .srv
        .iter()
        .map(|(cluster_port, port, proto)| {
            let port = StrSpan::push(&mut text, Some(port));
            SrvName::new(port, StrSpan::push(&mut text, Some(proto)), *cluster_port)
        })
        .collect();
    let Sets {
        exists,
        wire,
        fqdn,
        a,
        aaaa,
        cname,
        names,
        srv: _,
    } = sets;
    let cluster_ips = match &record.kind {
        ServiceKind::ClusterIp(ips) => AddrSpan::push(&mut addrs, ips.iter()),
        _ => AddrSpan::default(),
    };
    let mut view = ServiceView {
        record,
        exists,
        statefulsets: inp.statefulsets,
        published_ms: now,
        id: inp.id,
        ttl: settings.ttl,
        wire: wire.into_boxed_slice(),
        text: text.into_boxed_str(),
        addrs: addrs.into_boxed_slice(),
        cluster_ips,
        ports: ports.into_boxed_slice(),
        entries: entries.into_boxed_slice(),
        names: names.into_boxed_slice(),
        fqdn,
        a,
        aaaa,
        cname,
        srv,
        bare_srv: SrvName::BARE,
    };
    view.measure_srv();
    view
}

/// Orders the merged endpoints by ordinal and packs them; an endpoint whose
/// addresses, readiness and served state did not change keeps its
/// `changed_ms` from `old`.
fn pack(merged: BTreeMap<Cow<'_, str>, Merged<'_>>, old: Option<&ServiceView>, now: u64) -> Packed {
    let old_by_label: HashMap<&str, EndpointView<'_>> = old
        .map(|o| o.endpoints().map(|e| (e.label, e)).collect())
        .unwrap_or_default();
    let mut packed = Packed {
        entries: Vec::with_capacity(merged.len()),
        ..Packed::default()
    };
    let mut order: Vec<(Cow<'_, str>, Merged<'_>)> = merged.into_iter().collect();
    order.sort_by(|(a, ma), (b, mb)| sort_key(a, ma.is_hostname).cmp(&sort_key(b, mb.is_hostname)));
    for (label, mut m) in order {
        m.addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        let ports = packed.port_index(port_list(&m.ports));
        let label_text = StrSpan::push(&mut packed.text, Some(&label));
        let pod = match m.pod {
            Some(p) if p == label => label_text,
            p => StrSpan::push(&mut packed.text, p),
        };
        let changed_ms = match old_by_label.get(&*label) {
            Some(prev)
                if prev.addresses.iter().eq(m.addresses.iter().copied())
                    && prev.served == m.served
                    && prev.ready == m.ready =>
            {
                prev.changed_ms
            }
            _ => now,
        };
        let flags = (m.is_hostname as u8 * IS_HOSTNAME)
            | (m.ready as u8 * READY)
            | (m.serving as u8 * SERVING)
            | (m.terminating as u8 * TERMINATING)
            | (m.served as u8 * SERVED);
        packed.entries.push(EndpointEntry {
            changed: EndpointEntry::pack_ms(changed_ms),
            label: label_text,
            pod,
            addrs: AddrSpan::push(&mut packed.addrs, m.addresses.iter()),
            ports: ports.min(u16::MAX as usize) as u16,
            flags,
        });
    }
    packed
}

impl Packed {
    /// The position of `list` in the view's port lists, added if missing.
    fn port_index(&mut self, list: Arc<[PortRecord]>) -> usize {
        match self.ports.iter().position(|l| **l == *list) {
            Some(i) => i,
            None => {
                self.ports.push(list);
                self.ports.len() - 1
            }
        }
    }
}

/// One endpoint's ports: the list of its one slice, or the union of its slices'.
fn port_list(lists: &[&Arc<[PortRecord]>]) -> Arc<[PortRecord]> {
    match lists {
        [one] => Arc::clone(one),
        many => {
            let mut all: Vec<PortRecord> = many.iter().flat_map(|l| l.iter().cloned()).collect();
            all.sort();
            all.dedup();
            all.into()
        }
    }
}

/// The span of `wire` from `off` to its end, holding `count` records.
fn span(wire: &[u8], off: usize, count: u16) -> WireSpan {
    WireSpan {
        off: off as u32,
        len: (wire.len() - off) as u32,
        count,
    }
}

/// The wire form of `<name>.<namespace>.svc.<zone>.`, or `None` when it is
/// not a valid DNS name.
fn service_wire(settings: &ZoneSettings, r: &ServiceRecord) -> Option<Vec<u8>> {
    let labels = [r.key.name(), r.key.namespace(), "svc"];
    name::from_labels(labels.into_iter().chain(settings.zone.split('.')))
}

/// Encodes the sets of a service whose name is `fqdn` (wire form): the
/// service's A and AAAA sets (or CNAME), its SRV names, and which endpoints
/// have a valid name (marked [`NAMED`] in `entries`).
fn encode_sets<'r>(
    settings: &ZoneSettings,
    record: &'r ServiceRecord,
    fqdn: Vec<u8>,
    entries: &mut [EndpointEntry],
    addrs: &[AddrWord],
    text: &str,
    ports: &'r [Arc<[PortRecord]>],
) -> Sets<'r> {
    let mut sets = Sets {
        exists: true,
        names: named_endpoints(entries, text, fqdn.len()),
        ..Sets::default()
    };
    for k in &sets.names {
        entries[k.entry as usize].flags |= NAMED;
    }
    sets.wire.extend_from_slice(&fqdn);
    sets.fqdn = span(&sets.wire, 0, 0);
    let ttl = settings.ttl;
    let address_set = |wire: &mut Vec<u8>, v4: bool, ips: &mut dyn Iterator<Item = IpAddr>| {
        let off = wire.len();
        let count = rrset::push_address_set(wire, ttl, v4, ips);
        AddressSet::Encoded(span(wire, off, count))
    };
    match &record.kind {
        ServiceKind::ClusterIp(ips) => {
            sets.a = address_set(&mut sets.wire, true, &mut ips.iter().copied());
            sets.aaaa = address_set(&mut sets.wire, false, &mut ips.iter().copied());
            for p in record.ports.iter() {
                if let Some(port_name) = &p.name {
                    sets.srv.push((p.port, port_name, &p.protocol));
                }
            }
        }
        ServiceKind::Headless => {
            let served = |e: &&EndpointEntry| e.flags & SERVED != 0;
            sets.exists = entries.iter().any(|e| served(&e));
            let all = || {
                entries
                    .iter()
                    .filter(served)
                    .flat_map(|e| e.addrs.get(addrs).iter())
            };
            for (v4, set) in [(true, &mut sets.a), (false, &mut sets.aaaa)] {
                *set = match distinct(v4, all()) {
                    Some(n) => served_run(entries, v4).unwrap_or(AddressSet::Served(n)),
                    None => address_set(&mut sets.wire, v4, &mut all()),
                };
            }
            let mut names: Vec<(u16, &str, &str)> = entries
                .iter()
                .filter(served)
                .flat_map(|e| ports[e.ports as usize].iter())
                .filter_map(|p| p.name.as_deref().map(|n| (0, n, p.protocol.as_str())))
                .collect();
            names.sort_unstable();
            names.dedup();
            sets.srv.extend(names);
        }
        ServiceKind::ExternalName(target) => {
            sets.cname = external_name(settings, record, target, &mut sets.wire);
        }
    }
    sets
}

/// How many addresses of one family (IPv4 when `v4`) `ips` has, if no two
/// are alike and they fit a record count.
fn distinct(v4: bool, ips: impl Iterator<Item = IpAddr>) -> Option<u16> {
    let mut family: Vec<IpAddr> = ips.filter(|ip| ip.is_ipv4() == v4).collect();
    let n = family.len();
    family.sort_unstable();
    family.dedup();
    (family.len() == n).then(|| u16::try_from(n).ok()).flatten()
}

/// [`AddressSet::Run`] when the served endpoints' addresses of one family
/// (IPv4 when `v4`) follow each other in the packed array.
fn served_run(entries: &[EndpointEntry], v4: bool) -> Option<AddressSet> {
    let mut run: Option<std::ops::Range<usize>> = None;
    for e in entries.iter().filter(|e| e.flags & SERVED != 0) {
        let words = if v4 {
            e.addrs.v4_words()
        } else {
            e.addrs.v6_words()
        };
        match &mut run {
            _ if words.is_empty() => {}
            None => run = Some(words),
            Some(r) if r.end == words.start => r.end = words.end,
            Some(_) => return None,
        }
    }
    let run = run.unwrap_or_default();
    Some(AddressSet::Run {
        start: u32::try_from(run.start).ok()?,
        words: u16::try_from(run.len()).ok()?,
    })
}

/// The served endpoints whose label makes a valid name below the service
/// (`fqdn_len` bytes), sorted by label hash.
fn named_endpoints(entries: &[EndpointEntry], text: &str, fqdn_len: usize) -> Vec<NameKey> {
    let mut names: Vec<NameKey> = (0..entries.len() as u32)
        .filter_map(|i| {
            let e = &entries[i as usize];
            let l = e.label.byte_len();
            let named = e.flags & SERVED != 0 && (1..=63).contains(&l) && l + 1 + fqdn_len <= 255;
            let label = e.label.get(text).filter(|_| named)?;
            Some(NameKey {
                hash: label_hash(label.as_bytes()),
                entry: i,
            })
        })
        .collect();
    names.sort_unstable();
    names
}

/// Appends the CNAME of an ExternalName service to `target` to `wire`.
fn external_name(
    settings: &ZoneSettings,
    record: &ServiceRecord,
    target: &str,
    wire: &mut Vec<u8>,
) -> Option<WireSpan> {
    let key = &record.key;
    let owner = format!("{}.{}.svc.{}", key.name(), key.namespace(), settings.zone);
    let set = rrset::cname_set(&owner, settings.ttl, target)?;
    let off = wire.len();
    wire.extend_from_slice(&set.bytes);
    Some(span(wire, off, set.count))
}

/// Merges the endpoints of all slices of a service by DNS label.
fn merge<'a>(
    svc: &ServiceRecord,
    slices: &[&'a StoredSlice],
    pod_names: bool,
) -> BTreeMap<Cow<'a, str>, Merged<'a>> {
    let mut by_label: BTreeMap<Cow<'a, str>, Merged<'a>> = BTreeMap::new();
    for slice in slices {
        for ep in slice.endpoints() {
            let served =
                !ep.terminating && (ep.ready || svc.publish_not_ready) && !ep.addresses.is_empty();
            let named = ep.hostname.map(|h| (h, true)).or_else(|| {
                ep.pod
                    .filter(|p| pod_names && p.len() < 64)
                    .map(|p| (p, false))
            });
            // (label, is hostname, its one address or all of the endpoint's)
            let labels: Vec<(Cow<'a, str>, bool, Option<IpAddr>)> = match named {
                Some((l, h)) => vec![(Cow::Borrowed(l), h, None)],
                None => ep
                    .addresses
                    .iter()
                    .map(|ip| (Cow::Owned(record::dashed_ip(ip)), false, Some(ip)))
                    .collect(),
            };
            for (label, is_hostname, one) in labels {
                let e = by_label.entry(label).or_insert_with(|| Merged {
                    is_hostname,
                    addresses: Vec::new(),
                    ready: ep.ready,
                    serving: ep.serving,
                    terminating: ep.terminating,
                    served: false,
                    pod: ep.pod,
                    ports: Vec::new(),
                });
                // One hostname over several slices (dual stack): served if any part is.
                if served {
                    if !e.served {
                        e.addresses.clear();
                    }
                    e.served = true;
                    e.ready |= ep.ready;
                }
                if served || !e.served {
                    let mut add = |ip: IpAddr| {
                        if !e.addresses.contains(&ip) {
                            e.addresses.push(ip);
                        }
                    };
                    match one {
                        Some(ip) => add(ip),
                        None => ep.addresses.iter().for_each(add),
                    }
                    if !e.ports.iter().any(|l| ***l == *slice.ports) {
                        e.ports.push(&slice.ports);
                    }
                }
            }
        }
    }
    by_label
}

fn sort_key(label: &str, is_hostname: bool) -> Ordinal<'_> {
    if is_hostname {
        Ordinal::parse(label)
    } else {
        Ordinal {
            base: label,
            number: None,
            name: label,
        }
    }
}
