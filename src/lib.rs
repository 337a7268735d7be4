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
use sources::sim::{Sim, SimHandle};

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
        let mut l = Listeners {
            udp: Vec::new(),
            tcp: Vec::new(),
            admin: None,
        };
        for addr in &config.dns.listen {
            let udp = dns::server::bind_udp(*addr, config.udp_threads())?;
            // With port 0 TCP takes the port UDP got, so both share one number.
            let port = udp[0].local_addr()?.port();
            l.tcp
                .push(dns::server::bind_tcp(SocketAddr::new(addr.ip(), port))?);
            l.udp.extend(udp);
        }
        if let Some(addr) = config.admin.listen {
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
    let mut objects = ManifestReader::new(manifests)
        .reload(true)
        .unwrap_or_default();
    if config.sim.enabled {
        let mut sim = Sim::new(
            Duration::from_millis(config.sim.ready_delay_ms),
            &config.sim.pod_cidr,
        );
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
        objects = sim.overlay(&objects);
    }
    writer.apply_all(sources::Differ::default().diff(objects));
    Ok(dns::zonefile::export(&writer.index(), &settings))
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
    config.validate()?;
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let settings = config.dns_settings();
    let kinds: Vec<Kind> = match config.source.kind {
        config::SourceKind::File => Kind::ALL.to_vec(),
        config::SourceKind::Kubernetes => sources::k8s::kinds(&config),
    };
    let writer = IndexWriter::new(
        ZoneSettings {
            zone: settings.zone.clone(),
            ttl: settings.ttl,
            endpoint_pod_names: config.dns.endpoint_pod_names,
        },
        &kinds,
    );
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
            let sim = config.sim.enabled.then(|| {
                let (handle, commands) = SimHandle::channel();
                sim_handle = Some(handle);
                (
                    Sim::new(
                        Duration::from_millis(config.sim.ready_delay_ms),
                        &config.sim.pod_cidr,
                    ),
                    commands,
                )
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
            let s = index.stats();
            info!(
                services = s.services.load(std::sync::atomic::Ordering::Relaxed),
                endpoints = s.endpoints.load(std::sync::atomic::Ordering::Relaxed),
                "index synced; answering"
            );
        });
    }

    let answerer = Arc::new(dns::Answerer::new(index.clone(), settings));
    for s in &listeners.udp {
        info!(addr = %s.local_addr()?, "dns listening (udp)");
    }
    let rrl = dns::rrl::Rrl::new(config.dns.rrl_responses_per_second, config.dns.rrl_slip);
    if rrl.is_some() {
        info!(
            responses_per_second = config.dns.rrl_responses_per_second,
            slip = config.dns.rrl_slip,
            "udp response-rate limiting on"
        );
    }
    let udp_threads = dns::server::spawn_udp(&answerer, listeners.udp, rrl.map(Arc::new), &stop)?;
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
