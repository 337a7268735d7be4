//! Pre-encoded answer sections, built once per change and copied per query.
//!
//! A response to a query has the layout `header | question | answer | authority
//! | additional`. Every answer we give echoes the question, so the bytes after
//! it depend only on the question's *shape*: a query for
//! `WEB-0.nginx.default.svc.cluster.local` has its question at offset 12 with
//! the same length as the lower-case name. We therefore encode each RRset once,
//! with hickory-proto, as it would follow the canonical question, and name
//! compression pointers (owner `0xC00C`, glue pointing into an SRV target) stay
//! valid for any spelling of that name. The query path never touches hickory.

use std::net::IpAddr;

use hickory_proto::op::{Message, OpCode, Query};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, HINFO, NS, PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The `dns-version` TXT value required by the Kubernetes DNS spec 1.1.0 (§2.2).
pub const SCHEMA_VERSION: &str = "1.1.0";
/// TTL of the `dns-version` record, as CoreDNS serves it (seconds).
pub const SCHEMA_VERSION_TTL: u32 = 28800;

/// Encoded resource records of one section, ready to copy into a response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RrSet {
    /// How many records `bytes` holds (goes into the header count).
    pub count: u16,
    /// The records in wire format, compressed against the canonical question.
    pub bytes: Box<[u8]>,
}

impl RrSet {
    /// True when the set holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Answer and additional sections for one (name, type).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sections {
    /// The answer section.
    pub answer: RrSet,
    /// The additional section (SRV glue); may be left out when it does not fit.
    pub additional: RrSet,
}

/// Encodes `answers` and `additionals` as they follow the question `qname`/`qtype`.
///
/// Returns empty sets when the records cannot be encoded (a name too long for
/// the wire), which callers treat as "no data"; this cannot happen for names
/// built from valid Kubernetes objects.
pub fn encode(
    qname: &Name,
    qtype: RecordType,
    answers: Vec<Record>,
    additionals: Vec<Record>,
) -> Sections {
    let (na, nd) = (answers.len(), additionals.len());
    let mut msg = Message::response(0, OpCode::Query);
    msg.add_query(Query::query(qname.clone(), qtype));
    let Ok(question_only) = msg.to_vec() else {
        return Sections::default();
    };
    msg.add_answers(answers);
    let Ok(with_answers) = msg.to_vec() else {
        return Sections::default();
    };
    msg.add_additionals(additionals);
    let Ok(full) = msg.to_vec() else {
        return Sections::default();
    };
    // Additionals are emitted after the (empty) authority section, so the first
    // two encodings are prefixes of the third.
    let (q, a) = (question_only.len(), with_answers.len());
    Sections {
        answer: RrSet {
            count: na as u16,
            bytes: full[q..a].into(),
        },
        additional: RrSet {
            count: nd as u16,
            bytes: full[a..].into(),
        },
    }
}

/// A name from validated parts; `None` if it is not a valid DNS name.
pub fn name(fqdn: &str) -> Option<Name> {
    let mut n = Name::from_ascii(fqdn).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// An address record (A or AAAA, by family).
pub fn address(owner: &Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, rdata)
}

/// The A and AAAA sets for `owner` from `ips` (in the given order, duplicates dropped).
pub fn address_sets<'a>(
    owner: &Name,
    ttl: u32,
    ips: impl IntoIterator<Item = &'a IpAddr>,
) -> (RrSet, RrSet) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in ips {
        let list = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
        if !list.contains(ip) {
            list.push(*ip);
        }
    }
    let enc = |t, ips: Vec<IpAddr>| {
        encode(
            owner,
            t,
            ips.into_iter().map(|ip| address(owner, ttl, ip)).collect(),
            vec![],
        )
        .answer
    };
    (enc(RecordType::A, v4), enc(RecordType::AAAA, v6))
}

/// One SRV target with its port and addresses (for the glue).
pub struct SrvTarget<'a> {
    /// The target's full name.
    pub target: &'a Name,
    /// The port number.
    pub port: u16,
    /// The target's addresses, written as glue in the additional section.
    pub glue: &'a [IpAddr],
}

/// An SRV set for `owner` with glue. Priority 0 and equal weights, as CoreDNS
/// does for equally good targets (the spec prescribes neither).
pub fn srv_set(owner: &Name, ttl: u32, targets: &[SrvTarget<'_>]) -> Sections {
    let weight = if targets.is_empty() {
        0
    } else {
        (100 / targets.len()).max(1) as u16
    };
    let answers = targets
        .iter()
        .map(|t| {
            Record::from_rdata(
                owner.clone(),
                ttl,
                RData::SRV(SRV::new(0, weight, t.port, t.target.clone())),
            )
        })
        .collect();
    let mut glue = Vec::new();
    let mut seen: Vec<&Name> = Vec::new();
    for t in targets {
        if seen.contains(&t.target) {
            continue;
        }
        seen.push(t.target);
        glue.extend(t.glue.iter().map(|ip| address(t.target, ttl, *ip)));
    }
    encode(owner, RecordType::SRV, answers, glue)
}

/// A single-name record of `rtype` (CNAME, PTR, NS) for `owner` per target.
pub fn name_set(owner: &Name, ttl: u32, rtype: RecordType, targets: &[Name]) -> RrSet {
    let answers = targets
        .iter()
        .map(|t| {
            let rdata = match rtype {
                RecordType::CNAME => RData::CNAME(CNAME(t.clone())),
                RecordType::NS => RData::NS(NS(t.clone())),
                _ => RData::PTR(PTR(t.clone())),
            };
            Record::from_rdata(owner.clone(), ttl, rdata)
        })
        .collect();
    encode(owner, rtype, answers, vec![]).answer
}

/// The `dns-version.<zone>` TXT set.
pub fn version_set(owner: &Name) -> RrSet {
    let r = Record::from_rdata(
        owner.clone(),
        SCHEMA_VERSION_TTL,
        RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
    );
    encode(owner, RecordType::TXT, vec![r], vec![]).answer
}

/// The RFC 8482 §4.2 answer to ANY: one synthesized HINFO record.
pub fn any_hinfo(owner: &Name, ttl: u32) -> RrSet {
    let r = Record::from_rdata(
        owner.clone(),
        ttl,
        RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
    );
    encode(owner, RecordType::HINFO, vec![r], vec![]).answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_compress_to_the_question() {
        let owner = name("web-0.nginx.default.svc.cluster.local").unwrap();
        let (a, aaaa) = address_sets(
            &owner,
            5,
            &["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        );
        assert_eq!(a.count, 1);
        assert_eq!(aaaa.count, 1);
        // owner pointer to offset 12, type A, class IN, TTL 5, 4 bytes, the address
        assert_eq!(
            &*a.bytes,
            &[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, 1]
        );
    }

    #[test]
    fn srv_glue_parses_back_as_a_full_message() {
        let owner = name("_web._tcp.nginx.default.svc.cluster.local").unwrap();
        let t0 = name("web-0.nginx.default.svc.cluster.local").unwrap();
        let t1 = name("web-1.nginx.default.svc.cluster.local").unwrap();
        let ips0 = ["10.0.0.1".parse().unwrap()];
        let ips1 = ["10.0.0.2".parse().unwrap()];
        let s = srv_set(
            &owner,
            5,
            &[
                SrvTarget {
                    target: &t0,
                    port: 80,
                    glue: &ips0,
                },
                SrvTarget {
                    target: &t1,
                    port: 80,
                    glue: &ips1,
                },
            ],
        );
        // Reassemble header + question + sections and let hickory parse it.
        let mut q = Message::response(7, OpCode::Query);
        q.add_query(Query::query(owner.clone(), RecordType::SRV));
        let mut wire = q.to_vec().unwrap();
        wire[7] = 2; // ANCOUNT
        wire[11] = 2; // ARCOUNT
        wire.extend_from_slice(&s.answer.bytes);
        wire.extend_from_slice(&s.additional.bytes);
        let m = Message::from_vec(&wire).unwrap();
        assert_eq!(m.answers.len(), 2);
        assert_eq!(m.additionals[1].name, t1);
        match &m.answers[0].data {
            RData::SRV(srv) => {
                assert_eq!(&srv.target, &t0);
                assert_eq!(srv.port, 80);
            }
            other => panic!("{other:?}"),
        }
    }
}
