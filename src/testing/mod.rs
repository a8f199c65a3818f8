//! Test tooling (feature `testing`): the fake Kubernetes API server, and the history checker
//! that replays lockheed's rules over what it committed.
//!
//! Everything of the crate [`lockheed_fake_apiserver`] is re-exported here:
//! [`FakeApiServer`] speaks the Kubernetes REST API over real HTTP on `127.0.0.1`, with fault
//! injection, request counters, access control and a commit log. It depends on nothing of
//! lockheed, so any kube-rs user can take it on its own; its crate documentation says what it
//! emulates and what it does not. lockheed's clocks ([`crate::clock`]) implement its
//! [`Clock`], so one clock can drive the server and the lockers under test.
//!
//! [`history`] checks a run's commits against lockheed's rules: sections that overlap, tokens
//! out of order, transitions no rule explains.
//!
//! # Examples
//!
//! ```
//! use lockheed::testing::FakeApiServer;
//! use lockheed::{KubeLocker, Lock};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = FakeApiServer::start().await?;
//! let locker = KubeLocker::new(server.client(), "default");
//! let guard = Lock::new("demo", locker).acquire().await?;
//! assert_eq!(guard.token(), 1);
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```

pub mod history;

#[doc(inline)]
pub use lockheed_fake_apiserver::*;
