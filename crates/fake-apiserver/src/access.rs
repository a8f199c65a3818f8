//! Optional access control: bearer tokens mapped to users and RBAC rules, so that a test can
//! prove that a minimal `Role` is enough (or that a missing verb is refused with 403).

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};

use super::log::Verb;
use super::request::RequestInfo;
use super::status::ApiError;

/// The token of the administrator, who may do anything. [`FakeApiServer::client`](super::FakeApiServer::client)
/// and the kubeconfig use it.
pub const ADMIN_TOKEN: &str = "lockheed-fake-admin-token";

/// Who may do what, as RBAC would decide it.
///
/// With access control on, a request carries `Authorization: Bearer <token>`: an unknown token
/// is answered `401 Unauthorized`, a request without one is the user `system:anonymous`, and
/// a request that no rule of its user allows is answered `403 Forbidden` with kube-apiserver's
/// wording. Discovery is open to everyone, as the `system:discovery` role makes it.
/// [`ADMIN_TOKEN`] always has every right.
///
/// Rules work like RBAC's: a `Role`'s rules apply in the Role's namespace (like a RoleBinding),
/// a `ClusterRole`'s everywhere (like a ClusterRoleBinding). `resourceNames` restrict get,
/// update, patch and delete to those names, and list and watch to requests that select one of
/// those names with the field selector `metadata.name=<name>`; they cannot restrict create.
///
/// # Examples
///
/// ```
/// use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
/// use lockheed_fake_apiserver::AccessControl;
///
/// let role = Role {
///     metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
///         name: Some("locker".into()),
///         namespace: Some("default".into()),
///         ..Default::default()
///     },
///     rules: Some(vec![PolicyRule {
///         api_groups: Some(vec!["".into()]),
///         resources: Some(vec!["configmaps".into()]),
///         verbs: vec!["get".into(), "create".into(), "update".into()],
///         ..Default::default()
///     }]),
/// };
/// let access = AccessControl::new().user("token-a", "alice").role("token-a", &role);
/// # let _ = access;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "access control does nothing until given to the server"]
pub struct AccessControl {
    users: BTreeMap<String, User>,
}

#[derive(Debug, Clone, Default)]
struct User {
    name: String,
    /// (namespace the grant is limited to, rule)
    grants: Vec<(Option<String>, PolicyRule)>,
}

/// The result of checking one request.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    Allowed { user: Option<String> },
    Denied(ApiError),
}

impl AccessControl {
    /// No users yet (but [`ADMIN_TOKEN`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{AccessControl, FakeApiServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().access_control(AccessControl::new()).start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("unknown"));
    /// let err = api.get_opt("demo").await.unwrap_err();
    /// assert!(matches!(err, kube::Error::Api(status) if status.code == 401));
    /// let admin: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// assert!(admin.get_opt("demo").await.is_ok()); // the administrator may do anything
    /// # Ok(())
    /// # }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user with no rights, known by `token`.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{AccessControl, FakeApiServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let access = AccessControl::new().user("token-a", "alice");
    /// let server = FakeApiServer::builder().access_control(access).start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("token-a"));
    /// let err = api.get_opt("demo").await.unwrap_err(); // alice has no rights yet
    /// let kube::Error::Api(status) = err else { panic!("expected a status, got {err}") };
    /// assert_eq!(status.code, 403);
    /// assert!(status.message.contains(r#"User "alice" cannot get resource "configmaps""#));
    /// # Ok(())
    /// # }
    /// ```
    pub fn user(mut self, token: &str, name: &str) -> Self {
        name.clone_into(&mut self.users.entry(token.to_owned()).or_default().name);
        self
    }

    /// Grants the rules of `role` in its namespace to the user of `token` (creating the user,
    /// named after the token, if needed).
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::{core::v1::ConfigMap, rbac::v1::Role};
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{AccessControl, FakeApiServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let role: Role = serde_json::from_value(serde_json::json!({
    ///     "metadata": {"name": "lock-reader", "namespace": "default"},
    ///     "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    /// }))?;
    /// let access = AccessControl::new().role("token-a", &role);
    /// let server = FakeApiServer::builder().access_control(access).start().await?;
    /// let client = server.client_for_token("token-a");
    /// assert!(Api::<ConfigMap>::namespaced(client.clone(), "default").get_opt("x").await.is_ok());
    /// assert!(Api::<ConfigMap>::namespaced(client, "kube-system").get_opt("x").await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn role(self, token: &str, role: &Role) -> Self {
        let namespace = role
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let rules = role.rules.clone().unwrap_or_default();
        rules
            .into_iter()
            .fold(self, |acc, rule| acc.rule(token, Some(&namespace), rule))
    }

    /// Grants the rules of `role` in every namespace to the user of `token`.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::{core::v1::ConfigMap, rbac::v1::ClusterRole};
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{AccessControl, FakeApiServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let role: ClusterRole = serde_json::from_value(serde_json::json!({
    ///     "metadata": {"name": "lock-reader"},
    ///     "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    /// }))?;
    /// let access = AccessControl::new().cluster_role("token-a", &role);
    /// let server = FakeApiServer::builder().access_control(access).start().await?;
    /// let client = server.client_for_token("token-a");
    /// let api: Api<ConfigMap> = Api::namespaced(client, "kube-system");
    /// assert!(api.get_opt("x").await.is_ok()); // in every namespace
    /// # Ok(())
    /// # }
    /// ```
    pub fn cluster_role(self, token: &str, role: &ClusterRole) -> Self {
        let rules = role.rules.clone().unwrap_or_default();
        rules
            .into_iter()
            .fold(self, |acc, rule| acc.rule(token, None, rule))
    }

    /// Grants one rule, in `namespace` or (with `None`) everywhere.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::{core::v1::ConfigMap, rbac::v1::PolicyRule};
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{AccessControl, FakeApiServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rule: PolicyRule = serde_json::from_value(serde_json::json!({
    ///     "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
    ///     "resourceNames": ["lockheed-jobs"],
    /// }))?;
    /// let access = AccessControl::new().rule("token-a", Some("default"), rule);
    /// let server = FakeApiServer::builder().access_control(access).start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("token-a"));
    /// assert!(api.get_opt("lockheed-jobs").await.is_ok());
    /// assert!(api.get_opt("lockheed-other").await.is_err()); // not one of the names
    /// # Ok(())
    /// # }
    /// ```
    pub fn rule(mut self, token: &str, namespace: Option<&str>, rule: PolicyRule) -> Self {
        let user = self.users.entry(token.to_owned()).or_default();
        if user.name.is_empty() {
            token.clone_into(&mut user.name);
        }
        user.grants.push((namespace.map(str::to_owned), rule));
        self
    }

    pub(crate) fn check(&self, token: Option<&str>, info: &RequestInfo) -> Verdict {
        if token == Some(ADMIN_TOKEN) {
            return Verdict::Allowed {
                user: Some("admin".into()),
            };
        }
        let (name, grants) = match token {
            None => ("system:anonymous", &[][..]),
            Some(token) => match self.users.get(token) {
                Some(user) => (user.name.as_str(), user.grants.as_slice()),
                None => return Verdict::Denied(ApiError::unauthorized()),
            },
        };
        let allowed = info.verb == Verb::Discovery
            || grants
                .iter()
                .any(|(namespace, rule)| grant_allows(namespace.as_deref(), rule, info));
        if allowed {
            Verdict::Allowed {
                user: Some(name.to_owned()),
            }
        } else {
            Verdict::Denied(forbidden(name, info))
        }
    }
}

fn contains_or_star(list: &[String], want: &str) -> bool {
    list.iter().any(|item| item == "*" || item == want)
}

fn grant_allows(namespace: Option<&str>, rule: &PolicyRule, info: &RequestInfo) -> bool {
    if namespace.is_some_and(|ns| info.namespace.as_deref() != Some(ns)) {
        return false;
    }
    let Some(resource) = info.resource.as_deref() else {
        return false;
    };
    let names = rule.resource_names.as_deref().unwrap_or_default();
    let name_ok = names.is_empty()
        || (info.verb != Verb::Create
            && info.verb != Verb::DeleteCollection
            && info
                .name
                .as_deref()
                .is_some_and(|n| names.iter().any(|m| m == n)));
    contains_or_star(&rule.verbs, info.verb.as_str())
        && contains_or_star(rule.api_groups.as_deref().unwrap_or_default(), &info.group)
        && contains_or_star(rule.resources.as_deref().unwrap_or_default(), resource)
        && name_ok
}

fn forbidden(user: &str, info: &RequestInfo) -> ApiError {
    let resource = info.resource.as_deref().unwrap_or_default();
    let subject = match &info.name {
        Some(name) => format!("{resource} \"{name}\""),
        None => resource.to_owned(),
    };
    let scope = match &info.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    let mut err = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{subject} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            info.verb, info.group
        ),
    );
    let mut details = serde_json::json!({ "kind": resource });
    if let Some(name) = &info.name {
        details["name"] = serde_json::json!(name);
    }
    err.details = Some(details);
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], names: &[&str]) -> PolicyRule {
        PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            resource_names: (!names.is_empty())
                .then(|| names.iter().map(|n| (*n).to_owned()).collect()),
            ..Default::default()
        }
    }

    fn info(verb: Verb, ns: &str, name: Option<&str>) -> RequestInfo {
        RequestInfo {
            verb,
            token: None,
            group: String::new(),
            resource: Some("configmaps".into()),
            namespace: Some(ns.into()),
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn rbac_rules() {
        let ac = AccessControl::new()
            .user("t", "alice")
            .rule(
                "t",
                Some("default"),
                rule(&["get", "update"], &["lockheed-a"]),
            )
            .rule("t", Some("default"), rule(&["create", "list"], &[]));
        let check = |i: &RequestInfo| ac.check(Some("t"), i);
        assert!(matches!(
            check(&info(Verb::Get, "default", Some("lockheed-a"))),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            check(&info(Verb::Create, "default", None)),
            Verdict::Allowed { .. }
        ));
        let Verdict::Denied(err) = check(&info(Verb::Get, "default", Some("other"))) else {
            panic!("other names are not granted");
        };
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "configmaps \"other\" is forbidden: User \"alice\" cannot get resource \"configmaps\" \
             in API group \"\" in the namespace \"default\""
        );
        assert!(matches!(
            check(&info(Verb::Get, "prod", Some("lockheed-a"))),
            Verdict::Denied(_)
        ));
        assert!(matches!(
            check(&info(Verb::Delete, "default", Some("lockheed-a"))),
            Verdict::Denied(_)
        ));
        assert!(matches!(
            check(&info(Verb::Discovery, "default", None)),
            Verdict::Allowed { .. }
        ));
        assert_eq!(
            ac.check(Some("bogus"), &info(Verb::Get, "default", None)),
            Verdict::Denied(ApiError::unauthorized())
        );
        assert!(
            matches!(ac.check(None, &info(Verb::Get, "default", None)), Verdict::Denied(e) if e.message.contains("system:anonymous"))
        );
        assert!(matches!(
            ac.check(Some(ADMIN_TOKEN), &info(Verb::Delete, "x", None)),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn resource_names_never_restrict_create() {
        let ac = AccessControl::new().rule("t", None, rule(&["create"], &["lockheed-a"]));
        assert!(matches!(
            ac.check(Some("t"), &info(Verb::Create, "ns", Some("lockheed-a"))),
            Verdict::Denied(_)
        ));
    }
}
