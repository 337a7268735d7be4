//! The fake API server itself (`tests/support/fake_api`), checked with real
//! clients: kubectl lists through it, and kube's own client types watch it.
//! If the fake drifted from the protocol, the source tests would prove little.

mod support;

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;
use support::fake_api::FakeApi;
use support::k8s::{
    NS, TEST_TIMEOUT, endpoint_slice, headless_service, ip, namespace, ready, web_cluster,
};
use support::{WAIT, within};

/// kubectl from `PATH`. CI installs it (`.ci/test`); missing, the test fails.
fn kubectl_path() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl is on PATH (.ci/test installs kubernetes-client when it is missing)")
}

/// Runs kubectl against `api` with its own cache and home directory.
async fn kubectl(api: &FakeApi, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(kubectl_path());
    cmd.arg("--kubeconfig")
        .arg(api.kubeconfig())
        .arg("--cache-dir")
        .arg(api.dir().join("kube-cache"))
        .arg("--request-timeout=10s")
        .args(args)
        .env("HOME", api.dir());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("kubectl task did not panic")
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_endpointslices_from_the_fake_api() {
    // Fails at once, not after the fake API started, when kubectl is missing.
    eprintln!("kubectl: {}", kubectl_path().display());
    within(TEST_TIMEOUT, async {
        let api = FakeApi::with_objects(web_cluster(3, 2)).await;
        api.apply(namespace("other"));
        api.apply(headless_service("other", "db", false));
        api.apply(endpoint_slice(
            "other",
            "db",
            &[ready("db-0", ip("10.247.0.1"))],
        ));
        let out = kubectl(&api, &["get", "endpointslices", "-A"]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("kubectl get endpointslices -A:\n{stdout}");
        let rows: Vec<Vec<&str>> = stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(
            rows.iter().any(|r| r[..2] == ["default", "nginx-abcde"]),
            "{stdout}"
        );
        assert!(
            rows.iter().any(|r| r[..2] == ["other", "db-abcde"]),
            "{stdout}"
        );
        assert_eq!(rows.len(), 2, "{stdout}");

        let out = kubectl(
            &api,
            &["get", "endpointslices", "-n", "other", "-o", "json"],
        )
        .await;
        let list: Value = serde_json::from_slice(&out.stdout).expect("kubectl -o json is JSON");
        let items = list["items"].as_array().expect("a list");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["endpoints"][0]["addresses"][0], "10.247.0.1");

        let out = kubectl(
            &api,
            &["get", "services", "-l", "app=db", "-A", "-o", "name"],
        )
        .await;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "service/db");
        for r in api.requests() {
            eprintln!("kubectl asked: {r}");
        }
    })
    .await;
}

/// kube's client for Services, from the fake API's kubeconfig.
async fn services_api(api: &FakeApi) -> kube::Api<k8s_openapi::api::core::v1::Service> {
    let kc = kube::config::Kubeconfig::read_from(api.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config from the generated kubeconfig");
    kube::Api::all(kube::Client::try_from(config).expect("client"))
}

/// The fake API through kube's own client types: bookmarks, replay from a
/// version, label selectors, and 410 once the history is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_api_speaks_the_watch_protocol_kube_expects() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{ListParams, WatchEvent, WatchParams};

    within(TEST_TIMEOUT, async {
        let api = FakeApi::start().await;
        let services = services_api(&api).await;
        api.apply(headless_service(NS, "a", false));
        api.apply(headless_service("other", "b", false));
        let list = services.list(&ListParams::default()).await.expect("list");
        assert_eq!(list.items.len(), 2);
        let rv = list
            .metadata
            .resource_version
            .clone()
            .expect("list version");
        assert_eq!(rv, api.resource_version().to_string());

        let changed = api.apply(headless_service(NS, "c", false));
        api.delete("Service", NS, "a");
        let wp = WatchParams::default().labels("app in (a,c)").timeout(30);
        let mut events = services.watch(&wp, &rv).await.expect("watch").boxed();
        let mut next = async || {
            tokio::time::timeout(WAIT, events.try_next())
                .await
                .expect("an event in time")
                .expect("a well-formed event")
                .expect("the stream is open")
        };
        match next().await {
            WatchEvent::Added(s) => {
                assert_eq!(s.metadata.name.as_deref(), Some("c"));
                assert_eq!(s.metadata.resource_version, Some(changed.to_string()));
            }
            other => panic!("want ADDED c, got {other:?}"),
        }
        match next().await {
            WatchEvent::Deleted(s) => assert_eq!(s.metadata.name.as_deref(), Some("a")),
            other => panic!("want DELETED a, got {other:?}"),
        }
        match next().await {
            WatchEvent::Bookmark(b) => {
                let now = api.resource_version().to_string();
                assert_eq!(b.metadata.resource_version, now)
            }
            other => panic!("want a BOOKMARK, got {other:?}"),
        }
        // Live: "b" is not selected, "a" again is.
        api.apply(headless_service("other", "b", true));
        api.apply(headless_service(NS, "a", true));
        match next().await {
            WatchEvent::Added(s) => assert_eq!(s.metadata.name.as_deref(), Some("a")),
            other => panic!("want ADDED a, got {other:?}"),
        }

        api.expire_history();
        api.apply(headless_service(NS, "d", false));
        let mut gone = services.watch(&wp, &rv).await.expect("watch").boxed();
        match tokio::time::timeout(WAIT, gone.try_next()).await {
            Ok(Ok(Some(WatchEvent::Error(s)))) => assert_eq!(s.code, 410, "{s:?}"),
            other => panic!("want an ERROR 410 event, got {other:?}"),
        }
        let end = tokio::time::timeout(WAIT, gone.next()).await;
        assert!(
            end.expect("the stream ends").is_none(),
            "the stream ends after 410"
        );
    })
    .await;
}
