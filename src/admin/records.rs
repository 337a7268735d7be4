//! `/records`: what DNS answers, as JSON, with the record browser's history.
//!
//! Per service: its endpoints in ordinal order (each with its past addresses
//! and readiness states), and per governing StatefulSet its ready/desired
//! count, policy and its ordinals: every one that has an endpoint, and the
//! lowest [`PENDING_LISTED`] pending ones (with the negative TTL their
//! NXDOMAIN carries) plus a count of the rest. Then the change timeline
//! (newest first) and queries per second. The page at `/` renders exactly
//! this. Filters: `namespace`, `service`, `name` (an endpoint label). On
//! the transfer source, `follow` says how the zone follows its primary.
//!
//! An answer costs O(objects that exist), never O(`spec.replicas`): a
//! StatefulSet of `replicas: 2147483647` (from the API or a manifest) lists
//! what exists, 16 pending ordinals and a number, so the page polling this
//! every second cannot be made to allocate without bound.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use super::AdminState;
use crate::dns::handoff::FollowTotals;
use crate::history::{Change, Item, NameHistory, ServiceHistory, State as NameState};
use crate::index::record::Ordinal;
use crate::index::{EndpointView, Governed, ObjectKey, PodManagement, ServiceKind, ServiceView};

/// Pending ordinals (below `replicas`, no endpoint) listed per StatefulSet
/// at most: the lowest ones, which are the ones its controller creates next.
/// The rest are only counted (`pending_unlisted`).
pub const PENDING_LISTED: u32 = 16;

/// `/records` filters (names compare ignoring case).
#[derive(Deserialize, Default)]
pub struct RecordsFilter {
    namespace: Option<String>,
    service: Option<String>,
    /// One endpoint label (`web-1`): only that name's row and ordinal.
    name: Option<String>,
}

/// One service in `/records`.
#[derive(Serialize, Debug, Clone)]
pub struct ServiceJson {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIP, Headless or ExternalName.
    #[serde(rename = "type")]
    pub kind: String,
    /// The DNS name.
    pub fqdn: String,
    /// Cluster IPs.
    pub cluster_ips: Vec<String>,
    /// ExternalName target.
    pub external_name: Option<String>,
    /// Ports as `name/proto:port`.
    pub ports: Vec<String>,
    /// Endpoints in ordinal order.
    pub endpoints: Vec<EndpointJson>,
    /// The StatefulSets this service governs.
    pub statefulsets: Vec<StatefulSetJson>,
}

/// One endpoint in `/records`.
#[derive(Serialize, Debug, Clone)]
pub struct EndpointJson {
    /// DNS label.
    pub name: String,
    /// Full DNS name.
    pub fqdn: String,
    /// Addresses.
    pub addresses: Vec<String>,
    /// Ready condition.
    pub ready: bool,
    /// Served in DNS.
    pub served: bool,
    /// Terminating condition.
    pub terminating: bool,
    /// Pod name.
    pub pod: Option<String>,
    /// Milliseconds since its addresses or readiness last changed.
    pub changed_ms_ago: u64,
    /// Its past: address sets and readiness states, newest first.
    pub history: NameHistory,
}

/// A governing StatefulSet in `/records`.
#[derive(Serialize, Debug, Clone)]
pub struct StatefulSetJson {
    /// Its name.
    pub name: String,
    /// `OrderedReady` or `Parallel`.
    pub policy: &'static str,
    /// Desired replicas.
    pub desired: u32,
    /// Ordinals below `desired` whose pod is ready.
    pub ready: u32,
    /// Ordinals below `desired` with no endpoint (`not_created`).
    pub pending: u32,
    /// How many of the `pending` ones `ordinals` leaves out: past the lowest
    /// [`PENDING_LISTED`], or not the one a `name` filter asks for.
    pub pending_unlisted: u32,
    /// In order: every ordinal below `desired` that has an endpoint, and the
    /// lowest [`PENDING_LISTED`] pending ones.
    pub ordinals: Vec<OrdinalJson>,
}

/// One ordinal of a StatefulSet in `/records`.
#[derive(Serialize, Debug, Clone)]
pub struct OrdinalJson {
    /// The ordinal.
    pub ordinal: u32,
    /// Its DNS label (`web-2`).
    pub name: String,
    /// Its DNS name.
    pub fqdn: String,
    /// `ready`, `not_ready`, `terminating`, or `not_created` (no endpoint).
    pub state: &'static str,
    /// DNS answers it.
    pub served: bool,
    /// Its addresses (none when not created).
    pub addresses: Vec<IpAddr>,
    /// Not served: the negative TTL of its NXDOMAIN (the short "pending" one).
    pub negative_ttl: Option<u32>,
    /// Its past, if it has one.
    pub history: Option<NameHistory>,
}

/// A timeline entry in `/records`: the change and its latency.
#[derive(Serialize, Debug)]
pub struct ChangeJson<'a> {
    /// The change.
    #[serde(flatten)]
    pub change: &'a Change,
    /// Event arrival to answers served, microseconds.
    pub latency_us: u64,
}

/// The `/records` handler.
pub async fn records(
    State(s): State<AdminState>,
    Query(f): Query<RecordsFilter>,
) -> Json<serde_json::Value> {
    let zone = &s.index.settings().zone;
    let now = crate::clock::unix_ms();
    let ctx = Context {
        zone,
        now,
        pending_ttl: s.dns.settings().dns.pending_negative_ttl,
        name: f.name.as_deref(),
    };
    let services: Vec<ServiceJson> = s
        .index
        .services()
        .iter()
        .filter(|v| f.matches(&v.record.key))
        .map(|v| ctx.service(v, s.history.service(&v.record.key).as_deref()))
        .collect();
    let changes = s.history.changes();
    let changes: Vec<ChangeJson<'_>> = changes
        .iter()
        .filter(|c| f.matches_change(c))
        .map(|c| ChangeJson {
            change: c,
            latency_us: c.latency_us(),
        })
        .collect();
    let follow = s
        .dns
        .transfers()
        .and_then(|t| t.totals().follow)
        .map(|f| follow_json(&f, now));
    Json(serde_json::json!({
        "synced": s.index.is_synced(),
        "follow": follow,
        "serial": s.index.serial(),
        "now_ms": now,
        "limits": s.history.limits(),
        "services": services,
        "changes": changes,
        "queries_per_second": s.history.rates().per_second(),
    }))
}

/// The transfer source's state in `/records` (`null` for other sources):
/// the primary, the serials, when the zone was last confirmed current and
/// how long ago that is (`lag_ms`), whether it expired, and its counters.
fn follow_json(f: &FollowTotals, now: u64) -> serde_json::Value {
    let [axfr, ixfr] = f.transfers;
    serde_json::json!({
        "primary": f.primary.map(|a| a.to_string()),
        "serial": f.serial,
        "primary_serial": f.primary_serial,
        "last_ok_ms": f.last_ok_ms,
        "last_check_ms": f.last_check_ms,
        "last_change_ms": f.last_change_ms,
        "lag_ms": f.lag_ms(now),
        "expired": f.expired,
        "failures": f.failures,
        "notifies": f.notifies,
        "transfers": { "axfr": axfr, "ixfr": ixfr },
    })
}

impl RecordsFilter {
    /// Whether the service `key` passes the filter.
    fn matches(&self, key: &ObjectKey) -> bool {
        passes(&self.namespace, key.namespace()) && passes(&self.service, key.name())
    }

    /// Whether a timeline entry passes: its service does, and with a name
    /// filter, it names that name.
    fn matches_change(&self, c: &Change) -> bool {
        passes(&self.namespace, &c.namespace)
            && passes(&self.service, &c.service)
            && (self.name.is_none() || c.items.iter().any(|i: &Item| passes(&self.name, &i.name)))
    }
}

/// True when nothing is `wanted`, or `name` is it (ignoring case).
fn passes(wanted: &Option<String>, name: &str) -> bool {
    wanted
        .as_deref()
        .is_none_or(|w| w.eq_ignore_ascii_case(name))
}

/// What every service of one `/records` answer is rendered with.
struct Context<'a> {
    zone: &'a str,
    /// Unix ms.
    now: u64,
    pending_ttl: u32,
    /// Only this endpoint label, if set.
    name: Option<&'a str>,
}

impl Context<'_> {
    fn wanted(&self, label: &str) -> bool {
        self.name.is_none_or(|n| n.eq_ignore_ascii_case(label))
    }

    /// One service of `/records`, with its history `h`.
    fn service(&self, v: &ServiceView, h: Option<&ServiceHistory>) -> ServiceJson {
        let r = &v.record;
        let fqdn = format!("{}.{}.svc.{}", r.key.name(), r.key.namespace(), self.zone);
        let (kind, cluster_ips, external_name) = match &r.kind {
            ServiceKind::ClusterIp(ips) => (
                "ClusterIP",
                ips.iter().map(|i| i.to_string()).collect(),
                None,
            ),
            ServiceKind::Headless => ("Headless", Vec::new(), None),
            ServiceKind::ExternalName(n) => ("ExternalName", Vec::new(), Some(n.clone())),
        };
        let ports = r
            .ports
            .iter()
            .map(|p| {
                let name = p.name.as_deref().unwrap_or("");
                format!("{name}/{}:{}", p.protocol, p.port)
            })
            .collect();
        let stored = |label: &str| h.and_then(|h| h.names.get(label)).cloned();
        // A name without a stored past: what its view says stands in.
        let past =
            |e: &EndpointView<'_>| stored(e.label).unwrap_or_else(|| NameHistory::present(e));
        let endpoints = v
            .endpoints()
            .filter(|e| self.wanted(e.label))
            .map(|e| EndpointJson {
                fqdn: format!("{}.{fqdn}", e.label),
                name: e.label.to_string(),
                addresses: e.addresses.iter().map(|a| a.to_string()).collect(),
                ready: e.ready,
                served: e.served,
                terminating: e.terminating,
                pod: e.pod.map(str::to_string),
                changed_ms_ago: self.now.saturating_sub(e.changed_ms),
                history: past(&e),
            })
            .collect();
        let pods = pods_by_statefulset(v);
        let statefulsets = v
            .statefulsets
            .iter()
            .map(|g| {
                let pods = pods.get(&*g.name).map_or(&[][..], Vec::as_slice);
                self.statefulset(g, &fqdn, pods, &stored)
            })
            .collect();
        ServiceJson {
            namespace: r.key.namespace().to_string(),
            name: r.key.name().to_string(),
            kind: kind.into(),
            fqdn,
            cluster_ips,
            external_name,
            ports,
            endpoints,
            statefulsets,
        }
    }

    /// A governing StatefulSet: its ordinals below `desired` that have an
    /// endpoint (`pods`: this StatefulSet's, by ordinal) and the lowest
    /// pending ones, with their histories (`past`).
    fn statefulset(
        &self,
        g: &Governed,
        service_fqdn: &str,
        pods: &[(u32, EndpointView<'_>)],
        past: &dyn Fn(&str) -> Option<NameHistory>,
    ) -> StatefulSetJson {
        let desired = g.replicas;
        let existing = &pods[..pods.partition_point(|(n, _)| *n < desired)];
        let ready = existing
            .iter()
            .filter(|(_, e)| NameState::of(e) == NameState::Ready)
            .count();
        let pending = desired - existing.len() as u32;
        let listed = match self.name {
            // One name asked for: that ordinal alone, pending or not.
            Some(name) => wanted_ordinal(name, g, existing),
            None => with_lowest_pending(existing, desired),
        };
        let mut ordinals = Vec::with_capacity(listed.len());
        for (ordinal, e) in listed {
            let name = format!("{}-{ordinal}", g.name);
            let state = e.map_or("not_created", |e| NameState::of(e).as_str());
            let served = e.is_some_and(|e| e.served);
            ordinals.push(OrdinalJson {
                ordinal,
                fqdn: format!("{name}.{service_fqdn}"),
                state,
                served,
                addresses: e.map_or_else(Vec::new, |e| e.addresses.iter().collect()),
                negative_ttl: (!served).then_some(self.pending_ttl),
                history: past(&name).or_else(|| e.map(NameHistory::present)),
                name,
            });
        }
        let listed_pending = ordinals.iter().filter(|o| o.state == "not_created").count();
        StatefulSetJson {
            name: g.name.to_string(),
            policy: match g.policy {
                PodManagement::OrderedReady => "OrderedReady",
                PodManagement::Parallel => "Parallel",
            },
            desired,
            ready: ready as u32,
            pending,
            pending_unlisted: pending - listed_pending as u32,
            ordinals,
        }
    }
}

/// The service's endpoints named `<sts>-<n>`, per StatefulSet name, by
/// ordinal (one endpoint per ordinal, the first one); one pass over them.
fn pods_by_statefulset<'v>(v: &'v ServiceView) -> HashMap<&'v str, Vec<(u32, EndpointView<'v>)>> {
    let mut by: HashMap<&str, Vec<(u32, EndpointView<'_>)>> = HashMap::new();
    for e in v.endpoints() {
        let ord = Ordinal::parse(e.label);
        if let Some(n) = ord.number {
            by.entry(ord.base).or_default().push((n, e));
        }
    }
    for pods in by.values_mut() {
        pods.sort_by_key(|(n, _)| *n);
        pods.dedup_by_key(|(n, _)| *n);
    }
    by
}

/// An ordinal to list, and its endpoint if it has one.
type Listed<'a, 'v> = (u32, Option<&'a EndpointView<'v>>);

/// `existing` (sorted, below `desired`) merged with the lowest
/// [`PENDING_LISTED`] ordinals below `desired` it lacks: O(existing), not
/// O(desired).
fn with_lowest_pending<'a, 'v>(
    existing: &'a [(u32, EndpointView<'v>)],
    desired: u32,
) -> Vec<Listed<'a, 'v>> {
    let mut out = Vec::with_capacity(existing.len() + PENDING_LISTED as usize);
    let mut rest = existing.iter().peekable();
    let mut pending = 0;
    let mut next = 0u32;
    while next < desired && pending < PENDING_LISTED {
        match rest.next_if(|(n, _)| *n == next) {
            Some((n, e)) => out.push((*n, Some(e))),
            None => {
                out.push((next, None));
                pending += 1;
            }
        }
        next += 1;
    }
    out.extend(rest.map(|(n, e)| (*n, Some(e))));
    out
}

/// The ordinal the `name` filter asks for, if it is one of `g`'s below its
/// replicas, with its endpoint among `existing` if it has one.
fn wanted_ordinal<'a, 'v>(
    name: &str,
    g: &Governed,
    existing: &'a [(u32, EndpointView<'v>)],
) -> Vec<Listed<'a, 'v>> {
    let ord = Ordinal::parse(name);
    let Some(n) = ord.number.filter(|&n| n < g.replicas) else {
        return Vec::new();
    };
    if !ord.base.eq_ignore_ascii_case(&g.name) {
        return Vec::new();
    }
    let e = existing
        .binary_search_by_key(&n, |(m, _)| *m)
        .ok()
        .map(|i| &existing[i].1);
    vec![(n, e)]
}
