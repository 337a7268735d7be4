//! Which zones we transfer, and each zone's records as wire bytes.
//!
//! The fixed zones are the answerer's: the cluster zone first, then the
//! reverse zones, most specific first (an address belongs to the narrowest
//! reverse zone that holds it, as on the query path). Besides them, each
//! existing namespace has a transfer zone `<ns>.svc.<zone>`: its apex (SOA,
//! NS) and the cluster zone's records below it, so a tenant's follower can
//! take its namespace alone. It is a transfer zone only: the query path
//! answers those names from the cluster zone, unchanged. Records come from
//! `dns::zonefile`, so a transfer carries exactly what `export-zone` prints.
//!
//! The cluster zone carries each existing namespace's marker at
//! `<ns>.svc.<zone>` (`zonefile::NAMESPACE_MARKER`), so whoever loads it
//! answers NODATA there as the query path does, services or none. A
//! namespace's own zone leaves it out: that name is its apex, whose SOA
//! already says the namespace exists (the zone exists only while the
//! namespace does), so the marker's coming and going never moves a
//! namespace zone's serial.

use std::sync::Arc;

use crate::dns::DnsSettings;
use crate::dns::zonefile::{self, ZoneRecord};
use crate::index::ServiceView;

/// A zone a transfer is of.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ZoneId {
    /// One of the fixed zones, by index (0: the cluster zone).
    Fixed(usize),
    /// The transfer zone of a namespace (its name, lower-case).
    Namespace(Arc<str>),
}

/// Our zones, in the answerer's order.
#[derive(Debug)]
pub(crate) struct Zones {
    /// Lower-case names without trailing dot; `names[0]` is the cluster zone.
    names: Vec<String>,
    /// The same names in lower-case wire format.
    wires: Vec<Vec<u8>>,
}

impl Zones {
    /// The zones `settings` serves.
    pub(crate) fn new(settings: &DnsSettings) -> Self {
        let mut reverse: Vec<String> = settings
            .dns
            .reverse_zones
            .iter()
            .map(|z| z.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        reverse.sort_by_key(|z| std::cmp::Reverse(z.split('.').count()));
        reverse.dedup();
        let mut names = vec![settings.dns.zone.clone()];
        names.extend(reverse);
        // Zone names are validated by the config: they have a wire form.
        let wires = names
            .iter()
            .map(|n| crate::wire::name::from_dotted(n).unwrap_or_default())
            .collect();
        Self { names, wires }
    }

    /// How many zones.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// The zone whose apex is `qname` (lower-case wire format).
    pub(crate) fn find(&self, qname: &[u8]) -> Option<usize> {
        self.wires.iter().position(|w| w.as_slice() == qname)
    }

    /// The namespace whose transfer zone `qname` (lower-case wire format)
    /// would be: `<label>.svc.<zone>`, existing or not.
    pub(crate) fn namespace_of(&self, qname: &[u8]) -> Option<Arc<str>> {
        let len = *qname.first()? as usize;
        let rest = qname.get(1 + len..)?;
        if len == 0 || rest.get(..4)? != b"\x03svc" || rest[4..] != *self.wires[0] {
            return None;
        }
        std::str::from_utf8(&qname[1..1 + len]).ok().map(Arc::from)
    }

    /// Zone `zone`'s name (dotted, lower-case, no trailing dot).
    pub(crate) fn name_of(&self, zone: &ZoneId) -> String {
        match zone {
            ZoneId::Fixed(i) => self.names[*i].clone(),
            ZoneId::Namespace(ns) => format!("{ns}.svc.{}", self.names[0]),
        }
    }

    /// Zone `zone`'s name in wire format.
    pub(crate) fn wire_of(&self, zone: &ZoneId) -> Vec<u8> {
        match zone {
            ZoneId::Fixed(i) => self.wires[*i].clone(),
            ZoneId::Namespace(ns) => {
                let mut w = Vec::with_capacity(ns.len() + 5 + self.wires[0].len());
                w.push(ns.len() as u8);
                w.extend_from_slice(ns.as_bytes());
                w.extend_from_slice(b"\x03svc");
                w.extend_from_slice(&self.wires[0]);
                w
            }
        }
    }

    /// The reverse zone that holds the owner name `owner` (dotted).
    fn reverse_zone_of(&self, owner: &str) -> Option<usize> {
        (1..self.names.len()).find(|&i| {
            let z = &self.names[i];
            owner == z
                || owner
                    .strip_suffix(z.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        })
    }

    /// Appends the records `v` has in `zone` (every zone when `None`) as
    /// (zone, wire record), sorted and without duplicates.
    pub(crate) fn view_records(
        &self,
        v: &ServiceView,
        settings: &DnsSettings,
        zone: Option<usize>,
        out: &mut Vec<(u8, Vec<u8>)>,
    ) {
        let start = out.len();
        let mut recs: Vec<ZoneRecord> = Vec::new();
        if zone.is_none_or(|z| z == 0) {
            zonefile::service_records(v, settings, &mut recs);
            out.extend(recs.drain(..).filter_map(|r| Some((0, r.wire()?))));
        }
        if zone != Some(0) && self.names.len() > 1 {
            zonefile::ptr_records(v, settings, &mut recs);
            for r in recs.drain(..) {
                let Some(z) = self.reverse_zone_of(&r.owner) else {
                    continue;
                };
                if zone.is_none_or(|want| want == z)
                    && let Some(w) = r.wire()
                {
                    out.push((z as u8, w));
                }
            }
        }
        out[start..].sort_unstable();
        let mut kept = out.split_off(start);
        kept.dedup();
        out.extend(kept);
    }

    /// The cluster zone's marker of namespace `ns` in wire format.
    pub(crate) fn namespace_marker(&self, settings: &DnsSettings, ns: &str) -> Option<Vec<u8>> {
        zonefile::namespace_record(settings, ns).wire()
    }

    /// Zone `zone`'s apex records in wire format, SOA (with `serial`) first.
    pub(crate) fn apex(&self, settings: &DnsSettings, zone: &ZoneId, serial: u32) -> Vec<Vec<u8>> {
        zonefile::apex_records(settings, &self.name_of(zone), serial)
            .iter()
            .filter_map(ZoneRecord::wire)
            .collect()
    }

    /// Zone `zone`'s SOA record with `serial`.
    pub(crate) fn soa(&self, settings: &DnsSettings, zone: &ZoneId, serial: u32) -> Vec<u8> {
        self.apex(settings, zone, serial)
            .into_iter()
            .next()
            .unwrap_or_default()
    }
}

/// Whether the wire record `record` (its owner uncompressed, lower-case)
/// is at or below the name `suffix` (lower-case wire format).
pub(crate) fn owner_within(record: &[u8], suffix: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&len) = record.get(at) {
        if record.get(at..at + suffix.len()) == Some(suffix) {
            return true;
        }
        if len == 0 || len > 63 {
            return false;
        }
        at += 1 + len as usize;
    }
    false
}

/// Whether the wire record `record` (its owner uncompressed, lower-case) is
/// owned by the name `name` (lower-case wire format) itself.
pub(crate) fn owner_is(record: &[u8], name: &[u8]) -> bool {
    // A name's wire form ends with the root label: a longer owner cannot
    // start with it.
    record.starts_with(name)
}

/// The records of a whole zone, produced a service at a time: apex records
/// (SOA first), the namespaces' markers (the cluster zone), every service's
/// records, and the SOA again (RFC 5936 §2.2).
pub(crate) struct ZoneRecords {
    zones: Arc<Zones>,
    settings: Arc<DnsSettings>,
    zone: usize,
    soa: Option<Vec<u8>>,
    views: std::vec::IntoIter<Arc<ServiceView>>,
    queue: std::collections::VecDeque<Vec<u8>>,
    buf: Vec<(u8, Vec<u8>)>,
}

impl ZoneRecords {
    /// The records of `zone` at `serial`, from the views and `namespaces`
    /// published at that serial (a namespace's zone: the cluster zone's
    /// records of the views in that namespace, no marker).
    pub(crate) fn new(
        zones: Arc<Zones>,
        settings: Arc<DnsSettings>,
        zone: &ZoneId,
        serial: u32,
        (mut views, namespaces): (Vec<Arc<ServiceView>>, Vec<String>),
    ) -> Self {
        let mut apex = zones.apex(&settings, zone, serial);
        if *zone == ZoneId::Fixed(0) {
            let markers = namespaces.iter();
            apex.extend(markers.filter_map(|ns| zones.namespace_marker(&settings, ns)));
        }
        let index = match zone {
            ZoneId::Fixed(i) => *i,
            ZoneId::Namespace(ns) => {
                views.retain(|v| v.record.key.namespace() == &**ns);
                0
            }
        };
        Self {
            soa: apex.first().cloned(),
            queue: apex.into(),
            zones,
            settings,
            zone: index,
            views: views.into_iter(),
            buf: Vec::new(),
        }
    }
}

impl Iterator for ZoneRecords {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(r);
            }
            match self.views.next() {
                Some(v) => {
                    self.zones
                        .view_records(&v, &self.settings, Some(self.zone), &mut self.buf);
                    self.queue.extend(self.buf.drain(..).map(|(_, r)| r));
                }
                None => return self.soa.take(),
            }
        }
    }
}
