//! A service as readers see it: one immutable, compact value per service.
//!
//! The query path needs, per service: the record sets of the service name,
//! of each endpoint name and of each SRV name, and the reverse names of its
//! addresses. Stored one heap block per name (as hickory's authority does,
//! and as this index did first) that is ~16 allocations and ~1.2 kB per
//! endpoint. A [`ServiceView`] instead keeps a handful of arrays per
//! service: every pre-encoded RRset in one byte buffer, every name in one
//! string, every address in one array, and a 32-byte entry per endpoint that
//! points into them. Endpoint A/AAAA and PTR records are the same bytes
//! around an address or a name, so they are written per query from these
//! arrays (a dozen stores) instead of being stored; only the sets that span
//! endpoints (the service's A set, SRV with glue) are pre-encoded.
//!
//! Endpoint names are found by binary search over a label-sorted index
//! (a 1,000-pod service: 10 comparisons); the endpoint list itself stays in
//! ordinal order, the order the service's record sets are in.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::ZoneSettings;
use super::addrs::{AddrSpan, Addrs, Word};
use super::record::{self, Ordinal, PortRecord, ServiceKind, ServiceRecord};
use super::stored::StoredSlice;
use crate::dns::records;

/// Borrowed pre-encoded records: what goes into a response section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rr<'a> {
    /// How many records `bytes` holds.
    pub count: u16,
    /// The records in wire format, compressed against the canonical question.
    pub bytes: &'a [u8],
}

/// A range of [`ServiceView`]'s byte buffer holding `count` records.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    off: u32,
    len: u32,
    count: u16,
}

/// A string inside the view's text. Packed to 6 bytes so that an endpoint
/// entry, which holds two, stays at 32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, packed(2))]
struct Text {
    off: u32,
    len: u16,
}

const IS_HOSTNAME: u8 = 1;
const READY: u8 = 2;
const SERVING: u8 = 4;
const TERMINATING: u8 = 8;
const SERVED: u8 = 16;
const HAS_POD: u8 = 32;
/// Served and has a valid DNS name: in `by_label`, an SRV target.
const NAMED: u8 = 64;

/// One endpoint inside a view (32 bytes; a test keeps it so).
#[derive(Clone, Copy, Debug)]
struct Ep {
    changed_ms: u64,
    label: Text,
    pod: Text,
    addrs: AddrSpan,
    /// Position in [`ServiceView::ports`].
    ports: u16,
    flags: u8,
}

/// One `_<port>._<proto>` SRV name. Its records are written per query from
/// the endpoints (see [`Srv`]); the sizes are measured once, at build.
#[derive(Clone, Copy, Debug, Default)]
struct SrvName {
    port: Text,
    proto: Text,
    /// ClusterIP services: the port (their one target is the service itself).
    cluster_port: u16,
    count: u16,
    answer_len: u32,
    glue_count: u16,
    glue_len: u32,
}

/// The SRV records of one name of a view, written on demand.
#[derive(Clone, Copy, Debug)]
pub struct Srv<'a> {
    view: &'a ServiceView,
    name: &'a SrvName,
}

impl Srv<'_> {
    /// SRV records in the answer.
    pub fn count(&self) -> u16 {
        self.name.count
    }

    /// Bytes of the answer records.
    pub fn answer_len(&self) -> usize {
        self.name.answer_len as usize
    }

    /// Glue records (the targets' addresses).
    pub fn glue_count(&self) -> u16 {
        self.name.glue_count
    }

    /// Bytes of the glue records.
    pub fn glue_len(&self) -> usize {
        self.name.glue_len as usize
    }

    /// Appends the SRV records as they follow the question
    /// `_<port>._<proto>.<service>`, in ordinal order of their targets.
    pub fn write_answer(&self, out: &mut Vec<u8>) {
        let v = self.view;
        let n = self.name.count as usize;
        let weight = 100usize.checked_div(n).map_or(0, |w| w.max(1) as u16);
        v.srv_targets(self.name, |label, port, _| {
            records::push_srv(out, v.ttl, weight, port, label, v.fqdn_wire());
        });
    }

    /// Appends the glue: each target's addresses, owned by a pointer to the
    /// target's name in the answer written by [`Srv::write_answer`]. Returns
    /// how many records it wrote.
    pub fn write_glue(&self, out: &mut Vec<u8>) -> u16 {
        let v = self.view;
        let fqdn = v.fqdn_wire();
        let svc_at = 12 + (2 + self.name.port.len as usize) + (2 + self.name.proto.len as usize);
        let mut at = svc_at + fqdn.len() + 4;
        let mut previous: Option<Option<&[u8]>> = None;
        let mut written = 0u16;
        v.srv_targets(self.name, |label, _, glue| {
            let name_at = at + 18;
            at = name_at + label.map_or(0, |l| 1 + l.len()) + fqdn.len();
            // A target listed twice (two ports of one name) gets its glue once.
            if previous == Some(label) {
                return;
            }
            previous = Some(label);
            written = written.saturating_add(glue.len() as u16);
            match label {
                Some(_) if name_at <= 0x3FFF => {
                    records::push_addrs(out, name_at as u16, v.ttl, glue)
                }
                // Beyond pointer reach: spell the label, point at the question.
                Some(l) => {
                    for ip in glue.iter() {
                        out.push(l.len() as u8);
                        out.extend_from_slice(l);
                        records::push_address(out, svc_at as u16, v.ttl, &ip);
                    }
                }
                None => records::push_addrs(out, svc_at as u16, v.ttl, glue),
            }
        });
        written
    }
}

/// One endpoint of a service as DNS sees it, borrowed from its view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointView<'a> {
    /// The DNS label (`web-0`, or `10-244-1-7` without a hostname).
    pub label: &'a str,
    /// Whether the label is the endpoint's hostname (not a generated one).
    pub is_hostname: bool,
    /// Its addresses, IPv4 first.
    pub addresses: Addrs<'a>,
    /// Ready condition.
    pub ready: bool,
    /// Serving condition.
    pub serving: bool,
    /// Terminating condition.
    pub terminating: bool,
    /// Whether DNS serves it: not terminating, and ready or published anyway.
    pub served: bool,
    /// The Pod it points at.
    pub pod: Option<&'a str>,
    /// The ports of the slices it appears in (headless SRV).
    pub ports: &'a [PortRecord],
    /// When its addresses or readiness last changed (Unix ms).
    pub changed_ms: u64,
}

/// A service as published to readers; see the module docs.
#[derive(Debug)]
pub struct ServiceView {
    /// The service (shared with the writer's copy).
    pub record: Arc<ServiceRecord>,
    /// False for a headless service with no served endpoint: NXDOMAIN (spec §2.4.1).
    pub exists: bool,
    /// StatefulSets governed by this service: (name, replicas).
    pub statefulsets: Box<[(Box<str>, u32)]>,
    /// When this view was published (Unix ms).
    pub published_ms: u64,
    /// The service's number while it has a view (kept across its views,
    /// reused after it goes): what the reverse maps point at.
    pub id: u32,
    ttl: u32,
    wire: Box<[u8]>,
    text: Box<str>,
    /// Endpoint addresses, then (ClusterIP services) the cluster IPs.
    addrs: Box<[Word]>,
    cluster_ips: AddrSpan,
    ports: Box<[Arc<[PortRecord]>]>,
    eps: Box<[Ep]>,
    /// Served endpoints with a valid DNS name, sorted by label.
    by_label: Box<[u32]>,
    /// The service's own name in wire format (root label included).
    fqdn: Span,
    a: Span,
    aaaa: Span,
    cname: Option<Span>,
    srv: Box<[SrvName]>,
}

/// "This PTR target is the service name itself" (a ClusterIP).
pub const SERVICE_ITSELF: u32 = u32::MAX;

/// One name an address points back at: an endpoint of a view, or the view's
/// service itself ([`SERVICE_ITSELF`]).
#[derive(Clone, Debug)]
pub struct PtrTarget {
    /// The view the name belongs to.
    pub view: Arc<ServiceView>,
    /// The endpoint's position, or [`SERVICE_ITSELF`].
    pub endpoint: u32,
}

impl PtrTarget {
    /// The target name as (first label or empty, service wire name).
    pub fn name(&self) -> (&[u8], &[u8]) {
        let label = if self.endpoint == SERVICE_ITSELF {
            &[][..]
        } else {
            self.view.label_bytes(self.endpoint as usize)
        };
        (label, self.view.fqdn_wire())
    }

    /// The target as text (`web-0.nginx.default.svc.cluster.local`).
    pub fn to_text(&self, zone: &str) -> String {
        let k = &self.view.record.key;
        let (label, _) = self.name();
        let label = std::str::from_utf8(label).unwrap_or_default();
        let sep = if label.is_empty() { "" } else { "." };
        format!("{label}{sep}{}.{}.svc.{zone}", k.name(), k.namespace())
    }
}

/// The PTR set of one address. Almost every address has exactly one name, so
/// that case is stored inline; with a thin pointer for the rare case the
/// whole value is 16 bytes (a map entry per address: 24).
#[derive(Clone, Debug)]
pub enum PtrSet {
    /// One name.
    One([PtrTarget; 1]),
    /// Several names (an address behind several services), sorted.
    Many(Arc<Box<[PtrTarget]>>),
}

impl PtrSet {
    /// The set of `targets` (not empty), several sorted by name.
    pub fn new(mut targets: Vec<PtrTarget>, zone: &str) -> Self {
        if targets.len() == 1
            && let Some(one) = targets.pop()
        {
            return PtrSet::One([one]);
        }
        targets.sort_by_cached_key(|t| t.to_text(zone));
        PtrSet::Many(Arc::new(targets.into_boxed_slice()))
    }

    /// The names, in answer order.
    pub fn targets(&self) -> &[PtrTarget] {
        match self {
            PtrSet::One(t) => t,
            PtrSet::Many(t) => t,
        }
    }
}

impl ServiceView {
    fn bytes(&self, s: Span) -> Rr<'_> {
        let start = s.off as usize;
        Rr {
            count: s.count,
            bytes: &self.wire[start..start + s.len as usize],
        }
    }

    fn text(&self, t: Text) -> &str {
        let start = t.off as usize;
        &self.text[start..start + t.len as usize]
    }

    fn label_bytes(&self, i: usize) -> &[u8] {
        self.text(self.eps[i].label).as_bytes()
    }

    /// The service's name in wire format.
    pub fn fqdn_wire(&self) -> &[u8] {
        self.bytes(self.fqdn).bytes
    }

    /// How many endpoints (served or not) the service has.
    pub fn endpoint_count(&self) -> usize {
        self.eps.len()
    }

    /// How many endpoint names DNS serves.
    pub fn name_count(&self) -> usize {
        self.by_label.len()
    }

    /// Endpoint `i` (ordinal order).
    pub fn endpoint(&self, i: usize) -> EndpointView<'_> {
        let e = &self.eps[i];
        EndpointView {
            label: self.text(e.label),
            is_hostname: e.flags & IS_HOSTNAME != 0,
            addresses: e.addrs.get(&self.addrs),
            ready: e.flags & READY != 0,
            serving: e.flags & SERVING != 0,
            terminating: e.flags & TERMINATING != 0,
            served: e.flags & SERVED != 0,
            pod: (e.flags & HAS_POD != 0).then(|| self.text(e.pod)),
            ports: &self.ports[e.ports as usize],
            changed_ms: e.changed_ms,
        }
    }

    /// All endpoints (served or not), in ordinal order.
    pub fn endpoints(&self) -> impl ExactSizeIterator<Item = EndpointView<'_>> + '_ {
        (0..self.eps.len()).map(|i| self.endpoint(i))
    }

    /// The addresses (IPv4 first) of the served endpoint named `label`
    /// (lower-case bytes).
    pub fn name(&self, label: &[u8]) -> Option<Addrs<'_>> {
        let i = self
            .by_label
            .binary_search_by(|i| self.label_bytes(*i as usize).cmp(label))
            .ok()?;
        Some(self.eps[self.by_label[i] as usize].addrs.get(&self.addrs))
    }

    /// The service name's A set (cluster IPs, or served endpoint addresses).
    pub fn a(&self) -> Rr<'_> {
        self.bytes(self.a)
    }

    /// The service name's AAAA set.
    pub fn aaaa(&self) -> Rr<'_> {
        self.bytes(self.aaaa)
    }

    /// The ExternalName CNAME.
    pub fn cname(&self) -> Option<Rr<'_>> {
        self.cname.map(|s| self.bytes(s))
    }

    /// The SRV records of `_<port>._<proto>` (labels without `_`).
    pub fn srv(&self, port: &[u8], proto: &[u8]) -> Option<Srv<'_>> {
        self.srv
            .iter()
            .find(|s| {
                self.text(s.port).as_bytes() == port && self.text(s.proto).as_bytes() == proto
            })
            .map(|name| Srv { view: self, name })
    }

    /// Calls `f(target label, port, target addresses)` for each SRV record of
    /// `s`, in answer order; the label is `None` for the service itself.
    fn srv_targets<'s>(&'s self, s: &SrvName, mut f: impl FnMut(Option<&'s [u8]>, u16, Addrs<'s>)) {
        if let ServiceKind::ClusterIp(_) = &self.record.kind {
            f(None, s.cluster_port, self.cluster_ips.get(&self.addrs));
            return;
        }
        let (port, proto) = (self.text(s.port), self.text(s.proto));
        for (i, e) in self.eps.iter().enumerate() {
            if e.flags & NAMED == 0 {
                continue;
            }
            for p in self.ports[e.ports as usize].iter() {
                if p.name.as_deref() == Some(port) && p.protocol == proto {
                    f(Some(self.label_bytes(i)), p.port, e.addrs.get(&self.addrs));
                }
            }
        }
    }

    /// True when some SRV name of the service has protocol `proto`.
    pub fn has_srv_proto(&self, proto: &[u8]) -> bool {
        self.srv
            .iter()
            .any(|s| self.text(s.proto).as_bytes() == proto)
    }

    /// True when `label` (lower-case bytes) names a pod that a governing
    /// StatefulSet is about to have (`<sts>-<n>` with `n < replicas`) but that is
    /// not served now: the caller uses a short negative TTL for it.
    pub fn is_pending_pod(&self, label: &[u8]) -> bool {
        let Ok(label) = std::str::from_utf8(label) else {
            return false;
        };
        let ord = Ordinal::parse(label);
        let Some(n) = ord.number else { return false };
        self.statefulsets
            .iter()
            .any(|(name, replicas)| **name == *ord.base && n < *replicas)
    }

    /// Whether endpoint `i` (or the service itself, [`SERVICE_ITSELF`]) has
    /// address `ip`.
    pub fn has_address(&self, i: u32, ip: IpAddr) -> bool {
        match (&self.record.kind, i) {
            (ServiceKind::ClusterIp(ips), SERVICE_ITSELF) => ips.contains(&ip),
            (_, SERVICE_ITSELF) => false,
            _ => self
                .eps
                .get(i as usize)
                .is_some_and(|e| e.addrs.get(&self.addrs).iter().any(|a| a == ip)),
        }
    }

    /// The reverse records this view contributes: (address, endpoint or
    /// [`SERVICE_ITSELF`]), sorted, without duplicates.
    pub fn ptrs(&self) -> Vec<(IpAddr, u32)> {
        if self.fqdn.len == 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.by_label.len());
        if let ServiceKind::ClusterIp(ips) = &self.record.kind {
            out.extend(ips.iter().map(|ip| (*ip, SERVICE_ITSELF)));
        }
        for i in self.by_label.iter() {
            for ip in self.eps[*i as usize].addrs.get(&self.addrs).iter() {
                out.push((ip, *i));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// What a view is built from.
pub(super) struct Inputs<'a> {
    pub settings: &'a ZoneSettings,
    pub record: Arc<ServiceRecord>,
    pub slices: Vec<&'a StoredSlice>,
    pub statefulsets: Box<[(Box<str>, u32)]>,
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

/// Appends `s` to the text buffer.
fn push_text(text: &mut String, s: &str) -> Text {
    let t = Text {
        off: text.len() as u32,
        len: s.len().min(u16::MAX as usize) as u16,
    };
    text.push_str(&s[..t.len as usize]);
    t
}

fn span(wire: &[u8], off: usize, count: u16) -> Span {
    Span {
        off: off as u32,
        len: (wire.len() - off) as u32,
        count,
    }
}

/// The wire form of `<name>.<namespace>.svc.<zone>.`, or `None` when it is
/// not a valid DNS name.
fn service_wire(settings: &ZoneSettings, r: &ServiceRecord) -> Option<Vec<u8>> {
    let mut w = Vec::with_capacity(64);
    let fqdn = [r.key.name(), r.key.namespace(), "svc"];
    for l in fqdn.into_iter().chain(settings.zone.split('.')) {
        if l.is_empty() {
            continue;
        }
        if l.len() > 63 {
            return None;
        }
        w.push(l.len() as u8);
        w.extend_from_slice(l.as_bytes());
    }
    w.push(0);
    (w.len() <= 255).then_some(w)
}

/// Builds a service's view: merges its slices' endpoints by label, orders them
/// by ordinal and pre-encodes the record sets that span endpoints.
pub(super) fn build(inp: Inputs<'_>) -> ServiceView {
    let Inputs {
        settings,
        record,
        slices,
        statefulsets,
        id,
        old,
        now,
    } = inp;
    let merged = merge(&record, &slices, settings.endpoint_pod_names);
    let old_by_label: HashMap<&str, EndpointView<'_>> = old
        .map(|o| o.endpoints().map(|e| (e.label, e)).collect())
        .unwrap_or_default();

    let mut text = String::new();
    let mut addrs: Vec<Word> = Vec::new();
    let mut ports: Vec<Arc<[PortRecord]>> = Vec::new();
    let mut eps: Vec<Ep> = Vec::with_capacity(merged.len());
    let mut order: Vec<(Cow<'_, str>, Merged<'_>)> = merged.into_iter().collect();
    order.sort_by(|(a, ma), (b, mb)| sort_key(a, ma.is_hostname).cmp(&sort_key(b, mb.is_hostname)));
    for (label, mut m) in order {
        m.addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        let list: Arc<[PortRecord]> = match m.ports.as_slice() {
            [one] => Arc::clone(one),
            many => {
                let mut all: Vec<PortRecord> =
                    many.iter().flat_map(|l| l.iter().cloned()).collect();
                all.sort();
                all.dedup();
                all.into()
            }
        };
        let port_index = match ports.iter().position(|l| **l == *list) {
            Some(i) => i,
            None => {
                ports.push(list);
                ports.len() - 1
            }
        };
        let label_text = push_text(&mut text, &label);
        let pod = match m.pod {
            Some(p) if p == label => label_text,
            Some(p) => push_text(&mut text, p),
            None => Text::default(),
        };
        let mut changed_ms = now;
        if let Some(prev) = old_by_label.get(&*label)
            && prev.addresses.iter().eq(m.addresses.iter().copied())
            && prev.served == m.served
            && prev.ready == m.ready
        {
            changed_ms = prev.changed_ms;
        }
        let flags = (m.is_hostname as u8 * IS_HOSTNAME)
            | (m.ready as u8 * READY)
            | (m.serving as u8 * SERVING)
            | (m.terminating as u8 * TERMINATING)
            | (m.served as u8 * SERVED)
            | (m.pod.is_some() as u8 * HAS_POD);
        eps.push(Ep {
            changed_ms,
            label: label_text,
            pod,
            addrs: AddrSpan::push(&mut addrs, m.addresses.iter()),
            ports: port_index.min(u16::MAX as usize) as u16,
            flags,
        });
    }

    let mut view = ServiceView {
        record,
        exists: true,
        statefulsets,
        published_ms: now,
        id,
        ttl: settings.ttl,
        wire: Box::default(),
        text: Box::default(),
        addrs: Box::default(),
        cluster_ips: AddrSpan::default(),
        ports: Box::default(),
        eps: Box::default(),
        by_label: Box::default(),
        fqdn: Span::default(),
        a: Span::default(),
        aaaa: Span::default(),
        cname: None,
        srv: Box::default(),
    };
    let mut wire: Vec<u8> = Vec::new();
    // SRV names: (ClusterIP port, port name, protocol).
    let mut srv: Vec<(u16, &str, &str)> = Vec::new();
    let mut by_label: Vec<u32> = Vec::new();
    match service_wire(settings, &view.record) {
        None => view.exists = false,
        Some(fqdn) => {
            let ttl = settings.ttl;
            wire.extend_from_slice(&fqdn);
            view.fqdn = span(&wire, 0, 0);
            let addr_of = |e: &Ep| e.addrs.get(&addrs).iter();
            let served = |e: &&Ep| e.flags & SERVED != 0;
            // Endpoint names (headless and, as CoreDNS does, ClusterIP services).
            by_label = (0..eps.len() as u32)
                .filter(|i| {
                    let e = &eps[*i as usize];
                    let l = e.label.len as usize;
                    e.flags & SERVED != 0 && (1..=63).contains(&l) && l + 1 + fqdn.len() <= 255
                })
                .collect();
            let label_of = |i: u32| {
                let t = eps[i as usize].label;
                &text.as_bytes()[t.off as usize..(t.off + t.len as u32) as usize]
            };
            by_label.sort_by(|a, b| label_of(*a).cmp(label_of(*b)));
            let set = |wire: &mut Vec<u8>, v4: bool, ips: &mut dyn Iterator<Item = IpAddr>| {
                let off = wire.len();
                let count = records::push_address_set(wire, ttl, v4, ips);
                span(wire, off, count)
            };
            for i in &by_label {
                eps[*i as usize].flags |= NAMED;
            }
            match &view.record.kind {
                ServiceKind::ClusterIp(ips) => {
                    view.a = set(&mut wire, true, &mut ips.iter().copied());
                    view.aaaa = set(&mut wire, false, &mut ips.iter().copied());
                    for p in view.record.ports.iter() {
                        if let Some(port_name) = &p.name {
                            srv.push((p.port, port_name, &p.protocol));
                        }
                    }
                }
                ServiceKind::Headless => {
                    view.exists = eps.iter().any(|e| served(&e));
                    let all = || eps.iter().filter(served).flat_map(addr_of);
                    view.a = set(&mut wire, true, &mut all());
                    view.aaaa = set(&mut wire, false, &mut all());
                    let mut names: Vec<(u16, &str, &str)> = eps
                        .iter()
                        .filter(served)
                        .flat_map(|e| ports[e.ports as usize].iter())
                        .filter_map(|p| p.name.as_deref().map(|n| (0, n, p.protocol.as_str())))
                        .collect();
                    names.sort_unstable();
                    names.dedup();
                    srv.extend(names);
                }
                ServiceKind::ExternalName(target) => {
                    let svc = records::name(&format!(
                        "{}.{}.svc.{}",
                        view.record.key.name(),
                        view.record.key.namespace(),
                        settings.zone
                    ));
                    if let (Some(svc), Some(t)) = (svc, records::name(target)) {
                        let set = records::cname_set(&svc, ttl, t);
                        let off = wire.len();
                        wire.extend_from_slice(&set.bytes);
                        view.cname = Some(span(&wire, off, set.count));
                    }
                }
            }
        }
    }
    view.wire = wire.into_boxed_slice();
    if let ServiceKind::ClusterIp(ips) = &view.record.kind {
        view.cluster_ips = AddrSpan::push(&mut addrs, ips.iter());
    }
    view.addrs = addrs.into_boxed_slice();
    let srv: Vec<SrvName> = srv
        .into_iter()
        .map(|(cluster_port, port, proto)| SrvName {
            port: push_text(&mut text, port),
            proto: push_text(&mut text, proto),
            cluster_port,
            ..SrvName::default()
        })
        .collect();
    view.text = text.into_boxed_str();
    view.ports = ports.into_boxed_slice();
    view.eps = eps.into_boxed_slice();
    view.by_label = by_label.into_boxed_slice();
    view.srv = srv.into_boxed_slice();
    // Measure each SRV name's records by writing them once.
    let mut scratch = Vec::new();
    let sizes: Vec<(u16, u32, u16, u32)> = view
        .srv
        .iter()
        .map(|name| {
            let mut count = 0u16;
            view.srv_targets(name, |_, _, _| count = count.saturating_add(1));
            let probe = SrvName { count, ..*name };
            let srv = Srv {
                view: &view,
                name: &probe,
            };
            scratch.clear();
            srv.write_answer(&mut scratch);
            let answer_len = scratch.len() as u32;
            scratch.clear();
            let glue_count = srv.write_glue(&mut scratch);
            (count, answer_len, glue_count, scratch.len() as u32)
        })
        .collect();
    for (name, (count, answer_len, glue_count, glue_len)) in view.srv.iter_mut().zip(sizes) {
        *name = SrvName {
            count,
            answer_len,
            glue_count,
            glue_len,
            ..*name
        };
    }
    view
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::index::{EndpointRecord, ObjectKey, SliceRecord};
    use hickory_proto::op::{Message, OpCode, Query};
    use hickory_proto::rr::{RData, RecordType};

    /// A headless service `web` in `d` with `n` ready endpoints web-0..
    fn view(n: usize) -> ServiceView {
        let port = PortRecord {
            name: Some("http".into()),
            protocol: "tcp".into(),
            port: 80,
        };
        let record = SliceRecord {
            key: ObjectKey::new("d", "web-abc"),
            service: "web".into(),
            ports: vec![port.clone()],
            endpoints: (0..n)
                .map(|i| EndpointRecord {
                    hostname: Some(format!("web-{i}")),
                    addresses: vec![IpAddr::from([10, 0, (i >> 8) as u8, i as u8])],
                    ready: true,
                    serving: true,
                    terminating: false,
                    pod: Some(format!("web-{i}")),
                })
                .collect(),
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

    /// The SRV response for `_http._tcp.web.d.svc.cluster.local`, parsed by hickory.
    fn srv_response(v: &ServiceView) -> Message {
        let owner = records::name("_http._tcp.web.d.svc.cluster.local").unwrap();
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
        let v = view(12);
        let m = srv_response(&v);
        assert_eq!(m.answers.len(), 12);
        assert_eq!(m.additionals.len(), 12);
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
        let v = view(1000);
        let m = srv_response(&v);
        assert_eq!(m.answers.len(), 1000);
        assert_eq!(m.additionals.len(), 1000);
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

    #[test]
    fn an_endpoint_entry_and_a_ptr_set_stay_small() {
        assert_eq!(std::mem::size_of::<Ep>(), 32);
        assert_eq!(std::mem::size_of::<PtrSet>(), 16);
    }
}
