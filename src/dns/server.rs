//! Transport: UDP worker threads and TCP connection tasks around [`Answerer`].
//!
//! UDP is served by one OS thread per socket doing blocking `recv_from` /
//! `send_to` into buffers it reuses: the answer is synchronous, so a runtime
//! would only add a wake-up per packet. Several sockets can share one address
//! with `SO_REUSEPORT` (the kernel spreads clients across them), which is how
//! `threads` scales over cores. TCP (RFC 7766) runs on tokio: length-prefixed
//! messages, pipelined in order, an idle timeout, and a bound on connections.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, trace, warn};

use super::forward::{Forwarder, UdpForward};
use super::{Answerer, Outcome};
use crate::error::{Error, Result};

/// How often a UDP thread looks at the shutdown token while idle.
const UDP_POLL: Duration = Duration::from_millis(200);

/// Limits on TCP clients.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Open connections at most; further clients are closed at once.
    pub max_connections: usize,
    /// A connection with no complete query for this long is closed.
    pub idle_timeout: Duration,
}

/// Binds `count` UDP sockets on `addr` sharing the port with `SO_REUSEPORT`.
/// With port 0 the first socket picks the port and the others join it.
pub fn bind_udp(addr: SocketAddr, count: usize) -> Result<Vec<UdpSocket>> {
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
            // Room for bursts while a worker is busy: 4 MiB asked, the kernel caps it.
            let _ = s.set_recv_buffer_size(4 << 20);
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

/// Starts one thread per UDP socket; they stop when `stop` is cancelled.
pub fn spawn_udp(
    answerer: &Arc<Answerer>,
    sockets: Vec<UdpSocket>,
    forward: Option<tokio::sync::mpsc::Sender<UdpForward>>,
    stop: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::with_capacity(sockets.len());
    for (i, sock) in sockets.into_iter().enumerate() {
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(UDP_POLL))?;
        let answerer = Arc::clone(answerer);
        let stop = stop.clone();
        let forward = forward.clone();
        let sock = Arc::new(sock);
        let handle = std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || udp_loop(&sock, &answerer, forward.as_ref(), &stop))?;
        handles.push(handle);
    }
    Ok(handles)
}

fn udp_loop(
    sock: &Arc<UdpSocket>,
    answerer: &Answerer,
    forward: Option<&tokio::sync::mpsc::Sender<UdpForward>>,
    stop: &CancellationToken,
) {
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    while !stop.is_cancelled() {
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => match answerer.answer(&buf[..n], false, &mut out) {
                Outcome::Reply => {
                    if let Err(e) = sock.send_to(&out, src) {
                        trace!(error = %e, %src, "udp send failed");
                    }
                }
                Outcome::Drop => {}
                Outcome::Forward => {
                    let req = UdpForward {
                        packet: buf[..n].to_vec(),
                        src,
                        socket: Arc::clone(sock),
                    };
                    // A full queue sheds load: SERVFAIL now rather than an unbounded backlog.
                    if forward.is_none_or(|f| f.try_send(req).is_err())
                        && let Some(bytes) = super::forward::servfail(&buf[..n])
                    {
                        let _ = sock.send_to(&bytes, src);
                    }
                }
            },
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            // ICMP errors from earlier sends surface here (ECONNREFUSED): not ours to act on.
            Err(e) => trace!(error = %e, "udp receive error"),
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
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "tcp connection limit reached, closing");
            drop(stream);
            continue;
        };
        let answerer = Arc::clone(&answerer);
        let forwarder = forwarder.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            if let Err(e) = tcp_connection(
                stream,
                &answerer,
                forwarder.as_deref(),
                limits.idle_timeout,
                &stop,
            )
            .await
            {
                trace!(%peer, error = %e, "tcp connection ended");
            }
        });
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    answerer: &Answerer,
    forwarder: Option<&Forwarder>,
    idle: Duration,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    loop {
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
        match answerer.answer(&buf, true, &mut out) {
            Outcome::Reply => {}
            Outcome::Drop => continue,
            Outcome::Forward => match forwarder {
                Some(f) => match f.answer(&buf, true).await {
                    Some(bytes) => out = bytes,
                    None => continue,
                },
                None => continue,
            },
        }
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        tokio::time::timeout(idle, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "write timed out"))??;
    }
}
