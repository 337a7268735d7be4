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
    /// end of the interval, rate, the interval in ms), oldest first.
    pub fn per_second(&self) -> Vec<(u64, f64, u64)> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let s: Vec<(u64, u64)> = s.iter().copied().collect();
        s.windows(2)
            .filter(|w| w[1].0 > w[0].0)
            .map(|w| {
                let ms = w[1].0 - w[0].0;
                let rate = w[1].1.saturating_sub(w[0].1) as f64 * 1000.0 / ms as f64;
                (w[1].0, rate, ms)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_interval_and_the_window_is_bounded() {
        let r = Rates::default();
        r.sample(1_000, 10);
        r.sample(2_000, 110);
        r.sample(2_500, 160);
        assert_eq!(r.per_second(), [(2_000, 100.0, 1_000), (2_500, 100.0, 500)]);
        for i in 0..2 * WINDOW as u64 {
            r.sample(3_000 + i * 1_000, 200 + i);
        }
        let rates = r.per_second();
        assert_eq!(rates.len(), WINDOW);
        assert!(
            rates
                .iter()
                .all(|(_, rate, ms)| *rate == 1.0 && *ms == 1_000)
        );
    }
}
