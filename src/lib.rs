//! headless-dns: authoritative DNS for Kubernetes headless services and StatefulSets.
//!
//! ```text
//! sources::{k8s | file (+ sim)} --SourceEvent--> IndexWriter --publish--> Arc<ServiceView> per service
//!                                   (bounded queue)    (one task)              |  (Index: cheap Clone)
//!                                                                              v
//!        UDP threads / TCP tasks --> dns::Answerer (parse, walk, copy pre-encoded sections)
//!        admin (axum): /health /ready /records /sim/...
//! ```
//!
//! Layout:
//! - [`index`]: the ordinal-name index; the only writer applies source events
//!   and publishes immutable per-service views with pre-encoded answers.
//! - [`dns`]: the query path (`wire`, `cluster`, `reverse`, `records`) and the
//!   listeners (`server`). The only module that knows DNS.
//! - [`sources`]: manifest files, the StatefulSet simulator, the Kubernetes API.
//! - [`transfer`]: zone transfers to secondaries (AXFR, IXFR from a journal the
//!   writer keeps, NOTIFY, TSIG), reached through `dns::handoff`.
//! - [`admin`]: the HTTP side door. [`config`], [`telemetry`], [`error`]: the edges.
//!
//! [`run`] takes already-bound sockets and a shutdown future, so tests bind
//! `127.0.0.1:0` and run the real server in-process.

pub mod admin;
pub mod config;
pub mod dns;
pub mod error;
pub mod index;
pub mod sources;
pub mod telemetry;
pub mod transfer;

use std::future::Future;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;
pub use error::{Error, Result};
use index::{IndexWriter, Kind, ZoneSettings};
use sources::file::{ManifestReader, Manifests};
use sources::sim::{SharedSim, Sim, SimHandle};

/// Sockets the server serves on, bound before [`run`].
pub struct Listeners {
    /// UDP sockets (several may share one address with `SO_REUSEPORT`).
    pub udp: Vec<UdpSocket>,
    /// TCP listeners.
    pub tcp: Vec<TcpListener>,
    /// The admin HTTP listener.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds what `config` asks for: per DNS address `threads` UDP sockets and
    /// one TCP listener on the same port, plus the admin listener.
    pub fn bind(config: &Config) -> Result<Self> {
        Self::bind_parts(config, true, true)
    }

    /// Binds the DNS sockets and/or the admin listener.
    pub fn bind_parts(config: &Config, dns: bool, admin: bool) -> Result<Self> {
        let mut l = Listeners {
            udp: Vec::new(),
            tcp: Vec::new(),
            admin: None,
        };
        for addr in config.dns.listen.iter().filter(|_| dns) {
            // With port 0 TCP takes the port UDP got, so both share one
            // number. That port may already be in use for TCP (say, as the
            // local port of an outgoing connection): then pick another.
            let mut attempts = 0;
            let (udp, tcp) = loop {
                let udp = dns::server::bind_udp(
                    *addr,
                    config.udp_threads(),
                    config.dns.udp_receive_buffer_kb * 1024,
                )?;
                let port = udp[0].local_addr()?.port();
                match dns::server::bind_tcp(SocketAddr::new(addr.ip(), port)) {
                    Ok(tcp) => break (udp, tcp),
                    Err(Error::Bind { source, .. })
                        if addr.port() == 0
                            && source.kind() == std::io::ErrorKind::AddrInUse
                            && attempts < 16 =>
                    {
                        attempts += 1;
                    }
                    Err(e) => return Err(e),
                }
            };
            l.tcp.push(tcp);
            l.udp.extend(udp);
        }
        if let Some(addr) = config.admin.listen.filter(|_| admin) {
            let admin = TcpListener::bind(addr).map_err(|source| Error::Bind {
                proto: "admin",
                addr,
                source,
            })?;
            admin.set_nonblocking(true)?;
            l.admin = Some(admin);
        }
        Ok(l)
    }
}

/// The zone the file source (and simulator, run to completion) would serve.
pub fn export_manifests(config: &Config) -> Result<String> {
    config.validate()?;
    let settings = config.dns_settings();
    let mut writer = IndexWriter::new(
        ZoneSettings {
            zone: settings.zone.clone(),
            ttl: settings.ttl,
            endpoint_pod_names: config.dns.endpoint_pod_names,
        },
        &[],
    );
    let manifests = if config.source.manifests.is_empty() {
        Manifests::Demo
    } else {
        Manifests::Files(config.source.manifests.clone())
    };
    let mut reader = ManifestReader::new(manifests);
    reader.reload(true);
    let mut objects = reader.merged();
    if config.sim.enabled {
        let mut sim = new_sim(config);
        let mut now = tokio::time::Instant::now();
        sim.sync_manifests(&objects, now);
        // Simulated time: step to each deadline until every pod is up (bounded).
        for _ in 0..100_000 {
            sim.reconcile(now);
            match sim.next_deadline() {
                Some(t) => now = t.max(now),
                None => break,
            }
        }
        objects = sim.overlay(objects);
    }
    writer.apply_all(sources::Differ::default().diff(objects));
    Ok(dns::zonefile::export(&writer.index(), &settings))
}

impl Listeners {
    /// Duplicates every socket (the same kernel sockets, new descriptors), so
    /// a new engine can serve them while the old one drains.
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Listeners {
            udp: self
                .udp
                .iter()
                .map(UdpSocket::try_clone)
                .collect::<std::io::Result<_>>()?,
            tcp: self
                .tcp
                .iter()
                .map(TcpListener::try_clone)
                .collect::<std::io::Result<_>>()?,
            admin: self
                .admin
                .as_ref()
                .map(TcpListener::try_clone)
                .transpose()?,
        })
    }
}

/// One running configuration: the task running it and its shutdown trigger.
struct Engine {
    /// The simulated cluster, handed on to the next engine on a reload.
    sim: Option<SharedSim>,
    /// Cancelled when the engine may take over the listeners.
    serve: CancellationToken,
    /// Cleared when a reload replaces the engine: its successor is already
    /// serving, so it skips the lameduck delay (and its 503s).
    lameduck: Arc<std::sync::atomic::AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
    synced: tokio::sync::oneshot::Receiver<()>,
}

impl Engine {
    /// Starts `config` on `listeners`. With `previous` (the running engine and
    /// its configuration) the simulated cluster carries over when the
    /// simulator's own settings did not change, so a reload keeps every
    /// simulated pod's name, IP and readiness.
    fn start(config: Config, listeners: Listeners, previous: Option<(&Engine, &Config)>) -> Self {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let (synced_tx, synced) = tokio::sync::oneshot::channel();
        let sim = simulated(&config).then(|| {
            previous
                .filter(|(_, old)| simulated(old) && old.sim == config.sim)
                .and_then(|(engine, _)| engine.sim.clone())
                .unwrap_or_else(|| Arc::new(std::sync::Mutex::new(new_sim(&config))))
        });
        // The first engine serves at once (SERVFAIL until synced); a
        // reloaded one only once serve() has seen it sync, so clients never
        // meet a half-loaded engine on the shared sockets.
        let serve = CancellationToken::new();
        if previous.is_none() {
            serve.cancel();
        }
        let lameduck = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let task = tokio::spawn(run_engine(
            config,
            listeners,
            async {
                let _ = rx.await;
            },
            Gates {
                synced: Some(synced_tx),
                serve: serve.clone(),
                lameduck: Arc::clone(&lameduck),
            },
            sim.clone(),
        ));
        Engine {
            sim,
            serve,
            lameduck,
            stop: Some(stop),
            task,
            synced,
        }
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap_or(Ok(()))
    }
}

/// A fresh simulator with `config`'s `[sim]` settings.
fn new_sim(config: &Config) -> Sim {
    Sim::new(
        Duration::from_millis(config.sim.ready_delay_ms),
        &config.sim.pod_cidr,
    )
}

/// Whether `config` runs the StatefulSet simulator.
fn simulated(config: &Config) -> bool {
    config.sim.enabled && config.source.kind == config::SourceKind::File
}

fn modified(path: Option<&std::path::Path>) -> Option<std::time::SystemTime> {
    std::fs::metadata(path?).and_then(|m| m.modified()).ok()
}

/// Serves `load()`'s configuration until `shutdown`, reloading it on SIGHUP
/// and when `watch` (the config file) changes. A reload starts a new engine on
/// the same sockets (rebinding only listeners whose addresses changed), waits
/// for its first sync, then stops the old one, so answers never pause; a bad
/// configuration is reported and the running one stays.
pub async fn serve(
    load: impl Fn() -> Result<Config>,
    watch: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut config = load()?;
    let mut listeners = Listeners::bind(&config)?;
    let mut engine = Engine::start(config.clone(), listeners.try_clone()?, None);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut stamp = modified(watch.as_deref());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return engine.stop().await,
            r = &mut engine.task => return r.unwrap_or(Ok(())),
            _ = hangup.recv() => info!("SIGHUP: reloading the configuration"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let now = modified(watch.as_deref());
                if now == stamp {
                    continue;
                }
                info!("configuration file changed: reloading");
            }
        }
        stamp = modified(watch.as_deref());
        let next = match load() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload failed; the running configuration stays");
                continue;
            }
        };
        if next == config {
            info!("configuration unchanged");
            continue;
        }
        // Rebind only what changed: DNS sockets and the admin listener apart.
        let rebind_dns = next.dns.listen != config.dns.listen
            || next.dns.threads != config.dns.threads
            || next.dns.udp_receive_buffer_kb != config.dns.udp_receive_buffer_kb;
        let rebind_admin = next.admin.listen != config.admin.listen;
        let rebind = rebind_dns || rebind_admin;
        let mut next_listeners = listeners.try_clone()?;
        if rebind {
            match Listeners::bind_parts(&next, rebind_dns, rebind_admin) {
                Ok(fresh) => {
                    if rebind_dns {
                        next_listeners.udp = fresh.udp;
                        next_listeners.tcp = fresh.tcp;
                    }
                    if rebind_admin {
                        next_listeners.admin = fresh.admin;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload failed: cannot bind; the running configuration stays");
                    continue;
                }
            }
        }
        let mut started = Engine::start(
            next.clone(),
            next_listeners.try_clone()?,
            Some((&engine, &config)),
        );
        if tokio::time::timeout(Duration::from_secs(30), &mut started.synced)
            .await
            .is_err()
        {
            warn!("the new configuration has not synced within 30 s; switching anyway");
        }
        started.serve.cancel();
        let old = std::mem::replace(&mut engine, started);
        old.lameduck
            .store(false, std::sync::atomic::Ordering::Relaxed);
        old.stop().await?;
        config = next;
        listeners = next_listeners;
        info!(rebound = rebind, "configuration reloaded");
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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

/// Runs the server on `listeners` until `shutdown` completes.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let sim = simulated(&config).then(|| Arc::new(std::sync::Mutex::new(new_sim(&config))));
    run_engine(config, listeners, shutdown, Gates::default(), sim).await
}

/// How an engine starts up beside a running one.
struct Gates {
    /// Told when the index has completed its first sync.
    synced: Option<tokio::sync::oneshot::Sender<()>>,
    /// The DNS and admin listeners are served only once this is cancelled.
    serve: CancellationToken,
    /// Whether shutting down waits `lameduck_ms` with readiness at 503.
    lameduck: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Gates {
    fn default() -> Self {
        let serve = CancellationToken::new();
        serve.cancel();
        Gates {
            synced: None,
            serve,
            lameduck: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }
}

/// [`run`], with the start-up [`Gates`] of a reload.
async fn run_engine(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    gates: Gates,
    sim: Option<SharedSim>,
) -> Result<()> {
    let Gates {
        synced,
        serve,
        lameduck,
    } = gates;
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    config.validate()?;
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let settings = config.dns_settings();
    let kinds: Vec<Kind> = match config.source.kind {
        config::SourceKind::File => Kind::ALL.to_vec(),
        config::SourceKind::Kubernetes => sources::k8s::kinds(&config),
    };
    let mut writer = IndexWriter::new(
        ZoneSettings {
            zone: settings.zone.clone(),
            ttl: settings.ttl,
            endpoint_pod_names: config.dns.endpoint_pod_names,
        },
        &kinds,
    );
    // Zone transfers: the journal's recorder goes on the writer before it starts.
    let transfers = transfer::start(&config, &settings, &mut writer, &stop, &tracker)?;
    let index = writer.index();
    let (tx, rx) = mpsc::channel(sources::QUEUE);
    tracker.spawn(sources::run_writer(writer, rx));

    let mut sim_handle = None;
    match config.source.kind {
        config::SourceKind::File => {
            let manifests = if config.source.manifests.is_empty() {
                Manifests::Demo
            } else {
                Manifests::Files(config.source.manifests.clone())
            };
            let sim = sim.map(|sim| {
                let (handle, commands) = SimHandle::channel();
                sim_handle = Some(handle);
                (sim, commands)
            });
            info!(source = "file", manifests = ?manifests, simulator = sim.is_some(), "starting source");
            tracker.spawn(sources::file::run(
                ManifestReader::new(manifests),
                Duration::from_millis(config.source.poll_interval_ms),
                sim,
                tx,
                stop.clone(),
            ));
        }
        config::SourceKind::Kubernetes => {
            let client = sources::k8s::client(&config).await?;
            info!(source = "kubernetes", "starting source");
            tracker.spawn(sources::k8s::run(
                client,
                config.source.clone(),
                config.dns.pods == dns::PodsMode::Verified,
                tx,
                stop.clone(),
            ));
        }
    }
    {
        let index = index.clone();
        tracker.spawn(async move {
            index.wait_synced().await;
            if let Some(tx) = synced {
                let _ = tx.send(());
            }
            let s = index.stats();
            info!(
                services = s.services.load(std::sync::atomic::Ordering::Relaxed),
                endpoints = s.endpoints.load(std::sync::atomic::Ordering::Relaxed),
                "index synced; answering"
            );
        });
    }

    let mut answerer = dns::Answerer::new(index.clone(), settings);
    if let Some(t) = transfers {
        answerer = answerer.with_transfers(t);
    }
    let answerer = Arc::new(answerer);
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        _ = serve.cancelled() => {}
        _ = &mut shutdown => {
            stop.cancel();
            tracker.close();
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
            return Ok(());
        }
    }
    for s in &listeners.udp {
        info!(addr = %s.local_addr()?, "dns listening (udp)");
    }
    let forwarder = if config.forward.upstreams.is_empty() {
        None
    } else {
        let ups = dns::forward::upstreams(&config.forward.upstreams)?;
        info!(upstreams = ?ups, "forwarding names outside our zones");
        Some(Arc::new(dns::forward::Forwarder::new(
            &ups,
            Duration::from_millis(config.forward.timeout_ms),
            config.forward.cache_size,
            config.forward.max_inflight,
            config.dns.max_udp_payload,
        )?))
    };
    let udp_forward = forwarder.as_ref().map(|f| {
        let (tx, rx) = mpsc::channel(config.forward.max_inflight);
        tracker.spawn(Arc::clone(f).serve_udp(rx));
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
        &answerer,
        listeners.udp,
        udp_forward,
        rrl.map(Arc::new),
        &stop,
    )?;
    let limits = dns::server::TcpLimits {
        max_connections: config.dns.tcp_max_connections,
        idle_timeout: config.tcp_idle_timeout(),
    };
    for l in listeners.tcp {
        info!(addr = %l.local_addr()?, "dns listening (tcp)");
        let task = dns::server::serve_tcp(
            Arc::clone(&answerer),
            l,
            limits,
            forwarder.clone(),
            stop.clone(),
            tracker.clone(),
        );
        tracker.spawn(async move {
            if let Err(e) = task.await {
                warn!(error = %e, "tcp listener stopped");
            }
        });
    }
    if let Some(l) = listeners.admin {
        let addr = l.local_addr()?;
        if !addr.ip().is_loopback() {
            warn!(%addr, "admin listener is bound beyond loopback: anyone who reaches it can drive the simulator");
        }
        info!(%addr, "admin listening (http)");
        let app = admin::router(admin::AdminState {
            index,
            sim: sim_handle,
            dns: Arc::clone(&answerer),
            metrics: Arc::new(telemetry::Metrics::default()),
            forward: forwarder.as_ref().map(|f| f.stats()),
            draining: Arc::clone(&draining),
        });
        let listener = tokio::net::TcpListener::from_std(l)?;
        let stop = stop.clone();
        tracker.spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                warn!(error = %e, "admin listener stopped");
            }
        });
    }

    shutdown.await;
    // Readiness goes 503 first, so load balancers stop sending; then, after
    // the lameduck delay, stop accepting and finish what is in flight.
    let lameduck = lameduck.load(std::sync::atomic::Ordering::Relaxed);
    if lameduck {
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if lameduck && config.admin.lameduck_ms > 0 {
        info!(
            lameduck_ms = config.admin.lameduck_ms,
            "draining: /ready answers 503"
        );
        tokio::time::sleep(Duration::from_millis(config.admin.lameduck_ms)).await;
    }
    info!("shutting down");
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        warn!("tasks did not finish within 5 s; exiting anyway");
    }
    let _ = tokio::task::spawn_blocking(move || {
        for t in udp_threads {
            let _ = t.join();
        }
    })
    .await;
    Ok(())
}
