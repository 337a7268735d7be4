//! The composition root: wires one configuration's source, index, DNS
//! listeners and admin side door, and runs them until shutdown.
//!
//! [`run`] takes already-bound [`Listeners`] and a shutdown future, so tests
//! bind `127.0.0.1:0` and run the real server in-process. An `Engine` is one
//! such run as a task, plus what the reload supervisor ([`crate::reload`])
//! needs to start a successor beside it on the same sockets: a go-live gate,
//! a first-sync signal, and the simulated cluster to carry over.

mod listeners;

use std::future::Future;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use listeners::{Adopted, Listeners, SocketKind};

use crate::config::{Config, SourceKind};
use crate::error::{Error, Result};
use crate::fault::Fault;
use crate::index::{Index, IndexWriter, Kind, SourceEvent, ZoneSettings};
use crate::sources::file::{ManifestReader, Manifests};
use crate::sources::sim::{SharedSim, Sim, SimHandle};
use crate::telemetry::ReloadStats;
use crate::{admin, dns, history, sources, telemetry, transfer};

/// Runs the server on `listeners` until `shutdown` completes.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let sim = simulated(&config).then(|| new_shared_sim(&config));
    run_engine(config, listeners, shutdown, Handover::default(), sim).await
}

/// The zone the file source (and simulator, run to completion) would serve.
pub fn export_manifests(config: &Config) -> Result<String> {
    let index = index_manifests(config)?;
    Ok(dns::zonefile::export(&index, &config.dns_settings()))
}

/// The index the file source (and simulator, run to completion) would serve.
pub fn index_manifests(config: &Config) -> Result<crate::index::Index> {
    config.validate()?;
    let mut writer = new_index_writer(config, &[]);
    let reader = ManifestReader::new(Manifests::of(&config.source));
    let mut objects = reader.merged();
    if config.sim.enabled {
        objects = new_sim(config).run_to_completion(objects);
    }
    writer.apply_all(sources::Differ::default().diff(objects));
    Ok(writer.index())
}

/// One running configuration: the task running it and what a reload needs
/// to hand its sockets over to a successor.
pub(crate) struct Engine {
    /// The simulated cluster, handed on to the next engine on a reload.
    sim: Option<SharedSim>,
    /// Cancelled when the engine may serve the listeners.
    go_live: CancellationToken,
    /// Cleared when a reload replaces the engine: its successor is already
    /// serving, so it skips the lameduck delay (and its 503s).
    lameduck: Arc<AtomicBool>,
    /// Cleared by [`Engine::retire`] when the successor shares the UDP sockets.
    drain_udp: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
    synced: oneshot::Receiver<()>,
    /// The API permissions its Kubernetes source is refused.
    access: sources::access::Access,
    /// Its index, once built: what a reload that timed out reports.
    index: Arc<OnceLock<Index>>,
    /// The followers its zone transfers NOTIFY unlisted, handed on to the
    /// next engine on a reload (they would otherwise wait for their refresh).
    followers: Arc<transfer::Followers>,
    /// Its zone transfers, once started (see [`Engine::notify_again`]).
    transfers: Arc<OnceLock<Arc<transfer::Transfers>>>,
}

/// How a new engine's wait for its first sync ended.
pub(crate) enum FirstSync {
    /// It synced.
    Synced,
    /// It stopped before syncing (say, its forwarder could not be built).
    Stopped,
    /// It is still syncing after the limit.
    TimedOut,
}

impl Engine {
    /// Starts `config` on `listeners`. With `previous` (the running engine and
    /// its configuration) the simulated cluster carries over when the
    /// simulator's own settings did not change, so a reload keeps every
    /// simulated pod's name, IP and readiness. Its metrics page shows
    /// `reloads`, the process's.
    pub(crate) fn start(
        config: Config,
        listeners: Listeners,
        previous: Option<(&Engine, &Config)>,
        reloads: Arc<ReloadStats>,
    ) -> Self {
        let gated = previous.is_some();
        Self::launch(config, listeners, previous, reloads, gated)
    }

    /// Starts `config` on sockets another process still reads (a hand-over,
    /// [`crate::handover`]): it syncs, and serves only once told
    /// [`Engine::go_live`].
    pub(crate) fn start_beside(
        config: Config,
        listeners: Listeners,
        reloads: Arc<ReloadStats>,
    ) -> Self {
        Self::launch(config, listeners, None, reloads, true)
    }

    /// [`Engine::start`]; `gated`: serve only once told [`Engine::go_live`].
    fn launch(
        config: Config,
        listeners: Listeners,
        previous: Option<(&Engine, &Config)>,
        reloads: Arc<ReloadStats>,
        gated: bool,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (synced_tx, synced) = oneshot::channel();
        let sim = simulated(&config).then(|| {
            previous
                .filter(|(_, old)| simulated(old) && old.sim == config.sim)
                .and_then(|(engine, _)| engine.sim.clone())
                .unwrap_or_else(|| new_shared_sim(&config))
        });
        // The first engine serves at once (SERVFAIL until synced); a
        // reloaded one only once the supervisor has seen it sync, so clients
        // never meet a half-loaded engine on the shared sockets.
        let go_live = CancellationToken::new();
        if !gated {
            go_live.cancel();
        }
        let lameduck = Arc::new(AtomicBool::new(true));
        let drain_udp = Arc::new(AtomicBool::new(true));
        let access = sources::access::Access::default();
        let index = Arc::new(OnceLock::new());
        let transfers = Arc::new(OnceLock::new());
        let followers = previous.map_or_else(Arc::default, |(e, _)| Arc::clone(&e.followers));
        let handover = Handover {
            synced: Some(synced_tx),
            go_live: go_live.clone(),
            lameduck: Arc::clone(&lameduck),
            drain_udp: Arc::clone(&drain_udp),
            access: access.clone(),
            index: Arc::clone(&index),
            transfers: Arc::clone(&transfers),
            reloads,
            followers: Arc::clone(&followers),
        };
        let shutdown = async {
            let _ = stopped.await;
        };
        // Boxed here, not in the task's cell: the ~7 kB future is then
        // copied once on this stack instead of three times (the deepest
        // point of the main thread's stack at start, which stays resident).
        let task = tokio::spawn(Box::pin(run_engine(
            config,
            listeners,
            shutdown,
            handover,
            sim.clone(),
        )));
        Engine {
            sim,
            go_live,
            lameduck,
            drain_udp,
            stop: Some(stop),
            task,
            synced,
            access,
            index,
            followers,
            transfers,
        }
    }

    /// Waits up to `limit` for the first sync.
    pub(crate) async fn wait_synced(&mut self, limit: Duration) -> FirstSync {
        match tokio::time::timeout(limit, &mut self.synced).await {
            Ok(Ok(())) => FirstSync::Synced,
            Ok(Err(_)) => FirstSync::Stopped,
            Err(_) => FirstSync::TimedOut,
        }
    }

    /// The error that stopped an engine before its first sync.
    pub(crate) async fn failure(self) -> String {
        match self.task.await {
            Ok(Err(e)) => e.to_string(),
            _ => "the new engine stopped".into(),
        }
    }

    /// Why the engine has not synced yet, as well as it can tell: the API
    /// permissions refused, else failed requests to the API server.
    pub(crate) fn unsynced_reason(&self) -> String {
        if let Some(refused) = self.access.problem() {
            return refused;
        }
        let failed: u64 = self.index.get().map_or(0, |i| {
            let errors = &i.stats().source_errors;
            errors.iter().map(|e| e.load(Ordering::Relaxed)).sum()
        });
        if failed > 0 {
            format!("{failed} requests to the API server failed (unreachable or failing)")
        } else {
            "its sources have not completed their first list".into()
        }
    }

    /// Stops an engine that never went live (a reload that failed or was
    /// overtaken by a shutdown): no lameduck delay, and an error of its
    /// own is only logged, as it served nobody.
    pub(crate) async fn discard(self) {
        if let Err(e) = self.retire(true).await {
            warn!(error = %e, "the discarded configuration's engine stopped with an error");
        }
    }

    /// Lets the engine serve its listeners.
    pub(crate) fn go_live(&self) {
        self.go_live.cancel();
    }

    /// NOTIFYs every zone's secondaries and remembered followers again. For
    /// when the engine (or process) it replaced has stopped: the NOTIFYs of
    /// this engine's first sync went out while that one still read the
    /// shared sockets, so a secondary's check could have reached it and
    /// found its older serial current; it would then wait for its refresh.
    pub(crate) fn notify_again(&self) {
        if let Some(t) = self.transfers.get() {
            t.notify_all();
        }
    }

    /// Completes when the engine's task ends by itself (a startup error).
    pub(crate) async fn exited(&mut self) -> Result<()> {
        (&mut self.task).await.unwrap_or_else(engine_panicked)
    }

    /// Stops an engine whose successor already serves: no lameduck delay.
    /// When the successor reads the same UDP sockets (`shares_udp`), the
    /// stopping threads leave the queued queries to it; otherwise (new
    /// sockets after a change of `threads`) they answer them first, since
    /// the sockets close next and their queues would be lost.
    pub(crate) async fn retire(self, shares_udp: bool) -> Result<()> {
        self.lameduck.store(false, Ordering::Relaxed);
        self.drain_udp.store(!shares_udp, Ordering::Relaxed);
        self.stop().await
    }

    /// Stops the engine and waits for it.
    pub(crate) async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap_or_else(engine_panicked)
    }
}

/// The engine task itself panicked (or was cancelled): an error, logged.
fn engine_panicked(e: tokio::task::JoinError) -> Result<()> {
    let what = format!("the engine task ({e})");
    tracing::error!(died = %what, "the engine task died");
    Err(Error::Died(what))
}

/// How an engine starts: alone, or beside a running one during a reload.
struct Handover {
    /// Told when the index has completed its first sync.
    synced: Option<oneshot::Sender<()>>,
    /// The DNS and admin listeners are served only once this is cancelled.
    go_live: CancellationToken,
    /// Whether shutting down waits `lameduck_ms` with readiness at 503.
    lameduck: Arc<AtomicBool>,
    /// Whether stopping UDP threads answer what their sockets hold queued
    /// (see [`Engine::retire`]).
    drain_udp: Arc<AtomicBool>,
    /// Where the Kubernetes source records refused permissions.
    access: sources::access::Access,
    /// Set to the engine's index once it is built.
    index: Arc<OnceLock<Index>>,
    /// Set to the engine's zone transfers once they are started.
    transfers: Arc<OnceLock<Arc<transfer::Transfers>>>,
    /// The process's reload counters, for the metrics page.
    reloads: Arc<ReloadStats>,
    /// The followers zone transfers NOTIFY unlisted (the previous engine's).
    followers: Arc<transfer::Followers>,
}

impl Default for Handover {
    /// Alone: live at once, nobody waiting for the sync, lameduck on.
    fn default() -> Self {
        let go_live = CancellationToken::new();
        go_live.cancel();
        Handover {
            synced: None,
            go_live,
            lameduck: Arc::new(AtomicBool::new(true)),
            drain_udp: Arc::new(AtomicBool::new(true)),
            access: sources::access::Access::default(),
            index: Arc::default(),
            transfers: Arc::default(),
            reloads: Arc::default(),
            followers: Arc::default(),
        }
    }
}

/// The engine's background tasks, the token that stops them, and where
/// one that dies reports it.
#[derive(Default)]
struct Tasks {
    stop: CancellationToken,
    tracker: TaskTracker,
    fault: Fault,
}

impl Tasks {
    /// Spawns a serving task on the tracker; a panic in it is reported as
    /// `what` died.
    fn spawn_watched(&self, what: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let fault = self.fault.clone();
        // Boxed for the stack, as `run_engine` in `Engine::launch`.
        self.tracker.spawn(Box::pin(async move {
            if std::panic::AssertUnwindSafe(task)
                .catch_unwind()
                .await
                .is_err()
            {
                fault.report(format!("{what} (panicked)"));
            }
        }));
    }

    /// Stops every task and waits up to 5 s; false if some did not finish.
    async fn finish(&self) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
            .await
            .is_ok()
    }
}

/// [`run`], with the [`Handover`] of a reload.
async fn run_engine(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    handover: Handover,
    sim: Option<SharedSim>,
) -> Result<()> {
    let Handover {
        synced,
        go_live,
        lameduck,
        drain_udp,
        access,
        index: built,
        transfers,
        reloads,
        followers,
    } = handover;
    let tasks = Tasks::default();
    let mut shutdown = std::pin::pin!(shutdown);
    // A shutdown while the source starts (a reload given up) stops at once.
    let prepared = tokio::select! {
        r = prepare(config, sim, access, &built, followers, synced, &tasks) => r?,
        _ = &mut shutdown => {
            tasks.finish().await;
            return Ok(());
        }
    };
    if let Some(t) = &prepared.transfers {
        let _ = transfers.set(Arc::clone(t));
    }
    tokio::select! {
        _ = go_live.cancelled() => {}
        _ = &mut shutdown => {
            tasks.finish().await;
            return Ok(());
        }
    }
    let config = prepared.config.clone();
    let forwarder = prepared.forwarder.clone();
    let draining = Arc::new(AtomicBool::new(false));
    let udp_threads = serve_listeners(prepared, listeners, &tasks, drain_udp, reloads, &draining)?;

    // Something that died stops the engine as a shutdown does (lameduck
    // included, /health already 503), then with an error: exit non-zero.
    let died = tokio::select! {
        _ = shutdown => None,
        what = tasks.fault.died() => Some(what),
    };
    enter_lameduck(&config, &lameduck, &draining).await;
    // UDP queries handed to the forwarder are answered by its own tasks:
    // waited for beside the engine's (a stop takes the longer of the two
    // bounds, not their sum).
    let settled = async {
        if let Some(f) = forwarder {
            f.settle(Duration::from_millis(config.forward.timeout_ms))
                .await;
        }
    };
    tokio::join!(wind_down(&tasks, udp_threads), settled);
    died.map_or(Ok(()), |what| Err(Error::Died(what)))
}

/// An engine built and syncing, not yet serving its listeners.
struct Prepared {
    config: Config,
    index: Index,
    history: Arc<history::History>,
    sim_handle: Option<SimHandle>,
    access: sources::access::Access,
    answerer: Arc<dns::Answerer>,
    forwarder: Option<Arc<dns::forward::Forwarder>>,
    /// Its zone transfers, when `[transfer]` allows any.
    transfers: Option<Arc<transfer::Transfers>>,
}

/// Checks `config`, builds the forwarder and the index, and starts the
/// source feeding it (the first sync announced on `synced`); its zone
/// transfers NOTIFY `followers` (the previous engine's, on a reload).
async fn prepare(
    config: Config,
    sim: Option<SharedSim>,
    access: sources::access::Access,
    built: &OnceLock<Index>,
    followers: Arc<transfer::Followers>,
    synced: Option<oneshot::Sender<()>>,
    tasks: &Tasks,
) -> Result<Prepared> {
    let mut config = config;
    if config.key_files_unread() {
        // Not read by `cli::load` (a configuration built in code).
        config.read_key_files()?;
    }
    config.validate()?;
    if config.admin.token.is_none() {
        // Not loaded by `cli::load` (a configuration built in code).
        config.read_admin_token()?;
    }
    // Built first (it reads a resolv.conf named in the config): an engine
    // that cannot forward fails before it syncs, so a reload keeps the old one.
    let forwarder = forwarder(&config)?;
    let (index, events, transfers, history) = start_index(&config, tasks, followers)?;
    let _ = built.set(index.clone());
    let (sim_handle, inbox) =
        start_source(&config, sim, &index, events, access.clone(), tasks).await?;
    announce_first_sync(index.clone(), synced, tasks);
    let mut answerer = dns::Answerer::new(index.clone(), config.dns_settings());
    if let Some(i) = &inbox {
        answerer = answerer.with_expiry(i.expired());
    }
    let serving = transfers.clone();
    if let Some(h) = transfer::Handoff::new(transfers, inbox) {
        let (serves, follows) = (h.serves(), h.follows());
        answerer = answerer.with_handoff(Arc::new(h), serves, follows);
    }
    if let Some(f) = &forwarder {
        let runtime = tokio::runtime::Handle::current();
        let inflight = config.forward.max_inflight;
        answerer = answerer.with_autopath_upstream(Arc::clone(f), runtime, inflight);
    }
    Ok(Prepared {
        config,
        index,
        history,
        sim_handle,
        access,
        answerer: Arc::new(answerer),
        forwarder,
        transfers: serving,
    })
}

/// Serves DNS and the admin side door on `listeners`; returns the UDP
/// threads, to join at shutdown.
fn serve_listeners(
    p: Prepared,
    listeners: Listeners,
    tasks: &Tasks,
    drain_udp: Arc<AtomicBool>,
    reloads: Arc<ReloadStats>,
    draining: &Arc<AtomicBool>,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    for s in &listeners.udp {
        info!(addr = %s.local_addr()?, "dns listening (udp)");
    }
    let udp_threads = serve_dns(
        &p.config,
        &p.answerer,
        listeners.udp,
        listeners.tcp,
        p.forwarder.as_ref(),
        tasks,
        drain_udp,
    )?;
    if let Some(l) = listeners.admin {
        let state = admin::AdminState {
            index: p.index,
            history: p.history,
            sim: p.sim_handle,
            dns: Arc::clone(&p.answerer),
            metrics: Arc::new(telemetry::Metrics::new(reloads)),
            forward: p.forwarder.as_ref().map(|f| f.stats()),
            draining: Arc::clone(draining),
            fault: tasks.fault.clone(),
            access: p.access,
            gate: Arc::new(admin::Gate::new(&p.config.admin)),
        };
        serve_admin(l, state, tasks)?;
    }
    Ok(udp_threads)
}

/// Stops the engine's tasks (up to 5 s) and joins its UDP threads.
async fn wind_down(tasks: &Tasks, udp_threads: Vec<std::thread::JoinHandle<()>>) {
    info!("shutting down");
    if !tasks.finish().await {
        warn!("tasks did not finish within 5 s; exiting anyway");
    }
    let _ = tokio::task::spawn_blocking(move || {
        for t in udp_threads {
            let _ = t.join();
        }
    })
    .await;
}

/// Whether `config` runs the StatefulSet simulator.
fn simulated(config: &Config) -> bool {
    config.sim.enabled && config.source.kind == SourceKind::File
}

/// A fresh simulator with `config`'s `[sim]` settings.
fn new_sim(config: &Config) -> Sim {
    Sim::new(
        Duration::from_millis(config.sim.ready_delay_ms),
        &config.sim.pod_cidr,
    )
}

/// [`new_sim`], shared so that a reload can hand it to the next engine.
fn new_shared_sim(config: &Config) -> SharedSim {
    Arc::new(std::sync::Mutex::new(new_sim(config)))
}

/// An empty index for `config`'s zone, ready once every kind in `expected`
/// has synced.
fn new_index_writer(config: &Config, expected: &[Kind]) -> IndexWriter {
    let settings = config.dns_settings();
    let zone = ZoneSettings {
        zone: settings.dns.zone,
        ttl: settings.dns.ttl,
        endpoint_pod_names: config.dns.endpoint_pod_names,
    };
    IndexWriter::new(zone, expected)
}

/// The index for `config`'s source, with its writer task running: returns
/// the read side, the queue the source feeds, the zone transfer service
/// when `[transfer]` allows any (its journal's recorder rides on the writer),
/// and the record browser's history (its recorder rides there too, when
/// there is an admin listener to show it).
fn start_index(
    config: &Config,
    tasks: &Tasks,
    followers: Arc<transfer::Followers>,
) -> Result<StartedIndex> {
    let kinds: Vec<Kind> = match config.source.kind {
        SourceKind::File | SourceKind::Transfer => Kind::ALL.to_vec(),
        SourceKind::Kubernetes => sources::k8s::kinds(config),
    };
    let mut writer = new_index_writer(config, &kinds);
    if config.source.kind == SourceKind::Kubernetes {
        // Namespaced watches sync per namespace (empty: cluster-wide).
        writer.expect_namespaces(&sources::k8s::namespaces(config));
    }
    let settings = config.dns_settings();
    let transfers = transfer::start_with(
        config,
        &settings,
        &mut writer,
        followers,
        (&tasks.stop, &tasks.tracker),
    )?;
    let index = writer.index();
    let history = history::History::new(history::Limits {
        addresses: config.admin.history_addresses,
        names: config.admin.history_names,
        changes: config.admin.history_changes,
    });
    // Only the admin side reads the history: without it, none is kept.
    if config.admin.listen.is_some() {
        let recorder = history::recorder::Recorder::new(Arc::clone(&history), index.clone());
        writer.observe(Box::new(recorder));
    }
    let (tx, rx) = mpsc::channel(sources::QUEUE);
    tasks.spawn_watched("the index writer", sources::run_writer(writer, rx));
    Ok((index, tx, transfers, history))
}

/// What [`start_index`] returns.
type StartedIndex = (
    Index,
    mpsc::Sender<SourceEvent>,
    Option<Arc<transfer::Transfers>>,
    Arc<history::History>,
);

/// Starts `config`'s source feeding `events`; returns the simulator's
/// command handle when the simulator runs, and the NOTIFY inbox when the
/// source follows a primary.
async fn start_source(
    config: &Config,
    sim: Option<SharedSim>,
    index: &Index,
    events: mpsc::Sender<SourceEvent>,
    access: sources::access::Access,
    tasks: &Tasks,
) -> Result<(Option<SimHandle>, Option<Arc<transfer::follow::Inbox>>)> {
    match config.source.kind {
        SourceKind::File => {
            let manifests = Manifests::of(&config.source);
            let (handle, sim) = match sim {
                Some(sim) => {
                    let (handle, commands) = SimHandle::channel();
                    (Some(handle), Some((sim, commands)))
                }
                None => (None, None),
            };
            info!(source = "file", manifests = ?manifests, simulator = sim.is_some(), "starting source");
            tasks.spawn_watched(
                "the file source",
                sources::file::run(
                    ManifestReader::new(manifests).counting(index.clone()),
                    Duration::from_millis(config.source.poll_interval_ms),
                    sim,
                    events,
                    tasks.stop.clone(),
                ),
            );
            Ok((handle, None))
        }
        SourceKind::Kubernetes => {
            let health = sources::api_health::ApiHealth::new();
            let client = sources::k8s::client(config, &health).await?;
            info!(source = "kubernetes", "starting source");
            tasks.spawn_watched(
                "the kubernetes source",
                sources::k8s::run(
                    client,
                    health,
                    config.clone(),
                    index.clone(),
                    events,
                    access,
                    tasks.stop.clone(),
                ),
            );
            Ok((None, None))
        }
        SourceKind::Transfer => {
            let inbox =
                transfer::follow::start(config, events, tasks.stop.clone(), &tasks.tracker).await?;
            Ok((None, Some(inbox)))
        }
    }
}

/// Once the index has completed its first sync: tells `synced` (a reload
/// waiting to switch over) and logs it.
fn announce_first_sync(index: Index, synced: Option<oneshot::Sender<()>>, tasks: &Tasks) {
    tasks.tracker.spawn(async move {
        index.wait_synced().await;
        if let Some(tx) = synced {
            let _ = tx.send(());
        }
        let s = index.stats();
        info!(
            services = s.services.load(Ordering::Relaxed),
            endpoints = s.endpoints.load(Ordering::Relaxed),
            "index synced; answering"
        );
    });
}

/// The forwarder for names outside our zones, if `[forward]` names upstreams.
fn forwarder(config: &Config) -> Result<Option<Arc<dns::forward::Forwarder>>> {
    if config.forward.upstreams.is_empty() {
        return Ok(None);
    }
    let ups = dns::forward::upstreams(&config.forward.upstreams)?;
    info!(upstreams = ?ups, "forwarding names outside our zones");
    Ok(Some(Arc::new(
        dns::forward::Forwarder::new(
            &ups,
            Duration::from_millis(config.forward.timeout_ms),
            config.forward.cache_size,
            config.forward.max_inflight,
            config.dns.max_udp_payload,
        )?
        .with_stale(
            Duration::from_secs(config.forward.stale_max_s),
            config.forward.stale_ttl_s,
        ),
    )))
}

/// Serves DNS: a thread per UDP socket (with the forwarder's task and
/// response-rate limiting when configured) and a task per TCP listener.
/// Returns the UDP threads, to join at shutdown.
fn serve_dns(
    config: &Config,
    answerer: &Arc<dns::Answerer>,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    forwarder: Option<&Arc<dns::forward::Forwarder>>,
    tasks: &Tasks,
    drain_udp: Arc<AtomicBool>,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let udp_forward = forwarder.map(|f| {
        let (tx, rx) = mpsc::channel(config.forward.max_inflight);
        tasks.spawn_watched("the forwarder", Arc::clone(f).serve_udp(rx));
        tx
    });
    let rrl = dns::rrl::Rrl::new(config.dns.rrl_responses_per_second, config.dns.rrl_slip);
    if rrl.is_some() {
        info!(
            responses_per_second = config.dns.rrl_responses_per_second,
            slip = config.dns.rrl_slip,
            "udp response-rate limiting on"
        );
    }
    let udp_threads = dns::server::spawn_udp(
        answerer,
        udp,
        udp_forward,
        rrl.map(Arc::new),
        &tasks.stop,
        &tasks.fault,
        drain_udp,
    )?;
    let limits = dns::server::TcpLimits {
        max_connections: config.dns.tcp_max_connections,
        idle_timeout: config.tcp_idle_timeout(),
    };
    for l in tcp {
        info!(addr = %l.local_addr()?, "dns listening (tcp)");
        let task = dns::server::serve_tcp(
            Arc::clone(answerer),
            l,
            limits,
            forwarder.cloned(),
            tasks.stop.clone(),
            tasks.tracker.clone(),
        );
        let fault = tasks.fault.clone();
        tasks.spawn_watched("a tcp listener", async move {
            if let Err(e) = task.await {
                fault.report(format!("the tcp listener ({e})"));
            }
        });
    }
    Ok(udp_threads)
}

/// Serves the admin side door on `listener` until the engine stops, with
/// the sampler of the record browser's queries/s beside it.
fn serve_admin(listener: TcpListener, state: admin::AdminState, tasks: &Tasks) -> Result<()> {
    let dns_stats = Arc::clone(&state.dns);
    let total = move || dns_stats.stats().totals().requests.iter().flatten().sum();
    let sampler = history::rates::run(Arc::clone(&state.history), total, tasks.stop.clone());
    tasks.tracker.spawn(sampler);
    let addr = listener.local_addr()?;
    info!(%addr, "admin listening (http)");
    state.gate.announce(addr);
    let app = admin::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let stop = tasks.stop.clone();
    tasks.spawn_watched("the admin listener", async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = serve.await {
            warn!(error = %e, "admin listener stopped");
        }
    });
    Ok(())
}

/// Readiness goes 503 first, so load balancers stop sending; then, after
/// the lameduck delay, the engine stops accepting and finishes what is in
/// flight. Skipped when a successor already serves (`lameduck` cleared).
async fn enter_lameduck(config: &Config, lameduck: &AtomicBool, draining: &AtomicBool) {
    if !lameduck.load(Ordering::Relaxed) {
        return;
    }
    draining.store(true, Ordering::Relaxed);
    if config.admin.lameduck_ms > 0 {
        info!(
            lameduck_ms = config.admin.lameduck_ms,
            "draining: /ready answers 503"
        );
        tokio::time::sleep(Duration::from_millis(config.admin.lameduck_ms)).await;
    }
}
