//! Parsing a query packet: the one place that reads untrusted bytes per packet.
//!
//! It allocates nothing and fails only into response codes: a packet too short
//! for a header (or a response) is dropped, anything else malformed gets
//! FORMERR (RFC 1035 §4.1.1). It reads exactly what answering needs: the
//! header, the one question (lower-cased into a stack buffer with its label
//! offsets) and the EDNS OPT record (RFC 6891).

use super::{MAX_NAME, MIN_UDP, qtype, skip_name, u16_at};

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
    /// A TSIG record ends the message (RFC 8945): signed, for zone transfers.
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

/// The header fields parsing needs: (flags, QDCOUNT, ANCOUNT + NSCOUNT, ARCOUNT).
struct Header {
    flags: u16,
    qd: u16,
    an_ns: u32,
    ar: u16,
}

impl Header {
    fn read(p: &[u8]) -> Self {
        let at = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
        Header {
            flags: at(2),
            qd: at(4),
            an_ns: u32::from(at(6)) + u32::from(at(8)),
            ar: at(10),
        }
    }
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
        &self.lower[self.label_at[from] as usize..self.label_at_or_end(to)]
    }

    /// Offset in `lower` of label `i`, or of the root label when `i == labels`.
    pub fn label_at_or_end(&self, i: usize) -> usize {
        if i >= self.labels {
            self.name_len - 1
        } else {
            self.label_at[i] as usize
        }
    }

    /// The whole name, lower-case, wire format, root included.
    pub fn name(&self) -> &[u8] {
        &self.lower[..self.name_len]
    }

    /// Offset in the packet of label `i` (for compression pointers to a suffix).
    pub fn packet_offset_of_label(&self, i: usize) -> u16 {
        12 + self.label_at_or_end(i) as u16
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

    /// Parses a query packet; an error carries the header's id.
    pub fn parse(p: &[u8]) -> Result<Query, (Reject, u16)> {
        if p.len() < 12 {
            return Err((Reject::Drop, 0));
        }
        let id = u16::from_be_bytes([p[0], p[1]]);
        let h = Header::read(p);
        if h.flags & 0x8000 != 0 {
            return Err((Reject::Drop, id));
        }
        let opcode = ((h.flags >> 11) & 0xF) as u8;
        if opcode != 0 {
            return Err((Reject::NotImp, id));
        }
        if h.qd != 1 {
            return Err((Reject::FormErr, id));
        }
        let mut q = Query {
            id,
            opcode,
            rd: h.flags & 0x0100 != 0,
            cd: h.flags & 0x0010 != 0,
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
        let formerr = (Reject::FormErr, id);
        let at = q.read_question(p).ok_or(formerr)?;
        (q.edns, q.signed) = read_opt(p, at, &h).ok_or(formerr)?;
        Ok(q)
    }

    /// Reads the question at offset 12 (lower-casing its name into `lower`);
    /// returns the offset after it.
    fn read_question(&mut self, p: &[u8]) -> Option<usize> {
        let mut at = 12;
        // The label offsets first; then the name is copied and lower-cased
        // whole (length bytes are below 64, so lower-casing leaves them be):
        // a byte-at-a-time copy was a fifth of the query path's instructions.
        loop {
            let len = *p.get(at)? as usize;
            // A pointer in the only question can only point into the header.
            if len & 0xC0 != 0 || self.name_len + 1 + len > MAX_NAME {
                return None;
            }
            if len == 0 {
                break;
            }
            self.label_at[self.labels] = self.name_len as u8;
            self.labels += 1;
            self.name_len += 1 + len;
            at += 1 + len;
        }
        self.name_len += 1;
        let lower = &mut self.lower[..self.name_len];
        lower.copy_from_slice(&p[12..=at]);
        lower.make_ascii_lowercase();
        at += 1;
        self.qtype = u16_at(p, at)?;
        self.qclass = u16_at(p, at + 2)?;
        self.question_end = at + 4;
        Some(self.question_end)
    }
}

/// Walks the records after the question (answer and authority are empty in a
/// normal query; skipped if present) and returns the OPT record's parameters
/// and whether the last record is a TSIG, or `None` when a record is
/// malformed. RFC 6891 §6.1.1: at most one OPT, with the root owner, in the
/// additional section.
fn read_opt(p: &[u8], mut at: usize, h: &Header) -> Option<(Option<Edns>, bool)> {
    let mut edns = None;
    let mut signed = false;
    let records = h.an_ns + u32::from(h.ar);
    for i in 0..records {
        let owner = at;
        at = skip_name(p, at)?;
        let rtype = u16_at(p, at)?;
        let class = u16_at(p, at + 2)?;
        let ttl_hi = u16_at(p, at + 4)?;
        let ttl_lo = u16_at(p, at + 6)?;
        let rdlen = u16_at(p, at + 8)? as usize;
        at += 10;
        if p.len() < at + rdlen {
            return None;
        }
        at += rdlen;
        signed = rtype == qtype::TSIG && i + 1 == records;
        if rtype == qtype::OPT {
            let in_additional = i >= h.an_ns;
            if !in_additional || edns.is_some() || p[owner] != 0 {
                return None;
            }
            edns = Some(Edns {
                payload: class.max(MIN_UDP as u16),
                version: (ttl_hi & 0xFF) as u8,
                dnssec_ok: ttl_lo & 0x8000 != 0,
            });
        }
    }
    Some((edns, signed))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A query packet for `name` with `extra` records after the question.
    pub(in crate::wire) fn query(name: &[&str], qtype: u16, extra: &[u8], arcount: u16) -> Vec<u8> {
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

    /// An OPT record: root owner, payload 1232, DO set.
    pub(in crate::wire) const OPT_1232: [u8; 11] = [0, 0, 41, 0x04, 0xD0, 0, 0, 0x80, 0, 0, 0];

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
}
