//! The hand-over protocol on the wire: length-prefixed JSON messages over a
//! Unix stream socket, the listening sockets riding along as `SCM_RIGHTS`.
//!
//! JSON because the messages are few and small, and because a field a newer
//! release adds is ignored by an older one: with the version range in the
//! hello, that is what lets a release hand over to the previous one and back.
//! Descriptors are passed with rustix's safe `sendmsg`/`recvmsg`, which hand
//! received ones over as `OwnedFd` (closed if unused; `MSG_CMSG_CLOEXEC`).

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::UnixStream;

pub use crate::engine::SocketKind as Kind;

/// Protocol versions this release speaks, oldest and newest. The two sides
/// use the newest both speak; a release that changes the protocol keeps the
/// previous version in its range, so a rollback can hand back.
pub const PROTOCOL: (u32, u32) = (1, 1);

/// Descriptors per message at most (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS: usize = 128;

/// The largest message accepted: a hello or a batch of socket descriptions.
const MAX_FRAME: usize = 64 * 1024;

/// One socket of a [`Msg::Sockets`] batch; its descriptor is the one at the
/// same position in the batch's `SCM_RIGHTS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Described {
    /// What it is for.
    pub kind: Kind,
    /// The address it is bound to.
    pub addr: SocketAddr,
}

/// The messages, in protocol order: `Hello` (new) → `Sockets`… or `Refused`
/// (old) → `Taken` (new) → `Stop` or `Abort` (new) → `Stopped` (old).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Msg {
    /// The new instance introduces itself.
    Hello {
        /// Protocol versions it speaks, oldest and newest.
        min: u32,
        /// See `min`.
        max: u32,
        /// Its release (for the logs).
        version: String,
        /// Its process id (for the logs).
        pid: u32,
        /// How long it may take to sync before it sends `Stop` or `Abort`.
        wait_ms: u64,
    },
    /// The running instance refuses (no common protocol version).
    Refused {
        /// Why.
        reason: String,
    },
    /// A batch of the running instance's listening sockets.
    Sockets {
        /// The protocol version chosen.
        protocol: u32,
        /// Its release (for the logs).
        version: String,
        /// Its process id (for the logs).
        pid: u32,
        /// The sockets of this batch, in descriptor order.
        sockets: Vec<Described>,
        /// More batches follow.
        more: bool,
    },
    /// The new instance holds the sockets (and has bound what its
    /// configuration adds); it now syncs its index.
    Taken,
    /// The new instance has synced and answers: stop reading.
    Stop,
    /// The new instance gives up (say, it did not sync in time): keep serving.
    Abort {
        /// Why.
        reason: String,
    },
    /// The running instance has stopped reading and answered what it had
    /// read; it exits next.
    Stopped,
}

/// The newest protocol version both ranges hold.
pub fn common_version(ours: (u32, u32), min: u32, max: u32) -> Option<u32> {
    let v = ours.1.min(max);
    (v >= ours.0.max(min)).then_some(v)
}

/// One end of a hand-over connection.
pub struct Conn {
    stream: UnixStream,
    /// Bytes read past the last whole message.
    buf: Vec<u8>,
    /// Descriptors received and not yet taken, in order.
    fds: VecDeque<OwnedFd>,
    /// Room for the control messages of one `recvmsg`.
    cmsg: Vec<MaybeUninit<u8>>,
}

impl Conn {
    /// Wraps a connected stream.
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            fds: VecDeque::new(),
            cmsg: vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))],
        }
    }

    /// Sends `msg` with `fds` (at most [`MAX_FDS`]) attached.
    pub async fn send(&self, msg: &Msg, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let json = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let mut frame = Vec::with_capacity(json.len() + 4);
        frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
        frame.extend_from_slice(&json);
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut sent = 0;
        while sent < frame.len() {
            self.stream.writable().await?;
            let r = self.stream.try_io(Interest::WRITABLE, || {
                let mut control = SendAncillaryBuffer::new(&mut space);
                // The descriptors go with the first byte of the message.
                if sent == 0
                    && !fds.is_empty()
                    && !control.push(SendAncillaryMessage::ScmRights(fds))
                {
                    return Err(io::Error::other("too many descriptors for one message"));
                }
                rustix::net::sendmsg(
                    &self.stream,
                    &[IoSlice::new(&frame[sent..])],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )
                .map_err(io::Error::from)
            });
            match r {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Receives the next message; the descriptors that came with it wait in
    /// [`Conn::take_fds`].
    pub async fn recv(&mut self) -> io::Result<Msg> {
        loop {
            if let Some(msg) = self.whole_message()? {
                return Ok(msg);
            }
            self.read_some().await?;
        }
    }

    /// The first `n` descriptors received and not yet taken.
    pub fn take_fds(&mut self, n: usize) -> io::Result<Vec<OwnedFd>> {
        if self.fds.len() < n {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("{n} sockets described, {} received", self.fds.len()),
            ));
        }
        Ok(self.fds.drain(..n).collect())
    }

    /// Decodes the message at the front of `buf`, if it is all there.
    fn whole_message(&mut self) -> io::Result<Option<Msg>> {
        let Some(head) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("a {len}-byte message (at most {MAX_FRAME})"),
            ));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&self.buf[4..4 + len])
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        self.buf.drain(..4 + len);
        Ok(Some(msg))
    }

    /// One `recvmsg`: bytes onto `buf`, descriptors onto `fds`.
    async fn read_some(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        loop {
            self.stream.readable().await?;
            let mut control = RecvAncillaryBuffer::new(&mut self.cmsg);
            let r = self.stream.try_io(Interest::READABLE, || {
                rustix::net::recvmsg(
                    &self.stream,
                    &mut [IoSliceMut::new(&mut chunk)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(io::Error::from)
            });
            let got = match r {
                Ok(m) => m.bytes,
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = m {
                    self.fds.extend(fds);
                }
            }
            if got == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the other instance closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..got]);
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn versions_meet_at_the_newest_both_speak() {
        assert_eq!(common_version((1, 1), 1, 1), Some(1));
        assert_eq!(common_version((1, 2), 1, 1), Some(1), "rollback to v1");
        assert_eq!(common_version((1, 1), 1, 3), Some(1), "a newer peer");
        assert_eq!(common_version((2, 3), 1, 1), None);
        assert_eq!(common_version((1, 1), 2, 2), None);
    }

    #[tokio::test]
    async fn messages_and_descriptors_cross_a_real_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, mut b) = (Conn::new(a), Conn::new(b));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let msg = Msg::Sockets {
            protocol: 1,
            version: "test".into(),
            pid: 1,
            sockets: vec![Described {
                kind: Kind::Udp,
                addr,
            }],
            more: false,
        };
        a.send(&msg, &[udp.as_fd()]).await.unwrap();
        a.send(&Msg::Stopped, &[]).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), msg);
        let fd = b.take_fds(1).unwrap().pop().unwrap();
        let got = std::net::UdpSocket::from(fd);
        assert_eq!(got.local_addr().unwrap(), addr, "the same socket");
        assert_eq!(b.recv().await.unwrap(), Msg::Stopped);
        assert!(b.take_fds(1).is_err(), "no more descriptors");
        drop(a);
        let e = b.recv().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut b = Conn::new(b);
        a.try_write(&[0, 0, 0, 3, b'{', b'x', b'}']).unwrap();
        assert_eq!(b.recv().await.unwrap_err().kind(), ErrorKind::InvalidData);
        // A length beyond the bound is refused before anything is read.
        let mut b2 = Conn::new(UnixStream::pair().unwrap().1);
        b2.buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(b2.recv().await.unwrap_err().kind(), ErrorKind::InvalidData);
    }
}
