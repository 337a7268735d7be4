//! Real secondaries following the cluster zone: Knot (`knotd`) and BIND
//! (`named`) started on loopback ports, loading the zone by AXFR, then
//! following pod recreates (the simulator's `POST /sim/pods/.../delete`)
//! through NOTIFY + IXFR within 3 s, also with TSIG; a journal that
//! overflowed and a restarted primary make them fall back to a full
//! transfer, and they still converge. `transfer_lag` (ignored; run by
//! `bench/transfer_lag.sh`) prints the lag over 20 recreates.

mod support;
mod transfer_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use headless_dns::Config;
use hickory_proto::rr::RecordType;
use support::dns::{Proto, exchange_raw, message};
use support::eventually_within;
use support::http;
use support::process::free_port;
use support::server::{TestServer, metric};
use transfer_support::secondary::{Key, Kind, Pacing, Secondary};
use transfer_support::{SECRET, WRONG_SECRET, soa_serial};

const ZONE: &str = "cluster.local";
const WEB_1: &str = "web-1.nginx.default.svc.cluster.local";

/// The addresses `server` answers for `name` over UDP; `None` without an answer.
async fn ips_at(server: SocketAddr, name: &str) -> Option<Vec<String>> {
    let bytes = message(name, RecordType::A, Some(1232)).to_vec().unwrap();
    let reply = exchange_raw(Proto::Udp, server, &bytes).await?;
    let m = hickory_proto::op::Message::from_vec(&reply).ok()?;
    Some(support::dns::ip_strings(&m))
}

async fn serial_at(server: SocketAddr) -> Option<u32> {
    let bytes = message(ZONE, RecordType::SOA, None).to_vec().unwrap();
    let reply = exchange_raw(Proto::Udp, server, &bytes).await?;
    let m = hickory_proto::op::Message::from_vec(&reply).ok()?;
    m.answers.first().and_then(soa_serial)
}

/// The demo cluster with the simulator (pods ready `ready_ms` after
/// creation), transfers allowed from 127.0.0.1 and NOTIFY to `notify`.
fn demo(notify: &[u16], key: Key, ready_ms: u64) -> Config {
    let mut c = support::server::test_config(vec![]);
    c.sim.enabled = true;
    c.sim.ready_delay_ms = ready_ms;
    c.transfer.allow = vec!["127.0.0.1/32".parse().unwrap()];
    c.transfer.notify = notify
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    if let Some((name, secret)) = key {
        c.transfer.tsig = vec![headless_dns::config::TsigKeyConfig {
            name: name.into(),
            algorithm: "hmac-sha256".into(),
            secret: secret.into(),
            namespaces: Vec::new(),
            key_file: None,
        }];
        c.transfer.require_tsig = true;
        c.transfer.notify_key = Some(name.into());
    }
    c
}

/// Waits (bounded) until `sec` serves what the primary serves for web-1.
async fn converged(primary: SocketAddr, sec: &mut Secondary, within: Duration) {
    sec.assert_running();
    let secondary = &*sec;
    let what = format!("{:?} to serve web-1 as the primary does", sec.kind);
    eventually_within(within, &what, || async move {
        let want = ips_at(primary, WEB_1).await;
        let got = ips_at(secondary.addr, WEB_1).await;
        if want.as_ref().is_some_and(|w| !w.is_empty()) && got == want {
            Ok(())
        } else {
            Err(format!(
                "primary {want:?}, secondary {got:?}; log:\n{}",
                secondary.log()
            ))
        }
    })
    .await;
}

/// Deletes web-1 (the simulator recreates it with a new address); returns
/// the new address and when the primary first served it.
async fn recreate_web_1(s: &TestServer) -> (Vec<String>, Instant) {
    let old = ips_at(s.dns, WEB_1).await.unwrap();
    let (status, body) = http::request(s.admin, "POST", "/sim/pods/default/web-1/delete")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = ips_at(s.dns, WEB_1).await.unwrap_or_default();
        if !now.is_empty() && now != old {
            return (now, Instant::now());
        }
        assert!(Instant::now() < deadline, "web-1 was not recreated");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How long after `since` the secondary serves `want` for web-1 (at most 10 s).
async fn lag(sec: &Secondary, want: &[String], since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(10);
    loop {
        if ips_at(sec.addr, WEB_1).await.as_deref() == Some(want) {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{:?} never served {want:?}:\n{}",
            sec.kind,
            sec.log()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn ixfr_full() -> &'static str {
    "headless_dns_transfer_requests_total{kind=\"ixfr_full\"}"
}

/// Our server with Knot and BIND as secondaries (stock pacing), both loaded.
async fn primary_and_secondaries(key: Key<'_>, ready_ms: u64) -> (TestServer, Vec<Secondary>) {
    let kinds = [(Kind::Knot, Pacing::Stock), (Kind::Bind, Pacing::Stock)];
    primary_and(&kinds, key, ready_ms).await
}

/// Our server with these secondaries, all loaded.
async fn primary_and(
    kinds: &[(Kind, Pacing)],
    key: Key<'_>,
    ready_ms: u64,
) -> (TestServer, Vec<Secondary>) {
    let ports: Vec<u16> = kinds.iter().map(|_| free_port()).collect();
    let s = TestServer::start(demo(&ports, key, ready_ms)).await;
    let mut secs: Vec<Secondary> = kinds
        .iter()
        .zip(&ports)
        .map(|(&(k, pacing), &p)| Secondary::start_paced(k, p, s.dns, ZONE, key, pacing))
        .collect();
    for sec in &mut secs {
        // BIND starts slowly on a busy machine: the first load has 60 s.
        converged(s.dns, sec, Duration::from_secs(60)).await;
        assert!(
            sec.transfers().full >= 1,
            "{:?} loaded the zone without AXFR?",
            sec.kind
        );
    }
    (s, secs)
}

/// Recreates web-1 `times` times; both secondaries must serve each new
/// address within 3 s of the primary, by IXFR and never a full transfer.
async fn follow_recreates(s: &TestServer, secs: &[Secondary], times: usize) {
    let before: Vec<_> = secs.iter().map(Secondary::transfers).collect();
    let full_before = metric(s, ixfr_full()).await;
    for _ in 0..times {
        let (want, since) = recreate_web_1(s).await;
        for sec in secs {
            let took = lag(sec, &want, since).await;
            assert!(
                took <= Duration::from_secs(3),
                "{:?} took {took:?}",
                sec.kind
            );
        }
    }
    for (sec, before) in secs.iter().zip(before) {
        let after = sec.transfers();
        assert!(
            after.incremental >= before.incremental + times,
            "{:?}: {before:?} -> {after:?}",
            sec.kind
        );
        assert_eq!(
            after.full,
            before.full,
            "{:?} fell back to a full transfer:\n{}",
            sec.kind,
            sec.log()
        );
    }
    assert_eq!(metric(s, ixfr_full()).await, full_before);
}

#[tokio::test]
async fn knot_and_bind_follow_recreates_by_ixfr() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let (s, secs) = primary_and_secondaries(None, 100).await;
        follow_recreates(&s, &secs, 3).await;
        assert!(
            metric(
                &s,
                "headless_dns_transfer_notify_total{result=\"acknowledged\"}"
            )
            .await
                >= 6.0
        );
        drop(secs);
        s.stop().await;
    })
    .await
    .unwrap();
}

/// `kdig` AXFR of our zone from `source`: its output. Run off the test's
/// thread, which also runs the server.
async fn kdig_axfr(server: SocketAddr, source: &str, key: Option<&str>) -> String {
    let mut cmd = std::process::Command::new("kdig");
    cmd.args([
        "-b",
        source,
        &format!("@{}", server.ip()),
        "-p",
        &server.port().to_string(),
    ]);
    if let Some(secret) = key {
        cmd.args(["-y", &format!("hmac-sha256:xfr-key:{secret}")]);
    }
    cmd.args(["+time=5", "AXFR", ZONE]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("kdig (Debian knot-dnsutils) runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn with_tsig_both_follow_and_bad_clients_get_nothing() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let key = Some(("xfr-key", SECRET));
        let (s, secs) = primary_and_secondaries(key, 100).await;
        follow_recreates(&s, &secs, 2).await;
        // Knot checked our NOTIFYs' signatures ("ACL, allowed, action notify, ..., key 'xfr-key.'").
        assert!(
            secs[0].log().contains("key 'xfr-key.'"),
            "Knot did not see the key:\n{}",
            secs[0].log()
        );
        // The right key from an allowed address gets the zone (the control)...
        let good = kdig_axfr(s.dns, "127.0.0.1", Some(SECRET)).await;
        assert!(good.contains("web-0.nginx.default.svc"), "{good}");
        // ...a wrong key, no key, or the right key from outside `allow` get nothing.
        let bad = [
            ("127.0.0.1", Some(WRONG_SECRET), "BADSIG"), // NOTAUTH with TSIG error BADSIG
            ("127.0.0.1", None, "REFUSED"),
            ("127.0.0.2", Some(SECRET), "REFUSED"),
        ];
        for (source, secret, error) in bad {
            let out = kdig_axfr(s.dns, source, secret).await;
            assert!(
                !out.contains("web-0.nginx"),
                "{source} {secret:?} got records:\n{out}"
            );
            assert!(out.contains(error), "{source} {secret:?}: {out}");
        }
        drop(secs);
        s.stop().await;
    })
    .await
    .unwrap();
}

fn knotc_refresh(sec: &Secondary) {
    let sock = sec.dir.path().join("knot.sock");
    let out = std::process::Command::new("knotc")
        .arg("-s")
        .arg(&sock)
        .args(["zone-refresh", ZONE])
        .output()
        .expect("knotc runs");
    assert!(
        out.status.success(),
        "knotc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn journal_overflow_and_a_restart_fall_back_to_the_whole_zone() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let state = tempfile::tempdir().unwrap();
        let serial_file = state.path().join("serial");
        let port = free_port();
        // A journal of one change and no NOTIFY: Knot asks only when told.
        let mut c = demo(&[], None, 100);
        c.transfer.journal_max_changes = 1;
        c.transfer.serial_file = Some(serial_file.clone());
        let s = TestServer::start(c).await;
        // Without NOTIFY Knot takes the zone once: let the simulator start web-1 first.
        eventually_within(Duration::from_secs(10), "web-1 to come up", || async {
            let ips = ips_at(s.dns, WEB_1).await;
            ips.as_ref()
                .filter(|ips| !ips.is_empty())
                .map(|_| ())
                .ok_or(format!("{ips:?}"))
        })
        .await;
        let mut knot = Secondary::start(Kind::Knot, port, s.dns, ZONE, None);
        converged(s.dns, &mut knot, Duration::from_secs(30)).await;
        recreate_web_1(&s).await;
        recreate_web_1(&s).await;
        knotc_refresh(&knot);
        converged(s.dns, &mut knot, Duration::from_secs(5)).await;
        assert_eq!(knot.transfers().fallbacks, 1, "{}", knot.log());
        assert_eq!(metric(&s, ixfr_full()).await, 1.0);

        // Restart on the same address: the new serial is higher (the serial
        // file), the journal is empty, the startup NOTIFY brings Knot over.
        let old_serial = serial_at(s.dns).await.unwrap();
        let dns = s.dns;
        s.stop().await;
        let mut c = demo(&[port], None, 100);
        c.dns.listen = vec![dns];
        c.transfer.serial_file = Some(serial_file.clone());
        let s = TestServer::start(c).await;
        let new_serial = serial_at(s.dns).await.unwrap();
        assert!(
            new_serial > old_serial,
            "serial {old_serial} -> {new_serial}"
        );
        let floor: u32 = std::fs::read_to_string(&serial_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(floor > new_serial);
        converged(s.dns, &mut knot, Duration::from_secs(10)).await;
        eventually_within(
            Duration::from_secs(5),
            "Knot's serial to be ours",
            || async {
                let (theirs, ours) = (serial_at(knot.addr).await, serial_at(s.dns).await);
                (theirs == ours)
                    .then_some(())
                    .ok_or(format!("Knot {theirs:?}, ours {ours:?}"))
            },
        )
        .await;
        assert_eq!(knot.transfers().fallbacks, 2, "{}", knot.log());
        // From there on, IXFR again.
        follow_recreates(&s, std::slice::from_ref(&knot), 1).await;
        drop(knot);
        s.stop().await;
    })
    .await
    .unwrap();
}

/// How long after `since` each secondary's answer for web-1 satisfies
/// `done`, polling them all in turn (at most 10 s).
async fn lags(
    secs: &[Secondary],
    since: Instant,
    done: impl Fn(&[String]) -> bool,
) -> Vec<Duration> {
    let mut out: Vec<Option<Duration>> = vec![None; secs.len()];
    while out.iter().any(Option::is_none) {
        for (sec, o) in secs.iter().zip(&mut out) {
            if o.is_none() && ips_at(sec.addr, WEB_1).await.is_some_and(|ips| done(&ips)) {
                *o = Some(since.elapsed());
            }
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "a secondary is stuck"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    out.into_iter().flatten().collect()
}

/// Polls the primary until its answer for web-1 satisfies `done`; when.
async fn wait_primary(s: &TestServer, done: impl Fn(&[String]) -> bool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ips_at(s.dns, WEB_1).await.is_some_and(|ips| done(&ips)) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "the primary never changed web-1");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Median and worst, for printing.
fn summary(v: &mut [Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    v.sort();
    format!(
        "median {:.1} ms, worst {:.1} ms",
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    )
}

/// Over 20 recreates of web-1: how long after the primary each secondary
/// (Knot and BIND, each with its stock pacing and with [`Pacing::Prompt`])
/// stops serving the old address (the pod's deletion) and serves the new one
/// (the new pod ready, `LAG_READY_MS` after it, default 100 ms), and the
/// journal's bytes per change. Prints numbers; asserts only the 3 s bound.
#[tokio::test]
#[ignore = "a measurement: bench/transfer_lag.sh runs it"]
async fn transfer_lag() {
    let ready_ms = std::env::var("LAG_READY_MS").map_or(100, |v| v.parse().unwrap());
    let kinds = [
        (Kind::Knot, Pacing::Stock),
        (Kind::Knot, Pacing::Prompt),
        (Kind::Bind, Pacing::Stock),
        (Kind::Bind, Pacing::Prompt),
    ];
    let (s, secs) = primary_and(&kinds, None, ready_ms).await;
    let (mut gone, mut came) = (vec![Vec::new(); secs.len()], vec![Vec::new(); secs.len()]);
    for _ in 0..20 {
        let old = ips_at(s.dns, WEB_1).await.unwrap();
        let (status, _) = http::request(s.admin, "POST", "/sim/pods/default/web-1/delete")
            .await
            .unwrap();
        assert_eq!(status, 200);
        let since = wait_primary(&s, |ips| ips != old).await;
        for (l, d) in gone
            .iter_mut()
            .zip(lags(&secs, since, |ips| ips != old).await)
        {
            l.push(d);
        }
        let since = wait_primary(&s, |ips| !ips.is_empty() && ips != old).await;
        let new = ips_at(s.dns, WEB_1).await.unwrap();
        for (l, d) in came
            .iter_mut()
            .zip(lags(&secs, since, |ips| ips == new).await)
        {
            l.push(d);
        }
    }
    let mut out = format!("sim ready delay {ready_ms} ms\n");
    for ((sec, g), c) in secs.iter().zip(&mut gone).zip(&mut came) {
        assert!(
            c.iter()
                .chain(g.iter())
                .all(|d| *d <= Duration::from_secs(3))
        );
        out += &format!(
            "{:?} ({:?} pacing): old address dropped {}; new address served {} ({:?})\n",
            sec.kind,
            sec.pacing,
            summary(g),
            summary(c),
            sec.transfers()
        );
    }
    let changes = metric(&s, "headless_dns_transfer_journal_changes").await;
    let bytes = metric(&s, "headless_dns_transfer_journal_bytes").await;
    out += &format!(
        "journal: {changes} changes, {bytes} bytes, {:.0} bytes per change\n",
        bytes / changes.max(1.0)
    );
    std::io::Write::write_all(&mut std::io::stderr(), out.as_bytes()).unwrap();
    drop(secs);
    s.stop().await;
}
