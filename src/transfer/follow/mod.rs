//! The transfer source: headless-dns as a secondary of a primary (another
//! headless-dns, or any server of a Kubernetes-shaped zone), so a sidecar
//! needs no Kubernetes token and no watches of its own.
//!
//! AXFR at start; then, on every NOTIFY from the primary and every refresh
//! (the SOA's, or `source.refresh_ms`), the primary's SOA serial, and an
//! IXFR when it moved (an AXFR when the primary will not give differences).
//! Each new zone is turned back into Services, EndpointSlices and
//! Namespaces (`zone_objects`: a namespace from its marker in the cluster
//! zone, or its services) and fed to the index through [`Differ`], as the file
//! source does, so every answering rule, the page and our own transfers work
//! unchanged. Before the first transfer the index is unsynced (SERVFAIL);
//! after it, a failed or bad transfer is logged with its reason and the last
//! good zone keeps serving, until the primary has been out of reach for the
//! SOA's expire (or `source.expire_ms`): then names get SERVFAIL, as on any
//! secondary (unless `source.serve_expired`), until it answers again.
//!
//! The zone followed is the cluster zone, or with `source.primary_zone` one
//! namespace's transfer zone `<ns>.svc.<zone>`: then the index holds that
//! namespace alone and answers as a sidecar with `namespaces = [<ns>]`
//! does (other namespaces' names NXDOMAIN), and the namespace exists even
//! with no services, since the zone's apex names it (NODATA, as on the
//! primary). The serial is checked by IXFR over UDP, from one socket that
//! also takes the primary's NOTIFYs (`client::Checker`), so the primary
//! can tell a follower it was never configured with (a node-local cache of
//! the cluster zone as much as a tenant's sidecar). The cluster zone falls
//! back to SOA queries where the primary does not answer such a check (it
//! may not be ours: then it would not learn from it either; `client` says
//! when). NOTIFYs are accepted there and from the listeners: for
//! the zone followed only (else NOTAUTH), signed with the primary's key
//! when one is set (then from any address: a primary pod answers for a
//! Service address), else from the primary's address.
//!
//! A primary whose serial went back (restarted without `serial_file`, or
//! another replica behind one address) is not ignored as RFC 1982 would
//! let a secondary do (BIND logs it and waits for an operator's
//! `rndc retransfer`): a sidecar has no operator, and its primary is the
//! only source of its names, so it takes the primary's whole zone (AXFR)
//! and logs a warning.
//!
//! - `client`: SOA, AXFR and IXFR over the wire, TSIG-checked;
//! - `zone_objects`: records → objects;
//! - here: the task, applying differences, and the NOTIFY inbox the
//!   listeners hand NOTIFYs to (through the transfer handoff).

mod client;
mod zone_objects;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, Record};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::message::Head;
use super::tsig::{Keys, Verified};
use super::unix_now;
use crate::config::Config;
use crate::dns::handoff::{FOLLOW_TRANSFER_KINDS, FollowTotals, Messages};
use crate::error::{Error, Result};
use crate::sources::{Differ, SourceEvent};
use crate::wire::Rcode;
use client::{Checks, Primary, Why, serial_of};

/// Between tries before the first zone arrives (unless `refresh_ms` is shorter).
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Where the listeners hand NOTIFYs from the primary; wakes the follower.
pub struct Inbox {
    primary: SocketAddr,
    /// The zone followed, lower-case wire format: NOTIFYs for others are
    /// NOTAUTH (RFC 1996 §3.10: only for a zone we are a secondary of).
    zone: Vec<u8>,
    /// The primary's key only, when set: NOTIFYs must be signed with it.
    keys: Option<Keys>,
    /// A permit is kept when the follower is busy: a NOTIFY during a
    /// transfer starts another check right after it, never lost.
    wake: tokio::sync::Notify,
    /// NOTIFYs accepted.
    accepted: AtomicU64,
    /// Set while the zone is past its expire (the answerer's SERVFAIL switch).
    expired: Arc<AtomicBool>,
    /// The serial served; the primary's at its last answer; when the
    /// primary last answered a whole check, when it was last asked, when
    /// the zone last changed (Unix ms); failures; transfers by kind. Written
    /// by the follower task only, read by the metrics and the page.
    serial: AtomicU64,
    primary_serial: AtomicU64,
    last_ok_ms: AtomicU64,
    last_check_ms: AtomicU64,
    last_change_ms: AtomicU64,
    failures: AtomicU64,
    transfers: [AtomicU64; FOLLOW_TRANSFER_KINDS.len()],
}

impl Inbox {
    /// The flag that is set while the zone is expired (see the module docs).
    pub fn expired(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.expired)
    }

    /// The follower's state for the metrics page.
    pub(crate) fn totals(&self) -> FollowTotals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FollowTotals {
            primary: Some(self.primary),
            serial: load(&self.serial) as u32,
            primary_serial: load(&self.primary_serial) as u32,
            last_ok_ms: load(&self.last_ok_ms),
            last_check_ms: load(&self.last_check_ms),
            last_change_ms: load(&self.last_change_ms),
            transfers: self.transfers.each_ref().map(load),
            failures: load(&self.failures),
            notifies: load(&self.accepted),
            expired: self.expired.load(Ordering::Relaxed),
        }
    }

    /// Whether NOTIFY `msg` is for the zone followed.
    fn follows(&self, msg: &Message) -> bool {
        let qname = crate::wire::name::from_dotted(&msg.queries[0].name().to_ascii());
        qname.as_deref() == Some(self.zone.as_slice())
    }

    /// The answer to a NOTIFY `packet` from `peer` (see the module docs).
    pub(crate) fn respond(&self, packet: &[u8], peer: SocketAddr) -> Messages {
        let (Ok(msg), Some(question_end)) = (Message::from_vec(packet), question_end(packet))
        else {
            let mut out = Vec::new();
            let id = packet
                .get(..2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            crate::wire::write_error_header(&mut out, packet, id, Rcode::FormErr);
            return Box::new(std::iter::once(out));
        };
        let head = Head {
            id: msg.metadata.id,
            opcode_rd: packet[2] & 0x79,
            question: packet[12..question_end].to_vec(),
            zone: None,
        };
        let mut out = Vec::new();
        let refuse = |out: &mut Vec<u8>, why: &str| {
            debug!(%peer, why, "notify refused");
            head.start(Rcode::Refused as u8, out);
        };
        // With a key the signature says who sent it (a NOTIFY reaching the
        // checker socket comes from the primary's pod address, not the
        // Service address it is followed at); without one, the address.
        if self.keys.is_none() && peer.ip() != self.primary.ip() {
            refuse(&mut out, "not from the primary");
            return Box::new(std::iter::once(out));
        }
        if !self.follows(&msg) {
            debug!(%peer, zone = %msg.queries[0].name(), "notify for a zone we do not follow: NOTAUTH");
            head.start(Rcode::NotAuth as u8, &mut out);
            return Box::new(std::iter::once(out));
        }
        let chain = match self
            .keys
            .as_ref()
            .map(|k| k.verify(packet, &msg, unix_now()))
        {
            None => None,
            Some(Verified::Signed(chain)) => Some(chain),
            Some(Verified::Unsigned) => {
                refuse(&mut out, "unsigned, and source.primary_key is set");
                return Box::new(std::iter::once(out));
            }
            Some(Verified::Bad(bad)) => {
                warn!(%peer, reason = bad.reason(), "notify with a bad TSIG signature: NOTAUTH");
                head.start(Rcode::NotAuth as u8, &mut out);
                bad.sign(&mut out, unix_now());
                return Box::new(std::iter::once(out));
            }
        };
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        debug!(%peer, "notify from the primary: checking its serial");
        head.start(Rcode::NoError as u8, &mut out);
        if let Some(mut chain) = chain {
            chain.sign(&mut out, unix_now(), None);
        }
        Box::new(std::iter::once(out))
    }
}

/// The end of a message's one question.
fn question_end(p: &[u8]) -> Option<usize> {
    let qd = u16::from_be_bytes([*p.get(4)?, *p.get(5)?]);
    let end = crate::wire::skip_name(p, 12)? + 4;
    (qd == 1 && end <= p.len()).then_some(end)
}

/// The zone as last transferred.
#[derive(Debug)]
struct Zone {
    soa: SOA,
    /// Every record but the SOA.
    records: BTreeSet<Record>,
}

/// Starts following `source.primary` into `events` until `stop`; returns
/// the inbox for the primary's NOTIFYs.
pub async fn start(
    config: &Config,
    events: mpsc::Sender<SourceEvent>,
    stop: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<Arc<Inbox>> {
    let s = &config.source;
    let addr = s
        .primary
        .ok_or_else(|| Error::Config("source.primary: not set".into()))?;
    let zone_name = s.primary_zone.as_deref().unwrap_or(&config.dns.zone);
    let namespace = config.namespace_of_zone(zone_name);
    let mut zone = Name::from_ascii(zone_name)
        .map_err(|e| Error::Config(format!("source.primary_zone: {e}")))?;
    zone.set_fqdn(true);
    let zone_wire = crate::wire::name::from_dotted(zone_name)
        .ok_or_else(|| Error::Config(format!("source.primary_zone: {zone_name:?}")))?;
    let keys = match s.primary_key.as_deref() {
        Some(name) => {
            let key = config.transfer.tsig.iter().filter(|k| k.name == name);
            Some(Keys::new(&key.cloned().collect::<Vec<_>>())?)
        }
        None => None,
    };
    let key = match (&keys, s.primary_key.as_deref()) {
        (Some(k), Some(name)) => k.named(name).cloned(),
        _ => None,
    };
    let inbox = Arc::new(Inbox {
        primary: addr,
        zone: zone_wire,
        keys,
        wake: tokio::sync::Notify::new(),
        accepted: AtomicU64::new(0),
        expired: Arc::default(),
        serial: AtomicU64::new(0),
        primary_serial: AtomicU64::new(0),
        last_ok_ms: AtomicU64::new(0),
        last_check_ms: AtomicU64::new(0),
        last_change_ms: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        transfers: Default::default(),
    });
    let checker = start_checker(addr, &inbox, stop.clone(), tracker).await?;
    let follower = Follower {
        primary: Primary {
            addr,
            zone,
            key,
            checker,
            checks: match namespace {
                Some(_) => Checks::Ixfr,
                None => Checks::IxfrElseSoa { soa_until: None },
            },
        },
        zone_name: config.dns.zone.clone(),
        namespace: namespace.clone(),
        refresh: s.refresh_ms.map(Duration::from_millis),
        expire: (!s.serve_expired).then_some(s.expire_ms.map(Duration::from_millis)),
        last_ok: Instant::now(),
        zone: None,
        differ: Differ::default(),
    };
    info!(primary = %addr, zone = zone_name, signed = s.primary_key.is_some(), "following the primary");
    tracker.spawn(follower.run(Arc::clone(&inbox), events, stop));
    Ok(inbox)
}

/// Binds the socket serial checks leave from and the primary's NOTIFYs
/// arrive at (of `primary`'s family, any port), and reads it until `stop`.
async fn start_checker(
    primary: SocketAddr,
    inbox: &Arc<Inbox>,
    stop: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<Arc<client::Checker>> {
    let ip: std::net::IpAddr = if primary.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let any = SocketAddr::new(ip, 0);
    let checker = client::Checker::bind(any)
        .await
        .map_err(|source| Error::Bind {
            proto: "udp",
            addr: any,
            source,
        })?;
    let checker = Arc::new(checker);
    let (c, inbox) = (Arc::clone(&checker), Arc::clone(inbox));
    tracker.spawn(async move { c.listen(|p, from| inbox.respond(p, from), stop).await });
    Ok(checker)
}

/// The follower's state.
struct Follower {
    primary: Primary,
    /// The cluster zone (`dns.zone`).
    zone_name: String,
    /// The namespace whose transfer zone is followed, if one is.
    namespace: Option<String>,
    /// `source.refresh_ms`.
    refresh: Option<Duration>,
    /// `None`: never expire (`serve_expired`); `Some(None)`: the SOA's expire.
    expire: Option<Option<Duration>>,
    /// When the primary last answered a check.
    last_ok: Instant,
    zone: Option<Zone>,
    differ: Differ,
}

impl Follower {
    async fn run(
        mut self,
        inbox: Arc<Inbox>,
        events: mpsc::Sender<SourceEvent>,
        stop: CancellationToken,
    ) {
        loop {
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                o = self.check(&inbox) => o,
            };
            let now_ms = crate::clock::unix_ms();
            inbox.last_check_ms.store(now_ms, Ordering::Relaxed);
            let wait = match outcome {
                Ok(how) => {
                    self.last_ok = Instant::now();
                    inbox.last_ok_ms.store(now_ms, Ordering::Relaxed);
                    let serial = self.zone.as_ref().map_or(0, |z| z.soa.serial);
                    inbox.serial.store(u64::from(serial), Ordering::Relaxed);
                    if let Some(how) = how {
                        let kind = usize::from(how == "ixfr");
                        inbox.transfers[kind].fetch_add(1, Ordering::Relaxed);
                        inbox.last_change_ms.store(now_ms, Ordering::Relaxed);
                    }
                    if inbox.expired.swap(false, Ordering::Relaxed) {
                        info!(primary = %self.primary.addr, "the primary answers again: zone no longer expired");
                    }
                    if let Some(how) = how
                        && !self.publish(&events, how).await
                    {
                        return;
                    }
                    self.refresh_wait()
                }
                Err(why) => {
                    inbox.failures.fetch_add(1, Ordering::Relaxed);
                    warn!(primary = %self.primary.addr, reason = %why, "zone transfer failed; keeping the last good zone");
                    self.retry_wait().min(self.check_expiry(&inbox.expired))
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = inbox.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sets `expired` once the primary has been out of reach for the
    /// expire; returns the time left until then (or a long time).
    fn check_expiry(&self, expired: &AtomicBool) -> Duration {
        let never = Duration::from_secs(3600);
        let (Some(expire), Some(zone)) = (self.expire, &self.zone) else {
            return never;
        };
        let expire = expire.unwrap_or_else(|| Duration::from_secs(zone.soa.expire.max(1) as u64));
        let left = expire.saturating_sub(self.last_ok.elapsed());
        if left.is_zero() {
            if !expired.swap(true, Ordering::Relaxed) {
                warn!(primary = %self.primary.addr, ?expire, "the zone expired: answering SERVFAIL until the primary answers");
            }
            return never;
        }
        left
    }

    fn refresh_wait(&self) -> Duration {
        self.refresh.unwrap_or_else(|| match &self.zone {
            Some(z) => Duration::from_secs(z.soa.refresh.max(1) as u64),
            None => FIRST_RETRY,
        })
    }

    fn retry_wait(&self) -> Duration {
        match (&self.zone, self.refresh) {
            (_, Some(r)) => r,
            (Some(z), None) => Duration::from_secs(z.soa.retry.max(1) as u64),
            (None, None) => FIRST_RETRY,
        }
    }

    /// Feeds the new zone's objects to the index; false when it is gone.
    async fn publish(&mut self, events: &mpsc::Sender<SourceEvent>, how: &'static str) -> bool {
        let Some(zone) = &self.zone else {
            return true;
        };
        let mut objects = zone_objects::objects(&zone.records, &self.zone_name);
        if let Some(ns) = &self.namespace {
            // The zone's apex names the namespace, services or none.
            zone_objects::add_namespace(&mut objects, ns);
        }
        let batch = self.differ.diff(objects);
        info!(
            serial = zone.soa.serial,
            how,
            records = zone.records.len(),
            events = batch.len(),
            "zone transferred"
        );
        for e in batch {
            if events.send(e).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Brings the zone up to the primary's serial: `Some(how)` when it
    /// changed, `None` when it was current.
    /// Notes the primary's serial in `inbox` as soon as it is known.
    async fn check(&mut self, inbox: &Inbox) -> std::result::Result<Option<&'static str>, Why> {
        let seen = |serial: u32| {
            inbox
                .primary_serial
                .store(u64::from(serial), Ordering::Relaxed)
        };
        let Some(ours) = self.zone.as_ref().map(|z| z.soa.serial) else {
            // A first check from the checker socket, so the primary knows
            // where to NOTIFY from the start (a serial it never had: the
            // answer is its SOA alone). The cluster zone goes on without it.
            let probe = match self.primary.checks_by_ixfr() {
                true => Some(self.primary.ixfr_udp(0).await),
                false => None,
            };
            if let Some(Err(why)) = &probe
                && self.primary.checks == Checks::Ixfr
            {
                return Err(why.clone());
            }
            let records = self.primary.transfer(None).await?;
            let zone = whole(&records)?;
            // The primary answered the transfer: a failed probe says it
            // does not take IXFR over UDP.
            match probe {
                Some(Err(why)) => self.primary.ixfr_failed(&why),
                Some(Ok(_)) => self.primary.ixfr_answered(),
                None => {}
            }
            seen(zone.soa.serial);
            self.zone = Some(zone);
            return Ok(Some("axfr"));
        };
        let theirs = match self.their_serial(ours).await? {
            Ok(theirs) => theirs,
            Err(how) => {
                // The differences came in the check's answer.
                if let Some(z) = &self.zone {
                    seen(z.soa.serial);
                }
                return Ok(Some(how));
            }
        };
        seen(theirs);
        if theirs == ours {
            return Ok(None);
        }
        if !newer(theirs, ours) {
            warn!(
                primary = %self.primary.addr,
                theirs,
                ours,
                "the primary's serial went back (restarted without serial_file?): taking its whole zone"
            );
            let records = self.primary.transfer(None).await?;
            self.zone = Some(whole(&records)?);
            return Ok(Some("axfr"));
        }
        let zone = self.zone.as_ref().expect("checked above");
        let next = match self.primary.transfer(Some(ours)).await {
            Ok(records) => apply(zone, &records).map(|z| (z, "ixfr")),
            Err(why) => Err(why),
        };
        let (next, how) = match next {
            Ok(done) => done,
            Err(why) => {
                debug!(reason = %why, "ixfr failed; trying axfr");
                let records = self.primary.transfer(None).await?;
                (whole(&records)?, "axfr")
            }
        };
        if !newer(next.soa.serial, ours) {
            return Err(format!(
                "the transfer's serial {} is not after ours {ours}",
                next.soa.serial
            ));
        }
        self.zone = Some(next);
        Ok(Some(how))
    }
}

impl Follower {
    /// The primary's serial (`Ok(Ok(serial))`); or, when the UDP IXFR check
    /// brought the differences along, the zone brought up to date by them
    /// (`Ok(Err(how))`).
    async fn their_serial(
        &mut self,
        ours: u32,
    ) -> std::result::Result<std::result::Result<u32, &'static str>, Why> {
        let records = self.primary.check_serial(ours).await?;
        let theirs = first_soa(&records)?.serial;
        if records.len() > 1 && newer(theirs, ours) && client::complete(&records) {
            // The differences (or the zone) fitted in the answer.
            let zone = self.zone.as_ref().expect("called with a zone");
            if let Ok(next) = apply(zone, &records) {
                self.zone = Some(next);
                return Ok(Err("ixfr"));
            }
        }
        Ok(Ok(theirs))
    }
}

/// RFC 1982: whether serial `a` is after `b`.
fn newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

/// The SOA a transfer answer starts with.
fn first_soa(records: &[Record]) -> std::result::Result<SOA, Why> {
    match records.first().map(|r| &r.data) {
        Some(hickory_proto::rr::RData::SOA(soa)) => Ok(soa.clone()),
        _ => Err("the answer does not start with the zone's SOA".into()),
    }
}

/// An AXFR answer (or an IXFR answered with the whole zone) as a zone.
fn whole(records: &[Record]) -> std::result::Result<Zone, Why> {
    let soa = first_soa(records)?;
    if records.len() < 2 || records.last().and_then(serial_of) != Some(soa.serial) {
        return Err("the zone does not end with its SOA".into());
    }
    let body = &records[1..records.len() - 1];
    Ok(Zone {
        soa,
        records: body
            .iter()
            .filter(|r| serial_of(r).is_none())
            .cloned()
            .collect(),
    })
}

/// `zone` after an IXFR answer: its differences applied in order, or the
/// whole zone when the primary sent that instead.
fn apply(zone: &Zone, records: &[Record]) -> std::result::Result<Zone, Why> {
    let soa = first_soa(records)?;
    let incremental = records.len() > 2 && records.get(1).and_then(serial_of).is_some();
    if !incremental {
        return whole(records);
    }
    let mut set = zone.records.clone();
    let mut serial = zone.soa.serial;
    let end = records.len() - 1;
    let mut i = 1;
    while i < end {
        let from = serial_of(&records[i]).ok_or("a difference without its old SOA")?;
        if from != serial {
            return Err(format!("a difference from serial {from}, ours is {serial}"));
        }
        i += 1;
        while i < end && serial_of(&records[i]).is_none() {
            set.remove(&records[i]);
            i += 1;
        }
        serial = records
            .get(i)
            .and_then(serial_of)
            .filter(|_| i < end)
            .ok_or("a difference without its new SOA")?;
        i += 1;
        while i < end && serial_of(&records[i]).is_none() {
            set.insert(records[i].clone());
            i += 1;
        }
    }
    if serial != soa.serial {
        return Err(format!(
            "the differences end at serial {serial}, not {}",
            soa.serial
        ));
    }
    Ok(Zone { soa, records: set })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::A;

    fn soa(serial: u32) -> Record {
        let soa = SOA::new(Name::root(), Name::root(), serial, 1, 1, 1, 1);
        Record::from_rdata(Name::from_ascii("z.").unwrap(), 5, RData::SOA(soa))
    }

    fn a(last: u8) -> Record {
        Record::from_rdata(
            Name::from_ascii("a.z.").unwrap(),
            5,
            RData::A(A([10, 0, 0, last].into())),
        )
    }

    #[test]
    fn differences_apply_in_order_and_must_chain() {
        let zone = whole(&[soa(3), a(1), soa(3)]).unwrap();
        let diffs = [
            soa(5),
            soa(3),
            a(1),
            soa(4),
            a(2),
            soa(4),
            soa(5),
            a(3),
            soa(5),
        ];
        let next = apply(&zone, &diffs).unwrap();
        assert_eq!(next.soa.serial, 5);
        assert_eq!(next.records, [a(2), a(3)].into_iter().collect());
        // Differences from a serial we do not have are refused.
        let stale = [soa(5), soa(2), a(1), soa(5), a(2), soa(5)];
        assert!(apply(&zone, &stale).unwrap_err().contains("from serial 2"));
        // The whole zone instead of differences replaces it.
        let full = apply(&zone, &[soa(6), a(9), soa(6)]).unwrap();
        assert_eq!(full.records, [a(9)].into_iter().collect());
        assert!(newer(1, u32::MAX) && !newer(3, 5));
    }
}
