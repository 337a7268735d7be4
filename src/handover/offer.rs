//! The running instance's side: serve the hand-over path, and give the
//! listening sockets to a new instance that asks.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;
use tracing::info;

use super::wire::{Conn, Described, MAX_FDS, Msg, PROTOCOL, common_version};
use super::{MAX_WAIT, STEP, step};
use crate::cli::VERSION;
use crate::engine::Listeners;
use crate::error::{Error, Result};

/// The hand-over path, served by the running instance.
pub(crate) struct Offer {
    listener: UnixListener,
}

impl Offer {
    /// Serves `path` (mode 0600): bound beside it first and renamed over it,
    /// so a connection never meets a missing path or another user's socket,
    /// and a stale socket of a dead instance is replaced.
    pub(crate) fn bind(path: &Path) -> Result<Offer> {
        let fail = |what: &str, e: std::io::Error| {
            Error::Handover(format!(
                "dns.handover_socket: cannot {what} {}: {e}",
                path.display()
            ))
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let l = std::os::unix::net::UnixListener::bind(&tmp).map_err(|e| fail("bind", e))?;
        let setup = || -> std::io::Result<UnixListener> {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, path)?;
            l.set_nonblocking(true)?;
            UnixListener::from_std(l)
        };
        let listener = setup().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            fail("serve", e)
        })?;
        info!(path = %path.display(), "hand-over socket ready");
        Ok(Offer { listener })
    }

    /// The next new instance asking for the sockets.
    pub(crate) async fn accept(&self) -> std::io::Result<Conn> {
        let (stream, _) = self.listener.accept().await?;
        Ok(Conn::new(stream))
    }
}

/// Gives `listeners` to the new instance on `conn` and waits (as long as it
/// said it may take to sync, plus a margin) for it to say `Stop`: then
/// returns the connection, on which the caller confirms `Stopped` once its
/// engine has stopped reading. An error says why the hand-over did not
/// happen: the caller serves on.
pub(crate) async fn give(mut conn: Conn, listeners: &Listeners) -> Result<Conn, String> {
    let (wait, protocol) = hello(&mut conn).await?;
    let inventory = listeners.inventory().map_err(|e| e.to_string())?;
    let mut batches: Vec<_> = inventory.chunks(MAX_FDS).collect();
    if batches.is_empty() {
        // Nothing to give (no listener at all): one empty batch says so.
        batches.push(&[]);
    }
    let last = batches.len().saturating_sub(1);
    for (i, batch) in batches.iter().enumerate() {
        let msg = Msg::Sockets {
            protocol,
            version: VERSION.into(),
            pid: std::process::id(),
            sockets: batch
                .iter()
                .map(|(kind, addr, _)| Described {
                    kind: *kind,
                    addr: *addr,
                })
                .collect(),
            more: i < last,
        };
        let fds: Vec<_> = batch.iter().map(|(_, _, fd)| *fd).collect();
        step(conn.send(&msg, &fds))
            .await
            .map_err(|e| format!("sending the sockets: {e}"))?;
    }
    info!(
        sockets = inventory.len(),
        "sockets sent; the new instance syncs"
    );
    match step(conn.recv()).await {
        Ok(Msg::Taken) => {}
        Ok(Msg::Abort { reason }) => return Err(format!("the new instance gave up: {reason}")),
        Ok(other) => return Err(format!("protocol error: {other:?} instead of taken")),
        Err(e) => {
            return Err(format!(
                "waiting for the new instance to take the sockets: {e}"
            ));
        }
    }
    match tokio::time::timeout(wait + 2 * STEP, conn.recv()).await {
        Ok(Ok(Msg::Stop)) => Ok(conn),
        Ok(Ok(Msg::Abort { reason })) => Err(format!("the new instance gave up: {reason}")),
        Ok(Ok(other)) => Err(format!("protocol error: {other:?} instead of stop")),
        Ok(Err(e)) => Err(format!("the new instance went away before it synced: {e}")),
        Err(_) => Err(format!(
            "the new instance did not sync within {:?}",
            wait + 2 * STEP
        )),
    }
}

/// Reads the new instance's hello: how long it may take to sync, and the
/// newest protocol version it speaks (one both speak; else refused).
async fn hello(conn: &mut Conn) -> Result<(Duration, u32), String> {
    let msg = step(conn.recv())
        .await
        .map_err(|e| format!("waiting for the hello: {e}"))?;
    let Msg::Hello {
        min,
        max,
        version,
        pid,
        wait_ms,
    } = msg
    else {
        return Err(format!("protocol error: {msg:?} instead of a hello"));
    };
    info!(pid, version = %version, "a new instance asks for the listening sockets");
    let Some(v) = common_version(PROTOCOL, min, max) else {
        let reason = format!(
            "no common protocol version: it speaks {min}..={max}, this release {}..={} ({VERSION})",
            PROTOCOL.0, PROTOCOL.1
        );
        let _ = step(conn.send(
            &Msg::Refused {
                reason: reason.clone(),
            },
            &[],
        ))
        .await;
        return Err(reason);
    };
    Ok((Duration::from_millis(wait_ms).min(MAX_WAIT), v))
}
