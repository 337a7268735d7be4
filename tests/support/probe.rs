//! Minimal clients for probing a running server from tests: DNS over UDP and
//! TCP (queries built and replies parsed with `hickory_proto::op::Message`)
//! and an HTTP/1.1 GET for the admin API.
//!
//! Deliberately small: no retries, so a lost or wrong reply shows up in the
//! test instead of being papered over.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one probe waits for its reply.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Transport of a DNS probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// One datagram each way.
    Udp,
    /// Two-byte length prefix (RFC 1035 §4.2.2).
    Tcp,
}

fn query_bytes(name: &str, qtype: RecordType) -> (u16, Vec<u8>) {
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii(name).expect("test names are valid"),
        qtype,
    ));
    let id = m.metadata.id;
    (id, m.to_vec().expect("a simple query always encodes"))
}

/// Sends one query and parses the reply.
pub async fn query(
    server: SocketAddr,
    proto: Proto,
    name: &str,
    qtype: RecordType,
) -> std::io::Result<Message> {
    let (id, bytes) = query_bytes(name, qtype);
    let reply = tokio::time::timeout(PROBE_TIMEOUT, async {
        match proto {
            Proto::Udp => {
                let sock = UdpSocket::bind("127.0.0.1:0").await?;
                sock.connect(server).await?;
                sock.send(&bytes).await?;
                let mut buf = vec![0u8; 65535];
                let n = sock.recv(&mut buf).await?;
                buf.truncate(n);
                Ok::<_, std::io::Error>(buf)
            }
            Proto::Tcp => {
                let mut s = TcpStream::connect(server).await?;
                let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                s.write_all(&framed).await?;
                let len = s.read_u16().await? as usize;
                let mut buf = vec![0u8; len];
                s.read_exact(&mut buf).await?;
                Ok(buf)
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no DNS reply"))??;
    let m = Message::from_vec(&reply).map_err(std::io::Error::other)?;
    if m.metadata.id != id {
        return Err(std::io::Error::other("reply id does not match the query"));
    }
    Ok(m)
}

/// The reply's rcode; A and AAAA addresses in answer order.
#[allow(unused_imports)] // not every test crate uses both
pub use super::dns::{ips as addresses, rcode};

/// PTR targets in the answer section, as text without the trailing dot.
pub fn ptr_targets(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii().trim_end_matches('.').to_string()),
            _ => None,
        })
        .collect()
}

/// The SOA in the authority section: (record TTL, SOA MINIMUM).
pub fn authority_soa(m: &Message) -> Option<(u32, u32)> {
    m.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some((r.ttl, soa.minimum)),
        _ => None,
    })
}

/// `GET path` on an HTTP/1.1 server; returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
        let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
        Ok((status, body.to_string()))
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTP reply"))?
}
