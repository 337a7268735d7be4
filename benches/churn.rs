//! Recovery after watch churn (issue #27): how long after the last of 300
//! watch faults the final state is served, and how often the Kubernetes
//! source asked the API server meanwhile.
//!
//! Per seed: a fresh fake API server (`tests/support/fake_api`) holding the
//! churn cluster and the real server in-process, synced; then
//! `tests/support/churn.rs`'s run: 300 cycles 50-300 ms apart, each one
//! fault of the mix (every watch closed cleanly, every watch reset, a
//! compaction that makes every resume 410, two HTTP 500s plus a clean close,
//! a StatefulSet pod's slice deleted and re-created with a new address
//! while the watches are reset), then every pod moved once more; the
//! recovery is the time from the last fault until real DNS queries answer
//! the final state. Meanwhile a checker queries the names that never change
//! (none may ever answer wrong).
//!
//! Prints per seed the recovery, the faults, the list and watch requests
//! per second during the churn (all of them and those answered 5xx) and the
//! retries that came sooner after a failure than the backoff allows
//! (`support::churn::early_retries`), then the recovery's min / p50 / p90 /
//! max over the seeds. Nothing is asserted but the answers.
//!
//! Run with `cargo bench -j2 --bench churn` (8 seeds x 300 cycles, about
//! 7 minutes). `CHURN_SEEDS` and `CHURN_CYCLES` override the counts;
//! `CHURN_TIMELINE=<ms>` prints the requests of the slowest seed's last
//! `<ms>` before the last fault and after it, against the faults. Without
//! `--bench` (as `cargo test --all-targets` runs it) it is a smoke run of
//! one seed and 20 cycles.

// Printing numbers is what this bench is for.
#![allow(clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::churn::{self, Outcome};
use support::fake_api::FakeApi;
use support::k8s::{Checker, WATCHED_KINDS, k8s_config, web_answers};
use support::server::TestServer;

/// The seeds, in order: the first `n` of them.
fn seeds(n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| 0xC4A2_7000 + i * 0x1_0001).collect()
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (n_seeds, cycles) = if full { (8, 300) } else { (1, 20) };
    let n_seeds = env_usize("CHURN_SEEDS").unwrap_or(n_seeds);
    let cycles = env_usize("CHURN_CYCLES").unwrap_or(cycles);
    let timeline = env_usize("CHURN_TIMELINE");
    // The source warns at every broken watch: thousands of lines here.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start the bench's tokio runtime");
    rt.block_on(async {
        println!(
            "churn: {n_seeds} seeds x {cycles} cycles, {}-{} ms apart",
            churn::GAP_MS.0,
            churn::GAP_MS.1
        );
        let mut outcomes: Vec<Outcome> = Vec::new();
        let mut slowest: Option<(Duration, String)> = None;
        for seed in seeds(n_seeds) {
            let api = FakeApi::with_objects(churn::cluster()).await;
            let server = TestServer::start(k8s_config(&api)).await;
            api.wait_for_watches(WATCHED_KINDS).await;
            let checker = Checker::spawn(server.dns, web_answers());
            let o = churn::run(&api, server.dns, seed, cycles).await;
            let (right, wrong, samples) = checker.finish().await;
            println!(
                "seed {seed:#x}: recovery {:>5.0} ms; {:.1} requests/s during the churn \
                 ({:.2}/s answered 5xx, {} lists, {} requests in {:.1} s); retries sooner \
                 than the backoff: {}; faults: {}; stable names: {right} right, {wrong} wrong \
                 {samples:?}",
                o.recovery.as_secs_f64() * 1e3,
                o.rate(),
                o.failed_rate(),
                o.lists,
                o.requests,
                o.churn.as_secs_f64(),
                o.early.len(),
                o.fault_counts(),
            );
            for e in o.early.iter().take(5) {
                println!("  early: {e}");
            }
            if let Some(ms) = timeline
                && slowest.as_ref().is_none_or(|(d, _)| o.recovery > *d)
            {
                let t = o.timeline(&api, Duration::from_millis(ms as u64));
                slowest = Some((o.recovery, format!("seed {seed:#x}:\n{t}")));
            }
            outcomes.push(o);
            server.stop().await;
        }
        let recoveries: Vec<Duration> = outcomes.iter().map(|o| o.recovery).collect();
        let (requests, failed, secs) = outcomes.iter().fold((0, 0, 0.0), |(r, f, s), o| {
            (r + o.requests, f + o.failed, s + o.churn.as_secs_f64())
        });
        println!(
            "recovery over {} seeds: {}",
            outcomes.len(),
            churn::distribution(&recoveries)
        );
        println!(
            "requests during the churn: {:.1}/s ({:.2}/s answered 5xx) over {secs:.0} s",
            requests as f64 / secs,
            failed as f64 / secs
        );
        if let Some((_, t)) = slowest {
            println!("slowest recovery, timeline (ms from the last fault):\n{t}");
        }
    });
}
