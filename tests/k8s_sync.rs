//! The Kubernetes source's first sync against the fake API server (see
//! `tests/support/fake_api`), observed through DNS and the admin API:
//! SERVFAIL and not ready until every kind is listed, the requests it makes
//! (list, then watch from the list's version), and `pods = "verified"`
//! following the pod watch.

mod support;

use hickory_proto::rr::RecordType;
use support::dns::{Answer, BOTH};
use support::fake_api::FakeApi;
use support::k8s::{
    NS, TEST_TIMEOUT, WATCHED, WATCHED_KINDS, fqdn, ip, k8s_config, nginx, pod, pod_name,
    start_synced, web_cluster, web_ip,
};
use support::server::TestServer;
use support::{eventually, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_and_not_ready_until_first_sync() {
    within(TEST_TIMEOUT, async {
        let api = FakeApi::with_objects(web_cluster(1, 1)).await;
        // Services, Namespaces and StatefulSets list at once; EndpointSlices
        // cannot, so the index has some kinds synced but not all.
        api.hold_lists(&["endpointslices"]);
        let server = TestServer::spawn(k8s_config(&api));
        eventually("the other kinds to be listed and watched", || async {
            let n = api.open_watches();
            if n >= WATCHED_KINDS - 1 {
                Ok(())
            } else {
                Err(format!("{n} watches open"))
            }
        })
        .await;
        for i in 0..20 {
            for proto in BOTH {
                let m = server.query(proto, &pod_name(0), RecordType::A).await;
                assert_eq!(
                    Answer::of(&m),
                    Answer::ServFail,
                    "query {i} over {proto:?} before the first sync"
                );
                let m = server
                    .query(proto, &fqdn("nope.nginx.default.svc"), RecordType::A)
                    .await;
                assert_eq!(
                    Answer::of(&m),
                    Answer::ServFail,
                    "a missing name before sync"
                );
            }
            assert_eq!(
                server.ready_status().await,
                503,
                "/ready before the first sync"
            );
        }
        api.release_lists();
        server.wait_ready().await;
        server
            .assert_a(&pod_name(0), &Answer::ips(&[web_ip(0)]))
            .await;
        server.assert_a(&nginx(), &Answer::ips(&[web_ip(0)])).await;
        server
            .assert_a(&fqdn("nope.nginx.default.svc"), &Answer::NxDomain)
            .await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_lists_then_watches_from_the_list_version() {
    within(TEST_TIMEOUT, async {
        let (api, server) = start_synced(web_cluster(1, 1)).await;
        api.wait_for_watches(WATCHED_KINDS).await;
        let requests = api.requests();
        for r in &requests {
            eprintln!("observed: {r}");
        }
        for plural in WATCHED {
            let list = requests
                .iter()
                .find(|r| r.plural == Some(plural) && !r.watch)
                .unwrap_or_else(|| panic!("no list of {plural}"));
            let watch = requests
                .iter()
                .find(|r| r.plural == Some(plural) && r.watch)
                .unwrap_or_else(|| panic!("no watch of {plural}"));
            // Cluster-wide paths: the source watches all namespaces.
            assert!(
                list.path.ends_with(&format!("/{plural}")) && !list.path.contains("/namespaces/"),
                "{list}"
            );
            assert_eq!(watch.path, list.path);
            assert_eq!(watch.param("allowWatchBookmarks"), Some("true"), "{watch}");
            let rv = watch
                .param("resourceVersion")
                .expect("watch resumes from a version");
            assert_ne!(
                rv, "0",
                "{watch}: a watch must resume from the list's version"
            );
            assert!(watch.param("timeoutSeconds").is_some(), "{watch}");
            let selector = if plural == "endpointslices" {
                Some("kubernetes.io/service-name")
            } else {
                None
            };
            assert_eq!(list.param("labelSelector"), selector, "{list}");
            assert_eq!(watch.param("labelSelector"), selector, "{watch}");
        }
        assert!(
            requests.iter().all(|r| r.plural != Some("pods")),
            "pods are watched only with pods = \"verified\""
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_pod_records_follow_the_pod_watch() {
    within(TEST_TIMEOUT, async {
        let api = FakeApi::with_objects(web_cluster(1, 1)).await;
        api.apply(pod(NS, "web-0", "10.244.0.10", "Running"));
        let mut config = k8s_config(&api);
        config.dns.pods = headless_dns::dns::PodsMode::Verified;
        let server = TestServer::start(config).await;
        let by_ip = |dashed: &str, ns: &str| fqdn(&format!("{dashed}.{ns}.pod"));
        server
            .assert_a(
                &by_ip("10-244-0-10", NS),
                &Answer::ips(&[ip("10.244.0.10")]),
            )
            .await;
        server
            .assert_a(&by_ip("10-244-0-99", NS), &Answer::NxDomain)
            .await;
        // The pod watch filters finished pods out by field selector: the pod
        // leaves the watch (a DELETED event for it) and its record goes.
        let watch = api
            .requests()
            .into_iter()
            .find(|r| r.plural == Some("pods") && r.watch)
            .expect("pods are watched in verified mode");
        assert_eq!(
            watch.param("fieldSelector"),
            Some("status.phase!=Succeeded,status.phase!=Failed"),
            "{watch}"
        );
        api.apply(pod(NS, "web-0", "10.244.0.10", "Succeeded"));
        server
            .wait_for_a(&by_ip("10-244-0-10", NS), Answer::NxDomain)
            .await;
        api.apply(pod(NS, "web-1", "10.244.0.11", "Running"));
        server
            .wait_for_a(&by_ip("10-244-0-11", NS), Answer::ips(&[ip("10.244.0.11")]))
            .await;
        server.stop().await;
    })
    .await;
}
