//! Helpers for the zone transfer tests: a transfer client (AXFR/IXFR over
//! TCP and UDP, optionally TSIG-signed, reading every message of the answer)
//! and real secondaries (Knot, BIND) started on loopback ephemeral ports.
#![allow(dead_code)]

pub mod secondary;

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// An answer reduced to what must match between two servers (a primary
/// and its follower): the rcode, the answer and additional records (TTLs
/// included), and the types in the authority section (the SOA serials are
/// each server's own).
pub fn comparable(m: &Message) -> (ResponseCode, Vec<String>, Vec<String>, Vec<RecordType>) {
    let lines = |rs: &[Record]| {
        let mut v: Vec<String> = rs
            .iter()
            .filter(|r| r.record_type() != RecordType::OPT)
            .map(|r| r.to_string().to_ascii_lowercase())
            .collect();
        v.sort();
        v
    };
    (
        m.metadata.response_code,
        lines(&m.answers),
        lines(&m.additionals),
        m.authorities.iter().map(|r| r.record_type()).collect(),
    )
}

/// A base64 secret for tests (32 bytes).
pub const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";
/// Another one: the "wrong key".
pub const WRONG_SECRET: &str = "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3JvbmcxMjM=";

pub fn signer(name: &str, secret: &str) -> TSigner {
    let key = data_encoding::BASE64.decode(secret.as_bytes()).unwrap();
    TSigner::new(
        key,
        TsigAlgorithm::HmacSha256,
        Name::from_ascii(name).unwrap(),
        300,
    )
    .unwrap()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The answer to one transfer request: every message, parsed.
#[derive(Debug)]
pub struct Transfer {
    pub messages: Vec<Message>,
    /// Every message's TSIG verified (only when the request was signed).
    pub verified: bool,
}

impl Transfer {
    pub fn rcode(&self) -> ResponseCode {
        self.messages[0].metadata.response_code
    }

    /// All answer records, in order.
    pub fn records(&self) -> Vec<Record> {
        self.messages
            .iter()
            .flat_map(|m| m.answers.iter().cloned())
            .collect()
    }

    /// The record lines without the SOA ones, sorted (to compare contents).
    pub fn lines_without_soa(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .records()
            .iter()
            .filter(|r| r.record_type() != RecordType::SOA)
            .map(|r| r.to_string().to_ascii_lowercase())
            .collect();
        v.sort();
        v
    }
}

pub fn soa_serial(r: &Record) -> Option<u32> {
    match &r.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    }
}

/// A transfer request for `zone`; IXFR carries `serial` in the authority section.
pub fn request(zone: &str, qtype: RecordType, serial: Option<u32>) -> Message {
    let mut m = Message::new(4321, MessageType::Query, OpCode::Query);
    let apex = Name::from_ascii(format!("{zone}.")).unwrap();
    m.add_query(Query::query(apex.clone(), qtype));
    if let Some(s) = serial {
        let soa = SOA::new(
            Name::from_ascii("ns.example.").unwrap(),
            Name::from_ascii("h.example.").unwrap(),
            s,
            0,
            0,
            0,
            0,
        );
        m.add_authority(Record::from_rdata(apex, 0, RData::SOA(soa)));
    }
    m
}

/// Whether the records so far complete an AXFR or IXFR answer (RFC 1995 §4,
/// RFC 5936 §2.2): one SOA alone; or the current SOA twice (whole zone);
/// or three times when the second record is an older SOA (differences,
/// which the server condenses into one).
fn complete(records: &[Record]) -> bool {
    let Some(current) = records.first().and_then(soa_serial) else {
        return true; // an error, or not a transfer at all
    };
    if records.len() == 1 {
        return true;
    }
    let seen = records
        .iter()
        .filter(|r| soa_serial(r) == Some(current))
        .count();
    let incremental = records.get(1).and_then(soa_serial).is_some();
    seen >= if incremental { 3 } else { 2 }
}

/// Sends `m` (signed with `key` if given) over TCP and reads messages until
/// the answer is complete, the connection closes or 10 s pass.
pub async fn tcp(server: SocketAddr, mut m: Message, key: Option<&TSigner>) -> Transfer {
    let mut verifier = key.map(|k| m.finalize(k, now()).unwrap().unwrap());
    let bytes = m.to_vec().unwrap();
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut out = Transfer {
        messages: Vec::new(),
        verified: verifier.is_some(),
    };
    let read = async {
        while let Ok(len) = s.read_u16().await {
            let mut buf = vec![0u8; len as usize];
            s.read_exact(&mut buf).await.unwrap();
            if let Some(v) = verifier.as_mut() {
                out.verified &= v.verify(&buf).is_ok();
            }
            let msg = Message::from_vec(&buf).unwrap();
            out.messages.push(msg);
            let records: Vec<Record> = out
                .messages
                .iter()
                .flat_map(|m| m.answers.iter().cloned())
                .collect();
            if complete(&records) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("transfer did not finish within 10 s");
    assert!(
        !out.messages.is_empty(),
        "no answer to the transfer request"
    );
    out
}

/// Sends `m` over UDP and parses the one answer.
pub async fn udp(server: SocketAddr, mut m: Message, key: Option<&TSigner>) -> Transfer {
    let verifier = key.map(|k| m.finalize(k, now()).unwrap().unwrap());
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), s.recv_from(&mut buf))
        .await
        .expect("no UDP answer within 3 s")
        .unwrap();
    let verified = verifier.is_some_and(|mut v| v.verify(&buf[..n]).is_ok());
    Transfer {
        messages: vec![Message::from_vec(&buf[..n]).unwrap()],
        verified,
    }
}

/// Sends `m` over TCP and parses only the first message of the answer.
pub async fn first_message(server: SocketAddr, m: Message) -> Message {
    let bytes = m.to_vec().unwrap();
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&bytes).await.unwrap();
    let read = async {
        let len = s.read_u16().await.unwrap();
        let mut buf = vec![0u8; len as usize];
        s.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no answer within 10 s")
}
