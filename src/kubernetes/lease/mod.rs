//! Locks in `coordination.k8s.io/v1` Leases: [`LeaseLocker`] (also at the crate root), shared
//! with client-go's leader election, and the annotations it keeps next to client-go's record.
//!
//! A Lease's `spec` is client-go's record (`holderIdentity`, `leaseDurationSeconds`,
//! `acquireTime`, `renewTime`, `leaseTransitions`), written exactly as client-go writes it.
//! What client-go has no room for is kept in annotations that client-go leaves alone:
//!
//! - [`FENCING_ANNOTATION`]: the fencing counter;
//! - [`HOLDER_ANNOTATION`]: the current holder's token, nonce and reason;
//! - [`TAGS_ANNOTATION`]: the lock's tags;
//! - [`QUEUE_ANNOTATION`]: the waiters' queue.
//!
//! ```
//! use lockheed::lease::{FENCING_ANNOTATION, HOLDER_ANNOTATION};
//!
//! // Read a Go-shared Lease's fencing counter yourself, as `kubectl get lease -o yaml` shows it.
//! assert_eq!(FENCING_ANNOTATION, "lockheed/fencing-token");
//! assert_eq!(HOLDER_ANNOTATION, "lockheed/holder");
//! ```

mod format;
mod keys;
mod locker;

pub use self::keys::{
    FENCING_ANNOTATION, FIELD_MANAGER, HOLDER_ANNOTATION, QUEUE_ANNOTATION, TAGS_ANNOTATION,
};
pub use self::locker::{LeaseLocker, LeaseVersion};
