//! Restarts that lose no query: the running instance hands its listening
//! sockets to the new one over a Unix socket (`[dns] handover_socket`), as
//! Envoy's hot restart and HAProxy's `expose-fd listeners` do.
//!
//! A node-local cache is the only nameserver its pods have, so a restart that
//! closes the sockets for even a moment fails their lookups. Here the new
//! instance (`start`) connects to the path the running one serves
//! (`Offer`), receives every UDP socket of every listen address, the TCP
//! listeners and the admin listener (the same kernel sockets, so the same
//! queues), builds and syncs its own index while the old one keeps
//! answering, goes live, and tells the old one to stop. The old one
//! (`give`) answers what it has read, closes its TCP connections once
//! their query is answered, confirms and exits 0.
//!
//! Protocol (`wire`): `Hello` (new: protocol range, release, pid, how long it
//! may take to sync) → `Sockets`… with the descriptors, or `Refused` (old) →
//! `Taken` (new) → `Stop` or `Abort` (new) → `Stopped` (old). Every step has a
//! deadline, and every failure leaves exactly one instance serving: before
//! the new one holds the sockets, it binds afresh if the old one is gone and
//! exits otherwise; after, the old one serves on until told `Stop`, and the
//! new one, once live, serves whatever the old one does.

mod offer;
mod takeover;
pub mod wire;

use std::time::Duration;

pub(crate) use offer::{Offer, give};
pub(crate) use takeover::{Start, start};

/// The deadline of each short step (a hello, the sockets, their receipt).
const STEP: Duration = Duration::from_secs(5);

/// How long the new instance waits for the old one to confirm it stopped
/// (its UDP threads notice within 200 ms, its tasks are given 5 s).
const STOPPED_WAIT: Duration = Duration::from_secs(15);

/// The longest sync the old instance waits for, whatever the new one asks.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// `fut`, or a time-out error after [`STEP`].
async fn step<T>(fut: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(STEP, fut).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        ))
    })
}
