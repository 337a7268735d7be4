//! The resource types the fake API server serves, as its discovery documents
//! and URL paths name them.

/// One resource type the fake server serves.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// `Service`.
    pub kind: &'static str,
    /// `services`: the URL segment.
    pub plural: &'static str,
    /// `service`.
    pub singular: &'static str,
    /// API group; `""` is the core group (`/api/v1`).
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
}

impl ResourceType {
    /// `v1` or `<group>/<version>`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource type of a kind (`Service`, `EndpointSlice`, ...).
    pub fn by_kind(kind: &str) -> Option<&'static ResourceType> {
        RESOURCES.iter().find(|r| r.kind == kind)
    }

    /// The resource type of a plural (`services`, ...).
    pub fn by_plural(plural: &str) -> Option<&'static ResourceType> {
        RESOURCES.iter().find(|r| r.plural == plural)
    }

    /// The resource type a URL names.
    pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }
}

/// Every resource type served.
pub static RESOURCES: [ResourceType; 5] = [
    ResourceType {
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        group: "",
        version: "v1",
        namespaced: false,
        short_names: &["ns"],
    },
    ResourceType {
        kind: "Service",
        plural: "services",
        singular: "service",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["svc"],
    },
    ResourceType {
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["po"],
    },
    ResourceType {
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        group: "discovery.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &[],
    },
    ResourceType {
        kind: "StatefulSet",
        plural: "statefulsets",
        singular: "statefulset",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &["sts"],
    },
];
