//! NOTIFY (RFC 1996): telling secondaries that a zone changed, so they ask
//! for it at once instead of at their next refresh.
//!
//! The recorder marks changed zones; this task sends a NOTIFY per zone and
//! secondary at once, each sent up to `ATTEMPTS` times with a growing
//! timeout until the secondary answers, then given up (counted as failed).
//! Giving up is what BIND and Knot do too: NOTIFY only hastens a transfer,
//! the secondary's SOA refresh timer is what guarantees one, and a
//! secondary that is gone for good would otherwise be asked forever.
//! Changes that arrive while one is outstanding (sent, not yet answered)
//! share one more NOTIFY, sent as soon as that one is answered or given up,
//! so the secondary hears of the last change too and is never flooded.
//! Signed with `notify_key` when set, and the answer's signature
//! checked.
//!
//! NOTIFYs leave from one socket per source address, bound by this task
//! the first time it is needed and kept (`notify_sockets`: answers are
//! matched by target and message id), not one socket per NOTIFY: a change
//! to the cluster zone NOTIFYs every node-local cache at once, and the
//! server does not raise its descriptor limit (a container's may be
//! 1,024). At most `IN_FLIGHT` NOTIFYs (1,024) are outstanding at once,
//! each a small task; the rest wait their turn in order, and a change to
//! one that waits needs nothing more, as it is sent with the serial of
//! when its turn comes.
//!
//! Followers not in `[transfer] notify` are told too. RFC 1996 §3.6 has a
//! primary notify the servers of the zone's NS set "and any other servers
//! it is configured to"; BIND (`also-notify`, `notify explicit`) and Knot
//! (`notify:` remotes) take the other servers from a static list. A sidecar
//! follower's pod IP changes with every pod, and a node-local cache runs on
//! every node, so no list can name them: the primary learns them instead. A
//! follower of ours checks its zone's serial by IXFR over UDP from one
//! socket it keeps and listens on (`follow`): a namespace's zone always,
//! the cluster zone unless the primary does not answer such checks. Each
//! IXFR over UDP that is accepted, for any of our zones, is remembered here
//! as (address, port, zone, key), for the zone's expire (after which the
//! follower has stopped serving it anyway), at most `notify_followers_max`
//! of them over all zones, the oldest forgotten first. Accepted means what
//! a transfer of that zone needs: the address inside `[transfer] allow`, a
//! good signature (required with `require_tsig`), a key that may transfer
//! the zone (a key confined to namespaces teaches nothing about the cluster
//! zone: it is refused). A change NOTIFYs the zone's remembered followers
//! at that address and port, signed with the key the follower used (RFC
//! 1996 §3.10: a NOTIFY is only a hint; the follower then asks for the
//! serial itself). A remembered follower that refuses a NOTIFY or never
//! answers one is forgotten unless it checked again meanwhile: it has most
//! likely restarted on another port (a DaemonSet rollout leaves one such
//! address per node), and its next check teaches the new one.
//!
//! SOA queries teach nothing: BIND and Knot check with them, from ports
//! they do not listen on (their IXFRs go over TCP), and unsigned ones never
//! leave the query path. BIND and Knot secondaries are the ones listed in
//! `notify`. An unsigned check with a forged source address (from inside
//! `allow`) makes the primary NOTIFY that address, a few small datagrams
//! per change at most; `require_tsig` rules that out.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType, TSigner};
use hickory_proto::serialize::binary::BinDecodable;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

use super::Shared;
use super::notify_sockets::{Pending, Sockets, Ticket};
use super::zones::ZoneId;

/// Sends per NOTIFY, first included.
const ATTEMPTS: u32 = 5;
/// Wait for the first answer; doubled for each retry.
const FIRST_WAIT: Duration = Duration::from_millis(500);

/// Zones waiting for a NOTIFY, and the task's wake-up.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    marked: Mutex<Marked>,
    wake: tokio::sync::Notify,
}

/// What changed since the NOTIFY task last looked.
#[derive(Debug, Default)]
struct Marked {
    /// Fixed zones, by index.
    zones: Vec<bool>,
    /// Namespace zones.
    namespaces: BTreeSet<Arc<str>>,
    /// Every namespace zone (history started over).
    all_namespaces: bool,
}

impl Queue {
    /// Marks the fixed zones set in `changed` (by zone index), the zones of
    /// `namespaces`, and with `all_namespaces` every namespace's zone.
    pub(crate) fn mark(&self, changed: &[bool], namespaces: &BTreeSet<Arc<str>>, all: bool) {
        if !changed.contains(&true) && namespaces.is_empty() && !all {
            return;
        }
        let mut m = self.marked.lock().unwrap_or_else(|p| p.into_inner());
        let len = m.zones.len().max(changed.len());
        m.zones.resize(len, false);
        for (z, c) in m.zones.iter_mut().zip(changed) {
            *z |= *c;
        }
        m.namespaces.extend(namespaces.iter().cloned());
        m.all_namespaces |= all;
        drop(m);
        self.wake.notify_one();
    }

    fn take(&self) -> Marked {
        let mut m = self.marked.lock().unwrap_or_else(|p| p.into_inner());
        let zones = vec![false; m.zones.len()];
        Marked {
            zones: std::mem::replace(&mut m.zones, zones),
            namespaces: std::mem::take(&mut m.namespaces),
            all_namespaces: std::mem::take(&mut m.all_namespaces),
        }
    }
}

/// A follower the primary was not configured with (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Follower {
    /// Where its serial checks came from: its NOTIFY socket.
    pub addr: SocketAddr,
    /// The zone it follows.
    pub zone: ZoneId,
    /// The key it signed with (`None`: unsigned).
    pub key: Option<Name>,
}

impl Default for Followers {
    /// The default bound; kept for the zones' expire (past it a follower
    /// no longer serves the zone).
    fn default() -> Self {
        let expire = u64::from(crate::dns::zonefile::SOA_TIMERS[2]);
        Self::new(
            crate::config::TransferConfig::default().notify_followers_max,
            Duration::from_secs(expire),
        )
    }
}

/// The followers remembered, each with when it last checked; bounded.
#[derive(Debug)]
pub(crate) struct Followers {
    /// `notify_followers_max` of the running configuration.
    max: AtomicUsize,
    /// The zones' expire.
    keep: Duration,
    /// A std `Mutex`: held for a map operation, never across an `.await`.
    seen: Mutex<HashMap<Follower, Instant>>,
}

impl Followers {
    /// At most `max` followers, each kept `keep` after its last check.
    pub(crate) fn new(max: usize, keep: Duration) -> Self {
        Self {
            max: AtomicUsize::new(max),
            keep,
            seen: Mutex::default(),
        }
    }

    /// A new configuration's bound (applied as followers arrive).
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Remembers (or refreshes) `f`; past the bound the oldest go.
    pub(crate) fn seen(&self, f: Follower) {
        let max = self.max.load(Ordering::Relaxed);
        if max == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = seen.insert(f, Instant::now()).is_none();
        while fresh && seen.len() > max {
            // Only when a new follower arrives past the bound: one scan.
            let oldest = seen.iter().min_by_key(|(_, t)| **t).map(|(f, _)| f.clone());
            match oldest {
                Some(oldest) => seen.remove(&oldest),
                None => break,
            };
        }
    }

    /// Forgets the follower of `zone` at `addr` (any key) unless it checked
    /// at or after `since`.
    pub(crate) fn forget(&self, zone: &ZoneId, addr: SocketAddr, since: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|f, t| f.zone != *zone || f.addr != addr || *t >= since);
    }

    /// The followers of zones `wanted` selects that checked within `keep`
    /// (the others are forgotten).
    fn of(&self, wanted: impl Fn(&ZoneId) -> bool) -> Vec<Follower> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, t| t.elapsed() < self.keep);
        seen.keys().filter(|f| wanted(&f.zone)).cloned().collect()
    }
}

/// Who to tell, and how.
pub(crate) struct Targets {
    /// The secondaries.
    pub addrs: Vec<SocketAddr>,
    /// The key NOTIFYs are signed with.
    pub key: Option<TSigner>,
    /// The address NOTIFYs are sent from (secondaries check it against
    /// their primary's): our DNS listen address of the target's family.
    pub source: Vec<IpAddr>,
}

/// A zone and a secondary.
type Job = (ZoneId, SocketAddr);

/// The NOTIFYs to send for what `marked` says changed: each fixed zone to
/// the configured secondaries and its remembered followers, each namespace
/// zone to its remembered followers; with the key each is signed with.
fn jobs(shared: &Shared, targets: &Targets, marked: &Marked) -> Vec<(Job, Option<TSigner>)> {
    let mut out = Vec::new();
    for (zone, _) in marked.zones.iter().enumerate().filter(|(_, m)| **m) {
        for &addr in &targets.addrs {
            out.push(((ZoneId::Fixed(zone), addr), targets.key.clone()));
        }
    }
    let followers = shared.followers.of(|z| match z {
        ZoneId::Fixed(i) => marked.zones.get(*i) == Some(&true),
        ZoneId::Namespace(ns) => marked.all_namespaces || marked.namespaces.contains(ns),
    });
    for f in followers {
        let key = match &f.key {
            Some(name) => match shared.keys.by_name(name) {
                Some(k) => Some(k.clone()),
                None => continue, // The key is gone: nothing to sign with.
            },
            None => None,
        };
        out.push(((f.zone, f.addr), key));
    }
    out
}

/// NOTIFYs in flight (sent, neither answered nor given up) at once; the
/// rest wait their turn in order. The default `notify_followers_max`, so
/// that with the default bound a change reaches every learned follower at
/// once, as one small task each; past it, a change to
/// thousands of targets goes out in waves instead of thousands of tasks,
/// and the answers to one wave (small datagrams) fit a socket's default
/// receive buffer well enough, the receiver draining it as they come. A
/// slot is held at most the ~15 s of a silent target's five tries.
const IN_FLIGHT: usize = 1024;

/// Where a job stands; a job is in the map from when it is asked for until
/// it is done and nothing changed meanwhile.
enum State {
    /// Waiting for a slot, with its key.
    Queued(Option<TSigner>),
    /// Sent, not yet answered or given up.
    Running,
    /// Running, and changed since: one more after it, with this key.
    Again(Option<TSigner>),
}

/// Sends NOTIFYs for marked zones until `stop` (see the module docs).
pub(crate) async fn run(shared: Arc<Shared>, targets: Targets, stop: CancellationToken) {
    let mut sockets = Sockets::default();
    let mut tasks = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, Job> = HashMap::new();
    let mut state: HashMap<Job, State> = HashMap::new();
    let mut queue: VecDeque<Job> = VecDeque::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.notify.wake.notified() => {
                let marked = shared.notify.take();
                for (job, key) in jobs(&shared, &targets, &marked) {
                    match state.get_mut(&job) {
                        // Not sent yet: it will carry the serial of then.
                        Some(State::Queued(k)) => *k = key,
                        Some(s) => *s = State::Again(key),
                        None => {
                            state.insert(job.clone(), State::Queued(key));
                            queue.push_back(job);
                        }
                    }
                }
            }
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = done.map_or_else(|e| e.id(), |(id, ())| id);
                if let Some(job) = running.remove(&id) {
                    match state.remove(&job) {
                        Some(State::Again(key)) => {
                            state.insert(job.clone(), State::Queued(key));
                            queue.push_back(job);
                        }
                        Some(other) => debug_assert!(matches!(other, State::Running)),
                        None => {}
                    }
                }
            }
        }
        while tasks.len() < IN_FLIGHT
            && let Some(job) = queue.pop_front()
        {
            let Some(State::Queued(key)) = state.insert(job.clone(), State::Running) else {
                continue;
            };
            let source = source_for(&targets, job.1);
            let socket = match sockets.get(source).await {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, %source, target = %job.1, "notify: cannot bind a socket");
                    shared.stats.notify[2].fetch_add(1, Ordering::Relaxed);
                    state.remove(&job);
                    continue;
                }
            };
            let pending = Arc::clone(sockets.pending());
            let task = notify(Arc::clone(&shared), socket, pending, job.clone(), key);
            running.insert(tasks.spawn(task).id(), job);
        }
        if !queue.is_empty() {
            trace!(queued = queue.len(), "notify: waiting for a slot");
        }
    }
}

/// The source address for a NOTIFY to `target`.
fn source_for(targets: &Targets, target: SocketAddr) -> IpAddr {
    targets
        .source
        .iter()
        .copied()
        .find(|ip| ip.is_ipv4() == target.is_ipv4())
        .unwrap_or(if target.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        })
}

/// Tells `target` about `zone` from `socket` until it answers or the
/// attempts run out.
async fn notify(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    pending: Arc<Pending>,
    (zone, target): Job,
    key: Option<TSigner>,
) {
    let stats = &shared.stats;
    let started = Instant::now();
    let mut wait = FIRST_WAIT;
    // The previous attempt's id, held until the next is taken so that
    // they differ: a late answer to it is not taken for the next one's.
    let mut previous: Option<Ticket> = None;
    for attempt in 0..ATTEMPTS {
        let serial = shared.serial_of(&zone);
        let name = shared.zones.name_of(&zone);
        let Some(mut ticket) = pending.register(target) else {
            debug!(zone = name, %target, "notify: every message id is in flight");
            break;
        };
        let Some((packet, verifier)) = message(&shared, key.as_ref(), &zone, serial, ticket.id)
        else {
            return;
        };
        stats.notify[0].fetch_add(1, Ordering::Relaxed);
        if let Err(e) = socket.send_to(&packet, target).await {
            trace!(error = %e, %target, "notify: send failed");
        }
        match tokio::time::timeout(wait, answer(&mut ticket, &name, verifier)).await {
            Ok(Ok(())) => {
                debug!(zone = name, %target, serial, attempt, "notify acknowledged");
                stats.notify[1].fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Err(why)) => {
                debug!(zone = name, %target, why, "notify refused");
                break;
            }
            Err(_) => trace!(%target, attempt, "notify: no answer yet"),
        }
        previous = Some(ticket);
        wait *= 2;
    }
    drop(previous);
    stats.notify[2].fetch_add(1, Ordering::Relaxed);
    // Refused or never answered: a learned follower at that address is
    // most likely gone (see the module docs).
    shared.followers.forget(&zone, target, started);
}

type Verifier = Option<hickory_proto::rr::TSigVerifier>;

/// The NOTIFY `id` for `zone` at `serial` (with the SOA in the answer, RFC
/// 1996 §3.7), signed if there is a key.
fn message(
    shared: &Shared,
    key: Option<&TSigner>,
    zone: &ZoneId,
    serial: u32,
    id: u16,
) -> Option<(Vec<u8>, Verifier)> {
    let mut name = Name::from_ascii(shared.zones.name_of(zone)).ok()?;
    name.set_fqdn(true);
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.add_query(Query::query(name, RecordType::SOA));
    let soa = shared.zones.soa(&shared.settings, zone, serial);
    m.add_answer(Record::from_bytes(&soa).ok()?);
    let verifier = match key {
        Some(key) => m.finalize(key, super::unix_now()).ok()?,
        None => None,
    };
    Some((m.to_vec().ok()?, verifier))
}

/// A random message id, so that a stray or forged answer cannot easily
/// match (std's `RandomState` is seeded from the OS once per thread and
/// differs for each call).
pub(super) fn rand_id() -> u16 {
    use std::hash::BuildHasher;
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    std::hash::RandomState::new().hash_one(n) as u16
}

/// Whether `name` is `zone` (letter case and final dot aside).
fn same_name(name: &Name, zone: &str) -> bool {
    let name = name.to_ascii();
    let trim = |s: &str| s.strip_suffix('.').unwrap_or(s).to_owned();
    trim(&name).eq_ignore_ascii_case(&trim(zone))
}

/// Waits for the answer to `ticket`'s NOTIFY about `zone`; `Err` when it
/// is a refusal (or badly signed) rather than an acknowledgement.
async fn answer(
    ticket: &mut Ticket,
    zone: &str,
    mut verifier: Verifier,
) -> Result<(), &'static str> {
    while let Some(bytes) = ticket.answers.recv().await {
        let Ok(m) = Message::from_vec(&bytes) else {
            continue;
        };
        if m.message_type != MessageType::Response || m.op_code != OpCode::Notify {
            continue;
        }
        // An answer about another zone (a late one whose id was reused).
        if m.queries
            .first()
            .is_some_and(|q| !same_name(q.name(), zone))
        {
            continue;
        }
        if let Some(v) = verifier.as_mut()
            && v.verify(&bytes).is_err()
        {
            return Err("bad or missing signature on the answer");
        }
        return match m.response_code {
            ResponseCode::NoError => Ok(()),
            _ => Err("answered with an error"),
        };
    }
    // The sender lives in `Pending` as long as the ticket: not reached.
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(port: u16, zone: &str) -> Follower {
        Follower {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            zone: ZoneId::Namespace(Arc::from(zone)),
            key: None,
        }
    }

    #[test]
    fn followers_are_bounded_oldest_first_and_forgotten_after_the_expire() {
        let f = Followers::new(2, Duration::from_secs(3600));
        f.seen(follower(1, "a"));
        std::thread::sleep(Duration::from_millis(2));
        f.seen(follower(2, "b"));
        std::thread::sleep(Duration::from_millis(2));
        f.seen(follower(1, "a")); // refreshed: now the newest
        f.seen(follower(3, "a")); // past the bound: 2 (the oldest) goes
        let mut a = f.of(|z| *z == ZoneId::Namespace(Arc::from("a")));
        a.sort_by_key(|f| f.addr);
        assert_eq!(a, [follower(1, "a"), follower(3, "a")]);
        assert!(f.of(|z| *z == ZoneId::Namespace(Arc::from("b"))).is_empty());
        let gone = Followers::new(8, Duration::ZERO);
        gone.seen(follower(1, "a"));
        assert!(gone.of(|_| true).is_empty(), "past the expire");
        // A follower whose NOTIFY failed is forgotten, unless it checked
        // since the NOTIFY started; another zone's at that address stays.
        let f = Followers::new(8, Duration::from_secs(3600));
        f.seen(follower(1, "a"));
        f.seen(follower(1, "b"));
        std::thread::sleep(Duration::from_millis(2));
        let started = Instant::now();
        f.seen(follower(2, "a"));
        f.forget(
            &ZoneId::Namespace(Arc::from("a")),
            follower(2, "a").addr,
            started,
        );
        f.forget(
            &ZoneId::Namespace(Arc::from("a")),
            follower(1, "a").addr,
            started,
        );
        let mut left = f.of(|_| true);
        left.sort_by_key(|f| (f.addr, f.zone.clone()));
        assert_eq!(left, [follower(1, "b"), follower(2, "a")]);
        let off = Followers::new(0, Duration::from_secs(60));
        off.seen(follower(1, "a"));
        assert!(off.of(|_| true).is_empty(), "notify_followers_max = 0");
    }
}
