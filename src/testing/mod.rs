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
//! # Faults on the real engine
//!
//! [`TestCluster`] runs a test on the fake server or on a real kube-apiserver and etcd
//! (`scripts/control-plane`). The fault tests of this repository (`tests/faults`) kill, stop
//! and restart those through the control plane's socket while eight contender processes (each
//! its own OS process and client, in real time, on a lease of 4 s, sections of 10-200 ms and
//! one in ten of 4-8 s) take and release one lock; the namespace's commits, recorded from
//! watches ([`TestCluster::record_commits`], each commit with the window in which it was made),
//! and the processes' sections are then checked by [`history`]. Three runs each on this
//! project's machine (2 cores, shared with other builds), every one with 0 violations and 0
//! commit gaps:
//!
//! | scenario | lock | sections (cut short by `lost()`) | commits checked | acquires timed out (30 s) | fault | work resumed after it |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | kube-apiserver killed (`SIGKILL`), started again 1 s later | mutex | 64 (0), 20 (0), 32 (1) | 192, 95, 201 | 0, 0, 0 | 4.0, 3.4, 4.2 s | 0, 0, 0.74 s |
//! | kube-apiserver stopped (`SIGSTOP`) 6 s, a lease and a half, then continued | mutex | 33 (1), 21 (1), 37 (1) | 152, 107, 127 | 0, 0, 0 | 6.0 s | 0.04, 0.18, 0.05 s |
//! | etcd killed (`SIGKILL`), started again 2 s later | semaphore of 3 | 37 (1), 54 (2), 26 (1) | 90, 120, 64 | 0, 0, 0 | 2.9, 3.1, 2.9 s | 0, 0, 0 |
//! | 3 etcd members: the leader killed, 2 s later a second one (quorum lost) for 5 s, both started again | read/write | 47 (1), 26 (2), 22 (1) | 134, 85, 55 | 0, 0, 0 | 9.3, 8.7, 7.4 s | 0.05, 0, 0.08 s |
//!
//! Each fault began half a second into a section meant to outlast its lease; that holder lost
//! its lock (`lost()` fired, before its lease ended) when the fault outlasted what was left of
//! its lease, and kept it otherwise. "Work resumed" is the time from the end of the fault (the
//! control request that ended it returned) until a section ran: zero when a holder kept its
//! lock through the fault. The longest time no section ran was 0-1.9 s around a kill, 2.9-3.1 s around a stop, 0 around an etcd
//! restart (three holders at once), 4.4-5.9 s around a lost quorum. Commit times from the
//! watches were known within 62-88 ms (median); a commit that a stopped kube-apiserver held
//! back was known only within the whole stop (6.1 s), which the checks allow for (see
//! [`history`], "Commits seen late"). A control run in which one process goes on working
//! after `lost()` fires is caught each time (an overlap, and a section outside its lease).
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
