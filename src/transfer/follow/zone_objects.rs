//! A transferred cluster zone back into the objects it was written from.
//!
//! The primary's zone is what `dns::zonefile::service_records` writes for
//! each service; this module reverses it, so that the follower's index holds
//! Services and EndpointSlices again and answers every name as the primary
//! does (PTRs included: the index derives them from the endpoints, so the
//! reverse zones need not be transferred). The rules:
//! - `<svc>.<ns>.svc.<zone>` CNAME: an ExternalName service;
//! - its own A/AAAA: the cluster IPs, unless they are all endpoint addresses
//!   and no SRV record targets the service itself: then it is headless;
//! - `<label>.<svc>.<ns>.svc.<zone>` A/AAAA: an endpoint, its hostname the
//!   label unless the label is the address dashed (`10-244-1-7`);
//! - `_<port>._<proto>.<svc>...` SRV: targeting the service, a service port
//!   (ClusterIP); targeting an endpoint, that endpoint's port (headless);
//! - `<svc>...` SRV (the service name's own set, every port): the port
//!   numbers of unnamed ports too, which become unnamed TCP ports;
//! - `<ns>.svc.<zone>` of type `zonefile::NAMESPACE_MARKER`: the namespace
//!   exists, services or none (NODATA there, as on the primary). A
//!   namespace with a service exists too, marker or not (a primary that is
//!   not ours writes none).
//!
//! Endpoints with the same ports and address family share one slice; the
//! index orders them by ordinal itself. Every endpoint in the zone was
//! served, so each is ready. Pure: no I/O, unit-tested below.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::{DNSClass, Name, RData, Record};

use crate::dns::zonefile::NAMESPACE_MARKER;
use crate::index::record::dashed_ip;
use crate::index::{
    EndpointRecord, NamespaceRecord, Object, ObjectKey, PortRecord, ServiceKind, ServiceRecord,
    SliceRecord,
};
use crate::sources::ObjectMap;

/// A port seen in an SRV record: (name, protocol, number).
type Port = (String, String, u16);

/// What the zone says about one service.
#[derive(Default)]
struct Service {
    addresses: Vec<IpAddr>,
    cname: Option<String>,
    /// Endpoint label → its addresses.
    endpoints: BTreeMap<String, Vec<IpAddr>>,
    /// SRV ports targeting the service itself.
    own_ports: BTreeSet<Port>,
    /// SRV ports by the endpoint label they target.
    endpoint_ports: BTreeMap<String, BTreeSet<Port>>,
    /// Port numbers of the service name's own SRV set, by target label
    /// (`None`: the service itself).
    bare: BTreeMap<Option<String>, BTreeSet<u16>>,
}

/// A name's labels below `.svc.<zone>`, lower-case, nearest the zone last
/// (`web-0.web.default` → `["web-0", "web", "default"]`).
fn labels_below(name: &Name, suffix: &str) -> Option<Vec<String>> {
    let text = name.to_ascii().to_ascii_lowercase();
    let rel = text.trim_end_matches('.').strip_suffix(suffix)?;
    Some(rel.split('.').map(str::to_string).collect())
}

/// The objects the cluster-zone `records` of `zone` describe (records
/// outside `*.svc.<zone>`, such as the apex's, are left out).
pub(crate) fn objects<'a>(records: impl IntoIterator<Item = &'a Record>, zone: &str) -> ObjectMap {
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    let suffix = format!(".svc.{zone}");
    // (namespace, service) → what the zone says about it.
    let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
    let mut out = ObjectMap::new();
    for r in records {
        if r.dns_class != DNSClass::IN {
            continue;
        }
        let Some(labels) = labels_below(&r.name, &suffix) else {
            continue;
        };
        if let [ns] = &labels[..]
            && u16::from(r.record_type()) == NAMESPACE_MARKER
        {
            add_namespace(&mut out, ns);
            continue;
        }
        read_record(&labels, &r.data, &suffix, &mut services);
    }
    for ((ns, name), svc) in services {
        add_namespace(&mut out, &ns);
        for object in service_objects(&ns, &name, svc) {
            out.insert((object.kind(), object.key().clone()), object);
        }
    }
    out
}

/// Adds namespace `ns` to `objects` (a namespace's zone names it at its
/// apex even when no service is in it: NODATA there, as on the primary).
pub(crate) fn add_namespace(objects: &mut ObjectMap, ns: &str) {
    let key = ObjectKey::new("", ns);
    let namespace = Object::Namespace(NamespaceRecord { key: key.clone() });
    objects.insert((namespace.kind(), key), namespace);
}

/// Files one record under its service.
fn read_record(
    labels: &[String],
    data: &RData,
    suffix: &str,
    services: &mut BTreeMap<(String, String), Service>,
) {
    let n = labels.len();
    if n < 2 {
        return;
    }
    let key = (labels[n - 1].clone(), labels[n - 2].clone());
    let base = format!("{}.{}{suffix}", key.1, key.0);
    let address = match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    };
    match (n, data, address) {
        (2, _, Some(ip)) => services.entry(key).or_default().addresses.push(ip),
        (2, RData::CNAME(target), _) => {
            let t = target.0.to_ascii().to_ascii_lowercase();
            services.entry(key).or_default().cname = Some(t.trim_end_matches('.').to_string());
        }
        (3, _, Some(ip)) => {
            let svc = services.entry(key).or_default();
            svc.endpoints.entry(labels[0].clone()).or_default().push(ip);
        }
        (2, RData::SRV(srv), _) => {
            let target = srv.target.to_ascii().to_ascii_lowercase();
            let target = target.trim_end_matches('.');
            let label = match target.strip_suffix(&format!(".{base}")) {
                Some(label) => Some(label.to_string()),
                None if target == base => None,
                None => return,
            };
            let svc = services.entry(key).or_default();
            svc.bare.entry(label).or_default().insert(srv.port);
        }
        (4, RData::SRV(srv), _) => {
            let (Some(name), Some(proto)) =
                (labels[0].strip_prefix('_'), labels[1].strip_prefix('_'))
            else {
                return;
            };
            let port = (name.to_string(), proto.to_string(), srv.port);
            let target = srv.target.to_ascii().to_ascii_lowercase();
            let target = target.trim_end_matches('.');
            let svc = services.entry(key).or_default();
            if target == base {
                svc.own_ports.insert(port);
            } else if let Some(label) = target.strip_suffix(&format!(".{base}")) {
                let ports = svc.endpoint_ports.entry(label.to_string()).or_default();
                ports.insert(port);
            }
        }
        _ => {}
    }
}

/// The Service and EndpointSlices of one service of the zone.
fn service_objects(ns: &str, name: &str, svc: Service) -> Vec<Object> {
    let endpoint_ips: BTreeSet<IpAddr> = svc.endpoints.values().flatten().copied().collect();
    let headless = svc.own_ports.is_empty()
        && !svc.bare.contains_key(&None)
        && !svc.addresses.is_empty()
        && svc.addresses.iter().all(|ip| endpoint_ips.contains(ip));
    let kind = match (svc.cname, headless) {
        (Some(target), _) => ServiceKind::ExternalName(target),
        (None, true) => ServiceKind::Headless,
        (None, false) => ServiceKind::ClusterIp(svc.addresses),
    };
    let ports = with_unnamed(&svc.own_ports, svc.bare.get(&None));
    let ports: Vec<PortRecord> = ports.iter().map(port_record).collect();
    let mut out = vec![Object::Service(ServiceRecord {
        key: ObjectKey::new(ns, name),
        kind,
        ports: Arc::from(ports),
        publish_not_ready: false,
    })];
    // Endpoints with the same ports and family share a slice.
    let mut slices: BTreeMap<(bool, BTreeSet<Port>), Vec<EndpointRecord>> = BTreeMap::new();
    let no_ports = BTreeSet::new();
    for (label, ips) in &svc.endpoints {
        let named = svc.endpoint_ports.get(label).unwrap_or(&no_ports);
        let ports = with_unnamed(named, svc.bare.get(&Some(label.clone())));
        for v4 in [true, false] {
            let family: Vec<IpAddr> = ips
                .iter()
                .copied()
                .filter(|ip| ip.is_ipv4() == v4)
                .collect();
            if family.is_empty() {
                continue;
            }
            let dashed = family.len() == 1 && dashed_ip(family[0]) == *label;
            slices
                .entry((v4, ports.clone()))
                .or_default()
                .push(EndpointRecord {
                    hostname: (!dashed).then(|| label.clone()),
                    addresses: family,
                    ready: true,
                    serving: true,
                    terminating: false,
                    pod: None,
                });
        }
    }
    for (i, ((v4, ports), endpoints)) in slices.into_iter().enumerate() {
        let family = if v4 { "v4" } else { "v6" };
        out.push(Object::EndpointSlice(SliceRecord {
            // A dot cannot be in a service name: no clash with another's slices.
            key: ObjectKey::new(ns, &format!("{name}.{family}.{i}")),
            ports: ports.iter().map(port_record).collect(),
            service: name.to_string(),
            endpoints,
        }));
    }
    out
}

/// `named` ports, and an unnamed TCP one for each port number of `bare`
/// (the service name's own SRV set) that no named port has.
fn with_unnamed(named: &BTreeSet<Port>, bare: Option<&BTreeSet<u16>>) -> BTreeSet<Port> {
    let mut out = named.clone();
    for &n in bare.into_iter().flatten() {
        if !named.iter().any(|(_, _, p)| *p == n) {
            out.insert((String::new(), "tcp".into(), n));
        }
    }
    out
}

/// A port; an empty name is an unnamed port.
fn port_record((name, protocol, port): &Port) -> PortRecord {
    PortRecord {
        name: Some(name.clone()).filter(|n| !n.is_empty()),
        protocol: protocol.clone(),
        port: *port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zonefile::{ZoneRecord, namespace_record, service_records};
    use crate::index::{IndexWriter, Kind, ZoneSettings};
    use hickory_proto::serialize::binary::BinDecodable;
    use std::time::Duration;

    const MANIFESTS: &str = include_str!("../../../tests/fixtures.yaml");

    fn settings() -> crate::config::DnsSettings {
        crate::config::Config::default().dns_settings()
    }

    /// An index fed `objects` through the same differ the sources use.
    fn index_of(objects: ObjectMap) -> crate::index::Index {
        let s = settings();
        let zone = ZoneSettings {
            zone: s.dns.zone.clone(),
            ttl: s.dns.ttl,
            endpoint_pod_names: false,
        };
        let mut writer = IndexWriter::new(zone, &Kind::ALL);
        writer.apply_all(crate::sources::Differ::default().diff(objects));
        writer.index()
    }

    /// Every namespace's marker and service's zone records (the apex left
    /// out), as zone-file lines.
    fn zone_lines(index: &crate::index::Index) -> (Vec<String>, Vec<ZoneRecord>) {
        let s = settings();
        let mut records = Vec::new();
        for ns in index.namespaces() {
            records.push(namespace_record(&s, &ns));
        }
        for v in index.services() {
            service_records(&v, &s, &mut records);
        }
        let mut lines: Vec<String> = records.iter().map(ToString::to_string).collect();
        lines.sort();
        (lines, records)
    }

    fn manifest_objects(text: &str) -> ObjectMap {
        crate::sources::file::parse("fixtures.yaml", text)
            .expect("fixtures parse")
            .into_iter()
            .map(|o| ((o.kind(), o.key().clone()), o))
            .collect()
    }

    /// The zone written from the manifests (the test fixtures; the demo,
    /// its StatefulSets' pods created by the simulator), read back into
    /// objects and written again, is the same zone, line for line.
    #[test]
    fn the_fixture_and_demo_zones_round_trip() {
        let sim = crate::config::SimConfig::default();
        let demo = crate::sources::sim::Sim::new(Duration::ZERO, &sim.pod_cidr)
            .run_to_completion(manifest_objects(crate::sources::file::DEMO));
        for (manifests, zone) in [
            (manifest_objects(MANIFESTS), "cluster.local"),
            (demo, "cluster.local."),
        ] {
            let primary = index_of(manifests);
            let (lines, records) = zone_lines(&primary);
            assert!(lines.len() > 20, "a real zone: {lines:?}");
            assert!(
                lines.iter().any(|l| l.starts_with("default.svc.")),
                "the namespaces' markers: {lines:?}"
            );
            let parsed: Vec<Record> = records
                .iter()
                .map(|r| Record::from_bytes(&r.wire().unwrap()).unwrap())
                .collect();
            let follower = index_of(objects(&parsed, zone));
            assert_eq!(zone_lines(&follower).0, lines);
        }
    }

    fn rec(owner: &str, data: RData) -> Record {
        Record::from_rdata(Name::from_ascii(owner).unwrap(), 5, data)
    }

    #[test]
    fn kinds_hostnames_and_ports_are_inferred() {
        use hickory_proto::rr::rdata::{A, CNAME, SRV};
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let z = ".default.svc.cluster.local.";
        let records = [
            rec(&format!("db{z}"), RData::A(A([10, 0, 0, 1].into()))),
            rec(&format!("db-0.db{z}"), RData::A(A([10, 0, 0, 1].into()))),
            rec(
                &format!("10-0-0-2.db{z}"),
                RData::A(A([10, 0, 0, 2].into())),
            ),
            rec(&format!("api{z}"), RData::A(A([10, 96, 0, 1].into()))),
            rec(
                &format!("_http._tcp.api{z}"),
                RData::SRV(SRV::new(0, 100, 80, n(&format!("api{z}")))),
            ),
            rec(
                &format!("_pg._tcp.db{z}"),
                RData::SRV(SRV::new(0, 100, 5432, n(&format!("db-0.db{z}")))),
            ),
            rec(&format!("ext{z}"), RData::CNAME(CNAME(n("example.com.")))),
            rec("ns.dns.cluster.local.", RData::A(A([10, 0, 0, 53].into()))),
            // The marker of a namespace without services, as transferred.
            Record::from_bytes(&namespace_record(&settings(), "quiet").wire().unwrap()).unwrap(),
        ];
        let map = objects(&records, "cluster.local");
        let service = |name: &str| match &map[&(Kind::Service, ObjectKey::new("default", name))] {
            Object::Service(s) => s.clone(),
            o => panic!("{o:?}"),
        };
        assert_eq!(service("db").kind, ServiceKind::Headless);
        assert_eq!(
            service("api").kind,
            ServiceKind::ClusterIp(vec!["10.96.0.1".parse().unwrap()])
        );
        assert_eq!(service("api").ports[0].port, 80);
        assert_eq!(
            service("ext").kind,
            ServiceKind::ExternalName("example.com".into())
        );
        let slices: Vec<&SliceRecord> = map
            .values()
            .filter_map(|o| match o {
                Object::EndpointSlice(s) => Some(s),
                _ => None,
            })
            .collect();
        let hostnames: BTreeSet<Option<String>> = slices
            .iter()
            .flat_map(|s| s.endpoints.iter().map(|e| e.hostname.clone()))
            .collect();
        assert_eq!(hostnames, [None, Some("db-0".to_string())].into());
        let pg = slices.iter().find(|s| !s.ports.is_empty()).unwrap();
        assert_eq!(pg.ports[0].port, 5432);
        assert_eq!(pg.endpoints[0].hostname.as_deref(), Some("db-0"));
        assert!(map.contains_key(&(Kind::Namespace, ObjectKey::new("", "default"))));
        assert!(map.contains_key(&(Kind::Namespace, ObjectKey::new("", "quiet"))));
        // The apex's records describe no service.
        assert_eq!(map.keys().filter(|(k, _)| *k == Kind::Service).count(), 3);
    }
}
