//! The sockets an engine serves on, bound before it starts.
//!
//! Binding apart from running is what lets tests bind `127.0.0.1:0` and read
//! the ports, and what lets a reload hand the same kernel sockets to the next
//! engine (rebinding only what its configuration changed).

use std::net::{SocketAddr, TcpListener, UdpSocket};

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
