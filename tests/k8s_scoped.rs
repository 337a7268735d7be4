//! Sidecar mode (#17): `namespaces` and `selector` scope every request the
//! Kubernetes source makes, under a namespaced Role the fake API enforces
//! (403 for anything else, `tests/support/fake_api/rbac.rs`). Observed
//! through the fake API's request log, DNS and `/ready`.

mod support;

use std::time::Duration;

use headless_dns::config::Config;
use serde_json::Value;
use support::dns::Answer;
use support::fake_api::rbac::role;
use support::fake_api::{ApiRequest, FakeApi};
use support::k8s::{
    Endpoint, TEST_TIMEOUT, endpoint_slice, fqdn, headless_service, ip, k8s_config, ready,
    statefulset,
};
use support::server::TestServer;
use support::{eventually, http, within};

/// The sidecar's namespace.
const SHOP: &str = "shop";
/// A namespace the sidecar may not read.
const OTHER: &str = "other";

/// What the server needs in one namespace without `pods = "verified"`.
fn sidecar_role() -> k8s_openapi::api::rbac::v1::Role {
    role(&[
        ("", "services", &["list", "watch"]),
        ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
        ("apps", "statefulsets", &["list", "watch"]),
    ])
}

/// A headless service `name` in `ns` with one ready pod `<name>-0` at `addr`,
/// and its StatefulSet.
fn app(ns: &str, name: &str, addr: &str) -> Vec<Value> {
    let host = format!("{name}-0");
    vec![
        headless_service(ns, name, false),
        statefulset(ns, name, name, 1),
        endpoint_slice(ns, name, &[ready(&host, ip(addr))]),
    ]
}

/// `<name>-0.<name>.<ns>.svc.cluster.local`.
fn pod0(ns: &str, name: &str) -> String {
    fqdn(&format!("{name}-0.{name}.{ns}.svc"))
}

fn scoped(api: &FakeApi, namespaces: &[&str], selector: Option<&str>) -> Config {
    let mut c = k8s_config(api);
    c.source.namespaces = namespaces.iter().map(|n| n.to_string()).collect();
    c.source.selector = selector.map(str::to_string);
    c
}

/// Resource requests (not discovery) of the log.
fn resource_requests(api: &FakeApi) -> Vec<ApiRequest> {
    api.requests()
        .into_iter()
        .filter(|r| r.plural.is_some())
        .collect()
}

/// Fails unless every resource request so far was made inside `namespaces`
/// and allowed; returns how many there were.
fn assert_all_inside(api: &FakeApi, namespaces: &[&str]) -> usize {
    let reqs = resource_requests(api);
    for r in &reqs {
        let inside = r
            .namespace
            .as_deref()
            .is_some_and(|n| namespaces.contains(&n));
        assert!(inside, "a request left {namespaces:?}: {r}");
        assert_ne!(r.status, 403, "a refused request: {r}");
        assert_ne!(
            r.plural,
            Some("namespaces"),
            "Namespaces are not requested: {r}"
        );
    }
    reqs.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_mode_stays_inside_under_a_namespaced_role() {
    within(TEST_TIMEOUT, async {
        let mut objects = app(SHOP, "db", "10.1.0.1");
        objects.extend(app(OTHER, "secret", "10.2.0.1"));
        let api = FakeApi::with_objects(objects).await;
        api.grant(SHOP, &sidecar_role());
        let server = TestServer::start(scoped(&api, &[SHOP], None)).await;
        server
            .assert_a(&pod0(SHOP, "db"), &Answer::ips(&[ip("10.1.0.1")]))
            .await;
        // Other namespaces' names are not served, the namespace itself is.
        server
            .assert_a(&pod0(OTHER, "secret"), &Answer::NxDomain)
            .await;
        server
            .assert_a(&fqdn(&format!("secret.{OTHER}.svc")), &Answer::NxDomain)
            .await;
        server
            .assert_a(&fqdn(&format!("{OTHER}.svc")), &Answer::NxDomain)
            .await;
        server
            .assert_a(&fqdn(&format!("{SHOP}.svc")), &Answer::NoData)
            .await;
        api.wait_for_watches(3).await;

        // A recreate inside the namespace is followed.
        api.delete("EndpointSlice", SHOP, "db-abcde");
        api.delete("Service", SHOP, "db");
        server.wait_for_a(&pod0(SHOP, "db"), Answer::NxDomain).await;
        for o in app(SHOP, "db", "10.1.0.9") {
            api.apply(o);
        }
        server
            .wait_for_a(&pod0(SHOP, "db"), Answer::ips(&[ip("10.1.0.9")]))
            .await;

        // A re-list after 410 Gone stays namespaced, and applies what
        // happened while no watch was connected.
        let before = resource_requests(&api).len();
        api.pause_watches();
        api.drop_watches();
        for o in app(SHOP, "cache", "10.1.0.2") {
            api.apply(o);
        }
        api.delete("EndpointSlice", SHOP, "db-abcde");
        api.expire_history();
        api.resume_watches();
        server
            .wait_for_a(&pod0(SHOP, "cache"), Answer::ips(&[ip("10.1.0.2")]))
            .await;
        server.wait_for_a(&pod0(SHOP, "db"), Answer::NxDomain).await;
        // Each kind re-lists on its own 410 (the DNS answers above may come
        // before the last kind's list), so wait for all three.
        eventually("every kind to re-list after 410", || async {
            let after = resource_requests(&api);
            let relists = after[before..].iter().filter(|r| r.verb == "list").count();
            if relists >= 3 {
                Ok(())
            } else {
                Err(format!("{relists} lists"))
            }
        })
        .await;
        let total = assert_all_inside(&api, &[SHOP]);
        assert_eq!(server.ready_status().await, 200);
        eprintln!("{total} requests, all in {SHOP:?}");
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namespaces_relist_each_on_its_own() {
    within(TEST_TIMEOUT, async {
        let mut objects = app("a", "one", "10.1.0.1");
        objects.extend(app("b", "two", "10.2.0.1"));
        objects.extend(app("b", "three", "10.2.0.2"));
        objects.extend(app(OTHER, "secret", "10.3.0.1"));
        let api = FakeApi::with_objects(objects).await;
        api.grant("a", &sidecar_role());
        api.grant("b", &sidecar_role());
        let server = TestServer::start(scoped(&api, &["b", "a"], None)).await;
        for (ns, name, addr) in [("a", "one", "10.1.0.1"), ("b", "two", "10.2.0.1")] {
            server
                .assert_a(&pod0(ns, name), &Answer::ips(&[ip(addr)]))
                .await;
        }
        server
            .assert_a(&pod0(OTHER, "secret"), &Answer::NxDomain)
            .await;
        api.wait_for_watches(6).await;
        // Namespace b re-lists with `three` gone; a's objects must survive
        // b's re-list (and a's own).
        api.pause_watches();
        api.drop_watches();
        api.delete("Service", "b", "three");
        api.expire_history();
        api.resume_watches();
        server
            .wait_for_a(&pod0("b", "three"), Answer::NxDomain)
            .await;
        api.wait_for_watches(6).await;
        server
            .assert_a(&pod0("a", "one"), &Answer::ips(&[ip("10.1.0.1")]))
            .await;
        server
            .assert_a(&pod0("b", "two"), &Answer::ips(&[ip("10.2.0.1")]))
            .await;
        assert_all_inside(&api, &["a", "b"]);
        server.stop().await;
    })
    .await;
}

/// `/ready`'s (status, body).
async fn ready_body(server: &TestServer) -> (u16, String) {
    http::get(server.admin, "/ready")
        .await
        .expect("admin /ready answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_list_permission_is_named_until_granted() {
    within(TEST_TIMEOUT, async {
        let api = FakeApi::with_objects(app(SHOP, "db", "10.1.0.1")).await;
        api.grant(
            SHOP,
            &role(&[
                ("", "services", &["list", "watch"]),
                ("apps", "statefulsets", &["list", "watch"]),
            ]),
        );
        let server = TestServer::spawn(scoped(&api, &[SHOP], None));
        let body = eventually("/ready to name the refused permission", || async {
            match ready_body(&server).await {
                (503, b) if b.contains("forbidden") => Ok(b),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert!(
            body.contains(r#"cannot list endpointslices (API group \"discovery.k8s.io\") in namespace \"shop\""#),
            "{body}"
        );
        // Retries back off: no hot loop against the API server.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let refused = |api: &FakeApi| {
            api.requests()
                .iter()
                .filter(|r| r.status == 403)
                .count()
        };
        let n = refused(&api);
        assert!((2..=20).contains(&n), "{n} refused requests in ~3 s");
        api.grant(
            SHOP,
            &role(&[("discovery.k8s.io", "endpointslices", &["list", "watch"])]),
        );
        server.wait_ready().await;
        server
            .assert_a(&pod0(SHOP, "db"), &Answer::ips(&[ip("10.1.0.1")]))
            .await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_watch_permission_is_named_until_granted() {
    within(TEST_TIMEOUT, async {
        let api = FakeApi::with_objects(app(SHOP, "db", "10.1.0.1")).await;
        api.grant(
            SHOP,
            &role(&[
                ("", "services", &["list", "watch"]),
                ("apps", "statefulsets", &["list", "watch"]),
                ("discovery.k8s.io", "endpointslices", &["list"]),
            ]),
        );
        let server = TestServer::spawn(scoped(&api, &[SHOP], None));
        // Listed (so answering), but not ready: the watch is refused.
        server
            .wait_for_a(&pod0(SHOP, "db"), Answer::ips(&[ip("10.1.0.1")]))
            .await;
        let body = eventually("/ready to name the refused watch", || async {
            match ready_body(&server).await {
                (503, b) if b.contains("forbidden") => Ok(b),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert!(body.contains("cannot watch endpointslices"), "{body}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(ready_body(&server).await.0, 503, "still refused");
        api.grant(
            SHOP,
            &role(&[("discovery.k8s.io", "endpointslices", &["watch"])]),
        );
        server.wait_ready().await;
        // The watch works: a change shows up.
        api.apply(endpoint_slice(SHOP, "db", &[ready("db-0", ip("10.1.0.7"))]));
        server
            .wait_for_a(&pod0(SHOP, "db"), Answer::ips(&[ip("10.1.0.7")]))
            .await;
        server.stop().await;
    })
    .await;
}

/// `obj` with label `k=v` added.
fn labelled(mut obj: Value, k: &str, v: &str) -> Value {
    obj["metadata"]["labels"][k] = Value::from(v);
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_selector_filters_services_and_slices() {
    within(TEST_TIMEOUT, async {
        let eps = |host: &'static str, addr: &str| -> Vec<Endpoint<'static>> {
            vec![ready(host, ip(addr))]
        };
        let dns = |o: Value| labelled(o, "dns", "yes");
        let objects = vec![
            // Selected, slice too (the controller copies the labels).
            dns(headless_service(SHOP, "a", false)),
            dns(endpoint_slice(SHOP, "a", &eps("a-0", "10.1.0.1"))),
            // Not selected.
            headless_service(SHOP, "b", false),
            endpoint_slice(SHOP, "b", &eps("b-0", "10.1.0.2")),
            // Service selected, its slice not: no endpoints reach the index.
            dns(headless_service(SHOP, "c", false)),
            endpoint_slice(SHOP, "c", &eps("c-0", "10.1.0.3")),
        ];
        let api = FakeApi::with_objects(objects).await;
        let server = TestServer::start(scoped(&api, &[], Some("dns=yes"))).await;
        server
            .assert_a(&pod0(SHOP, "a"), &Answer::ips(&[ip("10.1.0.1")]))
            .await;
        server.assert_a(&pod0(SHOP, "b"), &Answer::NxDomain).await;
        server
            .assert_a(&fqdn(&format!("b.{SHOP}.svc")), &Answer::NxDomain)
            .await;
        server.assert_a(&pod0(SHOP, "c"), &Answer::NxDomain).await;
        // The index holds services a and c, and a's endpoint only.
        let (code, body) = http::get(server.admin, "/records?namespace=shop")
            .await
            .expect("admin /records answers");
        assert_eq!(code, 200, "{body}");
        let records: Value = serde_json::from_str(&body).expect("/records is JSON");
        let mut held: Vec<(&str, usize)> = records["services"]
            .as_array()
            .expect("/records lists services")
            .iter()
            .map(|s| {
                let eps = s["endpoints"].as_array().map_or(0, Vec::len);
                (s["name"].as_str().unwrap_or(""), eps)
            })
            .collect();
        held.sort();
        assert_eq!(held, [("a", 1), ("c", 0)], "services and their endpoints");
        // Labelling b (service and slice) brings it in; unlabelling a's
        // service takes it out, through the open watches.
        api.wait_for_watches(4).await;
        api.apply(dns(headless_service(SHOP, "b", false)));
        api.apply(dns(endpoint_slice(SHOP, "b", &eps("b-0", "10.1.0.2"))));
        api.apply(headless_service(SHOP, "a", false));
        server
            .wait_for_a(&pod0(SHOP, "b"), Answer::ips(&[ip("10.1.0.2")]))
            .await;
        server.wait_for_a(&pod0(SHOP, "a"), Answer::NxDomain).await;
        for r in resource_requests(&api) {
            let sel = r.param("labelSelector").unwrap_or("");
            assert!(
                sel.split(',').any(|t| t == "dns=yes") || r.plural == Some("namespaces"),
                "{r}: the selector is sent with every request"
            );
            if r.plural == Some("endpointslices") {
                assert_eq!(sel, "kubernetes.io/service-name,dns=yes", "{r}");
            }
        }
        server.stop().await;
    })
    .await;
}
