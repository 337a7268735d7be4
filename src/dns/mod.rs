//! DNS: from a query packet to a response packet, and the listeners.
//!
//! [`Answerer::answer`] is the whole query path, in the layers hickory's
//! server has: parse (`wire`), admit and route to a zone (`catalog`), then the
//! zone's own answerer walks the name to a `Node` (`cluster` for the cluster
//! domain, `reverse` for the reverse zones) and picks its records for the
//! query type; the response is assembled into a reused buffer from
//! pre-encoded sections and records written from the view's packed arrays.
//! It allocates nothing, takes no lock a writer holds for longer than a
//! pointer swap, and logs nothing above trace.
//! Two rare paths work on hickory messages and allocate: ExternalName
//! chains (`chain`) and, when `[dns] autopath` is on, the search-path walk
//! that may replace an NXDOMAIN (`autopath`); with autopath off it costs the
//! query path one comparison of the rcode.

mod autopath;
mod catalog;
mod chain;
pub mod cluster;
pub mod forward;
pub mod handoff;
pub mod reverse;
pub mod rrl;
pub mod server;
pub mod stats;
mod udp;
pub mod zonefile;

use std::net::IpAddr;
use std::sync::Arc;

pub use autopath::{AutopathStats, complete as autopath_complete, spawn_udp as autopath_spawn_udp};

pub use crate::config::{AnyMode, DnsSettings, PodsMode};
use crate::index::{AddrRecords, Index, PtrRecords, PtrSet, ServiceAddrs, ServiceView, SrvSection};
use crate::wire::{self, Part, Query, Rcode, Reject, Response, RrSet, Soa, SoaTemplate};
use catalog::Catalog;
use cluster::ClusterZone;

/// What the listener does with the packet after [`Answerer::answer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send `out`.
    Reply,
    /// Send nothing.
    Drop,
    /// Outside our zones with forwarding on: hand the packet to the forwarder.
    Forward,
    /// `out` holds our CNAME chain (an ExternalName) whose last target is
    /// outside our zones: the forwarder completes it (`Forwarder::chase`).
    Chase,
    /// A zone transfer or a TSIG-signed request: hand the packet to
    /// [`Answerer::transfers`] (see [`handoff`]).
    Transfer,
    /// Autopath needs the forwarder for a later step of the client's search
    /// list: finish with [`autopath_complete`] or [`autopath_spawn_udp`];
    /// `out` holds the answer to send if every step misses.
    Autopath,
}

/// Keeps what an answer borrows from (a service's view, the names of an
/// address) alive while the response is written.
#[derive(Default)]
pub(crate) enum KeepAlive {
    #[default]
    Nothing,
    View(Arc<ServiceView>),
    Ptr(PtrSet),
}

/// Where a name led, before the query type is looked at.
pub(crate) enum Node<'a> {
    /// The zone apex.
    Apex,
    /// A name that exists but owns no records (an empty non-terminal).
    Empty,
    /// A name with pre-encoded A and AAAA sets.
    Addresses(&'a RrSet, &'a RrSet),
    /// An endpoint name: its A and AAAA records.
    Endpoint {
        /// The A records.
        v4: AddrRecords<'a>,
        /// The AAAA records.
        v6: AddrRecords<'a>,
    },
    /// `dns-version.<zone>`.
    Version,
    /// A service name.
    Service {
        /// Its view.
        view: &'a ServiceView,
        /// Its A records.
        v4: ServiceAddrs<'a>,
        /// Its AAAA records.
        v6: ServiceAddrs<'a>,
    },
    /// An SRV name: its records and their glue.
    Srv {
        /// The SRV records.
        answer: SrvSection<'a>,
        /// Their targets' addresses.
        glue: SrvSection<'a>,
    },
    /// A reverse name: the names it points at.
    Ptr(PtrRecords<'a>),
    /// A synthesized pod address record.
    PodAddress(IpAddr),
    /// Nothing here (NXDOMAIN).
    Missing {
        /// How long resolvers may cache that (seconds, capped by the zone's).
        negative_ttl: u32,
    },
}

/// A query admitted to a zone and the node its name led to.
pub(crate) struct Found<'a> {
    /// Position in the catalog (0 = the cluster zone).
    zone: usize,
    /// Labels left of the zone apex.
    rel: usize,
    node: Node<'a>,
}

/// An answer section and, for SRV, its glue.
pub(crate) type Records<'a> = (Part<'a>, Option<Part<'a>>);

/// The query path. Cheap to share (`Arc`) across listener threads.
pub struct Answerer {
    index: Index,
    settings: DnsSettings,
    catalog: Catalog,
    cluster: ClusterZone,
    soa: SoaTemplate,
    /// The RFC 8482 answer to ANY.
    hinfo: RrSet,
    stats: stats::DnsStats,
    /// Zone transfers, when `[transfer]` allows any (else AXFR/IXFR are
    /// REFUSED), and NOTIFYs, when following a primary.
    transfers: Option<Arc<dyn handoff::TransferService>>,
    /// Whether zone transfers and signed queries go to `transfers`.
    serves_transfers: bool,
    /// Whether NOTIFY messages go to `transfers` (else NOTIMP).
    takes_notify: bool,
    /// Set while a followed zone is past its SOA expire: names get SERVFAIL.
    expired: Arc<std::sync::atomic::AtomicBool>,
    /// Server-side search-path completion, when `[dns] autopath` is on.
    autopath: Option<autopath::Autopath>,
}

impl Answerer {
    /// Builds the answerer; zone names are assumed validated by the config.
    pub fn new(index: Index, settings: DnsSettings) -> Self {
        let zone = settings.dns.zone.trim_end_matches('.').to_ascii_lowercase();
        Self {
            catalog: Catalog::new(&zone, &settings.dns),
            cluster: ClusterZone::new(&zone, &settings.dns),
            soa: catalog::soa_template(&zone),
            hinfo: wire::rrset::any_hinfo(settings.dns.ttl),
            index,
            stats: stats::DnsStats::default(),
            transfers: None,
            serves_transfers: false,
            takes_notify: false,
            expired: Arc::default(),
            autopath: autopath::Autopath::new(&settings),
            settings,
        }
    }

    /// Lets autopath ask `forwarder` for the steps outside our zones (the
    /// bare name last of all); its UDP walks run on `runtime`,
    /// `max_inflight` at once. Without it those steps are misses.
    pub fn with_autopath_upstream(
        mut self,
        forwarder: Arc<forward::Forwarder>,
        runtime: tokio::runtime::Handle,
        max_inflight: usize,
    ) -> Self {
        if let Some(ap) = &mut self.autopath {
            ap.set_upstream(forwarder, runtime, max_inflight);
        }
        self
    }

    /// Autopath's counters, when it is on.
    pub fn autopath_stats(&self) -> Option<&AutopathStats> {
        self.autopath.as_ref().map(autopath::Autopath::stats)
    }

    /// Answers SERVFAIL for our zones' names while `expired` is set (a
    /// followed zone past its SOA expire, as any secondary).
    pub fn with_expiry(mut self, expired: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.expired = expired;
        self
    }

    /// Hands zone transfers and TSIG-signed requests to `service`.
    pub fn with_transfers(self, service: Arc<dyn handoff::TransferService>) -> Self {
        self.with_handoff(service, true, false)
    }

    /// Hands `service` zone transfers and TSIG-signed requests when
    /// `transfers`, and NOTIFY messages when `notify`.
    pub fn with_handoff(
        mut self,
        service: Arc<dyn handoff::TransferService>,
        transfers: bool,
        notify: bool,
    ) -> Self {
        self.transfers = Some(service);
        self.serves_transfers = transfers;
        self.takes_notify = notify;
        self
    }

    /// The zone transfer service, if any.
    pub fn transfers(&self) -> Option<&Arc<dyn handoff::TransferService>> {
        self.transfers.as_ref()
    }

    /// The index this answerer reads.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The settings.
    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// Query counters.
    pub fn stats(&self) -> &stats::DnsStats {
        &self.stats
    }

    /// Answers one query packet into `out` (cleared first).
    pub fn answer(&self, packet: &[u8], tcp: bool, out: &mut Vec<u8>) -> Outcome {
        self.answer_received(packet, tcp, out, std::time::Instant::now())
    }

    /// [`Answerer::answer`] for a packet received at `started`: its duration
    /// counts from then. The UDP threads read the clock once per batch, so a
    /// query's duration includes its wait behind the batch's earlier ones
    /// (its reply leaves with theirs), and a query costs one clock read.
    #[inline]
    pub fn answer_received(
        &self,
        packet: &[u8],
        tcp: bool,
        out: &mut Vec<u8>,
        started: std::time::Instant,
    ) -> Outcome {
        self.answer_counted(packet, (tcp, None), out, started, true)
    }

    /// [`Answerer::answer_received`] for a query from `client`: what the
    /// listeners call, so that autopath can tell the client's namespace.
    #[inline]
    pub fn answer_from(
        &self,
        packet: &[u8],
        (tcp, client): (bool, IpAddr),
        out: &mut Vec<u8>,
        started: std::time::Instant,
    ) -> Outcome {
        self.answer_counted(packet, (tcp, Some(client)), out, started, true)
    }

    /// [`Answerer::answer`] without counting the query in the stats: for a
    /// signed query the transfer service answers through this and then
    /// signs, while the listener counts the signed reply it sends.
    pub fn answer_uncounted(&self, packet: &[u8], tcp: bool, out: &mut Vec<u8>) -> Outcome {
        self.answer_counted(packet, (tcp, None), out, std::time::Instant::now(), false)
    }

    #[inline(always)]
    fn answer_counted(
        &self,
        packet: &[u8],
        (tcp, client): (bool, Option<IpAddr>),
        out: &mut Vec<u8>,
        started: std::time::Instant,
        count: bool,
    ) -> Outcome {
        let stats = count.then_some(&self.stats);
        let q = match Query::parse(packet) {
            Ok(q) => q,
            Err((Reject::Drop, _)) => {
                if let Some(s) = stats {
                    s.dropped();
                }
                return Outcome::Drop;
            }
            Err((Reject::NotImp, _)) if self.takes_notify && handoff::is_notify(packet) => {
                return Outcome::Transfer;
            }
            Err((reject, id)) => {
                let rcode = if reject == Reject::NotImp {
                    Rcode::NotImp
                } else {
                    Rcode::FormErr
                };
                wire::write_error_header(out, packet, id, rcode);
                if let Some(s) = stats {
                    s.record(tcp, None, rcode, false, started.elapsed());
                }
                return Outcome::Reply;
            }
        };
        let transfer = matches!(q.qtype, wire::qtype::AXFR | wire::qtype::IXFR);
        if self.serves_transfers && (q.signed || transfer) {
            // Counted here; its response where the listener sends it.
            if let Some(s) = stats {
                s.request(tcp, Some(q.qtype));
            }
            return Outcome::Transfer;
        }
        if self.settings.forward && q.qclass == 1 && self.catalog.find(&q).is_none() {
            // Counted here; its response where the forwarder's answer is sent.
            if let Some(s) = stats {
                s.request(tcp, Some(q.qtype));
            }
            return Outcome::Forward;
        }
        let mut keep = KeepAlive::Nothing;
        let found = self.find(&q, &mut keep);
        // An ExternalName (a CNAME) is followed on the rare chain path.
        if let Ok(Found {
            node: Node::Service { view: v, .. },
            ..
        }) = &found
            && v.cname().is_some()
            && chain::chases(q.qtype)
        {
            return chain::answer(self, packet, &q, tcp, out, (started, stats));
        }
        let limit = q.max_response(tcp, self.settings.dns.max_udp_payload);
        let rcode = self.write_found(packet, &q, &found, limit, out);
        // Autopath acts only on an NXDOMAIN: with it off, this is the branch.
        if rcode == Rcode::NxDomain
            && let Some(ap) = &self.autopath
            && let Some(client) = client
            && ap.applies(self, &q, client)
        {
            return autopath::answer(self, ap, (packet, &q), tcp, out, (started, stats));
        }
        let truncated = out.get(2).is_some_and(|f| f & 0x02 != 0);
        tracing::trace!(
            id = q.id,
            qtype = q.qtype,
            rcode = rcode.code(),
            tcp,
            "answered"
        );
        if let Some(s) = stats {
            s.record(tcp, Some(q.qtype), rcode, truncated, started.elapsed());
        }
        Outcome::Reply
    }

    /// Writes the response to `q` into `out` without following CNAMEs
    /// (the chain path's view of one link); returns its rcode.
    fn write_plain(&self, packet: &[u8], q: &Query, limit: usize, out: &mut Vec<u8>) -> Rcode {
        let mut keep = KeepAlive::Nothing;
        let found = self.find(q, &mut keep);
        self.write_found(packet, q, &found, limit, out)
    }

    /// Writes the response for a found node (or a refusal) into `out`.
    fn write_found(
        &self,
        packet: &[u8],
        q: &Query,
        found: &Result<Found<'_>, Rcode>,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Rcode {
        let response = match found {
            Ok(found) => self.respond(q, found),
            Err(rcode) => Response::code(*rcode),
        };
        let max_udp = self.settings.dns.max_udp_payload;
        wire::write_response(out, packet, q, &response, limit, max_udp);
        response.rcode
    }

    /// Admits the query to one of our zones (or refuses it with a response
    /// code) and walks its name there.
    fn find<'a>(&'a self, q: &'a Query, keep: &'a mut KeepAlive) -> Result<Found<'a>, Rcode> {
        let zone = catalog::admit(self, q)?;
        let rel = q.labels - self.catalog.labels(zone);
        let node = if zone == 0 {
            cluster::walk(self, q, rel, keep)
        } else if rel == 0 {
            Node::Apex
        } else {
            reverse::walk(self, q, keep)
        };
        Ok(Found { zone, rel, node })
    }

    /// The response for a found node: its records of the query type, else
    /// NODATA; NXDOMAIN for a missing name. Negative answers carry the SOA
    /// (RFC 2308 §2.1, §2.2).
    fn respond<'a>(&'a self, q: &Query, found: &'a Found<'a>) -> Response<'a> {
        let negative_ttl = self.settings.dns.negative_ttl;
        if let Node::Missing { negative_ttl: ttl } = found.node {
            let neg = ttl.min(negative_ttl);
            return Response {
                authority: Some(Part::Soa(self.soa(q, found, neg, neg))),
                aa: true,
                ..Response::code(Rcode::NxDomain)
            };
        }
        let records = match &found.node {
            Node::Apex => catalog::apex(self, q, found),
            Node::Ptr(ptrs) => reverse::records(self, ptrs, q.qtype),
            node => cluster::records(self, node, q.qtype),
        };
        match records {
            Some((answer, additional)) => Response {
                answer: Some(answer),
                additional,
                aa: true,
                ..Response::code(Rcode::NoError)
            },
            None => Response {
                authority: Some(Part::Soa(self.soa(q, found, negative_ttl, negative_ttl))),
                aa: true,
                ..Response::code(Rcode::NoError)
            },
        }
    }

    /// The SOA of the found zone, owned by its apex in the question.
    fn soa(&self, q: &Query, found: &Found<'_>, ttl: u32, minimum: u32) -> Soa<'_> {
        Soa {
            template: &self.soa,
            owner_at: q.packet_offset_of_label(found.rel),
            in_zone: found.zone == 0,
            serial: self.index.serial(),
            ttl,
            minimum,
        }
    }

    /// The RFC 8482 answer to ANY, for a name that has records.
    fn hinfo(&self) -> Option<Records<'_>> {
        Some((Part::Encoded(self.hinfo.borrowed()), None))
    }
}

/// `set` as an answer, unless it is empty.
fn non_empty(set: wire::RrSetRef<'_>) -> Option<Records<'_>> {
    (set.count > 0).then_some((Part::Encoded(set), None))
}
