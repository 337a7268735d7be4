//! Objects for tests of the index and of what observes it (the history):
//! one builder per kind, so the tests say only what differs.

use std::sync::Arc;

use super::{
    EndpointRecord, Object, ObjectKey, PortRecord, ServiceKind, ServiceRecord, SliceRecord,
};

/// A headless Service with no ports.
pub(crate) fn headless(ns: &str, name: &str) -> Object {
    Object::Service(ServiceRecord {
        key: ObjectKey::new(ns, name),
        kind: ServiceKind::Headless,
        ports: Arc::from([]),
        publish_not_ready: false,
    })
}

/// An EndpointSlice `ns/name` of `service` on TCP port 80 (named
/// `port_name`), with endpoints (hostname, address, ready); `pods` sets
/// each endpoint's pod to its hostname.
pub(crate) fn slice(
    (ns, name, service): (&str, &str, &str),
    port_name: Option<&str>,
    eps: &[(&str, &str, bool)],
    pods: bool,
) -> Object {
    Object::EndpointSlice(SliceRecord {
        key: ObjectKey::new(ns, name),
        service: service.into(),
        ports: vec![PortRecord {
            name: port_name.map(Into::into),
            protocol: "tcp".into(),
            port: 80,
        }],
        endpoints: eps
            .iter()
            .map(|(h, ip, ready)| EndpointRecord {
                hostname: Some(h.to_string()),
                addresses: vec![ip.parse().unwrap()],
                ready: *ready,
                serving: *ready,
                terminating: false,
                pod: pods.then(|| h.to_string()),
            })
            .collect(),
    })
}
