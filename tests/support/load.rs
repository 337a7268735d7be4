//! Bounded DNS load for restart tests and benches: UDP queries at a set rate
//! from one socket (answers matched by id, latency kept per query), and TCP
//! clients asking one query at a time on a kept connection.
//!
//! Plain threads and blocking sockets: the load must not share a runtime
//! with the test, which waits on child processes meanwhile.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use super::dns::message;

/// Queries one UDP load sends at most: its ids are its sequence numbers.
pub const UDP_MAX: usize = 65_536;

/// How long a query may wait for its answer after the load stops.
const STRAGGLERS: Duration = Duration::from_secs(2);

/// What a UDP load saw.
#[derive(Debug, Default)]
pub struct UdpReport {
    /// Queries sent.
    pub sent: usize,
    /// Queries answered, NOERROR with one answer.
    pub good: usize,
    /// Answers that were not (rcode, answer count), up to 10.
    pub bad: Vec<String>,
    /// Answers of any kind.
    pub answered: usize,
    /// Per answered query: when it was sent (since the start) and its latency.
    pub latencies: Vec<(Duration, Duration)>,
    /// How long it sent for.
    pub elapsed: Duration,
    /// When it started.
    pub started: Option<Instant>,
}

impl UdpReport {
    /// Queries never answered.
    pub fn lost(&self) -> usize {
        self.sent - self.answered
    }

    /// The rate achieved, queries per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A running UDP load.
pub struct UdpLoad {
    started: Instant,
    stop: Arc<AtomicBool>,
    sender: JoinHandle<(usize, Duration)>,
    receiver: JoinHandle<UdpReport>,
}

/// Sends `name A` to `server` at `rate` queries/s, at most [`UDP_MAX`]
/// queries and `limit`, until [`UdpLoad::finish`].
pub fn udp_load(server: SocketAddr, name: &str, rate: u64, limit: Duration) -> UdpLoad {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the load's socket");
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(8 << 20);
    sock.connect(server).expect("connect the load's socket");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    let rx = sock.try_clone().expect("clone the load's socket");
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..UDP_MAX).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let query = message(name, RecordType::A, None).to_vec().expect("encode");
    let sender = {
        let (stop, sent_at) = (Arc::clone(&stop), Arc::clone(&sent_at));
        std::thread::spawn(move || send_paced(&sock, &query, rate, limit, started, &stop, &sent_at))
    };
    let receiver = {
        let (stop, sent_at) = (Arc::clone(&stop), Arc::clone(&sent_at));
        std::thread::spawn(move || receive(&rx, started, &stop, &sent_at))
    };
    UdpLoad {
        started,
        stop,
        sender,
        receiver,
    }
}

impl UdpLoad {
    /// When it started: [`UdpReport::latencies`] count from here.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops sending, waits [`STRAGGLERS`] for late answers, and reports.
    pub fn finish(self) -> UdpReport {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, elapsed) = self.sender.join().expect("sender thread");
        let mut r = self.receiver.join().expect("receiver thread");
        r.sent = sent;
        r.elapsed = elapsed;
        r
    }
}

/// Sends in 1 ms ticks, as many as the rate owes by then.
fn send_paced(
    sock: &UdpSocket,
    query: &[u8],
    rate: u64,
    limit: Duration,
    started: Instant,
    stop: &AtomicBool,
    sent_at: &[AtomicU64],
) -> (usize, Duration) {
    let mut buf = query.to_vec();
    let mut sent = 0usize;
    while !stop.load(Ordering::Relaxed) && sent < UDP_MAX && started.elapsed() < limit {
        let owed = (started.elapsed().as_secs_f64() * rate as f64) as usize;
        while sent < owed.min(UDP_MAX) {
            buf[..2].copy_from_slice(&(sent as u16).to_be_bytes());
            let at = started.elapsed().as_nanos() as u64 + 1;
            sent_at[sent].store(at, Ordering::Relaxed);
            // A send that fails (ECONNREFUSED from an earlier ICMP) is sent
            // again: the query is not counted as sent until it left.
            if sock.send(&buf).is_ok() {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (sent, started.elapsed())
}

/// Collects answers until the sender stopped and [`STRAGGLERS`] passed.
fn receive(
    sock: &UdpSocket,
    started: Instant,
    stop: &AtomicBool,
    sent_at: &[AtomicU64],
) -> UdpReport {
    let mut r = UdpReport {
        started: Some(started),
        ..UdpReport::default()
    };
    let mut seen = vec![false; UDP_MAX];
    let mut buf = [0u8; 1500];
    let mut stopped_at: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) && stopped_at.is_none() {
            stopped_at = Some(Instant::now());
        }
        if stopped_at.is_some_and(|t| t.elapsed() > STRAGGLERS) {
            return r;
        }
        let Ok(n) = sock.recv(&mut buf) else { continue };
        if n < 12 {
            continue;
        }
        let id = u16::from_be_bytes([buf[0], buf[1]]) as usize;
        let at = sent_at[id].load(Ordering::Relaxed);
        if at == 0 || std::mem::replace(&mut seen[id], true) {
            continue;
        }
        let now = started.elapsed();
        let sent = Duration::from_nanos(at - 1);
        r.answered += 1;
        r.latencies.push((sent, now.saturating_sub(sent)));
        let (rcode, ancount) = (buf[3] & 0xf, u16::from_be_bytes([buf[6], buf[7]]));
        if rcode == 0 && ancount == 1 {
            r.good += 1;
        } else if r.bad.len() < 10 {
            r.bad
                .push(format!("id {id}: rcode {rcode}, {ancount} answers"));
        }
    }
}

/// What the TCP clients saw.
#[derive(Debug, Default)]
pub struct TcpReport {
    /// Queries answered NOERROR with one answer.
    pub good: usize,
    /// Answers that were not, or queries that failed on a new connection too.
    pub bad: Vec<String>,
    /// Queries asked again on a new connection because the server closed
    /// the kept one before answering (RFC 7766 §6.2.3 lets it; clients retry).
    pub retried: usize,
    /// Connections refused: nobody listened on the port.
    pub refused: usize,
}

/// Running TCP clients.
pub struct TcpLoad {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<TcpReport>>,
}

/// `clients` TCP clients asking `name A` one after another on kept
/// connections (reconnecting when the server closes one), each at most
/// 100,000 queries and `limit`.
pub fn tcp_load(server: SocketAddr, name: &str, clients: usize, limit: Duration) -> TcpLoad {
    let stop = Arc::new(AtomicBool::new(false));
    let query = super::dns::framed(&message(name, RecordType::A, None).to_vec().expect("encode"));
    let clients = (0..clients)
        .map(|_| {
            let (stop, query) = (Arc::clone(&stop), query.clone());
            std::thread::spawn(move || tcp_client(server, &query, limit, &stop))
        })
        .collect();
    TcpLoad { stop, clients }
}

impl TcpLoad {
    /// Stops the clients and sums what they saw.
    pub fn finish(self) -> TcpReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut sum = TcpReport::default();
        for c in self.clients {
            let r = c.join().expect("tcp client thread");
            sum.good += r.good;
            sum.retried += r.retried;
            sum.refused += r.refused;
            sum.bad.extend(r.bad.into_iter().take(10));
        }
        sum
    }
}

fn tcp_client(server: SocketAddr, query: &[u8], limit: Duration, stop: &AtomicBool) -> TcpReport {
    let mut r = TcpReport::default();
    let started = Instant::now();
    let mut conn: Option<TcpStream> = None;
    let mut asked = 0;
    while !stop.load(Ordering::Relaxed) && asked < 100_000 && started.elapsed() < limit {
        asked += 1;
        // The kept connection, then (if the server closed it) one new one.
        let mut result = None;
        for attempt in 0..2 {
            if conn.is_none() {
                match TcpStream::connect_timeout(&server, Duration::from_secs(2)) {
                    Ok(c) => {
                        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                        conn = Some(c);
                    }
                    Err(e) => {
                        r.refused += 1;
                        result = Some(Err(format!("connect: {e}")));
                        break;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { break };
            match exchange(c, query) {
                Ok(reply) => {
                    result = Some(Ok(reply));
                    break;
                }
                Err(e) => {
                    conn = None;
                    if attempt == 0 {
                        r.retried += 1;
                    } else {
                        result = Some(Err(e));
                    }
                }
            }
        }
        match result {
            Some(Ok(reply)) if reply.len() >= 12 && reply[3] & 0xf == 0 && reply[7] == 1 => {
                r.good += 1
            }
            Some(Ok(reply)) => r
                .bad
                .push(format!("reply {:?}", &reply[..reply.len().min(12)])),
            Some(Err(e)) => r.bad.push(e),
            None => {}
        }
    }
    r
}

/// One query and its reply on `c`; an error if the connection closed first.
fn exchange(c: &mut TcpStream, query: &[u8]) -> Result<Vec<u8>, String> {
    c.write_all(query).map_err(|e| format!("write: {e}"))?;
    let mut len = [0u8; 2];
    c.read_exact(&mut len).map_err(|e| format!("read: {e}"))?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut reply).map_err(|e| format!("read: {e}"))?;
    Ok(reply)
}

/// The `p`-th percentile (0..=100) of `samples`, zero for none.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * p / 100.0).round() as usize;
    samples[i]
}
