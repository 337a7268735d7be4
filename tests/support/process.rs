//! The real binary (or another program, such as unbound) run as a child
//! process on loopback ports, killed when the test lets go of it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// The `headless-dns` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_headless-dns");

/// `headless-dns serve`, logging at `rust_log` into `log`, with none of the
/// caller's `HEADLESS_DNS_*` variables (they would override the arguments a
/// test gives): add the arguments, then spawn.
pub fn serve_command(log: std::fs::File, rust_log: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HEADLESS_DNS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

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
///
/// It is taken below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`): a port from that range, released here,
/// could be handed to any socket bound to port 0 or any client's source port
/// before the child binds it (BIND then exits "unable to listen on any
/// configured interfaces", which a transfer test once hit). Calls in one
/// process walk the range from a random start, so they never repeat a port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const LOWEST: u32 = 10_000;
    let span = ephemeral.saturating_sub(LOWEST);
    let seed = {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32
    };
    let _ = NEXT.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..if span >= 1000 { 200 } else { 0 } {
        let port = (LOWEST + NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    // No room below the ephemeral range (or all taken): one from the kernel.
    for _ in 0..50 {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP port");
        let port = u.local_addr().expect("bound").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
