//! The names both Kubernetes lockers write into their objects, and the default name of a lock's
//! ConfigMap, which [`MemoryLocker`](crate::MemoryLocker) checks names against too.

/// The default prefix of lock ConfigMap names ([`KubeLocker::with_prefix`](crate::KubeLocker::with_prefix) changes it).
pub const DEFAULT_PREFIX: &str = "lockheed-";
/// The annotation that keeps the fencing counter out of reach of Go clients, which drop the
/// state keys they do not know when they rewrite it.
pub const FENCING_ANNOTATION: &str = "lockheed/fencing-token";
/// The annotation in which this crate keeps the waiters' queue of a lock in kube-lock's format
/// (kube-lock's own document has no room for it, and the Go tool leaves other annotations
/// alone). Locks in lockheed's format keep their queue in their state document.
pub const QUEUE_ANNOTATION: &str = "lockheed/queue";
/// The field manager of every write of [`KubeLocker`](crate::KubeLocker) and
/// [`LeaseLocker`](crate::LeaseLocker): `kubectl get -o yaml --show-managed-fields` names it
/// as the owner of the keys a lock writes.
pub const FIELD_MANAGER: &str = "lockheed";

/// The parameters of a lock's create or update: its field manager.
pub(crate) fn post_params() -> kube::api::PostParams {
    kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..kube::api::PostParams::default()
    }
}
