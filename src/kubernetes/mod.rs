//! The Kubernetes backends side by side: [`configmap`] ([`KubeLocker`](crate::KubeLocker)) and
//! [`lease`] ([`LeaseLocker`](crate::LeaseLocker)), over what they share: one read and one
//! compare-and-swap of a lock's object (`store`), the namespace watch (`watch`), what
//! kube-apiserver refuses (`limits`, `names`), and the names both write (`keys`: the fencing
//! and queue annotations, the field manager). A backend only says which objects it keeps its
//! locks in and how a state is read from one and written into one (a `watch::Kept`).
//!
//! The shared modules import neither backend, and neither backend imports the other.
//! [`MemoryLocker`](crate::MemoryLocker) applies the same limits, from here.

pub mod configmap;
mod keys;
pub mod lease;
mod limits;
mod names;
mod store;
mod watch;

pub(crate) use self::keys::DEFAULT_PREFIX;
pub(crate) use self::limits::{MAX_DATA_BYTES, check_name, check_state_size};
