//! Distributed locks kept in Kubernetes ConfigMaps.
//!
//! `lockheed` is the Rust successor of the Go library lockheed and of the kube-lock command
//! line. This release holds the foundation the lock API is built and tested on:
//!
//! - [`clock`]: wall-clock time that tests can inject, so that lease expiry and clock skew
//!   are tested without sleeping.
//! - `testing` (feature `testing`): [`testing::FakeApiServer`], an in-process Kubernetes API
//!   server over real HTTP, with fault injection, request counters and access control, for
//!   this crate's tests and for users who test their own code against Kubernetes.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![deny(clippy::pedantic)]
// Errors are documented on the error types and in `# Errors` sections where they are not
// obvious; repeating "returns an error if the request fails" everywhere adds noise.
#![allow(clippy::missing_errors_doc)]
// `FakeApiServer` in `lockheed::testing` reads better than a shorter, vaguer name.
#![allow(clippy::module_name_repetitions)]

pub mod clock;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

/// The README's examples, compiled and run as doctests so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
