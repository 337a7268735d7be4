//! The writer's copy of an EndpointSlice, packed.
//!
//! The writer must keep every slice it has seen: when one slice of a service
//! changes, the service's view is rebuilt from all of its slices. A
//! [`SliceRecord`] spends three heap blocks on each endpoint (hostname, pod,
//! addresses); [`StoredSlice`] keeps the same facts in three blocks per slice:
//! one string holding every name (see `strings`), one packed address
//! array (see [`super::addrs`]) and one endpoint array. The port list is
//! shared with every slice that has the same ports (the writer interns them),
//! and a StatefulSet endpoint, whose hostname is its pod name, stores it once.

use std::sync::Arc;

use super::addrs::{AddrSpan, AddrWord, Addrs};
use super::record::{PortRecord, SliceRecord};
use super::strings::StrSpan;

/// One endpoint, pointing into its slice's arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StoredEndpoint {
    hostname: StrSpan,
    pod: StrSpan,
    addrs: AddrSpan,
    /// bit 0 ready, 1 serving, 2 terminating.
    flags: u8,
}

/// An EndpointSlice as the writer keeps it; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSlice {
    /// The slice's ports.
    pub ports: Arc<[PortRecord]>,
    /// The Service it belongs to, in `text`.
    service: StrSpan,
    text: Box<str>,
    addrs: Box<[AddrWord]>,
    endpoints: Box<[StoredEndpoint]>,
}

/// One endpoint of a [`StoredSlice`], borrowed.
#[derive(Clone, Copy, Debug)]
pub struct EndpointRef<'a> {
    /// `hostname`, lower-case.
    pub hostname: Option<&'a str>,
    /// The Pod it points at.
    pub pod: Option<&'a str>,
    /// Its addresses.
    pub addresses: Addrs<'a>,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
}

impl StoredSlice {
    /// Packs `r` (its key stays with the caller's map); `ports` is its port
    /// list, interned by the caller.
    pub fn new(r: &SliceRecord, ports: Arc<[PortRecord]>) -> Self {
        let mut text = String::with_capacity(r.service.len());
        let mut addrs = Vec::with_capacity(
            r.endpoints
                .iter()
                .flat_map(|e| &e.addresses)
                .map(|ip| if ip.is_ipv4() { 1 } else { 4 })
                .sum(),
        );
        let mut endpoints = Vec::with_capacity(r.endpoints.len());
        let push = StrSpan::push;
        let service = push(&mut text, Some(&r.service));
        for e in &r.endpoints {
            let hostname = push(&mut text, e.hostname.as_deref());
            let pod = if e.pod.is_some() && e.pod == e.hostname {
                hostname
            } else {
                push(&mut text, e.pod.as_deref())
            };
            endpoints.push(StoredEndpoint {
                hostname,
                pod,
                addrs: AddrSpan::push(&mut addrs, e.addresses.iter()),
                flags: e.ready as u8 | (e.serving as u8) << 1 | (e.terminating as u8) << 2,
            });
        }
        Self {
            service,
            ports,
            text: text.into_boxed_str(),
            addrs: addrs.into_boxed_slice(),
            endpoints: endpoints.into_boxed_slice(),
        }
    }

    /// The Service it belongs to.
    pub fn service(&self) -> &str {
        self.text(self.service).unwrap_or_default()
    }

    fn text(&self, s: StrSpan) -> Option<&str> {
        s.get(&self.text)
    }

    /// The slice's endpoints, in the order the source gave them.
    pub fn endpoints(&self) -> impl Iterator<Item = EndpointRef<'_>> {
        self.endpoints.iter().map(|e| EndpointRef {
            hostname: self.text(e.hostname),
            pod: self.text(e.pod),
            addresses: e.addrs.get(&self.addrs),
            ready: e.flags & 1 != 0,
            serving: e.flags & 2 != 0,
            terminating: e.flags & 4 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{EndpointRecord, ObjectKey};

    #[test]
    fn packs_and_unpacks_every_field() {
        let r = SliceRecord {
            key: ObjectKey::new("d", "web-abc"),
            service: "web".into(),
            ports: vec![PortRecord {
                name: Some("web".into()),
                protocol: "tcp".into(),
                port: 80,
            }],
            endpoints: vec![
                EndpointRecord {
                    hostname: Some("web-0".into()),
                    addresses: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
                    ready: true,
                    serving: true,
                    terminating: false,
                    pod: Some("web-0".into()),
                },
                EndpointRecord {
                    hostname: None,
                    addresses: vec![],
                    ready: false,
                    serving: true,
                    terminating: true,
                    pod: Some("other".into()),
                },
            ],
        };
        let s = StoredSlice::new(&r, r.ports.as_slice().into());
        assert_eq!(
            &*s.text, "webweb-0other",
            "a pod named like its hostname is stored once"
        );
        let back: Vec<EndpointRecord> = s
            .endpoints()
            .map(|e| EndpointRecord {
                hostname: e.hostname.map(str::to_string),
                addresses: e.addresses.to_vec(),
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
                pod: e.pod.map(str::to_string),
            })
            .collect();
        assert_eq!(back, r.endpoints);
        assert_eq!(s.service(), "web");
        assert_eq!(&*s.ports, &r.ports[..]);
        assert_eq!(std::mem::size_of::<StoredEndpoint>(), 20);
        assert_eq!(s, StoredSlice::new(&r.clone(), r.ports.as_slice().into()));
    }
}
