//! The seam between the query path and zone transfers.
//!
//! Zone transfers (AXFR, IXFR) and TSIG-signed requests do not fit the
//! one-packet-in, one-packet-out query path: they need the client's address
//! (access lists), may answer with many messages, and sign what they send.
//! A follower's NOTIFYs from its primary take the same road (they need the
//! sender's address and a signature check too).
//! [`Answerer::answer`](super::Answerer::answer) hands them over with
//! [`Outcome::Transfer`](super::Outcome::Transfer); the listeners then ask the
//! [`TransferService`] installed on the answerer for the messages to send.
//! `crate::transfer` implements it; this module only names the contract, so
//! the query path does not depend on it.

use std::net::SocketAddr;

use super::Answerer;

/// Whether `packet` is a NOTIFY request (RFC 1996: opcode 4, QR clear).
pub fn is_notify(packet: &[u8]) -> bool {
    packet.get(2).is_some_and(|f| f & 0xF8 == 4 << 3)
}

/// The messages of one response, in order; a UDP listener sends the first.
pub type Messages = Box<dyn Iterator<Item = Vec<u8>> + Send>;

/// Serves what [`Outcome::Transfer`](super::Outcome::Transfer) hands over.
pub trait TransferService: Send + Sync {
    /// The response to `packet` from `peer` (over TCP when `tcp`): DNS
    /// messages without the TCP length prefix, produced lazily, so a long
    /// transfer is encoded while it is written. Empty: send nothing.
    fn respond(&self, answerer: &Answerer, packet: &[u8], peer: SocketAddr, tcp: bool) -> Messages;

    /// Counters for the metrics page.
    fn totals(&self) -> TransferTotals;
}

/// Zone transfer counters (since start) and journal gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferTotals {
    /// Requests served, by kind: see [`TRANSFER_KINDS`].
    pub served: [u64; TRANSFER_KINDS.len()],
    /// Requests refused, by reason: see [`REFUSAL_REASONS`].
    pub refused: [u64; REFUSAL_REASONS.len()],
    /// NOTIFY messages: sent (first tries and retries), acknowledged, given up.
    pub notify: [u64; 3],
    /// Bytes of transfer answers sent (DNS messages, without TCP framing).
    pub bytes: u64,
    /// Changes held by the IXFR journal.
    pub journal_changes: u64,
    /// Bytes held by the IXFR journal.
    pub journal_bytes: u64,
    /// The follower's state, when the source follows a primary.
    pub follow: Option<FollowTotals>,
}

/// The transfer source's state (a follower of a primary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FollowTotals {
    /// The primary followed.
    pub primary: Option<SocketAddr>,
    /// The primary's serial we serve (0 before the first transfer).
    pub serial: u32,
    /// The serial the primary last reported (ahead of `serial` while a
    /// transfer fails; 0 before it first answered).
    pub primary_serial: u32,
    /// Unix ms of the last successful check: when the zone served was last
    /// confirmed to be the primary's (0: never).
    pub last_ok_ms: u64,
    /// Unix ms of the last check, whatever came of it (0: none yet).
    pub last_check_ms: u64,
    /// Unix ms when the zone served last changed (a transfer applied).
    pub last_change_ms: u64,
    /// Zone transfers taken: whole zones (AXFR, or an IXFR answered with
    /// the whole zone) and differences (IXFR).
    pub transfers: [u64; FOLLOW_TRANSFER_KINDS.len()],
    /// Checks or transfers that failed.
    pub failures: u64,
    /// NOTIFYs accepted from the primary.
    pub notifies: u64,
    /// Whether the zone is past its expire (answering SERVFAIL).
    pub expired: bool,
}

/// The `kind` label of [`FollowTotals::transfers`].
pub const FOLLOW_TRANSFER_KINDS: [&str; 2] = ["axfr", "ixfr"];

impl FollowTotals {
    /// Milliseconds since the zone was last confirmed current, as of `now_ms`
    /// (0 before the first transfer: nothing is served yet to lag).
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        match self.last_ok_ms {
            0 => 0,
            t => now_ms.saturating_sub(t),
        }
    }
}

/// The `kind` label of [`TransferTotals::served`].
pub const TRANSFER_KINDS: [&str; 5] = [
    "axfr",
    "ixfr",
    // An IXFR answered with the whole zone: its serial was unknown or too old.
    "ixfr_full",
    // An IXFR from a client already at our serial: one SOA.
    "ixfr_current",
    // Ordinary queries signed with TSIG, answered and signed.
    "signed_query",
];

/// The `reason` label of [`TransferTotals::refused`].
pub const REFUSAL_REASONS: [&str; 6] = [
    // Client address outside `allow` (REFUSED).
    "acl",
    // No signature where `require_tsig` wants one (REFUSED).
    "unsigned",
    // Unknown key, bad MAC or time (NOTAUTH).
    "tsig",
    // Too many transfers at once (REFUSED).
    "busy",
    // Not one of our zones (NOTAUTH), AXFR over UDP, malformed (FORMERR).
    "bad_request",
    // A key confined to `namespaces` asked for another zone (REFUSED).
    "key_scope",
];
