//! Locks in Kubernetes ConfigMaps: [`KubeLocker`] (also at the crate root) and the names its
//! formats use, for tools that read or select lock ConfigMaps themselves.
//!
//! Two formats are kept ([`Format`], chosen with [`KubeLocker::with_format`]):
//!
//! - Go lockheed's: the ConfigMap `lockheed-<name>` ([`DEFAULT_PREFIX`]), labelled
//!   [`LOCK_LABEL`], its state a JSON document in `data[`[`STATE_KEY`]`]`;
//! - the Go kube-lock tool's: a semaphore in the annotation [`KUBE_LOCK_ANNOTATION`] of a
//!   ConfigMap of any name.
//!
//! Both keep the fencing counter in the annotation [`FENCING_ANNOTATION`] too.
//!
//! ```
//! use lockheed::configmap::{LOCK_LABEL, STATE_KEY};
//!
//! // Select lockheed's lock ConfigMaps yourself, as `kubectl get cm -l lockheed/lock` does.
//! let params = kube::api::ListParams::default().labels(LOCK_LABEL);
//! assert_eq!(params.label_selector.as_deref(), Some("lockheed/lock"));
//! assert_eq!(STATE_KEY, "lock");
//! ```

mod format;
#[cfg(test)]
mod hostile;
mod keys;
mod locker;
mod objects;

pub use self::format::Format;
pub use self::keys::{
    DEFAULT_PREFIX, FENCING_ANNOTATION, FIELD_MANAGER, KUBE_LOCK_ANNOTATION, LOCK_LABEL,
    QUEUE_ANNOTATION, STATE_KEY,
};
pub use self::locker::KubeLocker;
pub use self::objects::ConfigMapVersion;
