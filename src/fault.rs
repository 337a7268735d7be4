//! Fatal faults of serving threads and tasks.
//!
//! A UDP thread that panics leaves its `SO_REUSEPORT` share of queries
//! unread, and a task that dies leaves a part of the server silently gone.
//! Whatever dies reports here: the log names it, `/health` turns 503, and the
//! engine shuts down with an error so the process exits non-zero and the
//! kubelet or systemd restarts it.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;
use tracing::error;

/// Shared by an engine's threads and tasks; cheap to clone.
#[derive(Clone, Default)]
pub struct Fault {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// What died first.
    what: OnceLock<String>,
    /// Cancelled once something died.
    token: CancellationToken,
}

impl Fault {
    /// Reports that `what` died (logged at error, the first one kept).
    pub fn report(&self, what: impl Into<String>) {
        let what = what.into();
        error!(died = %what, "a serving thread or task died; the server stops");
        let _ = self.inner.what.set(what);
        self.inner.token.cancel();
    }

    /// What died, if anything has.
    pub fn what(&self) -> Option<&str> {
        self.inner.what.get().map(String::as_str)
    }

    /// Completes once something died, with what.
    pub async fn died(&self) -> String {
        self.inner.token.cancelled().await;
        self.what().unwrap_or("unknown").to_string()
    }

    /// A guard that reports `what` if dropped while its thread panics.
    pub fn watch_thread(&self, what: impl Into<String>) -> ThreadWatch {
        ThreadWatch {
            fault: self.clone(),
            what: what.into(),
        }
    }
}

/// Reports its thread's death by panic when dropped during the unwind.
pub struct ThreadWatch {
    fault: Fault,
    what: String,
}

impl Drop for ThreadWatch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.fault.report(format!("{} (panicked)", self.what));
        }
    }
}
