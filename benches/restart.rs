//! Restarts under load (#32): queries lost per restart, a plain
//! stop-then-start against a hand-over (`[dns] handover_socket`).
//!
//! The release binary serves the manifest source (sync is instant, so a
//! plain restart's gap is the process's own) on one loopback port with two
//! UDP sockets. For each restart a UDP load (one client socket, ids matched,
//! `tests/support/load.rs`) runs at the target rate from 300 ms before it to
//! 500 ms after. A plain restart is SIGTERM (lameduck 0), wait for the exit,
//! start the next; a hand-over starts the next with the same hand-over path
//! and waits for the old one to exit. Printed per mode: the rate achieved,
//! queries lost and answers other than NOERROR per restart (mean, max,
//! total), and the p99 latency of the queries sent inside the restart window
//! (from the restart's start until the new instance answers and the old one
//! is gone). Nothing is asserted beyond the hand-over's old instance exiting 0.
//!
//! Run with `cargo bench --bench restart` (20k queries/s, 20 restarts per
//! mode). Without `--bench` (as `cargo test --all-targets` runs it) it is a
//! smoke run, 2 restarts per mode at 2k/s on the debug binary: its numbers
//! mean nothing.

// Printing numbers is what this bench is for.
#![allow(clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::load::{UdpReport, percentile, udp_load};
use support::process::{free_port, loopback};

const MANIFEST: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: nginx, namespace: default}\nspec: {clusterIP: None}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: n1, namespace: default, labels: {kubernetes.io/service-name: nginx}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1], hostname: web-0}]\n";

const NAME: &str = "web-0.nginx.default.svc.cluster.local";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (rate, rounds) = if full { (20_000, 20) } else { (2_000, 2) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("start the bench's tokio runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(900), bench(rate, rounds)).await
    })
    .expect("the bench exceeded its time limit");
}

async fn bench(rate: u64, rounds: usize) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path();
    let manifest = dir.join("manifest.yaml");
    std::fs::write(&manifest, MANIFEST).expect("write the manifest");
    println!("restart bench: {rounds} restarts per mode, target {rate} queries/s (udp)");
    for handover in [false, true] {
        let port = free_port();
        let cfg = config(dir, port, &manifest, handover);
        let mut server = spawn(dir, &cfg, 0);
        wait_answers(loopback(port)).await;
        let mut results = Vec::new();
        for round in 1..=rounds {
            let (next, report, window) =
                restart(dir, &cfg, server, round, loopback(port), rate, handover).await;
            server = next;
            results.push((report, window));
        }
        let _ = server.kill();
        let _ = server.wait();
        print(
            if handover {
                "hand-over"
            } else {
                "plain restart"
            },
            &mut results,
        );
    }
}

/// One restart under load: the new server, the load's report, and the
/// restart window (since the load started).
async fn restart(
    dir: &Path,
    cfg: &Path,
    mut old: Child,
    round: usize,
    addr: SocketAddr,
    rate: u64,
    handover: bool,
) -> (Child, UdpReport, (Duration, Duration)) {
    let load = udp_load(addr, NAME, rate, Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from = load.started().elapsed();
    let next = if handover {
        let next = spawn(dir, cfg, round);
        let status = wait_exit(&mut old).await;
        assert!(status.success(), "the old instance exited {status}");
        next
    } else {
        signal(&old, "-TERM");
        wait_exit(&mut old).await;
        spawn(dir, cfg, round)
    };
    wait_answers(addr).await;
    let to = load.started().elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    (next, load.finish(), (from, to))
}

fn print(mode: &str, results: &mut [(UdpReport, (Duration, Duration))]) {
    let n = results.len().max(1);
    let lost: Vec<usize> = results.iter().map(|(r, _)| r.lost()).collect();
    let bad: Vec<usize> = results.iter().map(|(r, _)| r.answered - r.good).collect();
    let rate = results.iter().map(|(r, _)| r.rate()).sum::<f64>() / n as f64;
    let mut inside: Vec<Duration> = results
        .iter()
        .flat_map(|(r, (from, to))| {
            r.latencies
                .iter()
                .filter(move |(sent, _)| sent >= from && sent <= to)
                .map(|(_, lat)| *lat)
        })
        .collect();
    let mut windows: Vec<Duration> = results.iter().map(|(_, (f, t))| *t - *f).collect();
    let answered_inside = inside.len();
    println!(
        "{mode}: {} restarts at {rate:.0} queries/s achieved; lost per restart: mean {:.1}, max {}, total {}; \
         not NOERROR per restart: mean {:.1}, total {}; restart window median {:?}; \
         p99 latency inside it {:?} ({answered_inside} answered queries), p50 {:?}",
        results.len(),
        lost.iter().sum::<usize>() as f64 / n as f64,
        lost.iter().max().unwrap_or(&0),
        lost.iter().sum::<usize>(),
        bad.iter().sum::<usize>() as f64 / n as f64,
        bad.iter().sum::<usize>(),
        percentile(&mut windows, 50.0),
        percentile(&mut inside, 99.0),
        percentile(&mut inside, 50.0),
    );
}

fn config(dir: &Path, port: u16, manifest: &Path, handover: bool) -> PathBuf {
    let sock = if handover {
        format!(
            "handover_socket = \"{}\"\n",
            dir.join("handover.sock").display()
        )
    } else {
        String::new()
    };
    let text = format!(
        "[dns]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 2\n{sock}[admin]\nlameduck_ms = 0\nlisten = \"127.0.0.1:{}\"\n[source]\nmanifests = [\"{}\"]\n[sim]\nenabled = false\n",
        free_port(),
        manifest.display()
    );
    let path = dir.join(if handover {
        "handover.toml"
    } else {
        "plain.toml"
    });
    std::fs::write(&path, text).expect("write the config");
    path
}

fn spawn(dir: &Path, cfg: &Path, round: usize) -> Child {
    let log = std::fs::File::create(dir.join(format!("server-{round}.log"))).expect("a log file");
    let mut cmd = support::process::serve_command(log, "warn");
    cmd.arg("--config").arg(cfg);
    cmd.spawn().expect("spawn the headless-dns binary")
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig}");
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until `addr` answers NOERROR with the record.
async fn wait_answers(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(m) = support::dns::try_query(
            support::dns::Proto::Udp,
            addr,
            NAME,
            hickory_proto::rr::RecordType::A,
        )
        .await
            && m.answers.len() == 1
        {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} does not answer");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
