//! The resource types the fake server knows, and the discovery documents built from them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::status::Named;

/// The Kubernetes version the fake server reports at `/version`.
pub(crate) const FAKE_KUBE_MINOR: &str = "33";

/// A kind of object the fake API server stores, as discovery describes it.
///
/// The server knows `configmaps`, `secrets`, `events`, `serviceaccounts` and `namespaces` in
/// core `v1` and `leases` in `coordination.k8s.io/v1` from the start. Any other namespaced
/// resource is served on first use, with its kind taken from the first object created (or
/// guessed from the plural); register it with
/// [`FakeApiServerBuilder::resource`](super::FakeApiServerBuilder::resource) to control its
/// kind and discovery entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) plural: String,
    pub(crate) kind: String,
    pub(crate) namespaced: bool,
    pub(crate) short_names: Vec<String>,
    /// Served on first use with a kind guessed from the plural; the first created object's
    /// kind replaces the guess, and until then discovery does not list it.
    pub(crate) kind_guessed: bool,
    /// Built into Kubernetes: list items then carry no `kind`/`apiVersion` of their own.
    pub(crate) builtin: bool,
}

impl ResourceType {
    /// The resource as a Status names it (`leases.coordination.k8s.io`).
    pub(crate) fn resource(&self) -> Named<'_> {
        Named {
            group: &self.group,
            name: &self.plural,
        }
    }

    /// The kind as a Status names it (`Lease.coordination.k8s.io`).
    pub(crate) fn kind_named(&self) -> Named<'_> {
        Named {
            group: &self.group,
            name: &self.kind,
        }
    }

    /// A namespaced resource: `group` is `""` for the core API.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::ResourceType;
    ///
    /// let leases = ResourceType::namespaced("coordination.k8s.io", "v1", "leases", "Lease");
    /// # let _ = leases;
    /// ```
    #[must_use]
    pub fn namespaced(group: &str, version: &str, plural: &str, kind: &str) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            kind: kind.to_owned(),
            namespaced: true,
            short_names: Vec::new(),
            kind_guessed: false,
            builtin: false,
        }
    }

    /// Adds a short name that `kubectl` accepts for this resource (`cm` for `configmaps`).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{FakeApiServer, ResourceType};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let widgets = ResourceType::namespaced("example.com", "v1", "widgets", "Widget").short_name("wd");
    /// let server = FakeApiServer::builder().resource(widgets).start().await?;
    /// let list = server.client().list_api_group_resources("example.com/v1").await?;
    /// assert_eq!(list.resources[0].short_names, Some(vec!["wd".to_owned()]));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn short_name(mut self, short: &str) -> Self {
        self.short_names.push(short.to_owned());
        self
    }

    /// `v1` or `group/version`.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn singular(&self) -> String {
        self.kind.to_lowercase()
    }

    fn discovery_entry(&self) -> Value {
        let mut verbs = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        if !self.namespaced {
            verbs.retain(|v| *v != "deletecollection");
        }
        let mut entry = json!({
            "name": self.plural,
            "singularName": self.singular(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        });
        if !self.short_names.is_empty() {
            entry["shortNames"] = json!(self.short_names);
        }
        entry
    }
}

/// A guess at a kind from a plural (`widgets` → `Widget`), for resources nobody registered.
fn guess_kind(plural: &str) -> String {
    let singular = plural
        .strip_suffix("ies")
        .map(|s| format!("{s}y"))
        .or_else(|| plural.strip_suffix('s').map(str::to_owned))
        .unwrap_or_else(|| plural.to_owned());
    let mut chars = singular.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Known resource types by (group, version, plural).
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    types: BTreeMap<(String, String, String), ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut registry = Self {
            types: BTreeMap::new(),
        };
        let namespace = ResourceType {
            namespaced: false,
            ..ResourceType::namespaced("", "v1", "namespaces", "Namespace").short_name("ns")
        };
        for rt in [
            ResourceType::namespaced("", "v1", "configmaps", "ConfigMap").short_name("cm"),
            ResourceType::namespaced("", "v1", "secrets", "Secret"),
            ResourceType::namespaced("", "v1", "events", "Event").short_name("ev"),
            ResourceType::namespaced("", "v1", "serviceaccounts", "ServiceAccount")
                .short_name("sa"),
            namespace,
            ResourceType::namespaced("coordination.k8s.io", "v1", "leases", "Lease"),
        ] {
            registry.register(ResourceType {
                builtin: true,
                ..rt
            });
        }
        registry
    }
}

impl Registry {
    pub(crate) fn register(&mut self, rt: ResourceType) {
        self.types.insert(
            (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
            rt,
        );
    }

    /// The type for a request path, registering an unknown namespaced resource on first use.
    /// `kind_hint` (the `kind` of a created object) names an unregistered or guessed type.
    pub(crate) fn resolve(
        &mut self,
        group: &str,
        version: &str,
        plural: &str,
        kind_hint: Option<&str>,
    ) -> ResourceType {
        let key = (group.to_owned(), version.to_owned(), plural.to_owned());
        let rt = self.types.entry(key).or_insert_with(|| ResourceType {
            kind_guessed: true,
            ..ResourceType::namespaced(group, version, plural, &guess_kind(plural))
        });
        if let Some(hint) = kind_hint.filter(|h| !h.is_empty() && rt.kind_guessed) {
            rt.kind = hint.to_owned();
            rt.kind_guessed = false;
        }
        rt.clone()
    }

    /// Every known type, served or guessed.
    pub(crate) fn types(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }

    fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceType> + 'a {
        self.types
            .values()
            .filter(move |rt| rt.group == group && rt.version == version)
    }

    /// `/api`
    pub(crate) fn api_versions(server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                { "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }
            ],
        })
    }

    /// `/apis`
    pub(crate) fn api_group_list(&self) -> Value {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for rt in self
            .types
            .values()
            .filter(|rt| !rt.group.is_empty() && !rt.kind_guessed)
        {
            let versions = groups.entry(&rt.group).or_default();
            if !versions.contains(&rt.version.as_str()) {
                versions.push(&rt.version);
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
                    .collect();
                json!({
                    "name": group,
                    "versions": versions,
                    "preferredVersion": versions[0],
                })
            })
            .collect();
        json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
    }

    /// `/api/v1` or `/apis/<group>/<version>`; `None` when no resource lives there.
    pub(crate) fn api_resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let resources: Vec<Value> = self
            .in_group_version(group, version)
            .filter(|rt| !rt.kind_guessed)
            .map(ResourceType::discovery_entry)
            .collect();
        if resources.is_empty() && !(group.is_empty() && version == "v1") {
            return None;
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }))
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`) of `/api` (`core`) or `/apis`: every
    /// group with its versions and resources in one document.
    pub(crate) fn aggregated(&self, core: bool) -> Value {
        let mut groups: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
        for rt in self
            .types
            .values()
            .filter(|rt| rt.group.is_empty() == core && !rt.kind_guessed)
        {
            let entry = rt.discovery_entry();
            let resource = json!({
                "resource": rt.plural,
                "responseKind": { "group": rt.group, "version": rt.version, "kind": rt.kind },
                "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": entry["singularName"],
                "verbs": entry["verbs"],
                "shortNames": entry.get("shortNames").cloned().unwrap_or_else(|| json!([])),
            });
            groups
                .entry(&rt.group)
                .or_default()
                .entry(&rt.version)
                .or_default()
                .push(resource);
        }
        let items: Vec<Value> = groups
            .into_iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .into_iter()
                    .map(|(version, resources)| {
                        json!({ "version": version, "resources": resources, "freshness": "Current" })
                    })
                    .collect();
                json!({ "metadata": { "name": group }, "versions": versions })
            })
            .collect();
        json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        })
    }

    /// `/version`
    pub(crate) fn version() -> Value {
        json!({
            "major": "1",
            "minor": FAKE_KUBE_MINOR,
            "gitVersion": format!("v1.{FAKE_KUBE_MINOR}.0-lockheed-fake"),
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_kinds() {
        assert_eq!(guess_kind("widgets"), "Widget");
        assert_eq!(guess_kind("policies"), "Policy");
        assert_eq!(guess_kind("fish"), "Fish");
    }

    #[test]
    fn unknown_resources_take_the_kind_of_their_first_object() {
        let mut r = Registry::default();
        assert_eq!(
            r.resolve("example.com", "v1", "widgets", None).kind,
            "Widget"
        );
        assert!(
            r.api_resource_list("example.com", "v1").is_none(),
            "a guessed kind is not advertised"
        );
        assert_eq!(
            r.resolve("example.com", "v1", "widgets", Some("Gizmo"))
                .kind,
            "Gizmo"
        );
        assert_eq!(
            r.resolve("example.com", "v1", "widgets", Some("Other"))
                .kind,
            "Gizmo"
        );
        let list = r.api_resource_list("example.com", "v1").unwrap();
        assert_eq!(list["resources"][0]["kind"], "Gizmo");
        let groups = r.api_group_list();
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "example.com")
        );
    }

    #[test]
    fn aggregated_discovery_lists_groups_and_resources() {
        let r = Registry::default();
        let core = r.aggregated(true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let apis = r.aggregated(false);
        let lease = &apis["items"][0]["versions"][0]["resources"][0];
        assert_eq!(lease["responseKind"]["kind"], "Lease");
        assert_eq!(lease["scope"], "Namespaced");
    }

    #[test]
    fn core_discovery_has_configmaps() {
        let r = Registry::default();
        let list = r.api_resource_list("", "v1").unwrap();
        let cm = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "configmaps")
            .unwrap();
        assert_eq!(cm["shortNames"][0], "cm");
        assert_eq!(cm["namespaced"], true);
        assert!(r.api_resource_list("nope.io", "v1").is_none());
    }
}
