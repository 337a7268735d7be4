//! The one test harness of the black-box tests: the real server started
//! in-process on ephemeral loopback ports ([`server`]) or as the real binary
//! ([`process`]), a small DNS client over real UDP/TCP sockets ([`dns`]), a
//! small HTTP client for the admin API ([`http`]), a fake Kubernetes API
//! server ([`fake_api`]) with cluster fixtures ([`k8s`]) and a watch-churn
//! scenario ([`churn`]), the file-source fixtures ([`fixtures`]), hand-built
//! packets ([`packets`]), a pod-like network namespace for real stub
//! resolvers ([`namespace`]), a real upstream resolver ([`unbound`]), and one
//! bounded poll-until ([`eventually`]).
//!
//! Each test crate does `mod support;` and uses what it needs, so items
//! unused by one crate are not dead code in general.
#![allow(dead_code)]

pub mod churn;
pub mod dns;
pub mod fake_api;
pub mod fixtures;
pub mod http;
pub mod k8s;
pub mod load;
pub mod namespace;
pub mod packets;
pub mod process;
pub mod server;
pub mod unbound;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long a test waits for the server to react to something (a change, a
/// start, a reload) before it fails. A correctness bound, not a speed one.
pub const WAIT: Duration = Duration::from_secs(20);

/// Logs to the test's captured output; `RUST_LOG` filters (default warn).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Runs `test` with logging on, failing it if it takes longer than `limit`
/// (a hang fails instead of stalling CI).
pub async fn within<F: Future>(limit: Duration, test: F) -> F::Output {
    init_logs();
    tokio::time::timeout(limit, test)
        .await
        .unwrap_or_else(|_| panic!("test exceeded its time limit of {limit:?}"))
}

/// Polls `check` every 20 ms until it returns `Ok`, and returns its value;
/// panics with `what` and the last `Err` after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_within(WAIT, what, check).await
}

/// [`eventually`] with its own deadline.
pub async fn eventually_within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
