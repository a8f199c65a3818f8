//! Access control: tokens, RBAC rules, 401 and 403 like kube-apiserver's.

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchParams};
use lockheed_fake_apiserver::{AccessControl, FakeApiServer, Verb};

use crate::common::{cm, create, full_status, status};

fn rule(verbs: &[&str], names: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        resource_names: (!names.is_empty())
            .then(|| names.iter().map(|n| (*n).to_owned()).collect()),
        ..PolicyRule::default()
    }
}

/// A Role as an operator would write it: create anywhere in the namespace, everything else
/// on one name only.
fn locker_role() -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some("locker".into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(&["create"], &[]),
            rule(&["get", "update", "list", "watch"], &["lockheed-a"]),
        ]),
    }
}

async fn guarded() -> FakeApiServer {
    let access = AccessControl::new()
        .user("alice-token", "alice")
        .role("alice-token", &locker_role());
    FakeApiServer::builder()
        .access_control(access)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_role_allows_exactly_its_rules() {
    let server = guarded().await;
    let alice: Api<ConfigMap> = Api::namespaced(server.client_for_token("alice-token"), "default");
    let made = create(&alice, &cm("lockheed-a", &[])).await;
    alice
        .replace("lockheed-a", &PostParams::default(), &made)
        .await
        .unwrap();
    alice.get("lockheed-a").await.unwrap();
    // list and watch of one name are authorized through the field selector.
    let one = ListParams::default().fields("metadata.name=lockheed-a");
    assert_eq!(alice.list(&one).await.unwrap().items.len(), 1);
    let mut watch = alice
        .watch(
            &WatchParams::default()
                .fields("metadata.name=lockheed-a")
                .timeout(1),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    assert!(watch.next().await.unwrap().is_ok());

    // Another name, another verb, another namespace, another resource: 403.
    let admin: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    create(&admin, &cm("other", &[])).await;
    let s = full_status(alice.get("other").await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        s.message,
        "configmaps \"other\" is forbidden: User \"alice\" cannot get resource \"configmaps\" \
         in API group \"\" in the namespace \"default\""
    );
    let s = full_status(alice.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(
        s.message,
        "configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API \
         group \"\" in the namespace \"default\""
    );
    assert_eq!(
        status(
            alice
                .delete("lockheed-a", &Default::default())
                .await
                .unwrap_err()
        )
        .0,
        403
    );
    let kube_system: Api<ConfigMap> =
        Api::namespaced(server.client_for_token("alice-token"), "kube-system");
    assert_eq!(
        status(kube_system.get("lockheed-a").await.unwrap_err()).0,
        403
    );
    let leases: Api<Lease> = Api::namespaced(server.client_for_token("alice-token"), "default");
    assert_eq!(status(leases.get("x").await.unwrap_err()).0, 403);
    let everywhere: Api<ConfigMap> = Api::all(server.client_for_token("alice-token"));
    let s = full_status(everywhere.list(&ListParams::default()).await.unwrap_err());
    assert!(s.message.ends_with("at the cluster scope"), "{}", s.message);

    // Discovery is open to every authenticated user.
    server
        .client_for_token("alice-token")
        .apiserver_version()
        .await
        .unwrap();
    // The log says who asked.
    let users: Vec<_> = server
        .requests()
        .into_iter()
        .filter_map(|r| r.user)
        .collect();
    assert!(users.contains(&"alice".to_owned()) && users.contains(&"admin".to_owned()));
}

#[tokio::test]
async fn unknown_tokens_are_401_and_no_token_is_anonymous() {
    let server = guarded().await;
    let bogus: Api<ConfigMap> = Api::namespaced(server.client_for_token("bogus"), "default");
    let s = full_status(bogus.get("x").await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized"));

    let mut config = server.config();
    config.auth_info = Default::default();
    let anonymous: Api<ConfigMap> =
        Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let s = full_status(anonymous.get("x").await.unwrap_err());
    assert_eq!(s.code, 403);
    assert!(s.message.contains("system:anonymous"), "{}", s.message);
}

#[tokio::test]
async fn access_control_can_be_switched_at_run_time() {
    let server = FakeApiServer::start().await.unwrap();
    let nobody: Api<ConfigMap> = Api::namespaced(server.client_for_token("nobody"), "default");
    assert_eq!(
        status(nobody.get("x").await.unwrap_err()).0,
        404,
        "off: everything is allowed"
    );
    server.set_access_control(Some(AccessControl::new().user("nobody", "nobody")));
    assert_eq!(status(nobody.get("x").await.unwrap_err()).0, 403);
    server.set_access_control(None);
    assert_eq!(status(nobody.get("x").await.unwrap_err()).0, 404);
    // Refused requests count like any other.
    assert_eq!(server.counts().get(Verb::Get), 3);
}
