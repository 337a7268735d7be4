//! TSIG (RFC 8945) with hickory-proto's `TSigner`: the configured keys,
//! checking a request's signature, and signing every message of a response.
//!
//! hickory signs and verifies single messages; a multi-message transfer is
//! signed here as RFC 8945 §5.3.1 chains it: each later message's MAC covers
//! the previous MAC, the message and only the timers.

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::tsig::{
    TSIG, TsigAlgorithm, TsigError, make_tsig_record, signed_bitmessage_to_buf,
};
use hickory_proto::rr::{Name, Record, TSigResponseContext, TSigner};
use hickory_proto::serialize::binary::BinEncodable;

use crate::config::TsigKeyConfig;
use crate::error::{Error, Result};

/// Seconds a signature's time may differ from ours (RFC 8945 §10: 300).
const FUDGE: u16 = 300;

/// The configured keys.
#[derive(Clone, Default)]
pub(crate) struct Keys(Vec<TSigner>);

impl Keys {
    /// Signers for the configured keys (validated by the config).
    pub(crate) fn new(keys: &[TsigKeyConfig]) -> Result<Self> {
        let bad = |k: &TsigKeyConfig, why: &str| {
            Error::Config(format!("transfer.tsig: key {:?}: {why}", k.name))
        };
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let secret = data_encoding::BASE64
                .decode(k.secret.trim().as_bytes())
                .map_err(|_| bad(k, "the secret is not base64"))?;
            let name = Name::from_ascii(&k.name).map_err(|_| bad(k, "not a key name"))?;
            let algorithm = TsigAlgorithm::from_name(
                Name::from_ascii(&k.algorithm).map_err(|_| bad(k, "unknown algorithm"))?,
            );
            let signer =
                TSigner::new(secret, algorithm, name, FUDGE).map_err(|e| bad(k, &e.to_string()))?;
            out.push(signer);
        }
        Ok(Self(out))
    }

    /// The key named `name` in the configuration.
    pub(crate) fn named(&self, name: &str) -> Option<&TSigner> {
        let mut name = Name::from_ascii(name).ok()?;
        name.set_fqdn(true);
        self.0.iter().find(|s| *s.signer_name() == name)
    }

    /// Checks the signature of `packet` (parsed as `msg`) at Unix time `now`.
    pub(crate) fn verify(&self, packet: &[u8], msg: &Message, now: u64) -> Verified {
        let Some(tsig) = msg.signature() else {
            return Verified::Unsigned;
        };
        let Some(signer) = self.0.iter().find(|s| *s.signer_name() == tsig.name) else {
            return Verified::Bad(Bad::UnknownKey(tsig.name.clone()));
        };
        match verify_mac(signer, packet) {
            // RFC 8945 §5.2.3: within the request's fudge of our time.
            Some((mac, time, fudge)) if now.abs_diff(time) <= u64::from(fudge) => {
                Verified::Signed(Chain::new(signer, mac))
            }
            Some((mac, _, _)) => Verified::Bad(Bad::Time(Chain::new(signer, mac))),
            None => Verified::Bad(Bad::Signature(signer.clone())),
        }
    }
}

/// RFC 8945 §5.2.1-2 for `packet` (a request whose last record is a TSIG
/// record) and `signer`: the key's name and algorithm, and a MAC that
/// verifies in full (no truncated MACs). The MAC, time signed and fudge.
///
/// hickory's `TSigner::verify_message_byte` does the same and then computes
/// the time window as `time - fudge`, which overflows for a time signed below
/// the fudge (a panic where overflow checks are on): the window is ours.
fn verify_mac(signer: &TSigner, packet: &[u8]) -> Option<(Vec<u8>, u64, u16)> {
    let (tbv, record) = signed_bitmessage_to_buf(packet, None, true).ok()?;
    let tsig = record.data;
    if record.name != *signer.signer_name() || tsig.algorithm != *signer.algorithm() {
        return None;
    }
    signer.verify(&tbv, &tsig.mac).ok()?;
    Some((tsig.mac, tsig.time, tsig.fudge))
}

/// A request's signature.
pub(crate) enum Verified {
    /// No TSIG record.
    Unsigned,
    /// Valid: the response is signed with this chain.
    Signed(Chain),
    /// Invalid: NOTAUTH with a TSIG error.
    Bad(Bad),
}

/// Why a signature was refused.
#[derive(Clone)]
pub(crate) enum Bad {
    /// A key we do not have (BADKEY; the answer is unsigned).
    UnknownKey(Name),
    /// A MAC that does not verify (BADSIG; unsigned).
    Signature(TSigner),
    /// A valid MAC outside the time window (BADTIME; signed).
    Time(Chain),
}

/// Signs the messages of one response, each chained to the one before.
#[derive(Clone)]
pub(crate) struct Chain {
    signer: TSigner,
    /// The request's MAC, then each signed message's.
    previous: Vec<u8>,
    first: bool,
}

/// Appends `record` to `message` as its last additional record.
fn append(message: &mut Vec<u8>, record: &Record<TSIG>) -> bool {
    let (Ok(bytes), Some(ar)) = (record.to_bytes(), message.get(10..12)) else {
        return false;
    };
    let ar = u16::from_be_bytes([ar[0], ar[1]]).saturating_add(1);
    message[10..12].copy_from_slice(&ar.to_be_bytes());
    message.extend_from_slice(&bytes);
    true
}

/// The message id (the TSIG "original id").
fn id_of(message: &[u8]) -> u16 {
    message
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

impl Chain {
    fn new(signer: &TSigner, request_mac: Vec<u8>) -> Self {
        Self {
            signer: signer.clone(),
            previous: request_mac,
            first: true,
        }
    }

    /// Signs `message` (a complete response without TSIG) at Unix time `now`
    /// with `error` (BADTIME only), appending the TSIG record.
    pub(crate) fn sign(
        &mut self,
        message: &mut Vec<u8>,
        now: u64,
        error: Option<TsigError>,
    ) -> bool {
        let id = id_of(message);
        let record = if self.first {
            let ctx = TSigResponseContext::new(
                id,
                now,
                self.signer.clone(),
                self.previous.clone(),
                error,
            );
            match ctx.sign(message) {
                Ok(r) => *r,
                Err(_) => return false,
            }
        } else {
            // RFC 8945 §5.3.1: previous MAC, the message, then only the timers.
            let mut tbs = Vec::with_capacity(message.len() + self.previous.len() + 10);
            tbs.extend_from_slice(&(self.previous.len() as u16).to_be_bytes());
            tbs.extend_from_slice(&self.previous);
            tbs.extend_from_slice(message);
            tbs.extend_from_slice(&now.to_be_bytes()[2..]);
            tbs.extend_from_slice(&FUDGE.to_be_bytes());
            let Ok(mac) = self.signer.sign(&tbs) else {
                return false;
            };
            let tsig = TSIG::new(
                self.signer.algorithm().clone(),
                now,
                FUDGE,
                mac,
                id,
                None,
                Vec::new(),
            );
            make_tsig_record(self.signer.signer_name().clone(), tsig)
        };
        self.first = false;
        self.previous = record.data.mac.clone();
        append(message, &record)
    }
}

impl Bad {
    /// Appends the TSIG record of the NOTAUTH answer to `message`.
    pub(crate) fn sign(self, message: &mut Vec<u8>, now: u64) -> bool {
        let id = id_of(message);
        let ctx = match self {
            Bad::UnknownKey(name) => TSigResponseContext::unknown_key(id, now, name),
            Bad::Signature(signer) => TSigResponseContext::bad_signature(id, now, signer),
            Bad::Time(mut chain) => return chain.sign(message, now, Some(TsigError::BadTime)),
        };
        match ctx.sign(message) {
            Ok(r) => append(message, &r),
            Err(_) => false,
        }
    }

    /// The TSIG error, for logs.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Bad::UnknownKey(_) => "unknown key",
            Bad::Signature(_) => "bad signature",
            Bad::Time(_) => "signature time outside the window",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Query};
    use hickory_proto::rr::RecordType;

    fn keys() -> Keys {
        Keys::new(&[TsigKeyConfig {
            name: "k".into(),
            algorithm: "hmac-sha256".into(),
            secret: "c2VjcmV0".into(),
            secret_file: None,
        }])
        .unwrap()
    }

    fn signed(edns: bool, now: u64) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("z.").unwrap(),
            RecordType::SOA,
        ));
        if edns {
            m.set_edns(Edns::new());
        }
        let k = keys();
        m.finalize(k.named("k").unwrap(), now).unwrap();
        m.to_vec().unwrap()
    }

    #[test]
    fn requests_verify_with_and_without_edns() {
        let k = keys();
        for edns in [false, true] {
            let p = signed(edns, 1_000_000);
            let m = Message::from_vec(&p).unwrap();
            assert!(
                matches!(k.verify(&p, &m, 1_000_000), Verified::Signed(_)),
                "edns {edns}"
            );
            assert!(matches!(
                k.verify(&p, &m, 2_000_000),
                Verified::Bad(Bad::Time(_))
            ));
        }
    }

    /// Found by the `transfer` fuzz target (seed
    /// `fuzz/seeds/transfer/crash-tsig-time-below-fudge`): a valid MAC with a
    /// time signed below the fudge made hickory's `verify_message_byte`
    /// compute `time - fudge` and panic on the overflow (debug builds; release
    /// builds wrapped it to an empty window). BADTIME, like any time outside.
    #[test]
    fn a_time_signed_below_the_fudge_is_badtime() {
        let k = keys();
        for time in [0, 1, 299, 300] {
            let p = signed(false, time);
            let m = Message::from_vec(&p).unwrap();
            assert!(
                matches!(k.verify(&p, &m, 1_000_000), Verified::Bad(Bad::Time(_))),
                "time {time}"
            );
            assert!(
                matches!(k.verify(&p, &m, time), Verified::Signed(_)),
                "time {time}, now the same"
            );
        }
    }
}
