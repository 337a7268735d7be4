//! The sockets an engine serves on, bound before it starts.
//!
//! Binding apart from running is what lets tests bind `127.0.0.1:0` and read
//! the ports, and what lets a reload hand the same kernel sockets to the next
//! engine (rebinding only what its configuration changed), or hand them to
//! another process ([`crate::handover`]): [`Listeners::inventory`] lists them,
//! [`Listeners::adopt`] builds a configuration's listeners from inherited ones.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::config::Config;
use crate::dns;
use crate::error::{Error, Result};

/// Sockets the server serves on, bound before [`run`](crate::run).
pub struct Listeners {
    /// UDP sockets (several may share one address with `SO_REUSEPORT`).
    pub udp: Vec<UdpSocket>,
    /// TCP listeners.
    pub tcp: Vec<TcpListener>,
    /// The admin HTTP listener.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds what `config` asks for: per DNS address `threads` UDP sockets and
    /// one TCP listener on the same port, plus the admin listener.
    pub fn bind(config: &Config) -> Result<Self> {
        Self::bind_parts(config, true, true)
    }

    /// Binds the DNS sockets and/or the admin listener.
    pub fn bind_parts(config: &Config, dns: bool, admin: bool) -> Result<Self> {
        let mut l = Listeners {
            udp: Vec::new(),
            tcp: Vec::new(),
            admin: None,
        };
        for addr in config.dns.listen.iter().filter(|_| dns) {
            let (udp, tcp) = bind_dns(config, *addr)?;
            l.tcp.push(tcp);
            l.udp.extend(udp);
        }
        if let Some(addr) = config.admin.listen.filter(|_| admin) {
            let admin = TcpListener::bind(addr).map_err(|source| Error::Bind {
                proto: "admin",
                addr,
                source,
            })?;
            admin.set_nonblocking(true)?;
            l.admin = Some(admin);
        }
        Ok(l)
    }

    /// Duplicates every socket (the same kernel sockets, new descriptors), so
    /// a new engine can serve them while the old one drains.
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Listeners {
            udp: self
                .udp
                .iter()
                .map(UdpSocket::try_clone)
                .collect::<std::io::Result<_>>()?,
            tcp: self
                .tcp
                .iter()
                .map(TcpListener::try_clone)
                .collect::<std::io::Result<_>>()?,
            admin: self
                .admin
                .as_ref()
                .map(TcpListener::try_clone)
                .transpose()?,
        })
    }

    /// Replaces the listeners whose settings differ between `old` and `next`
    /// (DNS sockets and the admin listener apart) with freshly bound ones.
    /// A change of `threads` or the UDP receive buffer alone binds new UDP
    /// sockets beside the old ones (`SO_REUSEPORT`; the old engine reads its
    /// own until it retires) and keeps the TCP listeners, which a second
    /// bind of the same port would fail on.
    /// Returns whether anything was rebound; on an error nothing is replaced.
    pub fn rebind_changed(&mut self, old: &Config, next: &Config) -> Result<bool> {
        let rebind_dns = next.dns.listen != old.dns.listen;
        let rebind_udp = !rebind_dns && Self::udp_changes(old, next);
        let rebind_admin = next.admin.listen != old.admin.listen;
        if !(rebind_dns || rebind_udp || rebind_admin) {
            return Ok(false);
        }
        let udp = if rebind_udp {
            Some(self.udp_beside(next)?)
        } else {
            None
        };
        let fresh = Self::bind_parts(next, rebind_dns, rebind_admin)?;
        if rebind_dns {
            self.udp = fresh.udp;
            self.tcp = fresh.tcp;
        }
        if let Some(udp) = udp {
            self.udp = udp;
        }
        if rebind_admin {
            self.admin = fresh.admin;
        }
        Ok(true)
    }

    /// Whether going from `old` to `next` replaces the UDP sockets
    /// ([`Listeners::rebind_changed`] binds new ones).
    pub fn udp_changes(old: &Config, next: &Config) -> bool {
        next.dns.listen != old.dns.listen
            || next.dns.threads != old.dns.threads
            || next.dns.udp_receive_buffer_kb != old.dns.udp_receive_buffer_kb
    }

    /// `next`'s UDP sockets on the addresses (ports included) the current
    /// ones are bound to.
    fn udp_beside(&self, next: &Config) -> Result<Vec<UdpSocket>> {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for s in &self.udp {
            let a = s.local_addr()?;
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        let mut udp = Vec::new();
        for a in addrs {
            udp.extend(dns::server::bind_udp(
                a,
                next.udp_threads(),
                next.dns.udp_receive_buffer_kb * 1024,
            )?);
        }
        Ok(udp)
    }
}

/// What a listening socket is for, as a hand-over lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketKind {
    /// A DNS UDP socket (one of an address's `SO_REUSEPORT` group).
    Udp,
    /// A DNS TCP listener.
    Tcp,
    /// The admin HTTP listener.
    Admin,
}

/// What [`Listeners::adopt`] did, for the log.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Inherited sockets now served.
    pub kept: usize,
    /// Sockets bound here: addresses new in this configuration, or more
    /// UDP sockets than were inherited.
    pub bound: usize,
    /// Inherited sockets this configuration does not serve (closed).
    pub dropped: usize,
}

impl Listeners {
    /// Every socket with what it is for and its address, for a hand-over.
    pub fn inventory(&self) -> Result<Vec<(SocketKind, SocketAddr, BorrowedFd<'_>)>> {
        let mut out = Vec::new();
        for s in &self.udp {
            out.push((SocketKind::Udp, s.local_addr()?, s.as_fd()));
        }
        for l in &self.tcp {
            out.push((SocketKind::Tcp, l.local_addr()?, l.as_fd()));
        }
        if let Some(l) = &self.admin {
            out.push((SocketKind::Admin, l.local_addr()?, l.as_fd()));
        }
        Ok(out)
    }

    /// `config`'s listeners from sockets inherited from a running instance:
    /// a listen address whose sockets were inherited keeps them (the same
    /// kernel sockets, so their queues carry over), plus UDP sockets beside
    /// them if `threads` grew; an address new in `config` is bound fresh;
    /// inherited sockets `config` no longer listens on are closed.
    pub fn adopt(
        config: &Config,
        inherited: Vec<(SocketKind, OwnedFd)>,
    ) -> Result<(Self, Adopted)> {
        let mut pool = Pool::check(inherited)?;
        let mut l = Listeners {
            udp: Vec::new(),
            tcp: Vec::new(),
            admin: None,
        };
        let mut done = Adopted::default();
        for addr in &config.dns.listen {
            let (udp, tcp) = adopt_dns(config, *addr, &mut pool, &mut done)?;
            l.udp.extend(udp);
            l.tcp.push(tcp);
        }
        if let Some(addr) = config.admin.listen {
            l.admin = match take_one(&mut pool.admin, addr) {
                Some(a) => {
                    done.kept += 1;
                    Some(a)
                }
                None => {
                    done.bound += 1;
                    Self::bind_parts(config, false, true)?.admin
                }
            };
        }
        done.dropped = pool.udp.len() + pool.tcp.len() + pool.admin.len();
        Ok((l, done))
    }
}

/// The sockets of one listen address: the inherited ones serving it, UDP
/// sockets beside them up to `threads`, and what is missing bound fresh.
fn adopt_dns(
    config: &Config,
    addr: SocketAddr,
    pool: &mut Pool,
    done: &mut Adopted,
) -> Result<(Vec<UdpSocket>, TcpListener)> {
    let mut udp = take_all(&mut pool.udp, addr);
    // TCP on the port the inherited UDP sockets have (with port 0 configured).
    let at = match udp.first() {
        Some(u) => u.local_addr()?,
        None => addr,
    };
    let tcp = take_one(&mut pool.tcp, at);
    if udp.is_empty() && tcp.is_none() {
        let (udp, tcp) = bind_dns(config, addr)?;
        done.bound += udp.len() + 1;
        return Ok((udp, tcp));
    }
    let at = match &tcp {
        Some(t) if udp.is_empty() => t.local_addr()?,
        _ => at,
    };
    done.kept += udp.len() + usize::from(tcp.is_some());
    let want = config.udp_threads();
    if udp.len() < want {
        let more = dns::server::bind_udp(
            at,
            want - udp.len(),
            config.dns.udp_receive_buffer_kb * 1024,
        )?;
        done.bound += more.len();
        udp.extend(more);
    }
    let tcp = match tcp {
        Some(t) => t,
        None => {
            done.bound += 1;
            dns::server::bind_tcp(at)?
        }
    };
    Ok((udp, tcp))
}

/// Inherited sockets by kind, each checked to be what it was said to be.
struct Pool {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    admin: Vec<TcpListener>,
}

impl Pool {
    fn check(inherited: Vec<(SocketKind, OwnedFd)>) -> Result<Self> {
        use socket2::{SockRef, Type};
        let mut pool = Pool {
            udp: Vec::new(),
            tcp: Vec::new(),
            admin: Vec::new(),
        };
        for (kind, fd) in inherited {
            let ty = SockRef::from(&fd).r#type()?;
            let want = if kind == SocketKind::Udp {
                Type::DGRAM
            } else {
                Type::STREAM
            };
            if ty != want {
                return Err(Error::Config(format!(
                    "hand-over: a socket sent as {kind:?} is not one"
                )));
            }
            match kind {
                SocketKind::Udp => pool.udp.push(UdpSocket::from(fd)),
                SocketKind::Tcp => pool.tcp.push(TcpListener::from(fd)),
                SocketKind::Admin => pool.admin.push(TcpListener::from(fd)),
            }
        }
        Ok(pool)
    }
}

/// Whether a socket bound to `actual` serves the configured `wanted` (port 0:
/// any port, as a fresh bind would pick one).
fn serves(wanted: SocketAddr, actual: SocketAddr) -> bool {
    wanted.ip() == actual.ip() && (wanted.port() == 0 || wanted.port() == actual.port())
}

/// Takes every UDP socket of `pool` serving `wanted`, all on one port.
fn take_all(pool: &mut Vec<UdpSocket>, wanted: SocketAddr) -> Vec<UdpSocket> {
    let mut port = None;
    let mut out = Vec::new();
    let mut i = 0;
    while i < pool.len() {
        match pool[i].local_addr() {
            Ok(a) if serves(wanted, a) && port.is_none_or(|p| p == a.port()) => {
                port = Some(a.port());
                out.push(pool.swap_remove(i));
            }
            _ => i += 1,
        }
    }
    out
}

/// Takes the first listener of `pool` serving `wanted`.
fn take_one(pool: &mut Vec<TcpListener>, wanted: SocketAddr) -> Option<TcpListener> {
    let i = pool
        .iter()
        .position(|l| l.local_addr().is_ok_and(|a| serves(wanted, a)))?;
    Some(pool.swap_remove(i))
}

/// `threads` UDP sockets on `addr` and one TCP listener on the same port.
fn bind_dns(config: &Config, addr: SocketAddr) -> Result<(Vec<UdpSocket>, TcpListener)> {
    // With port 0 TCP takes the port UDP got, so both share one number. That
    // port may already be in use for TCP (say, as the local port of an
    // outgoing connection): then pick another.
    let mut attempts = 0;
    loop {
        let udp = dns::server::bind_udp(
            addr,
            config.udp_threads(),
            config.dns.udp_receive_buffer_kb * 1024,
        )?;
        let port = udp[0].local_addr()?.port();
        match dns::server::bind_tcp(SocketAddr::new(addr.ip(), port)) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(Error::Bind { source, .. })
                if addr.port() == 0
                    && source.kind() == std::io::ErrorKind::AddrInUse
                    && attempts < 16 =>
            {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
