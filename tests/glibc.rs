//! A pod's view, end to end: glibc's stub resolver (`getaddrinfo`, flags 0)
//! with a Kubernetes resolv.conf (search list, `ndots:5`) asks our server on
//! 127.0.0.1:53, which forwards to a real unbound on 127.0.0.1:5300 serving a
//! local `example.com`. All of it runs in a private network and mount
//! namespace (`unshare -mn`): its own loopback, port 53 free, resolv.conf and
//! nsswitch.conf bind-mounted (the host's may route `.local` names to mDNS;
//! a pod image has `hosts: files dns`). Needs root (CI runs as root),
//! unbound and python3 (`.ci/test` installs them).

use std::process::Command;

const MANIFESTS: &str = r#"
apiVersion: v1
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

/// Asks getaddrinfo (flags 0) for each name and family, one line each:
/// `<name> <family> <sorted addresses>` or `<name> <family> ERR <error>`.
/// Waits (bounded) until the server answers first.
const PROBE: &str = r#"
import socket, sys, time
for _ in range(100):
    try:
        socket.getaddrinfo("web-0.nginx", None, socket.AF_INET, socket.SOCK_STREAM)
        break
    except OSError:
        time.sleep(0.1)
fams = {"any": socket.AF_UNSPEC, "v4": socket.AF_INET, "v6": socket.AF_INET6}
for arg in sys.argv[1:]:
    name, fam = arg.split("/")
    try:
        infos = socket.getaddrinfo(name, None, fams[fam], socket.SOCK_STREAM, 0, 0)
        print(name, fam, " ".join(sorted({i[4][0] for i in infos})), flush=True)
    except OSError as e:
        print(name, fam, "ERR", e, flush=True)
"#;

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
remote-control:
  control-enable: no
"#;

/// The scenario inside the namespace: loopback up, files mounted, unbound and
/// our server started, the probe run, everything stopped.
const SCRIPT: &str = r#"set -eu
ip link set lo up
mount --bind "$DIR/resolv.conf" /etc/resolv.conf
mount --bind "$DIR/nsswitch.conf" /etc/nsswitch.conf
unbound -d -c "$DIR/unbound.conf" >"$DIR/unbound.log" 2>&1 &
UNBOUND=$!
"$SERVER" serve --config "$DIR/server.toml" >"$DIR/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID $UNBOUND 2>/dev/null; wait' EXIT
python3 "$DIR/probe.py" "$@"
"#;

#[test]
fn getaddrinfo_in_a_pod_like_namespace() {
    if !root_with_unshare() {
        eprintln!("SKIPPED: glibc end-to-end test needs root and `unshare -mn` (CI runs as root)");
        return;
    }
    for tool in ["unbound", "python3", "ip"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "{tool} is missing (.ci/test installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("manifests.yaml", MANIFESTS);
    write("probe.py", PROBE);
    write("unbound.conf", &UNBOUND.replace("DIR", &d));
    write(
        "resolv.conf",
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions ndots:5\n",
    );
    write("nsswitch.conf", "hosts: files dns\n");
    write(
        "server.toml",
        &format!(
            "[dns]\nlisten = [\"127.0.0.1:53\"]\nthreads = 1\n[source]\nkind = \"file\"\nmanifests = [\"{d}/manifests.yaml\"]\n[admin]\nlisten = \"127.0.0.1:8080\"\n[sim]\nenabled = false\n[forward]\nupstreams = [\"127.0.0.1:5300\"]\ntimeout_ms = 1000\n"
        ),
    );
    write("scenario.sh", SCRIPT);
    let asks = [
        "web-0.nginx/v4",
        "web-0.nginx/v6",
        "web-0.nginx/any",
        "nginx/v4",
        "alias/any",
        "upstream/any",
        "upstream/v4",
        "www.example.com/v4",
        "nothere/any",
    ];
    let out = Command::new("timeout")
        .arg("60")
        .args(["unshare", "-mn", "--", "sh"])
        .arg(dir.path().join("scenario.sh"))
        .args(asks)
        .env("DIR", &d)
        .env("SERVER", env!("CARGO_BIN_EXE_headless-dns"))
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let logs = ["server.log", "unbound.log"]
        .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default());
    let what = format!(
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}\nunbound log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        logs[0],
        logs[1]
    );
    eprintln!("getaddrinfo session:\n{stdout}");
    assert!(out.status.success(), "{what}");
    let lines: Vec<&str> = stdout.lines().collect();
    let expect = [
        "web-0.nginx v4 10.1.0.10",
        "web-0.nginx v6 fd00::10",
        "web-0.nginx any 10.1.0.10 fd00::10",
        "nginx v4 10.1.0.10 10.1.0.11",
        "alias any 10.1.0.10 fd00::10",
        "upstream any 192.0.2.20 2001:db8::20",
        "upstream v4 192.0.2.20",
        "www.example.com v4 192.0.2.21",
    ];
    assert_eq!(lines.len(), asks.len(), "{what}");
    assert_eq!(lines[..expect.len()], expect, "{what}");
    assert!(lines[expect.len()].starts_with("nothere any ERR"), "{what}");
}

/// True when this process may create namespaces (root, `unshare` works).
fn root_with_unshare() -> bool {
    Command::new("unshare")
        .args(["-mn", "true"])
        .status()
        .is_ok_and(|s| s.success())
}
