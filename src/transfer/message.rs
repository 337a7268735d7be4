//! Packing records into response messages: one for an error or a UDP reply,
//! as many as it takes for a zone (RFC 5936 §2.2), each signed when the
//! request was.
//!
//! Every message repeats the question, and owner names inside the zone are
//! compressed against it (the question name is the zone apex), which halves
//! a cluster zone's transfer. Other names are written whole.

use tokio::sync::OwnedSemaphorePermit;

use super::tsig::Chain;

/// Bytes of a response message we fill at most before starting the next
/// one: well under the 65,535 a TCP message may hold, leaving room for TSIG.
pub(crate) const TCP_MESSAGE: usize = 16 * 1024;
/// Room left in each message for its TSIG record.
pub(crate) const TSIG_ROOM: usize = 256;

/// The fixed parts of every message of one response.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    /// Request id.
    pub id: u16,
    /// Opcode and RD, as in the request.
    pub opcode_rd: u8,
    /// The request's question section, raw (empty: none).
    pub question: Vec<u8>,
    /// The zone apex in wire format (for owner compression), if the
    /// question names it.
    pub zone: Option<Vec<u8>>,
}

impl Head {
    /// A message with no record yet: header (QR, AA, `rcode`) and question.
    pub(crate) fn start(&self, rcode: u8, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.id.to_be_bytes());
        out.push(0x80 | 0x04 | self.opcode_rd);
        out.push(rcode & 0x0F);
        let qd = u16::from(!self.question.is_empty());
        out.extend_from_slice(&qd.to_be_bytes());
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&self.question);
    }

    /// Appends `record` (uncompressed wire) to the answer section of `out`,
    /// its owner compressed against the question when inside the zone.
    pub(crate) fn push(&self, out: &mut Vec<u8>, record: &[u8]) {
        let compress_at = self.zone.as_deref().and_then(|z| suffix_at(record, z));
        match compress_at {
            Some((at, end)) if !self.question.is_empty() => {
                out.extend_from_slice(&record[..at]);
                out.extend_from_slice(&[0xC0, 12]);
                out.extend_from_slice(&record[end..]);
            }
            _ => out.extend_from_slice(record),
        }
        let an = u16::from_be_bytes([out[6], out[7]]).saturating_add(1);
        out[6..8].copy_from_slice(&an.to_be_bytes());
    }

    /// Bytes `record` takes once pushed.
    pub(crate) fn pushed_len(&self, record: &[u8]) -> usize {
        match self.zone.as_deref().and_then(|z| suffix_at(record, z)) {
            Some((at, end)) if !self.question.is_empty() => record.len() - (end - at) + 2,
            _ => record.len(),
        }
    }
}

/// Where, in a wire record's owner name, the labels equal to `zone` start
/// and end: the owner's suffix that can become a pointer to the question.
fn suffix_at(record: &[u8], zone: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    loop {
        let len = *record.get(at)? as usize;
        if len > 63 {
            return None;
        }
        if record.get(at..at + zone.len())? == zone {
            return Some((at, at + zone.len()));
        }
        if len == 0 {
            return None;
        }
        at += 1 + len;
    }
}

/// The messages of a zone transfer, packed from `records` as they come.
pub(crate) struct Packer<I> {
    head: Head,
    records: I,
    next: Option<Vec<u8>>,
    limit: usize,
    chain: Option<Chain>,
    started: bool,
    /// The transfer's slot among `max_concurrent`, held until it is dropped.
    _permit: Option<OwnedSemaphorePermit>,
}

impl<I: Iterator<Item = Vec<u8>>> Packer<I> {
    /// Packs `records` into messages of at most `limit` bytes (before TSIG).
    pub(crate) fn new(
        head: Head,
        records: I,
        limit: usize,
        chain: Option<Chain>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            head,
            records,
            next: None,
            limit,
            chain,
            started: false,
            _permit: permit,
        }
    }
}

impl<I: Iterator<Item = Vec<u8>>> Iterator for Packer<I> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.limit + TSIG_ROOM);
        self.head.start(0, &mut out);
        let empty = out.len();
        while let Some(record) = self.next.take().or_else(|| self.records.next()) {
            if out.len() > empty && out.len() + self.head.pushed_len(&record) > self.limit {
                self.next = Some(record);
                break;
            }
            self.head.push(&mut out, &record);
        }
        if out.len() == empty && self.started {
            return None;
        }
        self.started = true;
        if let Some(chain) = self.chain.as_mut() {
            chain.sign(&mut out, super::unix_now(), None);
        }
        Some(out)
    }
}
