//! `headless-dns check` and `--version`, run as a user would: the real binary
//! on real files, its exit code, stdout and stderr.

mod support;

use std::process::Command;

use support::process::BIN;

/// `headless-dns check ARGS`: (exit code, stdout, stderr).
fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("check")
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 1-based number of the line of `text` that contains `marker`.
fn line_of(text: &str, marker: &str) -> usize {
    text.lines()
        .position(|l| l.contains(marker))
        .expect("marker")
        + 1
}

const CHECK_MANIFESTS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: nginx, namespace: shop}
spec: {clusterIP: None, selector: {app: nginx}, ports: [{name: web, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: nginx-1, namespace: shop, labels: {kubernetes.io/service-name: nginx}}
addressType: IPv4
ports: [{name: web, port: 80}]
endpoints:
  - {addresses: [10.1.0.10], hostname: web-0, conditions: {ready: true}}
  - {addresses: [10.1.0.11], hostname: web-1, conditions: {ready: true}}
  - {addresses: [10.1.0.12], hostname: web-2, conditions: {ready: true}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: shop}
spec:
  serviceName: nginx
  replicas: 3
  selector: {matchLabels: {app: nginx}}
  template: {metadata: {labels: {app: nginx}}, spec: {containers: [{name: c, image: x}]}}
";

#[test]
fn check_sums_up_good_files_without_binding_or_contacting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("shop.yaml");
    std::fs::write(&manifests, CHECK_MANIFESTS).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[sim]\nenabled = false\n").unwrap();
    // The port a start would bind is taken: check must not care.
    let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let (code, out, err) = check(&[
        "--config",
        config.to_str().unwrap(),
        "--manifests",
        manifests.to_str().unwrap(),
        "--listen",
        &listen,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    assert!(
        out.starts_with("ok: 2 services, 3 endpoints, 1 StatefulSet in zone cluster.local"),
        "{out}"
    );

    // The embedded demo, with its simulated pods.
    let (code, out, err) = check(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("the embedded demo, pods simulated"), "{out}");

    // The Kubernetes source: the kubeconfig is read, its API server (a
    // listener of ours) never hears from us.
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    api.set_nonblocking(true).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: t\n\
             clusters: [{{name: c, cluster: {{server: \"https://{}\"}}}}]\n\
             users: [{{name: u, user: {{token: x}}}}]\n\
             contexts: [{{name: t, context: {{cluster: c, user: u}}}}]\n",
            api.local_addr().unwrap()
        ),
    )
    .unwrap();
    let k = kubeconfig.to_str().unwrap();
    let (code, out, err) = check(&[
        "--source",
        "kubernetes",
        "--kubeconfig",
        k,
        "--context",
        "t",
        "--namespaces",
        "shop,db",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("in namespaces shop,db"), "{out}");
    assert_eq!(
        api.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "check connected to the API server"
    );
    let (code, _, err) = check(&[
        "--source",
        "kubernetes",
        "--kubeconfig",
        k,
        "--context",
        "nope",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("\"nope\" is not a context of"), "{err}");
}

#[test]
fn check_names_file_and_line_of_every_broken_manifest_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    // Document 2: a port that is not a number; document 4: bad YAML.
    let text = CHECK_MANIFESTS
        .replace(
            "{clusterIP: 10.96.0.20, ports: [{name: http, port: 80}]}",
            "\n  clusterIP: 10.96.0.20\n  ports: [{name: http, port: eighty}]",
        )
        .replace("  replicas: 3\n", "  replicas: 3\n   selector: [\n");
    std::fs::write(&path, &text).unwrap();
    let (code, out, err) = check(&["--manifests", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.is_empty(), "no summary: {out}");
    let p = path.display().to_string();
    let port_line = line_of(&text, "port: eighty");
    let yaml_line = line_of(&text, "   selector: [");
    assert!(
        err.contains(&format!("{p}:{port_line}: document 2: ")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:{yaml_line}: document 4: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
}

#[test]
fn check_names_file_and_line_of_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let p = path.display().to_string();
    // Values that parse but are wrong: every one reported, on its line.
    let text = "[dns]\nttl = 5\nzone = \"bad..zone\"\n\n[sim]\npod_cidr = \"10.0.0.0/33\"\n\n\
                [forward]\nupstreams = [\"10.0.0.1\", \"nope\"]\n";
    std::fs::write(&path, text).unwrap();
    let (code, out, err) = check(&["--config", &p]);
    assert_eq!(code, 1, "{out}");
    for (key, marker) in [
        ("dns.zone", "zone ="),
        ("sim.pod_cidr", "pod_cidr"),
        ("forward.upstreams", "upstreams"),
    ] {
        let line = line_of(text, marker);
        assert!(err.contains(&format!("{p}:{line}: {key}: ")), "{err}");
    }
    assert_eq!(err.lines().count(), 3, "{err}");
    // A bad value from a flag is not blamed on the file.
    std::fs::write(&path, "[dns]\nzone = \"cluster.local\"\n").unwrap();
    let (code, _, err) = check(&["--config", &p, "--zone", "x..y"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("dns.zone: \"x..y\""), "{err}");
    assert!(err.contains("(from a flag or the environment)"), "{err}");
    // Unknown key: the TOML parse names it and its line.
    let text = "[dns]\nttl = 5\nzoen = \"x\"\n";
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = check(&["--config", &p]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("{p}:{}: ", line_of(text, "zoen"))),
        "{err}"
    );
    assert!(err.contains("zoen"), "{err}");
}

#[test]
fn version_names_the_commit_and_the_profile() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_string(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        });
    // target/<profile>/headless-dns
    let profile = std::path::Path::new(BIN)
        .parent()
        .and_then(|p| p.file_name())
        .unwrap()
        .to_string_lossy();
    assert_eq!(
        text.trim(),
        format!(
            "headless-dns {} (commit {commit}, profile {profile})",
            env!("CARGO_PKG_VERSION")
        )
    );
}
