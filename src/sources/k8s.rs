//! The Kubernetes source: kube-runtime watchers feeding the index.
//!
//! One watcher per kind (Services, EndpointSlices, Namespaces, StatefulSets,
//! and Pods only for `pods = "verified"`), each list + watch with
//! resourceVersion tracking, bookmarks and exponential backoff on errors.
//! kube's `Event::Init … InitDone` maps one-to-one onto our `Reset …
//! Synced`: during a list (the first, or a re-list after 410 Gone) objects
//! apply as they arrive and what the list did not return goes at its end, so
//! live names never blank meanwhile. A dropped watch resumes from its last
//! resourceVersion without re-listing. Objects are reduced to records right
//! here; whole objects are never kept.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::api_health::ApiHealth;
use crate::config::{Config, PodsMode, SourceConfig};
use crate::error::{Error, Result};
use crate::index::record::RecordError;
use crate::index::{
    Index, Kind, NamespaceRecord, Object, ObjectKey, PodRecord, ServiceRecord, SliceRecord,
    SourceEvent, StatefulSetRecord,
};

/// Reconnect backoff for the watches: 0.1 s doubling to 5 s (with jitter),
/// back to 0.1 s after 10 s without an error. kube's default (0.8 s to 30 s)
/// suits controllers; a DNS server should re-converge within seconds after
/// an API blip, and four or five watches retrying every 5 s at worst are no
/// load for an API server. The previous state answers meanwhile.
///
/// Resets come only from that timer: kube's watcher yields `Init` (a success)
/// before every list attempt, which would pin the delay at its floor while the
/// API server is down. The watchers wait out each delay through
/// [`ApiHealth::wait_retry`], which spreads their retries and ends the waits
/// early once the server answers again.
#[derive(Default)]
pub struct QuickBackoff {
    attempt: u32,
    last_error: Option<std::time::Instant>,
}

impl Iterator for QuickBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = std::time::Instant::now();
        if self
            .last_error
            .is_some_and(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.attempt = 0;
        }
        self.last_error = Some(now);
        let base = Duration::from_millis(100)
            .saturating_mul(1 << self.attempt.min(6))
            .min(Duration::from_secs(5));
        self.attempt = self.attempt.saturating_add(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Some(base.mul_f64(0.5 + (nanos % 1000) as f64 / 2000.0))
    }
}

/// Objects per list page, for every kind (kube's default is 500): a page is
/// decoded whole before it reaches the index, and every kind lists at once
/// after a 410, so this bounds a re-list's memory peak (docs/performance.md).
const LIST_PAGE: u32 = 250;

/// The kinds watched for `config`.
pub fn kinds(config: &Config) -> Vec<Kind> {
    let mut k = vec![
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::StatefulSet,
    ];
    if config.dns.pods == PodsMode::Verified {
        k.push(Kind::Pod);
    }
    k
}

/// A client from `--kubeconfig`/`--context`, else inferred (in-cluster, then
/// `KUBECONFIG`, then `~/.kube/config`), reporting its responses to `health`.
pub async fn client(config: &Config, health: &Arc<ApiHealth>) -> Result<Client> {
    let s = &config.source;
    let kube_config = match (&s.kubeconfig, &s.context) {
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| Error::KubeConfig(Box::new(e)))?,
        (path, context) => {
            let options = kube::config::KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            let kc = match path {
                Some(p) => kube::config::Kubeconfig::read_from(p)
                    .map_err(|e| Error::KubeConfig(Box::new(e)))?,
                None => {
                    kube::config::Kubeconfig::read().map_err(|e| Error::KubeConfig(Box::new(e)))?
                }
            };
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::KubeConfig(Box::new(e)))?
        }
    };
    // kube's default retry layer re-sends a request answered 429, 503 or 504
    // up to 15 times, from 5 ms doubling to minutes, hidden from the watchers:
    // a 10 s outage then took ~10 s more to notice the server back. Our own
    // backoff (capped at 5 s, see `ApiHealth`) does the retrying instead.
    let mut kube_config = kube_config;
    kube_config.default_retry = false;
    info!(cluster_url = %kube_config.cluster_url, "kubernetes client configured");
    Ok(kube::client::ClientBuilder::try_from(kube_config)?
        .with_layer(&ApiHealth::layer(health))
        .build())
}

/// Runs every watcher until `stop`; Pods only when `watch_pods` (`pods = "verified"`).
/// Failed requests are counted in `index`'s stats; `health` is the one
/// `client` reports to.
pub async fn run(
    client: Client,
    health: Arc<ApiHealth>,
    cfg: SourceConfig,
    watch_pods: bool,
    index: Index,
    tx: mpsc::Sender<SourceEvent>,
    stop: CancellationToken,
) {
    let namespaces = cfg
        .namespaces
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    let watchers = Watchers {
        client,
        namespaces: Arc::new(namespaces),
        health,
        index,
        tx,
        stop,
    };
    let page = || watcher::Config::default().page_size(LIST_PAGE);
    let mut services = page();
    if let Some(sel) = cfg.service_selector.as_deref().filter(|s| !s.is_empty()) {
        services = services.labels(sel);
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        watchers
            .clone()
            .watch::<Service, _>(Kind::Service, services, |o| {
                ServiceRecord::try_from(o).map(Object::Service)
            }),
    );
    let slices = page().labels(crate::index::record::SERVICE_NAME_LABEL);
    tasks.spawn(
        watchers
            .clone()
            .watch::<EndpointSlice, _>(Kind::EndpointSlice, slices, |o| {
                SliceRecord::try_from(o).map(Object::EndpointSlice)
            }),
    );
    tasks.spawn(
        watchers
            .clone()
            .watch::<Namespace, _>(Kind::Namespace, page(), |o| {
                NamespaceRecord::try_from(o).map(Object::Namespace)
            }),
    );
    tasks.spawn(
        watchers
            .clone()
            .watch::<StatefulSet, _>(Kind::StatefulSet, page(), |o| {
                StatefulSetRecord::try_from(o).map(Object::StatefulSet)
            }),
    );
    if watch_pods {
        let pods = page().fields("status.phase!=Succeeded,status.phase!=Failed");
        tasks.spawn(
            watchers
                .clone()
                .watch::<Pod, _>(Kind::Pod, pods, |o| PodRecord::try_from(o).map(Object::Pod)),
        );
    }
    watchers.health.set_watchers(tasks.len());
    drop(watchers);
    while tasks.join_next().await.is_some() {}
}

/// What every watcher shares: the client, the namespaces to keep (all when
/// empty), the index (its stats count failed requests), the index's queue
/// and the stop token.
#[derive(Clone)]
struct Watchers {
    client: Client,
    namespaces: Arc<HashSet<String>>,
    health: Arc<ApiHealth>,
    index: Index,
    tx: mpsc::Sender<SourceEvent>,
    stop: CancellationToken,
}

impl Watchers {
    /// Watches every `K` (list, then watch) and sends what it sees, reduced
    /// by `convert`, until `stop` or the index's queue closes.
    async fn watch<K, F>(self, kind: Kind, config: watcher::Config, convert: F)
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
        F: Fn(&K) -> std::result::Result<Object, RecordError> + Send + 'static,
    {
        let api: Api<K> = Api::all(self.client.clone());
        // No backoff inside the stream: after an error it retries on the next
        // poll, which comes when `wait_retry` says.
        let start = || watcher(api.clone(), config.clone()).boxed();
        let mut stream = start();
        let mut backoff = QuickBackoff::default();
        let place = self.health.join();
        loop {
            let next = tokio::select! {
                _ = self.stop.cancelled() => return,
                n = stream.try_next() => n,
            };
            let event = match next {
                Ok(Some(e)) => e,
                Ok(None) => return,
                Err(e) if is_gone_at_watch_start(&e) => {
                    // kube-runtime re-lists on a 410 sent inside the watch stream,
                    // but retries a watch *request* answered 410 with the same
                    // expired version forever. Start a fresh watcher: it re-lists
                    // (Init .. InitDone), and the index keeps answering until then.
                    self.failed(kind);
                    warn!(kind = kind.as_str(), error = %e, "watch version expired; re-listing");
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(GONE_RELIST_DELAY) => {}
                    }
                    stream = start();
                    continue;
                }
                Err(e) => {
                    // The stream recovers on the next poll (with backoff); the
                    // index keeps serving what it has.
                    self.failed(kind);
                    warn!(kind = kind.as_str(), error = %e, "watch failed; retrying with backoff");
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    if !self.health.wait_retry(place, delay, &self.stop).await {
                        return;
                    }
                    continue;
                }
            };
            if let Some(ev) = self.source_event(kind, event, &convert)
                && self.tx.send(ev).await.is_err()
            {
                return;
            }
        }
    }

    /// Counts a failed list or watch request of `kind`.
    fn failed(&self, kind: Kind) {
        self.index.stats().source_errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The index's event for a watch event: `None` for an object outside the
    /// watched namespaces or one that does not convert (logged).
    fn source_event<K: Resource>(
        &self,
        kind: Kind,
        event: Event<K>,
        convert: impl Fn(&K) -> std::result::Result<Object, RecordError>,
    ) -> Option<SourceEvent> {
        match event {
            Event::Init => {
                info!(kind = kind.as_str(), "listing");
                Some(SourceEvent::Reset(kind))
            }
            Event::InitDone => {
                info!(kind = kind.as_str(), "list complete");
                Some(SourceEvent::Synced(kind))
            }
            Event::InitApply(o) | Event::Apply(o) => {
                if !self.keeps(o.meta()) {
                    return None;
                }
                match convert(&o) {
                    Ok(obj) => Some(SourceEvent::Upsert(obj)),
                    Err(e) => {
                        warn!(kind = kind.as_str(), name = ?o.meta().name, namespace = ?o.meta().namespace, error = %e, "skipping object");
                        None
                    }
                }
            }
            Event::Delete(o) => {
                let m = o.meta();
                let key = ObjectKey::new(
                    m.namespace.as_deref().unwrap_or(""),
                    m.name.as_deref().unwrap_or(""),
                );
                debug!(kind = kind.as_str(), %key, "deleted");
                Some(SourceEvent::Remove(kind, key))
            }
        }
    }

    /// Whether an object of this namespace is watched.
    fn keeps(&self, meta: &ObjectMeta) -> bool {
        self.namespaces.is_empty()
            || meta
                .namespace
                .as_deref()
                .is_none_or(|n| self.namespaces.contains(&n.to_ascii_lowercase()))
    }
}

/// Pause before re-listing after a watch request was refused with 410, like
/// kube-runtime's first backoff step, so a misbehaving server is not hammered.
const GONE_RELIST_DELAY: Duration = Duration::from_millis(800);

/// True for a watch request the API server answered with HTTP 410 Gone.
fn is_gone_at_watch_start(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
}

use watcher::watcher;
