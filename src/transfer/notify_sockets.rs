//! The few UDP sockets NOTIFYs leave from, and the matching of answers to
//! the NOTIFY waiting for them.
//!
//! A change to the cluster zone NOTIFYs every learned follower at once (a
//! node-local cache per node), so a socket per NOTIFY would open thousands
//! of file descriptors at a time (a container's limit may be 1,024, and the
//! server does not raise it). Instead the NOTIFY task binds one socket per
//! source address (our DNS listen address of the target's family, or the
//! unspecified one) the first time it needs it and keeps it; a receiver
//! task per socket hands each datagram to the NOTIFY registered under its
//! (source address, message id), which checks it as before (signature,
//! rcode). An id is chosen at random among those not in flight to that
//! target, so two outstanding NOTIFYs to one target never share one.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Datagrams queued for one NOTIFY before more are dropped: one answer is
/// expected; a few strays (late answers, forgeries) must not block it.
const QUEUED: usize = 4;

/// The sockets bound so far, by source address, and their receivers.
#[derive(Debug, Default)]
pub(super) struct Sockets {
    bound: HashMap<IpAddr, Arc<UdpSocket>>,
    pending: Arc<Pending>,
    /// One receiver per socket; aborted when the NOTIFY task stops.
    receivers: JoinSet<()>,
}

impl Sockets {
    /// The socket for source address `ip`, bound the first time (an error
    /// is not kept: the next NOTIFY tries again).
    pub(super) async fn get(&mut self, ip: IpAddr) -> std::io::Result<Arc<UdpSocket>> {
        if let Some(s) = self.bound.get(&ip) {
            return Ok(Arc::clone(s));
        }
        let socket = Arc::new(UdpSocket::bind(SocketAddr::new(ip, 0)).await?);
        let pending = Arc::clone(&self.pending);
        self.receivers.spawn(receive(Arc::clone(&socket), pending));
        self.bound.insert(ip, Arc::clone(&socket));
        Ok(socket)
    }

    /// The outstanding NOTIFYs the receivers deliver to.
    pub(super) fn pending(&self) -> &Arc<Pending> {
        &self.pending
    }

    /// How many sockets are bound.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.bound.len()
    }
}

/// Reads `socket` until aborted, delivering each datagram.
async fn receive(socket: Arc<UdpSocket>, pending: Arc<Pending>) {
    let mut buf = vec![0u8; 4096];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => pending.deliver(from, &buf[..n]),
            // Not expected on an unconnected socket; do not spin on it.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Where the answers to one NOTIFY go.
type Answers = mpsc::Sender<Vec<u8>>;

/// The NOTIFYs waiting for an answer, by (target, message id).
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// A std `Mutex`: held for a map operation, never across an `.await`.
    waiting: Mutex<HashMap<(SocketAddr, u16), Answers>>,
}

/// One NOTIFY's claim on a message id to a target: its answers arrive on
/// `answers`; dropping it frees the id.
#[derive(Debug)]
pub(super) struct Ticket {
    pending: Arc<Pending>,
    target: SocketAddr,
    /// The message id to send.
    pub id: u16,
    /// Datagrams from `target` with `id`.
    pub answers: mpsc::Receiver<Vec<u8>>,
}

impl Pending {
    /// Claims an id not in flight to `target`, chosen at random; `None`
    /// when all 65,536 are.
    pub(super) fn register(self: &Arc<Self>, target: SocketAddr) -> Option<Ticket> {
        let (tx, answers) = mpsc::channel(QUEUED);
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let start = super::notify::rand_id();
        // Usually the first try: a target has few NOTIFYs in flight.
        for i in 0..=u16::MAX {
            let id = start.wrapping_add(i);
            if let Entry::Vacant(e) = waiting.entry((target, id)) {
                e.insert(tx);
                return Some(Ticket {
                    pending: Arc::clone(self),
                    target,
                    id,
                    answers,
                });
            }
        }
        None
    }

    /// Hands `bytes` from `from` to the NOTIFY waiting for them, if any
    /// (dropped when nobody waits or its queue is full).
    fn deliver(&self, from: SocketAddr, bytes: &[u8]) {
        if bytes.len() < 12 {
            return;
        }
        let id = u16::from_be_bytes([bytes[0], bytes[1]]);
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = waiting.get(&(from, id)) {
            let _ = tx.try_send(bytes.to_vec());
        }
    }

    /// How many ids are in flight.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().unwrap().len()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut waiting = self
            .pending
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        waiting.remove(&(self.target, self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn ids_in_flight_to_a_target_are_distinct_and_freed_on_drop() {
        let p = Arc::new(Pending::default());
        let mut held: Vec<Ticket> = (0..1000).map(|_| p.register(addr(1)).unwrap()).collect();
        let ids: HashSet<u16> = held.iter().map(|t| t.id).collect();
        assert_eq!(ids.len(), 1000, "an id in flight is never given twice");
        // Another target has its own ids: one in flight to 1 may be reused.
        let other = p.register(addr(2)).unwrap();
        assert_eq!(p.len(), 1001);
        drop(other);
        held.truncate(10);
        assert_eq!(p.len(), 10, "dropped tickets free their ids");
        // With every other id in flight to a target, the one left is found.
        let (tx, _rx) = mpsc::channel(1);
        let free = held[0].id;
        drop(held);
        let mut waiting = p.waiting.lock().unwrap();
        for id in (0..=u16::MAX).filter(|id| *id != free) {
            waiting.insert((addr(1), id), tx.clone());
        }
        drop(waiting);
        let last = p.register(addr(1)).unwrap();
        assert_eq!(last.id, free);
        assert!(p.register(addr(1)).is_none(), "all 65,536 ids in flight");
        assert!(p.register(addr(3)).is_some());
        drop(last);
        assert_eq!(p.register(addr(1)).unwrap().id, free);
    }

    #[tokio::test]
    async fn answers_reach_the_notify_of_their_target_and_id_only() {
        let p = Arc::new(Pending::default());
        let mut a = p.register(addr(1)).unwrap();
        let mut b = p.register(addr(2)).unwrap();
        let mut packet = [0u8; 12];
        packet[..2].copy_from_slice(&a.id.to_be_bytes());
        p.deliver(addr(2), &packet); // a's id from b's address: nobody's, unless b shares it
        p.deliver(addr(1), &packet);
        p.deliver(addr(1), &packet[..11]); // too short for a header
        assert_eq!(a.answers.recv().await.unwrap(), packet);
        assert!(a.answers.try_recv().is_err());
        if b.id != a.id {
            assert!(b.answers.try_recv().is_err());
        }
        // Strays beyond the queue are dropped, not waited on.
        for _ in 0..QUEUED + 3 {
            p.deliver(addr(1), &packet);
        }
        let mut n = 0;
        while a.answers.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, QUEUED);
    }

    #[tokio::test]
    async fn a_socket_per_source_address_is_bound_once() {
        let mut s = Sockets::default();
        let v4 = IpAddr::from([127, 0, 0, 1]);
        let first = s.get(v4).await.unwrap();
        let again = s.get(v4).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(s.len(), 1);
        // Answers to it reach the registered NOTIFY.
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut t = s.pending().register(peer.local_addr().unwrap()).unwrap();
        let mut packet = [0u8; 12];
        packet[..2].copy_from_slice(&t.id.to_be_bytes());
        peer.send_to(&packet, first.local_addr().unwrap())
            .await
            .unwrap();
        assert_eq!(t.answers.recv().await.unwrap(), packet);
    }
}
