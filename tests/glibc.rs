//! A pod's view, end to end: glibc's stub resolver (`getaddrinfo`, flags 0)
//! with a Kubernetes resolv.conf (search list, `ndots:5`) asks our server on
//! 127.0.0.1:53, which forwards to a real unbound on 127.0.0.1:5300 serving a
//! local `example.com`, all in the pod-like namespace of
//! `support::namespace` (root, `unshare -mn`; under `CI=true` a machine
//! without them fails the test rather than skipping it).

mod support;

use support::namespace::{MANIFESTS, PodNamespace, available};

/// Asks getaddrinfo (flags 0) for each name and family, one line each:
/// `<name> <family> <sorted addresses>` or `<name> <family> ERR <error>`.
const PROBE: &str = r#"
import socket, sys
fams = {"any": socket.AF_UNSPEC, "v4": socket.AF_INET, "v6": socket.AF_INET6}
for arg in sys.argv[1:]:
    name, fam = arg.split("/")
    try:
        infos = socket.getaddrinfo(name, None, fams[fam], socket.SOCK_STREAM, 0, 0)
        print(name, fam, " ".join(sorted({i[4][0] for i in infos})), flush=True)
    except OSError as e:
        print(name, fam, "ERR", e, flush=True)
"#;

#[test]
fn getaddrinfo_in_a_pod_like_namespace() {
    if !available("the glibc end-to-end test") {
        return;
    }
    let ns = PodNamespace::new(MANIFESTS, "");
    let probe = ns.write("probe.py", PROBE);
    let asks = [
        "web-0.nginx/v4",
        "web-0.nginx/v6",
        "web-0.nginx/any",
        "nginx/v4",
        "alias/any",
        "upstream/any",
        "upstream/v4",
        "www.example.com/v4",
        "nothere/any",
    ];
    let mut command = vec!["python3", probe.to_str().expect("a UTF-8 temp path")];
    command.extend(asks);
    let stdout = ns.run(&command);
    let what = format!("stdout:\n{stdout}\n{}", ns.logs());
    let lines: Vec<&str> = stdout.lines().collect();
    let expect = [
        "web-0.nginx v4 10.1.0.10",
        "web-0.nginx v6 fd00::10",
        "web-0.nginx any 10.1.0.10 fd00::10",
        "nginx v4 10.1.0.10 10.1.0.11",
        "alias any 10.1.0.10 fd00::10",
        "upstream any 192.0.2.20 2001:db8::20",
        "upstream v4 192.0.2.20",
        "www.example.com v4 192.0.2.21",
    ];
    assert_eq!(lines.len(), asks.len(), "{what}");
    assert_eq!(lines[..expect.len()], expect, "{what}");
    assert!(lines[expect.len()].starts_with("nothere any ERR"), "{what}");
}
