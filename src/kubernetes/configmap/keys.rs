//! The names lockheed's and kube-lock's formats use in a ConfigMap.

pub use crate::kubernetes::keys::{
    DEFAULT_PREFIX, FENCING_ANNOTATION, FIELD_MANAGER, QUEUE_ANNOTATION,
};

/// The label on every lockheed lock's ConfigMap (Go lockheed lists locks with this selector).
pub const LOCK_LABEL: &str = "lockheed/lock";
/// The data key that holds a lockheed lock's state document.
pub const STATE_KEY: &str = "lock";
/// The annotation in which kube-lock keeps a semaphore.
pub const KUBE_LOCK_ANNOTATION: &str = "kube-lock";
