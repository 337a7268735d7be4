//! The reload supervisor: serves one configuration at a time and swaps in
//! the next one on SIGHUP or when the config file changes, without a pause
//! in answers.
//!
//! A reload starts a new `Engine` on the same sockets (rebinding only the
//! listeners whose settings changed), waits for its first sync, lets it go
//! live, then stops the old one without its lameduck delay. A configuration
//! that does not load, bind or sync within `[source] reload_sync_timeout_ms`
//! is reported (log, `headless_dns_reload_total{result="failed"}`), its
//! engine is dropped and the running one stays: a reload never leaves names
//! unanswered. A shutdown during the wait is honoured at once.
//!
//! With `[dns] handover_socket` it also starts by taking the sockets over
//! from a running instance, and hands them on to the next one
//! ([`crate::handover`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::{Engine, FirstSync, Listeners};
use crate::error::Result;
use crate::handover::{self, Offer, Start, wire::Conn, wire::Msg};
use crate::telemetry::{ReloadResult, ReloadStats};

/// How often the config file's modification time is checked.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Serves `load()`'s configuration until `shutdown`, reloading it on SIGHUP
/// and when `watch` (the config file) changes. A reload starts a new engine on
/// the same sockets (rebinding only listeners whose addresses changed), waits
/// for its first sync, then stops the old one, so answers never pause; a
/// configuration that does not load, bind or sync in time is reported and the
/// running one stays. `shutdown` is honoured during a reload's wait too.
pub async fn serve(
    load: impl Fn() -> Result<Config>,
    watch: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let config = load()?;
    let reloads = Arc::new(ReloadStats::default());
    let mut shutdown = std::pin::pin!(shutdown);
    // The start, a reload and a hand-over are boxed: each is kB of future
    // (a hand-over's ~9 kB), and this one lives as long as the process:
    // unboxed, it would hold room for all of them the whole time.
    let Some((listeners, engine, offer)) =
        Box::pin(begin(&config, Arc::clone(&reloads), shutdown.as_mut())).await?
    else {
        return Ok(());
    };
    let mut running = Running {
        config,
        listeners,
        engine,
        reloads,
    };
    let mut hangup = signal(SignalKind::hangup())?;
    let mut last_modified = modified(watch.as_deref());
    loop {
        let asked = tokio::select! {
            _ = &mut shutdown => return running.engine.stop().await,
            r = running.engine.exited() => return r,
            _ = hangup.recv() => {
                info!("SIGHUP: reloading the configuration");
                None
            }
            conn = accept(offer.as_ref()) => Some(conn),
            _ = tokio::time::sleep(WATCH_INTERVAL) => {
                if modified(watch.as_deref()) == last_modified {
                    continue;
                }
                info!("configuration file changed: reloading");
                None
            }
        };
        if let Some(conn) = asked {
            match Box::pin(running.hand_over(conn, shutdown.as_mut())).await {
                Handed::Kept => continue,
                Handed::Gone(conn) => return Box::pin(running.bow_out(conn)).await,
                Handed::ShutDown => return running.engine.stop().await,
                Handed::Exited(r) => return r,
            }
        }
        last_modified = modified(watch.as_deref());
        match Box::pin(running.reload(&load, shutdown.as_mut())).await? {
            Reloaded::Done => {}
            Reloaded::ShutDown => {
                info!("shutting down the running configuration");
                return running.engine.stop().await;
            }
            Reloaded::Exited(r) => return r,
        }
    }
}

/// The first engine on its listeners: bound here, or taken over from the
/// instance serving `[dns] handover_socket` (then also the path, served).
/// `None`: shutdown came while it synced to take over.
async fn begin(
    config: &Config,
    reloads: Arc<ReloadStats>,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<(Listeners, Engine, Option<Offer>)>> {
    let Some(path) = &config.dns.handover_socket else {
        let listeners = Listeners::bind(config)?;
        let engine = Engine::start(config.clone(), listeners.try_clone()?, None, reloads);
        return Ok(Some((listeners, engine, None)));
    };
    Ok(
        match handover::start(config, path, reloads, shutdown).await? {
            Start::Serving {
                listeners,
                engine,
                offer,
            } => Some((listeners, engine, offer)),
            Start::ShutDown => None,
        },
    )
}

/// The next new instance asking for the sockets (never, without `offer`).
async fn accept(offer: Option<&Offer>) -> std::io::Result<Conn> {
    match offer {
        Some(o) => o.accept().await,
        None => std::future::pending().await,
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
    /// Reloads by result, for every engine's metrics page.
    reloads: Arc<ReloadStats>,
}

/// How a hand-over asked for ended for the supervisor.
enum Handed {
    /// It failed (logged): serve on.
    Kept,
    /// The new instance serves: stop reading, confirm on the connection, exit.
    Gone(Conn),
    /// Shutdown was asked during a hand-over that then failed: stop as usual.
    ShutDown,
    /// The running engine ended by itself during the wait (its result).
    Exited(Result<()>),
}

/// How a reload ended for the supervisor.
enum Reloaded {
    /// Applied, or failed with the running configuration kept: serve on.
    Done,
    /// Shutdown came during the wait: the new engine is gone, stop the
    /// running one.
    ShutDown,
    /// The running engine ended by itself during the wait (its result).
    Exited(Result<()>),
}

impl Running {
    /// Loads the configuration again and, if it changed, switches to an
    /// engine for it once that engine has synced. A configuration that does
    /// not load, bind or sync within its `reload_sync_timeout_ms` is logged
    /// and dropped; an error here (sockets that cannot be duplicated, an old
    /// engine that failed) ends the server.
    async fn reload(
        &mut self,
        load: &impl Fn() -> Result<Config>,
        shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Reloaded> {
        let next = match load() {
            Ok(c) => c,
            Err(e) => {
                self.failed(&e.to_string());
                return Ok(Reloaded::Done);
            }
        };
        if next == self.config {
            info!("configuration unchanged");
            self.reloads.count(ReloadResult::Unchanged);
            return Ok(Reloaded::Done);
        }
        let mut listeners = self.listeners.try_clone()?;
        let rebound = match listeners.rebind_changed(&self.config, &next) {
            Ok(rebound) => rebound,
            Err(e) => {
                self.failed(&format!("cannot bind: {e}"));
                return Ok(Reloaded::Done);
            }
        };
        let limit = next.reload_sync_timeout();
        let mut started = Engine::start(
            next.clone(),
            listeners.try_clone()?,
            Some((&self.engine, &self.config)),
            Arc::clone(&self.reloads),
        );
        // The running engine serves on while the new one syncs; only a
        // synced engine ever answers.
        let synced = tokio::select! {
            s = started.wait_synced(limit) => s,
            _ = shutdown => {
                info!("shutdown during a reload: the new configuration is dropped");
                started.discard().await;
                return Ok(Reloaded::ShutDown);
            }
            r = self.engine.exited() => {
                started.discard().await;
                return Ok(Reloaded::Exited(r));
            }
        };
        match synced {
            FirstSync::Synced => {}
            FirstSync::Stopped => {
                let e = started.failure().await;
                self.failed(&e);
                return Ok(Reloaded::Done);
            }
            FirstSync::TimedOut => {
                let why = started.unsynced_reason();
                self.failed(&format!(
                    "the new configuration has not synced within {limit:?} \
                     ([source] reload_sync_timeout_ms): {why}"
                ));
                started.discard().await;
                return Ok(Reloaded::Done);
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
        // Its first NOTIFYs went out while the old engine still read the
        // sockets: say it again now that only this one answers.
        self.engine.notify_again();
        self.config = next;
        self.reloads.count(ReloadResult::Applied);
        info!(rebound, "configuration reloaded");
        Ok(Reloaded::Done)
    }

    /// Gives the listeners to the new instance on `conn` (or `accept`'s
    /// error, logged), while the engine serves on. A shutdown asked
    /// meanwhile is honoured once the hand-over is done or has failed (it
    /// is bounded by the new instance's sync timeout plus 10 s).
    async fn hand_over(
        &mut self,
        conn: std::io::Result<Conn>,
        shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Handed {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "hand-over socket: accept failed");
                return Handed::Kept;
            }
        };
        // A shutdown asked meanwhile (a pod replaced by its successor gets
        // SIGTERM) waits for the hand-over: the new instance holds the
        // sockets and reads them only once synced, so stopping now would
        // leave them unread until then.
        let mut give = std::pin::pin!(handover::give(conn, &self.listeners));
        let mut shutdown = shutdown;
        let mut shutting = false;
        let given = loop {
            tokio::select! {
                r = &mut give => break r,
                _ = shutdown.as_mut(), if !shutting => {
                    info!("shutdown asked during a hand-over: finishing the hand-over first");
                    shutting = true;
                }
                r = self.engine.exited() => return Handed::Exited(r),
            }
        };
        match given {
            Ok(conn) => Handed::Gone(conn),
            Err(reason) if shutting => {
                warn!(reason = %reason, "hand-over failed; shutting down as asked");
                Handed::ShutDown
            }
            Err(reason) => {
                warn!(reason = %reason, "hand-over failed; this instance serves on");
                Handed::Kept
            }
        }
    }

    /// After `Stop`: the engine stops reading (what it read is answered, TCP
    /// connections close once their query is answered), `Stopped` is
    /// confirmed, and the process may exit 0.
    async fn bow_out(self, conn: Conn) -> Result<()> {
        info!("the new instance answers: stopping reading");
        // It reads the same sockets: leave their queues to it.
        let stopped = self.engine.retire(true).await;
        drop(self.listeners);
        let sent =
            tokio::time::timeout(Duration::from_secs(5), conn.send(&Msg::Stopped, &[])).await;
        if !matches!(sent, Ok(Ok(()))) {
            warn!("could not confirm the stop to the new instance (it serves anyway)");
        }
        info!("handed over; exiting");
        stopped
    }

    /// Reports a reload that failed: the running configuration stays.
    fn failed(&self, reason: &str) {
        self.reloads.count(ReloadResult::Failed);
        error!(reason = %reason, "reload failed; the running configuration stays");
    }
}
