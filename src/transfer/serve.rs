//! Answering what the listeners hand over: zone transfers and signed queries.
//!
//! In order: the request's signature (a bad one is NOTAUTH, RFC 8945 §5.2);
//! for AXFR/IXFR the access list, `require_tsig`, the key's namespaces (a
//! key confined to some may transfer only their zones), the zone (fixed, or
//! an existing namespace's), the bound on concurrent transfers; then the
//! records. Refusals are counted by reason and logged at debug. Every answer
//! to a signed request is signed. An IXFR over UDP is a follower's serial
//! check: its address is remembered for NOTIFYs (`notify`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, RData, RecordType};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use super::journal::Since;
use super::message::{Head, Packer, TCP_MESSAGE, TSIG_ROOM};
use super::notify::Follower;
use super::tsig::{Bad, Chain, Verified};
use super::zones::{ZoneId, ZoneRecords};
use super::{Shared, unix_now};
use crate::dns::handoff::Messages;
use crate::dns::{Answerer, Outcome};
use crate::index::ServiceView;
use crate::wire::{MIN_UDP, Query, Rcode, skip_name};

/// What was transferred: indices into `TRANSFER_KINDS` (`dns::handoff`).
#[derive(Clone, Copy)]
enum Served {
    Axfr,
    Ixfr,
    IxfrFull,
    IxfrCurrent,
    SignedQuery,
}

/// Why a request was refused: indices into `REFUSAL_REASONS` (`dns::handoff`).
#[derive(Clone, Copy)]
enum Refusal {
    Acl,
    Unsigned,
    Tsig,
    Busy,
    BadRequest,
    KeyScope,
}

/// The end of the question section (one question), and where the last
/// record of the message starts.
fn layout(p: &[u8]) -> Option<(usize, Option<usize>)> {
    let count = |i: usize| Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]) as usize);
    if count(4)? != 1 {
        return None;
    }
    let question_end = skip_name(p, 12)? + 4;
    let mut at = question_end;
    let mut last = None;
    for _ in 0..count(6)? + count(8)? + count(10)? {
        last = Some(at);
        at = skip_name(p, at)?;
        at += 10 + count(at + 8)?;
    }
    (at <= p.len() && question_end <= p.len()).then_some((question_end, last))
}

/// One message: `head` with `rcode` and `records`, signed when `chain` is.
fn one(head: &Head, rcode: u8, records: &[Vec<u8>], chain: Option<Chain>) -> Messages {
    let mut out = Vec::new();
    head.start(rcode, &mut out);
    for r in records {
        head.push(&mut out, r);
    }
    if let Some(mut c) = chain {
        c.sign(&mut out, unix_now(), None);
    }
    Box::new(std::iter::once(out))
}

/// See the module docs.
pub(super) fn respond(
    shared: &Arc<Shared>,
    answerer: &Answerer,
    packet: &[u8],
    peer: SocketAddr,
    tcp: bool,
) -> Messages {
    let (Ok(msg), Some((question_end, last))) = (Message::from_vec(packet), layout(packet)) else {
        shared.stats.refused[Refusal::BadRequest as usize].fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        crate::wire::write_error_header(&mut out, packet, id_of(packet), Rcode::FormErr);
        return Box::new(std::iter::once(out));
    };
    // `layout` checked that there is exactly one question.
    let head = Head {
        id: msg.id,
        opcode_rd: packet[2] & 0x79,
        question: packet[12..question_end].to_vec(),
        zone: None,
    };
    // What a UDP client takes (RFC 6891 §6.2.5), as on the query path.
    let limit = if tcp {
        usize::from(u16::MAX)
    } else {
        let max_udp = answerer.settings().dns.max_udp_payload;
        usize::from(msg.max_payload().min(max_udp).max(512))
    };
    let chain = match shared.keys.verify(packet, &msg, unix_now()) {
        Verified::Unsigned => None,
        Verified::Signed(chain) => Some(chain),
        Verified::Bad(bad) => {
            shared.stats.refused[Refusal::Tsig as usize].fetch_add(1, Ordering::Relaxed);
            debug!(%peer, reason = bad.reason(), "request with a bad TSIG signature: NOTAUTH");
            return Box::new(std::iter::once(not_auth(head, bad, limit)));
        }
    };
    if !matches!(
        msg.queries[0].query_type(),
        RecordType::AXFR | RecordType::IXFR
    ) {
        return signed_query(shared, answerer, packet, last, tcp, &head, chain);
    }
    transfer(shared, &msg, head, chain, peer, tcp)
}

/// The NOTAUTH answer to a bad signature. A BADKEY answer repeats the
/// client's key name (up to 255 bytes) beside the question (as many): where
/// both do not fit in `limit`, the question goes (found by the `transfer`
/// fuzz target's UDP size check: 565 bytes to a 512-byte client).
fn not_auth(head: Head, bad: Bad, limit: usize) -> Vec<u8> {
    let now = unix_now();
    let mut out = Vec::new();
    head.start(Rcode::NotAuth as u8, &mut out);
    bad.clone().sign(&mut out, now);
    if out.len() > limit {
        let bare = Head {
            question: Vec::new(),
            ..head
        };
        bare.start(Rcode::NotAuth as u8, &mut out);
        bad.sign(&mut out, now);
    }
    out
}

/// An AXFR or IXFR request: who may have it, then which zone and how.
fn transfer(
    shared: &Arc<Shared>,
    msg: &Message,
    mut head: Head,
    chain: Option<Chain>,
    peer: SocketAddr,
    tcp: bool,
) -> Messages {
    let q = &msg.queries[0];
    let qtype = q.query_type();
    let refuse = |reason: usize, rcode: u8, chain: Option<Chain>, why: &str| {
        shared.stats.refused[reason].fetch_add(1, Ordering::Relaxed);
        debug!(%peer, ?qtype, why, "zone transfer refused");
        one(&head, rcode, &[], chain)
    };
    if !shared.allow.iter().any(|c| c.contains(peer.ip())) {
        return refuse(
            Refusal::Acl as usize,
            Rcode::Refused as u8,
            chain,
            "client outside transfer.allow",
        );
    }
    if shared.require_tsig && chain.is_none() {
        return refuse(
            Refusal::Unsigned as usize,
            Rcode::Refused as u8,
            chain,
            "unsigned, and require_tsig",
        );
    }
    let qname = crate::wire::name::from_dotted(&q.name().to_ascii()).unwrap_or_default();
    let namespace = shared.zones.namespace_of(&qname);
    // RFC 5936 §2.2.1 / RFC 8945 §5.2: the signature is good, the policy
    // says no: REFUSED, signed (NOTAUTH is for bad signatures and zones we
    // do not serve). Checked before the zone is looked up, so a tenant's key
    // cannot learn which other namespaces exist.
    let scope = chain
        .as_ref()
        .map_or(&[][..], |c| shared.keys.scope(c.key_name()));
    if !scope.is_empty()
        && !namespace
            .as_ref()
            .is_some_and(|ns| scope.iter().any(|s| **s == **ns))
    {
        return refuse(
            Refusal::KeyScope as usize,
            Rcode::Refused as u8,
            chain,
            "the key may transfer only its namespaces' zones",
        );
    }
    let synced = shared.index.is_synced();
    let zone = match (shared.zones.find(&qname), namespace) {
        (Some(i), _) => ZoneId::Fixed(i),
        // Before the first sync no namespace is known: SERVFAIL below.
        (None, Some(ns)) if !synced || shared.index.has_namespace(&qname[..1 + ns.len()]) => {
            ZoneId::Namespace(ns)
        }
        _ => {
            return refuse(
                Refusal::BadRequest as usize,
                Rcode::NotAuth as u8,
                chain,
                "not one of our zones",
            );
        }
    };
    if q.query_class() != DNSClass::IN || (qtype == RecordType::AXFR && !tcp) {
        return refuse(
            Refusal::BadRequest as usize,
            Rcode::Refused as u8,
            chain,
            "not class IN, or AXFR over UDP",
        );
    }
    if !synced {
        return one(&head, Rcode::ServFail as u8, &[], chain);
    }
    head.zone = Some(shared.zones.wire_of(&zone));
    let request = Request {
        shared,
        head,
        zone,
        chain,
        peer,
        tcp,
    };
    if qtype == RecordType::AXFR {
        return request.axfr(Served::Axfr as usize);
    }
    let client = msg.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    });
    match client {
        Some(serial) => request.ixfr(serial, msg.max_payload()),
        None => refuse_bad(request, "IXFR without the client's SOA"),
    }
}

fn refuse_bad(r: Request<'_>, why: &str) -> Messages {
    r.shared.stats.refused[Refusal::BadRequest as usize].fetch_add(1, Ordering::Relaxed);
    debug!(peer = %r.peer, why, "zone transfer refused");
    one(&r.head, Rcode::FormErr as u8, &[], r.chain)
}

fn id_of(p: &[u8]) -> u16 {
    p.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// An ordinary query that came signed: answered by the query path without
/// its TSIG record, then signed (secondaries sign their SOA checks).
fn signed_query(
    shared: &Shared,
    answerer: &Answerer,
    packet: &[u8],
    last: Option<usize>,
    tcp: bool,
    head: &Head,
    chain: Option<Chain>,
) -> Messages {
    let mut stripped = packet[..last.unwrap_or(packet.len())].to_vec();
    let ar = u16::from_be_bytes([stripped[10], stripped[11]]).saturating_sub(1);
    stripped[10..12].copy_from_slice(&ar.to_be_bytes());
    let mut out = Vec::new();
    // The listener counts the signed reply it sends, as any other.
    if answerer.answer_uncounted(&stripped, tcp, &mut out) != Outcome::Reply {
        return one(head, Rcode::Refused as u8, &[], chain);
    }
    shared.stats.served[Served::SignedQuery as usize].fetch_add(1, Ordering::Relaxed);
    if let Some(chain) = chain {
        // The query path's limit for this query (what its answer fits).
        let max_udp = shared.settings.dns.max_udp_payload;
        let limit = Query::parse(&stripped).map_or(MIN_UDP, |q| q.max_response(tcp, max_udp));
        sign_within(&mut out, chain, head, limit);
    }
    Box::new(std::iter::once(out))
}

/// Signs the answer in `out`. Where its TSIG record takes it past `limit`
/// (a UDP client's payload), RFC 8945 §5.3 has the answer cut to the
/// question, with TC and NOERROR, and signed: the client asks again over TCP.
fn sign_within(out: &mut Vec<u8>, chain: Chain, head: &Head, limit: usize) {
    let now = unix_now();
    let mut first_try = chain.clone();
    first_try.sign(out, now, None);
    if out.len() <= limit {
        return;
    }
    let mut chain = chain;
    head.start(0, out);
    out[2] |= 0x02;
    chain.sign(out, now, None);
}

/// An accepted transfer request.
struct Request<'a> {
    shared: &'a Arc<Shared>,
    head: Head,
    zone: ZoneId,
    chain: Option<Chain>,
    peer: SocketAddr,
    tcp: bool,
}

impl Request<'_> {
    fn soa(&self, serial: u32) -> Vec<u8> {
        self.shared
            .zones
            .soa(&self.shared.settings, &self.zone, serial)
    }

    fn count(&self, kind: usize, serial: u32) {
        self.shared.stats.served[kind].fetch_add(1, Ordering::Relaxed);
        let zone = self.shared.zones.name_of(&self.zone);
        debug!(peer = %self.peer, zone, kind = crate::dns::handoff::TRANSFER_KINDS[kind], serial, "zone transfer");
    }

    /// One of the `max_concurrent` transfer slots, if one is free.
    fn slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.shared.slots).try_acquire_owned().ok()
    }

    /// REFUSED: every transfer slot is taken (the secondary retries).
    fn busy(self) -> Messages {
        self.shared.stats.refused[Refusal::Busy as usize].fetch_add(1, Ordering::Relaxed);
        debug!(peer = %self.peer, "zone transfer refused: max_concurrent reached");
        one(&self.head, Rcode::Refused as u8, &[], self.chain)
    }

    /// What the journal has for the zone since serial `client`, and the
    /// zone's serial.
    fn since(&self, client: u32) -> (Since, u32) {
        let journal = self
            .shared
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &self.zone {
            ZoneId::Fixed(i) => (journal.since(*i as u8, client), journal.current()),
            ZoneId::Namespace(ns) => {
                let wire = self.head.zone.as_deref().unwrap_or_default();
                let since = journal.since_namespace(ns, wire, client);
                (since, journal.namespace_serial(ns))
            }
        }
    }

    /// The whole zone (AXFR, or an AXFR-style IXFR answer).
    fn axfr(self, kind: usize) -> Messages {
        let Some(permit) = self.slot() else {
            return self.busy();
        };
        let Some((serial, published)) = snapshot(self.shared, &self.zone) else {
            debug!(peer = %self.peer, "no consistent snapshot of the zone: SERVFAIL");
            return one(&self.head, Rcode::ServFail as u8, &[], self.chain);
        };
        self.count(kind, serial);
        let s = self.shared;
        let records = ZoneRecords::new(
            Arc::clone(&s.zones),
            Arc::clone(&s.settings),
            &self.zone,
            serial,
            published,
        );
        Box::new(Packer::new(
            self.head,
            records,
            TCP_MESSAGE,
            self.chain,
            Some(permit),
        ))
    }

    /// RFC 1995 §4: the differences since `client`, one SOA when it is
    /// current, the whole zone when the journal does not reach back to it.
    /// Over UDP, what does not fit in `payload` becomes the current SOA alone
    /// (the client then asks over TCP). Differences and the whole zone take
    /// a transfer slot like an AXFR (REFUSED when none is free); one SOA
    /// does not.
    fn ixfr(self, client: u32, payload: u16) -> Messages {
        if !self.tcp {
            // A serial check over UDP: a follower that listens for NOTIFYs
            // on that socket (see `notify`).
            self.shared.followers.seen(Follower {
                addr: self.peer,
                zone: self.zone.clone(),
                key: self.chain.as_ref().map(|c| c.key_name().clone()),
            });
        }
        // Taken before the journal is read, so a refused IXFR copies nothing
        // out of it; given back at once when the answer is one SOA.
        let slot = self.slot();
        let since = self.since(client);
        let (removed, added, current) = match since {
            (Since::Current(current), _) => {
                self.count(Served::IxfrCurrent as usize, current);
                return one(&self.head, 0, &[self.soa(current)], self.chain);
            }
            (Since::Unknown, current) if !self.tcp => {
                self.count(Served::IxfrFull as usize, current);
                return one(&self.head, 0, &[self.soa(current)], self.chain);
            }
            (Since::Unknown, _) => {
                drop(slot);
                return self.axfr(Served::IxfrFull as usize);
            }
            (
                Since::Diff {
                    current,
                    removed,
                    added,
                },
                _,
            ) => (removed, added, current),
        };
        let Some(slot) = slot else {
            return self.busy();
        };
        let soa = self.soa(current);
        let mut records = Vec::with_capacity(removed.len() + added.len() + 4);
        records.push(soa.clone());
        records.push(self.soa(client));
        records.extend(removed);
        records.push(soa.clone());
        records.extend(added);
        records.push(soa.clone());
        self.count(Served::Ixfr as usize, current);
        let max_udp = self.shared.settings.dns.max_udp_payload;
        let limit = if self.tcp {
            TCP_MESSAGE
        } else {
            let room = if self.chain.is_some() { TSIG_ROOM } else { 0 };
            (payload.min(max_udp) as usize).max(512) - room
        };
        let size: usize = records.iter().map(|r| self.head.pushed_len(r)).sum();
        if !self.tcp && self.head.question.len() + 12 + size > limit {
            return one(&self.head, 0, &[soa], self.chain);
        }
        Box::new(Packer::new(
            self.head,
            records.into_iter(),
            limit,
            self.chain,
            Some(slot),
        ))
    }
}

/// The views and the namespaces of one publication.
type Published = (Vec<Arc<ServiceView>>, Vec<String>);

/// The serial of `zone` and the views and namespaces of one publication,
/// read between two publications (a sequence lock: retried while the writer
/// is mid-publish). Waits at most ~20 ms; `None` under a publication that long.
fn snapshot(shared: &Shared, zone: &ZoneId) -> Option<(u32, Published)> {
    for attempt in 0..40 {
        let before = shared.publishing.load(Ordering::SeqCst);
        if before.is_multiple_of(2) {
            let serial = shared.serial_of(zone);
            let views = shared.index.services();
            let namespaces = match zone {
                ZoneId::Fixed(0) => shared.index.namespaces(),
                _ => Vec::new(),
            };
            if shared.publishing.load(Ordering::SeqCst) == before {
                return Some((serial, (views, namespaces)));
            }
        }
        if attempt < 20 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    None
}
