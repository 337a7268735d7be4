//! The DNS wire format on the query path: parse a query, write a response.
//!
//! This is the one place that reads untrusted bytes per packet, so it is
//! written to allocate nothing and to fail only into response codes: a packet
//! too short for a header is dropped, anything else malformed gets FORMERR
//! (RFC 1035 §4.1.1). It reads exactly what answering needs: header, the one
//! question (lower-cased into a stack buffer with its label offsets), and the
//! EDNS OPT record (RFC 6891). Responses are assembled from pre-encoded
//! sections (see `records`) plus the SOA written in place.

use std::net::IpAddr;

use crate::dns::records;
use crate::index::addrs::Addrs;
use crate::index::{PtrTarget, Srv};

/// Longest name on the wire (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
/// Classic UDP payload limit without EDNS.
pub const MIN_UDP: usize = 512;
/// Size of our OPT record (root owner, no options).
const OPT_LEN: usize = 11;

/// Response codes we produce.
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// Format error.
    pub const FORMERR: u8 = 1;
    /// Server failure.
    pub const SERVFAIL: u8 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// Not implemented.
    pub const NOTIMP: u8 = 4;
    /// Refused.
    pub const REFUSED: u8 = 5;
    /// Bad EDNS version (extended: 16, sent as 0 in the header, 1 in OPT).
    pub const BADVERS: u16 = 16;
}

/// Record types the query path knows by number.
pub mod qtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Pointer.
    pub const PTR: u16 = 12;
    /// Text.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// Service locator.
    pub const SRV: u16 = 33;
    /// EDNS option pseudo-record.
    pub const OPT: u16 = 41;
    /// Transaction signature (RFC 8945).
    pub const TSIG: u16 = 250;
    /// Incremental zone transfer.
    pub const IXFR: u16 = 251;
    /// Zone transfer.
    pub const AXFR: u16 = 252;
    /// Any type.
    pub const ANY: u16 = 255;
}

/// The EDNS parameters of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// The requester's UDP payload size (values below 512 are read as 512).
    pub payload: u16,
    /// EDNS version; we speak 0.
    pub version: u8,
    /// The DO bit.
    pub dnssec_ok: bool,
}

/// A parsed query. Lives on the stack; borrowing nothing from the packet.
#[derive(Clone)]
pub struct Query {
    /// Message id.
    pub id: u16,
    /// Opcode (0 = QUERY).
    pub opcode: u8,
    /// Recursion desired, copied into the response.
    pub rd: bool,
    /// Checking disabled, copied into the response.
    pub cd: bool,
    /// Offset just past the question's class field (end of the question).
    pub question_end: usize,
    /// Wire length of the question name, root label included.
    pub name_len: usize,
    /// The question name in lower case, wire format.
    pub lower: [u8; MAX_NAME],
    /// Offsets (within `lower`) of each label's length byte, root excluded.
    pub label_at: [u8; 128],
    /// Number of labels, root excluded.
    pub labels: usize,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// The OPT record, if any.
    pub edns: Option<Edns>,
    /// A TSIG record ends the message (RFC 8945): signed, answered by zone transfers.
    pub signed: bool,
}

/// Why a packet is not answered normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Too short for a header, or a response: send nothing.
    Drop,
    /// Malformed: FORMERR with the header's id.
    FormErr,
    /// An opcode other than QUERY: NOTIMP.
    NotImp,
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *p.get(at)? as usize;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + len,
            0xC0 => {
                p.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
    None
}

impl Query {
    /// The label `i` (0 = leftmost) as lower-case bytes without its length byte.
    pub fn label(&self, i: usize) -> &[u8] {
        let at = self.label_at[i] as usize;
        let len = self.lower[at] as usize;
        &self.lower[at + 1..at + 1 + len]
    }

    /// Lower-case wire bytes of labels `from..to` (length bytes included).
    pub fn labels_wire(&self, from: usize, to: usize) -> &[u8] {
        let start = self.label_at[from] as usize;
        let end = if to >= self.labels {
            self.name_len - 1
        } else {
            self.label_at[to] as usize
        };
        &self.lower[start..end]
    }

    /// The whole name, lower-case, wire format, root included.
    pub fn name(&self) -> &[u8] {
        &self.lower[..self.name_len]
    }

    /// Offset in the packet of label `i` (for compression pointers to a suffix).
    pub fn packet_offset_of_label(&self, i: usize) -> u16 {
        if i >= self.labels {
            (12 + self.name_len - 1) as u16
        } else {
            12 + self.label_at[i] as u16
        }
    }

    /// The largest response this query may receive.
    pub fn max_response(&self, tcp: bool, max_udp: u16) -> usize {
        if tcp {
            return u16::MAX as usize;
        }
        match self.edns {
            Some(e) => (e.payload.min(max_udp) as usize).max(MIN_UDP),
            None => MIN_UDP,
        }
    }

    /// Parses a query packet.
    pub fn parse(p: &[u8]) -> Result<Query, (Reject, u16)> {
        if p.len() < 12 {
            return Err((Reject::Drop, 0));
        }
        let id = u16::from_be_bytes([p[0], p[1]]);
        let flags = u16::from_be_bytes([p[2], p[3]]);
        if flags & 0x8000 != 0 {
            return Err((Reject::Drop, id));
        }
        let opcode = ((flags >> 11) & 0xF) as u8;
        let qd = u16::from_be_bytes([p[4], p[5]]);
        let an = u16::from_be_bytes([p[6], p[7]]);
        let ns = u16::from_be_bytes([p[8], p[9]]);
        let ar = u16::from_be_bytes([p[10], p[11]]);
        if opcode != 0 {
            return Err((Reject::NotImp, id));
        }
        if qd != 1 {
            return Err((Reject::FormErr, id));
        }
        let mut q = Query {
            id,
            opcode,
            rd: flags & 0x0100 != 0,
            cd: flags & 0x0010 != 0,
            question_end: 0,
            name_len: 0,
            lower: [0; MAX_NAME],
            label_at: [0; 128],
            labels: 0,
            qtype: 0,
            qclass: 0,
            edns: None,
            signed: false,
        };
        let mut at = 12;
        loop {
            let len = *p.get(at).ok_or((Reject::FormErr, id))? as usize;
            if len & 0xC0 != 0 {
                // A pointer in the only question can only point into the header.
                return Err((Reject::FormErr, id));
            }
            if q.name_len + 1 + len > MAX_NAME {
                return Err((Reject::FormErr, id));
            }
            if len == 0 {
                q.lower[q.name_len] = 0;
                q.name_len += 1;
                at += 1;
                break;
            }
            let label = p.get(at + 1..at + 1 + len).ok_or((Reject::FormErr, id))?;
            q.label_at[q.labels] = q.name_len as u8;
            q.labels += 1;
            q.lower[q.name_len] = len as u8;
            for (dst, src) in q.lower[q.name_len + 1..q.name_len + 1 + len]
                .iter_mut()
                .zip(label)
            {
                *dst = src.to_ascii_lowercase();
            }
            q.name_len += 1 + len;
            at += 1 + len;
        }
        q.qtype = u16_at(p, at).ok_or((Reject::FormErr, id))?;
        q.qclass = u16_at(p, at + 2).ok_or((Reject::FormErr, id))?;
        at += 4;
        q.question_end = at;
        // Answer and authority sections are empty in a normal query; skip them
        // if present, then look for the OPT record among the additionals.
        for i in 0..(an as u32 + ns as u32 + ar as u32) {
            let owner = at;
            at = skip_name(p, at).ok_or((Reject::FormErr, id))?;
            let rtype = u16_at(p, at).ok_or((Reject::FormErr, id))?;
            let class = u16_at(p, at + 2).ok_or((Reject::FormErr, id))?;
            let ttl_hi = u16_at(p, at + 4).ok_or((Reject::FormErr, id))?;
            let ttl_lo = u16_at(p, at + 6).ok_or((Reject::FormErr, id))?;
            let rdlen = u16_at(p, at + 8).ok_or((Reject::FormErr, id))? as usize;
            at += 10;
            if p.len() < at + rdlen {
                return Err((Reject::FormErr, id));
            }
            at += rdlen;
            if rtype == qtype::TSIG && i + 1 == an as u32 + ns as u32 + ar as u32 {
                q.signed = true;
            }
            if rtype == qtype::OPT {
                let in_additional = i >= an as u32 + ns as u32;
                // RFC 6891 §6.1.1: one OPT, root owner, in the additional section.
                if !in_additional || q.edns.is_some() || p[owner] != 0 {
                    return Err((Reject::FormErr, id));
                }
                q.edns = Some(Edns {
                    payload: class.max(MIN_UDP as u16),
                    version: (ttl_hi & 0xFF) as u8,
                    dnssec_ok: ttl_lo & 0x8000 != 0,
                });
            }
        }
        Ok(q)
    }
}

/// Writes a header-only error response for a packet that could not be parsed
/// (FORMERR, NOTIMP): id and opcode copied, no question.
pub fn write_error_header(out: &mut Vec<u8>, packet: &[u8], id: u16, rc: u8) {
    out.clear();
    let opcode_rd = packet.get(2).map(|b| b & 0x79).unwrap_or(0);
    out.extend_from_slice(&id.to_be_bytes());
    out.push(0x80 | opcode_rd);
    out.push(rc & 0x0F);
    out.extend_from_slice(&[0; 8]);
}

/// Cuts the response in `out` down to what response-rate limiting "slips":
/// header with TC set, the question, and our OPT record if there is one
/// (RFC 6891 §7: an EDNS query gets OPT back); no other record, so the client
/// retries over TCP. A response whose records cannot be walked keeps only
/// its header.
pub fn truncate_response(out: &mut Vec<u8>) {
    /// (question end, the OPT record's range) of a well-formed response.
    fn layout(p: &[u8]) -> Option<(usize, Option<(usize, usize)>)> {
        let qd = u16_at(p, 4)?;
        let records = [6, 8, 10]
            .iter()
            .map(|&i| u16_at(p, i).map(u32::from))
            .sum::<Option<u32>>()?;
        let mut at = 12;
        if qd > 1 {
            return None;
        }
        if qd == 1 {
            at = skip_name(p, at)? + 4;
        }
        let question_end = at;
        let mut opt = None;
        for _ in 0..records {
            let start = at;
            at = skip_name(p, at)?;
            let rtype = u16_at(p, at)?;
            at += 10 + usize::from(u16_at(p, at + 8)?);
            if at > p.len() {
                return None;
            }
            if rtype == qtype::OPT {
                opt = Some((start, at));
            }
        }
        Some((question_end, opt))
    }
    if out.len() < 12 {
        return;
    }
    let (question_end, opt) = layout(out).unwrap_or((12, None));
    if question_end == 12 {
        out[4..6].copy_from_slice(&[0, 0]);
    }
    out[2] |= 0x02;
    out[6..10].copy_from_slice(&[0; 4]);
    out[10..12].copy_from_slice(&u16::from(opt.is_some()).to_be_bytes());
    match opt {
        Some((start, end)) => {
            out.copy_within(start..end, question_end);
            out.truncate(question_end + (end - start));
        }
        None => out.truncate(question_end),
    }
}

/// The parts of the zone's SOA that do not change per query.
#[derive(Clone, Debug)]
pub struct SoaTemplate {
    /// MNAME and RNAME, uncompressed wire format.
    pub names: Box<[u8]>,
    /// The labels of MNAME and RNAME left of the cluster zone
    /// (`\x02ns\x03dns`, `\x0ahostmaster`): in the cluster zone both names
    /// are written as these plus a pointer to the apex in the question.
    pub in_zone: [Box<[u8]>; 2],
    /// Refresh, retry, expire (seconds).
    pub timers: [u32; 3],
}

/// An SOA to write: the template plus per-answer values.
#[derive(Clone, Copy)]
pub struct Soa<'a> {
    /// The template.
    pub template: &'a SoaTemplate,
    /// Packet offset of the zone apex name in the question (compression target).
    pub owner_at: u16,
    /// The apex is the cluster zone, which MNAME and RNAME end in: compress them.
    pub in_zone: bool,
    /// Serial.
    pub serial: u32,
    /// TTL of the SOA record itself.
    pub ttl: u32,
    /// The MINIMUM field: how long resolvers cache a negative answer (RFC 2308 §5).
    pub minimum: u32,
}

impl Soa<'_> {
    fn names_len(&self) -> usize {
        if self.in_zone {
            self.template.in_zone.iter().map(|l| l.len() + 2).sum()
        } else {
            self.template.names.len()
        }
    }

    fn len(&self) -> usize {
        2 + 10 + self.names_len() + 20
    }

    fn write(&self, out: &mut Vec<u8>) {
        let apex = (0xC000 | self.owner_at).to_be_bytes();
        out.extend_from_slice(&apex);
        out.extend_from_slice(&qtype::SOA.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&self.ttl.to_be_bytes());
        out.extend_from_slice(&((self.names_len() + 20) as u16).to_be_bytes());
        if self.in_zone {
            for labels in &self.template.in_zone {
                out.extend_from_slice(labels);
                out.extend_from_slice(&apex);
            }
        } else {
            out.extend_from_slice(&self.template.names);
        }
        out.extend_from_slice(&self.serial.to_be_bytes());
        for t in self.template.timers {
            out.extend_from_slice(&t.to_be_bytes());
        }
        out.extend_from_slice(&self.minimum.to_be_bytes());
    }
}

/// One section's content.
#[derive(Clone, Copy)]
pub enum Part<'a> {
    /// Pre-encoded records.
    Bytes(u16, &'a [u8]),
    /// An SOA record.
    Soa(Soa<'a>),
    /// One synthesized address record owned by the question name.
    Address(IpAddr, u32),
    /// Address records owned by the question name.
    Addresses(Addrs<'a>, u32),
    /// PTR records owned by the question name.
    Ptr(&'a [PtrTarget], u32),
    /// A service's SRV records.
    SrvAnswer(Srv<'a>),
    /// Their glue.
    SrvGlue(Srv<'a>),
}

/// Length of a PTR record to `t` owned by a pointer to the question.
fn ptr_len(t: &PtrTarget) -> usize {
    let (label, service) = t.name();
    let label = if label.is_empty() { 0 } else { 1 + label.len() };
    12 + label + service.len()
}

impl Part<'_> {
    fn len(&self) -> usize {
        match self {
            Part::Bytes(_, b) => b.len(),
            Part::Soa(s) => s.len(),
            Part::Address(ip, _) => records::address_len(ip),
            Part::Addresses(ips, _) => records::addrs_len(*ips),
            Part::Ptr(targets, _) => targets.iter().map(ptr_len).sum(),
            Part::SrvAnswer(s) => s.answer_len(),
            Part::SrvGlue(s) => s.glue_len(),
        }
    }

    fn count(&self) -> u16 {
        match self {
            Part::Bytes(n, _) => *n,
            Part::Addresses(ips, _) => ips.len().min(u16::MAX as usize) as u16,
            Part::Ptr(targets, _) => targets.len().min(u16::MAX as usize) as u16,
            Part::SrvAnswer(s) => s.count(),
            Part::SrvGlue(s) => s.glue_count(),
            _ => 1,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Part::Bytes(_, b) => out.extend_from_slice(b),
            Part::Soa(s) => s.write(out),
            Part::Address(ip, ttl) => records::push_address(out, 12, *ttl, ip),
            Part::Addresses(ips, ttl) => records::push_addrs(out, 12, *ttl, *ips),
            Part::SrvAnswer(s) => s.write_answer(out),
            Part::SrvGlue(s) => {
                s.write_glue(out);
            }
            Part::Ptr(targets, ttl) => {
                for t in targets.iter().take(u16::MAX as usize) {
                    let (label, service) = t.name();
                    out.extend_from_slice(&[0xC0, 12, 0, 12, 0, 1]);
                    out.extend_from_slice(&ttl.to_be_bytes());
                    let rdlen = ptr_len(t) - 12;
                    out.extend_from_slice(&(rdlen as u16).to_be_bytes());
                    if !label.is_empty() {
                        out.push(label.len() as u8);
                        out.extend_from_slice(label);
                    }
                    out.extend_from_slice(service);
                }
            }
        }
    }
}

/// Everything a response holds besides the echoed question.
#[derive(Clone, Copy)]
pub struct Reply<'a> {
    /// Response code (extended codes > 15 go into the OPT record).
    pub rcode: u16,
    /// Authoritative answer.
    pub aa: bool,
    /// Recursion available.
    pub ra: bool,
    /// Answer section.
    pub answer: Option<Part<'a>>,
    /// Authority section.
    pub authority: Option<Part<'a>>,
    /// Additional section (dropped first when the response does not fit).
    pub additional: Option<Part<'a>>,
}

impl<'a> Reply<'a> {
    /// A reply with only a response code.
    pub fn code(rcode: u8) -> Self {
        Reply {
            rcode: rcode as u16,
            aa: false,
            ra: false,
            answer: None,
            authority: None,
            additional: None,
        }
    }
}

/// Assembles the response to `q` (from `packet`) into `out`, within `limit`
/// bytes: if answer and authority do not fit, the response is the question
/// with TC set (RFC 2181 §9); if only the additional section does not fit it
/// is left out, without TC.
pub fn write_reply(
    out: &mut Vec<u8>,
    packet: &[u8],
    q: &Query,
    reply: &Reply<'_>,
    limit: usize,
    advertise: u16,
) {
    out.clear();
    let question = &packet[12..q.question_end];
    let opt = if q.edns.is_some() { OPT_LEN } else { 0 };
    let len_of = |p: &Option<Part<'_>>| p.as_ref().map_or(0, Part::len);
    let base = 12 + question.len() + opt;
    let needed = base + len_of(&reply.answer) + len_of(&reply.authority);
    let truncated = needed > limit;
    let with_additional = !truncated && needed + len_of(&reply.additional) <= limit;

    let mut flags: u16 = 0x8000 | (q.opcode as u16) << 11;
    if reply.aa {
        flags |= 0x0400;
    }
    if truncated {
        flags |= 0x0200;
    }
    if q.rd {
        flags |= 0x0100;
    }
    if reply.ra {
        flags |= 0x0080;
    }
    if q.cd {
        flags |= 0x0010;
    }
    flags |= reply.rcode & 0x0F;
    let count = |p: &Option<Part<'_>>, on: bool| {
        if on {
            p.as_ref().map_or(0, Part::count)
        } else {
            0
        }
    };
    let an = count(&reply.answer, !truncated);
    let ns = count(&reply.authority, !truncated);
    let ar = count(&reply.additional, with_additional) + (opt > 0) as u16;
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&an.to_be_bytes());
    out.extend_from_slice(&ns.to_be_bytes());
    out.extend_from_slice(&ar.to_be_bytes());
    out.extend_from_slice(question);
    if !truncated {
        for p in [&reply.answer, &reply.authority].into_iter().flatten() {
            p.write(out);
        }
        if with_additional && let Some(p) = &reply.additional {
            p.write(out);
        }
    }
    if q.edns.is_some() {
        // Root owner, type OPT, our UDP payload size, extended rcode, version 0,
        // no flags (we sign nothing, so DO stays clear), no options.
        out.push(0);
        out.extend_from_slice(&qtype::OPT.to_be_bytes());
        out.extend_from_slice(&advertise.max(MIN_UDP as u16).to_be_bytes());
        out.push((reply.rcode >> 4) as u8);
        out.extend_from_slice(&[0, 0, 0, 0, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[&str], qtype: u16, extra: &[u8], arcount: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&arcount.to_be_bytes());
        for l in name {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(extra);
        p
    }

    const OPT_1232: [u8; 11] = [0, 0, 41, 0x04, 0xD0, 0, 0, 0x80, 0, 0, 0];

    #[test]
    fn parses_and_lowercases_the_question() {
        let p = query(&["Web-0", "NGINX", "default"], qtype::A, &OPT_1232, 1);
        let q = Query::parse(&p).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(q.rd);
        assert_eq!(q.labels, 3);
        assert_eq!(q.label(0), b"web-0");
        assert_eq!(q.label(1), b"nginx");
        assert_eq!(q.labels_wire(1, 3), b"\x05nginx\x07default");
        assert_eq!(
            q.edns,
            Some(Edns {
                payload: 1232,
                version: 0,
                dnssec_ok: true
            })
        );
        assert_eq!(q.max_response(false, 1232), 1232);
        assert_eq!(q.max_response(false, 4096), 1232);
    }

    #[test]
    fn rejects_malformed_packets() {
        assert_eq!(Query::parse(&[0; 11]).err(), Some((Reject::Drop, 0)));
        let mut p = query(&["a"], qtype::A, &[], 0);
        p[2] |= 0x80; // a response
        assert_eq!(Query::parse(&p).err().map(|e| e.0), Some(Reject::Drop));
        let mut p = query(&["a"], qtype::A, &[], 0);
        p[5] = 2; // QDCOUNT 2
        assert_eq!(Query::parse(&p).err().map(|e| e.0), Some(Reject::FormErr));
        let mut p = query(&["a"], qtype::A, &[], 0);
        p[5] = 0; // QDCOUNT 0
        assert_eq!(Query::parse(&p).err().map(|e| e.0), Some(Reject::FormErr));
        let p = query(&["a"], qtype::A, &[], 0);
        assert_eq!(
            Query::parse(&p[..p.len() - 1]).err().map(|e| e.0),
            Some(Reject::FormErr)
        );
        // compression pointer in the question
        let mut p = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1];
        assert_eq!(Query::parse(&p).err().map(|e| e.0), Some(Reject::FormErr));
        // a name longer than 255 bytes
        p.truncate(12);
        for _ in 0..5 {
            p.push(60);
            p.extend_from_slice(&[b'a'; 60]);
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(Query::parse(&p).err().map(|e| e.0), Some(Reject::FormErr));
        // two OPT records
        let two = [OPT_1232, OPT_1232].concat();
        let p = query(&["a"], qtype::A, &two, 2);
        assert_eq!(Query::parse(&p).err().map(|e| e.0), Some(Reject::FormErr));
        // OPT with a non-root owner
        let mut bad = OPT_1232.to_vec();
        bad.splice(0..1, [1, b'x', 0]);
        let p = query(&["a"], qtype::A, &bad, 1);
        assert_eq!(Query::parse(&p).err().map(|e| e.0), Some(Reject::FormErr));
        // NOTIFY
        let mut p = query(&["a"], qtype::SOA, &[], 0);
        p[2] = 4 << 3;
        assert_eq!(Query::parse(&p).err().map(|e| e.0), Some(Reject::NotImp));
    }

    #[test]
    fn truncates_when_the_answer_does_not_fit() {
        let p = query(&["a"], qtype::A, &[], 0);
        let q = Query::parse(&p).unwrap();
        let big = vec![0u8; 600];
        let reply = Reply {
            answer: Some(Part::Bytes(30, &big)),
            aa: true,
            ..Reply::code(rcode::NOERROR)
        };
        let mut out = Vec::new();
        write_reply(&mut out, &p, &q, &reply, 512, 1232);
        assert_eq!(out.len(), 12 + 7);
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        assert_eq!(&out[6..8], &[0, 0]);
        write_reply(&mut out, &p, &q, &reply, 65535, 1232);
        assert_eq!(out.len(), 12 + 7 + 600);
        assert_eq!(out[2] & 0x02, 0);
        assert_eq!(&out[6..8], &[0, 30]);
    }

    #[test]
    fn truncating_a_response_keeps_header_question_and_opt() {
        let p = query(&["a"], qtype::A, &OPT_1232, 1);
        let q = Query::parse(&p).unwrap();
        let answer = [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, 1];
        let reply = Reply {
            answer: Some(Part::Bytes(1, &answer)),
            additional: Some(Part::Bytes(1, &answer)),
            aa: true,
            ..Reply::code(rcode::NOERROR)
        };
        let mut out = Vec::new();
        write_reply(&mut out, &p, &q, &reply, 1232, 1232);
        assert_eq!(&out[6..12], &[0, 1, 0, 0, 0, 2]);
        truncate_response(&mut out);
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        assert_eq!(&out[4..12], &[0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(out.len(), 12 + 7 + 11, "header, question, OPT");
        assert_eq!(&out[19..22], &[0, 0, 41]);
        // Without EDNS: header and question only.
        let p = query(&["a"], qtype::A, &[], 0);
        let q = Query::parse(&p).unwrap();
        write_reply(&mut out, &p, &q, &reply, 512, 1232);
        truncate_response(&mut out);
        assert_eq!(out.len(), 12 + 7);
        assert_eq!(&out[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        // A header-only error stays a header, and garbage does not panic.
        write_error_header(&mut out, &p, 7, rcode::FORMERR);
        truncate_response(&mut out);
        assert_eq!(out.len(), 12);
        let mut junk = vec![0xFF; 40];
        truncate_response(&mut junk);
        assert_eq!(junk.len(), 12);
    }
}
