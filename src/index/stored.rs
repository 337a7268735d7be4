//! The writer's copy of an EndpointSlice, packed.
//!
//! The writer must keep every slice it has seen: when one slice of a service
//! changes, the service's view is rebuilt from all of its slices. A
//! [`SliceRecord`] spends three heap blocks on each endpoint (hostname, pod,
//! addresses); [`StoredSlice`] keeps the same facts in one block per slice:
//! the endpoints (19 bytes each), then the packed addresses (see
//! [`super::addrs`]), then one string holding every name (see `strings`).
//! The port list is shared with every slice that has the same ports (the
//! writer interns them), and a StatefulSet endpoint, whose hostname is its
//! pod name, stores it once. One block rather than three: 10,000 slices
//! (100,000 endpoints) take ~0.5 MB less, in the map's entries and in the
//! allocator's rounding.

use std::sync::Arc;

use super::addrs::{AddrSpan, AddrWord, Addrs};
use super::record::{PortRecord, SliceRecord};
use super::strings::StrSpan;

/// Bytes of one endpoint in [`StoredSlice`]'s block: hostname and pod
/// ([`StrSpan`]s), addresses ([`AddrSpan`]), flags (bit 0 ready, 1 serving,
/// 2 terminating).
const ENDPOINT_BYTES: usize = 19;

/// An EndpointSlice as the writer keeps it; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSlice {
    /// The slice's ports.
    pub ports: Arc<[PortRecord]>,
    /// The Service it belongs to, in the text.
    service: StrSpan,
    /// How many endpoints the block starts with.
    endpoints: u32,
    /// Where the text starts in the block (the addresses end there).
    text_at: u32,
    block: Box<[u8]>,
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
        let mut addrs: Vec<AddrWord> = Vec::with_capacity(
            r.endpoints
                .iter()
                .flat_map(|e| &e.addresses)
                .map(|ip| if ip.is_ipv4() { 1 } else { 4 })
                .sum(),
        );
        let mut endpoints = Vec::with_capacity(r.endpoints.len() * ENDPOINT_BYTES);
        let push = StrSpan::push;
        let service = push(&mut text, Some(&r.service));
        for e in &r.endpoints {
            let hostname = push(&mut text, e.hostname.as_deref());
            let pod = if e.pod.is_some() && e.pod == e.hostname {
                hostname
            } else {
                push(&mut text, e.pod.as_deref())
            };
            let addrs = AddrSpan::push(&mut addrs, e.addresses.iter());
            let flags = e.ready as u8 | (e.serving as u8) << 1 | (e.terminating as u8) << 2;
            endpoints.extend(hostname.to_bytes());
            endpoints.extend(pod.to_bytes());
            endpoints.extend(addrs.to_bytes());
            endpoints.push(flags);
        }
        let text_at = endpoints.len() + addrs.len() * 4;
        let mut block = endpoints;
        block.reserve_exact(text_at - block.len() + text.len());
        block.extend(addrs.iter().flatten());
        block.extend(text.as_bytes());
        Self {
            service,
            ports,
            endpoints: r.endpoints.len() as u32,
            text_at: text_at as u32,
            block: block.into_boxed_slice(),
        }
    }

    /// The Service it belongs to.
    pub fn service(&self) -> &str {
        self.text(self.service).unwrap_or_default()
    }

    fn text(&self, s: StrSpan) -> Option<&str> {
        s.get_utf8(&self.block[self.text_at as usize..])
    }

    /// The slice's endpoints, in the order the source gave them.
    pub fn endpoints(&self) -> impl Iterator<Item = EndpointRef<'_>> {
        let (entries, rest) = self
            .block
            .split_at(self.endpoints as usize * ENDPOINT_BYTES);
        let words = rest[..self.text_at as usize - entries.len()]
            .as_chunks::<4>()
            .0;
        entries
            .as_chunks::<ENDPOINT_BYTES>()
            .0
            .iter()
            .map(move |e| {
                let span =
                    |at: usize| [e[at], e[at + 1], e[at + 2], e[at + 3], e[at + 4], e[at + 5]];
                let flags = e[18];
                EndpointRef {
                    hostname: self.text(StrSpan::from_bytes(span(0))),
                    pod: self.text(StrSpan::from_bytes(span(6))),
                    addresses: AddrSpan::from_bytes(span(12)).get(words),
                    ready: flags & 1 != 0,
                    serving: flags & 2 != 0,
                    terminating: flags & 4 != 0,
                }
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
            &s.block[s.text_at as usize..],
            b"webweb-0other",
            "a pod named like its hostname is stored once"
        );
        assert_eq!(s.block.len(), 2 * ENDPOINT_BYTES + 5 * 4 + 13);
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
        assert_eq!(std::mem::size_of::<StoredSlice>(), 48);
        assert_eq!(s, StoredSlice::new(&r.clone(), r.ports.as_slice().into()));
    }
}
