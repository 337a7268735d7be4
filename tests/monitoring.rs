//! The monitoring kit in `deploy/monitoring/`, checked with Prometheus's own
//! tool and against a running server:
//! - `promtool check rules` and `promtool test rules` (a unit test for every
//!   alert in `rules_test.yaml`);
//! - the dashboard's queries are valid PromQL (promtool checks them as
//!   recording rules, with Grafana's variables filled in);
//! - `/metrics` of the real server, after it has answered queries (local,
//!   missing, forwarded to a dead upstream), passes `promtool check metrics`,
//!   and exports every metric, and every `label="value"` pair, that the rules
//!   and the dashboard name.
//!
//! promtool comes with Debian's `prometheus` package (`.ci/test` installs it);
//! without it these tests fail, they do not skip.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;
use support::dns::Proto;
use support::http::request as http;
use support::server::{TestServer, test_config};

const FIXTURES: &str = include_str!("fixtures.yaml");

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/monitoring")
        .join(file)
}

/// Runs promtool with `args`, feeding it `stdin`.
fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus; .ci/test installs it)");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input
            .write_all(text.as_bytes())
            .expect("promtool reads stdin");
    }
    drop(input);
    child.wait_with_output().expect("promtool runs")
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml(path: &Path) -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(path).expect("readable");
    serde_yaml_ng::from_str(&text).expect("valid YAML")
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(monitoring("dashboard.json")).expect("readable");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every `expr` of the dashboard's panels, by panel title.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().expect("a panel title").to_string();
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let e = t["expr"].as_str().expect("a PromQL expr");
            out.push((title.clone(), e.to_string()));
        }
    }
    out
}

/// Every alert expression of rules.yaml, by alert name.
fn rule_queries() -> Vec<(String, String)> {
    let rules = yaml(&monitoring("rules.yaml"));
    let mut out = Vec::new();
    for g in rules["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().expect("alerting rules only");
            out.push((name.to_string(), r["expr"].as_str().expect("expr").into()));
        }
    }
    out
}

#[test]
fn alert_rules_pass_promtool_with_a_unit_test_for_every_alert() {
    let rules = monitoring("rules.yaml");
    let out = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert_ok("promtool check rules", &out);
    let tests = monitoring("rules_test.yaml");
    let out = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    assert_ok("promtool test rules", &out);

    // Each alert has a case where it fires and one where it does not.
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in yaml(&tests)["tests"].as_sequence().expect("tests") {
        for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = a["alertname"].as_str().expect("alertname").to_string();
            match a["exp_alerts"].as_sequence() {
                Some(e) if !e.is_empty() => fires.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    let alerts: BTreeSet<String> = rule_queries().into_iter().map(|(n, _)| n).collect();
    for wanted in [
        "HeadlessDNSNotReady",
        "HeadlessDNSSourceFailing",
        "HeadlessDNSRelistLoop",
        "HeadlessDNSServfailRatio",
        "HeadlessDNSDroppingPackets",
        "HeadlessDNSRateLimiting",
        "HeadlessDNSForwardErrors",
        "HeadlessDNSIndexEmpty",
    ] {
        assert!(alerts.contains(wanted), "rules.yaml has no {wanted}");
    }
    assert_eq!(fires, alerts, "alerts with a test where they fire");
    assert_eq!(quiet, alerts, "alerts with a test where they stay quiet");
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let d = dashboard();
    assert_eq!(d["uid"], "headless-dns");
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate panel id"
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    // Grafana's variables as Prometheus would see them with "All" selected.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in dashboard_queries(&d).iter().enumerate() {
        let e = expr
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        let e = serde_json::to_string(&e).unwrap();
        rules += &format!("      - record: dashboard:q{i}\n        # {title}\n        expr: {e}\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&path, &rules).unwrap();
    let out = promtool(&["check", "rules", path.to_str().unwrap()], None);
    assert_ok("promtool check rules on the dashboard's queries", &out);
}

/// The names of the samples in a text exposition, with their label sets.
fn exposition(text: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = line[end..]
            .strip_prefix('{')
            .and_then(|l| l.split_once('}'))
            .map_or("", |(l, _)| l);
        out.entry(line[..end].to_string())
            .or_default()
            .push(labels.to_string());
    }
    out
}

/// The value of the sample `name` with exactly the labels `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    let want: BTreeSet<&str> = labels.iter().copied().collect();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let got: BTreeSet<&str> = l.split(',').filter(|x| !x.is_empty()).collect();
        if n == name && got == want {
            return v.parse().expect("a number");
        }
    }
    panic!("{name}{labels:?} is not exported:\n{text}");
}

/// `headless_dns_*` names in `expr`, each with its exact `label="value"`
/// matchers (regex matchers and Grafana variables are left out).
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("headless_dns_") {
        rest = &rest[i..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = rest[..end].to_string();
        let mut exact = Vec::new();
        if let Some(body) = rest[end..]
            .strip_prefix('{')
            .and_then(|b| b.split_once('}'))
            .map(|(b, _)| b)
        {
            for m in body.split(',').map(str::trim) {
                if let Some((k, v)) = m.split_once("=\"")
                    && !k.ends_with(['!', '='])
                    && !k.contains('~')
                    && !v.contains('$')
                {
                    exact.push(format!("{k}=\"{v}"));
                }
            }
        }
        out.push((name, exact));
        rest = &rest[end..];
    }
    out
}

/// `promtool check metrics` passes `text` without a remark.
fn assert_clean_metrics(text: &str) {
    let out = promtool(&["check", "metrics"], Some(text));
    assert_ok("promtool check metrics", &out);
    let lint = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");
}

/// Metrics (and exact label values) the rules and the dashboard name that
/// the exposition `text` lacks, each with the alert or panel naming it.
fn not_exported(text: &str) -> Vec<String> {
    let exported = exposition(text);
    let mut named = rule_queries();
    named.extend(dashboard_queries(&dashboard()));
    let mut missing = Vec::new();
    for (whose, expr) in &named {
        for (name, exact) in selectors(expr) {
            let Some(series) = exported.get(&name) else {
                missing.push(format!("{whose}: {name}"));
                continue;
            };
            for m in exact {
                if !series.iter().any(|l| l.split(',').any(|l| l == m)) {
                    missing.push(format!("{whose}: {name}{{{m}}}"));
                }
            }
        }
    }
    missing
}

/// Sends `n` pod A queries over UDP at once, then counts the replies that
/// come within half a second: (sent, replies).
fn burst(server: std::net::SocketAddr, n: u16) -> (u16, usize) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server).unwrap();
    let name =
        hickory_proto::rr::Name::from_ascii("web-0.nginx.default.svc.cluster.local.").unwrap();
    for id in 0..n {
        let mut m = hickory_proto::op::Message::query();
        m.metadata.id = id;
        m.add_query(hickory_proto::op::Query::query(name.clone(), RecordType::A));
        sock.send(&m.to_vec().unwrap()).unwrap();
    }
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let (mut buf, mut replies) = ([0u8; 1500], 0);
    while sock.recv(&mut buf).is_ok() {
        replies += 1;
    }
    (n, replies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool_and_cover_the_rules_and_the_dashboard() {
    // A dead upstream on loopback (a socket nobody reads, held for the whole
    // test so no other server can take its port): forwarded queries time
    // out, which the forward_errors counter must show.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = dead.local_addr().unwrap().to_string();
    let server = TestServer::with_manifests(FIXTURES, |c| {
        c.forward.upstreams = vec![upstream];
        c.forward.timeout_ms = 200;
        c.dns.rrl_responses_per_second = 20;
    })
    .await;
    for proto in [Proto::Udp, Proto::Tcp] {
        let m = server
            .query(
                proto,
                "web-0.nginx.default.svc.cluster.local",
                RecordType::A,
            )
            .await;
        assert_eq!(support::dns::rcode(&m), ResponseCode::NoError);
        let m = server
            .query(proto, "nope.nginx.default.svc.cluster.local", RecordType::A)
            .await;
        assert_eq!(support::dns::rcode(&m), ResponseCode::NXDomain);
    }
    let m = server.query(Proto::Udp, "example.org", RecordType::A).await;
    assert_eq!(support::dns::rcode(&m), ResponseCode::ServFail);

    let (sent, replies) = burst(server.dns, 60);

    let (status, text) = http(server.admin, "GET", "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert_clean_metrics(&text);
    // The queries above are counted: the scrape is of a live server.
    let value = |name: &str, labels: &[&str]| sample(&text, name, labels);
    assert_eq!(
        value(
            "headless_dns_dns_requests_total",
            &["proto=\"tcp\"", "type=\"A\""]
        ),
        2.0
    );
    assert_eq!(value("headless_dns_forward_requests_total", &[]), 1.0);
    assert_eq!(value("headless_dns_forward_errors_total", &[]), 1.0);
    assert_eq!(value("headless_dns_index_ready", &[]), 1.0);
    // The rate limit (20/s, a second's burst, every 2nd over it slipped):
    // every response held back is counted, and only those went missing.
    let dropped = value("headless_dns_dns_rate_limited_total", &["action=\"drop\""]);
    let slipped = value("headless_dns_dns_rate_limited_total", &["action=\"slip\""]);
    assert!(dropped > 0.0 && slipped > 0.0, "{dropped} {slipped}");
    assert_eq!(
        replies as f64,
        sent as f64 - dropped,
        "replies to the burst"
    );
    // Every publication is timed from its events' arrival, which includes
    // the apply and publish time.
    let publishes = value("headless_dns_index_publish_duration_seconds_count", &[]);
    assert!(publishes >= 1.0);
    assert_eq!(
        value("headless_dns_source_event_to_answer_seconds_count", &[]),
        publishes
    );
    assert!(
        value("headless_dns_source_event_to_answer_seconds_sum", &[])
            >= value("headless_dns_index_publish_duration_seconds_sum", &[])
    );

    let missing = not_exported(&text);
    assert!(
        missing.is_empty(),
        "named by the rules or the dashboard but not exported:\n{}",
        missing.join("\n")
    );
    server.stop().await;
    drop(dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_shows_as_source_errors_per_kind() {
    support::init_logs();
    let dir = tempfile::tempdir().unwrap();
    // An "API server" that hangs up on every connection, held for the whole
    // test (a port merely closed could be taken by another test's server).
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = api.local_addr().unwrap().port();
    let hang_up = tokio::spawn(async move {
        while let Ok((conn, _)) = api.accept().await {
            drop(conn);
        }
    });
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: x\n\
             clusters: [{{name: c, cluster: {{server: \"http://127.0.0.1:{closed}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: x, context: {{cluster: c, user: u}}}}]\n"
        ),
    )
    .unwrap();
    let mut config = test_config(Vec::new());
    config.source.kind = headless_dns::config::SourceKind::Kubernetes;
    config.source.kubeconfig = Some(kubeconfig);
    let listeners = headless_dns::Listeners::bind(&config).unwrap();
    let admin = listeners.admin.as_ref().unwrap().local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(headless_dns::run(config, listeners, async {
        let _ = stopped.await;
    }));
    let kinds = ["Service", "EndpointSlice", "Namespace", "StatefulSet"];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        if let Ok((200, text)) = http(admin, "GET", "/metrics").await
            && kinds.iter().all(|k| {
                sample(
                    &text,
                    "headless_dns_source_errors_total",
                    &[&format!("kind=\"{k}\"")],
                ) >= 2.0
            })
        {
            break text;
        }
        if std::time::Instant::now() > deadline {
            let (_, text) = http(admin, "GET", "/metrics").await.unwrap();
            panic!("no retried errors counted per kind within 20 s:\n{text}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(sample(&text, "headless_dns_index_ready", &[]), 0.0);
    // Pods are not watched (pods = "disabled"): no requests, no errors.
    assert_eq!(
        sample(&text, "headless_dns_source_errors_total", &["kind=\"Pod\""]),
        0.0
    );
    assert_clean_metrics(&text);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    hang_up.abort();
}
