//! What the fuzz targets check, shared with the no-fuzzer replay in
//! `tests/hostile.rs` (which includes this file by path).
//!
//! `check_answer`: any bytes through `Answerer::answer`, as UDP and as TCP, on
//! two answerers with different settings over a fixed index. Besides "does not
//! panic" it checks what a client relies on: a reply to anything with a whole
//! header (that is not itself a response), its id echoed, QR set, a message
//! hickory-proto can parse, at most 512 bytes over UDP unless the query
//! carried an OPT record asking for more (RFC 6891 §6.2.5), at most the
//! configured maximum over UDP, and a length that fits TCP's 2-byte prefix;
//! and that each UDP reply cut down to a rate limiter's "slip" is still one.
//!
//! `check_manifest`: any text through `sources::file::parse`; what parses is
//! applied to an index and exported as a zone, the path a manifest takes.

use std::sync::OnceLock;

use headless_dns::dns::{Answerer, AnyMode, Outcome, PodsMode};
use headless_dns::index::{Index, IndexWriter, Object, ZoneSettings};
use headless_dns::sources::{Differ, ObjectMap};
use headless_dns::wire::truncate_response;
use hickory_proto::op::Message;

/// The black-box tests' fixture cluster: every kind of name the zone has.
const FIXTURES: &str = include_str!("../../tests/fixtures.yaml");

/// One more service with enough endpoints that its answers truncate over
/// UDP (A: 60 x 16 bytes; SRV with glue, bigger still).
fn big_service() -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: None, ports: [{name: web, port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big-1, namespace: default, labels: {kubernetes.io/service-name: big}}\naddressType: IPv4\nports: [{name: web, protocol: TCP, port: 80}]\nendpoints:\n",
    );
    for i in 0..60 {
        y.push_str(&format!(
            "  - {{addresses: [\"10.3.0.{}\"], hostname: big-{i}}}\n",
            i + 1
        ));
    }
    y
}

fn zone_settings() -> ZoneSettings {
    ZoneSettings {
        zone: "cluster.local".into(),
        ttl: 5,
        endpoint_pod_names: false,
    }
}

/// Applies `objects` to a fresh index as one full list.
fn index_of(mut objects: Vec<Object>) -> Index {
    headless_dns::sources::file::default_namespace(&mut objects);
    let map: ObjectMap = objects
        .into_iter()
        .map(|o| ((o.kind(), o.key().clone()), o))
        .collect();
    let mut writer = IndexWriter::new(zone_settings(), &[]);
    writer.apply_all(Differ::default().diff(map));
    writer.index()
}

/// Two answerers over the fixture index: the defaults, and one with every
/// option flipped (pods insecure, ANY refused, a bigger UDP size, a narrower
/// reverse zone, IPv6 glue).
pub fn answerers() -> &'static [Answerer; 2] {
    static ANSWERERS: OnceLock<[Answerer; 2]> = OnceLock::new();
    ANSWERERS.get_or_init(|| {
        let mut objects = headless_dns::sources::file::parse("fixtures.yaml", FIXTURES)
            .expect("tests/fixtures.yaml parses (its own tests say so)");
        objects.extend(
            headless_dns::sources::file::parse("big.yaml", &big_service())
                .expect("the generated service parses"),
        );
        let index = index_of(objects);
        let defaults = headless_dns::Config::default().dns_settings();
        let mut flipped = defaults.clone();
        flipped.dns.pods = PodsMode::Insecure;
        flipped.dns.any = AnyMode::Refuse;
        flipped.dns.max_udp_payload = 4096;
        flipped.dns.reverse_zones = vec!["10.in-addr.arpa".into(), "ip6.arpa".into()];
        flipped.dns.nameserver_ips = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        [
            Answerer::new(index.clone(), defaults),
            Answerer::new(index, flipped),
        ]
    })
}

/// Feeds `packet` to every answerer over UDP and TCP and checks each reply.
pub fn check_answer(packet: &[u8]) {
    let query = Message::from_vec(packet).ok();
    let mut out = Vec::new();
    for answerer in answerers() {
        for tcp in [false, true] {
            let outcome = answerer.answer(packet, tcp, &mut out);
            check_reply(answerer, packet, query.as_ref(), tcp, outcome, &out);
        }
    }
}

fn check_reply(
    answerer: &Answerer,
    packet: &[u8],
    query: Option<&Message>,
    tcp: bool,
    outcome: Outcome,
    out: &[u8],
) {
    let proto = if tcp { "tcp" } else { "udp" };
    if outcome == Outcome::Drop {
        assert!(
            packet.len() < 12 || packet[2] & 0x80 != 0,
            "{proto}: dropped a query with a whole header and QR clear"
        );
        return;
    }
    assert!(out.len() >= 12, "{proto}: reply shorter than a header");
    assert_eq!(
        out[..2],
        packet[..2],
        "{proto}: reply id is not the query's"
    );
    assert_ne!(out[2] & 0x80, 0, "{proto}: reply without QR");
    assert!(
        out.len() <= usize::from(u16::MAX),
        "{proto}: {} bytes do not fit the TCP length prefix",
        out.len()
    );
    let reply = Message::from_vec(out)
        .unwrap_or_else(|e| panic!("{proto}: reply does not parse ({e}): {out:02x?}"));
    assert!(reply.queries.len() <= 1, "{proto}: more than one question");
    if tcp {
        return;
    }
    let max = usize::from(answerer.settings().dns.max_udp_payload);
    assert!(out.len() <= max, "{proto}: {} bytes > {max}", out.len());
    if out.len() > 512 {
        assert!(
            reply.edns.is_some(),
            "{proto}: {} bytes without EDNS",
            out.len()
        );
        if let Some(q) = query {
            let asked = q
                .edns
                .as_ref()
                .map_or(512, |e| usize::from(e.max_payload()));
            assert!(
                out.len() <= asked.max(512),
                "{proto}: {} bytes, the query allowed {asked}",
                out.len()
            );
        }
    }
    if reply.metadata.truncation {
        // What fit, within the payload limit checked above: whole records
        // only (the header counts exactly the records that parsed), and no
        // additional section (dropped before any answer is).
        let counts = [6, 8, 10].map(|i| usize::from(u16::from_be_bytes([out[i], out[i + 1]])));
        let parsed = [
            reply.answers.len(),
            reply.authorities.len(),
            reply.additionals.len() + usize::from(reply.edns.is_some()),
        ];
        assert_eq!(counts, parsed, "{proto}: TC reply counts other records");
        assert!(
            reply.additionals.is_empty(),
            "{proto}: TC with additional records"
        );
    }
    // What response-rate limiting sends instead ("slip"): still a valid reply.
    let mut slip = out.to_vec();
    truncate_response(&mut slip);
    let slipped = Message::from_vec(&slip)
        .unwrap_or_else(|e| panic!("slip does not parse ({e}): {slip:02x?}"));
    assert_eq!(slip[..2], packet[..2], "slip id");
    assert!(slipped.metadata.truncation, "slip without TC");
    assert!(
        slipped.answers.is_empty() && slipped.authorities.is_empty(),
        "slip with records"
    );
    assert!(slip.len() <= out.len(), "slip longer than the reply");
    assert_eq!(slipped.edns.is_some(), reply.edns.is_some(), "slip OPT");
}

/// Parses `data` (as UTF-8, invalid sequences replaced) as a manifest file;
/// on success applies the objects to an index and exports the zone.
pub fn check_manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match headless_dns::sources::file::parse("fuzz.yaml", &text) {
        Ok(objects) => {
            let index = index_of(objects);
            let settings = headless_dns::Config::default().dns_settings();
            let _ = headless_dns::dns::zonefile::export(&index, &settings);
        }
        Err(e) => {
            assert!(e.document >= 1 && e.line >= 1, "{e:?}");
            let _ = e.to_string();
        }
    }
}
