//! Locks in Kubernetes objects: ConfigMaps ([`configmap`]) and Leases ([`lease`]), side by
//! side, and what they share.

pub mod configmap;
pub mod lease;
mod limits;
pub(crate) mod names;
pub(crate) mod store;
pub(crate) mod watch;

use self::configmap::keys;
