//! UDP worker threads: batched receive and send around [`Answerer`].
//!
//! One OS thread per socket (several sockets share an address with
//! `SO_REUSEPORT`, which is how `threads` scales over cores). Each turn of
//! the loop is one `recvmmsg` with `MSG_WAITFORONE`: it blocks until one
//! query is there, then takes whatever else is already queued without
//! waiting for more, so a lone query is answered at once and a busy socket
//! costs two system calls per batch instead of two per query. The replies of
//! a batch leave in one `sendmmsg`. The answer itself is synchronous, so a
//! runtime would only add a wake-up per packet.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use rustix::io::Errno;
use rustix::net::addr::SocketAddrArg;
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny, sendmmsg};
use tokio_util::sync::CancellationToken;
use tracing::trace;

use super::forward::UdpForward;
use super::rrl::Rrl;
use super::{Answerer, Outcome};
use crate::error::Result;
use crate::fault::Fault;

/// How often a UDP thread looks at the shutdown token while idle.
const UDP_POLL: Duration = Duration::from_millis(200);

/// At most this many queued queries are answered by a stopping UDP thread.
const DRAIN_MAX: usize = 4096;

/// Queries taken per `recvmmsg` at most (Knot takes as many).
pub const BATCH: usize = 32;

/// Room for one datagram: the largest UDP payload, so no query is cut.
/// Only the pages a datagram touches become resident.
const SLOT: usize = 65535;

/// Test-only fault hook, compiled only with the `test-hooks` feature (which
/// only test builds turn on: see Cargo.toml; the shipped binary has no such
/// hook and reads no such variable): with this set to N, each UDP thread
/// panics once it has been idle for a poll N ms after it started (the tests
/// of thread death use it). Read once per thread start; never per query.
#[cfg(feature = "test-hooks")]
mod test_fault {
    use std::time::{Duration, Instant};

    const ENV: &str = "HEADLESS_DNS_TEST_UDP_PANIC_AFTER_MS";

    /// When the thread starting now is to panic, if ever.
    pub fn deadline() -> Option<Instant> {
        let ms: u64 = std::env::var(ENV).ok()?.parse().ok()?;
        Some(Instant::now() + Duration::from_millis(ms))
    }

    /// Panics if `deadline` has passed.
    pub fn check(deadline: Option<Instant>) {
        if deadline.is_some_and(|t| Instant::now() >= t) {
            panic!("test fault: {ENV} is set");
        }
    }
}

/// Without the `test-hooks` feature: no hook.
#[cfg(not(feature = "test-hooks"))]
mod test_fault {
    use std::time::Instant;

    pub fn deadline() -> Option<Instant> {
        None
    }

    pub fn check(_: Option<Instant>) {}
}

/// What every UDP thread runs first, when set: [`on_thread_start`].
static THREAD_START: OnceLock<fn()> = OnceLock::new();

/// Sets a function every UDP thread runs as it starts, before it
/// allocates, as tokio's `Builder::on_thread_start` does for the runtime's
/// threads. The binary uses it to turn the allocator's thread cache off on
/// a follower (`src/main.rs`); the library has no allocator policy of its
/// own. Once per process: false (and `hook` unused) if one was set before.
pub fn on_thread_start(hook: fn()) -> bool {
    THREAD_START.set(hook).is_ok()
}

/// Starts one thread per UDP socket; they stop when `stop` is cancelled.
/// With `rrl`, every response goes through the rate limiter first, local,
/// forwarded or the SERVFAIL of a full forward queue.
pub fn spawn_udp(
    answerer: &Arc<Answerer>,
    sockets: Vec<UdpSocket>,
    forward: Option<tokio::sync::mpsc::Sender<UdpForward>>,
    rrl: Option<Arc<Rrl>>,
    stop: &CancellationToken,
    fault: &Fault,
    drain: Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::with_capacity(sockets.len());
    for (i, sock) in sockets.into_iter().enumerate() {
        // Blocking with a timeout: the first message of a batch waits at
        // most UDP_POLL, so the loop sees `stop` while idle.
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(UDP_POLL))?;
        let worker = Worker {
            sock: Arc::new(sock),
            answerer: Arc::clone(answerer),
            forward: forward.clone(),
            rrl: rrl.clone(),
        };
        let stop = stop.clone();
        let drain = Arc::clone(&drain);
        let name = format!("dns-udp-{i}");
        let watch = fault.watch_thread(format!("udp thread {name}"));
        let fault_at = test_fault::deadline();
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            if let Some(hook) = THREAD_START.get() {
                hook();
            }
            let _watch = watch;
            let mut bufs = Buffers::new();
            worker.run(&mut bufs, &stop, fault_at);
            if drain.load(Ordering::Relaxed) {
                worker.drain(&mut bufs);
            }
        })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// One UDP thread's socket and what its answers need.
struct Worker {
    sock: Arc<UdpSocket>,
    answerer: Arc<Answerer>,
    forward: Option<tokio::sync::mpsc::Sender<UdpForward>>,
    rrl: Option<Arc<Rrl>>,
}

/// A thread's buffers, allocated once and reused by every batch (nothing
/// sized by the batch is built or zeroed per batch: at one query per batch
/// that fixed cost is per query).
struct Buffers {
    /// The datagrams, one [`SLOT`] each.
    recv: Vec<u8>,
    /// Per slot: the datagram's length, its sender, and the reply.
    len: [usize; BATCH],
    src: [Option<SocketAddr>; BATCH],
    outs: Vec<Vec<u8>>,
    /// Slots in the last batch.
    count: usize,
    headers: MultiHeaders<SockaddrStorage>,
    /// The replies to send: their slots and destinations, in order.
    send: [usize; BATCH],
    dst: Vec<SocketAddrAny>,
}

impl Buffers {
    fn new() -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0)).as_any();
        Self {
            recv: vec![0u8; BATCH * SLOT],
            len: [0; BATCH],
            src: [None; BATCH],
            outs: (0..BATCH).map(|_| Vec::with_capacity(4096)).collect(),
            count: 0,
            headers: MultiHeaders::preallocate(BATCH, None),
            send: [0; BATCH],
            dst: vec![unspecified; BATCH],
        }
    }
}

impl Worker {
    fn run(&self, bufs: &mut Buffers, stop: &CancellationToken, fault_at: Option<Instant>) {
        while !stop.is_cancelled() {
            match self.receive(bufs) {
                Ok(()) => self.answer_batch(bufs),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {
                    // Checked only when idle: the test fault never touches a query.
                    test_fault::check(fault_at);
                }
                // ICMP errors from earlier sends surface here (ECONNREFUSED): not ours to act on.
                Err(e) => trace!(error = %e, "udp receive error"),
            }
        }
    }

    /// Answers what a stopped thread's socket holds queued, without waiting
    /// for more: the socket closes next (shutdown, or a reload that bound
    /// new ones), and its queue would be lost. Only for sockets no successor
    /// reads: it makes the socket non-blocking.
    fn drain(&self, bufs: &mut Buffers) {
        if self.sock.set_nonblocking(true).is_err() {
            return;
        }
        let mut answered = 0;
        while answered < DRAIN_MAX && self.receive(bufs).is_ok() {
            answered += bufs.count;
            self.answer_batch(bufs);
        }
    }

    /// Waits up to [`UDP_POLL`] for one datagram, then takes what else is
    /// queued (`MSG_WAITFORONE`): up to [`BATCH`] if the last batch was
    /// busy, a few if it held one or two. Setting up the 32 slots is a few
    /// hundred instructions, which a lone query on a quiet socket would pay
    /// alone.
    fn receive(&self, bufs: &mut Buffers) -> nix::Result<()> {
        if bufs.count <= 2 {
            self.receive_n::<4>(bufs)
        } else {
            self.receive_n::<BATCH>(bufs)
        }
    }

    fn receive_n<const N: usize>(&self, bufs: &mut Buffers) -> nix::Result<()> {
        let mut slots = bufs.recv.chunks_exact_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; N] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let got = recvmmsg(
            self.sock.as_raw_fd(),
            &mut bufs.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        );
        // An error (EAGAIN when idle) leaves no batch: an idle socket counts as quiet.
        bufs.count = 0;
        for (i, msg) in got?.enumerate() {
            bufs.len[i] = msg.bytes;
            bufs.src[i] = msg.address.as_ref().and_then(socket_addr);
            bufs.count = i + 1;
        }
        Ok(())
    }

    /// Answers every datagram of the batch, then sends the replies at once.
    fn answer_batch(&self, bufs: &mut Buffers) {
        let received = Instant::now();
        let mut replies = 0;
        for i in 0..bufs.count {
            let Some(src) = bufs.src[i] else { continue };
            let packet = &bufs.recv[i * SLOT..i * SLOT + bufs.len[i]];
            if self.answer_one(packet, src, received, &mut bufs.outs[i]) {
                bufs.send[replies] = i;
                bufs.dst[replies] = src.as_any();
                replies += 1;
            }
        }
        // The message headers are built on the stack for as many replies as
        // a size class holds: a lone reply does not pay for a full batch.
        match replies {
            0 => {}
            1..=4 => self.send_replies::<4>(bufs, replies),
            _ => self.send_replies::<BATCH>(bufs, replies),
        }
    }

    /// Answers one datagram into `out`; true if `out` is to be sent. The
    /// rare paths (zone transfers, forwarding) send or hand off on their own.
    fn answer_one(
        &self,
        packet: &[u8],
        src: SocketAddr,
        received: Instant,
        out: &mut Vec<u8>,
    ) -> bool {
        let answerer = &self.answerer;
        match answerer.answer_from(packet, (false, src.ip()), out, received) {
            Outcome::Reply => self
                .rrl
                .as_ref()
                .is_none_or(|r| r.admit(src.ip(), out, answerer.stats())),
            Outcome::Drop => false,
            Outcome::Transfer => {
                // Zone transfers over UDP: one message (IXFR, signed queries),
                // counted and rate-limited as every other reply.
                let reply = answerer
                    .transfers()
                    .and_then(|t| t.respond(answerer, packet, src, false).next());
                match reply {
                    Some(mut reply) => self.send_one(&mut reply, src, received),
                    None => answerer.stats().dropped(),
                }
                false
            }
            outcome @ (Outcome::Forward | Outcome::Chase) => {
                let chain = (outcome == Outcome::Chase).then_some(&out[..]);
                self.hand_off(packet, src, received, chain);
                false
            }
            Outcome::Autopath => {
                let (rrl, sock) = (self.rrl.clone(), (&self.sock, src));
                if !super::autopath_spawn_udp(answerer, (packet, out), sock, rrl, received) {
                    // At the bound of walks in flight: the asked name's own answer now.
                    self.send_one(out, src, received);
                }
                false
            }
        }
    }

    /// Queues a query for the forwarder; a full queue sheds load with a
    /// SERVFAIL now rather than an unbounded backlog.
    fn hand_off(&self, packet: &[u8], src: SocketAddr, received: Instant, chain: Option<&[u8]>) {
        let req = UdpForward {
            packet: packet.to_vec(),
            chain: chain.map(<[u8]>::to_vec),
            src,
            socket: Arc::clone(&self.sock),
            answerer: Arc::clone(&self.answerer),
            rrl: self.rrl.clone(),
            received,
        };
        if self
            .forward
            .as_ref()
            .is_some_and(|f| f.try_send(req).is_ok())
        {
            return;
        }
        match super::forward::servfail(packet) {
            Some(mut bytes) => self.send_one(&mut bytes, src, received),
            None => self.answerer.stats().dropped(),
        }
    }

    /// Counts a reply written off the batch path (a transfer service's, the
    /// SERVFAIL of a full forward queue), passes it through the rate
    /// limiter, and sends it now.
    fn send_one(&self, reply: &mut Vec<u8>, src: SocketAddr, received: Instant) {
        let stats = self.answerer.stats();
        stats.response_packet(false, reply, received.elapsed());
        if self
            .rrl
            .as_ref()
            .is_none_or(|r| r.admit(src.ip(), reply, stats))
        {
            let _ = self.sock.send_to(reply, src);
        }
    }

    /// Sends the first `count` (at most `N`) replies marked in `bufs.send`
    /// in one `sendmmsg`. It stops at the first reply the kernel refuses
    /// (say, an unroutable client): that one is dropped and the rest go in
    /// another call.
    fn send_replies<const N: usize>(&self, bufs: &Buffers, count: usize) {
        let iovs: [[IoSlice<'_>; 1]; N] = std::array::from_fn(|k| {
            [IoSlice::new(if k < count {
                &bufs.outs[bufs.send[k]]
            } else {
                &[]
            })]
        });
        let mut controls: [SendAncillaryBuffer<'_, '_, '_>; N] =
            std::array::from_fn(|_| SendAncillaryBuffer::default());
        let mut k = 0;
        let mut msgs = controls.each_mut().map(|control| {
            let msg = MMsgHdr::new_with_addr(&bufs.dst[k], &iovs[k], control);
            k += 1;
            msg
        });
        let mut from = 0;
        while from < count {
            match sendmmsg(&*self.sock, &mut msgs[from..count], SendFlags::empty()) {
                // Fewer than asked: the next call starts at the refused one and reports it.
                Ok(sent) => from += sent.max(1),
                Err(Errno::INTR) => {}
                Err(e) => {
                    trace!(error = %e, slot = bufs.send[from], "udp send failed");
                    from += 1;
                }
            }
        }
    }
}

/// The sender of a datagram as a std address.
fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_and_nix_addresses_round_trip() {
        for s in ["127.0.0.1:53", "[::1]:5353", "[fe80::1%2]:1"] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(socket_addr(&SockaddrStorage::from(a)), Some(a), "{s}");
        }
    }
}
