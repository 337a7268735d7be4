//! Forwarding: names outside our zones go to upstream resolvers.
//!
//! This is the standalone-resolver mode (a laptop with a kubeconfig: cluster
//! names from the watch, everything else upstream). It uses hickory-resolver,
//! whose bounded cache honours TTLs and negative TTLs (RFC 2308) and which
//! retries over TCP on truncation. It is a rare path by design: UDP threads
//! hand the packet to a bounded queue and go back to answering cluster names;
//! a full queue sheds load with SERVFAIL instead of growing.
//!
//! With serve-stale on ([`Forwarder::with_stale`], `[forward] stale_max_s`),
//! the last good answers are kept past their TTL (`stale`) and served when
//! every upstream fails, at the latest when `timeout_ms` runs out.

mod stale;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{RData, Record};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, trace};

use crate::config::Upstream;
use crate::error::{Error, Result};

/// A query handed from a UDP thread to the forwarder.
pub struct UdpForward {
    /// The query packet.
    pub packet: Vec<u8>,
    /// Our CNAME chain to complete upstream ([`crate::dns::Outcome::Chase`]).
    pub chain: Option<Vec<u8>>,
    /// Who asked.
    pub src: SocketAddr,
    /// The socket to answer on.
    pub socket: Arc<UdpSocket>,
    /// Whose counters the response goes to.
    pub answerer: Arc<super::Answerer>,
    /// The UDP listener's response-rate limiter, if on.
    pub rrl: Option<Arc<super::rrl::Rrl>>,
    /// When the query arrived (for the duration histogram).
    pub received: std::time::Instant,
}

/// Upstream addresses from `forward.upstreams`: each entry's address, or the
/// `nameserver` lines of the resolv.conf it names (read now).
pub fn upstreams(entries: &[String]) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for e in entries {
        match Upstream::parse(e)? {
            Upstream::Address(sa) => out.push(sa),
            Upstream::ResolvConf(path) => {
                // Reported as a configuration problem, as a bad entry is.
                let text = std::fs::read_to_string(&path)
                    .map_err(|_| Error::Config(format!("cannot read {}", path.display())))?;
                out.extend(nameservers(&text));
            }
        }
    }
    Ok(out)
}

/// The `nameserver` addresses of a resolv.conf, port 53.
fn nameservers(resolv_conf: &str) -> impl Iterator<Item = SocketAddr> + '_ {
    resolv_conf.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            return None;
        }
        let ip = words.next()?.parse::<IpAddr>().ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

/// Forwarding counters, if forwarding is on.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Queries forwarded.
    pub requests: std::sync::atomic::AtomicU64,
    /// Upstream failures.
    pub errors: std::sync::atomic::AtomicU64,
    /// Failures answered from an expired answer (serve-stale).
    pub stale: std::sync::atomic::AtomicU64,
}

/// The forwarder: a caching hickory resolver plus counters.
pub struct Forwarder {
    resolver: TokioResolver,
    stats: Arc<ForwardStats>,
    max_udp: u16,
    inflight: Arc<Semaphore>,
    /// Upstream timeout: the latest a stale answer goes out.
    timeout: Duration,
    /// The last good answers, when serve-stale is on.
    stale: Option<stale::StaleCache>,
    /// Capacity of the stale cache (the resolver cache's size).
    cache_size: u64,
    /// The in-flight bound (`inflight`'s permits).
    max_inflight: u32,
}

impl Forwarder {
    /// A forwarder to `upstreams`; `cache_size` answers at most.
    pub fn new(
        upstreams: &[SocketAddr],
        timeout: Duration,
        cache_size: u64,
        max_inflight: usize,
        max_udp: u16,
    ) -> Result<Self> {
        let mut config = ResolverConfig::from_parts(None, vec![], vec![]);
        for u in upstreams {
            let mut ns = NameServerConfig::udp_and_tcp(u.ip());
            for c in &mut ns.connections {
                c.port = u.port();
            }
            ns.trust_negative_responses = true;
            config.add_name_server(ns);
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.cache_size = cache_size;
        opts.ndots = 0;
        opts.preserve_intermediates = true;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let mut builder = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        );
        *builder.options_mut() = opts;
        let resolver = builder
            .build()
            .map_err(|e| Error::Config(format!("forward: cannot build the resolver: {e}")))?;
        Ok(Self {
            resolver,
            stats: Arc::new(ForwardStats::default()),
            max_udp,
            inflight: Arc::new(Semaphore::new(max_inflight.clamp(1, u32::MAX as usize))),
            timeout,
            stale: None,
            cache_size,
            max_inflight: max_inflight.clamp(1, u32::MAX as usize) as u32,
        })
    }

    /// Turns serve-stale on (RFC 8767): when every upstream fails, a
    /// positive answer that expired at most `max_stale` ago is served with
    /// TTL `ttl`, at the latest when the upstream timeout runs out. Each
    /// query still asks upstream first, so answers are fresh again as soon
    /// as it is back. A zero `max_stale` leaves it off.
    pub fn with_stale(mut self, max_stale: Duration, ttl: u32) -> Self {
        self.stale = (!max_stale.is_zero())
            .then(|| stale::StaleCache::new(max_stale, ttl, self.cache_size as usize));
        self
    }

    /// Waits (at most `limit`) until no forwarded query is in flight: a
    /// stopping engine (a shutdown, a hand-over) sends its forwarded answers
    /// before the process exits.
    pub async fn settle(&self, limit: Duration) {
        let all = self.inflight.acquire_many(self.max_inflight);
        let _ = tokio::time::timeout(limit, all).await;
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> Arc<ForwardStats> {
        Arc::clone(&self.stats)
    }

    /// Resolves `packet` upstream (waiting for an in-flight slot) and returns
    /// the response to send; with `chain` (our response holding an
    /// ExternalName's CNAMEs), resolves the last CNAME's target instead and
    /// appends its records to the chain.
    pub async fn answer(&self, packet: &[u8], chain: Option<&[u8]>, tcp: bool) -> Option<Vec<u8>> {
        let _permit = self.inflight.acquire().await.ok()?;
        self.resolve(packet, chain, tcp).await
    }

    async fn resolve(&self, packet: &[u8], chain: Option<&[u8]>, tcp: bool) -> Option<Vec<u8>> {
        let query = Message::from_vec(packet).ok()?;
        let mut q = query.queries.first()?.clone();
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut resp = match chain.map(Message::from_vec) {
            Some(Ok(ours)) => {
                // Ask upstream for the last CNAME's target.
                let last = ours.answers.iter().rev().find_map(|r| match &r.data {
                    RData::CNAME(c) => Some(c.0.clone()),
                    _ => None,
                })?;
                q = Query::query(last, q.query_type());
                ours
            }
            _ => {
                let mut resp =
                    Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
                resp.metadata.recursion_desired = query.metadata.recursion_desired;
                resp.add_query(q.clone());
                resp
            }
        };
        resp.metadata.recursion_available = true;
        resp.metadata.checking_disabled = query.metadata.checking_disabled;
        let limit = match (&query.edns, tcp) {
            (_, true) => u16::MAX as usize,
            (Some(e), false) => e.max_payload().clamp(512, self.max_udp) as usize,
            (None, false) => 512,
        };
        if query.edns.is_some() && resp.edns.is_none() {
            let mut e = Edns::new();
            e.set_max_payload(self.max_udp);
            resp.set_edns(e);
        }
        match self.lookup(&q).await {
            Ok(lookup) => {
                let answers: Vec<Record> = lookup.answers().to_vec();
                trace!(name = %q.name(), answers = answers.len(), "forwarded");
                if let Some(st) = &self.stale {
                    st.remember(&q, &answers, lookup.valid_until());
                }
                resp.add_answers(answers);
            }
            Err(Some(e)) if e.is_no_records_found() => {
                resp.metadata.response_code = if e.is_nx_domain() {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                if let Some(soa) = e.into_soa() {
                    resp.authorities.clear();
                    resp.add_authority(soa.into_record_of_rdata());
                }
            }
            Err(e) => {
                match &e {
                    Some(e) => debug!(name = %q.name(), error = %e, "upstream failed"),
                    None => debug!(name = %q.name(), "upstream timed out"),
                }
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                match self.stale.as_ref().and_then(|st| st.recall(&q)) {
                    Some(answers) => {
                        self.stats.stale.fetch_add(1, Ordering::Relaxed);
                        trace!(name = %q.name(), "served stale");
                        resp.add_answers(answers);
                    }
                    None => resp.metadata.response_code = ResponseCode::ServFail,
                }
            }
        }
        let mut bytes = resp.to_vec().ok()?;
        // What fits, whole records in order, with TC (as our own answers).
        crate::wire::fit_response(&mut bytes, limit);
        Some(bytes)
    }

    /// Asks upstream (or hickory's cache). With serve-stale on, the wait is
    /// cut at the upstream timeout (`None`), so a stale answer is never
    /// later than a SERVFAIL would have been.
    async fn lookup(&self, q: &Query) -> std::result::Result<Lookup, Option<NetError>> {
        let lookup = self.resolver.lookup(q.name().clone(), q.query_type());
        if self.stale.is_none() {
            return lookup.await.map_err(Some);
        }
        match tokio::time::timeout(self.timeout, lookup).await {
            Ok(r) => r.map_err(Some),
            Err(_) => Err(None),
        }
    }

    /// Serves forwarded UDP queries from the queue until it closes.
    pub async fn serve_udp(self: Arc<Self>, mut rx: mpsc::Receiver<UdpForward>) {
        while let Some(req) = rx.recv().await {
            // Take the slot before spawning: when upstreams are slow the queue
            // fills and UDP threads answer SERVFAIL instead of piling up tasks.
            let Ok(permit) = Arc::clone(&self.inflight).acquire_owned().await else {
                return;
            };
            let me = Arc::clone(&self);
            tokio::spawn(async move {
                let _permit = permit;
                let stats = req.answerer.stats();
                match me.resolve(&req.packet, req.chain.as_deref(), false).await {
                    Some(mut bytes) => {
                        stats.response_packet(false, &bytes, req.received.elapsed());
                        let rrl = req.rrl.as_deref();
                        if rrl.is_none_or(|r| r.admit(req.src.ip(), &mut bytes, stats)) {
                            let _ = req.socket.send_to(&bytes, req.src);
                        }
                    }
                    None => stats.dropped(),
                }
            });
        }
    }
}

/// A SERVFAIL for a query we cannot forward now (queue full): id, RD and the
/// question echoed.
pub fn servfail(packet: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(packet).ok()?;
    let mut resp = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = ResponseCode::ServFail;
    resp.add_queries(query.queries.iter().cloned());

    resp.to_vec().ok()
}
