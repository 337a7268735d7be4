//! Transport: binding the DNS sockets, and TCP connection tasks around
//! [`Answerer`] (UDP threads are in `dns::udp`).
//!
//! Several UDP sockets can share one address with `SO_REUSEPORT` (the kernel
//! spreads clients across them). TCP (RFC 7766) runs on tokio: length-prefixed
//! messages, pipelined in order, an idle timeout, and a bound on connections.
//! At the bound a new client is let in by closing the least recently active
//! connection (RFC 7766 §6.2.3 lets servers close idle connections under
//! pressure): otherwise whoever opens the most connections and sits on them
//! would lock everyone else out until the idle timeout.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, trace, warn};

pub use super::udp::{on_thread_start, spawn_udp};

use super::forward::Forwarder;
use super::{Answerer, Outcome};
use crate::error::{Error, Result};

/// Limits on TCP clients.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Open connections at most; a client beyond it takes the place of the
    /// least recently active one.
    pub max_connections: usize,
    /// A connection with no complete query for this long is closed.
    pub idle_timeout: Duration,
}

/// Binds `count` UDP sockets on `addr` sharing the port with `SO_REUSEPORT`.
/// With port 0 the first socket picks the port and the others join it.
/// `recv_buffer` (bytes, 0 = the OS default) bounds the kernel's queue of
/// unanswered queries per socket.
pub fn bind_udp(addr: SocketAddr, count: usize, recv_buffer: usize) -> Result<Vec<UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out: Vec<UdpSocket> = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let bind = |addr: SocketAddr| -> std::io::Result<UdpSocket> {
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            if addr.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.set_reuse_port(true)?;
            if recv_buffer > 0 {
                // Best effort: the kernel caps it at net.core.rmem_max.
                let _ = s.set_recv_buffer_size(recv_buffer);
            }
            s.bind(&addr.into())?;
            Ok(s.into())
        };
        let sock = bind(addr).map_err(|source| Error::Bind {
            proto: "udp",
            addr,
            source,
        })?;
        addr = sock.local_addr()?;
        out.push(sock);
    }
    Ok(out)
}

/// Binds a TCP listener.
pub fn bind_tcp(addr: SocketAddr) -> Result<StdTcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = || -> std::io::Result<StdTcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    bind().map_err(|source| Error::Bind {
        proto: "tcp",
        addr,
        source,
    })
}

/// How long a new client waits for a closed connection's task to let go of
/// its slot before it is turned away.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// One open TCP connection as the accept loop sees it.
struct Conn {
    /// The activity tick of its accept or its last reply (see [`Conns::tick`]).
    last_active: AtomicU64,
    /// Cancelled to close the connection and make room for a new one.
    evict: CancellationToken,
}

/// The open TCP connections: who to close when a new client arrives at the
/// limit. The fd bound itself is the semaphore in [`serve_tcp`] (a closed
/// connection's permit returns only when its task has dropped the socket).
#[derive(Default)]
struct Conns {
    /// A counter, not a clock: only the order of activity matters.
    tick: AtomicU64,
    /// Open connections by id. A std `Mutex`: held for an insert, a remove or
    /// one scan on eviction (at most `max_connections` entries), never across
    /// an `.await`.
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Conns {
    fn now(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    fn insert(&self, id: u64) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            last_active: AtomicU64::new(self.now()),
            evict: CancellationToken::new(),
        });
        // A poisoned lock only means another task panicked mid-insert; the map is still usable.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert(id, Arc::clone(&conn));
        conn
    }

    fn remove(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&id);
    }

    /// Closes the least recently active connection; false if none is left
    /// to close (all are already on their way out).
    fn evict_oldest(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = open
            .iter()
            .min_by_key(|(_, c)| c.last_active.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| open.remove(&id)) {
            Some(conn) => {
                conn.evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serves TCP on `listener` until `stop`; connection tasks go on `tracker`.
pub async fn serve_tcp(
    answerer: Arc<Answerer>,
    listener: StdTcpListener,
    limits: TcpLimits,
    forwarder: Option<Arc<Forwarder>>,
    stop: CancellationToken,
    tracker: TaskTracker,
) -> Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let conns = Arc::new(Conns::default());
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if conns.evict_oldest() {
                    debug!(%peer, "tcp connection limit reached, closing the least recently active");
                }
                let wait = tokio::time::timeout(EVICT_WAIT, Arc::clone(&slots).acquire_owned());
                match tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    r = wait => r,
                } {
                    Ok(Ok(p)) => p,
                    _ => {
                        debug!(%peer, "tcp connection limit reached, closing the new connection");
                        continue;
                    }
                }
            }
        };
        next_id += 1;
        let id = next_id;
        let conn = conns.insert(id);
        let conns = Arc::clone(&conns);
        let answerer = Arc::clone(&answerer);
        let forwarder = forwarder.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let serve = tcp_connection(
                stream,
                &answerer,
                forwarder.as_deref(),
                limits.idle_timeout,
                &stop,
                (&conns, &conn),
            );
            tokio::select! {
                _ = conn.evict.cancelled() => trace!(%peer, "tcp connection closed to make room"),
                r = serve => if let Err(e) = r {
                    trace!(%peer, error = %e, "tcp connection ended");
                },
            }
            conns.remove(id);
        });
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    answerer: &Answerer,
    forwarder: Option<&Forwarder>,
    idle: Duration,
    stop: &CancellationToken,
    (conns, conn): (&Conns, &Conn),
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    // Who asks (autopath tells the client's namespace by it); unknown if gone.
    let peer = stream
        .peer_addr()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
    let mut buf = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    loop {
        // Shutdown closes a connection between queries, never mid-answer.
        let len = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                Ok(Ok(len)) => len as usize,
                Ok(Err(e)) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()), // idle
            },
        };
        buf.resize(len, 0);
        // The whole message must arrive within the idle timeout too: a client
        // that sends a length and stalls does not keep its slot.
        match tokio::time::timeout(idle, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        let received = std::time::Instant::now();
        match answerer.answer_from(&buf, (true, peer), &mut out, received) {
            Outcome::Reply => {}
            Outcome::Drop => continue,
            Outcome::Transfer => {
                transfer(&mut stream, answerer, &buf, idle, (conns, conn)).await?;
                continue;
            }
            Outcome::Autopath => {
                let bytes = super::autopath_complete(answerer, &buf, &out, true).await;
                answerer
                    .stats()
                    .response_packet(true, &bytes, received.elapsed());
                out = bytes;
            }
            outcome @ (Outcome::Forward | Outcome::Chase) => {
                let started = std::time::Instant::now();
                let chain = (outcome == Outcome::Chase).then_some(&out[..]);
                let bytes = match forwarder {
                    Some(f) => f.answer(&buf, chain, true).await,
                    None => None,
                };
                match bytes {
                    Some(bytes) => {
                        answerer
                            .stats()
                            .response_packet(true, &bytes, started.elapsed());
                        out = bytes;
                    }
                    None => {
                        answerer.stats().dropped();
                        continue;
                    }
                }
            }
        }
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        // One reply in flight per connection: a client that pipelines but does
        // not read fills its socket buffers, this write times out and the
        // connection is closed, so its memory here stays one message.
        tokio::time::timeout(idle, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "write timed out"))??;
        conn.last_active.store(conns.now(), Ordering::Relaxed);
    }
}

/// Writes every message of a zone transfer (or a signed reply) handed over by
/// the answerer. Each message must be taken within the idle timeout, so a
/// reader that stalls mid-transfer is cut off like any stalled client; each
/// one taken counts as activity, so a long transfer that progresses is not
/// the first closed at the connection bound.
async fn transfer(
    stream: &mut TcpStream,
    answerer: &Answerer,
    packet: &[u8],
    idle: Duration,
    (conns, conn): (&Conns, &Conn),
) -> std::io::Result<()> {
    let (Some(service), Ok(peer)) = (answerer.transfers(), stream.peer_addr()) else {
        answerer.stats().dropped();
        return Ok(());
    };
    let started = std::time::Instant::now();
    let mut framed = Vec::new();
    let mut first = true;
    for message in service.respond(answerer, packet, peer, true) {
        // One response per request in the stats (its first message), as
        // the request was counted when it was handed over.
        if std::mem::take(&mut first) {
            answerer
                .stats()
                .response_packet(true, &message, started.elapsed());
        }
        framed.clear();
        framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
        framed.extend_from_slice(&message);
        tokio::time::timeout(idle, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "write timed out"))??;
        conn.last_active.store(conns.now(), Ordering::Relaxed);
    }
    if first {
        answerer.stats().dropped();
    }
    Ok(())
}
