//! The reload supervisor: serves one configuration at a time and swaps in
//! the next one on SIGHUP or when the config file changes, without a pause
//! in answers.
//!
//! A reload starts a new `Engine` on the same sockets (rebinding only the
//! listeners whose settings changed), waits for its first sync, lets it go
//! live, then stops the old one without its lameduck delay. A configuration
//! that does not load or bind is reported and the running one stays.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::{Engine, FirstSync, Listeners};
use crate::error::Result;

/// How often the config file's modification time is checked.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How long a reload waits for the new engine's first sync before it
/// switches anyway.
const SYNC_LIMIT: Duration = Duration::from_secs(30);

/// Serves `load()`'s configuration until `shutdown`, reloading it on SIGHUP
/// and when `watch` (the config file) changes. A reload starts a new engine on
/// the same sockets (rebinding only listeners whose addresses changed), waits
/// for its first sync, then stops the old one, so answers never pause; a bad
/// configuration is reported and the running one stays.
pub async fn serve(
    load: impl Fn() -> Result<Config>,
    watch: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let config = load()?;
    let listeners = Listeners::bind(&config)?;
    let engine = Engine::start(config.clone(), listeners.try_clone()?, None);
    let mut running = Running {
        config,
        listeners,
        engine,
    };
    let mut hangup = signal(SignalKind::hangup())?;
    let mut last_modified = modified(watch.as_deref());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return running.engine.stop().await,
            r = running.engine.exited() => return r,
            _ = hangup.recv() => info!("SIGHUP: reloading the configuration"),
            _ = tokio::time::sleep(WATCH_INTERVAL) => {
                if modified(watch.as_deref()) == last_modified {
                    continue;
                }
                info!("configuration file changed: reloading");
            }
        }
        last_modified = modified(watch.as_deref());
        running.reload(&load).await?;
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The file's modification time, if it has one we can read.
fn modified(path: Option<&Path>) -> Option<SystemTime> {
    std::fs::metadata(path?).and_then(|m| m.modified()).ok()
}

/// The configuration being served, its listeners and the engine serving it.
struct Running {
    config: Config,
    listeners: Listeners,
    engine: Engine,
}

impl Running {
    /// Loads the configuration again and, if it changed, switches to an
    /// engine for it. A configuration that does not load or bind is logged
    /// and skipped; an error here (sockets that cannot be duplicated, an old
    /// engine that failed) ends the server.
    async fn reload(&mut self, load: &impl Fn() -> Result<Config>) -> Result<()> {
        let next = match load() {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "reload failed; the running configuration stays");
                return Ok(());
            }
        };
        if next == self.config {
            info!("configuration unchanged");
            return Ok(());
        }
        let mut listeners = self.listeners.try_clone()?;
        let rebound = match listeners.rebind_changed(&self.config, &next) {
            Ok(rebound) => rebound,
            Err(e) => {
                error!(error = %e, "reload failed: cannot bind; the running configuration stays");
                return Ok(());
            }
        };
        let mut started = Engine::start(
            next.clone(),
            listeners.try_clone()?,
            Some((&self.engine, &self.config)),
        );
        match started.wait_synced(SYNC_LIMIT).await {
            FirstSync::Synced => {}
            FirstSync::Stopped => {
                let e = started.failure().await;
                error!(error = %e, "reload failed; the running configuration stays");
                return Ok(());
            }
            FirstSync::TimedOut => {
                warn!("the new configuration has not synced within 30 s; switching anyway")
            }
        }
        started.go_live();
        let shares_udp = !Listeners::udp_changes(&self.config, &next);
        // Our copies of replaced sockets go first: the retiring engine's UDP
        // threads then hold the last ones, and a socket closes the moment its
        // thread has answered what was queued (nothing lands in between).
        self.listeners = listeners;
        std::mem::replace(&mut self.engine, started)
            .retire(shares_udp)
            .await?;
        self.config = next;
        info!(rebound, "configuration reloaded");
        Ok(())
    }
}
