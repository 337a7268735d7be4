//! Sources of Kubernetes objects, all feeding the index through [`SourceEvent`]s.
//!
//! - `file`: manifests on disk (or the embedded demo), re-read on change;
//! - `sim`: a StatefulSet controller simulator on top of the file source;
//! - `k8s`: a real API server through kube's watcher (`access`: the
//!   permissions it is refused).
//!
//! Every source speaks the same re-list language (`Reset`, `Upsert`, `Remove`,
//! `Synced`), so the file source and the simulator exercise the very index path
//! a cluster does. [`Differ`] turns "the full desired state now" into that
//! language for the sources that think in whole states.

pub mod access;
pub mod api_health;
pub mod file;
pub mod k8s;
pub mod sim;

use std::collections::HashMap;
use std::hash::BuildHasher;

use tokio::sync::mpsc;
use tracing::debug;

pub use crate::index::SourceEvent;
use crate::index::{IndexWriter, Kind, Object, ObjectKey};

/// All objects of a desired state, by kind and key.
pub type ObjectMap = HashMap<(Kind, ObjectKey), Object>;

/// Turns successive full states into events: a complete re-list the first
/// time, then only what was added, changed or removed.
///
/// It remembers the previous state as a 64-bit hash per object, not as a
/// copy: at 100,000 endpoints a copy of the records was ~30 MB. Two
/// versions of an object colliding (odds ~1e-19 per change) would only miss
/// that one change until the object changes again.
#[derive(Default)]
pub struct Differ {
    last: Option<HashMap<(Kind, ObjectKey), u64>>,
    hasher: std::hash::RandomState,
}

impl Differ {
    /// The events that take the index from the previous state to `next`.
    pub fn diff(&mut self, next: ObjectMap) -> Vec<SourceEvent> {
        let mut events = Vec::new();
        let hashes: HashMap<(Kind, ObjectKey), u64> = next
            .iter()
            .map(|(k, obj)| (k.clone(), self.hasher.hash_one(obj)))
            .collect();
        match &self.last {
            None => {
                events.extend(Kind::ALL.iter().map(|k| SourceEvent::Reset(*k)));
                events.extend(next.into_values().map(SourceEvent::Upsert));
                events.extend(Kind::ALL.iter().map(|k| SourceEvent::Synced(*k)));
            }
            Some(last) => {
                for (k, obj) in next {
                    if last.get(&k) != hashes.get(&k) {
                        events.push(SourceEvent::Upsert(obj));
                    }
                }
                for (kind, key) in last.keys() {
                    if !hashes.contains_key(&(*kind, key.clone())) {
                        events.push(SourceEvent::Remove(*kind, key.clone()));
                    }
                }
            }
        }
        self.last = Some(hashes);
        events
    }
}

/// Capacity of the event queue between sources and the writer. A full queue
/// makes the source wait (back-pressure), so a burst cannot grow memory.
pub const QUEUE: usize = 4096;

/// Events the writer's batch buffer keeps room for between batches.
const IDLE_BATCH: usize = 64;

/// Runs the index writer: applies events in batches and publishes once per
/// batch, until every sender is gone.
///
/// It also times event to answer per batch, from the moment its first event
/// can have entered the queue to the publication: a batch that found the
/// writer waiting started when it arrived; one that queued behind the
/// previous batch counts from when that batch was taken (which emptied the
/// queue), an upper bound.
pub async fn run_writer(mut writer: IndexWriter, mut rx: mpsc::Receiver<SourceEvent>) {
    // Grows to the largest batch (up to QUEUE events of ~100 bytes) and is
    // cut back after each, so a sync's burst is not kept for good.
    let mut batch = Vec::new();
    let index = writer.index();
    let mut taken = std::time::Instant::now();
    loop {
        let idle = rx.is_empty();
        if rx.recv_many(&mut batch, QUEUE).await == 0 {
            break;
        }
        let now = std::time::Instant::now();
        let entered = if idle { now } else { taken };
        taken = now;
        debug!(events = batch.len(), "applying source events");
        if tracing::enabled!(tracing::Level::DEBUG) {
            for e in &batch {
                match e {
                    SourceEvent::Reset(k) => debug!(kind = k.as_str(), "re-list started"),
                    SourceEvent::Synced(k) => debug!(kind = k.as_str(), "re-list complete"),
                    SourceEvent::Upsert(o) => {
                        debug!(kind = o.kind().as_str(), key = %o.key(), "upsert")
                    }
                    SourceEvent::Remove(k, key) => debug!(kind = k.as_str(), %key, "remove"),
                    SourceEvent::ResetIn(k, ns) => {
                        debug!(kind = k.as_str(), namespace = &**ns, "re-list started")
                    }
                    SourceEvent::SyncedIn(k, ns) => {
                        debug!(kind = k.as_str(), namespace = &**ns, "re-list complete")
                    }
                }
            }
        }
        writer.apply_all(batch.drain(..));
        batch.shrink_to(IDLE_BATCH);
        let s = index.stats();
        crate::histogram::observe(&s.answer_buckets, &s.answer_ns, entered.elapsed());
    }
}
