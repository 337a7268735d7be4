//! A service as readers see it: one immutable, compact value per service.
//!
//! The query path needs, per service: the record sets of the service name,
//! of each endpoint name and of each SRV name, and the reverse names of its
//! addresses. Rather than a heap block per name, a [`ServiceView`] keeps a
//! handful of arrays per service: every pre-encoded RRset in one byte buffer,
//! every name in one string, every address in one array, and a 28-byte entry
//! per endpoint that points into them. Endpoint A/AAAA, SRV and PTR records
//! are the same bytes around an address or a name, so they are written per
//! query from these arrays (a dozen stores, see `srv` and `ptr`), the SRV
//! set and the A/AAAA sets of the service name itself too ([`ServiceAddrs`]);
//! only a ClusterIP service's addresses, an A/AAAA set in which endpoints
//! share an address, and an ExternalName's CNAME are pre-encoded (see `build`).
//!
//! Endpoint names are found by binary search over the labels' hashes, one
//! contiguous array of 8-byte [`NameKey`]s, and one label comparison at the
//! end: a lookup touches that array, the entry and its label, rather than
//! an entry and a label per step as a search over the labels themselves
//! did (the cache misses of those steps were the query path's largest user
//! cost, profile in issue #19). The endpoint list itself stays in ordinal
//! order, the order the service's record sets are in.

mod build;
mod ptr;
mod srv;

use std::net::IpAddr;
use std::sync::Arc;

use super::addrs::{AddrSpan, AddrWord, Addrs, v6_arrays};
use super::record::{Ordinal, PodManagement, PortRecord, ServiceKind, ServiceRecord};
use super::strings::StrSpan;
use crate::wire::rrset::push_records;
use crate::wire::{RecordWriter, RrSetRef, qtype};
pub(super) use build::{Inputs, build};
pub use ptr::{PtrRecords, PtrSet, PtrTarget, SERVICE_ITSELF};
use srv::SrvName;
pub use srv::{Srv, SrvSection};

/// A range of [`ServiceView`]'s byte buffer: `count` records, or (count 0)
/// the service's name. Packed to 10 bytes, as the views hold five.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, packed(2))]
struct WireSpan {
    off: u32,
    len: u32,
    count: u16,
}

const IS_HOSTNAME: u8 = 1;
const READY: u8 = 2;
const SERVING: u8 = 4;
const TERMINATING: u8 = 8;
const SERVED: u8 = 16;
/// Served and has a valid DNS name: in `names`, an SRV target.
const NAMED: u8 = 64;

/// One endpoint inside a view (28 bytes, 2-aligned; a test keeps it so:
/// 100,000 endpoints make it the index's largest array).
#[derive(Clone, Copy, Debug)]
struct EndpointEntry {
    /// When its addresses or readiness last changed (Unix ms), in 48 bits:
    /// see [`EndpointEntry::changed_ms`].
    changed: [u16; 3],
    label: StrSpan,
    /// The Pod's name, [`StrSpan::NONE`] without one.
    pod: StrSpan,
    addrs: AddrSpan,
    /// Position in [`ServiceView::ports`].
    ports: u16,
    flags: u8,
}

impl EndpointEntry {
    /// Unix ms in the 48 bits of `changed` (enough until the year 10889).
    fn changed_ms(&self) -> u64 {
        let [a, b, c] = self.changed;
        (u64::from(a) << 32) | (u64::from(b) << 16) | u64::from(c)
    }

    fn pack_ms(ms: u64) -> [u16; 3] {
        [(ms >> 32) as u16, (ms >> 16) as u16, ms as u16]
    }
}

/// One entry of a view's name lookup: an endpoint label's hash and the
/// endpoint's position in [`ServiceView::entries`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct NameKey {
    hash: u32,
    entry: u32,
}

/// The hash of an endpoint label in [`NameKey`]s: foldhash with one random
/// seed per process (labels come from the cluster; the seed keeps anyone
/// from lining up many labels on one hash, which would only slow lookups
/// in their own service anyway, as equal hashes are compared one by one).
fn label_hash(label: &[u8]) -> u32 {
    use std::hash::BuildHasher;
    static STATE: std::sync::LazyLock<foldhash::fast::RandomState> =
        std::sync::LazyLock::new(Default::default);
    let h = STATE.hash_one(label);
    (h ^ (h >> 32)) as u32
}

/// A service name's A or AAAA set.
#[derive(Clone, Copy, Debug)]
enum AddressSet {
    /// Pre-encoded in the view's wire buffer: cluster IPs, or endpoint
    /// addresses of which some repeat (the set holds each once).
    Encoded(WireSpan),
    /// This many served endpoint addresses of the family, no two alike:
    /// written per query from `entries` (pre-encoding them took 16 bytes
    /// per IPv4 endpoint, ~1.6 MB at 100,000 endpoints).
    Served(u16),
    /// As `Served`, where those addresses are one run of the view's packed
    /// array (every endpoint served and of one family, the usual case):
    /// written from it without walking the entries, `words` long.
    Run { start: u32, words: u16 },
}

impl Default for AddressSet {
    fn default() -> Self {
        AddressSet::Encoded(WireSpan::default())
    }
}

/// A service name's A or AAAA records, as a response writes them.
#[derive(Clone, Copy, Debug)]
pub struct ServiceAddrs<'a> {
    view: &'a ServiceView,
    v4: bool,
}

impl RecordWriter for ServiceAddrs<'_> {
    fn count(&self) -> u16 {
        match self.set() {
            AddressSet::Encoded(s) => s.count,
            AddressSet::Served(n) => n,
            AddressSet::Run { words, .. } => words / if self.v4 { 1 } else { 4 },
        }
    }

    fn len(&self) -> usize {
        match self.set() {
            AddressSet::Encoded(s) => s.len as usize,
            _ => usize::from(self.count()) * if self.v4 { 16 } else { 28 },
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        self.write_first(out, usize::MAX);
    }

    fn write_within(&self, out: &mut Vec<u8>, room: usize) -> u16 {
        if let AddressSet::Encoded(s) = self.set() {
            let bytes = self.view.bytes(s).bytes;
            let (count, len) = crate::wire::records_within(bytes, room);
            out.extend_from_slice(&bytes[..len]);
            return count;
        }
        // Written records are all one size: the first `room / size` fit.
        let n = (room / if self.v4 { 16 } else { 28 }).min(usize::from(self.count()));
        self.write_first(out, n);
        n as u16
    }
}

impl ServiceAddrs<'_> {
    fn set(&self) -> AddressSet {
        if self.v4 { self.view.a } else { self.view.aaaa }
    }

    /// Writes the first `n` records of the set (all of a pre-encoded one).
    fn write_first(&self, out: &mut Vec<u8>, n: usize) {
        let v = self.view;
        let n = n.min(usize::from(self.count()));
        // Words per address.
        let per = if self.v4 { 1 } else { 4 };
        let write = |out: &mut Vec<u8>, words: &[AddrWord]| {
            if self.v4 {
                push_records(out, 12, qtype::A, v.ttl, words);
            } else {
                push_records(out, 12, qtype::AAAA, v.ttl, v6_arrays(words));
            }
        };
        match self.set() {
            AddressSet::Encoded(s) => out.extend_from_slice(v.bytes(s).bytes),
            AddressSet::Run { start, words } => {
                let start = start as usize;
                let words = usize::from(words).min(n * per);
                write(out, &v.addrs[start..start + words]);
            }
            AddressSet::Served(_) => {
                out.reserve(n * if self.v4 { 16 } else { 28 });
                let mut left = n * per;
                for e in v.entries.iter().filter(|e| e.flags & SERVED != 0) {
                    if left == 0 {
                        break;
                    }
                    let span = if self.v4 {
                        e.addrs.v4_words()
                    } else {
                        e.addrs.v6_words()
                    };
                    let words = &v.addrs[span];
                    let words = &words[..words.len().min(left)];
                    left -= words.len();
                    write(out, words);
                }
            }
        }
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

/// A StatefulSet whose `spec.serviceName` is the service: its pods'
/// names live below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Governed {
    /// The StatefulSet's name (its pods are `<name>-<ordinal>`).
    pub name: Box<str>,
    /// `spec.replicas`: the desired pod count.
    pub replicas: u32,
    /// `spec.podManagementPolicy` (the record browser shows it).
    pub policy: PodManagement,
}

/// A service as published to readers; see the module docs.
#[derive(Debug)]
pub struct ServiceView {
    /// The service (shared with the writer's copy).
    pub record: Arc<ServiceRecord>,
    /// False for a headless service with no served endpoint: NXDOMAIN (spec §2.4.1).
    pub exists: bool,
    /// StatefulSets governed by this service.
    pub statefulsets: Box<[Governed]>,
    /// When this view was published (Unix ms).
    pub published_ms: u64,
    /// The service's number while it has a view (kept across its views,
    /// reused after it goes): what the reverse maps point at.
    pub id: u32,
    ttl: u32,
    wire: Box<[u8]>,
    text: Box<str>,
    /// Endpoint addresses, then (ClusterIP services) the cluster IPs.
    addrs: Box<[AddrWord]>,
    cluster_ips: AddrSpan,
    ports: Box<[Arc<[PortRecord]>]>,
    entries: Box<[EndpointEntry]>,
    /// Served endpoints with a valid DNS name, sorted by label hash.
    names: Box<[NameKey]>,
    /// The service's own name in wire format (root label included).
    fqdn: WireSpan,
    a: AddressSet,
    aaaa: AddressSet,
    cname: Option<WireSpan>,
    srv: Box<[SrvName]>,
    /// SRV of the service name itself (every port), written on demand.
    bare_srv: SrvName,
}

impl ServiceView {
    fn bytes(&self, s: WireSpan) -> RrSetRef<'_> {
        let start = s.off as usize;
        RrSetRef {
            count: s.count,
            bytes: &self.wire[start..start + s.len as usize],
        }
    }

    fn text(&self, s: StrSpan) -> &str {
        s.get(&self.text).unwrap_or_default()
    }

    fn label_bytes(&self, i: usize) -> &[u8] {
        self.text(self.entries[i].label).as_bytes()
    }

    /// The service's name in wire format.
    pub fn fqdn_wire(&self) -> &[u8] {
        self.bytes(self.fqdn).bytes
    }

    /// How many endpoints (served or not) the service has.
    pub fn endpoint_count(&self) -> usize {
        self.entries.len()
    }

    /// How many endpoint names DNS serves.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Endpoint `i` (ordinal order).
    pub fn endpoint(&self, i: usize) -> EndpointView<'_> {
        let e = &self.entries[i];
        EndpointView {
            label: self.text(e.label),
            is_hostname: e.flags & IS_HOSTNAME != 0,
            addresses: e.addrs.get(&self.addrs),
            ready: e.flags & READY != 0,
            serving: e.flags & SERVING != 0,
            terminating: e.flags & TERMINATING != 0,
            served: e.flags & SERVED != 0,
            pod: e.pod.get(&self.text),
            ports: &self.ports[e.ports as usize],
            changed_ms: e.changed_ms(),
        }
    }

    /// All endpoints (served or not), in ordinal order.
    pub fn endpoints(&self) -> impl ExactSizeIterator<Item = EndpointView<'_>> + '_ {
        (0..self.entries.len()).map(|i| self.endpoint(i))
    }

    /// The addresses (IPv4 first) of the served endpoint named `label`
    /// (lower-case bytes).
    pub fn name(&self, label: &[u8]) -> Option<Addrs<'_>> {
        let hash = label_hash(label);
        let from = self.names.partition_point(|k| k.hash < hash);
        let entry = self.names[from..]
            .iter()
            .take_while(|k| k.hash == hash)
            .map(|k| k.entry as usize)
            .find(|i| self.label_bytes(*i) == label)?;
        Some(self.entries[entry].addrs.get(&self.addrs))
    }

    /// The service name's A records (cluster IPs, or served endpoint addresses).
    pub fn a(&self) -> ServiceAddrs<'_> {
        ServiceAddrs {
            view: self,
            v4: true,
        }
    }

    /// The service name's AAAA records.
    pub fn aaaa(&self) -> ServiceAddrs<'_> {
        ServiceAddrs {
            view: self,
            v4: false,
        }
    }

    /// The ExternalName CNAME.
    pub fn cname(&self) -> Option<RrSetRef<'_>> {
        self.cname.map(|s| self.bytes(s))
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
            .any(|g| *g.name == *ord.base && n < g.replicas)
    }

    /// Whether endpoint `i` (or the service itself, [`SERVICE_ITSELF`]) has
    /// address `ip`.
    pub fn has_address(&self, i: u32, ip: IpAddr) -> bool {
        match (&self.record.kind, i) {
            (ServiceKind::ClusterIp(ips), SERVICE_ITSELF) => ips.contains(&ip),
            (_, SERVICE_ITSELF) => false,
            _ => self
                .entries
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
        let mut out = Vec::with_capacity(self.names.len());
        if let ServiceKind::ClusterIp(ips) = &self.record.kind {
            out.extend(ips.iter().map(|ip| (*ip, SERVICE_ITSELF)));
        }
        for k in self.names.iter() {
            let i = k.entry;
            for ip in self.entries[i as usize].addrs.get(&self.addrs).iter() {
                out.push((ip, i));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests;
