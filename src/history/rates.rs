//! Queries per second over the last minutes, for the record browser's chart.
//!
//! A task samples the query path's request total once a second (summing its
//! counter shards, as a scrape does) into a ring of [`WINDOW`] samples; the
//! query path itself does nothing more than it does for `/metrics`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::History;

/// Samples kept: five minutes at one a second.
pub const WINDOW: usize = 300;

/// How often the total is sampled.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The ring of (Unix ms, request total) samples, oldest first.
#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<(u64, u64)>>,
}

impl Rates {
    /// Adds a sample of the request `total` at `now_ms`.
    pub fn sample(&self, now_ms: u64, total: u64) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.push_back((now_ms, total));
        while s.len() > WINDOW + 1 {
            s.pop_front();
        }
    }

    /// Queries per second between successive samples, as (Unix ms at the
    /// end of the interval, rate), oldest first.
    pub fn per_second(&self) -> Vec<(u64, f64)> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let s: Vec<(u64, u64)> = s.iter().copied().collect();
        s.windows(2)
            .filter(|w| w[1].0 > w[0].0)
            .map(|w| {
                let secs = (w[1].0 - w[0].0) as f64 / 1000.0;
                (w[1].0, w[1].1.saturating_sub(w[0].1) as f64 / secs)
            })
            .collect()
    }
}

/// Samples `total()` into `history`'s rates every [`INTERVAL`] until `stop`.
pub async fn run(
    history: Arc<History>,
    total: impl Fn() -> u64 + Send + 'static,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => history.rates().sample(crate::clock::unix_ms(), total()),
        }
    }
}
