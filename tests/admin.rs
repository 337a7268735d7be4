//! The admin side door against the real server: health and readiness, every
//! documented metric present and moving, `/records` agreeing with DNS, a
//! refused scale, `/records` bounded whatever `replicas` says, and the token
//! the records and the simulator ask for (probes and metrics do not). The
//! record browser page is tested in Chromium in `tests/record_browser.rs`.

mod support;

use std::time::Duration;

use headless_dns::config::RequireToken;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType::A;
use support::dns::{Proto, ip_strings};
use support::server::TestServer;
use support::{http, within};

const STS: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: nginx, namespace: default}\nspec: {clusterIP: None, ports: [{name: web, port: 80}]}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web, namespace: default}\nspec: {serviceName: nginx, replicas: 2, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: x}]}}}\n";

/// A server on [`STS`] with the simulator bringing its pods up.
async fn start_sts() -> TestServer {
    TestServer::with_manifests(STS, |c| {
        c.sim.enabled = true;
        c.sim.ready_delay_ms = 50;
    })
    .await
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn health_ready_metrics_and_records() {
    within(Duration::from_secs(60), async {
        let s = start_sts().await;
        assert_eq!(http::get(s.admin, "/health").await.unwrap().0, 200);
        let (status, body) = http::get(s.admin, "/ready").await.unwrap();
        assert_eq!(
            (status, body.contains("\"ready\":true")),
            (200, true),
            "{body}"
        );
        s.wait_for("nginx.default.svc.cluster.local", A, "both pods", |m| {
            m.answers.len() == 2
        })
        .await;

        let (_, before) = http::get(s.admin, "/metrics").await.unwrap();
        for (name, _, _) in headless_dns::telemetry::METRICS {
            if name.starts_with("headless_dns_forward_")
                || name.starts_with("headless_dns_transfer_")
                || name.starts_with("headless_dns_follow_")
            {
                continue; // only with forwarding, zone transfers on (tests/transfer.rs), following a primary (tests/follow.rs)
            }
            assert!(before.contains(name), "metric {name} missing from /metrics");
        }
        // Send N queries of each kind: the counters grow by exactly N.
        const N: usize = 25;
        for _ in 0..N {
            s.query(Proto::Udp, "web-0.nginx.default.svc.cluster.local", A)
                .await;
            s.query(Proto::Tcp, "nope.nginx.default.svc.cluster.local", A)
                .await;
        }
        let (_, after) = http::get(s.admin, "/metrics").await.unwrap();
        let delta = |series: &str| metric(&after, series) - metric(&before, series);
        assert_eq!(
            delta("headless_dns_dns_requests_total{proto=\"udp\",type=\"A\"}"),
            N as f64
        );
        assert_eq!(
            delta("headless_dns_dns_responses_total{proto=\"tcp\",rcode=\"NXDOMAIN\"}"),
            N as f64
        );
        assert_eq!(
            delta("headless_dns_dns_request_duration_seconds_count{proto=\"udp\"}"),
            N as f64
        );
        assert_eq!(metric(&after, "headless_dns_index_services"), 1.0);
        assert_eq!(metric(&after, "headless_dns_index_names"), 2.0);
        assert_eq!(metric(&after, "headless_dns_index_ready"), 1.0);
        assert!(
            metric(
                &after,
                "headless_dns_source_events_total{kind=\"EndpointSlice\",type=\"upsert\"}"
            ) >= 1.0
        );
        assert!(metric(&after, "headless_dns_index_publish_duration_seconds_count") >= 1.0);

        // /records says what DNS answers.
        let (_, body) = http::get(s.admin, "/records?namespace=default&service=nginx")
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let svc = &v["services"][0];
        assert_eq!(svc["type"], "Headless");
        for ep in svc["endpoints"].as_array().unwrap() {
            let dns = ip_strings(&s.query(Proto::Udp, ep["fqdn"].as_str().unwrap(), A).await);
            let json: Vec<String> = ep["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            assert_eq!(dns, json, "{}", ep["fqdn"]);
        }
        s.stop().await;
    })
    .await;
}

const MONGO: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: mongo, namespace: default}\nspec: {clusterIP: None}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: mongo, namespace: default}\nspec: {serviceName: mongo, replicas: 2, podManagementPolicy: Parallel, selector: {matchLabels: {a: m}}, template: {metadata: {labels: {a: m}}, spec: {containers: [{name: c, image: x}]}}}\n";

/// A scale past what the pod CIDR holds is refused with 400 and a message,
/// and changes nothing; one within it still works.
#[tokio::test]
async fn scale_beyond_the_pod_cidr_is_refused() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(MONGO, |c| {
            c.sim.enabled = true;
            c.sim.ready_delay_ms = 50;
            c.sim.pod_cidr = "10.9.0.0/24".into(); // 254 pod addresses
        })
        .await;
        let name = "mongo.default.svc.cluster.local";
        s.wait_for(name, A, "both pods", |m| m.answers.len() == 2)
            .await;
        for n in ["4294967295", "255"] {
            let path = format!("/sim/statefulsets/default/mongo/scale?replicas={n}");
            let (status, body) = http::request(s.admin, "POST", &path).await.unwrap();
            assert_eq!(status, 400, "{body}");
            assert!(body.contains("254"), "the message names the bound: {body}");
        }
        // Nothing changed. The positive sign that the simulator went past
        // the refused requests: a later command's change is served (had a
        // refused scale been applied, its pods would be published first).
        let (status, body) = http::post(s.admin, "/sim/pods/default/mongo-0/ready?value=false")
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        s.wait_for(name, A, "mongo-0 out of the answer", |m| {
            m.answers.len() == 1
        })
        .await;
        let (_, body) = http::get(s.admin, "/records?service=mongo").await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let sts = &v["services"][0]["statefulsets"][0];
        assert_eq!(
            (sts["desired"].as_u64(), sts["pending"].as_u64()),
            (Some(2), Some(0))
        );
        assert_eq!(v["services"][0]["endpoints"].as_array().unwrap().len(), 2);
        let path = "/sim/statefulsets/default/mongo/scale?replicas=254";
        let (status, body) = http::request(s.admin, "POST", path).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("from 2 to 254"), "{body}");
        s.stop().await;
    })
    .await
    .expect("test timed out");
}

/// A StatefulSet of `replicas: 2147483647` whose two pods the manifest
/// holds (an EndpointSlice of its own, so the simulator leaves it alone).
const HUGE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: None}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: big, namespace: default}\nspec: {serviceName: big, replicas: 2147483647, selector: {matchLabels: {a: g}}, template: {metadata: {labels: {a: g}}, spec: {containers: [{name: c, image: x}]}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big-1, namespace: default, labels: {kubernetes.io/service-name: big}}\naddressType: IPv4\nendpoints:\n- {addresses: [10.1.0.1], hostname: big-0, conditions: {ready: true}}\n- {addresses: [10.1.0.2], hostname: big-1, conditions: {ready: true}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: sim, namespace: default}\nspec: {clusterIP: None}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: sim, namespace: default}\nspec: {serviceName: sim, replicas: 2147483647, podManagementPolicy: Parallel, selector: {matchLabels: {a: s}}, template: {metadata: {labels: {a: s}}, spec: {containers: [{name: c, image: x}]}}}\n";

/// `/records` lists what exists and the lowest 16 pending ordinals of a
/// StatefulSet of two billion replicas, counting the rest, in a small
/// answer; a name filter still reaches any one pending ordinal. The
/// simulator runs the same replicas in a manifest as its pod CIDR's 254.
#[tokio::test]
async fn records_are_bounded_whatever_replicas_says() {
    within(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(HUGE, |c| {
            c.sim.enabled = true;
            c.sim.ready_delay_ms = 0;
            c.sim.pod_cidr = "10.9.0.0/24".into();
        })
        .await;
        let (status, body) = http::get(s.admin, "/records?service=big").await.unwrap();
        assert_eq!(status, 200);
        assert!(body.len() < 64 * 1024, "{} bytes", body.len());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let sts = &v["services"][0]["statefulsets"][0];
        assert_eq!(sts["desired"], 2147483647u64);
        assert_eq!(sts["ready"], 2);
        assert_eq!(sts["pending"], 2147483645u64);
        assert_eq!(sts["pending_unlisted"], 2147483645u64 - 16);
        let ordinals: Vec<(u64, &str)> = sts["ordinals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o["ordinal"].as_u64().unwrap(), o["state"].as_str().unwrap()))
            .collect();
        let mut want = vec![(0, "ready"), (1, "ready")];
        want.extend((2..18).map(|n| (n, "not_created")));
        assert_eq!(ordinals, want);
        // One far pending ordinal, by name: listed alone, as DNS sees it.
        let far = "big-2000000000";
        let (_, body) = http::get(s.admin, &format!("/records?service=big&name={far}"))
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let sts = &v["services"][0]["statefulsets"][0];
        assert_eq!(sts["ordinals"][0]["name"], far);
        assert_eq!(sts["ordinals"][0]["negative_ttl"], 1);
        assert_eq!(sts["ordinals"].as_array().unwrap().len(), 1);
        let m = s
            .query(
                Proto::Udp,
                &format!("{far}.big.default.svc.cluster.local"),
                A,
            )
            .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // The simulated one: clamped to the /24's 254 addresses, all created.
        let sim = support::eventually("254 simulated pods", || async {
            let (_, body) = http::get(s.admin, "/records?service=sim")
                .await
                .map_err(|e| e.to_string())?;
            let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let sts = v["services"][0]["statefulsets"][0].clone();
            match sts["ready"].as_u64() {
                Some(254) => Ok(sts),
                other => Err(format!("ready {other:?}")),
            }
        })
        .await;
        assert_eq!(
            (sim["desired"].as_u64(), sim["pending"].as_u64()),
            (Some(254), Some(0))
        );
        s.stop().await;
    })
    .await;
}

/// With `require_token = "always"` every client, loopback ones too, must
/// show the token for `/`, `/records` and `/sim` (401 without it or with
/// another one, 200 with it), while `/health`, `/ready` and `/metrics`
/// answer without one: the requests a pod IP would make, made on loopback
/// (tests bind nothing else); which peers count as loopback is unit-tested
/// in `admin::gate`.
#[tokio::test]
async fn records_page_and_sim_ask_for_the_token_and_probes_do_not() {
    within(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        let token = "tok-0123456789abcdef-xyz";
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let s = TestServer::with_manifests(STS, |c| {
            c.sim.enabled = true;
            c.sim.ready_delay_ms = 50;
            c.admin.token_file = Some(token_file.clone());
            c.admin.require_token = RequireToken::Always;
        })
        .await;
        for path in ["/health", "/ready", "/metrics"] {
            let (status, body) = http::get(s.admin, path).await.unwrap();
            assert_eq!(status, 200, "{path}: {body}");
        }
        let scale = "/sim/statefulsets/default/web/scale?replicas=3";
        for (method, path) in [("GET", "/"), ("GET", "/records"), ("POST", scale)] {
            for wrong in [None, Some("tok-0123456789abcdef-xy"), Some("nope")] {
                let (status, body) = http::request_as(s.admin, method, path, wrong)
                    .await
                    .unwrap();
                assert_eq!(status, 401, "{method} {path} with {wrong:?}: {body}");
                assert!(!body.contains("web-0"), "{body}");
            }
            let (status, body) = http::request_as(s.admin, method, path, Some(token))
                .await
                .unwrap();
            assert_eq!(status, 200, "{method} {path}: {body}");
        }
        // The scale the token let through happened.
        s.wait_for("nginx.default.svc.cluster.local", A, "three pods", |m| {
            m.answers.len() == 3
        })
        .await;
        s.stop().await;
    })
    .await;
}
