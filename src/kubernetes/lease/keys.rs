//! The annotations in which a Lease keeps what client-go's record has no room for. client-go
//! keeps a Lease's metadata as it read it, so Go leaders leave them in place.

pub use crate::kubernetes::keys::{FENCING_ANNOTATION, FIELD_MANAGER, QUEUE_ANNOTATION};

/// The annotation with the current holder's lockheed fields (its fencing token, the nonce of
/// the attempt that wrote its lease, its reason), as JSON with its `instanceID`: they count
/// only while that is the Lease's `holderIdentity`.
pub const HOLDER_ANNOTATION: &str = "lockheed/holder";
/// The annotation with the lock's tags, as a JSON list.
pub const TAGS_ANNOTATION: &str = "lockheed/tags";
