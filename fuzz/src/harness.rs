//! What the fuzz targets check, shared with the no-fuzzer replay in
//! `tests/hostile_packets.rs` (which includes this file by path).
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
//! `check_transfer`: the path zone transfers and TSIG-signed requests take
//! (`Outcome::Transfer`, then `TransferService::respond`), on two answerers
//! with transfers on. The first input byte picks the client's address and
//! how the harness signs the rest (validly, or wrong in one way), since a
//! fuzzer cannot find a valid MAC. Besides the replies' shape, it checks what
//! TSIG and the access list promise: a signed request's answer is signed in
//! a chain from its MAC, or carries the TSIG error its signature deserves;
//! zone records go only to allowed (and, with `require_tsig`, signed) clients,
//! AXFR only over TCP, from SOA to SOA at the index's serial.
//!
//! `check_manifest`: any text through `sources::file::parse`; what parses is
//! applied to an index and exported as a zone, the path a manifest takes.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use headless_dns::config::{Cidr, TsigKeyConfig};
use headless_dns::dns::{Answerer, AnyMode, DnsSettings, Outcome, PodsMode};
use headless_dns::index::observe::PublishObserver;
use headless_dns::index::{Index, IndexWriter, Object, ServiceView, ZoneSettings};
use headless_dns::sources::{Differ, ObjectMap};
use headless_dns::wire::truncate_response;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::tsig::{
    TSIG, TsigAlgorithm, make_tsig_record, signed_bitmessage_to_buf,
};
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigner};
use hickory_proto::serialize::binary::BinEncodable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The black-box tests' fixture cluster: every kind of name the zone has.
const FIXTURES: &str = include_str!("../../tests/fixtures.yaml");

/// One more service with enough endpoints that its answers truncate over
/// UDP (A: 60 x 16 bytes; SRV with glue, bigger still).
fn big_service() -> String {
    service_yaml("big", 3, 0..60)
}

/// A headless service `name` in `default` with endpoints `10.<octet>.0.<i + 1>`
/// (hostnames `<name>-<i>`) for each `i` in `endpoints`.
fn service_yaml(name: &str, octet: u8, endpoints: std::ops::Range<u8>) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: None, ports: [{{name: web, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: web, protocol: TCP, port: 80}}]\nendpoints:\n",
    );
    for i in endpoints {
        y.push_str(&format!(
            "  - {{addresses: [\"10.{octet}.0.{}\"], hostname: {name}-{i}}}\n",
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
        let [defaults, flipped] = settings();
        [
            Answerer::new(index.clone(), defaults),
            Answerer::new(index, flipped),
        ]
    })
}

/// The defaults, and every option flipped (see [`answerers`]).
fn settings() -> [DnsSettings; 2] {
    let defaults = headless_dns::Config::default().dns_settings();
    let mut flipped = defaults.clone();
    flipped.dns.pods = PodsMode::Insecure;
    flipped.dns.any = AnyMode::Refuse;
    flipped.dns.max_udp_payload = 4096;
    flipped.dns.reverse_zones = vec!["10.in-addr.arpa".into(), "ip6.arpa".into()];
    flipped.dns.nameserver_ips = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    [defaults, flipped]
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

// ---- zone transfers and TSIG ------------------------------------------------

/// The serial the transfer answerers' index starts from: far above the clock,
/// so that each publication adds one and the serials are the same in every
/// run of the fuzzer (IXFR seeds name them). `SERIAL_BASE + 1` is the first
/// load; the journal then holds the changes to `+ 2`, `+ 3` and `+ 4`.
pub const SERIAL_BASE: u32 = 3_000_000_000;

/// Holds the index's serial at [`SERIAL_BASE`] from the start (the floor an
/// observer may ask for; the transfer journal's serial file uses the same).
struct SerialFloor;

impl PublishObserver for SerialFloor {
    fn begin(&mut self, _arrived_us: u64) {}
    fn service(&mut self, _old: Option<&Arc<ServiceView>>, _new: Option<&Arc<ServiceView>>) {}
    fn end(&mut self, _serial: u32) {}
    fn serial_floor(&self) -> u32 {
        SERIAL_BASE
    }
}

/// The TSIG keys both transfer answerers know: (name, algorithm, secret).
const KEYS: [(&str, &str, &[u8]); 2] = [
    (
        "xfr-key",
        "hmac-sha256",
        b"fuzz-transfer-key-0123456789abcd",
    ),
    (
        "other-key",
        "hmac-sha512",
        b"another fuzz key, for hmac-sha512",
    ),
];

/// A key's signer, as a client holding it has it.
fn signer(name: &str, algorithm: &str, secret: &[u8]) -> TSigner {
    TSigner::new(
        secret.to_vec(),
        TsigAlgorithm::from_name(Name::from_ascii(algorithm).unwrap()),
        Name::from_ascii(name).unwrap(),
        300,
    )
    .unwrap()
}

/// One of the two transfer answerers, and what the checks need to know of it.
pub struct TransferAnswerer {
    pub answerer: Answerer,
    /// `[transfer] allow`.
    pub allow: Vec<Cidr>,
    /// `[transfer] require_tsig`.
    pub require_tsig: bool,
}

/// Two answerers with zone transfers on, over one index whose journal holds
/// three changes (serials `SERIAL_BASE + 1` to `+ 4`): "open" (the default
/// DNS settings; 10/8 and ::1 may transfer, signed or not; a journal of 1,000
/// changes) and "strict" (the flipped settings of [`answerers`]; 10/8 and
/// 2001:db8::/32, signed only; a journal of 2 changes, so `+ 1` is too old).
/// Both know [`KEYS`].
pub fn transfer_answerers() -> &'static [TransferAnswerer; 2] {
    static ANSWERERS: OnceLock<[TransferAnswerer; 2]> = OnceLock::new();
    ANSWERERS.get_or_init(|| {
        let [defaults, flipped] = settings();
        let config = |allow: &[&str], require_tsig: bool, journal: usize| {
            let mut c = headless_dns::Config::default();
            c.transfer.allow = allow.iter().map(|a| a.parse().unwrap()).collect();
            c.transfer.require_tsig = require_tsig;
            c.transfer.journal_max_changes = journal;
            c.transfer.tsig = KEYS
                .iter()
                .map(|(name, algorithm, secret)| TsigKeyConfig {
                    name: (*name).into(),
                    algorithm: (*algorithm).into(),
                    secret: data_encoding::BASE64.encode(secret),
                    secret_file: None,
                })
                .collect();
            c
        };
        let open = config(&["10.0.0.0/8", "::1"], false, 1000);
        let strict = config(&["10.0.0.0/8", "2001:db8::/32"], true, 2);

        let mut writer = IndexWriter::new(zone_settings(), &[]);
        writer.observe(Box::new(SerialFloor));
        // No NOTIFY targets: nothing is spawned on the tracker.
        let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
        let mut service = |config: &headless_dns::Config, settings| {
            headless_dns::transfer::start(config, settings, &mut writer, &stop, &tracker)
                .expect("the transfer settings are valid")
                .expect("transfer.allow is set")
        };
        let (t_open, t_strict) = (service(&open, &defaults), service(&strict, &flipped));
        // The first load, then three changes for the journal: endpoints of
        // `big` replaced, a service added, then removed with more endpoints.
        let fixtures = headless_dns::sources::file::parse("fixtures.yaml", FIXTURES)
            .expect("tests/fixtures.yaml parses (its own tests say so)");
        let mut differ = Differ::default();
        for (big, late) in [
            (0..60, false),
            (5..65, false),
            (5..65, true),
            (10..60, false),
        ] {
            let mut objects = fixtures.clone();
            objects.extend(
                headless_dns::sources::file::parse("big.yaml", &service_yaml("big", 3, big))
                    .expect("the generated service parses"),
            );
            if late {
                objects.extend(
                    headless_dns::sources::file::parse("late.yaml", &service_yaml("late", 4, 0..3))
                        .expect("the generated service parses"),
                );
            }
            headless_dns::sources::file::default_namespace(&mut objects);
            let map: ObjectMap = objects
                .into_iter()
                .map(|o| ((o.kind(), o.key().clone()), o))
                .collect();
            writer.apply_all(differ.diff(map));
        }
        let index = writer.index();
        [
            TransferAnswerer {
                answerer: Answerer::new(index.clone(), defaults).with_transfers(t_open),
                allow: open.transfer.allow,
                require_tsig: false,
            },
            TransferAnswerer {
                answerer: Answerer::new(index, flipped).with_transfers(t_strict),
                allow: strict.transfer.allow,
                require_tsig: true,
            },
        ]
    })
}

/// The peer a request comes from, by the low two bits of the first byte.
const PEERS: [&str; 4] = [
    "10.1.2.3:5353",        // inside both allow lists
    "[::1]:5353",           // inside "open"'s only
    "192.0.2.7:5353",       // inside neither
    "[::ffff:10.1.2.3]:53", // IPv4-mapped: inside both
];

/// How the harness signs the packet: bits 2-4 of the first byte; bits 5-7
/// pick a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signing {
    /// The bytes as they are (any TSIG in them is the input's own).
    Raw,
    /// `xfr-key` (hmac-sha256), now give or take less than the fudge.
    Valid,
    /// `other-key` (hmac-sha512), now.
    ValidOther,
    /// `xfr-key`, a time outside the fudge: BADTIME.
    BadTime,
    /// A key name we do not have: BADKEY.
    UnknownKey,
    /// `xfr-key` with one MAC byte changed: BADSIG.
    BadMac,
    /// `xfr-key`, then bytes cut off the end of the TSIG record.
    Truncated,
    /// `xfr-key` with the other algorithm, or its MAC cut short: BADSIG.
    WrongAlgorithm,
}

impl Signing {
    fn of(flags: u8) -> Self {
        [
            Self::Raw,
            Self::Valid,
            Self::ValidOther,
            Self::BadTime,
            Self::UnknownKey,
            Self::BadMac,
            Self::Truncated,
            Self::WrongAlgorithm,
        ][usize::from(flags >> 2 & 7)]
    }

    /// The TSIG error a request signed this way gets (when its signature
    /// is looked at): BADSIG 16, BADKEY 17, BADTIME 18; `None`: accepted.
    fn error(self) -> Option<u16> {
        match self {
            Self::Raw | Self::Truncated | Self::Valid | Self::ValidOther => None,
            Self::BadTime => Some(18),
            Self::UnknownKey => Some(17),
            Self::BadMac | Self::WrongAlgorithm => Some(16),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A request as the harness sends it.
struct Signed {
    packet: Vec<u8>,
    /// The key that signed it and its MAC, when the signature is valid.
    valid: Option<(TSigner, Vec<u8>)>,
    /// The TSIG record a parser finds last is the one the harness appended,
    /// whole: the signing's TSIG error is the one to expect.
    ours: bool,
}

/// Appends a TSIG record for `key` at `time` to `body`, ARCOUNT bumped,
/// with the MAC computed as a verifier computes it (RFC 8945 §4.3) and then
/// passed through `mangle`. Returns the packet and the unmangled MAC; the MAC
/// is empty (and zeros in the packet) where the packet does not parse with
/// that record as its signature (`body` is cut short, or has trailing bytes
/// that the record completes).
fn append_tsig(
    body: &[u8],
    key: &TSigner,
    time: u64,
    mangle: impl Fn(&mut Vec<u8>),
) -> (Vec<u8>, Vec<u8>) {
    let id = body
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let record = |mac: Vec<u8>| {
        let tsig = TSIG::new(
            key.algorithm().clone(),
            time,
            300,
            mac,
            id,
            None,
            Vec::new(),
        );
        make_tsig_record(key.signer_name().clone(), tsig)
            .to_bytes()
            .expect("a TSIG record encodes")
    };
    let mac_len = key.sign(&[]).map_or(32, |m| m.len());
    let mut packet = body.to_vec();
    if let Some(ar) = packet.get(10..12) {
        let ar = u16::from_be_bytes([ar[0], ar[1]]).wrapping_add(1);
        packet[10..12].copy_from_slice(&ar.to_be_bytes());
    }
    let at = packet.len();
    packet.extend_from_slice(&record(vec![0; mac_len]));
    // What does not parse is not verified either (and hickory's
    // `signed_bitmessage_to_buf` adds ANCOUNT and NSCOUNT in 16 bits).
    let parses = Message::from_vec(&packet).is_ok_and(|m| m.signature().is_some());
    let mac = parses
        .then(|| signed_bitmessage_to_buf(&packet, None, true).ok())
        .flatten()
        .and_then(|(tbs, _)| key.sign(&tbs).ok());
    let Some(mac) = mac else {
        return (packet, Vec::new());
    };
    let mut mangled = mac.clone();
    mangle(&mut mangled);
    packet.truncate(at);
    packet.extend_from_slice(&record(mangled.clone()));
    let ours = Message::from_vec(&packet).is_ok_and(|m| {
        m.signature().is_some_and(|s| {
            s.name == *key.signer_name() && s.data.mac == mangled && s.data.time == time
        })
    });
    (packet, if ours { mac } else { Vec::new() })
}

/// Signs `body` as the first byte's bits 2-7 say (see [`Signing`]).
fn sign(flags: u8, body: &[u8]) -> Signed {
    let variant = usize::from(flags >> 5);
    let now = unix_now();
    let key = signer(KEYS[0].0, KEYS[0].1, KEYS[0].2);
    let bad = |(packet, mac): (Vec<u8>, Vec<u8>)| Signed {
        packet,
        valid: None,
        ours: !mac.is_empty(),
    };
    match Signing::of(flags) {
        Signing::Raw => Signed {
            packet: body.to_vec(),
            valid: None,
            ours: false,
        },
        Signing::Valid => {
            let skew = [0, -1, 1, -100, 100, -250, 250, 0][variant];
            let (packet, mac) = append_tsig(body, &key, now.saturating_add_signed(skew), |_| {});
            let ours = !mac.is_empty();
            let valid = ours.then_some((key, mac));
            Signed {
                packet,
                valid,
                ours,
            }
        }
        Signing::ValidOther => {
            let other = signer(KEYS[1].0, KEYS[1].1, KEYS[1].2);
            let (packet, mac) = append_tsig(body, &other, now, |_| {});
            let ours = !mac.is_empty();
            let valid = ours.then_some((other, mac));
            Signed {
                packet,
                valid,
                ours,
            }
        }
        Signing::BadTime => {
            let time = [
                now - 400,
                now + 400,
                now - 100_000,
                now + 100_000,
                0,
                299,
                1 << 47,
                (1 << 48) - 1,
            ][variant];
            bad(append_tsig(body, &key, time, |_| {}))
        }
        Signing::UnknownKey => {
            let unknown = signer("no-such-key", KEYS[0].1, KEYS[0].2);
            bad(append_tsig(body, &unknown, now, |_| {}))
        }
        Signing::BadMac => bad(append_tsig(body, &key, now, |mac| {
            let at = variant * 4 % mac.len();
            mac[at] ^= 0x5A;
        })),
        Signing::Truncated => {
            let (mut packet, _) = append_tsig(body, &key, now, |_| {});
            let cut = [1, 2, 6, 7, 10, 40, 80, 200][variant];
            packet.truncate(packet.len().saturating_sub(cut).max(body.len()));
            bad((packet, Vec::new()))
        }
        Signing::WrongAlgorithm if variant % 2 == 0 => {
            // `xfr-key`'s name and secret, the other key's algorithm.
            let mislabelled = signer(KEYS[0].0, KEYS[1].1, KEYS[0].2);
            bad(append_tsig(body, &mislabelled, now, |_| {}))
        }
        // A valid MAC cut to 16 bytes (RFC 8945 §5.2.2.1 allows it; we do not).
        Signing::WrongAlgorithm => bad(append_tsig(body, &key, now, |mac| mac.truncate(16))),
    }
}

/// More messages than any transfer of the fixture zone takes: a response
/// that does not end by then is taken to be endless.
const MAX_MESSAGES: usize = 1000;

/// The first byte picks the peer and how the rest is signed (see
/// [`PEERS`] and [`Signing`]); the rest goes, signed so, through
/// `Answerer::answer` of both [`transfer_answerers`] over UDP and TCP, and
/// whatever they hand over through the transfer service as the listeners do
/// (UDP sends the first message, TCP every one).
pub fn check_transfer(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let signing = Signing::of(flags);
    let request = sign(flags, body);
    let peer: SocketAddr = PEERS[usize::from(flags & 3)].parse().unwrap();
    let packet = &request.packet[..];
    let query = Message::from_vec(packet).ok();
    let mut out = Vec::new();
    for t in transfer_answerers() {
        for tcp in [false, true] {
            let outcome = t.answerer.answer(packet, tcp, &mut out);
            if outcome != Outcome::Transfer {
                check_reply(&t.answerer, packet, query.as_ref(), tcp, outcome, &out);
                continue;
            }
            let service = t.answerer.transfers().expect("transfers are on");
            let mut messages = service.respond(&t.answerer, packet, peer, tcp);
            let messages: Vec<Vec<u8>> = if tcp {
                messages.by_ref().take(MAX_MESSAGES).collect()
            } else {
                messages.next().into_iter().collect()
            };
            let request = Request {
                packet,
                query: query.as_ref(),
                valid: request.valid.as_ref(),
                ours: request.ours,
                signing,
                peer,
                tcp,
            };
            check_transfer_reply(t, &request, &messages);
        }
    }
}

/// One request of [`check_transfer`], as sent.
struct Request<'a> {
    packet: &'a [u8],
    /// As hickory-proto parses it (the transfer service does the same).
    query: Option<&'a Message>,
    /// Signed by the harness with this key and MAC.
    valid: Option<&'a (TSigner, Vec<u8>)>,
    /// See [`Signed::ours`].
    ours: bool,
    signing: Signing,
    peer: SocketAddr,
    tcp: bool,
}

/// Checks what the transfer service answered to `r` (see the module docs).
fn check_transfer_reply(t: &TransferAnswerer, r: &Request<'_>, messages: &[Vec<u8>]) {
    let proto = if r.tcp { "tcp" } else { "udp" };
    assert!(!messages.is_empty(), "{proto}: no message at all");
    assert!(messages.len() < MAX_MESSAGES, "{proto}: endless response");
    let replies: Vec<Message> = messages
        .iter()
        .map(|m| {
            assert!(m.len() >= 12, "{proto}: message shorter than a header");
            assert_eq!(m[..2], r.packet[..2], "{proto}: id is not the request's");
            assert_ne!(m[2] & 0x80, 0, "{proto}: message without QR");
            assert_eq!(m[2] & 0x78, r.packet[2] & 0x78, "{proto}: opcode changed");
            assert!(
                m.len() <= usize::from(u16::MAX),
                "{proto}: {} bytes do not fit the TCP length prefix",
                m.len()
            );
            Message::from_vec(m)
                .unwrap_or_else(|e| panic!("{proto}: message does not parse ({e}): {m:02x?}"))
        })
        .collect();
    let first = &replies[0];
    let rcode = first.metadata.response_code;
    if !r.tcp {
        let max = t.answerer.settings().dns.max_udp_payload;
        let asked = r.query.map_or(512, Message::max_payload);
        let limit = usize::from(asked.min(max).max(512));
        assert!(
            messages[0].len() <= limit,
            "{proto}: {} bytes, the request allowed {limit}",
            messages[0].len()
        );
    }
    let records: Vec<&Record> = replies.iter().flat_map(|m| &m.answers).collect();
    if rcode != ResponseCode::NoError {
        assert_eq!(
            messages.len(),
            1,
            "{proto}: {rcode} in more than one message"
        );
        assert!(records.is_empty(), "{proto}: {rcode} with records");
    }
    for m in &replies[1..] {
        assert_eq!(m.metadata.response_code, rcode, "{proto}: rcode changed");
    }
    // The one reply not looked at further: the request did not parse (no
    // question to echo, no signature looked at).
    if rcode == ResponseCode::FormErr && first.signature().is_none() {
        return;
    }
    let signed = check_signatures(r, &replies, messages);
    let Some(query) = r.query else {
        return;
    };
    // (A NOTAUTH answer to an unknown key may leave it out to fit UDP.)
    let bare = rcode == ResponseCode::NotAuth && !r.tcp && first.queries.is_empty();
    if query.queries.len() == 1 && rcode != ResponseCode::NotImp && !bare {
        for m in &replies {
            assert_eq!(m.queries, query.queries, "{proto}: question not echoed");
        }
    }
    let qtype = query.queries.first().map(|q| q.query_type());
    if !matches!(qtype, Some(RecordType::AXFR | RecordType::IXFR)) || records.is_empty() {
        return;
    }
    // Records of a zone: for whom and how.
    assert!(
        t.allow.iter().any(|c| c.contains(r.peer.ip())),
        "{proto}: zone records for {} outside transfer.allow",
        r.peer
    );
    assert!(
        signed || !t.require_tsig,
        "{proto}: zone records for a request not validly signed ({:?}), require_tsig",
        r.signing
    );
    let serial = t.answerer.index().serial();
    let soa_serial = |rec: &Record| match &rec.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    };
    let (head, tail) = (records[0], records[records.len() - 1]);
    assert_eq!(
        soa_serial(head),
        Some(serial),
        "{proto}: does not start with our SOA"
    );
    if qtype == Some(RecordType::AXFR) {
        assert!(r.tcp, "udp: AXFR answered");
        assert!(records.len() >= 2, "tcp: AXFR of one record");
    }
    if records.len() > 1 {
        assert_eq!(
            soa_serial(tail),
            Some(serial),
            "{proto}: does not end with our SOA"
        );
    }
}

/// Checks the signatures of a response: a request that carries a TSIG record
/// gets every message signed in a chain from its MAC (RFC 8945 §5.3), or one
/// message with a TSIG error (BADSIG and BADKEY unsigned, BADTIME signed)
/// and NOTAUTH; the error is the one the harness's signing calls for. True
/// when the request's signature was accepted.
fn check_signatures(r: &Request<'_>, replies: &[Message], messages: &[Vec<u8>]) -> bool {
    let proto = if r.tcp { "tcp" } else { "udp" };
    let Some(tsig) = r.query.and_then(Message::signature) else {
        for m in replies {
            assert!(
                m.signature().is_none(),
                "{proto}: unsigned request, signed answer"
            );
        }
        return false;
    };
    let first = &replies[0];
    let sig = first
        .signature()
        .unwrap_or_else(|| panic!("{proto}: signed request, unsigned answer"));
    let key = KEYS
        .iter()
        .map(|(name, algorithm, secret)| signer(name, algorithm, secret))
        .find(|k| *k.signer_name() == tsig.name && *k.algorithm() == tsig.data.algorithm);
    let verifies = |key: &TSigner, mac: &[u8]| {
        let mut previous = mac.to_vec();
        for (i, m) in messages.iter().enumerate() {
            match key.verify_message_byte(m, Some(&previous), i == 0) {
                Ok((mac, _, _)) => previous = mac,
                Err(e) => panic!(
                    "{proto}: message {i} of {} not signed ({e})",
                    messages.len()
                ),
            }
        }
    };
    let error = sig.data.error.map_or(0, u16::from);
    if error == 0 {
        // Accepted: the harness's valid signature, or a seed's own.
        if r.ours {
            assert_eq!(r.signing.error(), None, "{proto}: {:?} accepted", r.signing);
        }
        let (key, mac) = match (r.valid, key) {
            (Some((key, mac)), _) => (key.clone(), mac.clone()),
            (None, Some(key)) => (key, tsig.data.mac.clone()),
            (None, None) => panic!("{proto}: accepted a key we do not have"),
        };
        verifies(&key, &mac);
        return true;
    }
    assert_eq!(
        first.metadata.response_code,
        ResponseCode::NotAuth,
        "{proto}: TSIG error {error} without NOTAUTH"
    );
    assert!(
        r.valid.is_none(),
        "{proto}: TSIG error {error} for a request signed with a valid key at the time"
    );
    assert!(
        matches!(error, 16..=18),
        "{proto}: NOTAUTH with TSIG error {error}"
    );
    if let Some(want) = r.signing.error().filter(|_| r.ours) {
        assert_eq!(error, want, "{proto}: TSIG error for {:?}", r.signing);
    }
    if error == 18 {
        let key = key.unwrap_or_else(|| panic!("{proto}: BADTIME for a key we do not have"));
        verifies(&key, &tsig.data.mac);
    } else {
        assert!(
            sig.data.mac.is_empty(),
            "{proto}: BADSIG/BADKEY answer with a MAC"
        );
    }
    false
}
