//! DNS on the wire, without policy: names, query parsing, response assembly
//! and record-set encoding.
//!
//! Both the index (which pre-encodes answers when a service changes) and the
//! query path (which copies them into responses) build on this layer, so it is
//! a leaf: it imports nothing of `index`, `dns`, `config`, `sources` or
//! `telemetry`. Records that only a layer above can write per query (SRV and
//! PTR sets taken from a view, endpoint addresses) reach a response through
//! the [`RecordWriter`] trait. hickory-proto is used here for the rare record
//! types encoded once (NS, TXT, CNAME, HINFO), never per query.

pub mod name;
pub mod query;
pub mod response;
pub mod rrset;

pub use query::{Edns, Query, Reject};
pub use response::{
    Part, Response, Soa, SoaTemplate, fit_response, records_within, truncate_response,
    write_error_header, write_response,
};
pub use rrset::{RecordWriter, RrSet, RrSetRef, Sections};

/// Longest name on the wire (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
/// Classic UDP payload limit without EDNS.
pub const MIN_UDP: usize = 512;

/// The response codes we produce (RFC 1035 §4.1.1, RFC 6891 §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Rcode {
    /// No error.
    NoError = 0,
    /// The query is malformed.
    FormErr = 1,
    /// We cannot answer now (the index has not synced yet).
    ServFail = 2,
    /// The name does not exist.
    NxDomain = 3,
    /// An opcode other than QUERY.
    NotImp = 4,
    /// Not ours to answer (outside our zones, zone transfers).
    Refused = 5,
    /// Not authorized: a transfer or NOTIFY whose TSIG signature fails (RFC 8945).
    NotAuth = 9,
    /// An EDNS version we do not speak: 16, sent as 0 in the header and 1 in OPT.
    BadVers = 16,
}

impl Rcode {
    /// The code as a number (extended codes above 15 included).
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// Record types the query path knows by number.
pub mod qtype {
    pub use super::meta_qtype::{ANY, AXFR, IXFR, OPT, TSIG};

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
}

/// The meta-types (RFC 6895 §3.1): they appear in questions or as
/// pseudo-records, never as data a zone holds.
mod meta_qtype {
    /// EDNS option pseudo-record.
    pub const OPT: u16 = 41;
    /// Transaction signature pseudo-record (RFC 8945).
    pub const TSIG: u16 = 250;
    /// Incremental zone transfer.
    pub const IXFR: u16 = 251;
    /// Zone transfer.
    pub const AXFR: u16 = 252;
    /// Any type.
    pub const ANY: u16 = 255;
}

/// Reads a big-endian `u16` at `at`, if the packet is long enough.
pub(crate) fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Skips a (possibly compressed) name; returns the offset after it.
pub(crate) fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
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
