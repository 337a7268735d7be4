//! The fixture cluster (`tests/fixtures.yaml`) served from a manifest file,
//! and the one answer every hostile test checks the server still gives.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::dns::{BOTH, ip_strings, rcode};
use super::server::TestServer;

/// Services, slices and StatefulSets covering the DNS spec's cases.
pub const FIXTURES: &str = include_str!("../fixtures.yaml");
/// A ready StatefulSet pod of the fixtures, at 10.1.0.10.
pub const POD: &str = "web-0.nginx.default.svc.cluster.local";
/// The fixtures' headless SRV name (three targets).
pub const SRV: &str = "_web._tcp.nginx.default.svc.cluster.local";

/// The fixtures plus a service whose A answer (60 x 16 bytes) does not fit
/// in 512 bytes.
pub fn with_big_service() -> String {
    let mut y = format!(
        "{FIXTURES}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: big, namespace: default}}\nspec: {{clusterIP: None}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: big-1, namespace: default, labels: {{kubernetes.io/service-name: big}}}}\naddressType: IPv4\nendpoints:\n"
    );
    for i in 0..60 {
        y.push_str(&format!("  - {{addresses: [\"10.3.0.{}\"]}}\n", i + 1));
    }
    y
}

/// A server on [`with_big_service`], `tweak` applied to its config.
pub async fn start(tweak: impl FnOnce(&mut headless_dns::Config)) -> TestServer {
    TestServer::with_manifests(&with_big_service(), tweak).await
}

/// A normal query over UDP and TCP gets the right answer.
pub async fn assert_still_answers(s: &TestServer, after: &str) {
    for proto in BOTH {
        let m = s.query(proto, POD, RecordType::A).await;
        assert_eq!(
            (rcode(&m), ip_strings(&m)),
            (ResponseCode::NoError, vec!["10.1.0.10".to_string()]),
            "{proto:?} after {after}"
        );
    }
}
