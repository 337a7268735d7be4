//! The client side of zone transfers: the primary's SOA (UDP), AXFR and
//! IXFR (TCP, every message of the answer read and, with a key, each one's
//! TSIG verified as a chain, RFC 8945 §5.3.1), parsed with hickory-proto.
//!
//! The serial is checked by IXFR over UDP with ours (RFC 1995 §4: one SOA
//! when we are current or the differences do not fit; the differences when
//! they do), from one [`Checker`] socket that stays open and also takes the
//! primary's NOTIFYs: a primary of ours remembers the address and port an
//! IXFR check came from and tells it of changes there (`notify`), which an
//! SOA query (what BIND and Knot check with) would not teach it.
//!
//! A namespace's transfer zone has no SOA on the query path (its names are
//! the cluster zone's there), so its checks are IXFR only. The cluster zone
//! can also be checked by an SOA query, and is whenever an IXFR check fails
//! (an error such as NOTIMP or FORMERR, no answer within [`PROBE_TIMEOUT`],
//! an answer without the zone's SOA) and an SOA query then answers: a
//! primary that is not ours may not take IXFR over UDP, and one that does
//! not learn from it either. Checks then stay SOA queries for
//! [`PROBE_AGAIN`] before an IXFR is tried again (a lost datagram costs a
//! while of SOA checks, not NOTIFYs for good). A check that fails both ways
//! is a failed check, and changes nothing.
//!
//! Every failure comes back as a sentence for the log: the follower keeps
//! its last good zone and says why.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigVerifier, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace};

/// How long one exchange with the primary may take (connect, each message).
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long an IXFR check of the cluster zone waits before the SOA query
/// is asked instead: a primary that drops IXFR over UDP costs this much a
/// probe. Within a cluster an answer takes milliseconds.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long checks stay SOA queries after an IXFR check failed and an SOA
/// query answered.
pub(crate) const PROBE_AGAIN: Duration = Duration::from_secs(600);

/// Why an exchange with the primary failed, for the log.
pub(crate) type Why = String;

/// The primary and how to talk to it.
pub(crate) struct Primary {
    /// Its address.
    pub addr: SocketAddr,
    /// The zone followed (fully qualified).
    pub zone: Name,
    /// The key requests are signed with and answers must carry.
    pub key: Option<TSigner>,
    /// Where serial checks leave from (and NOTIFYs arrive).
    pub checker: Arc<Checker>,
    /// How the serial is checked.
    pub checks: Checks,
}

/// How a follower checks the primary's serial (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checks {
    /// By IXFR over UDP only: a namespace's transfer zone.
    Ixfr,
    /// By IXFR over UDP, else by SOA query: the cluster zone. `soa_until`:
    /// until then by SOA query (an IXFR check failed where an SOA query
    /// answered).
    IxfrElseSoa { soa_until: Option<Instant> },
}

/// An answer awaited: its id, who must send it, and where it goes.
type Waiting = (u16, SocketAddr, oneshot::Sender<Vec<u8>>);

/// The socket a follower checks from and hears NOTIFYs on.
pub(crate) struct Checker {
    socket: UdpSocket,
    /// The answer awaited (its message id and sender) and where it goes.
    /// A std `Mutex`: held to swap one value, never across an `.await`.
    waiting: Mutex<Option<Waiting>>,
}

impl Checker {
    /// Binds the socket at `addr` (any port of the primary's family).
    pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            socket: UdpSocket::bind(addr).await?,
            waiting: Mutex::new(None),
        })
    }

    /// Reads the socket until `stop`: answers go to the check awaiting
    /// them, NOTIFYs to `notify` (whose answers are sent back).
    pub(crate) async fn listen(
        &self,
        notify: impl Fn(&[u8], SocketAddr) -> crate::dns::handoff::Messages,
        stop: CancellationToken,
    ) {
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, from) = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(got) => got,
                    Err(e) => {
                        // ICMP errors surface here on some systems: go on.
                        trace!(error = %e, "checker socket");
                        continue;
                    }
                },
            };
            let packet = &buf[..n];
            if n < 12 {
                continue;
            }
            if packet[2] & 0x80 != 0 {
                let id = u16::from_be_bytes([packet[0], packet[1]]);
                let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                if waiting
                    .as_ref()
                    .is_some_and(|(want, to, _)| *want == id && *to == from)
                    && let Some((_, _, tx)) = waiting.take()
                {
                    let _ = tx.send(packet.to_vec());
                }
            } else if crate::dns::handoff::is_notify(packet) {
                for reply in notify(packet, from) {
                    if let Err(e) = self.socket.send_to(&reply, from).await {
                        debug!(error = %e, %from, "cannot answer a notify");
                    }
                }
            }
        }
    }

    /// Sends `request` to `to` and waits up to `wait` for the answer with
    /// its id.
    async fn exchange(
        &self,
        request: &[u8],
        to: SocketAddr,
        wait: Duration,
    ) -> Result<Vec<u8>, Why> {
        let id = u16::from_be_bytes([request[0], request[1]]);
        let (tx, rx) = oneshot::channel();
        *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, to, tx));
        self.socket
            .send_to(request, to)
            .await
            .map_err(|e| format!("cannot send the serial check: {e}"))?;
        tokio::time::timeout(wait, rx)
            .await
            .map_err(|_| "no answer to the serial check".to_string())?
            .map_err(|_| "the checker socket closed".to_string())
    }
}

impl Primary {
    /// A request for `qtype` of the zone (IXFR: with `serial` as ours),
    /// signed when there is a key; and the verifier of its answer.
    fn request(
        &self,
        qtype: RecordType,
        serial: Option<u32>,
    ) -> Result<(Vec<u8>, Option<TSigVerifier>), Why> {
        let mut m = Message::new(
            super::super::notify::rand_id(),
            MessageType::Query,
            OpCode::Query,
        );
        m.add_query(Query::query(self.zone.clone(), qtype));
        if let Some(serial) = serial {
            let soa = SOA::new(Name::root(), Name::root(), serial, 0, 0, 0, 0);
            m.add_authority(Record::from_rdata(self.zone.clone(), 0, RData::SOA(soa)));
        }
        let verifier = match &self.key {
            Some(key) => m
                .finalize(key, super::super::unix_now())
                .map_err(|e| format!("cannot sign the request: {e}"))?,
            None => None,
        };
        let bytes = m
            .to_vec()
            .map_err(|e| format!("cannot encode the request: {e}"))?;
        Ok((bytes, verifier))
    }

    /// The primary's SOA record for the zone, asked over UDP.
    pub(crate) async fn soa(&self) -> Result<Record, Why> {
        let (request, mut verifier) = self.request(RecordType::SOA, None)?;
        let answer = self.checker.exchange(&request, self.addr, TIMEOUT).await?;
        let m = checked(&answer, verifier.as_mut())?;
        m.answers
            .into_iter()
            .find(|r| matches!(r.data, RData::SOA(_)))
            .ok_or_else(|| "the answer to the SOA query has no SOA".to_string())
    }

    /// Whether the next check is an IXFR over UDP (else an SOA query).
    pub(crate) fn checks_by_ixfr(&self) -> bool {
        match self.checks {
            Checks::Ixfr => true,
            Checks::IxfrElseSoa { soa_until } => soa_until.is_none_or(|t| Instant::now() >= t),
        }
    }

    /// The records of an IXFR from `serial` over UDP, from the checker
    /// socket: one SOA when current (or when the differences do not fit),
    /// else the differences or the whole zone. An answer that does not
    /// start with the zone's SOA is an error; a truncated one counts as its
    /// first SOA alone (RFC 1995 §2: ask again over TCP).
    pub(crate) async fn ixfr_udp(&self, serial: u32) -> Result<Vec<Record>, Why> {
        let wait = match self.checks {
            Checks::Ixfr => TIMEOUT,
            Checks::IxfrElseSoa { .. } => PROBE_TIMEOUT,
        };
        let (request, mut verifier) = self.request(RecordType::IXFR, Some(serial))?;
        let answer = self.checker.exchange(&request, self.addr, wait).await?;
        let m = checked(&answer, verifier.as_mut())?;
        let mut records = m.answers;
        if records.first().and_then(serial_of).is_none() {
            return Err("the answer to the IXFR check does not start with the zone's SOA".into());
        }
        if m.metadata.truncation {
            records.truncate(1);
        }
        Ok(records)
    }

    /// The answer to a serial check from `ours`: the records of an IXFR
    /// over UDP (see [`Primary::ixfr_udp`]), or the primary's SOA record
    /// alone when the check was, or fell back to, an SOA query.
    pub(crate) async fn check_serial(&mut self, ours: u32) -> Result<Vec<Record>, Why> {
        if !self.checks_by_ixfr() {
            return Ok(vec![self.soa().await?]);
        }
        let why = match self.ixfr_udp(ours).await {
            Ok(records) => {
                self.ixfr_answered();
                return Ok(records);
            }
            Err(why) => why,
        };
        if self.checks == Checks::Ixfr {
            return Err(why);
        }
        let soa = self.soa().await?;
        self.ixfr_failed(&why);
        Ok(vec![soa])
    }

    /// An IXFR check was answered: checks stay (or are again) IXFR.
    pub(crate) fn ixfr_answered(&mut self) {
        if let Checks::IxfrElseSoa { soa_until } = &mut self.checks
            && soa_until.take().is_some()
        {
            info!(primary = %self.addr, "the primary answers serial checks by IXFR over UDP again");
        }
    }

    /// An IXFR check failed for `why` where the primary answered otherwise
    /// (an SOA query, a transfer): SOA queries for [`PROBE_AGAIN`].
    pub(crate) fn ixfr_failed(&mut self, why: &str) {
        let Checks::IxfrElseSoa { soa_until } = &mut self.checks else {
            return;
        };
        if soa_until.replace(Instant::now() + PROBE_AGAIN).is_none() {
            info!(
                primary = %self.addr,
                reason = why,
                again_in = ?PROBE_AGAIN,
                "the primary does not answer serial checks by IXFR over UDP: checking by SOA query (it learns no NOTIFY address from those)"
            );
        } else {
            debug!(primary = %self.addr, reason = why, "IXFR check failed again: SOA queries go on");
        }
    }

    /// The records of an AXFR (`serial` unset) or an IXFR from `serial`:
    /// every answer record of every message, in order.
    pub(crate) async fn transfer(&self, serial: Option<u32>) -> Result<Vec<Record>, Why> {
        let qtype = if serial.is_some() {
            RecordType::IXFR
        } else {
            RecordType::AXFR
        };
        let (request, mut verifier) = self.request(qtype, serial)?;
        let mut stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| "connecting to the primary timed out".to_string())?
            .map_err(|e| format!("cannot connect to the primary: {e}"))?;
        let mut framed = (request.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&request);
        stream
            .write_all(&framed)
            .await
            .map_err(|e| format!("cannot send the {qtype} request: {e}"))?;
        let mut records: Vec<Record> = Vec::new();
        loop {
            let message = tokio::time::timeout(TIMEOUT, read_framed(&mut stream))
                .await
                .map_err(|_| format!("the {qtype} answer stalled"))?
                .map_err(|e| format!("the {qtype} answer broke off: {e}"))?;
            let m = checked(&message, verifier.as_mut())?;
            records.extend(m.answers);
            if complete(&records) {
                return Ok(records);
            }
        }
    }
}

/// Reads one length-prefixed message.
async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Parses an answer, checks its signature (when the request was signed)
/// and that it is not an error.
fn checked(bytes: &[u8], verifier: Option<&mut TSigVerifier>) -> Result<Message, Why> {
    let m = Message::from_vec(bytes).map_err(|e| format!("a broken message: {e}"))?;
    if let Some(v) = verifier {
        if m.signature().is_none() {
            return Err("an unsigned answer to a signed request".into());
        }
        v.verify(bytes)
            .map_err(|e| format!("the answer's TSIG does not verify: {e}"))?;
    }
    match m.metadata.response_code {
        ResponseCode::NoError => Ok(m),
        code => Err(format!("the primary answered {code}")),
    }
}

/// The serial of an SOA record.
pub(crate) fn serial_of(r: &Record) -> Option<u32> {
    match &r.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    }
}

/// Whether the records read so far make a whole AXFR or IXFR answer
/// (RFC 5936 §2.2, RFC 1995 §4): the first record is the new SOA, and the
/// answer ends with it again — once more for an AXFR-style answer, twice
/// more for differences (each difference's own SOAs in between); a lone SOA
/// says the client is current.
pub(crate) fn complete(records: &[Record]) -> bool {
    let Some(new) = records.first().and_then(serial_of) else {
        return true; // Not a transfer answer; the caller refuses it.
    };
    if records.len() == 1 {
        return true;
    }
    if records.last().and_then(serial_of) != Some(new) {
        return false;
    }
    match records.get(1).and_then(serial_of) {
        // Differences: the new SOA opens the last one's additions, then ends.
        Some(old) if old != new => {
            records.iter().filter(|r| serial_of(r) == Some(new)).count() >= 3
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;

    fn soa(serial: u32) -> Record {
        let soa = SOA::new(Name::root(), Name::root(), serial, 1, 1, 1, 1);
        Record::from_rdata(Name::from_ascii("z.").unwrap(), 5, RData::SOA(soa))
    }

    fn a() -> Record {
        Record::from_rdata(
            Name::from_ascii("a.z.").unwrap(),
            5,
            RData::A(A([10, 0, 0, 1].into())),
        )
    }

    #[test]
    fn the_end_of_a_transfer_is_recognised() {
        assert!(complete(&[soa(5)]));
        assert!(!complete(&[soa(5), a()]));
        assert!(complete(&[soa(5), a(), soa(5)]));
        // IXFR: 3 → 5 through 4.
        let diff = [soa(5), soa(3), a(), soa(4), soa(4), soa(5), a(), soa(5)];
        for n in 1..diff.len() {
            assert!(!complete(&diff[..n]) || n == 1, "{n}");
        }
        assert!(complete(&diff));
    }
}
