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

    /// Writes as many whole records as fit in `room` bytes, in order; returns
    /// how many.
    fn write_within(&self, out: &mut Vec<u8>, room: usize) -> u16 {
        match self {
            Part::Encoded(s) => {
                let (count, len) = records_within(s.bytes, room);
                out.extend_from_slice(&s.bytes[..len]);
                count.min(s.count)
            }
            // One record, which did not fit.
            Part::Soa(_) | Part::Address(..) => 0,
            Part::Written(w) => w.write_within(out, room),
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
/// bytes. What does not fit is cut as RFC 1035 §4.2.1 and RFC 2181 §9 allow:
/// the additional section first, whole and without TC; then the answer and
/// authority keep as many whole records as fit, in order, with TC set (a
/// stub resolver that never retries over TCP, as musl's, still gets those).
/// Never a partial record. `advertise` is the UDP payload size our OPT record
/// offers.
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
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(question);
    let room = limit.saturating_sub(if q.edns.is_some() { OPT_LEN } else { 0 });
    let mut counts = [0u16; 3];
    let mut truncated = false;
    for (i, part) in [&response.answer, &response.authority]
        .into_iter()
        .enumerate()
    {
        let Some(p) = part else { continue };
        if out.len() + p.len() <= room {
            p.write(out);
            counts[i] = p.count();
        } else {
            counts[i] = p.write_within(out, room.saturating_sub(out.len()));
            truncated = true;
            break;
        }
    }
    if !truncated
        && let Some(p) = &response.additional
        && out.len() + p.len() <= room
    {
        p.write(out);
        counts[2] = p.count();
    }
    if q.edns.is_some() {
        counts[2] += 1;
        // Root owner, type OPT, our UDP payload size, extended rcode, version 0,
        // no flags (we sign nothing, so DO stays clear), no options.
        out.push(0);
        out.extend_from_slice(&qtype::OPT.to_be_bytes());
        out.extend_from_slice(&advertise.max(MIN_UDP as u16).to_be_bytes());
        out.push((response.rcode.code() >> 4) as u8);
        out.extend_from_slice(&[0, 0, 0, 0, 0]);
    }
    out[2..4].copy_from_slice(&response.flags(q, truncated).to_be_bytes());
    for (i, n) in counts.into_iter().enumerate() {
        out[6 + 2 * i..8 + 2 * i].copy_from_slice(&n.to_be_bytes());
    }
}

/// How many whole records from the start of `records` (wire format, owner
/// names compressed or not) fit in `room` bytes, and their length. A record
/// that cannot be walked ends the count.
pub fn records_within(records: &[u8], room: usize) -> (u16, usize) {
    let (mut count, mut at) = (0u16, 0);
    while count < u16::MAX {
        let Some(end) = record_end(records, at) else {
            break;
        };
        if end > room {
            break;
        }
        (count, at) = (count + 1, end);
    }
    (count, at)
}

/// The offset just past the record starting at `at`, if it is whole.
fn record_end(p: &[u8], at: usize) -> Option<usize> {
    let rdata = skip_name(p, at)? + 10;
    let end = rdata + usize::from(u16_at(p, rdata - 2)?);
    (end <= p.len()).then_some(end)
}

/// Cuts the response in `out` to at most `limit` bytes, as [`write_response`]
/// cuts what it writes: records of the additional section (other than OPT)
/// go first, without TC; then the answer and authority sections keep as many
/// whole records as fit, in order, and TC is set. For responses assembled
/// elsewhere (CNAME chains, forwarded answers, signed replies before their
/// TSIG is added): a TSIG record already in `out` would be dropped. A
/// response that cannot be walked becomes the empty TC reply of
/// [`truncate_response`].
pub fn fit_response(out: &mut Vec<u8>, limit: usize) {
    if out.len() <= limit {
        return;
    }
    let Some((question_end, opt)) = response_layout(out) else {
        return truncate_response(out);
    };
    let opt_len = opt.map_or(0, |(start, end)| end - start);
    let room = limit.saturating_sub(opt_len);
    let mut at = question_end;
    let mut kept = [0u16; 2];
    let mut truncated = false;
    'sections: for (i, header_at) in [6, 8].into_iter().enumerate() {
        for _ in 0..u16_at(out, header_at).unwrap_or(0) {
            match record_end(out, at) {
                Some(end) if end <= room => (at, kept[i]) = (end, kept[i] + 1),
                _ => {
                    truncated = true;
                    break 'sections;
                }
            }
        }
    }
    if truncated {
        out[2] |= 0x02;
    }
    out[6..8].copy_from_slice(&kept[0].to_be_bytes());
    out[8..10].copy_from_slice(&kept[1].to_be_bytes());
    out[10..12].copy_from_slice(&u16::from(opt.is_some()).to_be_bytes());
    match opt {
        Some((start, end)) => {
            out.copy_within(start..end, at);
            out.truncate(at + (end - start));
        }
        None => out.truncate(at),
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

    /// `n` A records owned by the question name: 10.0.0.1, 10.0.0.2, ...
    fn a_records(n: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 1..=n {
            rrset::push_address(&mut out, 12, 5, &IpAddr::from([10, 0, 0, i]));
        }
        out
    }

    fn counts(out: &[u8]) -> [u16; 3] {
        [6, 8, 10].map(|i| u16_at(out, i).unwrap())
    }

    #[test]
    fn a_truncated_answer_keeps_the_whole_records_that_fit() {
        let p = query(&["a"], qtype::A, &[], 0);
        let q = Query::parse(&p).unwrap();
        let records = a_records(40);
        let glue = a_records(1);
        let response = Response {
            answer: Some(Part::Encoded(RrSetRef {
                count: 40,
                bytes: &records,
            })),
            additional: Some(Part::Encoded(RrSetRef {
                count: 1,
                bytes: &glue,
            })),
            aa: true,
            ..Response::code(Rcode::NoError)
        };
        let mut out = Vec::new();
        // 512 bytes: header and question (19), then 30 records of 16.
        write_response(&mut out, &p, &q, &response, 512, 1232);
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        assert_eq!(counts(&out), [30, 0, 0], "no glue");
        assert_eq!(out.len(), 19 + 30 * 16);
        assert_eq!(&out[19..], &records[..30 * 16], "the first 30, in order");
        // One byte short of a record: one record less.
        write_response(&mut out, &p, &q, &response, 19 + 16 * 7 - 1, 1232);
        assert_eq!((counts(&out), out.len()), ([6, 0, 0], 19 + 6 * 16));
        // Room for everything: no TC, the glue too.
        write_response(&mut out, &p, &q, &response, 65535, 1232);
        assert_eq!(out[2] & 0x02, 0);
        assert_eq!(counts(&out), [40, 0, 1]);
        // Room for the answer, not the glue: the glue goes, without TC.
        write_response(&mut out, &p, &q, &response, 19 + 40 * 16, 1232);
        assert_eq!(out[2] & 0x02, 0);
        assert_eq!(counts(&out), [40, 0, 0]);
        // With EDNS the OPT record's 11 bytes are kept free, and it is last.
        let p = query(&["a"], qtype::A, &OPT_1232, 1);
        let q = Query::parse(&p).unwrap();
        write_response(&mut out, &p, &q, &response, 512, 1232);
        assert_eq!(counts(&out), [30, 0, 1]);
        assert_eq!(out.len(), 19 + 30 * 16 + 11);
        assert_eq!(&out[out.len() - 11..out.len() - 8], &[0, 0, 41]);
    }

    #[test]
    fn fitting_a_response_cuts_glue_then_answers_and_keeps_opt() {
        let p = query(&["a"], qtype::A, &OPT_1232, 1);
        let q = Query::parse(&p).unwrap();
        let records = a_records(10);
        let response = Response {
            answer: Some(Part::Encoded(RrSetRef {
                count: 10,
                bytes: &records,
            })),
            additional: Some(Part::Encoded(RrSetRef {
                count: 10,
                bytes: &records,
            })),
            aa: true,
            ..Response::code(Rcode::NoError)
        };
        let mut whole = Vec::new();
        write_response(&mut whole, &p, &q, &response, 65535, 1232);
        assert_eq!(counts(&whole), [10, 0, 11]);
        let opt = whole[whole.len() - 11..].to_vec();
        // Room for the answer and OPT: the glue goes, without TC.
        let mut out = whole.clone();
        fit_response(&mut out, 19 + 160 + 11);
        assert_eq!(out[2] & 0x02, 0);
        assert_eq!(counts(&out), [10, 0, 1]);
        assert_eq!(&out[19..179], &records[..]);
        assert_eq!(&out[179..], &opt[..]);
        // Less: the answers that fit, TC, OPT last.
        let mut out = whole.clone();
        fit_response(&mut out, 19 + 100 + 11);
        assert_eq!(out[2] & 0x02, 0x02);
        assert_eq!(counts(&out), [6, 0, 1]);
        assert_eq!(&out[19..115], &records[..96]);
        assert_eq!(&out[115..], &opt[..]);
        // As write_response cuts it.
        let mut written = Vec::new();
        write_response(&mut written, &p, &q, &response, 19 + 100 + 11, 1232);
        assert_eq!(written, out);
        // What fits is left alone; garbage becomes the empty TC reply.
        let mut same = whole.clone();
        fit_response(&mut same, whole.len());
        assert_eq!(same, whole);
        let mut junk = vec![0xFF; 40];
        fit_response(&mut junk, 20);
        assert_eq!(junk.len(), 12);
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
