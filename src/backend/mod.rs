//! Backend plumbing: what a place that keeps locks implements, and what it stores.
//!
//! Users of the built-in backends ([`KubeLocker`](crate::KubeLocker),
//! [`MemoryLocker`](crate::MemoryLocker)) need nothing from here. To keep locks somewhere else
//! (a database, another API), implement [`Backend`]: read a lock's [`Record`], write a
//! [`LockState`] by compare-and-swap ([`Written`]), list every lock, and optionally notify
//! waiters of changes through [`Feeds`]. The type is then a [`Locker`](crate::Locker), and every
//! lock operation on it follows the crate's rules, which backends never decide.
//!
//! The states are Go lockheed's JSON documents ([`LockState::from_json`],
//! [`LockState::to_json`]): store them as they are. Their public accessors ([`LockState`],
//! [`Lease`]) are for reading (what a store indexes or shows); a state cannot be rebuilt from
//! them without losing what the rules keep in it (tokens, queue, kinds).

mod cas;
mod feed;
mod record;
mod store;

pub(crate) use self::cas::{Decision, Disarm, Known, OnUnknown, Start, Swapped, compare_and_swap};
pub use self::feed::{Changes, Feeds, Publisher, Snapshot, Source};
pub use self::record::{Record, Reservation, StoredStates, Written};
pub use self::store::Backend;
pub use crate::state::{Lease, LockState};
