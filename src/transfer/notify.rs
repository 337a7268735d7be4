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

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType, TSigner};
use hickory_proto::serialize::binary::BinDecodable;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

use super::Shared;

/// Sends per NOTIFY, first included.
const ATTEMPTS: u32 = 5;
/// Wait for the first answer; doubled for each retry.
const FIRST_WAIT: Duration = Duration::from_millis(500);

/// Zones waiting for a NOTIFY, and the task's wake-up.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    zones: Mutex<Vec<bool>>,
    wake: tokio::sync::Notify,
}

impl Queue {
    /// Marks the zones set in `changed` (by zone index).
    pub(crate) fn mark(&self, changed: &[bool]) {
        if !changed.contains(&true) {
            return;
        }
        let mut zones = self.zones.lock().unwrap_or_else(|p| p.into_inner());
        let len = zones.len().max(changed.len());
        zones.resize(len, false);
        for (z, c) in zones.iter_mut().zip(changed) {
            *z |= *c;
        }
        drop(zones);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<usize> {
        let mut zones = self.zones.lock().unwrap_or_else(|p| p.into_inner());
        let marked = zones
            .iter()
            .enumerate()
            .filter(|(_, m)| **m)
            .map(|(i, _)| i);
        let marked = marked.collect();
        zones.fill(false);
        marked
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

/// A zone (by index) and a secondary.
type Job = (usize, SocketAddr);

/// Sends NOTIFYs for marked zones until `stop` (see the module docs).
pub(crate) async fn run(shared: Arc<Shared>, targets: Targets, stop: CancellationToken) {
    let targets = Arc::new(targets);
    let mut jobs = JoinSet::new();
    // The job of each running task; and the jobs with a change since.
    let mut running: HashMap<tokio::task::Id, Job> = HashMap::new();
    let mut again: HashSet<Job> = HashSet::new();
    let start = |jobs: &mut JoinSet<()>, running: &mut HashMap<_, _>, (zone, target): Job| {
        let job = notify(Arc::clone(&shared), Arc::clone(&targets), zone, target);
        running.insert(jobs.spawn(job).id(), (zone, target));
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.notify.wake.notified() => {
                for zone in shared.notify.take() {
                    for &target in &targets.addrs {
                        let job = (zone, target);
                        if running.values().any(|j| *j == job) {
                            again.insert(job);
                        } else {
                            start(&mut jobs, &mut running, job);
                        }
                    }
                }
            }
            Some(done) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                let id = done.map_or_else(|e| e.id(), |(id, ())| id);
                if let Some(job) = running.remove(&id)
                    && again.remove(&job)
                {
                    start(&mut jobs, &mut running, job);
                }
            }
        }
    }
}

/// The source address for a NOTIFY to `target`.
fn source_for(targets: &Targets, target: SocketAddr) -> SocketAddr {
    let ip = targets
        .source
        .iter()
        .copied()
        .find(|ip| ip.is_ipv4() == target.is_ipv4())
        .unwrap_or(if target.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        });
    SocketAddr::new(ip, 0)
}

/// Tells `target` about `zone` until it answers or the attempts run out.
async fn notify(shared: Arc<Shared>, targets: Arc<Targets>, zone: usize, target: SocketAddr) {
    let stats = &shared.stats;
    let socket = match UdpSocket::bind(source_for(&targets, target)).await {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, %target, "notify: cannot bind a socket");
            stats.notify[2].fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut wait = FIRST_WAIT;
    for attempt in 0..ATTEMPTS {
        let serial = shared.index.serial();
        let Some((packet, verifier)) = message(&shared, &targets, zone, serial) else {
            return;
        };
        stats.notify[0].fetch_add(1, Ordering::Relaxed);
        if let Err(e) = socket.send_to(&packet, target).await {
            trace!(error = %e, %target, "notify: send failed");
        }
        let id = u16::from_be_bytes([packet[0], packet[1]]);
        match tokio::time::timeout(wait, answer(&socket, target, id, verifier)).await {
            Ok(Ok(())) => {
                debug!(zone = shared.zones.name(zone), %target, serial, attempt, "notify acknowledged");
                stats.notify[1].fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Err(why)) => {
                debug!(zone = shared.zones.name(zone), %target, why, "notify refused");
                break;
            }
            Err(_) => trace!(%target, attempt, "notify: no answer yet"),
        }
        wait *= 2;
    }
    stats.notify[2].fetch_add(1, Ordering::Relaxed);
}

type Verifier = Option<hickory_proto::rr::TSigVerifier>;

/// The NOTIFY for `zone` at `serial` (with the SOA in the answer, RFC 1996
/// §3.7), signed if there is a key.
fn message(
    shared: &Shared,
    targets: &Targets,
    zone: usize,
    serial: u32,
) -> Option<(Vec<u8>, Verifier)> {
    let mut name = Name::from_ascii(shared.zones.name(zone)).ok()?;
    name.set_fqdn(true);
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.add_query(Query::query(name, RecordType::SOA));
    let soa = shared.zones.soa(&shared.settings, zone, serial);
    m.add_answer(Record::from_bytes(&soa).ok()?);
    let verifier = match &targets.key {
        Some(key) => m.finalize(key, super::unix_now()).ok()?,
        None => None,
    };
    Some((m.to_vec().ok()?, verifier))
}

/// A message id that a stray answer cannot easily match.
pub(super) fn rand_id() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (t ^ (t >> 16)) as u16
}

/// Waits for the answer to NOTIFY `id` from `target`; `Err` when it is a
/// refusal (or badly signed) rather than an acknowledgement.
async fn answer(
    socket: &UdpSocket,
    target: SocketAddr,
    id: u16,
    mut verifier: Verifier,
) -> Result<(), &'static str> {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            // Not expected on an unconnected socket; do not spin on it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let bytes = &buf[..n];
        if from != target || n < 12 || u16::from_be_bytes([bytes[0], bytes[1]]) != id {
            continue;
        }
        let Ok(m) = Message::from_vec(bytes) else {
            continue;
        };
        if m.message_type != MessageType::Response || m.op_code != OpCode::Notify {
            continue;
        }
        if let Some(v) = verifier.as_mut()
            && v.verify(bytes).is_err()
        {
            return Err("bad or missing signature on the answer");
        }
        return match m.response_code {
            ResponseCode::NoError => Ok(()),
            _ => Err("answered with an error"),
        };
    }
}
