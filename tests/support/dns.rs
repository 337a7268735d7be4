//! A small DNS client for the tests: queries built and replies parsed with
//! hickory-proto over real UDP and TCP sockets, never compared as bytes.
//!
//! Deliberately small: no retries, so a lost or wrong reply shows up in the
//! test instead of being papered over.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one exchange waits for its reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// Transport of a DNS query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// One datagram each way.
    Udp,
    /// Two-byte length prefix (RFC 1035 §4.2.2).
    Tcp,
}

/// Both transports, for tests that check each.
pub const BOTH: [Proto; 2] = [Proto::Udp, Proto::Tcp];

/// A query for `name`/`rtype` with RD set and, with `edns`, an OPT record
/// advertising that payload size. Ids differ from query to query.
pub fn message(name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT_ID: AtomicU16 = AtomicU16::new(4242);
    let id = NEXT_ID.fetch_add(7, Ordering::Relaxed);
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let name = Name::from_ascii(name).unwrap_or_else(|e| panic!("test name {name:?}: {e}"));
    m.add_query(Query::query(name, rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

/// Prefixes `msg` with its two-byte length, as DNS over TCP sends it.
pub fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

/// Reads one length-prefixed message; `None` on EOF, error or
/// [`REPLY_TIMEOUT`] of silence.
pub async fn read_framed<R: AsyncReadExt + Unpin>(c: &mut R) -> Option<Vec<u8>> {
    tokio::time::timeout(REPLY_TIMEOUT, async {
        let len = c.read_u16().await.ok()? as usize;
        let mut buf = vec![0u8; len];
        c.read_exact(&mut buf).await.ok()?;
        Some(buf)
    })
    .await
    .ok()?
}

/// Sends raw bytes (one datagram, or one framed message on a new TCP
/// connection) and returns the reply's bytes; an error when none came
/// within [`REPLY_TIMEOUT`] or the connection failed.
pub async fn try_exchange_raw(
    proto: Proto,
    server: SocketAddr,
    bytes: &[u8],
) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        match proto {
            Proto::Udp => {
                let sock = UdpSocket::bind("127.0.0.1:0").await?;
                sock.connect(server).await?;
                sock.send(bytes).await?;
                let mut buf = vec![0u8; 65535];
                let n = sock.recv(&mut buf).await?;
                buf.truncate(n);
                Ok(buf)
            }
            Proto::Tcp => {
                let mut s = TcpStream::connect(server).await?;
                s.write_all(&framed(bytes)).await?;
                let len = s.read_u16().await? as usize;
                let mut buf = vec![0u8; len];
                s.read_exact(&mut buf).await?;
                Ok(buf)
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no DNS reply"))?
}

/// [`try_exchange_raw`], `None` for no reply.
pub async fn exchange_raw(proto: Proto, server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    try_exchange_raw(proto, server, bytes).await.ok()
}

/// Sends `msg` and parses the reply, checking its id.
pub async fn try_exchange(
    proto: Proto,
    server: SocketAddr,
    msg: &Message,
) -> std::io::Result<Message> {
    let bytes = msg.to_vec().expect("a test query encodes");
    let reply = try_exchange_raw(proto, server, &bytes).await?;
    let m = Message::from_vec(&reply).map_err(std::io::Error::other)?;
    if m.metadata.id != msg.metadata.id {
        return Err(std::io::Error::other("reply id does not match the query"));
    }
    Ok(m)
}

/// Sends `msg` and parses the reply; panics when none comes.
pub async fn exchange(proto: Proto, server: SocketAddr, msg: &Message) -> Message {
    try_exchange(proto, server, msg)
        .await
        .unwrap_or_else(|e| panic!("{:?} over {proto:?} to {server}: {e}", msg.queries))
}

/// One query (RD, EDNS 1232) and its parsed reply.
pub async fn try_query(
    proto: Proto,
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> std::io::Result<Message> {
    try_exchange(proto, server, &message(name, rtype, Some(1232))).await
}

/// [`try_query`]; panics when no reply comes.
pub async fn query(proto: Proto, server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    try_query(proto, server, name, rtype)
        .await
        .unwrap_or_else(|e| panic!("{rtype} {name} over {proto:?} to {server}: {e}"))
}

// ---- reading replies ----------------------------------------------------

/// The reply's response code.
pub fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// A and AAAA addresses in the answer section, in answer order.
pub fn ips(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// [`ips`] as text.
pub fn ip_strings(m: &Message) -> Vec<String> {
    ips(m).iter().map(|i| i.to_string()).collect()
}

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

/// The two numbers of a negative answer's SOA that decide how long it is
/// cached (RFC 2308 §5: the lower of the two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegativeTtl {
    /// The SOA record's own TTL.
    pub ttl: u32,
    /// The SOA's MINIMUM field.
    pub minimum: u32,
}

impl NegativeTtl {
    /// Both numbers the same, as this server always sends them.
    pub const fn both(secs: u32) -> Self {
        NegativeTtl {
            ttl: secs,
            minimum: secs,
        }
    }
}

/// The SOA in the authority section, if any.
pub fn authority_soa(m: &Message) -> Option<NegativeTtl> {
    m.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(NegativeTtl {
            ttl: r.ttl,
            minimum: soa.minimum,
        }),
        _ => None,
    })
}

/// The `in-addr.arpa` name of an IPv4 address.
pub fn reverse_v4(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(_) => panic!("reverse_v4 of an IPv6 address {ip}"),
    }
}

/// An A query's outcome, as far as most tests care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR with these addresses, in answer order.
    Addrs(Vec<IpAddr>),
    /// NOERROR, empty answer.
    NoData,
    NxDomain,
    ServFail,
    Other(ResponseCode),
    /// No reply, or one that does not parse.
    Failed(String),
}

impl Answer {
    /// The outcome of reply `m`.
    pub fn of(m: &Message) -> Answer {
        match rcode(m) {
            ResponseCode::NoError => {
                let a = ips(m);
                if a.is_empty() {
                    Answer::NoData
                } else {
                    Answer::Addrs(a)
                }
            }
            ResponseCode::NXDomain => Answer::NxDomain,
            ResponseCode::ServFail => Answer::ServFail,
            other => Answer::Other(other),
        }
    }

    /// The outcome of an exchange that may have failed.
    pub fn of_result(r: &std::io::Result<Message>) -> Answer {
        match r {
            Ok(m) => Answer::of(m),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }

    /// NOERROR with exactly `ips`, in this order.
    pub fn ips(ips: &[IpAddr]) -> Answer {
        Answer::Addrs(ips.to_vec())
    }
}
