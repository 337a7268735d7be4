//! A real upstream resolver for the forwarder: Debian's unbound (installed by
//! `.ci/test`) on a free loopback port, answering a static local zone and
//! NXDOMAIN for every other name (`local-zone "." static`), so no test
//! reaches beyond the machine.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use hickory_proto::rr::RecordType;

use super::dns::{Proto, try_query};
use super::eventually;
use super::process::{Running, free_port, loopback};

/// A running unbound; the process is killed and its directory removed when
/// this is dropped.
pub struct Unbound {
    /// Where it answers, UDP and TCP.
    pub addr: SocketAddr,
    _process: Running,
    _dir: tempfile::TempDir,
}

impl Unbound {
    /// unbound serving `zone` with the SOA it needs and `data` (local-data
    /// lines, `"name. TTL IN TYPE RDATA"`); waits until `probe` (a name of
    /// `data` with an A record) answers.
    pub async fn start(zone: &str, data: &[&str], probe: &str) -> Unbound {
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = free_port();
        let d = dir.path().display();
        let mut conf = format!(
            "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  use-syslog: no\n  logfile: \"\"\n  chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  do-ip6: no\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  local-zone: \".\" static\n  local-zone: \"{zone}.\" static\n  local-data: \"{zone}. 300 IN SOA ns.{zone}. admin.{zone}. 1 3600 600 86400 60\"\n"
        );
        for line in data {
            conf.push_str(&format!("  local-data: \"{line}\"\n"));
        }
        conf.push_str("remote-control:\n  control-enable: no\n");
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf).expect("write unbound.conf");
        let process = Running::spawn(
            Command::new("unbound")
                .arg("-d")
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "unbound (.ci/test installs it)",
        );
        let addr = loopback(port);
        eventually("unbound to answer", || async {
            try_query(Proto::Udp, addr, probe, RecordType::A)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        Unbound {
            addr,
            _process: process,
            _dir: dir,
        }
    }
}
