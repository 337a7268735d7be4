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

/// The real binary on the reference config (the README's), DNS on `dns`,
/// admin on `admin_addr`; stopped when dropped.
fn serve_reference(dns: u16, admin_addr: &str) -> Running {
    serve_reference_with(dns, admin_addr, |_| {})
}

/// [`serve_reference`] with `more` environment (set before the args).
fn serve_reference_with(dns: u16, admin_addr: &str, more: impl FnOnce(&mut Command)) -> Running {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/headless-dns.toml");
    let mut cmd = Command::new(BIN);
    more(&mut cmd);
    Running::spawn(
        cmd.args(["serve", "--config", config])
            .args([
                "--listen",
                &format!("127.0.0.1:{dns}"),
                "--admin",
                admin_addr,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "headless-dns serve",
    )
}

#[tokio::test]
async fn readme_walkthrough_on_the_embedded_demo() {
    let (dns, admin) = (free_port(), free_port());
    let admin_addr = format!("127.0.0.1:{admin}");
    let _server = serve_reference(dns, &admin_addr);

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

/// `sim scale` past the pod CIDR fails with the server's message and a
/// failing exit code; the StatefulSet keeps its pods.
#[test]
fn sim_scale_beyond_the_pod_cidr_fails() {
    let (dns, admin) = (free_port(), free_port());
    let admin_addr = format!("127.0.0.1:{admin}");
    let _server = serve_reference(dns, &admin_addr);
    let mongo2 = "mongo-2.mongo.default.svc.cluster.local";
    wait_until_sync("mongo-2 to resolve", || dig_a(dns, mongo2));
    let out = sim(&admin_addr, &["scale", "default", "mongo", "4294967295"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("more than the pod CIDR holds"), "{err}");
    assert!(err.contains("HTTP 400"), "{err}");
    // The positive sign that the simulator is past the refused scale: a
    // later command's change is served (a scale it had applied would have
    // published its pods first). Then mongo-2 is still there, mongo-3 not.
    let out = sim(&admin_addr, &["set-ready", "default", "mongo-0", "false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until_sync("mongo-0 out of DNS", || {
        dig(dns, &["mongo-0.mongo.default.svc.cluster.local"])
            .contains("status: NXDOMAIN")
            .then(String::new)
    });
    assert!(dig_a(dns, mongo2).is_some(), "mongo-2 still there");
    assert!(dig(dns, &["mongo-3.mongo.default.svc.cluster.local"]).contains("NXDOMAIN"));
}

/// The admin token is read at start and again on reload: after the token
/// file is rewritten and the server gets SIGHUP, the new token opens
/// `/records` and the old one no longer does. `sim` sends the token from
/// `--token-file`; without it, it is refused (401).
#[test]
fn the_admin_token_is_read_again_on_reload_and_sim_sends_it() {
    let (dns, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let (old, new) = ("old-token-0123456789abcdef", "new-token-0123456789abcdef");
    std::fs::write(&token_file, old).unwrap();
    let admin_addr = format!("127.0.0.1:{admin}");
    let server = serve_reference_with(dns, &admin_addr, |cmd| {
        cmd.env("HEADLESS_DNS_ADMIN_TOKEN_FILE", &token_file)
            .env("HEADLESS_DNS_ADMIN_REQUIRE_TOKEN", "always");
    });
    let addr: std::net::SocketAddr = admin_addr.parse().unwrap();
    let records = |token: &'static str, want: u16| async move {
        match support::http::request_as(addr, "GET", "/records", Some(token)).await {
            Ok((status, _)) if status == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(eventually("/records open to the first token", || {
        records(old, 200)
    }));
    assert_eq!(rt.block_on(records(new, 401)), Ok(()));

    rt.block_on(wait_until("web-0 to resolve", || {
        dig_a(dns, "web-0.nginx.default.svc.cluster.local")
    }));
    let out = sim(&admin_addr, &["delete-pod", "default", "web-0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));
    let with_token = |token_file: &std::path::Path| {
        Command::new(BIN)
            .args(["sim", "--admin", &admin_addr, "--token-file"])
            .arg(token_file)
            .args(["delete-pod", "default", "web-0"])
            .output()
            .unwrap()
    };
    let out = with_token(&token_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&token_file, format!("{new}\n")).unwrap();
    server.signal("-HUP");
    rt.block_on(async {
        eventually("/records open to the new token", || records(new, 200)).await;
        eventually("/records closed to the old one", || records(old, 401)).await;
    });
}

/// With no subcommand the `HEADLESS_DNS_*` environment applies as it does to
/// `serve`: the embedded demo answers on the port the environment names.
#[test]
fn environment_applies_without_a_subcommand() {
    let (dns, admin) = (free_port(), free_port());
    let child = Command::new(BIN)
        .env("HEADLESS_DNS_LISTEN", format!("127.0.0.1:{dns}"))
        .env("HEADLESS_DNS_ADMIN", format!("127.0.0.1:{admin}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Running(child);
    let web0 = wait_until_sync("web-0 on the port HEADLESS_DNS_LISTEN names", || {
        dig_a(dns, "web-0.nginx.default.svc.cluster.local")
    });
    assert!(web0.starts_with("10.244."), "{web0}");
}

/// A UDP thread that panics (the test fault hook) turns `/health` to 503
/// naming it, and the process exits non-zero with a log line saying so.
#[test]
fn a_dead_udp_thread_fails_health_and_the_exit_code() {
    let (dns, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("h.toml");
    std::fs::write(&config, "[admin]\nlameduck_ms = 3000\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{dns}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .env("HEADLESS_DNS_TEST_UDP_PANIC_AFTER_MS", "1500")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let health = |want: u16| async move {
        match support::http::request(admin_addr, "GET", "/health").await {
            Ok((status, body)) if status == want => Ok(body),
            other => Err(format!("{other:?}")),
        }
    };
    let body = rt.block_on(async {
        eventually("/health 200 first", || health(200)).await;
        eventually("/health 503 after the thread died", || health(503)).await
    });
    assert!(body.contains("udp thread dns-udp-"), "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "exit status {status}; stderr:\n{err}");
    assert!(err.contains("(panicked) died"), "{err}");
    assert!(err.contains("udp thread dns-udp-"), "{err}");
}

/// [`wait_until`] from a test without a runtime of its own.
fn wait_until_sync(what: &str, f: impl FnMut() -> Option<String>) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime to poll on")
        .block_on(wait_until(what, f))
}
