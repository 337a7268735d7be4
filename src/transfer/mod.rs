//! Zone transfers to secondaries: AXFR and IXFR (RFC 5936, RFC 1995) of the
//! cluster zone, the reverse zones and each namespace's transfer zone
//! `<ns>.svc.<zone>` (for tenant sidecars; keys may be confined to
//! namespaces), NOTIFY (RFC 1996) to the listed secondaries and to the
//! followers that checked a serial, TSIG (RFC 8945) and an access list.
//!
//! Layout:
//! - `zones`: which zones, and each zone's records (from `dns::zonefile`,
//!   the same records `export-zone` prints) as wire bytes;
//! - `recorder` + `journal`: on the index writer's side, each publication's
//!   removed and added records go into a bounded journal for IXFR;
//! - `serve`: the [`TransferService`] the listeners hand requests to: access
//!   list, signatures, AXFR from a consistent snapshot of the views, IXFR
//!   from the journal (the whole zone when the serial is unknown);
//! - `message`: packing records into (signed) messages; `tsig`: keys and
//!   signatures; `notify`: telling secondaries about changes;
//! - `follow`: the other side, a source following a primary (AXFR, IXFR,
//!   NOTIFY received), and [`Handoff`], which sends the listeners' NOTIFYs
//!   to it and transfer requests to the serving side.
//!
//! Nothing here runs on the query path: AXFR/IXFR and signed requests reach
//! it through `Outcome::Transfer`, and the journal is fed when the writer
//! publishes.

pub mod follow;
mod journal;
mod message;
mod notify;
mod notify_sockets;
mod recorder;
mod serve;
mod tsig;
mod zones;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Cidr, Config};
use crate::dns::DnsSettings;
use crate::dns::handoff::{REFUSAL_REASONS, TRANSFER_KINDS, TransferService, TransferTotals};
use crate::error::Result;
use crate::index::{Index, IndexWriter};
use journal::Journal;
pub(crate) use notify::Followers;
use zones::{ZoneId, Zones};

/// Unix time in seconds (TSIG times).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counters behind [`TransferTotals`].
#[derive(Debug, Default)]
struct Stats {
    served: [AtomicU64; TRANSFER_KINDS.len()],
    refused: [AtomicU64; REFUSAL_REASONS.len()],
    notify: [AtomicU64; 3],
    /// Bytes of the answers the transfer service sent (what a follower
    /// costs the primary's network).
    bytes: AtomicU64,
}

/// What the serving side, the recorder and the NOTIFY task share.
struct Shared {
    index: Index,
    settings: Arc<DnsSettings>,
    zones: Arc<Zones>,
    /// A std `Mutex`: the writer holds it to append one change, a transfer
    /// to copy one difference out; never across an `.await`.
    journal: Mutex<Journal>,
    /// Odd while the writer publishes: an AXFR snapshot of the views is
    /// taken between two equal even values (a sequence lock).
    publishing: AtomicU64,
    notify: notify::Queue,
    /// Followers that checked a zone by UDP IXFR: NOTIFYed too. Shared with
    /// the next engine on a reload.
    followers: Arc<notify::Followers>,
    keys: tsig::Keys,
    allow: Vec<Cidr>,
    require_tsig: bool,
    /// One permit per transfer being sent.
    slots: Arc<Semaphore>,
    stats: Stats,
}

impl Shared {
    /// The serial `zone` is at now: the index's for a fixed zone, the last
    /// change inside the namespace for a namespace's zone.
    fn serial_of(&self, zone: &ZoneId) -> u32 {
        match zone {
            ZoneId::Fixed(_) => self.index.serial(),
            ZoneId::Namespace(ns) => self
                .journal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .namespace_serial(ns),
        }
    }
}

/// The zone transfer service of one engine (see the module docs).
pub struct Transfers {
    shared: Arc<Shared>,
}

impl Transfers {
    /// Marks every zone for a NOTIFY to its secondaries and remembered
    /// followers, as if each had changed (see `Engine::notify_again`).
    pub(crate) fn notify_all(&self) {
        let s = &self.shared;
        s.notify.mark(
            &vec![true; s.zones.len()],
            &std::collections::BTreeSet::new(),
            true,
        );
    }
}

/// Sets up zone transfers when `[transfer] allow` lists any network: installs
/// the journal's recorder on `writer`, starts the NOTIFY task on `tracker`
/// (when `notify` lists secondaries or `notify_followers_max` is above 0:
/// then it must run inside a Tokio runtime), and returns the service to hand
/// to the answerer.
pub fn start(
    config: &Config,
    settings: &DnsSettings,
    writer: &mut IndexWriter,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Option<Arc<Transfers>>> {
    start_with(config, settings, writer, Arc::default(), (stop, tracker))
}

/// [`start`], NOTIFYing also the `followers` remembered so far (a previous
/// engine's).
pub(crate) fn start_with(
    config: &Config,
    settings: &DnsSettings,
    writer: &mut IndexWriter,
    followers: Arc<Followers>,
    (stop, tracker): (&CancellationToken, &TaskTracker),
) -> Result<Option<Arc<Transfers>>> {
    let t = &config.transfer;
    if t.allow.is_empty() {
        if !t.notify.is_empty() {
            warn!("transfer.notify is set but transfer.allow is empty: transfers are off");
        }
        return Ok(None);
    }
    let keys = tsig::Keys::new(&t.tsig)?;
    let zones = Arc::new(Zones::new(settings));
    let shared = Arc::new(Shared {
        index: writer.index(),
        settings: Arc::new(settings.clone()),
        zones,
        journal: Mutex::new(Journal::new(
            t.journal_max_changes,
            t.journal_max_kb.saturating_mul(1024),
        )),
        publishing: AtomicU64::new(0),
        notify: notify::Queue::default(),
        followers: {
            followers.set_max(t.notify_followers_max);
            followers
        },
        keys: keys.clone(),
        allow: t.allow.clone(),
        require_tsig: t.require_tsig,
        slots: Arc::new(Semaphore::new(t.max_concurrent)),
        stats: Stats::default(),
    });
    writer.observe(Box::new(recorder::Recorder::new(
        Arc::clone(&shared),
        t.serial_file.clone(),
    )));
    if !t.notify.is_empty() || t.notify_followers_max > 0 {
        let targets = notify::Targets {
            addrs: t.notify.clone(),
            key: t.notify_key.as_deref().and_then(|k| keys.named(k).cloned()),
            source: config
                .dns
                .listen
                .iter()
                .map(SocketAddr::ip)
                .filter(|ip| !ip.is_unspecified())
                .collect(),
        };
        tracker.spawn(notify::run(Arc::clone(&shared), targets, stop.clone()));
    }
    info!(
        allow = ?t.allow.iter().map(|c| c.0).collect::<Vec<_>>(),
        notify = ?t.notify,
        notify_followers_max = t.notify_followers_max,
        keys = t.tsig.len(),
        require_tsig = t.require_tsig,
        "zone transfers on"
    );
    Ok(Some(Arc::new(Transfers { shared })))
}

impl Transfers {
    fn totals(&self) -> TransferTotals {
        let s = &self.shared.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let journal = self
            .shared
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        TransferTotals {
            served: s.served.each_ref().map(load),
            refused: s.refused.each_ref().map(load),
            notify: s.notify.each_ref().map(load),
            bytes: load(&s.bytes),
            journal_changes: journal.len() as u64,
            journal_bytes: journal.bytes() as u64,
            follow: None,
        }
    }
}

impl TransferService for Transfers {
    fn respond(
        &self,
        answerer: &crate::dns::Answerer,
        packet: &[u8],
        peer: SocketAddr,
        tcp: bool,
    ) -> crate::dns::handoff::Messages {
        let shared = Arc::clone(&self.shared);
        let messages = serve::respond(&self.shared, answerer, packet, peer, tcp);
        Box::new(messages.inspect(move |m| {
            let sent = m.len() as u64;
            shared.stats.bytes.fetch_add(sent, Ordering::Relaxed);
        }))
    }

    fn totals(&self) -> TransferTotals {
        Transfers::totals(self)
    }
}

/// What the listeners hand over, split: NOTIFYs to the follower (the
/// transfer source), transfer requests and signed queries to [`Transfers`].
/// Either may be absent; the answerer sends each kind only where it is set.
pub struct Handoff {
    serving: Option<Arc<Transfers>>,
    following: Option<Arc<follow::Inbox>>,
}

impl Handoff {
    /// The handoff for what runs, if anything does.
    pub fn new(
        serving: Option<Arc<Transfers>>,
        following: Option<Arc<follow::Inbox>>,
    ) -> Option<Self> {
        (serving.is_some() || following.is_some()).then_some(Self { serving, following })
    }

    /// Whether transfer requests and signed queries come here.
    pub fn serves(&self) -> bool {
        self.serving.is_some()
    }

    /// Whether NOTIFYs come here.
    pub fn follows(&self) -> bool {
        self.following.is_some()
    }
}

impl TransferService for Handoff {
    fn respond(
        &self,
        answerer: &crate::dns::Answerer,
        packet: &[u8],
        peer: SocketAddr,
        tcp: bool,
    ) -> crate::dns::handoff::Messages {
        match (&self.following, &self.serving) {
            (Some(f), _) if crate::dns::handoff::is_notify(packet) => f.respond(packet, peer),
            (_, Some(s)) => s.respond(answerer, packet, peer, tcp),
            // The answerer hands over only what is set up.
            _ => Box::new(std::iter::empty()),
        }
    }

    fn totals(&self) -> TransferTotals {
        let mut t = self
            .serving
            .as_ref()
            .map(|s| Transfers::totals(s))
            .unwrap_or_default();
        t.follow = self.following.as_ref().map(|f| f.totals());
        t
    }
}
