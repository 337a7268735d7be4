//! DNS: from a query packet to a response packet, and the listeners.
//!
//! [`Answerer::answer`] is the whole query path: parse (`wire`), find the zone,
//! walk the name (`cluster`, `reverse`), copy pre-encoded sections (`records`)
//! into a reused buffer. It allocates nothing, takes no lock a writer holds for
//! longer than a pointer swap, and logs nothing above trace. hickory-proto is
//! used for encoding when the index changes, never per query.

pub mod cluster;
pub mod forward;
pub mod handoff;
pub mod records;
pub mod reverse;
pub mod rrl;
pub mod server;
pub mod stats;
pub mod wire;
pub mod zonefile;

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::{Name, RecordType};

use crate::index::addrs::Addrs;
use crate::index::{Index, PtrSet, PtrTarget, Rr, ServiceView, Srv};
use records::{RrSet, Sections};
use wire::{Part, Query, Reject, Reply, Soa, SoaTemplate, qtype, rcode};

/// How `pods` records (`1-2-3-4.<ns>.pod.<zone>`) are answered, as in CoreDNS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PodsMode {
    /// Never: NXDOMAIN.
    Disabled,
    /// Echo the address in the name without checking.
    Insecure,
    /// Only if a pod with that address exists in that namespace.
    Verified,
}

/// How ANY queries are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnyMode {
    /// RFC 8482 §4.2: one synthesized HINFO record.
    Hinfo,
    /// REFUSED.
    Refuse,
}

/// What the answerer needs to know besides the index.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    /// Cluster domain, lower-case, no trailing dot.
    pub zone: String,
    /// Reverse zones we are authoritative for (`in-addr.arpa`, `ip6.arpa`, or narrower).
    pub reverse_zones: Vec<String>,
    /// TTL of positive answers (seconds).
    pub ttl: u32,
    /// Negative TTL: SOA MINIMUM in NXDOMAIN/NODATA answers (seconds).
    pub negative_ttl: u32,
    /// Negative TTL for a StatefulSet pod name that is about to exist (seconds).
    pub pending_negative_ttl: u32,
    /// `pods` records mode.
    pub pods: PodsMode,
    /// ANY handling.
    pub any: AnyMode,
    /// Largest UDP response we send and advertise in OPT.
    pub max_udp_payload: u16,
    /// Addresses of `ns.dns.<zone>` (the NS target); empty: no glue.
    pub nameserver_ips: Vec<IpAddr>,
    /// Names outside our zones are forwarded (else REFUSED).
    pub forward: bool,
}

/// What the listener does with the packet after [`Answerer::answer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send `out`.
    Reply,
    /// Send nothing.
    Drop,
    /// Outside our zones with forwarding on: hand the packet to the forwarder.
    Forward,
    /// A zone transfer or a TSIG-signed request: hand the packet to
    /// [`Answerer::transfers`] (see [`handoff`]).
    Transfer,
}

/// A zone we are authoritative for, as matched against question names.
#[derive(Debug)]
struct ZoneName {
    /// Lower-case wire format, root label included.
    wire: Box<[u8]>,
    /// Number of labels (root excluded).
    labels: usize,
    /// Answer to `<apex> NS`, with glue.
    ns: Sections,
}

/// Keeps whatever an answer borrows from alive while it is written.
#[derive(Default)]
pub(crate) enum Hold {
    #[default]
    Nothing,
    View(Arc<ServiceView>),
    Ptr(PtrSet),
}

/// Where a name led, before the query type is looked at.
pub(crate) enum Node<'a> {
    /// The zone apex (index into the zone list; 0 = cluster zone).
    Apex,
    /// A name that exists but owns no records (an empty non-terminal).
    Empty,
    /// A name with pre-encoded address records.
    Addresses(&'a RrSet, &'a RrSet),
    /// An endpoint name: its addresses.
    Endpoint(Addrs<'a>),
    /// `dns-version.<zone>`.
    Version,
    /// A service name.
    Service(&'a ServiceView),
    /// An SRV name.
    Srv(Srv<'a>),
    /// A reverse name: the names it points at.
    Ptr(&'a [PtrTarget]),
    /// A synthesized pod address record.
    PodAddress(IpAddr),
    /// Nothing here; the negative TTL to use.
    Missing(u32),
}

/// The query path. Cheap to share (`Arc`) across listener threads.
pub struct Answerer {
    index: Index,
    settings: DnsSettings,
    zones: Vec<ZoneName>,
    soa: SoaTemplate,
    ns_host: (RrSet, RrSet),
    version: RrSet,
    hinfo: RrSet,
    stats: stats::DnsStats,
    /// Zone transfers, when `[transfer]` allows any (else AXFR/IXFR are REFUSED).
    transfers: Option<Arc<dyn handoff::TransferService>>,
}

fn wire_name(name: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    out.into()
}

impl Answerer {
    /// Builds the answerer; zone names are assumed validated by the config.
    pub fn new(index: Index, settings: DnsSettings) -> Self {
        let zone = settings.zone.trim_end_matches('.').to_ascii_lowercase();
        let ns_target = format!("ns.dns.{zone}");
        let ns_name = records::name(&ns_target).unwrap_or_else(Name::root);
        let mut zones = Vec::new();
        let mut names = vec![zone.clone()];
        let mut reverse: Vec<String> = settings
            .reverse_zones
            .iter()
            .map(|z| z.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        // Longest (most specific) reverse zone first.
        reverse.sort_by_key(|z| std::cmp::Reverse(z.split('.').count()));
        names.extend(reverse);
        for z in &names {
            let apex = records::name(z).unwrap_or_else(Name::root);
            let ns_record = hickory_proto::rr::Record::from_rdata(
                apex.clone(),
                settings.ttl,
                hickory_proto::rr::RData::NS(hickory_proto::rr::rdata::NS(ns_name.clone())),
            );
            let glue = settings
                .nameserver_ips
                .iter()
                .map(|ip| records::address(&ns_name, settings.ttl, *ip))
                .collect();
            zones.push(ZoneName {
                wire: wire_name(z),
                labels: z.split('.').filter(|l| !l.is_empty()).count(),
                ns: records::encode(&apex, RecordType::NS, vec![ns_record], glue),
            });
        }
        let mut soa_names = Vec::new();
        soa_names.extend_from_slice(&wire_name(&ns_target));
        soa_names.extend_from_slice(&wire_name(&format!("hostmaster.{zone}")));
        let ns_host = records::address_sets(&ns_name, settings.ttl, &settings.nameserver_ips);
        let version_owner =
            records::name(&format!("dns-version.{zone}")).unwrap_or_else(Name::root);
        Self {
            version: records::version_set(&version_owner),
            hinfo: records::any_hinfo(&Name::root(), settings.ttl),
            ns_host,
            soa: SoaTemplate {
                names: soa_names.into(),
                in_zone: [
                    b"\x02ns\x03dns".as_slice().into(),
                    b"\x0ahostmaster".as_slice().into(),
                ],
                timers: [7200, 1800, 86400],
            },
            zones,
            index,
            settings,
            stats: stats::DnsStats::default(),
            transfers: None,
        }
    }

    /// Hands zone transfers and TSIG-signed requests to `service`.
    pub fn with_transfers(mut self, service: Arc<dyn handoff::TransferService>) -> Self {
        self.transfers = Some(service);
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
        let started = std::time::Instant::now();
        let q = match Query::parse(packet) {
            Ok(q) => q,
            Err((Reject::Drop, _)) => {
                self.stats.dropped();
                return Outcome::Drop;
            }
            Err((reject, id)) => {
                let rc = if reject == Reject::NotImp {
                    rcode::NOTIMP
                } else {
                    rcode::FORMERR
                };
                wire::write_error_header(out, packet, id, rc);
                self.stats
                    .record(tcp, None, rc as u16, false, started.elapsed());
                return Outcome::Reply;
            }
        };
        if self.transfers.is_some() && (q.signed || matches!(q.qtype, qtype::AXFR | qtype::IXFR)) {
            return Outcome::Transfer;
        }
        if self.settings.forward && q.qclass == 1 && self.zone_of(&q).is_none() {
            return Outcome::Forward;
        }
        let limit = q.max_response(tcp, self.settings.max_udp_payload);
        let mut hold = Hold::Nothing;
        let reply = self.resolve(&q, &mut hold);
        wire::write_reply(
            out,
            packet,
            &q,
            &reply,
            limit,
            self.settings.max_udp_payload,
        );
        let truncated = out.get(2).is_some_and(|f| f & 0x02 != 0);
        tracing::trace!(
            id = q.id,
            qtype = q.qtype,
            rcode = reply.rcode,
            tcp,
            "answered"
        );
        self.stats.record(
            tcp,
            Some(q.qtype),
            reply.rcode,
            truncated,
            started.elapsed(),
        );
        Outcome::Reply
    }

    fn zone_of(&self, q: &Query) -> Option<usize> {
        self.zones.iter().position(|z| {
            z.labels <= q.labels
                && q.lower[q.label_at_or_end(q.labels - z.labels)..q.name_len] == *z.wire
        })
    }

    fn resolve<'a>(&'a self, q: &'a Query, hold: &'a mut Hold) -> Reply<'a> {
        if let Some(e) = q.edns
            && e.version > 0
        {
            return Reply {
                rcode: wire::rcode::BADVERS,
                ..Reply::code(rcode::NOERROR)
            };
        }
        if q.qclass != 1 && q.qclass != 255 {
            return Reply::code(rcode::REFUSED);
        }
        let Some(zi) = self.zone_of(q) else {
            return Reply::code(rcode::REFUSED);
        };
        if matches!(q.qtype, qtype::AXFR | qtype::IXFR)
            || (q.qtype == qtype::ANY && self.settings.any == AnyMode::Refuse)
        {
            return Reply::code(rcode::REFUSED);
        }
        if !self.index.is_synced() {
            // Never NXDOMAIN before the first sync: resolvers would cache it.
            return Reply::code(rcode::SERVFAIL);
        }
        let zone_labels = self.zones[zi].labels;
        let rel = q.labels - zone_labels;
        let node = if zi == 0 {
            cluster::walk(self, q, rel, hold)
        } else if rel == 0 {
            Node::Apex
        } else {
            reverse::walk(self, q, hold)
        };
        let soa = |ttl: u32, minimum: u32| Soa {
            template: &self.soa,
            owner_at: q.packet_offset_of_label(rel),
            in_zone: zi == 0,
            serial: self.index.serial(),
            ttl,
            minimum,
        };
        let positive = |answer: Part<'a>, additional: Option<Part<'a>>| Reply {
            answer: Some(answer),
            additional,
            aa: true,
            ..Reply::code(rcode::NOERROR)
        };
        let set = |s: &'a RrSet| (!s.is_empty()).then_some(Part::Bytes(s.count, &s.bytes));
        let rr = |s: Rr<'a>| (s.count > 0).then_some(Part::Bytes(s.count, s.bytes));
        let hinfo = || Some(Part::Bytes(self.hinfo.count, &self.hinfo.bytes));
        let t = q.qtype;
        let answer: Option<(Part<'a>, Option<Part<'a>>)> = match node {
            Node::Missing(ttl) => {
                let neg = ttl.min(self.settings.negative_ttl);
                return Reply {
                    authority: Some(Part::Soa(soa(neg, neg))),
                    aa: true,
                    ..Reply::code(rcode::NXDOMAIN)
                };
            }
            Node::Apex => {
                let ns = &self.zones[zi].ns;
                match t {
                    qtype::SOA => Some((
                        Part::Soa(soa(self.settings.ttl, self.settings.negative_ttl)),
                        None,
                    )),
                    qtype::NS => Some((
                        Part::Bytes(ns.answer.count, &ns.answer.bytes),
                        set(&ns.additional),
                    )),
                    qtype::ANY => hinfo().map(|h| (h, None)),
                    _ => None,
                }
            }
            Node::Empty => None,
            Node::Version => match t {
                qtype::TXT => set(&self.version).map(|p| (p, None)),
                qtype::ANY => hinfo().map(|h| (h, None)),
                _ => None,
            },
            Node::Addresses(a, aaaa) => match t {
                qtype::A => set(a).map(|p| (p, None)),
                qtype::AAAA => set(aaaa).map(|p| (p, None)),
                qtype::ANY if !a.is_empty() || !aaaa.is_empty() => hinfo().map(|h| (h, None)),
                _ => None,
            },
            Node::Endpoint(ips) => {
                let (v4s, v6s) = (ips.only_v4(), ips.only_v6());
                let ttl = self.settings.ttl;
                match t {
                    qtype::A if !v4s.is_empty() => Some((Part::Addresses(v4s, ttl), None)),
                    qtype::AAAA if !v6s.is_empty() => Some((Part::Addresses(v6s, ttl), None)),
                    qtype::ANY if !ips.is_empty() => hinfo().map(|h| (h, None)),
                    _ => None,
                }
            }
            Node::Service(v) => match (v.cname(), t) {
                (Some(c), _) => rr(c).map(|p| (p, None)),
                (None, qtype::A) => rr(v.a()).map(|p| (p, None)),
                (None, qtype::AAAA) => rr(v.aaaa()).map(|p| (p, None)),
                (None, qtype::ANY) => hinfo().map(|h| (h, None)),
                _ => None,
            },
            Node::Srv(srv) => match t {
                qtype::SRV if srv.count() > 0 => Some((
                    Part::SrvAnswer(srv),
                    (srv.glue_count() > 0).then_some(Part::SrvGlue(srv)),
                )),
                qtype::ANY => hinfo().map(|h| (h, None)),
                _ => None,
            },
            Node::Ptr(targets) => match t {
                qtype::PTR if !targets.is_empty() => {
                    Some((Part::Ptr(targets, self.settings.ttl), None))
                }
                qtype::ANY => hinfo().map(|h| (h, None)),
                _ => None,
            },
            Node::PodAddress(ip) => match (t, ip) {
                (qtype::A, IpAddr::V4(_)) | (qtype::AAAA, IpAddr::V6(_)) => {
                    Some((Part::Address(ip, self.settings.ttl), None))
                }
                (qtype::ANY, _) => hinfo().map(|h| (h, None)),
                _ => None,
            },
        };
        match answer {
            Some((answer, additional)) => positive(answer, additional),
            None => Reply {
                // NODATA (RFC 2308 §2.2): NOERROR, empty answer, SOA.
                authority: Some(Part::Soa(soa(
                    self.settings.negative_ttl,
                    self.settings.negative_ttl,
                ))),
                aa: true,
                ..Reply::code(rcode::NOERROR)
            },
        }
    }
}

impl Query {
    /// Offset in `lower` of label `i`, or of the root label when `i == labels`.
    pub(crate) fn label_at_or_end(&self, i: usize) -> usize {
        if i >= self.labels {
            self.name_len - 1
        } else {
            self.label_at[i] as usize
        }
    }
}
