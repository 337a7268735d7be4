//! A StatefulSet controller simulator, so the demo shows pods move without a cluster.
//!
//! For each StatefulSet in the manifests that has no Pods or EndpointSlices of
//! its own, it behaves like the controller (see the seed articles): pods
//! `<name>-0 … <name>-(N-1)` with hostname = pod name and subdomain =
//! `spec.serviceName`; `OrderedReady` creates one pod at a time, each ready
//! after a delay before the next starts, and scales down from the highest
//! ordinal one pod at a time; `Parallel` does both at once. A deleted pod
//! comes back under the same name with a new IP, only after the old one is
//! gone (at most one). It produces Pods and one EndpointSlice per StatefulSet,
//! exactly what a cluster's controllers would write, so the index cannot tell.
//!
//! It is driven through [`SimHandle`] (the admin API and the `sim` CLI).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use super::ObjectMap;
use crate::config::parse_cidr;
use crate::index::{
    EndpointRecord, Kind, Object, ObjectKey, PodManagement, PodRecord, PortRecord, SliceRecord,
    StatefulSetRecord,
};

/// A request to the simulator.
#[derive(Debug, Clone)]
pub enum SimCommand {
    /// Set a StatefulSet's replicas.
    Scale {
        /// Namespace and name of the StatefulSet.
        key: ObjectKey,
        /// New replica count.
        replicas: u32,
    },
    /// Delete a pod; the controller recreates it with a new IP.
    DeletePod {
        /// Namespace and name of the pod.
        key: ObjectKey,
    },
    /// Force a pod's readiness.
    SetReady {
        /// Namespace and name of the pod.
        key: ObjectKey,
        /// Ready or not.
        ready: bool,
    },
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No simulated object of that name.
    #[error("{0}")]
    NotFound(String),
    /// The request asks for something the simulator cannot hold; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// The simulator is not running.
    #[error("the simulator is not running")]
    Stopped,
}

/// The admin side's handle on the simulator.
#[derive(Clone)]
pub struct SimHandle {
    tx: mpsc::Sender<(SimCommand, oneshot::Sender<Result<String, SimError>>)>,
}

/// The simulator's end of [`SimHandle`].
pub type SimCommands = mpsc::Receiver<(SimCommand, oneshot::Sender<Result<String, SimError>>)>;

/// The simulated cluster, shared so that a configuration reload hands the
/// same pods (names, IPs, readiness) to the new engine instead of booting
/// the StatefulSets again. A std `Mutex`: held for one reconcile or command,
/// never across an `.await`.
pub type SharedSim = std::sync::Arc<std::sync::Mutex<Sim>>;

impl SimHandle {
    /// A handle and the receiver the simulator loop reads.
    pub fn channel() -> (Self, SimCommands) {
        let (tx, rx) = mpsc::channel(64);
        (Self { tx }, rx)
    }

    /// Sends a command and waits for its result.
    pub async fn send(&self, cmd: SimCommand) -> Result<String, SimError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((cmd, reply))
            .await
            .map_err(|_| SimError::Stopped)?;
        rx.await.map_err(|_| SimError::Stopped)?
    }
}

#[derive(Debug)]
struct SimPod {
    ip: Ipv4Addr,
    ready: bool,
    ready_at: Instant,
    forced_not_ready: bool,
}

/// A simulated StatefulSet and its pods by ordinal.
#[derive(Debug)]
struct SimStatefulSet {
    record: StatefulSetRecord,
    manifest_replicas: u32,
    ports: Vec<PortRecord>,
    pods: BTreeMap<u32, SimPod>,
    next_removal: Instant,
}

/// The pod CIDR and where the search for a free address goes on.
struct IpPool {
    /// First address and number of addresses.
    cidr: (u32, u32),
    /// Offset of the address handed out last.
    next: u32,
}

/// The simulator's state.
pub struct Sim {
    ready_delay: Duration,
    pool: IpPool,
    sets: BTreeMap<ObjectKey, SimStatefulSet>,
    /// Pods that found the pod CIDR full at the last reconcile (logged when
    /// it changes, not once per pod and step).
    waiting: usize,
}

impl Sim {
    /// A simulator with no StatefulSets yet.
    pub fn new(ready_delay: Duration, pod_cidr: &str) -> Self {
        let cidr =
            parse_cidr(pod_cidr).unwrap_or((u32::from(Ipv4Addr::new(10, 244, 0, 0)), 1 << 16));
        Self {
            ready_delay,
            pool: IpPool { cidr, next: 0 },
            sets: BTreeMap::new(),
            waiting: 0,
        }
    }

    /// Takes the manifests' StatefulSets: new ones start, removed ones go,
    /// a changed `replicas` in the file wins over an earlier `scale`.
    pub fn sync_manifests(&mut self, manifests: &ObjectMap, now: Instant) {
        let own = OwnPods::of(manifests);
        let mut seen = HashSet::new();
        for obj in manifests.values() {
            let Object::StatefulSet(sts) = obj else {
                continue;
            };
            if own.has(sts) {
                continue;
            }
            seen.insert(sts.key.clone());
            let replicas = self.manifest_replicas(sts);
            let ports = manifests
                .get(&(
                    Kind::Service,
                    ObjectKey::new(sts.key.namespace(), &sts.service_name),
                ))
                .map(|o| match o {
                    Object::Service(s) => s.ports.to_vec(),
                    _ => Vec::new(),
                })
                .unwrap_or_default();
            match self.sets.get_mut(&sts.key) {
                Some(set) => {
                    if set.manifest_replicas != sts.replicas {
                        set.manifest_replicas = sts.replicas;
                        set.record.replicas = replicas;
                    }
                    set.record.service_name = sts.service_name.clone();
                    set.record.pod_management = sts.pod_management;
                    set.ports = ports;
                }
                None => {
                    self.sets.insert(
                        sts.key.clone(),
                        SimStatefulSet {
                            record: StatefulSetRecord {
                                replicas,
                                ..sts.clone()
                            },
                            manifest_replicas: sts.replicas,
                            ports,
                            pods: BTreeMap::new(),
                            next_removal: now,
                        },
                    );
                }
            }
        }
        self.sets.retain(|k, _| seen.contains(k));
    }

    /// The replicas a manifest's StatefulSet is simulated with: its own, or
    /// the pod CIDR's capacity when it asks for more (the bound `scale`
    /// refuses past), with a warning when that count is new. What a
    /// reconcile costs follows from the pods that exist, never from a
    /// `replicas: 2147483647` in a file.
    fn manifest_replicas(&self, sts: &StatefulSetRecord) -> u32 {
        let max = self.pool.capacity();
        if sts.replicas <= max {
            return sts.replicas;
        }
        let known = self.sets.get(&sts.key).map(|s| s.manifest_replicas);
        if known != Some(sts.replicas) {
            warn!(
                statefulset = %sts.key,
                replicas = sts.replicas,
                simulated = max,
                "sim: replicas is more than the pod CIDR holds; simulating {max} \
                 (raise [sim] pod_cidr for more)"
            );
        }
        max
    }

    fn all_ips(&self) -> HashSet<Ipv4Addr> {
        self.sets
            .values()
            .flat_map(|s| s.pods.values().map(|p| p.ip))
            .collect()
    }

    /// Advances every StatefulSet to `now`; true if anything changed.
    pub fn reconcile(&mut self, now: Instant) -> bool {
        let delay = self.ready_delay;
        // Collected once, not per StatefulSet (that was quadratic in the
        // number of pods). A pod removed below keeps its address out of use
        // until the next reconcile: no address is reused in the same step.
        let in_use = self.all_ips();
        let (base, size) = self.pool.cidr;
        let taken = in_use
            .iter()
            .filter(|ip| u32::from(**ip).wrapping_sub(base) < size)
            .count();
        let mut addresses = StepAddresses {
            in_use,
            free: (self.pool.capacity() as usize).saturating_sub(taken),
            full: false,
            waiting: 0,
        };
        let mut changed = false;
        for (key, set) in &mut self.sets {
            changed |= set.mark_ready(now);
            if set.has_excess() {
                changed |= set.scale_down(now, delay);
                continue;
            }
            let (create, wanted) = set.ordinals_to_create(addresses.free);
            addresses.waiting += wanted - create.len();
            for (i, &ord) in create.iter().enumerate() {
                let Some(ip) = addresses.take(&mut self.pool) else {
                    addresses.waiting += create.len() - i;
                    break;
                };
                info!(pod = %format!("{}/{}-{ord}", key.namespace(), key.name()), %ip, "sim: pod created");
                set.pods.insert(ord, SimPod::new(ip, now, delay));
                changed = true;
            }
        }
        self.report_waiting(addresses.waiting);
        changed
    }

    /// Logs when the number of pods waiting for an address changes.
    fn report_waiting(&mut self, waiting: usize) {
        if waiting == self.waiting {
            return;
        }
        if waiting > 0 {
            warn!(
                waiting,
                "sim: the pod CIDR is full; pods wait for an address (raise [sim] pod_cidr)"
            );
        } else {
            info!("sim: every waiting pod has an address");
        }
        self.waiting = waiting;
    }

    /// When `reconcile` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for set in self.sets.values() {
            for pod in set.pods.values() {
                if !pod.ready && !pod.forced_not_ready {
                    consider(pod.ready_at);
                }
            }
            if set.has_excess() {
                consider(set.next_removal);
            }
        }
        next
    }

    /// Carries out a command.
    pub fn command(&mut self, cmd: SimCommand, now: Instant) -> Result<String, SimError> {
        match cmd {
            SimCommand::Scale { key, replicas } => {
                let max = self.pool.capacity();
                let set = self
                    .sets
                    .get_mut(&key)
                    .ok_or_else(|| SimError::NotFound(format!("no simulated StatefulSet {key}")))?;
                // A count past what the pod CIDR can address would only queue
                // pods (and, Parallel, allocate them all at once): refuse it.
                if replicas > max {
                    return Err(SimError::Invalid(format!(
                        "replicas {replicas} is more than the pod CIDR holds ({max} addresses); \
                         nothing changed"
                    )));
                }
                let from = set.record.replicas;
                set.record.replicas = replicas;
                info!(statefulset = %key, from, to = replicas, "sim: scaled");
                Ok(format!(
                    "statefulset {key} scaled from {from} to {replicas}"
                ))
            }
            SimCommand::DeletePod { key } => {
                let (set, ord) = self.pod_mut(&key)?;
                let old = set.pods.remove(&ord).map(|p| p.ip);
                set.next_removal = now;
                info!(pod = %key, ip = ?old, "sim: pod deleted");
                Ok(format!(
                    "pod {key} deleted; it will be recreated with a new IP"
                ))
            }
            SimCommand::SetReady { key, ready } => {
                let delay = self.ready_delay;
                let (set, ord) = self.pod_mut(&key)?;
                let pod = set.pods.get_mut(&ord).expect("pod_mut checked it exists");
                pod.forced_not_ready = !ready;
                pod.ready = ready;
                if ready {
                    pod.ready_at = now.min(pod.ready_at);
                } else {
                    pod.ready_at = now + delay;
                }
                info!(pod = %key, ready, "sim: readiness set");
                Ok(format!("pod {key} ready={ready}"))
            }
        }
    }

    fn pod_mut(&mut self, key: &ObjectKey) -> Result<(&mut SimStatefulSet, u32), SimError> {
        let not_found = || SimError::NotFound(format!("no simulated pod {key}"));
        let (base, ord) = key.name().rsplit_once('-').ok_or_else(not_found)?;
        let ord: u32 = ord.parse().map_err(|_| not_found())?;
        let set = self
            .sets
            .get_mut(&ObjectKey::new(key.namespace(), base))
            .filter(|s| s.pods.contains_key(&ord))
            .ok_or_else(not_found)?;
        Ok((set, ord))
    }

    /// The objects the simulated controllers would have written: each
    /// StatefulSet (with its current replicas), its Pods and one EndpointSlice.
    pub fn objects(&self) -> Vec<Object> {
        let mut out = Vec::new();
        for (key, set) in &self.sets {
            out.push(Object::StatefulSet(set.record.clone()));
            let mut endpoints = Vec::with_capacity(set.pods.len());
            for (ord, pod) in &set.pods {
                let name = format!("{}-{ord}", key.name());
                out.push(Object::Pod(PodRecord {
                    key: ObjectKey::new(key.namespace(), &name),
                    ips: vec![IpAddr::V4(pod.ip)],
                    hostname: Some(name.clone()),
                    subdomain: Some(set.record.service_name.clone()),
                    ready: pod.ready,
                    terminating: false,
                }));
                endpoints.push(EndpointRecord {
                    hostname: Some(name.clone()),
                    addresses: vec![IpAddr::V4(pod.ip)],
                    ready: pod.ready,
                    serving: pod.ready,
                    terminating: false,
                    pod: Some(name),
                });
            }
            out.push(Object::EndpointSlice(SliceRecord {
                key: ObjectKey::new(key.namespace(), &format!("{}-sim", key.name())),
                service: set.record.service_name.clone(),
                ports: set.ports.clone(),
                endpoints,
            }));
        }
        out
    }

    /// Merges the simulated objects over the manifests.
    pub fn overlay(&self, mut map: ObjectMap) -> ObjectMap {
        for o in self.objects() {
            map.insert((o.kind(), o.key().clone()), o);
        }
        map
    }

    /// Runs the simulated controllers on `manifests` in simulated time,
    /// stepping to each deadline until every pod is up (bounded), and
    /// returns the manifests with the simulated objects over them.
    pub fn run_to_completion(mut self, manifests: ObjectMap) -> ObjectMap {
        let mut now = Instant::now();
        self.sync_manifests(&manifests, now);
        for _ in 0..100_000 {
            self.reconcile(now);
            match self.next_deadline() {
                Some(t) => now = t.max(now),
                None => break,
            }
        }
        self.overlay(manifests)
    }
}

impl SimPod {
    /// A new pod at `ip`, ready after `delay` (at once if it is zero).
    fn new(ip: Ipv4Addr, now: Instant, delay: Duration) -> Self {
        SimPod {
            ip,
            ready: delay.is_zero(),
            ready_at: now + delay,
            forced_not_ready: false,
        }
    }
}

impl SimStatefulSet {
    /// Marks the pods whose ready delay has passed ready; true if any was.
    fn mark_ready(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for pod in self.pods.values_mut() {
            if !pod.ready && !pod.forced_not_ready && now >= pod.ready_at {
                pod.ready = true;
                changed = true;
            }
        }
        changed
    }

    fn is_parallel(&self) -> bool {
        self.record.pod_management == PodManagement::Parallel
    }

    /// Whether pods at or above `replicas` remain (a scale-down in progress).
    fn has_excess(&self) -> bool {
        self.pods.keys().any(|o| *o >= self.record.replicas)
    }

    /// Removes pods above `replicas`: all at once for `Parallel`, else the
    /// highest ordinal, one pod per `delay`. True if a pod went.
    fn scale_down(&mut self, now: Instant, delay: Duration) -> bool {
        let desired = self.record.replicas;
        if self.is_parallel() {
            self.pods.retain(|o, _| *o < desired);
            return true;
        }
        if now < self.next_removal {
            return false;
        }
        let highest = *self
            .pods
            .keys()
            .next_back()
            .expect("has_excess: a pod exists");
        self.pods.remove(&highest);
        self.next_removal = now + delay;
        true
    }

    /// The missing ordinals to create now, the lowest first and at most
    /// `limit` of them (the free pod addresses), and how many are due in
    /// all: every missing one for `Parallel`, else the lowest one, and only
    /// once every pod below it is ready. O(pods + limit), never O(replicas).
    fn ordinals_to_create(&self, limit: usize) -> (Vec<u32>, usize) {
        let replicas = self.record.replicas;
        if !self.is_parallel() {
            // The pods in order from 0: the first gap is next, if all
            // before it are ready.
            let mut next = 0;
            for (&ord, pod) in self.pods.range(..replicas) {
                if ord != next {
                    break;
                }
                if !pod.ready {
                    return (Vec::new(), 0);
                }
                next += 1;
            }
            if next == replicas {
                return (Vec::new(), 0);
            }
            let create = if limit > 0 { vec![next] } else { Vec::new() };
            return (create, 1);
        }
        let existing = self.pods.range(..replicas).count();
        let missing = (replicas as usize).saturating_sub(existing);
        let mut create = Vec::with_capacity(missing.min(limit));
        let mut pods = self.pods.range(..replicas).map(|(o, _)| *o).peekable();
        let mut ord = 0;
        while ord < replicas && create.len() < limit.min(missing) {
            if pods.next_if_eq(&ord).is_none() {
                create.push(ord);
            }
            ord += 1;
        }
        (create, missing)
    }
}

impl IpPool {
    /// How many pod addresses the CIDR holds (network and last address excluded).
    fn capacity(&self) -> u32 {
        self.cidr.1.saturating_sub(2)
    }

    /// The next free address of the pod CIDR, or `None` if every one is in
    /// use (the pod then waits, as a real pod waits for an address).
    fn allocate(&mut self, in_use: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let (base, size) = self.cidr;
        // Skip the network address (0) and the broadcast-like last one.
        for _ in 0..size - 2 {
            self.next = (self.next % (size - 2)) + 1;
            let ip = Ipv4Addr::from(base + self.next);
            if !in_use.contains(&ip) {
                return Some(ip);
            }
        }
        None
    }
}

/// The addresses of one reconcile step.
struct StepAddresses {
    in_use: HashSet<Ipv4Addr>,
    /// Addresses of the pod CIDR not in use (an upper bound on the pods
    /// this step can create).
    free: usize,
    /// Once the CIDR is full it stays full for the rest of the step (freed
    /// addresses are not reused within it): the other pods just wait.
    full: bool,
    /// Pods left without an address in this step.
    waiting: usize,
}

impl StepAddresses {
    /// A free address from `pool`, now in use; `None` once the CIDR is full.
    fn take(&mut self, pool: &mut IpPool) -> Option<Ipv4Addr> {
        if self.full {
            return None;
        }
        let ip = pool.allocate(&self.in_use);
        match ip {
            Some(ip) => {
                self.in_use.insert(ip);
                self.free = self.free.saturating_sub(1);
            }
            None => self.full = true,
        }
        ip
    }
}

/// The StatefulSets that "have their own pods": the manifests already hold
/// a Pod `<name>-<n>` or an EndpointSlice for the governing service. Those
/// are left to the manifests. Collected once per sync (asking each
/// StatefulSet against every object was quadratic in the manifest's size).
struct OwnPods<'a> {
    /// (namespace, `<name>` of a Pod named `<name>-<n>`).
    pods: HashSet<(&'a str, &'a str)>,
    /// (namespace, service of an EndpointSlice).
    slices: HashSet<(&'a str, &'a str)>,
}

impl<'a> OwnPods<'a> {
    fn of(manifests: &'a ObjectMap) -> Self {
        let mut own = OwnPods {
            pods: HashSet::new(),
            slices: HashSet::new(),
        };
        for o in manifests.values() {
            match o {
                Object::Pod(p) => {
                    if let Some((base, n)) = p.key.name().rsplit_once('-')
                        && n.parse::<u32>().is_ok()
                    {
                        own.pods.insert((p.key.namespace(), base));
                    }
                }
                Object::EndpointSlice(s) => {
                    own.slices.insert((s.key.namespace(), &s.service));
                }
                _ => {}
            }
        }
        own
    }

    fn has(&self, sts: &StatefulSetRecord) -> bool {
        let ns = sts.key.namespace();
        self.pods.contains(&(ns, sts.key.name()))
            || self.slices.contains(&(ns, sts.service_name.as_str()))
    }
}

/// Lists the simulated pods: (pod key, ip, ready). For logs and tests.
pub fn pods_of(sim: &Sim) -> HashMap<ObjectKey, (Ipv4Addr, bool)> {
    let mut m = HashMap::new();
    for (key, set) in &sim.sets {
        for (ord, p) in &set.pods {
            m.insert(
                ObjectKey::new(key.namespace(), &format!("{}-{ord}", key.name())),
                (p.ip, p.ready),
            );
        }
    }
    m
}

#[cfg(test)]
mod tests;
