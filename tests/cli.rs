//! The README walk-through, run as written: the real binary on the reference
//! config, `dig` for queries, the `sim` subcommands to move pods.

mod support;

use std::process::{Command, Stdio};

use support::eventually;
use support::process::{BIN, Running, free_port};

fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=1", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is installed (.ci/test installs dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short NAME`'s address, or `None` while there is none: no answer
/// yet, or an error dig prints on stdout too (";; communications error ...
/// connection refused" before the server has bound its port).
fn dig_a(port: u16, name: &str) -> Option<String> {
    let a = dig(port, &["+short", name]);
    let a = a.trim();
    (!a.is_empty() && a.lines().all(|l| l.parse::<std::net::IpAddr>().is_ok()))
        .then(|| a.to_string())
}

/// Polls `f` (which runs dig, blocking: nothing else runs on this test's
/// runtime) until it gives a value.
async fn wait_until(what: &str, mut f: impl FnMut() -> Option<String>) -> String {
    eventually(what, || {
        let got = f();
        async move { got.ok_or_else(|| "not yet".to_string()) }
    })
    .await
}

fn sim(admin: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["sim", "--admin", admin])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn readme_walkthrough_on_the_embedded_demo() {
    let (dns, admin) = (free_port(), free_port());
    let admin_addr = format!("127.0.0.1:{admin}");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/headless-dns.toml");
    let _server = Running::spawn(
        Command::new(BIN)
            .args([
                "serve",
                "--config",
                config,
                "--listen",
                &format!("127.0.0.1:{dns}"),
                "--admin",
                &admin_addr,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "headless-dns serve",
    );

    // dig @127.0.0.1 -p 5353 web-0.nginx.default.svc.cluster.local
    let web0 = wait_until("web-0 to resolve", || {
        dig_a(dns, "web-0.nginx.default.svc.cluster.local")
    })
    .await;
    assert!(web0.starts_with("10.244."), "{web0}");
    // web-1 comes up after web-0 (OrderedReady).
    let web1 = wait_until("web-1 to resolve", || {
        dig_a(dns, "web-1.nginx.default.svc.cluster.local")
    })
    .await;
    // dig ... _web._tcp.nginx.default.svc.cluster.local SRV
    let srv = dig(
        dns,
        &["+short", "_web._tcp.nginx.default.svc.cluster.local", "SRV"],
    );
    assert!(
        srv.contains("80 web-0.nginx.default.svc.cluster.local."),
        "{srv}"
    );
    assert!(
        srv.contains("80 web-1.nginx.default.svc.cluster.local."),
        "{srv}"
    );
    let full = dig(dns, &["nope.nginx.default.svc.cluster.local"]);
    assert!(full.contains("status: NXDOMAIN"), "{full}");

    // headless-dns sim delete-pod default web-1  ->  same name, new IP
    let out = sim(&admin_addr, &["delete-pod", "default", "web-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let moved = wait_until("web-1 at a new IP", || {
        dig_a(dns, "web-1.nginx.default.svc.cluster.local").filter(|a| *a != web1)
    })
    .await;
    assert!(moved.starts_with("10.244."), "{moved}");

    // headless-dns sim scale default web 1  ->  web-1 goes away
    let out = sim(&admin_addr, &["scale", "default", "web", "1"]);
    assert!(out.status.success());
    wait_until("web-1 gone", || {
        dig(dns, &["web-1.nginx.default.svc.cluster.local"])
            .contains("status: NXDOMAIN")
            .then(String::new)
    })
    .await;
    // Unknown pod: a clear error and a failing exit code.
    let out = sim(&admin_addr, &["delete-pod", "default", "web-7"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no simulated pod default/web-7"));
}

#[tokio::test]
async fn readme_manifest_edit_moves_web_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/static-example.yaml"),
        &path,
    )
    .unwrap();
    let dns = free_port();
    let _server = Running::spawn(
        Command::new(BIN)
            .args(["serve", "--manifests"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{dns}"), "--admin", "none"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "headless-dns serve",
    );
    let name = "web-1.nginx.default.svc.cluster.local";
    wait_until("10.244.1.11", || {
        (dig(dns, &["+short", name]).trim() == "10.244.1.11").then(String::new)
    })
    .await;
    // sed -i 's/10.244.1.11/10.244.1.99/' /tmp/cluster.yaml
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("10.244.1.11", "10.244.1.99");
    std::fs::write(&path, text).unwrap();
    wait_until("10.244.1.99", || {
        (dig(dns, &["+short", name]).trim() == "10.244.1.99").then(String::new)
    })
    .await;
}

#[test]
fn bad_config_names_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[dns]\nttl = 5\nzoen = \"x\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 3") && err.contains("zoen"),
        "{err}"
    );
}
