//! The ordinal-name index: one writer applies source events, many readers answer.
//!
//! Sources speak [`SourceEvent`], which mirrors kube-runtime's watcher contract:
//! `Reset(kind)` starts a re-list, `Upsert`s fill it, `Synced(kind)` swaps it in
//! whole (whatever was not re-listed is gone). Until that swap the previous
//! state keeps answering, so a lost API connection never blanks a live name.
//!
//! Readers ([`Index`], a cheap `Clone`) see per-service immutable
//! [`ServiceView`]s in a `DashMap`. The writer builds a new view, pre-encoded
//! answers included, *outside* any lock and then swaps one `Arc` in, so a
//! reader sees a service either before or after an update, never half of it,
//! and an update costs O(that service), not O(cluster). A burst of events
//! (a re-list, a scale-up) is applied first and each touched service published
//! once.
//!
//! Map keys are DNS wire labels in lower case (`\x05nginx\x07default`), the
//! very bytes the query path has after lower-casing the question, so a lookup
//! allocates nothing.

pub mod record;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use hickory_proto::rr::{Name, RecordType};

use crate::dns::records::{self, RrSet, Sections, SrvTarget};
pub use record::{
    EndpointRecord, NamespaceRecord, ObjectKey, Ordinal, PodManagement, PodRecord, PortRecord,
    ServiceKind, ServiceRecord, SliceRecord, StatefulSetRecord,
};

/// The kinds of object a source reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// core/v1 Namespace.
    Namespace,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// core/v1 Pod.
    Pod,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 5] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::StatefulSet,
        Kind::Pod,
    ];

    /// The kind's name as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::StatefulSet => "StatefulSet",
            Kind::Pod => "Pod",
        }
    }
}

/// One object as the index stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    /// A Service.
    Service(ServiceRecord),
    /// An EndpointSlice.
    EndpointSlice(SliceRecord),
    /// A Namespace.
    Namespace(NamespaceRecord),
    /// A StatefulSet.
    StatefulSet(StatefulSetRecord),
    /// A Pod.
    Pod(PodRecord),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Namespace(_) => Kind::Namespace,
            Object::StatefulSet(_) => Kind::StatefulSet,
            Object::Pod(_) => Kind::Pod,
        }
    }

    /// The object's namespace and name.
    pub fn key(&self) -> &ObjectKey {
        match self {
            Object::Service(r) => &r.key,
            Object::EndpointSlice(r) => &r.key,
            Object::Namespace(r) => &r.key,
            Object::StatefulSet(r) => &r.key,
            Object::Pod(r) => &r.key,
        }
    }
}

/// What sources tell the index; see the module docs for the re-list contract.
#[derive(Clone, Debug)]
pub enum SourceEvent {
    /// A (re-)list of this kind starts: buffer until `Synced`.
    Reset(Kind),
    /// An object was added or changed.
    Upsert(Object),
    /// An object was deleted.
    Remove(Kind, ObjectKey),
    /// The (re-)list of this kind is complete: swap it in.
    Synced(Kind),
}

/// Zone-wide settings that the pre-encoded answers depend on.
#[derive(Clone, Debug)]
pub struct ZoneSettings {
    /// The cluster domain, lower-case, without trailing dot (`cluster.local`).
    pub zone: String,
    /// TTL of every record we serve, in seconds.
    pub ttl: u32,
    /// Name endpoints without a hostname by their pod name instead of their IP.
    pub endpoint_pod_names: bool,
}

/// One endpoint of a service as DNS sees it, in ordinal order within the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointView {
    /// The DNS label (`web-0`, or `10-244-1-7` without a hostname).
    pub label: String,
    /// Whether the label is the endpoint's hostname (as opposed to a generated one).
    pub is_hostname: bool,
    /// Its addresses, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// Ready condition.
    pub ready: bool,
    /// Serving condition.
    pub serving: bool,
    /// Terminating condition.
    pub terminating: bool,
    /// Whether DNS serves it: not terminating, and ready or published anyway.
    pub served: bool,
    /// The Pod it points at.
    pub pod: Option<String>,
    /// The ports of the slices it appears in (headless SRV); endpoints with
    /// the same ports share one list.
    pub ports: Arc<[PortRecord]>,
    /// When this endpoint's addresses or readiness last changed (Unix ms).
    pub changed_ms: u64,
}

/// The per-name answers of one endpoint label.
#[derive(Clone, Debug, Default)]
pub struct EndpointAnswers {
    /// A records.
    pub a: RrSet,
    /// AAAA records.
    pub aaaa: RrSet,
}

/// One `_<port>._<proto>` SRV name of a service.
#[derive(Clone, Debug)]
pub struct SrvAnswers {
    /// The port label without the underscore (`web`).
    pub port: Box<[u8]>,
    /// The protocol label without the underscore (`tcp`).
    pub proto: Box<[u8]>,
    /// SRV records plus glue.
    pub sections: Sections,
}

/// A service as published to readers: records plus pre-encoded answers.
#[derive(Debug)]
pub struct ServiceView {
    /// The service.
    pub record: ServiceRecord,
    /// All its endpoints (served or not) in ordinal order.
    pub endpoints: Vec<EndpointView>,
    /// False for a headless service with no served endpoint: NXDOMAIN (spec §2.4.1).
    pub exists: bool,
    /// The service name's A set (cluster IPs, or endpoint addresses).
    pub a: RrSet,
    /// The service name's AAAA set.
    pub aaaa: RrSet,
    /// ExternalName CNAME.
    pub cname: Option<RrSet>,
    /// Per-endpoint answers by lower-case label bytes.
    pub names: HashMap<Box<[u8]>, EndpointAnswers>,
    /// SRV names.
    pub srv: Vec<SrvAnswers>,
    /// StatefulSets governed by this service: (name, replicas).
    pub statefulsets: Vec<(String, u32)>,
    /// When this view was published.
    pub published_ms: u64,
}

impl ServiceView {
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
            .any(|(name, replicas)| name == ord.base && n < *replicas)
    }
}

/// Counters readers can show (admin API, metrics).
#[derive(Debug, Default)]
pub struct IndexStats {
    /// Services published.
    pub services: AtomicU64,
    /// Endpoints (served or not) across published services.
    pub endpoints: AtomicU64,
    /// Events applied since start.
    pub events: AtomicU64,
    /// Publications (batches) since start.
    pub publishes: AtomicU64,
    /// Served DNS names (endpoint labels) across published services.
    pub names: AtomicU64,
    /// Events applied, by kind (`Kind::ALL` order) and type (Reset, Upsert, Remove, Synced).
    pub events_by: [[AtomicU64; 4]; 5],
    /// Unix ms of each kind's last completed (re-)list; 0 = never.
    pub last_sync_ms: [AtomicU64; 5],
    /// Time to apply and publish one batch: bucket counts (bounds in
    /// `crate::dns::stats::BUCKETS_US`, last = +Inf) and the sum in ns.
    pub publish_buckets: [AtomicU64; 13],
    /// Sum of batch apply+publish durations, nanoseconds.
    pub publish_ns: AtomicU64,
}

/// The `type` label values of [`IndexStats::events_by`].
pub const EVENT_TYPES: [&str; 4] = ["reset", "upsert", "remove", "synced"];

impl Kind {
    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

struct Shared {
    settings: ZoneSettings,
    services: DashMap<Box<[u8]>, Arc<ServiceView>>,
    namespaces: DashMap<Box<[u8]>, ()>,
    reverse: DashMap<IpAddr, Arc<RrSet>>,
    pod_ips: DashMap<IpAddr, Box<[Box<[u8]>]>>,
    serial: AtomicU32,
    synced: AtomicBool,
    generation: tokio::sync::watch::Sender<u64>,
    stats: IndexStats,
}

/// The read side: cheap to clone, never waits for the writer beyond one
/// DashMap shard's pointer swap.
#[derive(Clone)]
pub struct Index {
    shared: Arc<Shared>,
}

/// Appends the wire label (length byte + bytes) of `s` to `out`.
fn push_label(out: &mut Vec<u8>, s: &str) {
    out.push(s.len().min(63) as u8);
    out.extend_from_slice(&s.as_bytes()[..s.len().min(63)]);
}

/// The map key of a service: wire labels `<svc><ns>`.
pub fn service_key(namespace: &str, name: &str) -> Box<[u8]> {
    let mut k = Vec::with_capacity(namespace.len() + name.len() + 2);
    push_label(&mut k, name);
    push_label(&mut k, namespace);
    k.into()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Index {
    /// The zone settings answers were built with.
    pub fn settings(&self) -> &ZoneSettings {
        &self.shared.settings
    }

    /// The service whose key (see [`service_key`]) is `key`.
    pub fn service(&self, key: &[u8]) -> Option<Arc<ServiceView>> {
        self.shared.services.get(key).map(|v| Arc::clone(v.value()))
    }

    /// True when the namespace (wire label, lower-case) exists.
    pub fn has_namespace(&self, label: &[u8]) -> bool {
        self.shared.namespaces.contains_key(label)
    }

    /// The PTR set for an address.
    pub fn reverse(&self, ip: &IpAddr) -> Option<Arc<RrSet>> {
        self.shared.reverse.get(ip).map(|v| Arc::clone(v.value()))
    }

    /// True when a running pod in namespace `ns_label` (wire label) has `ip`.
    pub fn has_pod_ip(&self, ip: &IpAddr, ns_label: &[u8]) -> bool {
        self.shared
            .pod_ips
            .get(ip)
            .is_some_and(|nss| nss.iter().any(|n| &**n == ns_label))
    }

    /// The SOA serial: Unix time of the last change.
    pub fn serial(&self) -> u32 {
        self.shared.serial.load(Ordering::Relaxed)
    }

    /// True once every kind the source watches has completed its first list.
    pub fn is_synced(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// Counters.
    pub fn stats(&self) -> &IndexStats {
        &self.shared.stats
    }

    /// A receiver that changes whenever the writer publishes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Waits until the first full sync (for tests and start-up logging).
    pub async fn wait_synced(&self) {
        let mut rx = self.subscribe();
        while !self.is_synced() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// A snapshot of all services, sorted by namespace and name (admin API).
    pub fn services(&self) -> Vec<Arc<ServiceView>> {
        let mut v: Vec<_> = self
            .shared
            .services
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect();
        v.sort_by(|a, b| a.record.key.cmp(&b.record.key));
        v
    }
}

/// The single writer. Not `Clone`: exactly one task owns it.
pub struct IndexWriter {
    index: Index,
    expected: HashSet<Kind>,
    synced: HashSet<Kind>,
    relist: HashMap<Kind, HashMap<ObjectKey, Object>>,
    services: HashMap<ObjectKey, ServiceRecord>,
    slices: HashMap<ObjectKey, SliceRecord>,
    slices_by_service: HashMap<ObjectKey, BTreeSet<String>>,
    namespaces: HashSet<String>,
    statefulsets: HashMap<ObjectKey, StatefulSetRecord>,
    sts_by_service: HashMap<ObjectKey, BTreeSet<String>>,
    pods: HashMap<ObjectKey, PodRecord>,
    endpoint_count: u64,
    name_count: u64,
    ns_refs: HashMap<String, usize>,
    /// The names each address's PTR points at, sorted. A `Vec` of boxed
    /// strings, not a set: almost every address has exactly one name, and a
    /// B-tree node per address would be most of the index's memory.
    ptr_owners: HashMap<IpAddr, Vec<Box<str>>>,
    pod_ip_ns: HashMap<IpAddr, BTreeMap<String, usize>>,
    touched_services: BTreeSet<ObjectKey>,
    touched_namespaces: BTreeSet<String>,
    touched_pod_ips: BTreeSet<IpAddr>,
    changed: bool,
}

impl IndexWriter {
    /// A new, empty index that becomes ready once every kind in `expected`
    /// has been `Synced` once.
    pub fn new(settings: ZoneSettings, expected: &[Kind]) -> Self {
        let (generation, _) = tokio::sync::watch::channel(0);
        let shared = Shared {
            settings,
            services: DashMap::new(),
            namespaces: DashMap::new(),
            reverse: DashMap::new(),
            pod_ips: DashMap::new(),
            serial: AtomicU32::new(now_ms().div_euclid(1000) as u32),
            synced: AtomicBool::new(expected.is_empty()),
            generation,
            stats: IndexStats::default(),
        };
        Self {
            index: Index {
                shared: Arc::new(shared),
            },
            expected: expected.iter().copied().collect(),
            synced: HashSet::new(),
            relist: HashMap::new(),
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_by_service: HashMap::new(),
            namespaces: HashSet::new(),
            statefulsets: HashMap::new(),
            sts_by_service: HashMap::new(),
            pods: HashMap::new(),
            endpoint_count: 0,
            name_count: 0,
            ns_refs: HashMap::new(),
            ptr_owners: HashMap::new(),
            pod_ip_ns: HashMap::new(),
            touched_services: BTreeSet::new(),
            touched_namespaces: BTreeSet::new(),
            touched_pod_ips: BTreeSet::new(),
            changed: false,
        }
    }

    /// A reader handle.
    pub fn index(&self) -> Index {
        self.index.clone()
    }

    /// Applies one event; call [`IndexWriter::publish`] after a batch.
    pub fn apply(&mut self, event: SourceEvent) {
        let stats = &self.index.shared.stats;
        stats.events.fetch_add(1, Ordering::Relaxed);
        let (kind, t) = match &event {
            SourceEvent::Reset(k) => (*k, 0),
            SourceEvent::Upsert(o) => (o.kind(), 1),
            SourceEvent::Remove(k, _) => (*k, 2),
            SourceEvent::Synced(k) => (*k, 3),
        };
        stats.events_by[kind.index()][t].fetch_add(1, Ordering::Relaxed);
        if t == 3 {
            stats.last_sync_ms[kind.index()].store(now_ms(), Ordering::Relaxed);
        }
        match event {
            SourceEvent::Reset(kind) => {
                self.relist.insert(kind, HashMap::new());
            }
            SourceEvent::Upsert(obj) => {
                if let Some(buf) = self.relist.get_mut(&obj.kind()) {
                    buf.insert(obj.key().clone(), obj);
                } else {
                    self.upsert(obj);
                }
            }
            SourceEvent::Remove(kind, key) => {
                if let Some(buf) = self.relist.get_mut(&kind) {
                    buf.remove(&key);
                } else {
                    self.remove(kind, &key);
                }
            }
            SourceEvent::Synced(kind) => {
                if let Some(buf) = self.relist.remove(&kind) {
                    for key in self.keys_of(kind) {
                        if !buf.contains_key(&key) {
                            self.remove(kind, &key);
                        }
                    }
                    for (_, obj) in buf {
                        self.upsert(obj);
                    }
                }
                self.synced.insert(kind);
            }
        }
    }

    /// Applies many events and publishes once.
    pub fn apply_all(&mut self, events: impl IntoIterator<Item = SourceEvent>) {
        let started = std::time::Instant::now();
        for e in events {
            self.apply(e);
        }
        self.publish();
        let took = started.elapsed();
        let stats = &self.index.shared.stats;
        let us = took.as_micros() as u64;
        let b = crate::dns::stats::BUCKETS_US
            .iter()
            .position(|l| us <= *l)
            .unwrap_or(crate::dns::stats::BUCKETS_US.len());
        stats.publish_buckets[b].fetch_add(1, Ordering::Relaxed);
        stats
            .publish_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    fn keys_of(&self, kind: Kind) -> Vec<ObjectKey> {
        match kind {
            Kind::Service => self.services.keys().cloned().collect(),
            Kind::EndpointSlice => self.slices.keys().cloned().collect(),
            Kind::Namespace => self
                .namespaces
                .iter()
                .map(|n| ObjectKey::new("", n))
                .collect(),
            Kind::StatefulSet => self.statefulsets.keys().cloned().collect(),
            Kind::Pod => self.pods.keys().cloned().collect(),
        }
    }

    fn ns_ref(&mut self, ns: &str, delta: isize) {
        let count = self.ns_refs.entry(ns.to_string()).or_default();
        let before = *count;
        *count = count.saturating_add_signed(delta);
        if (before == 0) != (*count == 0) {
            self.touched_namespaces.insert(ns.to_string());
        }
        if *count == 0 {
            self.ns_refs.remove(ns);
        }
    }

    fn governing_key(sts: &StatefulSetRecord) -> ObjectKey {
        ObjectKey::new(&sts.key.namespace, &sts.service_name)
    }

    fn service_of_slice(s: &SliceRecord) -> ObjectKey {
        ObjectKey::new(&s.key.namespace, &s.service)
    }

    fn upsert(&mut self, obj: Object) {
        match obj {
            Object::Service(r) => {
                if self.services.get(&r.key) == Some(&r) {
                    return;
                }
                let key = r.key.clone();
                if self.services.insert(key.clone(), r).is_none() {
                    self.ns_ref(&key.namespace, 1);
                }
                self.touched_services.insert(key);
            }
            Object::EndpointSlice(r) => {
                if self.slices.get(&r.key) == Some(&r) {
                    return;
                }
                let svc = Self::service_of_slice(&r);
                self.slices_by_service
                    .entry(svc.clone())
                    .or_default()
                    .insert(r.key.name.clone());
                self.touched_services.insert(svc.clone());
                if let Some(old) = self.slices.insert(r.key.clone(), r) {
                    let old_svc = Self::service_of_slice(&old);
                    if old_svc != svc {
                        self.unlink_slice(&old_svc, &old.key.name);
                    }
                }
            }
            Object::Namespace(r) => {
                if self.namespaces.insert(r.key.name.clone()) {
                    self.ns_ref(&r.key.name, 1);
                }
            }
            Object::StatefulSet(r) => {
                if self.statefulsets.get(&r.key) == Some(&r) {
                    return;
                }
                let gov = Self::governing_key(&r);
                self.touched_services.insert(gov.clone());
                self.sts_by_service
                    .entry(gov)
                    .or_default()
                    .insert(r.key.name.clone());
                if let Some(old) = self.statefulsets.insert(r.key.clone(), r) {
                    self.unlink_sts(&old);
                }
            }
            Object::Pod(r) => {
                if self.pods.get(&r.key) == Some(&r) {
                    return;
                }
                let new_ips = Self::pod_ips_of(&r);
                self.link_pod_ips(&r.key.namespace, &new_ips, 1);
                if let Some(old) = self.pods.insert(r.key.clone(), r) {
                    self.link_pod_ips(&old.key.namespace, &Self::pod_ips_of(&old), -1);
                }
            }
        }
    }

    fn remove(&mut self, kind: Kind, key: &ObjectKey) {
        match kind {
            Kind::Service => {
                if self.services.remove(key).is_some() {
                    self.ns_ref(&key.namespace, -1);
                    self.touched_services.insert(key.clone());
                }
            }
            Kind::EndpointSlice => {
                if let Some(old) = self.slices.remove(key) {
                    self.unlink_slice(&Self::service_of_slice(&old), &old.key.name);
                }
            }
            Kind::Namespace => {
                if self.namespaces.remove(&key.name) {
                    self.ns_ref(&key.name, -1);
                }
            }
            Kind::StatefulSet => {
                if let Some(old) = self.statefulsets.remove(key) {
                    self.unlink_sts(&old);
                }
            }
            Kind::Pod => {
                if let Some(old) = self.pods.remove(key) {
                    self.link_pod_ips(&old.key.namespace, &Self::pod_ips_of(&old), -1);
                }
            }
        }
    }

    /// Drops `old`'s link to its governing service unless the current record
    /// of the same StatefulSet still points there.
    fn unlink_sts(&mut self, old: &StatefulSetRecord) {
        let gov = Self::governing_key(old);
        self.touched_services.insert(gov.clone());
        let still = self
            .statefulsets
            .get(&old.key)
            .is_some_and(|cur| Self::governing_key(cur) == gov);
        if !still && let Some(set) = self.sts_by_service.get_mut(&gov) {
            set.remove(&old.key.name);
            if set.is_empty() {
                self.sts_by_service.remove(&gov);
            }
        }
    }

    fn unlink_slice(&mut self, svc: &ObjectKey, slice: &str) {
        if let Some(set) = self.slices_by_service.get_mut(svc) {
            set.remove(slice);
            if set.is_empty() {
                self.slices_by_service.remove(svc);
            }
        }
        self.touched_services.insert(svc.clone());
    }

    fn pod_ips_of(p: &PodRecord) -> Vec<IpAddr> {
        if p.terminating {
            Vec::new()
        } else {
            p.ips.clone()
        }
    }

    fn link_pod_ips(&mut self, ns: &str, ips: &[IpAddr], delta: isize) {
        for ip in ips {
            let m = self.pod_ip_ns.entry(*ip).or_default();
            let c = m.entry(ns.to_string()).or_default();
            *c = c.saturating_add_signed(delta);
            if *c == 0 {
                m.remove(ns);
            }
            if m.is_empty() {
                self.pod_ip_ns.remove(ip);
            }
            self.touched_pod_ips.insert(*ip);
        }
    }

    /// Publishes every service, namespace and address touched since the last
    /// call. Each gets one new immutable view; untouched ones are not rebuilt.
    pub fn publish(&mut self) {
        let shared = Arc::clone(&self.index.shared);
        let mut touched_ips = BTreeSet::new();
        let now = now_ms();
        for key in std::mem::take(&mut self.touched_services) {
            self.changed = true;
            let map_key = service_key(&key.namespace, &key.name);
            let old_view = shared
                .services
                .get(&*map_key)
                .map(|v| Arc::clone(v.value()));
            let view = self.build_view(&key, old_view.as_deref(), now);
            // The PTRs a view contributes follow from the view alone, so the
            // old ones are recomputed from the old view rather than stored.
            let new_ptrs = view.as_ref().map(|v| self.ptrs_of(v)).unwrap_or_default();
            let old_ptrs = old_view
                .as_ref()
                .map(|v| self.ptrs_of(v))
                .unwrap_or_default();
            if old_ptrs != new_ptrs {
                for (ip, name) in &old_ptrs {
                    if let Some(names) = self.ptr_owners.get_mut(ip)
                        && let Ok(i) = names.binary_search_by(|n| (**n).cmp(name.as_str()))
                    {
                        names.remove(i);
                    }
                    touched_ips.insert(*ip);
                }
                for (ip, name) in new_ptrs {
                    let names = self.ptr_owners.entry(ip).or_default();
                    if let Err(i) = names.binary_search_by(|n| (**n).cmp(name.as_str())) {
                        // Exactly one more: a growing Vec would reserve four.
                        names.reserve_exact(1);
                        names.insert(i, name.into_boxed_str());
                    }
                    touched_ips.insert(ip);
                }
            }
            let old_count = old_view.as_ref().map_or(0, |v| v.endpoints.len() as u64);
            let new_count = view.as_ref().map_or(0, |v| v.endpoints.len() as u64);
            self.endpoint_count = self.endpoint_count + new_count - old_count;
            let old_names = old_view.as_ref().map_or(0, |v| v.names.len() as u64);
            let new_names = view.as_ref().map_or(0, |v| v.names.len() as u64);
            self.name_count = self.name_count + new_names - old_names;
            match view {
                Some(v) => {
                    shared.services.insert(map_key, Arc::new(v));
                }
                None => {
                    shared.services.remove(&*map_key);
                }
            }
        }
        for ip in touched_ips {
            let names = self.ptr_owners.get(&ip).filter(|s| !s.is_empty());
            match names {
                Some(names) => {
                    let owner = records::name(&reverse_name(ip));
                    let targets: Vec<Name> =
                        names.iter().filter_map(|n| records::name(n)).collect();
                    if let Some(owner) = owner {
                        let set = records::name_set(
                            &owner,
                            shared.settings.ttl,
                            RecordType::PTR,
                            &targets,
                        );
                        shared.reverse.insert(ip, Arc::new(set));
                    }
                }
                None => {
                    self.ptr_owners.remove(&ip);
                    shared.reverse.remove(&ip);
                }
            }
        }
        for ns in std::mem::take(&mut self.touched_namespaces) {
            self.changed = true;
            let mut label = Vec::new();
            push_label(&mut label, &ns);
            if self.ns_refs.contains_key(&ns) {
                shared.namespaces.insert(label.into(), ());
            } else {
                shared.namespaces.remove(&*label);
            }
        }
        for ip in std::mem::take(&mut self.touched_pod_ips) {
            self.changed = true;
            match self.pod_ip_ns.get(&ip) {
                Some(nss) => {
                    let labels: Box<[Box<[u8]>]> = nss
                        .keys()
                        .map(|n| {
                            let mut l = Vec::new();
                            push_label(&mut l, n);
                            l.into_boxed_slice()
                        })
                        .collect();
                    shared.pod_ips.insert(ip, labels);
                }
                None => {
                    shared.pod_ips.remove(&ip);
                }
            }
        }
        let newly_synced = !shared.synced.load(Ordering::Relaxed)
            && self.expected.iter().all(|k| self.synced.contains(k));
        if newly_synced {
            shared.synced.store(true, Ordering::Release);
        }
        if std::mem::take(&mut self.changed) || newly_synced {
            let secs = (now / 1000) as u32;
            let prev = shared.serial.load(Ordering::Relaxed);
            shared
                .serial
                .store(secs.max(prev.wrapping_add(1)), Ordering::Relaxed);
            shared
                .stats
                .services
                .store(shared.services.len() as u64, Ordering::Relaxed);
            shared
                .stats
                .endpoints
                .store(self.endpoint_count, Ordering::Relaxed);
            shared.stats.names.store(self.name_count, Ordering::Relaxed);
            shared.stats.publishes.fetch_add(1, Ordering::Relaxed);
            shared.generation.send_modify(|g| *g += 1);
        }
    }

    fn ptrs_of(&self, v: &ServiceView) -> Vec<(IpAddr, String)> {
        let zone = &self.index.shared.settings.zone;
        let svc = format!(
            "{}.{}.svc.{zone}",
            v.record.key.name, v.record.key.namespace
        );
        let mut out = Vec::new();
        if let ServiceKind::ClusterIp(ips) = &v.record.kind {
            out.extend(ips.iter().map(|ip| (*ip, svc.clone())));
        }
        for ep in v.endpoints.iter().filter(|e| e.served) {
            for ip in &ep.addresses {
                out.push((*ip, format!("{}.{svc}", ep.label)));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn build_view(
        &self,
        key: &ObjectKey,
        old: Option<&ServiceView>,
        now: u64,
    ) -> Option<ServiceView> {
        let record = self.services.get(key)?.clone();
        let settings = &self.index.shared.settings;
        let slices: Vec<&SliceRecord> = self
            .slices_by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&ObjectKey::new(&key.namespace, name)))
            .collect();
        let endpoints = group_endpoints(&record, &slices, settings.endpoint_pod_names, old, now);
        let statefulsets: Vec<(String, u32)> = self
            .sts_by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.statefulsets.get(&ObjectKey::new(&key.namespace, name)))
            .map(|s| (s.key.name.clone(), s.replicas))
            .collect();
        Some(compile_view(settings, record, endpoints, statefulsets, now))
    }
}

/// Merges the endpoints of all slices of a service by DNS label and puts them
/// in ordinal order (`web-0`, `web-1`, … then other names, sorted).
fn group_endpoints(
    svc: &ServiceRecord,
    slices: &[&SliceRecord],
    pod_names: bool,
    old: Option<&ServiceView>,
    now: u64,
) -> Vec<EndpointView> {
    let mut by_label: BTreeMap<String, (EndpointView, Vec<PortRecord>)> = BTreeMap::new();
    for slice in slices {
        for ep in &slice.endpoints {
            let served =
                !ep.terminating && (ep.ready || svc.publish_not_ready) && !ep.addresses.is_empty();
            let named = ep.hostname.clone().map(|h| (h, true)).or_else(|| {
                ep.pod
                    .as_ref()
                    .filter(|p| pod_names && p.len() < 64)
                    .map(|p| (p.clone(), false))
            });
            let labels: Vec<(String, bool, Vec<IpAddr>)> = match named {
                Some((l, h)) => vec![(l, h, ep.addresses.clone())],
                None => ep
                    .addresses
                    .iter()
                    .map(|ip| (record::dashed_ip(*ip), false, vec![*ip]))
                    .collect(),
            };
            for (label, is_hostname, addresses) in labels {
                let (e, ports) = by_label.entry(label.clone()).or_insert_with(|| {
                    let view = EndpointView {
                        label,
                        is_hostname,
                        addresses: Vec::new(),
                        ready: ep.ready,
                        serving: ep.serving,
                        terminating: ep.terminating,
                        served: false,
                        pod: ep.pod.clone(),
                        ports: Arc::new([]),
                        changed_ms: now,
                    };
                    (view, Vec::new())
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
                    for ip in addresses {
                        if !e.addresses.contains(&ip) {
                            e.addresses.push(ip);
                        }
                    }
                    for p in &slice.ports {
                        if !ports.contains(p) {
                            ports.push(p.clone());
                        }
                    }
                }
            }
        }
    }
    // Endpoints of one slice have the same ports: one shared list each.
    let mut port_lists: Vec<Arc<[PortRecord]>> = Vec::new();
    let old_by_label: HashMap<&str, &EndpointView> = old
        .map(|o| o.endpoints.iter().map(|e| (e.label.as_str(), e)).collect())
        .unwrap_or_default();
    let mut list = Vec::with_capacity(by_label.len());
    for (mut e, mut ports) in by_label.into_values() {
        e.addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        e.addresses.shrink_to_fit();
        ports.sort();
        e.ports = match port_lists.iter().find(|l| ***l == *ports) {
            Some(l) => Arc::clone(l),
            None => {
                let l: Arc<[PortRecord]> = ports.into();
                port_lists.push(Arc::clone(&l));
                l
            }
        };
        if let Some(prev) = old_by_label.get(e.label.as_str())
            && prev.addresses == e.addresses
            && prev.served == e.served
            && prev.ready == e.ready
        {
            e.changed_ms = prev.changed_ms;
        }
        list.push(e);
    }
    list.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    list
}

fn sort_key(e: &EndpointView) -> Ordinal<'_> {
    if e.is_hostname {
        Ordinal::parse(&e.label)
    } else {
        Ordinal {
            base: &e.label,
            number: None,
            name: &e.label,
        }
    }
}

/// Builds the pre-encoded answers of a service (see `dns::records`).
fn compile_view(
    settings: &ZoneSettings,
    record: ServiceRecord,
    endpoints: Vec<EndpointView>,
    statefulsets: Vec<(String, u32)>,
    now: u64,
) -> ServiceView {
    let ttl = settings.ttl;
    let svc_fqdn = format!(
        "{}.{}.svc.{}",
        record.key.name, record.key.namespace, settings.zone
    );
    let svc_name = records::name(&svc_fqdn);
    let served: Vec<&EndpointView> = endpoints.iter().filter(|e| e.served).collect();
    let mut view = ServiceView {
        exists: true,
        a: RrSet::default(),
        aaaa: RrSet::default(),
        cname: None,
        names: HashMap::new(),
        srv: Vec::new(),
        statefulsets,
        published_ms: now,
        endpoints: Vec::new(),
        record,
    };
    let Some(svc_name) = svc_name else {
        view.exists = false;
        view.endpoints = endpoints;
        return view;
    };
    // Endpoint names (headless and, as CoreDNS does, ClusterIP services).
    let mut ep_names = Vec::with_capacity(served.len());
    for ep in &served {
        let Some(n) = records::name(&format!("{}.{svc_fqdn}", ep.label)) else {
            continue;
        };
        let (a, aaaa) = records::address_sets(&n, ttl, &ep.addresses);
        view.names.insert(
            ep.label.as_bytes().to_ascii_lowercase().into_boxed_slice(),
            EndpointAnswers { a, aaaa },
        );
        ep_names.push((n, *ep));
    }
    match &view.record.kind {
        ServiceKind::ClusterIp(ips) => {
            (view.a, view.aaaa) = records::address_sets(&svc_name, ttl, ips);
            for p in view.record.ports.clone() {
                let Some(port_name) = &p.name else { continue };
                let Some(owner) =
                    records::name(&format!("_{port_name}._{}.{svc_fqdn}", p.protocol))
                else {
                    continue;
                };
                let target = SrvTarget {
                    target: &svc_name,
                    port: p.port,
                    glue: ips,
                };
                view.srv.push(SrvAnswers {
                    port: port_name.as_bytes().into(),
                    proto: p.protocol.as_bytes().into(),
                    sections: records::srv_set(&owner, ttl, &[target]),
                });
            }
        }
        ServiceKind::Headless => {
            view.exists = !served.is_empty();
            (view.a, view.aaaa) = records::address_sets(
                &svc_name,
                ttl,
                served.iter().flat_map(|e| e.addresses.iter()),
            );
            let mut ports: Vec<(&str, &str)> = served
                .iter()
                .flat_map(|e| e.ports.iter())
                .filter_map(|p| p.name.as_deref().map(|n| (n, p.protocol.as_str())))
                .collect();
            ports.sort();
            ports.dedup();
            for (port_name, proto) in ports {
                let Some(owner) = records::name(&format!("_{port_name}._{proto}.{svc_fqdn}"))
                else {
                    continue;
                };
                let targets: Vec<SrvTarget<'_>> = ep_names
                    .iter()
                    .flat_map(|(n, ep)| {
                        ep.ports
                            .iter()
                            .filter(|p| p.name.as_deref() == Some(port_name) && p.protocol == proto)
                            .map(move |p| SrvTarget {
                                target: n,
                                port: p.port,
                                glue: &ep.addresses,
                            })
                    })
                    .collect();
                view.srv.push(SrvAnswers {
                    port: port_name.as_bytes().into(),
                    proto: proto.as_bytes().into(),
                    sections: records::srv_set(&owner, ttl, &targets),
                });
            }
        }
        ServiceKind::ExternalName(target) => {
            if let Some(t) = records::name(target) {
                view.cname = Some(records::name_set(&svc_name, ttl, RecordType::CNAME, &[t]));
            }
        }
    }
    view.endpoints = endpoints;
    view
}

/// The reverse-lookup name of an address (`7.1.244.10.in-addr.arpa`, or 32
/// nibbles under `ip6.arpa`), without trailing dot.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
                s.push('.');
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

#[cfg(test)]
mod tests;
