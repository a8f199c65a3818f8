//! Distributed locks kept in Kubernetes ConfigMaps.
//!
//! `lockheed` is the Rust successor of the Go library lockheed and of the kube-lock command
//! line. A [`Lock`] names a lock in a [`Locker`] (the backend): a mutex, a semaphore of N
//! holders ([`Lock::with_max_holders`]) or a read/write lock ([`Lock::with_access`]). Taking
//! it yields a [`LockGuard`] that renews the lease in the background, tells you when the lock
//! is lost, carries a fencing token, and releases the lock when dropped.
//!
//! - [`KubeLocker`] keeps locks in ConfigMaps `lockheed-<name>`, in Go lockheed's format, so
//!   Rust and Go clients can share them; [`KubeLocker::with_format`] keeps semaphores in the
//!   Go kube-lock tool's annotation instead. The [`configmap`] module names what both formats
//!   store.
//! - [`LeaseLocker`] keeps mutexes in `coordination.k8s.io` Leases, the objects Kubernetes
//!   elects leaders with, in client-go's format: a Rust and a Go replica of one controller can
//!   share a Lease. The [`lease`] module names the annotations it adds.
//! - [`MemoryLocker`] keeps them in process memory, for tests, refusing what `KubeLocker`
//!   would.
//! - [`Locker`] is what they all are: [`get`](Locker::get) and [`list`](Locker::list) show locks
//!   ([`LockInfo`], [`Holder`]), [`evict`](Locker::evict) removes dead holders.
//! - [`LeaderElection`] ([`election`]) runs work while this replica leads: a term at a time,
//!   each with its fencing token, stopped when leadership ends, released at once on shutdown.
//! - [`Condition`] filters locks when listing them and allows forced takeover
//!   ([`Lock::with_force`]).
//! - [`clock`]: wall-clock time that tests can inject.
//! - [`backend`]: what to implement to keep locks somewhere else.
//! - [`text`]: text read from the cluster, made safe to print.
//! - `testing` (feature `testing`): [`testing::FakeApiServer`] (the crate
//!   `lockheed-fake-apiserver`), an in-process Kubernetes API server over real HTTP, with fault
//!   injection, request counters and access control, and [`testing::history`], which checks a
//!   run's commits against lockheed's rules.
//!
//! ```
//! use std::time::Duration;
//! use lockheed::{Lock, MemoryLocker};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lockheed::Error> {
//! let locker = MemoryLocker::new(); // or KubeLocker::new(client, "namespace")
//! let guard = Lock::new("reindex", locker)
//!     .with_duration(Duration::from_secs(30))
//!     .acquire()
//!     .await?;
//! tokio::select! {
//!     () = guard.lost() => eprintln!("lost the lock: stop writing"),
//!     () = async { /* the critical section */ } => {}
//! }
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! With the feature `metrics`, the crate records what operators alert on through the
//! [`metrics`](https://docs.rs/metrics) facade, for the exporter the application installs
//! (Prometheus, OpenTelemetry, ...); `lockheed::metrics` names them and describes them to the
//! recorder (`lockheed::metrics::describe()`). Without the feature nothing is recorded.
//!
//! | Metric | Type | Labels | Meaning |
//! |---|---|---|---|
//! | `lockheed_acquisitions_total` | counter | `lock`, `result` | calls to take the lock ([`try_acquire`](Lock::try_acquire), [`acquire`](Lock::acquire), [`acquire_timeout`](Lock::acquire_timeout)), by `result`: `acquired`, `held` (`try_acquire` found it held), `timeout` (the acquire timeout ran out), `error` (any other error) |
//! | `lockheed_wait_seconds` | histogram | `lock` | how long a waiting acquire took to take the lock (not `try_acquire`, nor an acquire that failed) |
//! | `lockheed_hold_seconds` | histogram | `lock` | how long a guard held the lock: from taking it until it was released, dropped, forgotten or lost |
//! | `lockheed_held` | gauge | `lock` | guards of this process holding the lock now |
//! | `lockheed_renewals_failed_total` | counter | `lock` | renewals that failed and are retried (the lock is lost if none succeeds before the lease ends) |
//! | `lockheed_locks_lost_total` | counter | `lock` | guards whose [`lost`](LockGuard::lost) fired: not renewed in time, taken over, or given up to a preferred holder |
//! | `lockheed_leader_status` | gauge | `lock` | 1 while this process leads the [election](LeaderElection) on the lock, 0 while it campaigns (client-go's `leader_election_master_status`) |
//!
//! `lock` is the lock's name (for an election, its Lease's), which the application bounds;
//! holder identities are no label (random by default, and pod names change with each restart:
//! the scrape target says which replica reports). The README's "Metrics" section shows how to
//! export them to Prometheus, and alerts to start from.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![deny(clippy::pedantic)]
// `FakeApiServer` in `lockheed::testing` reads better than a shorter, vaguer name.
#![allow(clippy::module_name_repetitions)]

// The layers, from the bottom: `state` (what is stored); `info`, `condition` and `error` (what
// users see of it); `backend` (where it is stored: one compare-and-swap loop); `rules` (every
// locking decision, pure); `locker` and `lock` (taking, holding, waiting); `election`. The
// backends, `kubernetes` (ConfigMaps and Leases) and `memory`, implement `backend`. No module
// imports one above it.
pub mod backend;
pub mod clock;
mod condition;
pub mod election;
mod error;
mod info;
mod kubernetes;
mod lock;
mod locker;
mod memory;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
mod metrics;
mod rules;
mod state;
pub mod text;

pub use self::kubernetes::{configmap, lease};

pub use self::condition::Condition;
pub use self::election::LeaderElection;
pub use self::error::Error;
pub use self::info::{Holder, LockInfo, Waiting};
#[doc(inline)]
pub use self::kubernetes::configmap::KubeLocker;
#[doc(inline)]
pub use self::kubernetes::lease::LeaseLocker;
pub use self::lock::{Lock, LockGuard};
pub use self::locker::{Evict, LockList, Locker};
pub use self::memory::MemoryLocker;
pub use self::state::kind::{Access, LockKind};

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

/// The README's examples, compiled and run as doctests so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
