//! Small records made from Kubernetes objects at the ingest boundary.
//!
//! A source hands the index whole `k8s_openapi` objects; this module keeps only
//! what answering needs (names lower-cased once, addresses parsed once), so the
//! index never holds a whole Pod and never parses a string per query. It knows
//! nothing of DNS wire formats and nothing of `kube`.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Namespace and name of an object, both lower-case.
///
/// Both live in one heap block (24 bytes inline, one allocation): the writer
/// keeps a key per Service, EndpointSlice and StatefulSet, often twice (map
/// key and record).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// Namespace then name, with no separator.
    text: Box<str>,
    /// Where the name starts in `text`.
    split: u32,
}

impl ObjectKey {
    /// A key from two names, lower-casing both.
    pub fn new(namespace: &str, name: &str) -> Self {
        let mut text = String::with_capacity(namespace.len() + name.len());
        text.push_str(namespace);
        text.push_str(name);
        text.make_ascii_lowercase();
        Self {
            text: text.into_boxed_str(),
            split: namespace.len() as u32,
        }
    }

    /// The namespace ("" for cluster-scoped objects such as Namespaces).
    pub fn namespace(&self) -> &str {
        &self.text[..self.split as usize]
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.text[self.split as usize..]
    }
}

impl Ord for ObjectKey {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.namespace(), self.name()).cmp(&(other.namespace(), other.name()))
    }
}

impl PartialOrd for ObjectKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectKey")
            .field("namespace", &self.namespace())
            .field("name", &self.name())
            .finish()
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace().is_empty() {
            f.write_str(self.name())
        } else {
            write!(f, "{}/{}", self.namespace(), self.name())
        }
    }
}

/// Why an object could not be turned into a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// `metadata.name` is missing or empty.
    #[error("metadata.name is missing")]
    MissingName,
    /// `metadata.namespace` is missing for a namespaced object.
    #[error("metadata.namespace is missing")]
    MissingNamespace,
    /// A field holds a value that cannot be used.
    #[error("{field}: {message}")]
    Invalid {
        /// The field's path, e.g. `spec.clusterIP`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

fn key_of(meta: &ObjectMeta) -> Result<ObjectKey, RecordError> {
    let name = meta
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(RecordError::MissingName)?;
    let ns = meta
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(RecordError::MissingNamespace)?;
    Ok(ObjectKey::new(ns, name))
}

/// What a Service answers with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// A virtual IP per family (`spec.clusterIPs`).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the addresses of its ready endpoints.
    Headless,
    /// A CNAME to `spec.externalName` (lower-case, no trailing dot).
    ExternalName(String),
}

/// A port of a Service or an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRecord {
    /// The port's name, lower-case; unnamed ports get no SRV record.
    pub name: Option<String>,
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    /// The port number.
    pub port: u16,
}

/// The parts of a Service that DNS answers depend on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceRecord {
    /// Namespace and name.
    pub key: ObjectKey,
    /// ClusterIP, headless or ExternalName.
    pub kind: ServiceKind,
    /// The service's ports (used for ClusterIP SRV records); the writer
    /// shares one copy among the services with the same ports.
    pub ports: Arc<[PortRecord]>,
    /// `spec.publishNotReadyAddresses` (or the legacy tolerate-unready annotation).
    pub publish_not_ready: bool,
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointRecord {
    /// `hostname`, lower-case; StatefulSet pods have their pod name here.
    pub hostname: Option<String>,
    /// The endpoint's addresses (one family per slice).
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; absent counts as ready.
    pub ready: bool,
    /// `conditions.serving`; absent counts as `ready`.
    pub serving: bool,
    /// `conditions.terminating`; absent counts as false.
    pub terminating: bool,
    /// The Pod it points at (`targetRef` of kind Pod), lower-case.
    pub pod: Option<String>,
}

/// An EndpointSlice reduced to its service, ports and endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SliceRecord {
    /// Namespace and the slice's own name.
    pub key: ObjectKey,
    /// The slice's ports (used for headless SRV records).
    pub ports: Vec<PortRecord>,
    /// The Service it belongs to (label `kubernetes.io/service-name`), lower-case.
    pub service: String,
    /// Its endpoints.
    pub endpoints: Vec<EndpointRecord>,
}

/// How a StatefulSet starts its pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodManagement {
    /// One at a time, each Running and Ready before the next (the default).
    OrderedReady,
    /// All at once.
    Parallel,
}

/// The parts of a StatefulSet the index and the simulator need.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StatefulSetRecord {
    /// Namespace and name.
    pub key: ObjectKey,
    /// `spec.serviceName`, lower-case: the governing headless service.
    pub service_name: String,
    /// `spec.replicas` (default 1).
    pub replicas: u32,
    /// `spec.podManagementPolicy`.
    pub pod_management: PodManagement,
}

/// The parts of a Pod that `pods verified` and the simulator need.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodRecord {
    /// Namespace and name.
    pub key: ObjectKey,
    /// `status.podIPs` (or `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// `spec.hostname`, lower-case.
    pub hostname: Option<String>,
    /// `spec.subdomain`, lower-case.
    pub subdomain: Option<String>,
    /// The Ready condition is True.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
}

/// A Namespace (only its existence matters).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamespaceRecord {
    /// The namespace's name, lower-case (`key.namespace` is "").
    pub key: ObjectKey,
}

fn parse_ip(field: &'static str, s: &str) -> Result<IpAddr, RecordError> {
    s.trim().parse().map_err(|_| RecordError::Invalid {
        field,
        message: format!("{s:?} is not an IP address"),
    })
}

fn port_of(
    field: &'static str,
    name: Option<&str>,
    protocol: Option<&str>,
    port: i32,
) -> Result<PortRecord, RecordError> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| RecordError::Invalid {
            field,
            message: format!("{port} is not a port number"),
        })?;
    Ok(PortRecord {
        name: name.filter(|n| !n.is_empty()).map(str::to_ascii_lowercase),
        protocol: protocol.unwrap_or("TCP").to_ascii_lowercase(),
        port,
    })
}

/// `TryFrom<&Object>` for each record, by its conversion function.
macro_rules! try_from_object {
    ($($object:ty => $record:ty: $convert:ident,)*) => {$(
        impl TryFrom<&$object> for $record {
            type Error = RecordError;

            fn try_from(object: &$object) -> Result<Self, RecordError> {
                $convert(object)
            }
        }
    )*};
}

try_from_object! {
    Service => ServiceRecord: service_record,
    EndpointSlice => SliceRecord: slice_record,
    StatefulSet => StatefulSetRecord: statefulset_record,
    Pod => PodRecord: pod_record,
    Namespace => NamespaceRecord: namespace_record,
}

/// A Service reduced to what DNS answers with.
fn service_record(svc: &Service) -> Result<ServiceRecord, RecordError> {
    let key = key_of(&svc.metadata)?;
    let spec = svc.spec.clone().unwrap_or_default();
    let tolerate = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("service.alpha.kubernetes.io/tolerate-unready-endpoints"))
        .is_some_and(|v| v == "true");
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec
            .external_name
            .as_deref()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .ok_or(RecordError::Invalid {
                field: "spec.externalName",
                message: "an ExternalName service needs spec.externalName".into(),
            })?;
        ServiceKind::ExternalName(target)
    } else {
        let mut ips: Vec<&str> = spec
            .cluster_ips
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if ips.is_empty() {
            ips.extend(spec.cluster_ip.as_deref());
        }
        if ips.is_empty() || ips.iter().any(|ip| ip.eq_ignore_ascii_case("none")) {
            ServiceKind::Headless
        } else {
            let mut parsed = Vec::with_capacity(ips.len());
            for ip in ips {
                let ip = parse_ip("spec.clusterIPs", ip)?;
                if !parsed.contains(&ip) {
                    parsed.push(ip);
                }
            }
            ServiceKind::ClusterIp(parsed)
        }
    };
    // Collected to size: the record lives as long as the Service does.
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            port_of(
                "spec.ports",
                p.name.as_deref(),
                p.protocol.as_deref(),
                p.port,
            )
        })
        .collect::<Result<Vec<_>, _>>()?
        .into();
    Ok(ServiceRecord {
        key,
        kind,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false) || tolerate,
    })
}

/// An EndpointSlice reduced to its service, ports and endpoints (conditions
/// defaulted as Kubernetes does).
fn slice_record(slice: &EndpointSlice) -> Result<SliceRecord, RecordError> {
    let key = key_of(&slice.metadata)?;
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .map(|s| s.to_ascii_lowercase())
        .ok_or(RecordError::Invalid {
            field: "metadata.labels",
            message: format!("an EndpointSlice needs the label {SERVICE_NAME_LABEL}"),
        })?;
    let mut ports = Vec::new();
    for p in slice.ports.iter().flatten() {
        if let Some(port) = p.port {
            ports.push(port_of(
                "ports",
                p.name.as_deref(),
                p.protocol.as_deref(),
                port,
            )?);
        }
    }
    // FQDN slices carry names, not addresses: nothing DNS can serve from them.
    let family_ok = matches!(slice.address_type.as_str(), "IPv4" | "IPv6");
    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    for ep in slice.endpoints.iter().filter(|_| family_ok) {
        let mut addresses = Vec::with_capacity(ep.addresses.len());
        for a in &ep.addresses {
            addresses.push(parse_ip("endpoints.addresses", a)?);
        }
        let c = ep.conditions.clone().unwrap_or_default();
        let ready = c.ready.unwrap_or(true);
        endpoints.push(EndpointRecord {
            hostname: ep
                .hostname
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(str::to_ascii_lowercase),
            addresses,
            ready,
            serving: c.serving.unwrap_or(ready),
            terminating: c.terminating.unwrap_or(false),
            pod: ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.as_deref())
                .map(str::to_ascii_lowercase),
        });
    }
    Ok(SliceRecord {
        key,
        service,
        ports,
        endpoints,
    })
}

/// A StatefulSet reduced to its governing service, replicas and policy.
fn statefulset_record(sts: &StatefulSet) -> Result<StatefulSetRecord, RecordError> {
    let key = key_of(&sts.metadata)?;
    let spec = sts.spec.as_ref().ok_or(RecordError::Invalid {
        field: "spec",
        message: "a StatefulSet needs a spec".into(),
    })?;
    let replicas = u32::try_from(spec.replicas.unwrap_or(1)).map_err(|_| RecordError::Invalid {
        field: "spec.replicas",
        message: "must not be negative".into(),
    })?;
    let pod_management = match spec.pod_management_policy.as_deref() {
        None | Some("OrderedReady") => PodManagement::OrderedReady,
        Some("Parallel") => PodManagement::Parallel,
        Some(other) => {
            return Err(RecordError::Invalid {
                field: "spec.podManagementPolicy",
                message: format!("{other:?} is neither OrderedReady nor Parallel"),
            });
        }
    };
    Ok(StatefulSetRecord {
        key,
        service_name: spec
            .service_name
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        replicas,
        pod_management,
    })
}

/// A Pod reduced to its addresses, DNS names and state.
fn pod_record(pod: &Pod) -> Result<PodRecord, RecordError> {
    let key = key_of(&pod.metadata)?;
    let status = pod.status.clone().unwrap_or_default();
    let mut ips = Vec::new();
    for ip in status.pod_ips.iter().flatten() {
        let ip = parse_ip("status.podIPs", &ip.ip)?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_deref().filter(|s| !s.is_empty())
    {
        ips.push(parse_ip("status.podIP", ip)?);
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let spec = pod.spec.as_ref();
    Ok(PodRecord {
        key,
        ips,
        hostname: spec
            .and_then(|s| s.hostname.as_deref())
            .map(str::to_ascii_lowercase),
        subdomain: spec
            .and_then(|s| s.subdomain.as_deref())
            .map(str::to_ascii_lowercase),
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}

/// A Namespace reduced to its name.
fn namespace_record(ns: &Namespace) -> Result<NamespaceRecord, RecordError> {
    let name = ns
        .metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(RecordError::MissingName)?;
    Ok(NamespaceRecord {
        key: ObjectKey::new("", name),
    })
}

/// A pod name split into StatefulSet name and ordinal: `web-12` is `("web", 12)`.
///
/// Sorting by `Ordinal` puts `web-2` before `web-10`, and names without an
/// ordinal after all names with one, in plain string order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ordinal<'a> {
    /// The part before the last `-`.
    pub base: &'a str,
    /// The number after it, if it is a canonical decimal (no leading zeros).
    pub number: Option<u32>,
    /// The whole name, for names without an ordinal.
    pub name: &'a str,
}

impl<'a> Ordinal<'a> {
    /// Splits `name`; a name that does not end in `-<n>` has `number: None`.
    pub fn parse(name: &'a str) -> Self {
        if let Some((base, digits)) = name.rsplit_once('-')
            && !base.is_empty()
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'))
            && let Ok(n) = digits.parse::<u32>()
        {
            return Self {
                base,
                number: Some(n),
                name,
            };
        }
        Self {
            base: name,
            number: None,
            name,
        }
    }
}

impl Ord for Ordinal<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.number, other.number) {
            (Some(a), Some(b)) => self.base.cmp(other.base).then(a.cmp(&b)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => self.name.cmp(other.name),
        }
    }
}

impl PartialOrd for Ordinal<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The DNS label CoreDNS gives an endpoint without a hostname: its address
/// with `.`/`:` turned into `-` (`10-244-1-7`, `fd00--7`), padded with `0`
/// where IPv6 would leave a leading or trailing `-`.
pub fn dashed_ip(ip: IpAddr) -> String {
    let mut s = ip.to_string().replace(['.', ':'], "-");
    if s.starts_with('-') {
        s.insert(0, '0');
    }
    if s.ends_with('-') {
        s.push('0');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_sort_numerically_and_names_without_last() {
        let mut names = vec!["web-10", "db", "web-2", "web-0", "api-1", "web-01", "cache"];
        names.sort_by(|a, b| Ordinal::parse(a).cmp(&Ordinal::parse(b)));
        assert_eq!(
            names,
            ["api-1", "web-0", "web-2", "web-10", "cache", "db", "web-01"]
        );
        assert_eq!(Ordinal::parse("web-12").number, Some(12));
        assert_eq!(Ordinal::parse("web-12").base, "web");
        assert_eq!(Ordinal::parse("-3").number, None);
        assert_eq!(Ordinal::parse("web-").number, None);
    }

    #[test]
    fn dashed_ips() {
        assert_eq!(dashed_ip("10.244.1.7".parse().unwrap()), "10-244-1-7");
        assert_eq!(dashed_ip("fd00::7".parse().unwrap()), "fd00--7");
        assert_eq!(dashed_ip("fd00::".parse().unwrap()), "fd00--0");
        assert_eq!(dashed_ip("::1".parse().unwrap()), "0--1");
    }

    fn slice(yaml: &str) -> EndpointSlice {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn endpoint_conditions_default_like_kubernetes() {
        let s = slice(
            r#"
metadata: {name: web-abc, namespace: Default, labels: {kubernetes.io/service-name: Nginx}}
addressType: IPv4
ports: [{name: web, port: 80}]
endpoints:
  - addresses: ["10.0.0.1"]
    hostname: Web-0
    targetRef: {kind: Pod, name: web-0}
  - addresses: ["10.0.0.2"]
    conditions: {ready: false, terminating: true}
"#,
        );
        let r = SliceRecord::try_from(&s).unwrap();
        assert_eq!(r.key, ObjectKey::new("default", "web-abc"));
        assert_eq!(r.service, "nginx");
        assert_eq!(r.ports[0].protocol, "tcp");
        let e0 = &r.endpoints[0];
        assert!(e0.ready && e0.serving && !e0.terminating);
        assert_eq!(e0.hostname.as_deref(), Some("web-0"));
        assert_eq!(e0.pod.as_deref(), Some("web-0"));
        let e1 = &r.endpoints[1];
        assert!(!e1.ready && !e1.serving && e1.terminating);
    }

    #[test]
    fn bad_slices_are_rejected() {
        let no_label = slice("metadata: {name: x, namespace: d}\naddressType: IPv4\nendpoints: []");
        assert!(SliceRecord::try_from(&no_label).is_err());
        let bad_ip = slice(
            "metadata: {name: x, namespace: d, labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\nendpoints: [{addresses: [nope]}]",
        );
        let err = SliceRecord::try_from(&bad_ip).unwrap_err();
        assert!(
            err.to_string().contains("\"nope\" is not an IP address"),
            "{err}"
        );
    }

    #[test]
    fn service_kinds() {
        let svc =
            |y: &str| ServiceRecord::try_from(&serde_yaml_ng::from_str::<Service>(y).unwrap());
        let headless = svc("metadata: {name: a, namespace: d}\nspec: {clusterIP: None}").unwrap();
        assert_eq!(headless.kind, ServiceKind::Headless);
        let dual = svc(
            "metadata: {name: a, namespace: d}\nspec: {clusterIP: 10.0.0.1, clusterIPs: [10.0.0.1, 'fd00::1'], publishNotReadyAddresses: true}",
        )
        .unwrap();
        assert_eq!(
            dual.kind,
            ServiceKind::ClusterIp(vec![
                "10.0.0.1".parse().unwrap(),
                "fd00::1".parse().unwrap()
            ])
        );
        assert!(dual.publish_not_ready);
        let ext = svc(
            "metadata: {name: a, namespace: d}\nspec: {type: ExternalName, externalName: Example.COM.}",
        )
        .unwrap();
        assert_eq!(ext.kind, ServiceKind::ExternalName("example.com".into()));
        assert!(svc("metadata: {name: a}\nspec: {}").is_err());
        assert!(svc("metadata: {name: a, namespace: d}\nspec: {type: ExternalName}").is_err());
    }

    #[test]
    fn pods_terminating_not_ready_no_ip_ipv6() {
        let pod =
            |y: &str| PodRecord::try_from(&serde_yaml_ng::from_str::<Pod>(y).unwrap()).unwrap();
        let p = pod(
            "metadata: {name: web-0, namespace: d, deletionTimestamp: '2026-01-01T00:00:00Z'}\nspec: {containers: [], hostname: web-0, subdomain: nginx}\nstatus: {podIP: 10.1.1.1, conditions: [{type: Ready, status: 'False'}]}",
        );
        assert!(p.terminating && !p.ready);
        assert_eq!(p.ips, vec!["10.1.1.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(p.subdomain.as_deref(), Some("nginx"));
        let p = pod("metadata: {name: x, namespace: d}\nstatus: {}");
        assert!(p.ips.is_empty());
        let p = pod(
            "metadata: {name: x, namespace: d}\nstatus: {podIPs: [{ip: 'fd00::5'}, {ip: 10.0.0.5}], conditions: [{type: Ready, status: 'True'}]}",
        );
        assert!(p.ready);
        assert_eq!(p.ips.len(), 2);
    }
}
