//! The ordinal-name index: one writer applies source events, many readers answer.
//!
//! Sources speak [`SourceEvent`], which mirrors kube-runtime's watcher contract:
//! `Reset(kind)` starts a re-list, `Upsert`s fill it, `Synced(kind)` ends it
//! (whatever was not re-listed is gone); `ResetIn`/`SyncedIn` do the same
//! for one namespace (a namespaced watch, one per namespace and kind). Deletions wait for that end, so a
//! re-list cut short by a lost API connection never blanks a live name.
//! Unlike kube-runtime's store, upserts are applied as they arrive rather than
//! buffered for one swap: each is newer truth from the API, answers never
//! depend on two objects of one kind at once, and a buffered second copy of
//! the cluster would be the largest thing in memory during a re-list.
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
mod lists;
pub mod observe;
mod published;
pub mod record;
pub mod serial;
pub mod stored;
mod strings;
mod view;
mod writer;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use addrs::AddrRecords;
use published::Shared;
pub use record::{
    EndpointRecord, NamespaceRecord, ObjectKey, Ordinal, PodManagement, PodRecord, PortRecord,
    ServiceKind, ServiceRecord, SliceRecord, StatefulSetRecord,
};
pub use view::{
    EndpointView, Governed, PtrRecords, PtrSet, PtrTarget, SERVICE_ITSELF, ServiceAddrs,
    ServiceView, Srv, SrvSection,
};
pub use writer::IndexWriter;

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
    /// A (re-)list of this kind starts; objects keep answering meanwhile.
    Reset(Kind),
    /// An object was added or changed (applied at once, even during a re-list).
    Upsert(Object),
    /// An object was deleted.
    Remove(Kind, ObjectKey),
    /// The (re-)list of this kind is complete: what it did not list is removed.
    Synced(Kind),
    /// A (re-)list of this kind in one namespace starts: a namespaced watch's
    /// `Reset`, which leaves the other namespaces' objects alone.
    ResetIn(Kind, Arc<str>),
    /// The (re-)list of this kind in this namespace is complete: what it did
    /// not list *in that namespace* is removed.
    SyncedIn(Kind, Arc<str>),
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
    /// Lists started per kind after its first (`Reset` events but the first):
    /// retries of a failed list, re-lists after 410 Gone.
    pub relists: [AtomicU64; 5],
    /// Unix ms of each kind's last completed (re-)list; 0 = never.
    pub last_sync_ms: [AtomicU64; 5],
    /// Time to apply and publish one batch: bucket counts (bounds in
    /// [`crate::histogram::BUCKETS_US`], last = +Inf).
    pub publish_buckets: [AtomicU64; crate::histogram::BUCKETS],
    /// Sum of batch apply+publish durations, nanoseconds.
    pub publish_ns: AtomicU64,
    /// Time from a batch's events entering the writer's queue to their
    /// answers being published (buckets as `publish_buckets`); see
    /// `sources::run_writer`.
    pub answer_buckets: [AtomicU64; crate::histogram::BUCKETS],
    /// Sum of those times, nanoseconds.
    pub answer_ns: AtomicU64,
    /// Failed list or watch requests of the Kubernetes source, by kind.
    pub source_errors: [AtomicU64; 5],
    /// Manifest files read after a change, by result (see
    /// [`MANIFEST_READ_RESULTS`]).
    pub manifest_reads: [AtomicU64; 3],
}

/// The `result` label values of [`IndexStats::manifest_reads`]: applied,
/// broken (its last good content keeps serving), could not be read.
pub const MANIFEST_READ_RESULTS: [&str; 3] = ["loaded", "invalid", "unreadable"];

/// The `type` label values of [`IndexStats::events_by`].
pub const EVENT_TYPES: [&str; 4] = ["reset", "upsert", "remove", "synced"];

impl Kind {
    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The read side: cheap to clone, never waits for the writer beyond one
/// DashMap shard's pointer swap.
#[derive(Clone)]
pub struct Index {
    shared: Arc<Shared>,
}

/// The map key of a service: wire labels `<svc><ns>`.
pub fn service_key(namespace: &str, name: &str) -> Box<[u8]> {
    let mut k = Vec::with_capacity(namespace.len() + name.len() + 2);
    crate::wire::name::push_label(&mut k, name);
    crate::wire::name::push_label(&mut k, namespace);
    k.into()
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

    /// True when some address with a name lies below the partial reverse
    /// name `prefix` (as `reverse_prefixes` numbers them: 1..=3 IPv4 octets,
    /// 101..=131 IPv6 nibbles, with the leading digits' value).
    pub fn has_reverse_below(&self, prefix: (u8, u128)) -> bool {
        self.shared.has_reverse_below(prefix)
    }

    /// True when a running pod in namespace `ns_label` (wire label) has `ip`.
    pub fn has_pod_ip(&self, ip: &IpAddr, ns_label: &[u8]) -> bool {
        self.shared
            .pod_ips
            .get(ip)
            .is_some_and(|nss| nss.iter().any(|n| &**n == ns_label))
    }

    /// Whether every running pod with `ip` is in namespace `ns_label` (wire
    /// label); `None` when no running pod has it (Pods are watched only with
    /// `pods = "verified"`).
    pub fn pod_ip_only_in(&self, ip: &IpAddr, ns_label: &[u8]) -> Option<bool> {
        self.shared
            .pod_ips
            .get(ip)
            .map(|nss| nss.iter().all(|n| &**n == ns_label))
    }

    /// The SOA serial: Unix time of the last change, strictly increasing
    /// (see [`serial`]).
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

    /// The names of the namespaces that exist (a Namespace object, or a
    /// service in it), sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .namespaces
            .iter()
            .filter_map(|e| {
                let label = e.key().get(1..)?;
                Some(String::from_utf8_lossy(label).into_owned())
            })
            .collect();
        v.sort();
        v
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

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
