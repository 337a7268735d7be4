//! A pod's view for tests against stub resolvers no one here wrote (glibc,
//! musl, Go's, c-ares): the real binary serves 127.0.0.1:53 inside a private
//! network and mount namespace (`unshare -mn`), with its own loopback, a
//! Kubernetes resolv.conf (search list, `ndots:5`) and nsswitch.conf
//! bind-mounted over the host's (which may route `.local` to mDNS), and a
//! real unbound on 127.0.0.1:5300 as the forwarding upstream, serving a
//! local `example.com`. A probe command runs in there and prints what it
//! resolved; the test asserts on that.
//!
//! Needs root (CI runs as root), unbound, python3 and ip (`.ci/test`
//! installs them). Where namespaces cannot be made the test is skipped with
//! a note, except under `CI=true`, where that fails it: a CI that cannot run
//! these must not report them as passed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The pod's world: headless `nginx` (web-0 at 10.1.0.10 and fd00::10,
/// web-1 at 10.1.0.11) and two ExternalNames in namespace `default`,
/// `upstream` to `db.example.com` (upstream) and `alias` to web-0.
pub const MANIFESTS: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Service
metadata: {name: nginx, namespace: default}
spec: {clusterIP: None, ports: [{name: web, protocol: TCP, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: nginx-1, namespace: default, labels: {kubernetes.io/service-name: nginx}}
addressType: IPv4
ports: [{name: web, protocol: TCP, port: 80}]
endpoints:
  - {addresses: ["10.1.0.10"], hostname: web-0}
  - {addresses: ["10.1.0.11"], hostname: web-1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: nginx-2, namespace: default, labels: {kubernetes.io/service-name: nginx}}
addressType: IPv6
ports: [{name: web, protocol: TCP, port: 80}]
endpoints:
  - {addresses: ["fd00::10"], hostname: web-0}
---
apiVersion: v1
kind: Service
metadata: {name: upstream, namespace: default}
spec: {type: ExternalName, externalName: db.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: alias, namespace: default}
spec: {type: ExternalName, externalName: web-0.nginx.default.svc.cluster.local}
"#;

/// The search list and options of a pod in namespace `default`.
pub const RESOLV_CONF: &str = "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions ndots:5\n";

/// unbound's local data: `example.com`, with `many.example.com` holding 60
/// A records (192.0.2.100 to 192.0.2.159), too many for 512 bytes.
const UNBOUND: &str = r#"server:
  interface: 127.0.0.1
  port: 5300
  do-daemonize: no
  use-syslog: no
  logfile: ""
  chroot: ""
  username: ""
  directory: "DIR"
  pidfile: "DIR/unbound.pid"
  do-ip6: no
  num-threads: 1
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "." static
  local-zone: "example.com." static
  local-data: "example.com. 300 IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 60"
  local-data: "db.example.com. 300 IN A 192.0.2.20"
  local-data: "db.example.com. 300 IN AAAA 2001:db8::20"
  local-data: "www.example.com. 300 IN A 192.0.2.21"
MANY
remote-control:
  control-enable: no
"#;

/// The addresses of `many.example.com` on the upstream.
pub fn many_upstream() -> Vec<String> {
    (100..160).map(|i| format!("192.0.2.{i}")).collect()
}

/// The scenario inside the namespace: loopback up, files mounted, unbound
/// and our server started, the probe run once the server is ready (its
/// `/ready`), everything stopped.
const SCRIPT: &str = r#"set -eu
ip link set lo up
if [ -f "$DIR/lo-addrs" ]; then
  while read -r a; do ip addr add "$a" dev lo; done <"$DIR/lo-addrs"
fi
mount --bind "$DIR/resolv.conf" /etc/resolv.conf
mount --bind "$DIR/nsswitch.conf" /etc/nsswitch.conf
unbound -d -c "$DIR/unbound.conf" >"$DIR/unbound.log" 2>&1 &
UNBOUND=$!
"$SERVER" serve --config "$DIR/server.toml" >"$DIR/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID $UNBOUND 2>/dev/null; wait' EXIT
python3 - <<'EOF'
import time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen("http://127.0.0.1:8080/ready", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
EOF
"$@"
"#;

/// True when this process may create namespaces; when it may not, false
/// with a note that `what` is skipped, or (under `CI=true`) a panic.
pub fn available(what: &str) -> bool {
    let works = Command::new("unshare")
        .args(["-mn", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} needs root and `unshare -mn`, and CI=true: it must run here, not be skipped"
    );
    eprintln!("SKIPPED: {what} needs root and `unshare -mn` (CI runs as root)");
    false
}

/// Panics unless `tool` is on the PATH (or is an executable path).
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{tool} is missing (.ci/test installs it)");
}

/// One scenario's files: manifests, configurations, probe programs.
pub struct PodNamespace {
    dir: tempfile::TempDir,
}

impl PodNamespace {
    /// A scenario serving `manifests`, the server's `[dns]` table extended
    /// with `dns_extra` (TOML lines).
    pub fn new(manifests: &str, dns_extra: &str) -> Self {
        for tool in ["unbound", "python3", "ip"] {
            require(tool);
        }
        let ns = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let d = ns.path().display().to_string();
        let many: String = many_upstream()
            .iter()
            .map(|ip| format!("  local-data: \"many.example.com. 300 IN A {ip}\"\n"))
            .collect();
        ns.write("manifests.yaml", manifests);
        ns.write(
            "unbound.conf",
            &UNBOUND.replace("DIR", &d).replace("MANY\n", &many),
        );
        ns.write("resolv.conf", RESOLV_CONF);
        ns.write("nsswitch.conf", "hosts: files dns\n");
        ns.write(
            "server.toml",
            &format!(
                "[dns]\nlisten = [\"127.0.0.1:53\"]\nthreads = 1\n{dns_extra}\n[source]\nkind = \"file\"\nmanifests = [\"{d}/manifests.yaml\"]\n[admin]\nlisten = \"127.0.0.1:8080\"\n[sim]\nenabled = false\n[forward]\nupstreams = [\"127.0.0.1:5300\"]\ntimeout_ms = 1000\n"
            ),
        );
        ns.write("scenario.sh", SCRIPT);
        ns
    }

    /// Puts each of `ips` (IPv4) on the namespace's loopback and has the
    /// server listen on port 53 there too. A probe whose resolv.conf names
    /// one of them as its nameserver asks from that very address (for a
    /// local destination the kernel picks the destination as the source), so
    /// the server sees a client at the address of a pod in its index.
    pub fn with_client_addresses(self, ips: &[&str]) -> Self {
        let lines: String = ips.iter().map(|ip| format!("{ip}/32\n")).collect();
        self.write("lo-addrs", &lines);
        let listen: Vec<String> = std::iter::once("127.0.0.1".to_string())
            .chain(ips.iter().map(|ip| ip.to_string()))
            .map(|ip| format!("\"{ip}:53\""))
            .collect();
        self.edit("server.toml", |t| {
            t.replace(
                "listen = [\"127.0.0.1:53\"]",
                &format!("listen = [{}]", listen.join(", ")),
            )
        });
        self
    }

    /// Rewrites the scenario file `name` with `f` (the server's
    /// `server.toml`, say, before a run).
    pub fn edit(&self, name: &str, f: impl FnOnce(String) -> String) {
        let path = self.path().join(name);
        let text = std::fs::read_to_string(&path).expect("read a scenario file");
        std::fs::write(&path, f(text)).expect("write a scenario file");
    }

    /// The scenario's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file into the scenario's directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write a scenario file");
        path
    }

    /// Runs `probe` (a program and its arguments) inside the namespace once
    /// the server is ready; returns its standard output. Panics, with the
    /// server's and unbound's logs, when the scenario fails.
    pub fn run(&self, probe: &[&str]) -> String {
        let out = Command::new("timeout")
            .arg("120")
            .args(["unshare", "-mn", "--", "sh"])
            .arg(self.path().join("scenario.sh"))
            .args(probe)
            .env("DIR", self.path())
            .env("SERVER", env!("CARGO_BIN_EXE_headless-dns"))
            .output()
            .expect("run unshare");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        eprintln!("{} in the namespace:\n{stdout}", probe.join(" "));
        assert!(
            out.status.success(),
            "status {:?}\nstdout:\n{stdout}\nstderr:\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        stdout
    }

    /// The server's and unbound's logs of the last run, for a failing assertion.
    pub fn logs(&self) -> String {
        let [server, unbound] = ["server.log", "unbound.log"]
            .map(|f| std::fs::read_to_string(self.path().join(f)).unwrap_or_default());
        format!("server log:\n{server}\nunbound log:\n{unbound}")
    }
}
