//! The new instance's side: take the sockets over from the running instance
//! if there is one, else bind them; then serve the hand-over path itself.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixStream;
use tracing::{error, info, warn};

use super::wire::{Conn, Msg, PROTOCOL, common_version};
use super::{Offer, STOPPED_WAIT, step};
use crate::cli::VERSION;
use crate::config::Config;
use crate::engine::{Engine, FirstSync, Listeners, SocketKind};
use crate::error::{Error, Result};
use crate::telemetry::ReloadStats;

/// How a start with a hand-over path ended.
pub(crate) enum Start {
    /// Serving: the engine is live on `listeners` (taken over or bound), and
    /// the path is served for the next restart (unless it could not be).
    Serving {
        /// The listeners, the supervisor's copies.
        listeners: Listeners,
        /// The engine serving them.
        engine: Engine,
        /// The hand-over path, served.
        offer: Option<Offer>,
    },
    /// A shutdown came while the new instance synced; the old one serves on.
    ShutDown,
}

/// Starts `config`: takes the listening sockets over from the instance
/// serving `path` (once this one's index has synced), or, with none there,
/// binds them; then serves `path`.
pub(crate) async fn start(
    config: &Config,
    path: &Path,
    reloads: Arc<ReloadStats>,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<Start> {
    let conn = match step(UnixStream::connect(path)).await {
        Ok(s) => Conn::new(s),
        Err(e) if is_nobody(&e) => {
            info!(path = %path.display(), "no running instance to take over from: binding");
            return fresh(config, path, reloads, Duration::ZERO).await;
        }
        Err(e) => {
            return Err(Error::Handover(format!(
                "dns.handover_socket: cannot connect to {}: {e}",
                path.display()
            )));
        }
    };
    take_over(conn, config, path, reloads, shutdown).await
}

/// No instance listens there: no socket file, or a stale one.
fn is_nobody(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    matches!(e.kind(), NotFound | ConnectionRefused)
}

/// Binds `config`'s listeners (retrying for `patience`, while a dying old
/// instance lets go of the ports), starts serving and serves `path`.
async fn fresh(
    config: &Config,
    path: &Path,
    reloads: Arc<ReloadStats>,
    patience: Duration,
) -> Result<Start> {
    let until = Instant::now() + patience;
    let listeners = loop {
        match Listeners::bind(config) {
            Ok(l) => break l,
            Err(e) if Instant::now() < until => {
                tracing::debug!(error = %e, "binding; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let offer = Offer::bind(path)?;
    let engine = Engine::start(config.clone(), listeners.try_clone()?, None, reloads);
    Ok(Start::Serving {
        listeners,
        engine,
        offer: Some(offer),
    })
}

/// Why the sockets did not come over.
enum Failed {
    /// The running instance refused (no common protocol version): it
    /// serves on, so this one exits.
    Refused(String),
    /// It went away or spoke nonsense before the sockets came: bind afresh
    /// (which fails, and this one exits, if it still holds the ports).
    Gone(String),
    /// The sockets came but this configuration's listeners could not be
    /// built from them: this one exits, the old one serves on.
    Adopt(Error),
}

/// The hand-over proper, from the hello to the old instance's `Stopped`.
async fn take_over(
    mut conn: Conn,
    config: &Config,
    path: &Path,
    reloads: Arc<ReloadStats>,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<Start> {
    let wait = config.reload_sync_timeout();
    let listeners = match receive(&mut conn, config, wait).await {
        Ok(l) => l,
        Err(Failed::Refused(reason)) => {
            return Err(Error::Handover(format!(
                "the running instance refused: {reason}; it serves on"
            )));
        }
        Err(Failed::Gone(why)) => {
            warn!(reason = %why, "hand-over failed before the sockets came; binding afresh");
            return fresh(config, path, reloads, Duration::from_secs(3))
                .await
                .map_err(|e| {
                    Error::Handover(format!(
                        "{why}; binding afresh failed too ({e}): the running instance serves on"
                    ))
                });
        }
        Err(Failed::Adopt(e)) => {
            abort(&conn, &e.to_string()).await;
            return Err(Error::Handover(format!(
                "cannot serve the inherited sockets ({e}): the running instance serves on"
            )));
        }
    };
    let Some(engine) = sync(&conn, config, &listeners, reloads, wait, shutdown).await? else {
        return Ok(Start::ShutDown);
    };
    engine.go_live();
    info!("synced and answering; telling the previous instance to stop");
    confirm_stopped(&mut conn).await;
    // Its first NOTIFYs went out while the previous instance still read
    // the sockets: say it again now that only this one answers.
    engine.notify_again();
    let offer = Offer::bind(path)
        .inspect_err(
            |e| error!(error = %e, "cannot serve the hand-over path; serving on without it"),
        )
        .ok();
    Ok(Start::Serving {
        listeners,
        engine,
        offer,
    })
}

/// Says hello, receives the sockets, builds this configuration's listeners
/// from them and says `Taken`.
async fn receive(conn: &mut Conn, config: &Config, wait: Duration) -> Result<Listeners, Failed> {
    let hello = Msg::Hello {
        min: PROTOCOL.0,
        max: PROTOCOL.1,
        version: VERSION.into(),
        pid: std::process::id(),
        wait_ms: wait.as_millis() as u64,
    };
    let gone = |what: &str, e: std::io::Error| Failed::Gone(format!("{what}: {e}"));
    step(conn.send(&hello, &[]))
        .await
        .map_err(|e| gone("sending the hello", e))?;
    let mut inherited = Vec::new();
    loop {
        let msg = step(conn.recv())
            .await
            .map_err(|e| gone("waiting for the sockets", e))?;
        let (protocol, version, pid, sockets, more) = match msg {
            Msg::Refused { reason } => return Err(Failed::Refused(reason)),
            Msg::Sockets {
                protocol,
                version,
                pid,
                sockets,
                more,
            } => (protocol, version, pid, sockets, more),
            other => return Err(Failed::Gone(format!("protocol error: {other:?}"))),
        };
        if common_version(PROTOCOL, protocol, protocol).is_none() {
            return Err(Failed::Gone(format!("protocol version {protocol} chosen")));
        }
        let fds = conn
            .take_fds(sockets.len())
            .map_err(|e| gone("the sockets", e))?;
        if inherited.is_empty() {
            info!(pid, version = %version, "taking the sockets over from the running instance");
        }
        let kinds: Vec<SocketKind> = sockets.iter().map(|s| s.kind).collect();
        inherited.extend(kinds.into_iter().zip(fds));
        if !more {
            break;
        }
    }
    let (listeners, adopted) = Listeners::adopt(config, inherited).map_err(Failed::Adopt)?;
    info!(
        kept = adopted.kept,
        bound = adopted.bound,
        dropped = adopted.dropped,
        "listening sockets taken over"
    );
    if let Err(e) = step(conn.send(&Msg::Taken, &[])).await {
        // We hold the sockets: they live on whatever became of it.
        warn!(error = %e, "the running instance went away after sending its sockets");
    }
    Ok(listeners)
}

/// Starts the engine on the inherited sockets without serving them, and
/// waits (at most `wait`) for its first sync. `None`: shutdown came first.
/// Failing to sync tells the old instance `Abort` (it serves on) and exits.
async fn sync(
    conn: &Conn,
    config: &Config,
    listeners: &Listeners,
    reloads: Arc<ReloadStats>,
    wait: Duration,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<Engine>> {
    let mut engine = Engine::start_beside(config.clone(), listeners.try_clone()?, reloads);
    let synced = tokio::select! {
        s = engine.wait_synced(wait) => s,
        _ = shutdown => {
            abort(conn, "it was shut down before it synced").await;
            engine.discard().await;
            return Ok(None);
        }
    };
    let why = match synced {
        FirstSync::Synced => return Ok(Some(engine)),
        FirstSync::Stopped => engine.failure().await,
        FirstSync::TimedOut => {
            let why = format!(
                "not synced within {wait:?} ([source] reload_sync_timeout_ms): {}",
                engine.unsynced_reason()
            );
            engine.discard().await;
            why
        }
    };
    abort(conn, &why).await;
    Err(Error::Handover(format!(
        "{why}; the running instance serves on"
    )))
}

/// Tells the old instance this one gives up (best effort: it may be gone).
async fn abort(conn: &Conn, reason: &str) {
    let msg = Msg::Abort {
        reason: reason.into(),
    };
    if let Err(e) = step(conn.send(&msg, &[])).await {
        warn!(error = %e, "could not tell the running instance the hand-over is off");
    }
}

/// Says `Stop` and waits for `Stopped`. This instance serves whatever the
/// answer: only the log differs.
async fn confirm_stopped(conn: &mut Conn) {
    let r = tokio::time::timeout(STOPPED_WAIT, async {
        conn.send(&Msg::Stop, &[]).await?;
        conn.recv().await
    })
    .await;
    match r {
        Ok(Ok(Msg::Stopped)) => info!("the previous instance stopped; serving alone"),
        Ok(Ok(other)) => warn!(reply = ?other, "unexpected reply to stop; serving"),
        Ok(Err(e)) => {
            warn!(error = %e, "the previous instance did not confirm it stopped; serving")
        }
        Err(_) => warn!(
            "the previous instance did not confirm it stopped within {STOPPED_WAIT:?}; serving"
        ),
    }
}
