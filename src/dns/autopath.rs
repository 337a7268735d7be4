//! Autopath: a pod's search-path walk answered in one round trip (issue #29).
//!
//! A pod's resolv.conf (`search <ns>.svc.<zone> svc.<zone> <zone>`,
//! `ndots:5`) makes its stub resolver ask every search expansion of an
//! external name before the name itself: glibc asks A and AAAA of each, six
//! NXDOMAINs and four round trips where one would do. When the first
//! expansion `X.<ns>.svc.<zone>` does not exist and its client is known to be
//! of namespace `<ns>`, this module walks the rest of the list
//! (`autopath_search`, then `X` itself) as the stub would, and answers the
//! first name that exists with a CNAME from the asked name to it followed by
//! that name's own answer, as CoreDNS's `autopath` does. When every step
//! misses (or one fails), the client gets today's answer, the NXDOMAIN of the
//! asked name, and walks on by itself. Names of our zone that exist are never
//! rewritten: autopath only ever replaces an NXDOMAIN.
//!
//! Where it differs from CoreDNS: an empty non-terminal of our zone
//! (`<x>.svc.<zone>` where `<x>` is a namespace) is passed over, as glibc and
//! Go pass over a NODATA; a name that exists without records of the type gets
//! the CNAME too (a NODATA for its target, RFC 2308 §2.2) rather than another
//! zone's SOA under the asked name; and the CNAME's TTL is at most
//! `negative_ttl`, since it rests on our earlier names not existing.
//!
//! Who the client is ([`Autopath::applies`]): a loopback client is of the
//! configured namespace ([`crate::Config::own_namespace`], a sidecar's pod);
//! any other address is of the namespace of the endpoints (and, with `pods =
//! "verified"`, the running pods) the index has at that address, when they
//! all agree. An address the index does not know, or that namespaces share,
//! gets today's answer. The look-up reads the index's published maps as a PTR
//! query does.
//!
//! A rare path, on hickory messages. Steps in our zones are answered here at
//! once; a step outside them (the bare `X`, a search domain outside the zone,
//! an ExternalName's target) needs the forwarder, so the answerer returns
//! [`Outcome::Autopath`] and the listener finishes the walk with [`complete`]
//! (TCP) or [`spawn_udp`] (UDP: on the runtime, at most
//! `forward.max_inflight` at once; beyond that today's answer goes at once).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::sync::Semaphore;

use super::forward::Forwarder;
use super::rrl::Rrl;
use super::{Answerer, DnsSettings, KeepAlive, Node, Outcome, chain};
use crate::index::SERVICE_ITSELF;
use crate::wire::{Query, fit_response, name};

/// Autopath's counters (`headless_dns_autopath_total{result}`).
#[derive(Debug, Default)]
pub struct AutopathStats {
    /// Answered from a later step of the search list, behind a CNAME.
    pub hits: AtomicU64,
    /// Every step missed or one failed: the asked name's own answer went.
    pub misses: AtomicU64,
}

/// The forwarder for steps outside our zones, and where UDP walks run.
struct Upstream {
    forwarder: Arc<Forwarder>,
    runtime: tokio::runtime::Handle,
    /// UDP walks in flight at most.
    slots: Arc<Semaphore>,
}

/// Autopath's settings, built once per configuration.
pub(super) struct Autopath {
    /// The first search entry after `{ns}` in lower-case wire labels, root
    /// excluded (`\x03svc\x07cluster\x05local`): a query ending in it, one
    /// label `<ns>` and at least one more is a candidate.
    first: Box<[u8]>,
    /// Its label count.
    first_labels: usize,
    /// The later search entries, in the pods' order.
    rest: Vec<Name>,
    /// The wire label of loopback clients' namespace, if configured.
    own_namespace: Option<Box<[u8]>>,
    upstream: Option<Upstream>,
    stats: AutopathStats,
}

/// What one step of the walk found.
enum Step {
    /// Nothing there (NXDOMAIN, or an empty non-terminal of ours): go on.
    Miss,
    /// The step failed (SERVFAIL, no answer): stop, send today's answer.
    Stop,
    /// The name exists: answer with it.
    Hit(Box<Hit>),
}

/// A name that exists, and its answer.
struct Hit {
    name: Name,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    rcode: ResponseCode,
    /// Every record is ours (the reply is authoritative).
    ours: bool,
    /// An ExternalName chain's last target, outside our zones: its records
    /// come from upstream.
    outside: Option<Name>,
}

/// How far the walk got without the forwarder.
enum Walked {
    Hit(Box<Hit>),
    Miss,
    /// A step needs the forwarder: [`Outcome::Autopath`].
    Upstream,
}

impl Autopath {
    /// Autopath for `settings`, or `None` when it is off (or its search list
    /// does not hold, which validation reports).
    pub(super) fn new(settings: &DnsSettings) -> Option<Self> {
        let dns = &settings.dns;
        if !dns.autopath {
            return None;
        }
        let zone = dns.zone.trim_end_matches('.').to_ascii_lowercase();
        let mut entries = dns.autopath_search.iter().map(|e| {
            e.trim_end_matches('.')
                .to_ascii_lowercase()
                .replace("{zone}", &zone)
        });
        let first = name::from_dotted(entries.next()?.strip_prefix("{ns}.")?)?;
        let rest = entries
            .map(|e| name::fqdn(&e))
            .collect::<Option<Vec<Name>>>()?;
        let own_namespace = settings.own_namespace.as_deref().and_then(|ns| {
            let wire = name::from_dotted(ns)?;
            Some(wire[..wire.len() - 1].into())
        });
        let first: Box<[u8]> = first[..first.len() - 1].into();
        Some(Self {
            first_labels: label_count(&first),
            first,
            rest,
            own_namespace,
            upstream: None,
            stats: AutopathStats::default(),
        })
    }

    /// Lets steps outside our zones go to `forwarder`; UDP walks run on
    /// `runtime`, `max_inflight` at once.
    pub(super) fn set_upstream(
        &mut self,
        forwarder: Arc<Forwarder>,
        runtime: tokio::runtime::Handle,
        max_inflight: usize,
    ) {
        self.upstream = Some(Upstream {
            forwarder,
            runtime,
            slots: Arc::new(Semaphore::new(max_inflight.max(1))),
        });
    }

    /// The counters.
    pub(super) fn stats(&self) -> &AutopathStats {
        &self.stats
    }

    /// True when `q` is a first search expansion `X.<ns>.<first>` and
    /// `client` is known to be of namespace `<ns>`.
    pub(super) fn applies(&self, a: &Answerer, q: &Query, client: IpAddr) -> bool {
        let n = q.labels;
        if n < self.first_labels + 2 {
            return false;
        }
        let suffix = n - self.first_labels;
        if q.labels_wire(suffix, n) != &*self.first {
            return false;
        }
        self.client_in(a, client, q.labels_wire(suffix - 1, suffix))
    }

    /// True when `client` is known to be of namespace `ns` (a wire label).
    fn client_in(&self, a: &Answerer, client: IpAddr, ns: &[u8]) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        if client.is_loopback() {
            return self.own_namespace.as_deref() == Some(ns);
        }
        let is_ns = |name: &str| {
            ns.get(1..)
                .is_some_and(|l| l.eq_ignore_ascii_case(name.as_bytes()))
        };
        let mut known = false;
        if let Some(set) = a.index.reverse(&client) {
            for t in set
                .targets()
                .iter()
                .filter(|t| t.endpoint != SERVICE_ITSELF)
            {
                if !is_ns(t.view.record.key.namespace()) {
                    return false;
                }
                known = true;
            }
        }
        match a.index.pod_ip_only_in(&client, ns) {
            Some(false) => false,
            Some(true) => true,
            None => known,
        }
    }

    /// The names the walk asks after the asked one, in order: `X` under each
    /// later search entry, then `X` itself.
    fn steps(&self, asked: &Name) -> Vec<Name> {
        let keep = (asked.num_labels() as usize).saturating_sub(self.first_labels + 1);
        let Ok(mut x) = Name::from_labels(asked.iter().take(keep)) else {
            return Vec::new();
        };
        let mut steps: Vec<Name> = self
            .rest
            .iter()
            .filter_map(|d| x.clone().append_domain(d).ok())
            .collect();
        x.set_fqdn(true);
        steps.push(x);
        steps
    }

    /// Walks the steps in our zones; stops where one needs the forwarder.
    fn walk_ours(&self, a: &Answerer, asked: &Name, qtype: RecordType) -> Walked {
        let forwards = self.upstream.is_some();
        for name in self.steps(asked) {
            match ours(a, &name, qtype) {
                None if forwards => return Walked::Upstream,
                // Outside our zones with nowhere to ask: a miss.
                None | Some(Step::Miss) => {}
                Some(Step::Stop) => return Walked::Miss,
                Some(Step::Hit(h)) if h.outside.is_some() && forwards => return Walked::Upstream,
                Some(Step::Hit(h)) => return Walked::Hit(h),
            }
        }
        Walked::Miss
    }

    /// Walks every step, asking `f` for those outside our zones.
    async fn walk_all(
        &self,
        a: &Answerer,
        f: &Forwarder,
        asked: &Name,
        qt: RecordType,
    ) -> Option<Box<Hit>> {
        for name in self.steps(asked) {
            let step = match ours(a, &name, qt) {
                Some(step) => step,
                None => upstream(f, &name, qt).await,
            };
            match step {
                Step::Miss => {}
                Step::Stop => return None,
                Step::Hit(mut h) => {
                    chase(f, &mut h, qt).await;
                    return Some(h);
                }
            }
        }
        None
    }

    fn count(&self, hit: bool) {
        let c = if hit {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Autopath for `q`, whose own answer (an NXDOMAIN) is in `out` and which
/// [`Autopath::applies`] to: the reply of the first step that exists
/// replaces `out`; [`Outcome::Autopath`] when a step needs the forwarder
/// (`out` is left as the answer to send if the walk misses). Counted in
/// `stats`, when given, from `started`.
pub(super) fn answer(
    a: &Answerer,
    ap: &Autopath,
    (packet, q): (&[u8], &Query),
    tcp: bool,
    out: &mut Vec<u8>,
    (started, stats): (Instant, Option<&super::stats::DnsStats>),
) -> Outcome {
    if let Some(s) = stats {
        s.request(tcp, Some(q.qtype));
    }
    let req = Message::from_vec(packet).ok();
    let walked = match req.as_ref().and_then(|r| r.queries.first()) {
        Some(hq) => ap.walk_ours(a, hq.name(), hq.query_type()),
        None => Walked::Miss,
    };
    let hit = match (walked, &req) {
        (Walked::Upstream, _) => return Outcome::Autopath,
        (Walked::Hit(h), Some(req)) => reply(a, req, q, h, tcp),
        _ => None,
    };
    ap.count(hit.is_some());
    if let Some(bytes) = hit {
        out.clear();
        out.extend_from_slice(&bytes);
    }
    tracing::trace!(id = q.id, qtype = q.qtype, "autopath answered");
    if let Some(s) = stats {
        s.response_packet(tcp, out, started.elapsed());
    }
    Outcome::Reply
}

/// Finishes the walk of an [`Outcome::Autopath`]: the reply to `packet`,
/// or `fallback` (the asked name's own answer) when every step misses.
/// Not counted in the query stats: the listener counts what it sends.
pub async fn complete(a: &Answerer, packet: &[u8], fallback: &[u8], tcp: bool) -> Vec<u8> {
    let Some(ap) = &a.autopath else {
        return fallback.to_vec();
    };
    let mut found = None;
    if let (Some(up), Ok(req), Ok(q)) = (
        &ap.upstream,
        Message::from_vec(packet),
        Query::parse(packet),
    ) && let Some(hq) = req.queries.first()
    {
        let (asked, qtype) = (hq.name().clone(), hq.query_type());
        found = match ap.walk_all(a, &up.forwarder, &asked, qtype).await {
            Some(h) => reply(a, &req, &q, h, tcp),
            None => None,
        };
    }
    ap.count(found.is_some());
    found.unwrap_or_else(|| fallback.to_vec())
}

/// Finishes an [`Outcome::Autopath`] of a UDP query on the runtime: the
/// reply is counted, passed through `rrl` and sent from `socket` to `src`
/// there. False when no walk can start (at the in-flight bound): the caller
/// sends `fallback` itself.
pub fn spawn_udp(
    answerer: &Arc<Answerer>,
    (packet, fallback): (&[u8], &[u8]),
    (socket, src): (&Arc<UdpSocket>, SocketAddr),
    rrl: Option<Arc<Rrl>>,
    received: Instant,
) -> bool {
    let Some(up) = answerer
        .autopath
        .as_ref()
        .and_then(|ap| ap.upstream.as_ref())
    else {
        return false;
    };
    let Ok(permit) = Arc::clone(&up.slots).try_acquire_owned() else {
        return false;
    };
    let (a, socket) = (Arc::clone(answerer), Arc::clone(socket));
    let (packet, fallback) = (packet.to_vec(), fallback.to_vec());
    up.runtime.spawn(async move {
        let _permit = permit;
        let mut bytes = complete(&a, &packet, &fallback, false).await;
        let stats = a.stats();
        stats.response_packet(false, &bytes, received.elapsed());
        if rrl.is_none_or(|r| r.admit(src.ip(), &mut bytes, stats)) {
            let _ = socket.send_to(&bytes, src);
        }
    });
    true
}

/// The number of labels in wire labels `wire` (no root label).
fn label_count(wire: &[u8]) -> usize {
    let (mut at, mut labels) = (0, 0);
    while at < wire.len() {
        at += 1 + wire[at] as usize;
        labels += 1;
    }
    labels
}

/// A query for `name`, `qtype`, as a step asks it.
fn query_packet(name: &Name, qtype: RecordType) -> Option<Vec<u8>> {
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(HQuery::query(name.clone(), qtype));
    m.to_vec().ok()
}

/// The step `name` in our zones; `None` when it is outside them.
fn ours(a: &Answerer, name: &Name, qtype: RecordType) -> Option<Step> {
    let packet = query_packet(name, qtype)?;
    let q = Query::parse(&packet).ok()?;
    a.catalog.find(&q)?;
    let mut keep = KeepAlive::Nothing;
    let found = a.find(&q, &mut keep);
    let node = match &found {
        Ok(f) => &f.node,
        Err(_) => return Some(Step::Stop),
    };
    match node {
        Node::Missing { .. } | Node::Empty => return Some(Step::Miss),
        Node::Service { view, .. } if view.cname().is_some() && chain::chases(u16::from(qtype)) => {
            let c = chain::follow(a, name.clone(), qtype);
            return Some(Step::Hit(Box::new(Hit {
                name: name.clone(),
                answers: c.answers,
                authorities: c.authorities,
                additionals: Vec::new(),
                rcode: c.rcode,
                ours: true,
                outside: c.outside,
            })));
        }
        _ => {}
    }
    let mut buf = Vec::new();
    a.write_found(&packet, &q, &found, u16::MAX as usize, &mut buf);
    let Ok(m) = Message::from_vec(&buf) else {
        return Some(Step::Stop);
    };
    Some(Step::Hit(Box::new(Hit {
        name: name.clone(),
        rcode: m.metadata.response_code,
        answers: m.answers,
        authorities: m.authorities,
        additionals: m.additionals,
        ours: true,
        outside: None,
    })))
}

/// The step `name` upstream: NXDOMAIN is a miss, any other failure stops.
async fn upstream(f: &Forwarder, name: &Name, qtype: RecordType) -> Step {
    let Some(m) = ask(f, name, qtype).await else {
        return Step::Stop;
    };
    match m.metadata.response_code {
        ResponseCode::NXDomain => Step::Miss,
        ResponseCode::NoError => Step::Hit(Box::new(Hit {
            name: name.clone(),
            rcode: ResponseCode::NoError,
            answers: m.answers,
            authorities: m.authorities,
            additionals: m.additionals,
            ours: false,
            outside: None,
        })),
        _ => Step::Stop,
    }
}

/// Completes an ExternalName chain whose last target is outside our zones
/// with that target's records from upstream, and its rcode (RFC 6604).
async fn chase(f: &Forwarder, h: &mut Hit, qtype: RecordType) {
    let Some(target) = h.outside.take() else {
        return;
    };
    h.ours = false;
    match ask(f, &target, qtype).await {
        Some(m) => {
            h.rcode = m.metadata.response_code;
            h.answers.extend(m.answers);
            h.authorities = m.authorities;
        }
        None => h.rcode = ResponseCode::ServFail,
    }
}

/// The forwarder's whole answer (as over TCP: the client's size limit is
/// applied to the reply) for `name`, `qtype`.
async fn ask(f: &Forwarder, name: &Name, qtype: RecordType) -> Option<Message> {
    let packet = query_packet(name, qtype)?;
    let bytes = f.answer(&packet, None, true).await?;
    Message::from_vec(&bytes).ok()
}

/// The reply to `req`: a CNAME from the asked name to the step that hit,
/// then that step's answer, cut to what the client takes.
fn reply(a: &Answerer, req: &Message, q: &Query, hit: Box<Hit>, tcp: bool) -> Option<Vec<u8>> {
    let question = req.queries.first()?.clone();
    let cap = a.settings.dns.negative_ttl;
    let ttl = hit
        .answers
        .first()
        .or_else(|| {
            hit.authorities
                .iter()
                .find(|r| r.record_type() == RecordType::SOA)
        })
        .map_or(cap, |r| r.ttl.min(cap));
    let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata.authoritative = hit.ours;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = a.settings.forward;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    resp.metadata.response_code = hit.rcode;
    let cname = RData::CNAME(CNAME(hit.name));
    resp.add_answer(Record::from_rdata(question.name().clone(), ttl, cname));
    resp.add_query(question);
    resp.add_answers(hit.answers);
    resp.add_authorities(hit.authorities);
    resp.add_additionals(hit.additionals);
    let max_udp = a.settings.dns.max_udp_payload;
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(max_udp);
        resp.set_edns(e);
    }
    let mut bytes = resp.to_vec().ok()?;
    fit_response(&mut bytes, q.max_response(tcp, max_udp));
    Some(bytes)
}
