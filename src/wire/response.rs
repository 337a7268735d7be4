//! Writing a response: header, the echoed question, then sections assembled
//! from pre-encoded record sets, records written on demand, and the SOA
//! written in place.

use std::net::IpAddr;

use super::rrset::{self, RecordWriter, RrSetRef};
use super::{MIN_UDP, Query, Rcode, qtype, skip_name, u16_at};

/// Size of our OPT record (root owner, no options).
const OPT_LEN: usize = 11;

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
    Encoded(RrSetRef<'a>),
    /// An SOA record.
    Soa(Soa<'a>),
    /// One synthesized address record owned by the question name, with its TTL.
    Address(IpAddr, u32),
    /// Records a layer above writes on demand (SRV, PTR, endpoint addresses).
    Written(&'a dyn RecordWriter),
}

impl Part<'_> {
    fn len(&self) -> usize {
        match self {
            Part::Encoded(s) => s.bytes.len(),
            Part::Soa(s) => s.len(),
            Part::Address(ip, _) => rrset::address_len(ip),
            Part::Written(w) => w.len(),
        }
    }

    fn count(&self) -> u16 {
        match self {
            Part::Encoded(s) => s.count,
            Part::Soa(_) | Part::Address(..) => 1,
            Part::Written(w) => w.count(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Part::Encoded(s) => out.extend_from_slice(s.bytes),
            Part::Soa(s) => s.write(out),
            Part::Address(ip, ttl) => rrset::push_address(out, 12, *ttl, ip),
            Part::Written(w) => w.write(out),
        }
    }
}

/// Everything a response holds besides the echoed question.
#[derive(Clone, Copy)]
pub struct Response<'a> {
    /// Response code (extended codes go into the OPT record).
    pub rcode: Rcode,
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

impl Response<'_> {
    /// A response with only a response code.
    pub fn code(rcode: Rcode) -> Self {
        Response {
            rcode,
            aa: false,
            ra: false,
            answer: None,
            authority: None,
            additional: None,
        }
    }

    /// The header's flags word for the response to `q`.
    fn flags(&self, q: &Query, truncated: bool) -> u16 {
        let mut flags: u16 = 0x8000 | (q.opcode as u16) << 11;
        for (on, bit) in [
            (self.aa, 0x0400),
            (truncated, 0x0200),
            (q.rd, 0x0100),
            (self.ra, 0x0080),
            (q.cd, 0x0010),
        ] {
            if on {
                flags |= bit;
            }
        }
        flags | (self.rcode.code() & 0x0F)
    }
}

/// Assembles the response to `q` (from `packet`) into `out`, within `limit`
/// bytes: if answer and authority do not fit, the response is the question
/// with TC set (RFC 2181 §9); if only the additional section does not fit it
/// is left out, without TC. `advertise` is the UDP payload size our OPT
/// record offers.
pub fn write_response(
    out: &mut Vec<u8>,
    packet: &[u8],
    q: &Query,
    response: &Response<'_>,
    limit: usize,
    advertise: u16,
) {
    out.clear();
    let question = &packet[12..q.question_end];
    let opt = if q.edns.is_some() { OPT_LEN } else { 0 };
    let len_of = |p: &Option<Part<'_>>| p.as_ref().map_or(0, Part::len);
    let base = 12 + question.len() + opt;
    let needed = base + len_of(&response.answer) + len_of(&response.authority);
    let truncated = needed > limit;
    let with_additional = !truncated && needed + len_of(&response.additional) <= limit;
    let count = |p: &Option<Part<'_>>, on: bool| match p {
        Some(p) if on => p.count(),
        _ => 0,
    };
    let an = count(&response.answer, !truncated);
    let ns = count(&response.authority, !truncated);
    let ar = count(&response.additional, with_additional) + (opt > 0) as u16;
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&response.flags(q, truncated).to_be_bytes());
    for n in [1, an, ns, ar] {
        out.extend_from_slice(&u16::to_be_bytes(n));
    }
    out.extend_from_slice(question);
    if !truncated {
        for p in [&response.answer, &response.authority]
            .into_iter()
            .flatten()
        {
            p.write(out);
        }
        if with_additional && let Some(p) = &response.additional {
            p.write(out);
        }
    }
    if q.edns.is_some() {
        // Root owner, type OPT, our UDP payload size, extended rcode, version 0,
        // no flags (we sign nothing, so DO stays clear), no options.
        out.push(0);
        out.extend_from_slice(&qtype::OPT.to_be_bytes());
        out.extend_from_slice(&advertise.max(MIN_UDP as u16).to_be_bytes());
        out.push((response.rcode.code() >> 4) as u8);
        out.extend_from_slice(&[0, 0, 0, 0, 0]);
    }
}

/// Writes a header-only error response for a packet that could not be parsed
/// (FORMERR, NOTIMP): id and opcode copied, no question.
pub fn write_error_header(out: &mut Vec<u8>, packet: &[u8], id: u16, rcode: Rcode) {
    out.clear();
    let opcode_rd = packet.get(2).map(|b| b & 0x79).unwrap_or(0);
    out.extend_from_slice(&id.to_be_bytes());
    out.push(0x80 | opcode_rd);
    out.push((rcode.code() & 0x0F) as u8);
    out.extend_from_slice(&[0; 8]);
}

/// Cuts the response in `out` down to what response-rate limiting "slips":
/// header with TC set, the question, and our OPT record if there is one
/// (RFC 6891 §7: an EDNS query gets OPT back); no other record, so the client
/// retries over TCP. A response whose records cannot be walked keeps only
/// its header.
pub fn truncate_response(out: &mut Vec<u8>) {
    if out.len() < 12 {
        return;
    }
    let (question_end, opt) = response_layout(out).unwrap_or((12, None));
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

/// (question end, the OPT record's range) of a well-formed response.
fn response_layout(p: &[u8]) -> Option<(usize, Option<(usize, usize)>)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::query::tests::{OPT_1232, query};

    #[test]
    fn truncates_when_the_answer_does_not_fit() {
        let p = query(&["a"], qtype::A, &[], 0);
        let q = Query::parse(&p).unwrap();
        let big = vec![0u8; 600];
        let response = Response {
            answer: Some(Part::Encoded(RrSetRef {
                count: 30,
                bytes: &big,
            })),
            aa: true,
            ..Response::code(Rcode::NoError)
        };
        let mut out = Vec::new();
        write_response(&mut out, &p, &q, &response, 512, 1232);
        assert_eq!(out.len(), 12 + 7);
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        assert_eq!(&out[6..8], &[0, 0]);
        write_response(&mut out, &p, &q, &response, 65535, 1232);
        assert_eq!(out.len(), 12 + 7 + 600);
        assert_eq!(out[2] & 0x02, 0);
        assert_eq!(&out[6..8], &[0, 30]);
    }

    #[test]
    fn truncating_a_response_keeps_header_question_and_opt() {
        let p = query(&["a"], qtype::A, &OPT_1232, 1);
        let q = Query::parse(&p).unwrap();
        let answer = [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, 1];
        let one = RrSetRef {
            count: 1,
            bytes: &answer,
        };
        let response = Response {
            answer: Some(Part::Encoded(one)),
            additional: Some(Part::Encoded(one)),
            aa: true,
            ..Response::code(Rcode::NoError)
        };
        let mut out = Vec::new();
        write_response(&mut out, &p, &q, &response, 1232, 1232);
        assert_eq!(&out[6..12], &[0, 1, 0, 0, 0, 2]);
        truncate_response(&mut out);
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        assert_eq!(&out[4..12], &[0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(out.len(), 12 + 7 + 11, "header, question, OPT");
        assert_eq!(&out[19..22], &[0, 0, 41]);
        // Without EDNS: header and question only.
        let p = query(&["a"], qtype::A, &[], 0);
        let q = Query::parse(&p).unwrap();
        write_response(&mut out, &p, &q, &response, 512, 1232);
        truncate_response(&mut out);
        assert_eq!(out.len(), 12 + 7);
        assert_eq!(&out[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        // A header-only error stays a header, and garbage does not panic.
        write_error_header(&mut out, &p, 7, Rcode::FormErr);
        truncate_response(&mut out);
        assert_eq!(out.len(), 12);
        let mut junk = vec![0xFF; 40];
        truncate_response(&mut junk);
        assert_eq!(junk.len(), 12);
    }
}
