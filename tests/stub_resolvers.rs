//! Stub resolvers no one here wrote, in a pod's place (the namespace of
//! `support::namespace`, as the glibc test): musl's `getaddrinfo` (a
//! `musl-gcc -static` program; musl 1.2.3 never retries over TCP, so a
//! truncated UDP reply is all it gets), Go's pure resolver (`CGO_ENABLED=0`)
//! and Node's c-ares (`dns.promises.Resolver`). The programs in
//! `tests/stubs/` print what they resolved; the assertions are here,
//! against the manifests' addresses.
//!
//! The service `big` has 60 ready endpoints (an A and an AAAA each), more
//! than 512 bytes hold: a UDP reply without EDNS carries the records that
//! fit, with TC (RFC 1035 §4.2.1, RFC 2181 §9), as CoreDNS does.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use support::namespace::{MANIFESTS, PodNamespace, available, many_upstream, require};

/// Endpoints of `big`.
const BIG: usize = 60;

/// The IPv4 addresses of `big`, in ordinal order.
fn big_v4() -> Vec<String> {
    (1..=BIG).map(|i| format!("10.3.0.{i}")).collect()
}

/// The IPv6 addresses of `big`, in ordinal order.
fn big_v6() -> Vec<String> {
    (1..=BIG).map(|i| format!("fd00::3:{i:x}")).collect()
}

/// The namespace's `MANIFESTS` (`nginx`, `alias`, `upstream`), `big`, and
/// an ExternalName to the upstream's 60-address name (`manyup`).
fn manifests() -> String {
    let slice = |family: &str, ips: Vec<String>| {
        let endpoints: String = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| format!("  - {{addresses: [\"{ip}\"], hostname: big-{i}}}\n"))
            .collect();
        format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: big-{family}, namespace: default, labels: {{kubernetes.io/service-name: big}}}}\naddressType: {family}\nports: [{{name: web, protocol: TCP, port: 80}}]\nendpoints:\n{endpoints}"
        )
    };
    [
        MANIFESTS.to_string(),
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: None, ports: [{name: web, protocol: TCP, port: 80}]}\n".into(),
        slice("IPv4", big_v4()),
        slice("IPv6", big_v6()),
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: manyup, namespace: default}\nspec: {type: ExternalName, externalName: many.example.com}\n".into(),
    ]
    .concat()
}

/// A probe's lines, `<lookup>\t<JSON>`: what each lookup resolved, or its error.
struct Results {
    lines: BTreeMap<String, Result<Vec<String>, String>>,
    context: String,
}

impl Results {
    fn parse(ns: &PodNamespace, stdout: &str, lookups: &[&str]) -> Self {
        let context = format!("stdout:\n{stdout}\n{}", ns.logs());
        let mut lines = BTreeMap::new();
        for line in stdout.lines() {
            let (lookup, json) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("not `<lookup>\\t<JSON>`: {line:?}\n{context}"));
            let value: serde_json::Value = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("{lookup}: {e}: {json}\n{context}"));
            let got = match value {
                serde_json::Value::Array(items) => Ok(items
                    .iter()
                    .map(|i| i.as_str().expect("strings").to_string())
                    .collect()),
                other => Err(other["err"].to_string()),
            };
            lines.insert(lookup.to_string(), got);
        }
        let asked: Vec<&str> = lines.keys().map(String::as_str).collect();
        let mut wanted = lookups.to_vec();
        wanted.sort_unstable();
        assert_eq!(asked, wanted, "one line per lookup\n{context}");
        Self { lines, context }
    }

    /// What `lookup` resolved; panics if it failed.
    fn ok(&self, lookup: &str) -> &[String] {
        match &self.lines[lookup] {
            Ok(got) => got,
            Err(e) => panic!("{lookup} failed: {e}\n{}", self.context),
        }
    }

    /// Asserts `lookup` resolved exactly `expect`, in any order.
    fn exactly<S: AsRef<str>>(&self, lookup: &str, expect: &[S]) {
        let mut got = self.ok(lookup).to_vec();
        got.sort();
        let mut expect: Vec<String> = expect.iter().map(|s| s.as_ref().to_string()).collect();
        expect.sort();
        assert_eq!(got, expect, "{lookup}\n{}", self.context);
    }

    /// Asserts `lookup` resolved at least `min` distinct addresses, all of `of`.
    fn some_of(&self, lookup: &str, of: &[String], min: usize) -> usize {
        let got = self.ok(lookup);
        let distinct: std::collections::BTreeSet<&String> = got.iter().collect();
        assert_eq!(
            distinct.len(),
            got.len(),
            "{lookup}: duplicates\n{}",
            self.context
        );
        for ip in got {
            assert!(
                of.contains(ip),
                "{lookup}: {ip} is not one of them\n{}",
                self.context
            );
        }
        assert!(
            got.len() >= min,
            "{lookup}: {} addresses, at least {min} fit\n{}",
            got.len(),
            self.context
        );
        got.len()
    }

    /// Asserts `lookup` failed.
    fn fails(&self, lookup: &str) {
        assert!(self.lines[lookup].is_err(), "{lookup}\n{}", self.context);
    }
}

/// Runs the probe `build` makes (in the scenario's directory; it returns
/// the command) with `lookups` as its arguments, in a fresh namespace whose
/// server has `dns_extra` in its `[dns]` table.
fn probe(dns_extra: &str, build: impl FnOnce(&Path) -> Vec<String>, lookups: &[&str]) -> Results {
    let ns = PodNamespace::new(&manifests(), dns_extra);
    let mut command = build(ns.path());
    command.extend(lookups.iter().map(|s| s.to_string()));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let stdout = ns.run(&command);
    Results::parse(&ns, &stdout, lookups)
}

fn source(name: &str) -> String {
    format!("{}/tests/stubs/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn build_ok(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// musl never retries over TCP: what it resolves came in truncated UDP
/// replies. 512 bytes hold 29 of `big`'s A records after the question, 16
/// of its AAAA; the forwarded 60-address name and a CNAME chain to it
/// (completed upstream) are cut the same way.
#[test]
fn musl_getaddrinfo_gets_the_records_that_fit_over_udp() {
    if !available("the musl stub resolver test") {
        return;
    }
    require("musl-gcc");
    let lookups = [
        "big/v4",
        "big/v6",
        "web-0.nginx/any",
        "nginx/v4",
        "alias/any",
        "many.example.com/v4",
        "manyup/v4",
        "nothere/any",
    ];
    let results = probe(
        "",
        |dir| {
            let bin = dir.join("getaddrinfo");
            build_ok(
                Command::new("musl-gcc")
                    .args(["-static", "-O1", "-o"])
                    .arg(&bin)
                    .arg(source("getaddrinfo.c")),
                "musl-gcc",
            );
            vec![bin.display().to_string()]
        },
        &lookups,
    );
    let v4 = results.some_of("big/v4", &big_v4(), 25);
    let v6 = results.some_of("big/v6", &big_v6(), 12);
    eprintln!("musl over UDP: {v4} of {BIG} A, {v6} of {BIG} AAAA");
    results.exactly("web-0.nginx/any", &["10.1.0.10", "fd00::10"]);
    results.exactly("nginx/v4", &["10.1.0.10", "10.1.0.11"]);
    results.exactly("alias/any", &["10.1.0.10", "fd00::10"]);
    let upstream = many_upstream();
    let forwarded = results.some_of("many.example.com/v4", &upstream, 25);
    let chased = results.some_of("manyup/v4", &upstream, 20);
    eprintln!("musl over UDP: forwarded {forwarded} of 60, through a CNAME {chased} of 60");
    results.fails("nothere/any");
}

/// Go's resolver on search-path names, SRV, CNAME and PTR; with the UDP
/// payload at 512 `big` truncates and Go must take it whole over TCP.
#[test]
fn go_resolver_resolves_search_names_srv_cname_ptr_and_falls_back_to_tcp() {
    if !available("the Go stub resolver test") {
        return;
    }
    require("go");
    let lookups = [
        "host:web-0.nginx",
        "host:nginx",
        "host:big",
        "host:www.example.com",
        "srv:web,tcp,nginx.default.svc.cluster.local",
        "srv:web,tcp,big.default.svc.cluster.local",
        "cname:alias",
        "cname:upstream",
        "addr:10.1.0.10",
        "addr:fd00::10",
        "host:nothere",
    ];
    let results = probe(
        "max_udp_payload = 512",
        |dir| {
            let bin = dir.join("resolve");
            // Offline, standard library only, as root on CI: its own cache
            // (kept across runs under the target dir) and home.
            let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache");
            build_ok(
                Command::new("go")
                    .args(["build", "-o"])
                    .arg(&bin)
                    .arg(source("resolve.go"))
                    .current_dir(dir)
                    .env("CGO_ENABLED", "0")
                    .env("GOCACHE", cache)
                    .env("GOPATH", dir.join("gopath"))
                    .env("HOME", dir)
                    .env("GOPROXY", "off")
                    .env("GOFLAGS", "-mod=mod"),
                "go build",
            );
            vec![bin.display().to_string()]
        },
        &lookups,
    );
    results.exactly("host:web-0.nginx", &["10.1.0.10", "fd00::10"]);
    results.exactly("host:nginx", &["10.1.0.10", "10.1.0.11", "fd00::10"]);
    results.exactly("host:big", &[big_v4(), big_v6()].concat());
    results.exactly("host:www.example.com", &["192.0.2.21"]);
    results.exactly(
        "srv:web,tcp,nginx.default.svc.cluster.local",
        &[
            "web-0.nginx.default.svc.cluster.local. 80",
            "web-1.nginx.default.svc.cluster.local. 80",
        ],
    );
    let targets: Vec<String> = (0..BIG)
        .map(|i| format!("big-{i}.big.default.svc.cluster.local. 80"))
        .collect();
    results.exactly("srv:web,tcp,big.default.svc.cluster.local", &targets);
    results.exactly("cname:alias", &["web-0.nginx.default.svc.cluster.local."]);
    results.exactly("cname:upstream", &["db.example.com."]);
    results.exactly(
        "addr:10.1.0.10",
        &["web-0.nginx.default.svc.cluster.local."],
    );
    results.exactly("addr:fd00::10", &["web-0.nginx.default.svc.cluster.local."]);
    results.fails("host:nothere");
}

/// c-ares (Node's `dns.promises.Resolver`) with fully qualified names.
#[test]
fn node_c_ares_resolves_addresses_srv_cname_and_reverse() {
    if !available("the c-ares stub resolver test") {
        return;
    }
    require("node");
    let lookups = [
        "4:big.default.svc.cluster.local",
        "6:big.default.svc.cluster.local",
        "4:web-0.nginx.default.svc.cluster.local",
        "6:web-0.nginx.default.svc.cluster.local",
        "srv:_web._tcp.nginx.default.svc.cluster.local",
        "cname:alias.default.svc.cluster.local",
        "reverse:10.1.0.10",
        "reverse:fd00::10",
        "4:many.example.com",
        "4:nothere.default.svc.cluster.local",
    ];
    let results = probe("", |_| vec!["node".into(), source("resolve.js")], &lookups);
    results.exactly("4:big.default.svc.cluster.local", &big_v4());
    results.exactly("6:big.default.svc.cluster.local", &big_v6());
    results.exactly("4:web-0.nginx.default.svc.cluster.local", &["10.1.0.10"]);
    results.exactly("6:web-0.nginx.default.svc.cluster.local", &["fd00::10"]);
    results.exactly(
        "srv:_web._tcp.nginx.default.svc.cluster.local",
        &[
            "web-0.nginx.default.svc.cluster.local 80",
            "web-1.nginx.default.svc.cluster.local 80",
        ],
    );
    results.exactly(
        "cname:alias.default.svc.cluster.local",
        &["web-0.nginx.default.svc.cluster.local"],
    );
    results.exactly(
        "reverse:10.1.0.10",
        &["web-0.nginx.default.svc.cluster.local"],
    );
    results.exactly(
        "reverse:fd00::10",
        &["web-0.nginx.default.svc.cluster.local"],
    );
    results.exactly("4:many.example.com", &many_upstream());
    results.fails("4:nothere.default.svc.cluster.local");
}
