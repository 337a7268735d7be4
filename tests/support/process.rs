//! The real binary (or another program, such as unbound) run as a child
//! process on loopback ports, killed when the test lets go of it.

use std::net::SocketAddr;
use std::process::{Child, Command};

/// The `headless-dns` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_headless-dns");

/// A child process, killed and reaped on drop.
pub struct Running(pub Child);

impl Running {
    /// Spawns `cmd`; `what` names it in the panic if it cannot start.
    pub fn spawn(cmd: &mut Command, what: &str) -> Running {
        Running(cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}")))
    }

    /// Sends `sig` (`-HUP`, `-TERM`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .expect("kill(1) runs")
            .success();
        assert!(ok, "kill {sig} {}", self.0.id());
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().expect("try_wait on our own child")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free for both UDP and TCP right now, for servers started
/// as a separate process (which must be told a port rather than bind 0).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP port");
        let port = u.local_addr().expect("bound").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP in 50 tries");
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
