//! The zones we are authoritative for, and what is answered at all.
//!
//! As hickory's `Catalog`, this routes a question to the longest matching zone
//! (the cluster domain, then the reverse zones, most specific first) before
//! any zone looks at the name, and applies the policy that holds for every
//! zone: EDNS version, class, zone transfers, ANY, and no answer before the
//! index has synced. The zone apexes' own records (SOA, NS) are answered here.

use super::{Answerer, AnyMode, Found, Records};
use crate::config::DnsConfig;
use crate::wire::rrset::{self, Sections};
use crate::wire::{Part, Query, Rcode, SoaTemplate, name, qtype};

/// A zone as matched against question names.
#[derive(Debug)]
struct Zone {
    /// Lower-case wire format, root label included.
    wire: Box<[u8]>,
    /// Number of labels (root excluded).
    labels: usize,
    /// Answer to `<apex> NS`, with glue.
    ns: Sections,
}

/// Our zones: the cluster zone first, then the reverse zones, longest first.
#[derive(Debug)]
pub(super) struct Catalog {
    zones: Vec<Zone>,
}

impl Catalog {
    /// The zones of `dns` (cluster zone `zone`, normalized), each with its NS
    /// record pointing at `ns.dns.<zone>` and that name's addresses as glue.
    pub(super) fn new(zone: &str, dns: &DnsConfig) -> Self {
        let ns_target = format!("ns.dns.{zone}");
        let mut reverse: Vec<String> = dns
            .reverse_zones
            .iter()
            .map(|z| z.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        // Longest (most specific) reverse zone first.
        reverse.sort_by_key(|z| std::cmp::Reverse(z.split('.').count()));
        let zones = std::iter::once(zone)
            .chain(reverse.iter().map(String::as_str))
            .map(|z| Zone {
                wire: name::from_dotted(z).unwrap_or_default().into(),
                labels: z.split('.').filter(|l| !l.is_empty()).count(),
                ns: rrset::ns_sections(z, &ns_target, dns.ttl, &dns.nameserver_ips),
            })
            .collect();
        Catalog { zones }
    }

    /// The zone `q`'s name is in (0 = the cluster zone), if any.
    pub(super) fn find(&self, q: &Query) -> Option<usize> {
        self.zones.iter().position(|z| {
            z.labels <= q.labels
                && q.lower[q.label_at_or_end(q.labels - z.labels)..q.name_len] == *z.wire
        })
    }

    /// How many labels zone `zone`'s apex has.
    pub(super) fn labels(&self, zone: usize) -> usize {
        self.zones[zone].labels
    }
}

/// The zone a query is answered from, or the response code that refuses it,
/// checked in this order: EDNS version (BADVERS), class IN or ANY, one of our
/// zones, no zone transfer (and no ANY when ANY is refused), then SERVFAIL
/// until the index has synced: never NXDOMAIN before the first sync, which
/// resolvers would cache.
pub(super) fn admit(a: &Answerer, q: &Query) -> Result<usize, Rcode> {
    if q.edns.is_some_and(|e| e.version > 0) {
        return Err(Rcode::BadVers);
    }
    if q.qclass != 1 && q.qclass != 255 {
        return Err(Rcode::Refused);
    }
    let zone = a.catalog.find(q).ok_or(Rcode::Refused)?;
    if matches!(q.qtype, qtype::AXFR | qtype::IXFR)
        || (q.qtype == qtype::ANY && a.settings.dns.any == AnyMode::Refuse)
    {
        return Err(Rcode::Refused);
    }
    // Not yet synced, or a followed zone past its SOA expire: SERVFAIL.
    if !a.index.is_synced() || a.expired.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Rcode::ServFail);
    }
    Ok(zone)
}

/// The records of a zone apex: SOA, NS with glue, the ANY answer.
pub(super) fn apex<'a>(a: &'a Answerer, q: &Query, found: &Found<'_>) -> Option<Records<'a>> {
    let ns = &a.catalog.zones[found.zone].ns;
    match q.qtype {
        qtype::SOA => {
            let (ttl, negative_ttl) = (a.settings.dns.ttl, a.settings.dns.negative_ttl);
            Some((Part::Soa(a.soa(q, found, ttl, negative_ttl)), None))
        }
        qtype::NS => Some((
            Part::Encoded(ns.answer.borrowed()),
            (!ns.additional.is_empty()).then_some(Part::Encoded(ns.additional.borrowed())),
        )),
        qtype::ANY => a.hinfo(),
        _ => None,
    }
}

/// The SOA of every zone: `ns.dns.<zone>` and `hostmaster.<zone>`, as
/// CoreDNS names them.
pub(super) fn soa_template(zone: &str) -> SoaTemplate {
    let mut names = Vec::new();
    for n in [format!("ns.dns.{zone}"), format!("hostmaster.{zone}")] {
        names.extend_from_slice(&name::from_dotted(&n).unwrap_or_default());
    }
    SoaTemplate {
        names: names.into(),
        in_zone: [
            b"\x02ns\x03dns".as_slice().into(),
            b"\x0ahostmaster".as_slice().into(),
        ],
        timers: [7200, 1800, 86400],
    }
}
