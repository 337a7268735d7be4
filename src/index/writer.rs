//! The single writer: applies source events to its own copy of every object,
//! then publishes the services they touched as new views (see the module docs
//! of [`super`] for the re-list contract).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::lists::{Lists, Scope};
use super::published::{Map, Shared};
use super::stored::StoredSlice;
use super::view::{self, PtrTarget, ServiceView};
use super::{
    Governed, Index, IndexStats, Kind, Object, ObjectKey, PodManagement, PodRecord, PortRecord,
    ServiceRecord, SourceEvent, ZoneSettings, service_key,
};
use crate::histogram;
use crate::wire::name::push_label;

/// What the writer knows under one service name: the Service itself (once
/// it exists) and the names of the slices and StatefulSets that point at it.
#[derive(Debug, Default)]
struct ServiceEntry {
    record: Option<Arc<ServiceRecord>>,
    /// Slice names (almost always one).
    slices: Names,
    /// Names of the StatefulSets it governs.
    statefulsets: Names,
}

/// A sorted set of object names in one string, `\n`-separated: almost
/// always one name, so one heap block where a `Vec` of boxed names takes two.
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
/// `spec.serviceName`), its replicas and policy.
#[derive(Debug, PartialEq, Eq)]
struct StatefulSetEntry {
    service: Box<str>,
    replicas: u32,
    policy: PodManagement,
}

/// The single writer. Not `Clone`: exactly one task owns it.
pub struct IndexWriter {
    index: Index,
    /// The (re-)lists started, running and completed.
    lists: Lists,
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
    statefulsets: HashMap<ObjectKey, StatefulSetEntry>,
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
    /// When the batch being applied reached the writer (Unix µs), for the
    /// observers' event-to-answer latency.
    arrived_us: Option<u64>,
    /// Told about every publication (zone transfers' journal, the record
    /// browser's history), in the order installed.
    observers: Vec<Box<dyn super::observe::PublishObserver>>,
}

impl IndexWriter {
    /// A new, empty index that becomes ready once every kind in `expected`
    /// has been `Synced` once.
    pub fn new(settings: ZoneSettings, expected: &[Kind]) -> Self {
        let (generation, _) = tokio::sync::watch::channel(0);
        let shared = Shared {
            settings,
            services: Map::default(),
            namespaces: Map::default(),
            views: Map::default(),
            reverse_v4: Map::default(),
            reverse_v6: Map::default(),
            reverse_many: Map::default(),
            prefixes_v4: Map::default(),
            prefixes_v6: Map::default(),
            pod_ips: Map::default(),
            serial: AtomicU32::new(super::serial::initial(
                crate::clock::unix_ms().div_euclid(1000) as u32,
            )),
            synced: AtomicBool::new(expected.is_empty()),
            generation,
            stats: IndexStats::default(),
        };
        Self {
            index: Index {
                shared: Arc::new(shared),
            },
            lists: Lists::new(expected),
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
            arrived_us: None,
            observers: Vec::new(),
        }
    }

    /// Adds `observer` for every later publication (see
    /// [`super::observe::PublishObserver`]); the serial rises to its floor.
    pub fn observe(&mut self, observer: Box<dyn super::observe::PublishObserver>) {
        let floor = observer.serial_floor();
        self.index.shared.serial.fetch_max(floor, Ordering::Relaxed);
        self.observers.push(observer);
    }

    /// With namespaced watches (`--namespaces`): an expected kind also counts
    /// as synced once it has been `SyncedIn` every one of `namespaces`.
    pub fn expect_namespaces(&mut self, namespaces: &[String]) {
        self.lists.expect_namespaces(namespaces);
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
            SourceEvent::Reset(k) | SourceEvent::ResetIn(k, _) => (*k, 0),
            SourceEvent::Upsert(o) => (o.kind(), 1),
            SourceEvent::Remove(k, _) => (*k, 2),
            SourceEvent::Synced(k) | SourceEvent::SyncedIn(k, _) => (*k, 3),
        };
        stats.events_by[kind.index()][t].fetch_add(1, Ordering::Relaxed);
        if t == 3 {
            stats.last_sync_ms[kind.index()].store(crate::clock::unix_ms(), Ordering::Relaxed);
        }
        match event {
            SourceEvent::Reset(kind) => self.reset((kind, None)),
            SourceEvent::ResetIn(kind, ns) => self.reset((kind, Some(ns))),
            SourceEvent::Upsert(obj) => {
                let hash = self.relist_hasher.hash_one(obj.key());
                self.lists.note(obj.kind(), obj.key(), hash, true);
                self.upsert(obj);
            }
            SourceEvent::Remove(kind, key) => {
                let hash = self.relist_hasher.hash_one(&key);
                self.lists.note(kind, &key, hash, false);
                self.remove(kind, &key);
            }
            SourceEvent::Synced(kind) => self.synced((kind, None)),
            SourceEvent::SyncedIn(kind, ns) => self.synced((kind, Some(ns))),
        }
    }

    /// A (re-)list of `scope` starts (a new one replaces one in progress).
    fn reset(&mut self, scope: Scope) {
        let kind = scope.0;
        if self.lists.start(scope) {
            self.index.shared.stats.relists[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The (re-)list of `scope` is complete: what it did not see goes.
    fn synced(&mut self, scope: Scope) {
        if let Some(done) = self.lists.finish(scope.clone()) {
            for key in self.keys_of(scope.0) {
                if done.covers(scope.0, &key)
                    && !done.seen.contains(&self.relist_hasher.hash_one(&key))
                {
                    self.remove(scope.0, &key);
                }
            }
            // A re-list that moved many addresses leaves the PTR tables full
            // of tombstones, or doubled by them: rehash to size (the old
            // table goes back to the system).
            let shared = &self.index.shared;
            shared.reverse_v4.shrink_to_fit();
            shared.reverse_v6.shrink_to_fit();
            shared.reverse_many.shrink_to_fit();
            shared.prefixes_v4.shrink_to_fit();
            shared.prefixes_v6.shrink_to_fit();
            shared.views.shrink_to_fit();
        }
    }

    /// Applies many events and publishes once.
    pub fn apply_all(&mut self, events: impl IntoIterator<Item = SourceEvent>) {
        let started = std::time::Instant::now();
        self.arrived_us = Some(crate::clock::unix_us());
        for e in events {
            self.apply(e);
        }
        self.publish();
        let stats = &self.index.shared.stats;
        histogram::observe(&stats.publish_buckets, &stats.publish_ns, started.elapsed());
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
                let g = StatefulSetEntry {
                    service: r.service_name.into(),
                    replicas: r.replicas,
                    policy: r.pod_management,
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
    fn unlink_sts(&mut self, key: &ObjectKey, old: &StatefulSetEntry) {
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
        let now = crate::clock::unix_ms();
        let arrived = self.arrived_us.take().unwrap_or_else(crate::clock::unix_us);
        for o in &mut self.observers {
            o.begin(arrived);
        }
        for key in std::mem::take(&mut self.touched_services) {
            self.changed = true;
            self.publish_service(&key, now);
        }
        if self.port_lists.len() > self.port_sweep_at {
            self.port_lists.retain(|l| Arc::strong_count(l) > 1);
            self.port_sweep_at = (self.port_lists.len() * 2).max(64);
        }
        let shared = Arc::clone(&self.index.shared);
        for ns in std::mem::take(&mut self.touched_namespaces) {
            self.changed = true;
            let mut label = Vec::new();
            push_label(&mut label, &ns);
            let exists = self.ns_refs.contains_key(&ns);
            let existed = if exists {
                shared.namespaces.insert(label.into(), ()).is_some()
            } else {
                shared.namespaces.remove(&*label).is_some()
            };
            if exists != existed {
                for o in &mut self.observers {
                    o.namespace(&ns, exists);
                }
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
        self.announce(now);
    }

    /// Rebuilds the view of service `key` (or drops it when the service is
    /// gone) and repoints its addresses' names.
    fn publish_service(&mut self, key: &ObjectKey, now: u64) {
        let shared = Arc::clone(&self.index.shared);
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
        let new = self.build_view(key, id, old.as_deref(), now).map(Arc::new);
        let count = |v: &Option<Arc<ServiceView>>| {
            v.as_ref().map_or((0, 0), |v| {
                (v.endpoint_count() as u64, v.name_count() as u64)
            })
        };
        let ((old_eps, old_names), (new_eps, new_names)) = (count(&old), count(&new));
        self.endpoint_count = self.endpoint_count + new_eps - old_eps;
        self.name_count = self.name_count + new_names - old_names;
        for o in &mut self.observers {
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

    /// After a publication: marks the index synced once every expected kind
    /// has synced, and when anything changed bumps the serial (the Unix time,
    /// always increasing: see `serial`), the counters and the generation
    /// readers watch. The observer hears of the serial before the generation.
    fn announce(&mut self, now: u64) {
        let shared = &self.index.shared;
        let newly_synced = !shared.synced.load(Ordering::Relaxed) && self.lists.all_synced();
        if newly_synced {
            shared.synced.store(true, Ordering::Release);
        }
        let published = std::mem::take(&mut self.changed) || newly_synced;
        if published {
            let prev = shared.serial.load(Ordering::Relaxed);
            let serial = super::serial::next(prev, (now / 1000) as u32);
            shared.serial.store(serial, Ordering::Relaxed);
            let stats = &shared.stats;
            stats
                .services
                .store(shared.services.len() as u64, Ordering::Relaxed);
            stats
                .endpoints
                .store(self.endpoint_count, Ordering::Relaxed);
            stats.names.store(self.name_count, Ordering::Relaxed);
            stats.publishes.fetch_add(1, Ordering::Relaxed);
        }
        let serial = shared.serial.load(Ordering::Relaxed);
        for o in &mut self.observers {
            o.end(serial);
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
                Some(Governed {
                    name: name.into(),
                    replicas: g.replicas,
                    policy: g.policy,
                })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_sets_stay_sorted_and_unique() {
        let mut n = Names::default();
        assert!(n.is_empty());
        for name in ["web-b", "web-a", "web-c", "web-a"] {
            n.insert(name);
        }
        assert_eq!(n.iter().collect::<Vec<_>>(), ["web-a", "web-b", "web-c"]);
        n.remove("web-b");
        n.remove("absent");
        assert_eq!(n.iter().collect::<Vec<_>>(), ["web-a", "web-c"]);
        n.remove("web-a");
        n.remove("web-c");
        assert!(n.is_empty());
    }
}
