//! SRV records, written per query from a view's endpoints.
//!
//! An SRV set is the same bytes around each target's name and port, so a view
//! keeps per SRV name only where its protocol and port name are and how big
//! its records are (measured once, at build); the records themselves are
//! written on demand, with the targets' addresses as glue.

use super::super::addrs::Addrs;
use super::super::record::ServiceKind;
use super::super::strings::StrSpan;
use super::ServiceView;
use crate::wire::rrset::{push_address, push_srv};
use crate::wire::{RecordWriter, RrSetRef};

/// One `_<port>._<proto>` SRV name of a view.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SrvName {
    pub(super) port: StrSpan,
    pub(super) proto: StrSpan,
    /// ClusterIP services: the port (their one target is the service itself).
    pub(super) cluster_port: u16,
    count: u16,
    answer_len: u32,
    glue_count: u16,
    glue_len: u32,
}

impl SrvName {
    /// The SRV name `_<port>._<proto>` (sizes still unmeasured).
    pub(super) fn new(port: StrSpan, proto: StrSpan, cluster_port: u16) -> Self {
        SrvName {
            port,
            proto,
            cluster_port,
            ..SrvName::default()
        }
    }
}

/// The SRV records of one name of a view, written on demand.
#[derive(Clone, Copy, Debug)]
pub struct Srv<'a> {
    view: &'a ServiceView,
    name: &'a SrvName,
}

/// One section of an [`Srv`] (its answer, or its glue as the additional
/// section), as records the response writes.
#[derive(Clone, Copy, Debug)]
pub struct SrvSection<'a> {
    srv: Srv<'a>,
    glue: bool,
}

impl<'a> Srv<'a> {
    /// SRV records in the answer.
    pub fn count(&self) -> u16 {
        self.name.count
    }

    /// Bytes of the answer records.
    pub fn answer_len(&self) -> usize {
        self.name.answer_len as usize
    }

    /// Glue records (the targets' addresses).
    pub fn glue_count(&self) -> u16 {
        self.name.glue_count
    }

    /// Bytes of the glue records.
    pub fn glue_len(&self) -> usize {
        self.name.glue_len as usize
    }

    /// The answer section.
    pub fn answer(self) -> SrvSection<'a> {
        SrvSection {
            srv: self,
            glue: false,
        }
    }

    /// The additional section: the glue.
    pub fn glue(self) -> SrvSection<'a> {
        SrvSection {
            srv: self,
            glue: true,
        }
    }

    /// Appends the SRV records as they follow the question
    /// `_<port>._<proto>.<service>`, in ordinal order of their targets.
    pub fn write_answer(&self, out: &mut Vec<u8>) {
        let v = self.view;
        let n = self.name.count as usize;
        let weight = 100usize.checked_div(n).map_or(0, |w| w.max(1) as u16);
        v.srv_targets(self.name, |label, port, _| {
            push_srv(out, v.ttl, weight, port, label, v.fqdn_wire());
        });
    }

    /// Appends the glue: each target's addresses, owned by a pointer to the
    /// target's name in the answer written by [`Srv::write_answer`]. Returns
    /// how many records it wrote.
    pub fn write_glue(&self, out: &mut Vec<u8>) -> u16 {
        let v = self.view;
        let fqdn = v.fqdn_wire();
        let svc_at = 12 + (2 + self.name.port.byte_len()) + (2 + self.name.proto.byte_len());
        let mut at = svc_at + fqdn.len() + 4;
        let mut previous: Option<Option<&[u8]>> = None;
        let mut written = 0u16;
        v.srv_targets(self.name, |label, _, glue| {
            let name_at = at + 18;
            at = name_at + label.map_or(0, |l| 1 + l.len()) + fqdn.len();
            // A target listed twice (two ports of one name) gets its glue once.
            if previous == Some(label) {
                return;
            }
            previous = Some(label);
            written = written.saturating_add(glue.len() as u16);
            match label {
                Some(_) if name_at <= 0x3FFF => glue.write_records(out, name_at as u16, v.ttl),
                // Beyond pointer reach: spell the label, point at the question.
                Some(l) => {
                    for ip in glue.iter() {
                        out.push(l.len() as u8);
                        out.extend_from_slice(l);
                        push_address(out, svc_at as u16, v.ttl, &ip);
                    }
                }
                None => glue.write_records(out, svc_at as u16, v.ttl),
            }
        });
        written
    }
}

impl RecordWriter for SrvSection<'_> {
    fn count(&self) -> u16 {
        match self.glue {
            false => self.srv.count(),
            true => self.srv.glue_count(),
        }
    }

    fn len(&self) -> usize {
        match self.glue {
            false => self.srv.answer_len(),
            true => self.srv.glue_len(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self.glue {
            false => self.srv.write_answer(out),
            true => {
                self.srv.write_glue(out);
            }
        }
    }
}

impl ServiceView {
    /// The SRV records of `_<port>._<proto>` (labels without `_`).
    pub fn srv(&self, port: &[u8], proto: &[u8]) -> Option<Srv<'_>> {
        self.srv
            .iter()
            .find(|s| {
                self.text(s.port).as_bytes() == port && self.text(s.proto).as_bytes() == proto
            })
            .map(|name| Srv { view: self, name })
    }

    /// True when some SRV name of the service has protocol `proto`.
    pub fn has_srv_proto(&self, proto: &[u8]) -> bool {
        self.srv
            .iter()
            .any(|s| self.text(s.proto).as_bytes() == proto)
    }

    /// Calls `f(target label, port, target addresses)` for each SRV record of
    /// `s`, in answer order; the label is `None` for the service itself.
    fn srv_targets<'s>(&'s self, s: &SrvName, mut f: impl FnMut(Option<&'s [u8]>, u16, Addrs<'s>)) {
        if let ServiceKind::ClusterIp(_) = &self.record.kind {
            f(None, s.cluster_port, self.cluster_ips.get(&self.addrs));
            return;
        }
        let (port, proto) = (self.text(s.port), self.text(s.proto));
        for (i, e) in self.entries.iter().enumerate() {
            if e.flags & super::NAMED == 0 {
                continue;
            }
            for p in self.ports[e.ports as usize].iter() {
                if p.name.as_deref() == Some(port) && p.protocol == proto {
                    f(Some(self.label_bytes(i)), p.port, e.addrs.get(&self.addrs));
                }
            }
        }
    }

    /// Measures each SRV name's records by writing them once, so that a
    /// response can be sized before it is written.
    pub(super) fn measure_srv(&mut self) {
        let mut scratch = Vec::new();
        let sizes: Vec<SrvName> = self
            .srv
            .iter()
            .map(|name| {
                let mut count = 0u16;
                self.srv_targets(name, |_, _, _| count = count.saturating_add(1));
                let probe = SrvName { count, ..*name };
                let srv = Srv {
                    view: self,
                    name: &probe,
                };
                scratch.clear();
                srv.write_answer(&mut scratch);
                let answer_len = scratch.len() as u32;
                scratch.clear();
                let glue_count = srv.write_glue(&mut scratch);
                SrvName {
                    answer_len,
                    glue_count,
                    glue_len: scratch.len() as u32,
                    ..probe
                }
            })
            .collect();
        self.srv = sizes.into_boxed_slice();
    }
}

impl ServiceView {
    /// Pre-encodes the SRV set of the service name itself (CoreDNS answers it
    /// with every port, named or not): one record per (served endpoint, port)
    /// of a headless service with the endpoints' addresses as glue, one per
    /// port of a ClusterIP service targeting the service name. Owned by the
    /// question, so the glue's pointers to the targets are fixed; appended to
    /// the view's byte buffer at publish time.
    pub(super) fn encode_bare_srv(&mut self) {
        if self.fqdn.len == 0 || self.cname.is_some() {
            return;
        }
        let mut targets: Vec<(Option<&[u8]>, u16, Addrs<'_>)> = Vec::new();
        match &self.record.kind {
            ServiceKind::ClusterIp(_) => {
                let ips = self.cluster_ips.get(&self.addrs);
                targets.extend(self.record.ports.iter().map(|p| (None, p.port, ips)));
            }
            _ => {
                for (i, e) in self.entries.iter().enumerate() {
                    if e.flags & super::NAMED != 0 {
                        let (label, ips) = (self.label_bytes(i), e.addrs.get(&self.addrs));
                        let mut ports: Vec<u16> = self.ports[e.ports as usize]
                            .iter()
                            .map(|p| p.port)
                            .collect();
                        ports.sort_unstable();
                        targets.extend(ports.into_iter().map(|p| (Some(label), p, ips)));
                    }
                }
            }
        }
        // Two protocols on one port number make one SRV record, not two.
        let mut seen = std::collections::HashSet::new();
        targets.retain(|t| seen.insert((t.0, t.1)));
        targets.truncate(u16::MAX as usize);
        let fqdn = self.fqdn_wire();
        let (mut answer, mut glue) = (Vec::new(), Vec::new());
        let weight = 100usize
            .checked_div(targets.len())
            .map_or(0, |w| w.max(1) as u16);
        let (mut glue_count, mut previous) = (0u16, None);
        let mut at = 12 + fqdn.len() + 4;
        for (label, port, ips) in &targets {
            push_srv(&mut answer, self.ttl, weight, *port, *label, fqdn);
            let name_at = at + 18;
            at = 12 + fqdn.len() + 4 + answer.len();
            if previous == Some(*label) {
                continue;
            }
            previous = Some(*label);
            glue_count = glue_count.saturating_add(ips.len() as u16);
            match label {
                Some(l) if name_at > 0x3FFF => {
                    for ip in ips.iter() {
                        glue.push(l.len() as u8);
                        glue.extend_from_slice(l);
                        push_address(&mut glue, 12, self.ttl, &ip);
                    }
                }
                Some(_) => ips.write_records(&mut glue, name_at as u16, self.ttl),
                None => ips.write_records(&mut glue, 12, self.ttl),
            }
        }
        let count = targets.len() as u16;
        drop(targets);
        let mut wire = std::mem::take(&mut self.wire).into_vec();
        self.bare_srv = super::WireSpan {
            off: wire.len() as u32,
            len: answer.len() as u32,
            count,
        };
        wire.extend_from_slice(&answer);
        self.bare_glue = super::WireSpan {
            off: wire.len() as u32,
            len: glue.len() as u32,
            count: glue_count,
        };
        wire.extend_from_slice(&glue);
        self.wire = wire.into_boxed_slice();
    }

    /// The SRV set of the service name itself and its glue (see
    /// `ServiceView::encode_bare_srv`).
    pub fn bare_srv(&self) -> (RrSetRef<'_>, RrSetRef<'_>) {
        (self.bytes(self.bare_srv), self.bytes(self.bare_glue))
    }
}
