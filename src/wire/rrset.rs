//! Resource-record sets in wire format, as they follow a question.
//!
//! A response to a query has the layout `header | question | answer | authority
//! | additional`. Every answer we give echoes the question, so the bytes after
//! it depend only on the question's *shape*: a query for
//! `WEB-0.nginx.default.svc.cluster.local` has its question at offset 12 with
//! the same length as the lower-case name, and compression pointers (owner
//! `0xC00C`, glue pointing at an SRV target) stay valid for any spelling of it.
//!
//! Two ways in: `encode` runs hickory-proto over whole records, for the rare
//! and irregular sets built once (NS, TXT, CNAME, HINFO); the `push_*` writers
//! append the regular ones (A, AAAA, SRV, PTR) with a dozen stores, for what
//! is built per change or written per query. Their output is checked against
//! hickory in this module's and `index::view`'s tests.

use std::net::IpAddr;

use hickory_proto::op::{Message, OpCode, Query};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, HINFO, NS, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::name;
use super::qtype;

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

    /// The set, borrowed.
    pub fn borrowed(&self) -> RrSetRef<'_> {
        RrSetRef {
            count: self.count,
            bytes: &self.bytes,
        }
    }
}

/// Borrowed pre-encoded records: what goes into a response section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RrSetRef<'a> {
    /// How many records `bytes` holds.
    pub count: u16,
    /// The records in wire format, compressed against the canonical question.
    pub bytes: &'a [u8],
}

/// Records a layer above writes per query from its own data (a view's SRV
/// set, the names of an address, an endpoint's addresses), so that the wire
/// layer can size, count and place them without knowing that data.
pub trait RecordWriter {
    /// How many records [`RecordWriter::write`] appends.
    fn count(&self) -> u16;
    /// How many bytes [`RecordWriter::write`] appends.
    fn len(&self) -> usize;
    /// Appends the records.
    fn write(&self, out: &mut Vec<u8>);
    /// Appends as many whole records as fit in `room` bytes, in the order of
    /// [`RecordWriter::write`] (a truncated UDP answer); returns how many.
    /// This default writes them all and cuts the rest off again: writers of
    /// large sets do better.
    fn write_within(&self, out: &mut Vec<u8>, room: usize) -> u16 {
        write_and_cut(self, out, room)
    }
    /// True when there is no record to write.
    fn is_empty(&self) -> bool {
        self.count() == 0
    }
}

/// [`RecordWriter::write_within`] for writers without a cheaper way: writes
/// all of `w`'s records, then cuts off those beyond `room` bytes.
pub fn write_and_cut<W: RecordWriter + ?Sized>(w: &W, out: &mut Vec<u8>, room: usize) -> u16 {
    let start = out.len();
    w.write(out);
    let (count, len) = super::response::records_within(&out[start..], room);
    out.truncate(start + len);
    count.min(w.count())
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
fn encode(
    qname: &Name,
    qtype: RecordType,
    answers: Vec<Record>,
    additionals: Vec<Record>,
) -> Sections {
    if answers.is_empty() && additionals.is_empty() {
        return Sections::default();
    }
    let (na, nd) = (answers.len(), additionals.len());
    // header (12) + question name + type and class (4)
    let question_end = 12 + qname.iter().map(|l| l.len() + 1).sum::<usize>() + 1 + 4;
    let mut msg = Message::response(0, OpCode::Query);
    msg.add_query(Query::query(qname.clone(), qtype));
    msg.add_answers(answers);
    // Where the answer section ends: a second encoding only when there are
    // additionals (they are emitted after the answers, so it is a prefix).
    let answer_end = if nd == 0 {
        None
    } else {
        match msg.to_vec() {
            Ok(v) => Some(v.len()),
            Err(_) => return Sections::default(),
        }
    };
    msg.add_additionals(additionals);
    let Ok(full) = msg.to_vec() else {
        return Sections::default();
    };
    let a = answer_end.unwrap_or(full.len());
    if a > full.len() || question_end > a {
        return Sections::default();
    }
    Sections {
        answer: RrSet {
            count: na as u16,
            bytes: full[question_end..a].into(),
        },
        additional: RrSet {
            count: nd as u16,
            bytes: full[a..].into(),
        },
    }
}

/// An address record (A or AAAA, by family).
fn address(owner: &Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, rdata)
}

/// A dotted name as hickory's `Name`; the root for a name that is not valid
/// (zone names are validated by the configuration before they get here).
fn owner_or_root(dotted: &str) -> Name {
    name::fqdn(dotted).unwrap_or_else(Name::root)
}

/// The A and AAAA sets for `owner` (dotted) from `ips` (in the given order,
/// duplicates dropped).
pub fn address_sets<'a>(
    owner: &str,
    ttl: u32,
    ips: impl IntoIterator<Item = &'a IpAddr>,
) -> (RrSet, RrSet) {
    let owner = &owner_or_root(owner);
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

/// Length of an address record whose owner is a compression pointer.
pub fn address_len(ip: &IpAddr) -> usize {
    if ip.is_ipv4() { 16 } else { 28 }
}

/// Appends an A or AAAA record owned by the name at message offset `owner`
/// (a compression pointer; `12` is the question name).
pub fn push_address(out: &mut Vec<u8>, owner: u16, ttl: u32, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => push_records(out, owner, qtype::A, ttl, &[a.octets()]),
        IpAddr::V6(a) => push_records(out, owner, qtype::AAAA, ttl, &[a.octets()]),
    }
}

/// Appends one record of type `rtype` and class IN per item of `data` (`N`
/// bytes each: an A or AAAA address), owned by the name at message offset
/// `owner`: the fixed part is laid out once, and each record goes in with
/// one copy of constant length. The one writer of address records.
pub fn push_records<const N: usize>(
    out: &mut Vec<u8>,
    owner: u16,
    rtype: u16,
    ttl: u32,
    data: &[[u8; N]],
) {
    const { assert!(N <= 16) };
    let mut rec = [0u8; 28];
    rec[..2].copy_from_slice(&(0xC000 | owner).to_be_bytes());
    rec[2..4].copy_from_slice(&rtype.to_be_bytes());
    rec[4..6].copy_from_slice(&1u16.to_be_bytes());
    rec[6..10].copy_from_slice(&ttl.to_be_bytes());
    rec[10..12].copy_from_slice(&(N as u16).to_be_bytes());
    for d in data {
        rec[12..12 + N].copy_from_slice(d);
        out.extend_from_slice(&rec[..12 + N]);
    }
}

/// Appends an RRset of addresses owned by the question name: one record per
/// distinct address of one family (IPv4 when `v4`), in the given order. Returns the count.
pub fn push_address_set(
    out: &mut Vec<u8>,
    ttl: u32,
    v4: bool,
    ips: impl IntoIterator<Item = IpAddr>,
) -> u16 {
    let mut seen = std::collections::HashSet::new();
    let mut count = 0u16;
    for ip in ips.into_iter().filter(|ip| ip.is_ipv4() == v4) {
        if seen.insert(ip) && count < u16::MAX {
            push_address(out, 12, ttl, &ip);
            count += 1;
        }
    }
    count
}

/// Appends one SRV record owned by the question name with target
/// `<label>.<service>` (or `service` alone), `service` in wire format.
///
/// The target is written whole: RFC 2782 forbids compressing it (Knot and
/// CoreDNS do not either). Priority 0 and equal weights are the caller's
/// choice, as CoreDNS does for equally good targets (the spec prescribes
/// neither).
pub fn push_srv(
    out: &mut Vec<u8>,
    ttl: u32,
    weight: u16,
    port: u16,
    label: Option<&[u8]>,
    service: &[u8],
) {
    let name_len = label.map_or(0, |l| 1 + l.len()) + service.len();
    out.extend_from_slice(&[0xC0, 12]);
    out.extend_from_slice(&qtype::SRV.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&((6 + name_len) as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    if let Some(l) = label {
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.extend_from_slice(service);
}

/// Length of a PTR record owned by the question name with target
/// `<label>.<service>` (an empty `label`: `service` alone).
pub fn ptr_len(label: &[u8], service: &[u8]) -> usize {
    let label = if label.is_empty() { 0 } else { 1 + label.len() };
    12 + label + service.len()
}

/// Appends a PTR record owned by the question name with target
/// `<label>.<service>` (an empty `label`: `service` alone), `service` in wire
/// format.
pub fn push_ptr(out: &mut Vec<u8>, ttl: u32, label: &[u8], service: &[u8]) {
    out.extend_from_slice(&[0xC0, 12, 0, 12, 0, 1]);
    out.extend_from_slice(&ttl.to_be_bytes());
    let rdlen = ptr_len(label, service) - 12;
    out.extend_from_slice(&(rdlen as u16).to_be_bytes());
    if !label.is_empty() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.extend_from_slice(service);
}

/// The NS answer of zone `apex` (dotted) naming `target`, with `target`'s
/// addresses as glue.
pub fn ns_sections(apex: &str, target: &str, ttl: u32, glue: &[IpAddr]) -> Sections {
    let (apex, target) = (owner_or_root(apex), owner_or_root(target));
    let ns = Record::from_rdata(apex.clone(), ttl, RData::NS(NS(target.clone())));
    let glue = glue.iter().map(|ip| address(&target, ttl, *ip)).collect();
    encode(&apex, RecordType::NS, vec![ns], glue)
}

/// The CNAME of `owner` (an ExternalName service) to `target`, both dotted;
/// `None` when either is not a valid name.
pub fn cname_set(owner: &str, ttl: u32, target: &str) -> Option<RrSet> {
    let (owner, target) = (name::fqdn(owner)?, name::fqdn(target)?);
    let r = Record::from_rdata(owner.clone(), ttl, RData::CNAME(CNAME(target)));
    Some(encode(&owner, RecordType::CNAME, vec![r], vec![]).answer)
}

/// A TXT set of one record holding one string, owned by `owner` (dotted).
pub fn txt_set(owner: &str, ttl: u32, text: &str) -> RrSet {
    let owner = owner_or_root(owner);
    let r = Record::from_rdata(owner.clone(), ttl, RData::TXT(TXT::new(vec![text.into()])));
    encode(&owner, RecordType::TXT, vec![r], vec![]).answer
}

/// The RFC 8482 §4.2 answer to ANY: one synthesized HINFO record.
pub fn any_hinfo(ttl: u32) -> RrSet {
    let r = Record::from_rdata(
        Name::root(),
        ttl,
        RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
    );
    encode(&Name::root(), RecordType::HINFO, vec![r], vec![]).answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_compress_to_the_question() {
        let owner = "web-0.nginx.default.svc.cluster.local";
        let (a, aaaa) = address_sets(
            owner,
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
    fn address_records_match_hickory() {
        let owner = "web-0.nginx.default.svc.cluster.local";
        let ips: [IpAddr; 3] = [
            "10.0.0.1".parse().unwrap(),
            "fd00::1".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
        ];
        let (a, aaaa) = address_sets(owner, 5, &ips);
        let mut mine = Vec::new();
        assert_eq!(push_address_set(&mut mine, 5, true, ips.iter().copied()), 1);
        assert_eq!(mine, &*a.bytes);
        mine.clear();
        assert_eq!(
            push_address_set(&mut mine, 5, false, ips.iter().copied()),
            1
        );
        assert_eq!(mine, &*aaaa.bytes);
    }
}
