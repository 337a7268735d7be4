//! The ordinal-name index: one writer applies source events, many readers answer.
//!
//! Sources speak [`SourceEvent`], which mirrors kube-runtime's watcher contract:
//! `Reset(kind)` starts a re-list, `Upsert`s fill it, `Synced(kind)` ends it
//! (whatever was not re-listed is gone). Deletions wait for that end, so a
//! re-list cut short by a lost API connection never blanks a live name.
//! Unlike kube-runtime's store, upserts are applied as they arrive rather than
//! buffered for one swap: each is newer truth from the API, answers never
//! depend on two objects of one kind at once, and a buffered second copy of
//! the cluster would be the largest thing in memory during a re-list (the
//! issue's bound is 1.2x steady state).
//!
//! Readers ([`Index`], a cheap `Clone`) see per-service immutable, compact
//! [`ServiceView`]s (see `view`) in a `DashMap`. The writer builds a new view
//! *outside* any lock and then swaps one `Arc` in, so a reader sees a service
//! either before or after an update, never half of it, and an update costs
//! O(that service), not O(cluster). A burst of events (a re-list page, a
//! scale-up) is applied first and each touched service published once.
//!
//! Map keys are DNS wire labels in lower case (`\x05nginx\x07default`), the
//! very bytes the query path has after lower-casing the question, so a lookup
//! allocates nothing.

pub mod addrs;
pub mod observe;
pub mod record;
pub mod serial;
pub mod stored;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

pub use record::{
    EndpointRecord, NamespaceRecord, ObjectKey, Ordinal, PodManagement, PodRecord, PortRecord,
    ServiceKind, ServiceRecord, SliceRecord, StatefulSetRecord,
};
use stored::StoredSlice;
pub use view::{EndpointView, PtrSet, PtrTarget, Rr, SERVICE_ITSELF, ServiceView, Srv};

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
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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

impl Default for ZoneSettings {
    /// The configuration's defaults: `cluster.local`, TTL 5 s, endpoints
    /// without a hostname named by their address.
    fn default() -> Self {
        Self {
            zone: "cluster.local".into(),
            ttl: 5,
            endpoint_pod_names: false,
        }
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
    /// Every published view by [`ServiceView::id`]: what the reverse maps
    /// point at.
    views: DashMap<u32, Arc<ServiceView>>,
    /// The name of each address, one map per family: a 4-byte key and an
    /// 8-byte [`PtrRef`] keep an IPv4 entry at 12 bytes (an `Arc` to the
    /// view in the entry made it 24, 3.3 MB at 100,000 addresses, doubled
    /// while a re-list churned the table).
    reverse_v4: DashMap<u32, PtrRef>,
    reverse_v6: DashMap<u128, PtrRef>,
    /// The names of the rare addresses that have several ([`MANY`]).
    reverse_many: DashMap<IpAddr, Arc<Box<[PtrTarget]>>>,
    pod_ips: DashMap<IpAddr, Box<[Box<[u8]>]>>,
    serial: AtomicU32,
    synced: AtomicBool,
    generation: tokio::sync::watch::Sender<u64>,
    stats: IndexStats,
}

/// Where the name of an address is: endpoint `endpoint` (or the service
/// itself, [`SERVICE_ITSELF`]) of the view numbered `view`, or, when `view`
/// is [`MANY`], the address's entry in `reverse_many`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PtrRef {
    view: u32,
    endpoint: u32,
}

/// [`PtrRef::view`] of an address with several names.
const MANY: u32 = u32::MAX;

impl Shared {
    /// The PTR set of `ip`, resolved. The writer replaces a view before it
    /// repoints the addresses, so an entry read just before may name an
    /// endpoint position of the previous view: it is checked against the
    /// address and looked up again if it moved.
    fn ptr_set(&self, ip: IpAddr) -> Option<PtrSet> {
        let r = match ip {
            IpAddr::V4(a) => *self.reverse_v4.get(&u32::from(a))?,
            IpAddr::V6(a) => *self.reverse_v6.get(&u128::from(a))?,
        };
        if r.view == MANY {
            return self
                .reverse_many
                .get(&ip)
                .map(|t| PtrSet::Many(Arc::clone(&t)));
        }
        let view = Arc::clone(&*self.views.get(&r.view)?);
        let endpoint = if view.has_address(r.endpoint, ip) {
            r.endpoint
        } else {
            (0..view.endpoint_count() as u32).find(|i| view.has_address(*i, ip))?
        };
        Some(PtrSet::One([PtrTarget { view, endpoint }]))
    }

    /// Replaces the PTR targets of `ip` with `f(current)` (none: no entry).
    /// Only the writer calls this, so read-then-write is not a race.
    fn update_ptr(&self, ip: IpAddr, zone: &str, f: impl FnOnce(Vec<PtrTarget>) -> Vec<PtrTarget>) {
        let current = self
            .ptr_set(ip)
            .map_or_else(Vec::new, |s| s.targets().to_vec());
        let next = f(current);
        let entry = if next.is_empty() {
            None
        } else {
            match PtrSet::new(next, zone) {
                PtrSet::One([t]) => Some(PtrRef {
                    view: t.view.id,
                    endpoint: t.endpoint,
                }),
                PtrSet::Many(set) => {
                    self.reverse_many.insert(ip, set);
                    Some(PtrRef {
                        view: MANY,
                        endpoint: 0,
                    })
                }
            }
        };
        match (ip, entry) {
            (IpAddr::V4(a), Some(r)) => {
                self.reverse_v4.insert(u32::from(a), r);
            }
            (IpAddr::V6(a), Some(r)) => {
                self.reverse_v6.insert(u128::from(a), r);
            }
            (IpAddr::V4(a), None) => {
                self.reverse_v4.remove(&u32::from(a));
            }
            (IpAddr::V6(a), None) => {
                self.reverse_v6.remove(&u128::from(a));
            }
        }
        if entry.is_none_or(|r| r.view != MANY) {
            self.reverse_many.remove(&ip);
        }
    }
}

/// What the writer knows under one service name: the Service itself (once
/// it exists) and the names of the slices and StatefulSets that point at it.
#[derive(Debug, Default)]
struct ServiceEntry {
    record: Option<Arc<ServiceRecord>>,
    /// Slice names (almost always one).
    slices: Names,
    /// Governed StatefulSet names.
    statefulsets: Names,
}

/// A sorted set of object names in one string, `\n`-separated. Almost
/// always one name: one heap block, where a `Vec` of boxed names took two
/// and 24 bytes more (two lists per service: ~0.8 MB at 10,000 services).
/// Kubernetes object names never hold a line break.
#[derive(Debug, Default)]
struct Names(Box<str>);

impl Names {
    fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split('\n').filter(|n| !n.is_empty())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `name` if missing.
    fn insert(&mut self, name: &str) {
        let mut names: Vec<&str> = self.iter().collect();
        if let Err(i) = names.binary_search(&name) {
            names.insert(i, name);
            self.0 = names.join("\n").into();
        }
    }

    /// Removes `name` if present.
    fn remove(&mut self, name: &str) {
        if self.iter().any(|n| n == name) {
            let rest: Vec<&str> = self.iter().filter(|n| *n != name).collect();
            self.0 = rest.join("\n").into();
        }
    }
}

/// A StatefulSet as the writer keeps it: the service that governs it (its
/// `spec.serviceName`) and its replicas.
#[derive(Debug, PartialEq, Eq)]
struct Governed {
    service: Box<str>,
    replicas: u32,
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
    pub fn reverse(&self, ip: &IpAddr) -> Option<PtrSet> {
        self.shared.ptr_set(*ip)
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
    /// Keys seen so far by the re-list of each kind in progress, as 64-bit
    /// hashes: 8 bytes a key instead of ~110 for a copy (4 MB at 20,000
    /// objects, a tenth of the index). A collision (odds ~1e-11 at 100,000
    /// keys) would only keep one deleted object until the next re-list.
    relist: HashMap<Kind, HashSet<u64>>,
    /// Keys of `relist` hash with this (random per process).
    relist_hasher: std::hash::RandomState,
    /// Per service name: the Service and what points at it.
    services: HashMap<ObjectKey, ServiceEntry>,
    slices: HashMap<ObjectKey, StoredSlice>,
    /// Distinct port lists of slices (most slices share one).
    port_lists: HashSet<Arc<[PortRecord]>>,
    /// Sweep `port_lists` of unused lists when it grows past this.
    port_sweep_at: usize,
    namespaces: HashSet<String>,
    /// StatefulSets: what their views need (the record's other fields are
    /// the simulator's).
    statefulsets: HashMap<ObjectKey, Governed>,
    pods: HashMap<ObjectKey, PodRecord>,
    /// View numbers free for reuse, and the next one never used.
    free_ids: Vec<u32>,
    next_id: u32,
    endpoint_count: u64,
    name_count: u64,
    ns_refs: HashMap<String, usize>,
    pod_ip_ns: HashMap<IpAddr, BTreeMap<String, usize>>,
    touched_services: BTreeSet<ObjectKey>,
    touched_namespaces: BTreeSet<String>,
    touched_pod_ips: BTreeSet<IpAddr>,
    changed: bool,
    /// Told about every publication (zone transfers' journal), if set.
    observer: Option<Box<dyn observe::PublishObserver>>,
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
            views: DashMap::new(),
            reverse_v4: DashMap::new(),
            reverse_v6: DashMap::new(),
            reverse_many: DashMap::new(),
            pod_ips: DashMap::new(),
            serial: AtomicU32::new(serial::initial((now_ms() / 1000) as u32)),
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
            relist_hasher: std::hash::RandomState::new(),
            services: HashMap::new(),
            slices: HashMap::new(),
            port_lists: HashSet::new(),
            port_sweep_at: 64,
            namespaces: HashSet::new(),
            statefulsets: HashMap::new(),
            pods: HashMap::new(),
            free_ids: Vec::new(),
            next_id: 0,
            endpoint_count: 0,
            name_count: 0,
            ns_refs: HashMap::new(),
            pod_ip_ns: HashMap::new(),
            touched_services: BTreeSet::new(),
            touched_namespaces: BTreeSet::new(),
            touched_pod_ips: BTreeSet::new(),
            changed: false,
            observer: None,
        }
    }

    /// Installs `observer` for every later publication (see
    /// [`observe::PublishObserver`]); the serial rises to its floor.
    pub fn observe(&mut self, observer: Box<dyn observe::PublishObserver>) {
        let floor = observer.serial_floor();
        self.index.shared.serial.fetch_max(floor, Ordering::Relaxed);
        self.observer = Some(observer);
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
                self.relist.insert(kind, HashSet::new());
            }
            SourceEvent::Upsert(obj) => {
                if let Some(seen) = self.relist.get_mut(&obj.kind()) {
                    seen.insert(self.relist_hasher.hash_one(obj.key()));
                }
                self.upsert(obj);
            }
            SourceEvent::Remove(kind, key) => {
                if let Some(seen) = self.relist.get_mut(&kind) {
                    seen.remove(&self.relist_hasher.hash_one(&key));
                }
                self.remove(kind, &key);
            }
            SourceEvent::Synced(kind) => {
                if let Some(seen) = self.relist.remove(&kind) {
                    for key in self.keys_of(kind) {
                        if !seen.contains(&self.relist_hasher.hash_one(&key)) {
                            self.remove(kind, &key);
                        }
                    }
                    // A re-list that moved many addresses leaves the PTR
                    // tables full of tombstones, or doubled by them: rehash
                    // to size (the old table goes back to the system).
                    self.index.shared.reverse_v4.shrink_to_fit();
                    self.index.shared.reverse_v6.shrink_to_fit();
                    self.index.shared.reverse_many.shrink_to_fit();
                    self.index.shared.views.shrink_to_fit();
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
            Kind::Service => self
                .services
                .iter()
                .filter(|(_, e)| e.record.is_some())
                .map(|(k, _)| k.clone())
                .collect(),
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

    fn service_of_slice(key: &ObjectKey, s: &StoredSlice) -> ObjectKey {
        ObjectKey::new(key.namespace(), s.service())
    }

    /// The entry of service `key`, made if missing.
    fn entry(&mut self, key: &ObjectKey) -> &mut ServiceEntry {
        self.services.entry(key.clone()).or_default()
    }

    /// Applies `f` to the entry of service `key` if there is one, and drops
    /// the entry once nothing is left in it.
    fn with_entry(&mut self, key: &ObjectKey, f: impl FnOnce(&mut ServiceEntry)) {
        if let Some(e) = self.services.get_mut(key) {
            f(e);
            if e.record.is_none() && e.slices.is_empty() && e.statefulsets.is_empty() {
                self.services.remove(key);
            }
        }
    }

    /// The shared copy of a port list.
    fn intern_ports(&mut self, ports: &[PortRecord]) -> Arc<[PortRecord]> {
        if let Some(list) = self.port_lists.get(ports) {
            return Arc::clone(list);
        }
        let list: Arc<[PortRecord]> = ports.into();
        self.port_lists.insert(Arc::clone(&list));
        list
    }

    fn upsert(&mut self, obj: Object) {
        match obj {
            Object::Service(mut r) => {
                r.ports = self.intern_ports(&r.ports);
                let entry = self.entry(&r.key);
                if entry.record.as_deref() == Some(&r) {
                    return;
                }
                let key = r.key.clone();
                if entry.record.replace(Arc::new(r)).is_none() {
                    self.ns_ref(key.namespace(), 1);
                }
                self.touched_services.insert(key);
            }
            Object::EndpointSlice(r) => {
                let ports = self.intern_ports(&r.ports);
                let stored = StoredSlice::new(&r, ports);
                if self.slices.get(&r.key) == Some(&stored) {
                    return;
                }
                let svc = Self::service_of_slice(&r.key, &stored);
                self.entry(&svc).slices.insert(r.key.name());
                self.touched_services.insert(svc.clone());
                if let Some(old) = self.slices.insert(r.key.clone(), stored) {
                    let old_svc = Self::service_of_slice(&r.key, &old);
                    if old_svc != svc {
                        self.unlink_slice(&old_svc, r.key.name());
                    }
                }
            }
            Object::Namespace(r) => {
                if self.namespaces.insert(r.key.name().to_string()) {
                    self.ns_ref(r.key.name(), 1);
                }
            }
            Object::StatefulSet(r) => {
                let g = Governed {
                    service: r.service_name.into(),
                    replicas: r.replicas,
                };
                if self.statefulsets.get(&r.key) == Some(&g) {
                    return;
                }
                let gov = ObjectKey::new(r.key.namespace(), &g.service);
                self.touched_services.insert(gov.clone());
                self.entry(&gov).statefulsets.insert(r.key.name());
                if let Some(old) = self.statefulsets.insert(r.key.clone(), g) {
                    self.unlink_sts(&r.key, &old);
                }
            }
            Object::Pod(r) => {
                if self.pods.get(&r.key) == Some(&r) {
                    return;
                }
                let new_ips = Self::pod_ips_of(&r);
                self.link_pod_ips(r.key.namespace(), &new_ips, 1);
                if let Some(old) = self.pods.insert(r.key.clone(), r) {
                    self.link_pod_ips(old.key.namespace(), &Self::pod_ips_of(&old), -1);
                }
            }
        }
    }

    fn remove(&mut self, kind: Kind, key: &ObjectKey) {
        match kind {
            Kind::Service => {
                let mut removed = false;
                self.with_entry(key, |e| removed = e.record.take().is_some());
                if removed {
                    self.ns_ref(key.namespace(), -1);
                    self.touched_services.insert(key.clone());
                }
            }
            Kind::EndpointSlice => {
                if let Some(old) = self.slices.remove(key) {
                    self.unlink_slice(&Self::service_of_slice(key, &old), key.name());
                }
            }
            Kind::Namespace => {
                if self.namespaces.remove(key.name()) {
                    self.ns_ref(key.name(), -1);
                }
            }
            Kind::StatefulSet => {
                if let Some(old) = self.statefulsets.remove(key) {
                    self.unlink_sts(key, &old);
                }
            }
            Kind::Pod => {
                if let Some(old) = self.pods.remove(key) {
                    self.link_pod_ips(old.key.namespace(), &Self::pod_ips_of(&old), -1);
                }
            }
        }
    }

    /// Drops `old`'s link to its governing service unless the current record
    /// of the same StatefulSet still points there.
    fn unlink_sts(&mut self, key: &ObjectKey, old: &Governed) {
        let gov = ObjectKey::new(key.namespace(), &old.service);
        self.touched_services.insert(gov.clone());
        let still = self
            .statefulsets
            .get(key)
            .is_some_and(|cur| cur.service == old.service);
        if !still {
            self.with_entry(&gov, |e| e.statefulsets.remove(key.name()));
        }
    }

    fn unlink_slice(&mut self, svc: &ObjectKey, slice: &str) {
        self.with_entry(svc, |e| e.slices.remove(slice));
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
        let now = now_ms();
        if let Some(o) = self.observer.as_mut() {
            o.begin();
        }
        for key in std::mem::take(&mut self.touched_services) {
            self.changed = true;
            let map_key = service_key(key.namespace(), key.name());
            let old = shared
                .services
                .get(&*map_key)
                .map(|v| Arc::clone(v.value()));
            let id = match &old {
                Some(v) => v.id,
                None => self.free_ids.pop().unwrap_or_else(|| {
                    self.next_id += 1;
                    self.next_id - 1
                }),
            };
            let new = self.build_view(&key, id, old.as_deref(), now).map(Arc::new);
            let count = |v: &Option<Arc<ServiceView>>| {
                v.as_ref().map_or((0, 0), |v| {
                    (v.endpoint_count() as u64, v.name_count() as u64)
                })
            };
            let ((old_eps, old_names), (new_eps, new_names)) = (count(&old), count(&new));
            self.endpoint_count = self.endpoint_count + new_eps - old_eps;
            self.name_count = self.name_count + new_names - old_names;
            if let Some(o) = self.observer.as_mut() {
                o.service(old.as_ref(), new.as_ref());
            }
            match &new {
                Some(v) => {
                    shared.services.insert(map_key, Arc::clone(v));
                    shared.views.insert(id, Arc::clone(v));
                    self.repoint_reverse(old.as_ref(), new.as_ref());
                }
                None => {
                    shared.services.remove(&*map_key);
                    self.repoint_reverse(old.as_ref(), None);
                    shared.views.remove(&id);
                    self.free_ids.push(id);
                }
            }
        }
        if self.port_lists.len() > self.port_sweep_at {
            self.port_lists.retain(|l| Arc::strong_count(l) > 1);
            self.port_sweep_at = (self.port_lists.len() * 2).max(64);
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
        let published = std::mem::take(&mut self.changed) || newly_synced;
        if published {
            let prev = shared.serial.load(Ordering::Relaxed);
            shared
                .serial
                .store(serial::next(prev, (now / 1000) as u32), Ordering::Relaxed);
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
        }
        if let Some(o) = self.observer.as_mut() {
            o.end(shared.serial.load(Ordering::Relaxed));
        }
        if published {
            shared.generation.send_modify(|g| *g += 1);
        }
    }

    /// Points the PTR sets of a service's addresses at its new view:
    /// addresses only the old view had lose its names, every address of the
    /// new view gets them (each entry is replaced in one step, so a reader
    /// never sees an address that both views have without its names).
    fn repoint_reverse(&self, old: Option<&Arc<ServiceView>>, new: Option<&Arc<ServiceView>>) {
        let shared = &self.index.shared;
        let zone = &shared.settings.zone;
        // This service's targets, in either view: the same number.
        let this = old.or(new).map(|v| v.id);
        let others = |cur: Vec<PtrTarget>| -> Vec<PtrTarget> {
            cur.into_iter()
                .filter(|t| Some(t.view.id) != this)
                .collect()
        };
        let old_ptrs = old.map(|v| v.ptrs()).unwrap_or_default();
        let new_ptrs = new.map(|v| v.ptrs()).unwrap_or_default();
        // Addresses only the old view had go first: the table slots they free
        // are then reused by the new addresses (inserting first leaves
        // tombstones that, over a re-list with every address changed, made
        // the tables double).
        for group in old_ptrs.chunk_by(|a, b| a.0 == b.0) {
            let ip = group[0].0;
            if new_ptrs.binary_search_by(|(i, _)| i.cmp(&ip)).is_ok() {
                continue;
            }
            shared.update_ptr(ip, zone, others);
        }
        if let Some(view) = new {
            for group in new_ptrs.chunk_by(|a, b| a.0 == b.0) {
                shared.update_ptr(group[0].0, zone, |cur| {
                    let mut all = others(cur);
                    all.extend(group.iter().map(|(_, e)| PtrTarget {
                        view: Arc::clone(view),
                        endpoint: *e,
                    }));
                    all
                });
            }
        }
    }

    fn build_view(
        &self,
        key: &ObjectKey,
        id: u32,
        old: Option<&ServiceView>,
        now: u64,
    ) -> Option<ServiceView> {
        let entry = self.services.get(key)?;
        let record = Arc::clone(entry.record.as_ref()?);
        let slices: Vec<&StoredSlice> = entry
            .slices
            .iter()
            .filter_map(|name| self.slices.get(&ObjectKey::new(key.namespace(), name)))
            .collect();
        let statefulsets = entry
            .statefulsets
            .iter()
            .filter_map(|name| {
                let g = self
                    .statefulsets
                    .get(&ObjectKey::new(key.namespace(), name))?;
                Some((name.into(), g.replicas))
            })
            .collect();
        Some(view::build(view::Inputs {
            settings: &self.index.shared.settings,
            record,
            slices,
            statefulsets,
            id,
            old,
            now,
        }))
    }
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
