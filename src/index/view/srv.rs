//! SRV records, written per query from a view's endpoints.
//!
//! An SRV set is the same bytes around each target's name and port, so a view
//! keeps per SRV name only where its protocol and port name are and how big
//! its records are (measured once, at build); the records themselves are
//! written on demand, with the targets' addresses as glue. The SRV set of
//! the service name itself (every port, named or not) is one more such name,
//! [`SrvName::BARE`]: pre-encoding it took ~420 bytes per headless service of
//! ten pods, a tenth of the index at 100,000 endpoints, for a rare query.

use super::super::addrs::Addrs;
use super::super::record::ServiceKind;
use super::super::strings::StrSpan;
use super::ServiceView;
use crate::wire::RecordWriter;
use crate::wire::rrset::{push_address, push_srv};

/// One `_<port>._<proto>` SRV name of a view, or the service name itself.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SrvName {
    /// The service name itself ([`SrvName::BARE`]): every port, no `port`/`proto`.
    bare: bool,
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
    /// The service name itself: every port, named or not (sizes still unmeasured).
    pub(super) const BARE: SrvName = SrvName {
        bare: true,
        port: StrSpan::NONE,
        proto: StrSpan::NONE,
        cluster_port: 0,
        count: 0,
        answer_len: 0,
        glue_count: 0,
        glue_len: 0,
    };

    /// Bytes of the question name before the service's own name: `_<port>._<proto>`.
    fn prefix_len(&self) -> usize {
        if self.bare {
            0
        } else {
            (2 + self.port.byte_len()) + (2 + self.proto.byte_len())
        }
    }

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
    /// `_<port>._<proto>.<service>` (or `<service>`), in ordinal order of their targets.
    pub fn write_answer(&self, out: &mut Vec<u8>) {
        self.write_answer_within(out, usize::MAX);
    }

    /// Appends the first SRV records of [`Srv::write_answer`] that fit in
    /// `room` bytes, all of them whole; returns how many.
    pub fn write_answer_within(&self, out: &mut Vec<u8>, room: usize) -> u16 {
        let v = self.view;
        let n = self.name.count as usize;
        let weight = 100usize.checked_div(n).map_or(0, |w| w.max(1) as u16);
        let (end, fqdn) = (out.len().saturating_add(room), v.fqdn_wire());
        let mut written = 0u16;
        let mut full = false;
        v.srv_targets(self.name, |label, port, _| {
            // An SRV record: owner pointer, fixed fields, then the target.
            let len = 18 + label.map_or(0, |l| 1 + l.len()) + fqdn.len();
            full = full || out.len() + len > end;
            if !full {
                push_srv(out, v.ttl, weight, port, label, fqdn);
                written = written.saturating_add(1);
            }
        });
        written
    }

    /// Appends the glue: each target's addresses, owned by a pointer to the
    /// target's name in the answer written by [`Srv::write_answer`]. Returns
    /// how many records it wrote.
    pub fn write_glue(&self, out: &mut Vec<u8>) -> u16 {
        let v = self.view;
        let fqdn = v.fqdn_wire();
        let svc_at = 12 + self.name.prefix_len();
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

    fn write_within(&self, out: &mut Vec<u8>, room: usize) -> u16 {
        match self.glue {
            false => self.srv.write_answer_within(out, room),
            true => crate::wire::rrset::write_and_cut(self, out, room),
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
    /// The service name's own set ([`SrvName::BARE`]) has one record per
    /// (served endpoint, port number) of a headless service, the endpoint's
    /// port numbers ascending, and one per port number of a ClusterIP
    /// service targeting the service name (two protocols on one port number
    /// make one record), at most `u16::MAX` in all.
    fn srv_targets<'s>(&'s self, s: &SrvName, mut f: impl FnMut(Option<&'s [u8]>, u16, Addrs<'s>)) {
        if s.bare {
            return self.bare_srv_targets(f);
        }
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

    /// [`ServiceView::srv_targets`] of [`SrvName::BARE`].
    fn bare_srv_targets<'s>(&'s self, mut f: impl FnMut(Option<&'s [u8]>, u16, Addrs<'s>)) {
        let mut left = u16::MAX;
        let mut emit = |label, port, addrs| {
            if left > 0 {
                left -= 1;
                f(label, port, addrs);
            }
        };
        if let ServiceKind::ClusterIp(_) = &self.record.kind {
            let ips = self.cluster_ips.get(&self.addrs);
            let ports = &self.record.ports;
            for (i, p) in ports.iter().enumerate() {
                if !ports[..i].iter().any(|q| q.port == p.port) {
                    emit(None, p.port, ips);
                }
            }
            return;
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.flags & super::NAMED != 0 {
                let (label, ips) = (self.label_bytes(i), e.addrs.get(&self.addrs));
                // The endpoint's port numbers ascending, each once (no
                // allocation: port lists are a few entries long).
                let list = &self.ports[e.ports as usize];
                let mut last = None;
                while let Some(port) = list
                    .iter()
                    .map(|p| p.port)
                    .filter(|p| last.is_none_or(|l| *p > l))
                    .min()
                {
                    emit(Some(label), port, ips);
                    last = Some(port);
                }
            }
        }
    }

    /// Measures each SRV name's records (and the service name's own set) by
    /// writing them once, so that a response can be sized before it is written.
    pub(super) fn measure_srv(&mut self) {
        let mut scratch = Vec::new();
        let mut measure = |view: &ServiceView, name: &SrvName| {
            let mut count = 0u16;
            view.srv_targets(name, |_, _, _| count = count.saturating_add(1));
            let probe = SrvName { count, ..*name };
            let srv = Srv { view, name: &probe };
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
        };
        let sizes: Vec<SrvName> = self.srv.iter().map(|n| measure(self, n)).collect();
        self.srv = sizes.into_boxed_slice();
        if self.fqdn.len > 0 && self.cname.is_none() {
            self.bare_srv = measure(self, &SrvName::BARE);
        }
    }

    /// The SRV set of the service name itself (CoreDNS answers it with every
    /// port, named or not), written on demand like the `_<port>._<proto>`
    /// ones; empty for an ExternalName or a name out of range.
    pub fn bare_srv(&self) -> Srv<'_> {
        Srv {
            view: self,
            name: &self.bare_srv,
        }
    }
}
