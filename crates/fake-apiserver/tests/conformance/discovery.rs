//! Discovery endpoints, and resources of any group and version.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::discovery::Discovery;
use lockheed_fake_apiserver::{FakeApiServer, ResourceType};
use serde_json::json;

use crate::common::server;

#[tokio::test]
async fn version_and_discovery_documents() {
    let server = server().await;
    let client = server.client();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );

    let core = client.list_core_api_versions().await.unwrap();
    assert_eq!(core.versions, ["v1"]);

    let v1 = client.list_core_api_resources("v1").await.unwrap();
    let cms = v1
        .resources
        .iter()
        .find(|r| r.name == "configmaps")
        .unwrap();
    assert!(cms.namespaced);
    assert_eq!(cms.kind, "ConfigMap");
    assert!(cms.verbs.iter().any(|v| v == "watch"));
    let ns = v1
        .resources
        .iter()
        .find(|r| r.name == "namespaces")
        .unwrap();
    assert!(!ns.namespaced);

    let groups = client.list_api_groups().await.unwrap();
    let coordination = groups
        .groups
        .iter()
        .find(|g| g.name == "coordination.k8s.io")
        .unwrap();
    assert_eq!(
        coordination
            .preferred_version
            .as_ref()
            .unwrap()
            .group_version,
        "coordination.k8s.io/v1"
    );
    let leases = client
        .list_api_group_resources("coordination.k8s.io/v1")
        .await
        .unwrap();
    assert_eq!(leases.resources[0].name, "leases");

    // Paths the server does not serve are 404 with a Status.
    let err = client
        .list_api_group_resources("nope.example.com/v1")
        .await
        .unwrap_err();
    assert_eq!(crate::common::status(err).0, 404);
}

#[tokio::test]
async fn kube_discovery_classic_and_aggregated() {
    let server = server().await;
    for aggregated in [false, true] {
        let discovery = Discovery::new(server.client());
        let discovery = if aggregated {
            discovery.run_aggregated().await.unwrap()
        } else {
            discovery.run().await.unwrap()
        };
        let gvk = GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease");
        let (lease, caps) = discovery.resolve_gvk(&gvk).expect("leases are discovered");
        assert_eq!(lease.plural, "leases");
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        let (cm, _) = discovery
            .resolve_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"))
            .expect("configmaps are discovered");
        // What discovery found is enough to use the resource.
        let api: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &cm);
        let name = format!("discovered-{aggregated}");
        let obj = DynamicObject::new(&name, &cm).data(json!({ "data": { "k": "v" } }));
        api.create(&PostParams::default(), &obj).await.unwrap();
        assert_eq!(api.get(&name).await.unwrap().data["data"]["k"], "v");
    }
}

#[tokio::test]
async fn any_namespaced_resource_of_any_group() {
    let server = FakeApiServer::builder()
        .resource(
            ResourceType::namespaced("example.com", "v1", "widgets", "Widget").short_name("wd"),
        )
        .start()
        .await
        .unwrap();
    let widgets = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &widgets);
    let obj = DynamicObject::new("w1", &widgets).data(json!({ "spec": { "size": 3 } }));
    let made = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(made.types.unwrap().kind, "Widget");
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let resources = server
        .client()
        .list_api_group_resources("example.com/v1")
        .await
        .unwrap();
    assert_eq!(
        resources.resources[0].short_names.as_deref(),
        Some(&["wd".to_owned()][..])
    );

    // A resource nobody registered works too: its kind comes from the first object.
    let gadgets = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("other.io", "v2", "Gadget"),
        "gadgets",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &gadgets);
    let made = api
        .create(&PostParams::default(), &DynamicObject::new("g", &gadgets))
        .await
        .unwrap();
    assert_eq!(made.types.unwrap().api_version, "other.io/v2");
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].metadata.name.as_deref(), Some("g"));
    let groups = server.client().list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "other.io"));
}
