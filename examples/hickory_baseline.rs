//! The hickory-server baseline: our `Index`, served through hickory-server.
//!
//! headless-dns has its own UDP/TCP listeners and answer encoder. This example
//! is the alternative it was measured against, kept runnable so the decision
//! can be checked again (`bench/hickory_baseline.sh`, docs/performance.md):
//! the same manifests are loaded into the same `Index` the server uses, and a
//! minimal hickory-server `RequestHandler` answers from it, building hickory
//! `Record`s per query and letting hickory encode and send them.
//!
//! It answers what the bench load asks, as headless-dns does for a headless
//! service: pod A/AAAA (`web-0.svc.ns.svc.<zone>`), the service's A/AAAA
//! (every served endpoint), SRV with A/AAAA glue (`_port._proto.svc...`) and
//! NXDOMAIN/NODATA with an SOA; REFUSED outside the zone. Nothing else
//! (ClusterIP, PTR, EDNS, pending pods) is modelled.
//!
//! Usage: `hickory_baseline --manifests FILE [--listen 127.0.0.1:5397] [--workers 1]`
//! (one worker: a current-thread runtime, hickory's cheapest setting on one core).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use headless_dns::index::{
    Index, IndexWriter, ServiceView, ZoneSettings, record::ServiceKind, service_key,
};
use headless_dns::sources::Differ;
use headless_dns::sources::file::{ManifestReader, Manifests};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

/// TTL of positive answers and the SOA's negative TTL (our defaults).
const TTL: u32 = 5;

/// Answers from the index; one instance shared by every request.
struct IndexHandler {
    index: Index,
    zone: LowerName,
    /// `ns.dns.<zone>` and `hostmaster.<zone>`, for the SOA.
    ns: Name,
    mbox: Name,
}

/// What one query resolved to: the rcode and the three record sections.
#[derive(Default)]
struct Answer {
    code: ResponseCode,
    answers: Vec<Record>,
    soa: Vec<Record>,
    additionals: Vec<Record>,
}

impl IndexHandler {
    fn new(index: Index, zone: &str) -> Self {
        let zone = Name::from_ascii(zone).expect("zone name").to_lowercase();
        let under = |label: &str| Name::from_ascii(label).unwrap().append_domain(&zone);
        IndexHandler {
            index,
            ns: under("ns.dns").unwrap(),
            mbox: under("hostmaster").unwrap(),
            zone: LowerName::new(&zone),
        }
    }

    /// The zone's SOA (serial = the index's), for negative answers.
    fn soa(&self) -> Record {
        let soa = SOA::new(
            self.ns.clone(),
            self.mbox.clone(),
            self.index.serial(),
            7200,
            1800,
            86400,
            TTL,
        );
        Record::from_rdata(Name::from(&self.zone), TTL, RData::SOA(soa))
    }

    /// Resolves `name`/`qtype` under our zone.
    fn resolve(&self, lower: &LowerName, qtype: RecordType) -> Answer {
        let name: &Name = lower;
        let mut out = Answer::default();
        if !self.zone.zone_of(lower) {
            out.code = ResponseCode::Refused;
            return out;
        }
        // Labels left of the zone: [host,] svc, ns, "svc" or _port, _proto, svc,
        // ns, "svc"; borrowed into an array (this handler allocates only what
        // hickory's `Record`s need: an owner name each, and the lists).
        let mut labels: [&[u8]; 6] = [&[]; 6];
        let n = (name.num_labels() - self.zone.num_labels()) as usize;
        if n > labels.len() {
            out.code = ResponseCode::NXDomain;
            out.soa.push(self.soa());
            return out;
        }
        for (slot, label) in labels.iter_mut().zip(name.iter()) {
            *slot = label;
        }
        let rel = &labels[..n];
        let found = match rel {
            [svc, ns, b"svc"] => self
                .view(ns, svc)
                .map(|v| self.service(&v, name, qtype, &mut out)),
            [host, svc, ns, b"svc"] => self.view(ns, svc).and_then(|v| {
                let addrs = v.name(host)?;
                push_addrs(&mut out.answers, name, addrs.iter(), qtype);
                Some(())
            }),
            [port, proto, svc, ns, b"svc"] if qtype == RecordType::SRV => self
                .view(ns, svc)
                .map(|v| self.srv(&v, name, port, proto, &mut out)),
            [] => {
                if qtype == RecordType::SOA {
                    out.answers.push(self.soa());
                }
                Some(())
            }
            _ => None,
        };
        if found.is_none() {
            out.code = ResponseCode::NXDomain;
        }
        if out.answers.is_empty() {
            out.soa.push(self.soa());
        }
        out
    }

    /// A served headless service (a ClusterIP one is not modelled: NXDOMAIN).
    fn view(&self, ns: &[u8], svc: &[u8]) -> Option<Arc<ServiceView>> {
        let key = service_key(
            std::str::from_utf8(ns).ok()?,
            std::str::from_utf8(svc).ok()?,
        );
        self.index
            .service(&key)
            .filter(|v| v.exists && v.record.kind == ServiceKind::Headless)
    }

    /// The service name: every served endpoint's addresses, in ordinal order.
    fn service(&self, v: &ServiceView, name: &Name, qtype: RecordType, out: &mut Answer) {
        for e in v.endpoints().filter(|e| e.served) {
            push_addrs(&mut out.answers, name, e.addresses.iter(), qtype);
        }
    }

    /// `_port._proto.<svc>`: one SRV per served endpoint with that named
    /// port, its addresses as glue.
    fn srv(&self, v: &ServiceView, name: &Name, port: &[u8], proto: &[u8], out: &mut Answer) {
        let (Some(port), Some(proto)) = (port.strip_prefix(b"_"), proto.strip_prefix(b"_")) else {
            return;
        };
        let service = name.trim_to(name.num_labels() as usize - 2);
        let targets: Vec<_> = v
            .endpoints()
            .filter(|e| e.served)
            .filter_map(|e| {
                let p = e.ports.iter().find(|p| {
                    p.name.as_deref().map(str::as_bytes) == Some(port)
                        && p.protocol.as_bytes() == proto
                })?;
                Some((e, p.port))
            })
            .collect();
        // Equal weights summing to about 100, as headless-dns writes them.
        let weight = (100 / targets.len().max(1)).max(1) as u16;
        for (e, port) in targets {
            let target = Name::from_ascii(e.label)
                .and_then(|n| n.append_domain(&service))
                .expect("endpoint name");
            let srv = SRV::new(0, weight, port, target.clone());
            out.answers
                .push(Record::from_rdata(name.clone(), TTL, RData::SRV(srv)));
            push_addrs(
                &mut out.additionals,
                &target,
                e.addresses.iter(),
                RecordType::ANY,
            );
        }
    }
}

/// A/AAAA records of `ips` owned by `name`: the family `qtype` asks for
/// (both for ANY, as glue).
fn push_addrs(
    out: &mut Vec<Record>,
    name: &Name,
    ips: impl Iterator<Item = IpAddr>,
    qtype: RecordType,
) {
    for ip in ips {
        let rdata = match (ip, qtype) {
            (IpAddr::V4(a), RecordType::A | RecordType::ANY) => RData::A(A(a)),
            (IpAddr::V6(a), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(a)),
            _ => continue,
        };
        out.push(Record::from_rdata(name.clone(), TTL, rdata));
    }
}

#[async_trait::async_trait]
impl RequestHandler for IndexHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let answer = match request.request_info() {
            Ok(info) => self.resolve(info.query.name(), info.query.query_type()),
            Err(_) => Answer {
                code: ResponseCode::FormErr,
                ..Answer::default()
            },
        };
        metadata.authoritative = answer.code != ResponseCode::Refused;
        metadata.response_code = answer.code;
        let response = builder.build(
            metadata,
            answer.answers.iter(),
            [],
            answer.soa.iter(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => {
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// The index of `manifests`, built as `export-zone` builds it.
fn load(manifests: PathBuf, zone: &str) -> Index {
    let mut writer = IndexWriter::new(
        ZoneSettings {
            zone: zone.into(),
            ttl: TTL,
            endpoint_pod_names: false,
        },
        &[],
    );
    let reader = ManifestReader::new(Manifests::Files(vec![manifests]));
    writer.apply_all(Differ::default().diff(reader.merged()));
    writer.index()
}

struct Args {
    manifests: PathBuf,
    listen: SocketAddr,
    workers: usize,
}

fn args() -> Args {
    let mut a = Args {
        manifests: PathBuf::new(),
        listen: "127.0.0.1:5397".parse().unwrap(),
        workers: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--manifests" => a.manifests = value.into(),
            "--listen" => a.listen = value.parse().expect("--listen ADDR:PORT"),
            "--workers" => a.workers = value.parse().expect("--workers N"),
            _ => panic!(
                "unknown flag {flag}; usage: --manifests FILE [--listen ADDR:PORT] [--workers N]"
            ),
        }
    }
    assert!(
        !a.manifests.as_os_str().is_empty(),
        "--manifests FILE is required"
    );
    a
}

fn main() -> std::io::Result<()> {
    let args = args();
    let index = load(args.manifests, "cluster.local");
    eprintln!(
        "hickory_baseline: {} services, {} endpoints; listening on {} (udp, tcp)",
        index
            .stats()
            .services
            .load(std::sync::atomic::Ordering::Relaxed),
        index
            .stats()
            .endpoints
            .load(std::sync::atomic::Ordering::Relaxed),
        args.listen
    );
    let runtime = if args.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let mut server = Server::new(IndexHandler::new(index, "cluster.local"));
        // The same receive buffer as headless-dns's default (udp_receive_buffer_kb).
        let udp = socket2::Socket::new(
            socket2::Domain::for_address(args.listen),
            socket2::Type::DGRAM,
            None,
        )?;
        udp.set_recv_buffer_size(256 * 1024)?;
        udp.set_nonblocking(true)?;
        udp.bind(&args.listen.into())?;
        server.register_socket(tokio::net::UdpSocket::from_std(udp.into())?);
        let tcp = tokio::net::TcpListener::bind(args.listen).await?;
        server.register_listener(tcp, Duration::from_secs(10), 64);
        tokio::select! {
            r = server.block_until_done() => r.map_err(std::io::Error::other),
            _ = headless_dns::shutdown_signal() => {
                server.shutdown_gracefully().await.map_err(std::io::Error::other)
            }
        }
    })
}
