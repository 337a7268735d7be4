//! The Kubernetes source: kube-runtime watchers feeding the index.
//!
//! One watcher per kind (Services, EndpointSlices, Namespaces, StatefulSets,
//! and Pods only for `pods = "verified"`) — per kind and namespace with
//! `namespaces` set, and then no Namespace watch at all — each list + watch with
//! resourceVersion tracking, bookmarks and exponential backoff on errors.
//! kube's `Event::Init … InitDone` maps one-to-one onto our `Reset …
//! Synced`: during a list (the first, or a re-list after 410 Gone) objects
//! apply as they arrive and what the list did not return goes at its end, so
//! live names never blank meanwhile. A dropped watch resumes from its last
//! resourceVersion without re-listing. Objects are reduced to records right
//! here; whole objects are never kept.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::access::{self, Access};
use super::api_health::ApiHealth;
use crate::config::{Config, PodsMode, SourceConfig};
use crate::error::{Error, Result};
use crate::index::record::RecordError;
use crate::index::{
    Index, Kind, NamespaceRecord, Object, ObjectKey, PodRecord, ServiceRecord, SliceRecord,
    SourceEvent, StatefulSetRecord,
};

/// The longest pause between two attempts of one watch.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Reconnect backoff for the watches: 0.1 s doubling to 5 s (with jitter),
/// back to 0.1 s once a watch request of the kind is answered again, or
/// after 10 s without an error. kube's default (0.8 s to 30 s) suits
/// controllers; a DNS server should re-converge within seconds after an API
/// blip, and four or five watches retrying every 5 s at worst are no load for
/// an API server. The previous state answers meanwhile.
///
/// So it counts the failures since the kind's last watch got through: a
/// failing server (5xx, refused connections, 403s, 410 after 410, a watch
/// reset within 20 ms of its answer) sees the same doubling as ever,
/// while a watch cut after it was answered (a reset, an apiserver rolling, a
/// load balancer's timeout) is retried at the floor,
/// however often that happens: under such churn (issue #27) the errors never
/// paused for 10 s, the backoff sat at its cap and the final state was
/// served 2.5-7.5 s after the last fault. A clean end (`timeoutSeconds`) is
/// no error at all: kube re-watches at once. The successes come from the
/// client's responses ([`ApiHealth::watches_answered`]), not from kube's
/// events: its watcher yields `Init` (a success) before every list attempt,
/// which would pin the delay at its floor while the API server is down. The
/// watchers wait out each delay through [`ApiHealth::wait_retry`], which
/// spreads their retries and ends the waits early once the server answers
/// again.
#[derive(Default)]
pub struct QuickBackoff {
    attempt: u32,
    last_error: Option<std::time::Instant>,
}

impl QuickBackoff {
    /// Starts over at the floor: the server answered.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
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
            .min(MAX_BACKOFF);
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

/// Runs every watcher of `config`'s source until `stop`; Pods only with `pods = "verified"`.
/// Failed requests are counted in `index`'s stats; `health` is the one
/// `client` reports to.
///
/// With `namespaces` configured every request is made inside them (one
/// watcher per kind and namespace, each its own list + watch), nothing at
/// cluster scope: the namespaces are taken as existing rather than watched,
/// so a namespaced Role is all the server needs. A label `selector` goes to
/// the API with every list and watch (see [`selectors`]). Refused requests
/// (403) are recorded in `access`.
pub async fn run(
    client: Client,
    health: Arc<ApiHealth>,
    config: Config,
    index: Index,
    tx: mpsc::Sender<SourceEvent>,
    access: Access,
    stop: CancellationToken,
) {
    let watch_pods = config.dns.pods == PodsMode::Verified;
    let cfg = config.source;
    let scopes = scopes(&cfg);
    let sel = selectors(&cfg);
    let watchers = Watchers {
        client,
        health,
        index,
        tx,
        access,
        stop,
    };
    let page = |labels: &Option<String>| {
        let c = watcher::Config::default().page_size(LIST_PAGE);
        match labels {
            Some(l) => c.labels(l),
            None => c,
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for ns in &scopes {
        let w = &watchers;
        tasks.spawn(w.watch(
            Kind::Service,
            w.api::<Service>(ns),
            ns,
            page(&sel.services),
            |o| ServiceRecord::try_from(o).map(Object::Service),
        ));
        tasks.spawn(w.watch(
            Kind::EndpointSlice,
            w.api::<EndpointSlice>(ns),
            ns,
            page(&sel.slices),
            |o| SliceRecord::try_from(o).map(Object::EndpointSlice),
        ));
        tasks.spawn(w.watch(
            Kind::StatefulSet,
            w.api::<StatefulSet>(ns),
            ns,
            page(&sel.others),
            |o| StatefulSetRecord::try_from(o).map(Object::StatefulSet),
        ));
        if watch_pods {
            let pods = page(&sel.others).fields("status.phase!=Succeeded,status.phase!=Failed");
            tasks.spawn(w.watch(Kind::Pod, w.api::<Pod>(ns), ns, pods, |o| {
                PodRecord::try_from(o).map(Object::Pod)
            }));
        }
    }
    if scopes == [None] {
        let api = Api::<Namespace>::all(watchers.client.clone());
        tasks.spawn(
            watchers.watch(Kind::Namespace, api, &None, page(&None), |o| {
                NamespaceRecord::try_from(o).map(Object::Namespace)
            }),
        );
    } else if !watchers.assume_namespaces(&scopes).await {
        return;
    }
    watchers.health.set_watchers(tasks.len());
    drop(watchers);
    while tasks.join_next().await.is_some() {}
}

/// Where requests go: `[None]` (cluster-wide) without `namespaces`, else one
/// `Some` per namespace, lower-cased and without duplicates.
fn scopes(cfg: &SourceConfig) -> Vec<Option<Arc<str>>> {
    let names = namespaces_of(cfg);
    if names.is_empty() {
        return vec![None];
    }
    names.into_iter().map(|n| Some(n.into())).collect()
}

/// The namespaces `config` confines the source to, lower-cased, sorted,
/// without duplicates; empty = cluster-wide.
pub fn namespaces(config: &Config) -> Vec<String> {
    namespaces_of(&config.source)
}

fn namespaces_of(cfg: &SourceConfig) -> Vec<String> {
    let mut names: Vec<String> = cfg
        .namespaces
        .iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The label selectors sent with each kind's requests.
#[derive(Debug, PartialEq)]
pub struct Selectors {
    /// Services: `selector` and the older `service_selector`, both.
    pub services: Option<String>,
    /// EndpointSlices: those of a Service (`kubernetes.io/service-name`)
    /// that match `selector`, which the EndpointSlice controller copies from
    /// their Service's labels.
    pub slices: Option<String>,
    /// StatefulSets and Pods: `selector`, on their own labels.
    pub others: Option<String>,
}

/// The label selectors of `cfg` (requirements joined by `,` are ANDed).
pub fn selectors(cfg: &SourceConfig) -> Selectors {
    fn nonempty(s: &Option<String>) -> Option<&str> {
        s.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
    let all = nonempty(&cfg.selector);
    let join = |parts: &[Option<&str>]| {
        let parts: Vec<&str> = parts.iter().flatten().copied().collect();
        (!parts.is_empty()).then(|| parts.join(","))
    };
    Selectors {
        services: join(&[all, nonempty(&cfg.service_selector)]),
        slices: join(&[Some(crate::index::record::SERVICE_NAME_LABEL), all]),
        others: all.map(str::to_string),
    }
}

/// What every watcher shares: the client and its health, the index (its
/// stats count failed requests), the index's queue, the refused permissions
/// and the stop token.
#[derive(Clone)]
struct Watchers {
    client: Client,
    health: Arc<ApiHealth>,
    index: Index,
    tx: mpsc::Sender<SourceEvent>,
    access: Access,
    stop: CancellationToken,
}

impl Watchers {
    /// The API of a namespaced kind in `ns`, or in all namespaces.
    fn api<K>(&self, ns: &Option<Arc<str>>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        match ns {
            Some(n) => Api::namespaced(self.client.clone(), n),
            None => Api::all(self.client.clone()),
        }
    }

    /// Namespaced mode: the configured namespaces exist as far as DNS goes
    /// (`<ns>.svc.<zone>` is NODATA, not NXDOMAIN), without a request for
    /// Namespace objects, which a namespaced Role cannot grant. False when
    /// the index's queue is closed.
    async fn assume_namespaces(&self, scopes: &[Option<Arc<str>>]) -> bool {
        let names = scopes.iter().flatten();
        let events = std::iter::once(SourceEvent::Reset(Kind::Namespace))
            .chain(names.map(|n| {
                let key = ObjectKey::new("", n);
                SourceEvent::Upsert(Object::Namespace(NamespaceRecord { key }))
            }))
            .chain([SourceEvent::Synced(Kind::Namespace)]);
        for ev in events {
            if self.tx.send(ev).await.is_err() {
                return false;
            }
        }
        info!(namespaces = ?scopes.iter().flatten().collect::<Vec<_>>(), "watching these namespaces only");
        true
    }

    /// Watches `api`'s objects (list, then watch) and sends what it sees,
    /// reduced by `convert`, until `stop` or the index's queue closes. `ns`
    /// is the namespace `api` is confined to, if any.
    fn watch<K, F>(
        &self,
        kind: Kind,
        api: Api<K>,
        ns: &Option<Arc<str>>,
        config: watcher::Config,
        convert: F,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
        F: Fn(&K) -> std::result::Result<Object, RecordError> + Send + 'static,
    {
        let (this, ns) = (self.clone(), ns.clone());
        async move {
            // No backoff inside the stream: after an error it retries on the
            // next poll, which comes when `wait_retry` says.
            let start = || watcher(api.clone(), config.clone()).boxed();
            let mut stream = start();
            let mut backoff = QuickBackoff::default();
            let place = this.health.join();
            let mut progress = this.health.watch_progress(api.resource_url());
            // Whether the last error was a 403, to clear once events flow.
            let mut refused = false;
            loop {
                let next = tokio::select! {
                    _ = this.stop.cancelled() => return,
                    n = stream.try_next() => n,
                };
                let event = match next {
                    Ok(Some(e)) => e,
                    Ok(None) => return,
                    Err(e) => {
                        if progress.got_through(&this.health, gone_in_stream(&e)) {
                            backoff.reset();
                        }
                        let delay = backoff.next().unwrap_or(MAX_BACKOFF);
                        if is_gone_at_watch_start(&e) {
                            // kube-runtime re-lists on a 410 sent inside the watch stream,
                            // but retries a watch *request* answered 410 with the same
                            // expired version forever. Start a fresh watcher: it re-lists
                            // (Init .. InitDone), and the index keeps answering until then.
                            this.count_failure(kind);
                            warn!(kind = kind.as_str(), namespace = ns.as_deref(), error = %e, "watch version expired; re-listing");
                            stream = start();
                        } else {
                            // The stream recovers on the next poll, after the
                            // backoff; the index keeps serving what it has.
                            refused = this.failed(kind, ns.as_ref(), &e);
                        }
                        if !this.health.wait_retry(place, delay, &this.stop).await {
                            return;
                        }
                        continue;
                    }
                };
                if refused && !matches!(event, Event::Init) {
                    refused = false;
                    this.access.granted(kind, ns.as_ref());
                    info!(
                        kind = kind.as_str(),
                        namespace = ns.as_deref(),
                        "permission works again"
                    );
                }
                if let Some(ev) = source_event(kind, ns.as_ref(), event, &convert)
                    && this.tx.send(ev).await.is_err()
                {
                    return;
                }
            }
        }
    }

    /// Counts a failed list or watch request of `kind`.
    fn count_failure(&self, kind: Kind) {
        self.index.stats().source_errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Logs a failed request (once per back-off step: the stream waits
    /// before its next attempt); a 403 as an error naming the permission,
    /// recorded in `access`. Returns whether it was a 403.
    fn failed(&self, kind: Kind, ns: Option<&Arc<str>>, e: &watcher::Error) -> bool {
        self.count_failure(kind);
        match forbidden_verb(e) {
            Some(verb) => {
                self.access.refused(kind, ns, verb);
                let (resource, group) = access::resource(kind);
                error!(
                    kind = kind.as_str(), verb, resource, api_group = group, namespace = ns.map(|n| &**n),
                    error = %e,
                    "permission denied: {}; retrying with backoff",
                    access::describe(kind, ns.map(|n| &**n), verb),
                );
                true
            }
            None => {
                warn!(kind = kind.as_str(), namespace = ns.map(|n| &**n), error = %e, "watch failed; retrying with backoff");
                false
            }
        }
    }
}

/// The index's event for a watch event (in namespace `ns` when confined to
/// one): `None` for an object that does not convert (logged).
fn source_event<K: Resource>(
    kind: Kind,
    ns: Option<&Arc<str>>,
    event: Event<K>,
    convert: impl Fn(&K) -> std::result::Result<Object, RecordError>,
) -> Option<SourceEvent> {
    match event {
        Event::Init => {
            info!(
                kind = kind.as_str(),
                namespace = ns.map(|n| &**n),
                "listing"
            );
            Some(match ns {
                Some(n) => SourceEvent::ResetIn(kind, Arc::clone(n)),
                None => SourceEvent::Reset(kind),
            })
        }
        Event::InitDone => {
            info!(
                kind = kind.as_str(),
                namespace = ns.map(|n| &**n),
                "list complete"
            );
            Some(match ns {
                Some(n) => SourceEvent::SyncedIn(kind, Arc::clone(n)),
                None => SourceEvent::Synced(kind),
            })
        }
        Event::InitApply(o) | Event::Apply(o) => match convert(&o) {
            Ok(obj) => Some(SourceEvent::Upsert(obj)),
            Err(e) => {
                warn!(kind = kind.as_str(), name = ?o.meta().name, namespace = ?o.meta().namespace, error = %e, "skipping object");
                None
            }
        },
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

/// The verb of a request the API server refused with 403 Forbidden.
fn forbidden_verb(e: &watcher::Error) -> Option<&'static str> {
    let code = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 403);
    match e {
        watcher::Error::InitialListFailed(k) if code(k) => Some("list"),
        watcher::Error::WatchStartFailed(k) | watcher::Error::WatchFailed(k) if code(k) => {
            Some("watch")
        }
        watcher::Error::WatchError(s) if s.code == 403 => Some("watch"),
        _ => None,
    }
}

/// True for a watch request the API server answered with HTTP 410 Gone.
fn is_gone_at_watch_start(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
}

/// True for a 410 Gone inside a watch stream (answered 200): the version the
/// watcher held is gone, and kube re-lists.
fn gone_in_stream(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchError(s) if s.code == 410)
}

use watcher::watcher;
