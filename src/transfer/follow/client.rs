//! The client side of zone transfers: the primary's SOA (UDP), AXFR and
//! IXFR (TCP, every message of the answer read and, with a key, each one's
//! TSIG verified as a chain, RFC 8945 §5.3.1), parsed with hickory-proto.
//!
//! Every failure comes back as a sentence for the log: the follower keeps
//! its last good zone and says why.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigVerifier, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one exchange with the primary may take (connect, each message).
const TIMEOUT: Duration = Duration::from_secs(5);

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

    /// The primary's SOA for the zone, asked over UDP.
    pub(crate) async fn soa(&self) -> Result<SOA, Why> {
        let (request, mut verifier) = self.request(RecordType::SOA, None)?;
        let bind: SocketAddr = if self.addr.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|e| format!("cannot bind a socket: {e}"))?;
        socket
            .connect(self.addr)
            .await
            .map_err(|e| format!("cannot reach the primary: {e}"))?;
        socket
            .send(&request)
            .await
            .map_err(|e| format!("cannot send the SOA query: {e}"))?;
        let mut buf = vec![0; 65535];
        let id = u16::from_be_bytes([request[0], request[1]]);
        let answer = tokio::time::timeout(TIMEOUT, async {
            loop {
                let n = socket.recv(&mut buf).await?;
                if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                    return Ok::<_, std::io::Error>(buf[..n].to_vec());
                }
            }
        })
        .await
        .map_err(|_| "no answer to the SOA query".to_string())?
        .map_err(|e| format!("the SOA query failed: {e}"))?;
        let m = checked(&answer, verifier.as_mut())?;
        m.answers
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(soa.clone()),
                _ => None,
            })
            .ok_or_else(|| "the answer to the SOA query has no SOA".to_string())
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
fn complete(records: &[Record]) -> bool {
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
