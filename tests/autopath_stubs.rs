//! Autopath (issue #29) with stub resolvers no one here wrote: glibc's
//! `getaddrinfo` (python3), musl's (`musl-gcc -static`) and Go's pure
//! resolver, in the pod-like namespace of `support::namespace` (real binary
//! on port 53, pod resolv.conf with `ndots:5`, real unbound upstream).
//!
//! The clients are pods of the index: each lookup's resolv.conf names as its
//! nameserver an address put on the namespace's loopback (the server listens
//! there), so the stub asks from that address: 10.1.0.10 is web-0 of
//! `default`, 10.2.0.5 an endpoint of `other`, 10.9.9.9 no one. Their
//! search list is always `default`'s. Before and after each lookup the
//! driver reads the server's `headless_dns_dns_requests_total`: the
//! difference is the number of queries the stub sent. An external name
//! walks the search list (3 expansions, A and AAAA each, then the name: 8
//! queries) unless autopath answers the first expansion (2).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use support::namespace::{MANIFESTS, PodNamespace, available, require};

/// `support::namespace::MANIFESTS` (namespace `default`: web-0 at 10.1.0.10
/// and fd00::10, web-1 at 10.1.0.11) and namespace `other` with headless
/// `client` (10.2.0.5).
fn manifests() -> String {
    format!(
        "{MANIFESTS}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: other}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: client, namespace: other}}\nspec: {{clusterIP: None, ports: [{{name: web, protocol: TCP, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: client-1, namespace: other, labels: {{kubernetes.io/service-name: client}}}}\naddressType: IPv4\nports: [{{name: web, protocol: TCP, port: 80}}]\nendpoints:\n  - {{addresses: [\"10.2.0.5\"], hostname: c-0}}\n"
    )
}

/// A pod of `default`, one of `other`, an address of no one.
const DEFAULT_POD: &str = "10.1.0.10";
const OTHER_POD: &str = "10.2.0.5";
const NO_ONE: &str = "10.9.9.9";

/// The driver inside the namespace: `count.py PROBE... -- CLIENT|ARG...`.
/// For each `CLIENT|ARG` it points resolv.conf (bind-mounted over
/// /etc/resolv.conf) at CLIENT with `default`'s search list, runs the probe
/// with ARG, and prints `CLIENT|ARG<TAB>queries<TAB>probe's line`.
const DRIVER: &str = r#"
import os, subprocess, sys, urllib.request
split = sys.argv.index("--")
probe, lookups = sys.argv[1:split], sys.argv[split + 1:]
def requests():
    text = urllib.request.urlopen("http://127.0.0.1:8080/metrics", timeout=5).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith("headless_dns_dns_requests_total{"))
for spec in lookups:
    client, arg = spec.split("|", 1)
    with open(os.environ["DIR"] + "/resolv.conf", "w") as f:
        f.write("search default.svc.cluster.local svc.cluster.local cluster.local\n"
                f"nameserver {client}\noptions ndots:5 timeout:2\n")
    before = requests()
    out = subprocess.run(probe + [arg], capture_output=True, text=True, timeout=60).stdout
    print(f"{spec}\t{int(requests() - before)}\t{out.strip()}", flush=True)
"#;

/// glibc's getaddrinfo, as `tests/stubs/getaddrinfo.c` prints it.
const GLIBC: &str = r#"
import json, socket, sys
fams = {"any": socket.AF_UNSPEC, "v4": socket.AF_INET, "v6": socket.AF_INET6}
for arg in sys.argv[1:]:
    name, fam = arg.rsplit("/", 1)
    try:
        infos = socket.getaddrinfo(name, None, fams[fam], socket.SOCK_STREAM)
        print(arg + "\t" + json.dumps(sorted({i[4][0] for i in infos})), flush=True)
    except OSError as e:
        print(arg + "\t" + json.dumps({"err": str(e)}), flush=True)
"#;

/// One lookup's outcome: the queries the server saw, and what resolved.
#[derive(Debug)]
struct Lookup {
    queries: u32,
    got: Result<Vec<String>, String>,
}

/// Runs `probe` for each `(client, arg)` in a fresh namespace whose server
/// has `dns_extra` in `[dns]` (and `source_extra` in `[source]`).
fn run(
    probe: impl FnOnce(&Path) -> Vec<String>,
    (dns_extra, source_extra): (&str, &str),
    lookups: &[(&str, &str)],
) -> BTreeMap<(String, String), Lookup> {
    let ns = PodNamespace::new(&manifests(), dns_extra).with_client_addresses(&[
        DEFAULT_POD,
        OTHER_POD,
        NO_ONE,
    ]);
    ns.edit("server.toml", |t| {
        t.replace("[source]\n", &format!("[source]\n{source_extra}\n"))
    });
    let driver = ns.write("count.py", DRIVER);
    let mut command = vec!["python3".to_string(), driver.display().to_string()];
    command.extend(probe(ns.path()));
    command.push("--".into());
    command.extend(lookups.iter().map(|(c, a)| format!("{c}|{a}")));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let stdout = ns.run(&command);
    let context = format!("stdout:\n{stdout}\n{}", ns.logs());
    let mut out = BTreeMap::new();
    for line in stdout.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(spec), Some(queries), Some(result)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("not `CLIENT|ARG\\tN\\tRESULT`: {line:?}\n{context}");
        };
        let json = result.split_once('\t').map_or(result, |(_, j)| j);
        let value: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("{spec}: {e}: {result:?}\n{context}"));
        let got = match value {
            serde_json::Value::Array(items) => {
                let mut v: Vec<String> = items
                    .iter()
                    .map(|i| i.as_str().expect("strings").to_string())
                    .collect();
                v.sort();
                Ok(v)
            }
            other => Err(other["err"].to_string()),
        };
        let (client, arg) = spec.split_once('|').expect("CLIENT|ARG");
        let queries = queries.parse().expect("a count");
        out.insert((client.into(), arg.into()), Lookup { queries, got });
    }
    assert_eq!(out.len(), lookups.len(), "one line per lookup\n{context}");
    out
}

/// Asserts each `(client, arg, queries, addresses)`; no addresses: it fails.
fn check(results: &BTreeMap<(String, String), Lookup>, expect: &[(&str, &str, u32, &[&str])]) {
    for (client, arg, queries, addrs) in expect {
        let r = &results[&(client.to_string(), arg.to_string())];
        let what = format!("{arg} from {client}: {r:?}");
        assert_eq!(r.queries, *queries, "queries the server saw for {what}");
        if addrs.is_empty() {
            assert!(r.got.is_err(), "{what}");
        } else {
            let mut want: Vec<String> = addrs.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(r.got.as_ref().ok(), Some(&want), "{what}");
        }
    }
}

const DB: &[&str] = &["192.0.2.20", "2001:db8::20"];
const WEB0: &[&str] = &["10.1.0.10", "fd00::10"];
const NGINX: &[&str] = &["10.1.0.10", "10.1.0.11", "fd00::10"];

/// One expectation: client, name, queries the server sees, addresses (none:
/// the lookup fails).
type Expect = (&'static str, &'static str, u32, &'static [&'static str]);

/// What every stub must see with autopath on: an external name in 2
/// queries from a pod of `default`, in 8 from another namespace's pod or an
/// unknown address; names of ours as before; another namespace's service
/// in 2 instead of 4; a name that exists nowhere still fails, after the
/// full walk.
const ON: [Expect; 10] = [
    (DEFAULT_POD, "db.example.com", 2, DB),
    (DEFAULT_POD, "www.example.com", 2, &["192.0.2.21"]),
    (DEFAULT_POD, "web-0.nginx", 2, WEB0),
    (DEFAULT_POD, "nginx", 2, NGINX),
    (DEFAULT_POD, "c-0.client.other", 2, &["10.2.0.5"]),
    (DEFAULT_POD, "nothere.example.com", 8, &[]),
    (OTHER_POD, "db.example.com", 8, DB),
    (OTHER_POD, "web-0.nginx", 2, WEB0),
    (NO_ONE, "db.example.com", 8, DB),
    (NO_ONE, "c-0.client.other", 4, &["10.2.0.5"]),
];

/// Runs [`ON`] with `probe`, autopath on, cluster-wide; `fmt` spells a
/// lookup of a name for the probe.
fn autopath_on(probe: impl FnOnce(&Path) -> Vec<String>, fmt: fn(&str) -> String) {
    let args: Vec<String> = ON.iter().map(|e| fmt(e.1)).collect();
    let lookups: Vec<(&str, &str)> = ON
        .iter()
        .zip(&args)
        .map(|(e, a)| (e.0, a.as_str()))
        .collect();
    let results = run(probe, ("autopath = true", ""), &lookups);
    let expect: Vec<(&str, &str, u32, &[&str])> = ON
        .iter()
        .zip(&args)
        .map(|(e, a)| (e.0, a.as_str(), e.2, e.3))
        .collect();
    check(&results, &expect);
}

fn glibc_probe(dir: &Path) -> Vec<String> {
    let path = dir.join("gai.py");
    std::fs::write(&path, GLIBC).expect("write the probe");
    vec!["python3".into(), path.display().to_string()]
}

fn any(name: &str) -> String {
    format!("{name}/any")
}

#[test]
fn glibc_resolves_an_external_name_in_two_queries_with_autopath() {
    if !available("the glibc autopath test") {
        return;
    }
    autopath_on(glibc_probe, any);
}

/// The baseline: autopath off, glibc walks the list, 8 queries for an
/// external name; and the sidecar mode (loopback clients are of the one
/// configured namespace) cuts it to 2.
#[test]
fn glibc_walks_the_search_list_without_autopath_and_a_sidecars_loopback_gets_two() {
    if !available("the glibc autopath test") {
        return;
    }
    let lookups = [
        (DEFAULT_POD, "db.example.com/any"),
        (DEFAULT_POD, "c-0.client.other/any"),
        (DEFAULT_POD, "web-0.nginx/any"),
    ];
    let off = run(glibc_probe, ("", ""), &lookups);
    check(
        &off,
        &[
            (DEFAULT_POD, "db.example.com/any", 8, DB),
            (DEFAULT_POD, "c-0.client.other/any", 4, &["10.2.0.5"]),
            (DEFAULT_POD, "web-0.nginx/any", 2, WEB0),
        ],
    );
    let lookups = [
        ("127.0.0.1", "db.example.com/any"),
        ("127.0.0.1", "nothere.example.com/any"),
        (NO_ONE, "db.example.com/any"),
    ];
    let sidecar = run(
        glibc_probe,
        ("autopath = true", "namespaces = [\"default\"]"),
        &lookups,
    );
    check(
        &sidecar,
        &[
            ("127.0.0.1", "db.example.com/any", 2, DB),
            ("127.0.0.1", "nothere.example.com/any", 8, &[]),
            (NO_ONE, "db.example.com/any", 8, DB),
        ],
    );
}

#[test]
fn musl_resolves_an_external_name_in_two_queries_with_autopath() {
    if !available("the musl autopath test") {
        return;
    }
    require("musl-gcc");
    let probe = |dir: &Path| {
        let bin = dir.join("getaddrinfo");
        let src = format!("{}/tests/stubs/getaddrinfo.c", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("musl-gcc")
            .args(["-static", "-O1", "-o"])
            .arg(&bin)
            .arg(src)
            .output()
            .expect("run musl-gcc");
        assert!(
            out.status.success(),
            "musl-gcc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        vec![bin.display().to_string()]
    };
    autopath_on(probe, any);
}

#[test]
fn go_resolves_an_external_name_in_two_queries_with_autopath() {
    if !available("the Go autopath test") {
        return;
    }
    require("go");
    let probe = |dir: &Path| {
        let bin = dir.join("resolve");
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache");
        let src = format!("{}/tests/stubs/resolve.go", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(src)
            .current_dir(dir)
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", cache)
            .env("GOPATH", dir.join("gopath"))
            .env("HOME", dir)
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .output()
            .expect("run go build");
        assert!(
            out.status.success(),
            "go build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        vec![bin.display().to_string()]
    };
    autopath_on(probe, |name| format!("host:{name}"));
}
