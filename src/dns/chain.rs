//! ExternalName chains: follow a CNAME to its target's records, as CoreDNS.
//!
//! A stub resolver (glibc, musl) does not chase a CNAME itself, so the answer
//! to `<svc> A` for an ExternalName service carries the CNAME and then the
//! target's records: answered here when the target is in our zones (through
//! further ExternalNames, at most [`MAX_LINKS`], loop-safe; a target that
//! does not exist ends the chain with its rcode, RFC 6604), completed by the
//! forwarder when it is outside them and forwarding is on, else the CNAME
//! alone. It is a rare path and works on hickory messages; ordinary names
//! never come here.

use std::collections::HashSet;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::{Answerer, Outcome};
use crate::wire::{Query, Rcode, fit_response};

/// How many CNAMEs one answer follows at most.
pub const MAX_LINKS: usize = 8;

/// A chain as far as our zones take it.
pub(super) struct Chain {
    /// The CNAMEs and the last target's records.
    pub(super) answers: Vec<Record>,
    /// The last target's SOA, for a negative answer.
    pub(super) authorities: Vec<Record>,
    /// The last target's rcode.
    pub(super) rcode: ResponseCode,
    /// The last target, when it is outside our zones.
    pub(super) outside: Option<Name>,
}

/// True for query types a CNAME at the name is followed for.
pub(super) fn chases(qtype: u16) -> bool {
    qtype != u16::from(RecordType::CNAME) && qtype != u16::from(RecordType::ANY)
}

/// Answers `packet`, whose name is an ExternalName service, with the chain
/// into `out`; [`Outcome::Chase`] when `out` holds a chain the forwarder must
/// complete (its last CNAME points outside our zones). Counted in `stats`,
/// when given, from `started`.
pub(super) fn answer(
    a: &Answerer,
    packet: &[u8],
    q: &Query,
    tcp: bool,
    out: &mut Vec<u8>,
    (started, stats): (std::time::Instant, Option<&super::stats::DnsStats>),
) -> Outcome {
    out.clear();
    let Ok(req) = Message::from_vec(packet) else {
        return Outcome::Drop;
    };
    let Some(question) = req.queries.first() else {
        return Outcome::Drop;
    };
    let chain = follow(a, question.name().clone(), question.query_type());
    let chase = a.settings.forward && chain.outside.is_some();
    let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = a.settings.forward;
    resp.metadata.response_code = chain.rcode;
    resp.add_query(question.clone());
    resp.add_answers(chain.answers);
    resp.add_authorities(chain.authorities);
    let max_udp = a.settings.dns.max_udp_payload;
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(max_udp);
        resp.set_edns(e);
    }
    let Ok(bytes) = resp.to_vec() else {
        return Outcome::Drop;
    };
    out.extend_from_slice(&bytes);
    if chase {
        // Counted here; its response where the forwarder's answer is sent.
        if let Some(s) = stats {
            s.request(tcp, Some(q.qtype));
        }
        return Outcome::Chase;
    }
    fit_response(out, q.max_response(tcp, max_udp));
    let truncated = out.get(2).is_some_and(|f| f & 0x02 != 0);
    let rcode = match chain.rcode {
        ResponseCode::NXDomain => Rcode::NxDomain,
        ResponseCode::ServFail => Rcode::ServFail,
        ResponseCode::Refused => Rcode::Refused,
        _ => Rcode::NoError,
    };
    if let Some(s) = stats {
        s.record(tcp, Some(q.qtype), rcode, truncated, started.elapsed());
    }
    Outcome::Reply
}

/// Follows `name`'s CNAMEs for `qtype` through our zones.
pub(super) fn follow(a: &Answerer, mut name: Name, qtype: RecordType) -> Chain {
    let mut chain = Chain {
        answers: Vec::new(),
        authorities: Vec::new(),
        rcode: ResponseCode::NoError,
        outside: None,
    };
    let mut seen = HashSet::new();
    let mut buf = Vec::new();
    for _ in 0..=MAX_LINKS {
        if !seen.insert(LowerName::from(&name)) {
            return chain; // a loop: the CNAMEs so far
        }
        let Some(sub) = sub_answer(a, &name, qtype, &mut buf) else {
            chain.outside = Some(name);
            return chain;
        };
        let target = match sub.answers.as_slice() {
            [r] if r.record_type() == RecordType::CNAME && qtype != RecordType::CNAME => {
                match &r.data {
                    RData::CNAME(c) => Some(c.0.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        chain.answers.extend(sub.answers);
        match target {
            Some(t) => name = t,
            None => {
                chain.authorities = sub.authorities;
                chain.rcode = sub.metadata.response_code;
                return chain;
            }
        }
    }
    chain
}

/// Our own answer to `name qtype`, without following CNAMEs; `None` when the
/// name is outside our zones.
fn sub_answer(a: &Answerer, name: &Name, qtype: RecordType, buf: &mut Vec<u8>) -> Option<Message> {
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    m.add_query(HQuery::query(name.clone(), qtype));
    let packet = m.to_vec().ok()?;
    let q = Query::parse(&packet).ok()?;
    a.catalog.find(&q)?;
    a.write_plain(&packet, &q, u16::MAX as usize, buf);
    Message::from_vec(buf).ok()
}
