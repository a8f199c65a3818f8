//! An in-process Kubernetes API server for tests.
//!
//! [`FakeApiServer`] speaks the Kubernetes REST API over real HTTP on `127.0.0.1`, so the code
//! under test uses an ordinary [`kube::Client`] (or `kubectl`) and cannot tell it from a
//! cluster for what lock libraries use: get, list, watch, create, update, the four patch types
//! and delete of namespaced objects, with kube-apiserver's optimistic concurrency, field
//! ownership (`managedFields`, apply conflicts), validation limits and error statuses. It
//! publishes the OpenAPI documents `kubectl` reads before it writes (`/openapi/v3` and its
//! group-version documents, `/openapi/v2`), and honours the `fieldValidation` they advertise:
//! unknown fields fail a `Strict` request (kubectl's default) and are dropped otherwise, with a
//! `Warning` under `Warn`. On top of that it offers what a real cluster cannot: fault
//! injection, request counters, access control by token, and an injectable clock.
//!
//! Its answers are checked against kube-apiserver v1.37.2's: the crate's differential tests
//! replay what real clients sent to a real server (`tests/differential/sequences`) and compare
//! the answers field by field; the differences left are those listed below.
//!
//! # What it does not emulate
//!
//! Nobody should rely on these by mistake:
//!
//! - admission (webhooks, quotas, limit ranges);
//! - finalizers, graceful deletion, owner-reference garbage collection and namespace
//!   termination: a delete is immediate, a namespace's with its contents;
//! - subresources (`/status`, `/scale`: 404) and the legacy `/watch/` paths;
//! - schemas beyond what the OpenAPI documents validate: lists are atomic (except
//!   `finalizers` and `ownerReferences` for apply; strategic merge patches replace lists
//!   whole), no defaulting, no `metadata.generation`, and duplicate fields are not detected;
//! - protobuf (answers are JSON; of requests, only the ConfigMap and Namespace bodies
//!   `kubectl create` sends are read), table output (`kubectl get` prints the list it gets
//!   instead), and YAML request bodies other than server-side apply's (read as YAML 1.2, where
//!   kube-apiserver's YAML 1.1 makes unquoted `y`, `yes`, `on` booleans);
//! - authentication other than bearer tokens (impersonation headers are ignored), and TLS;
//! - reads at a given `resourceVersion`: get and list read the latest state (a continued list
//!   reads its own snapshot, kept for the 32 newest lists), and the watch history is the newest
//!   events (`watch_history`), not kube-apiserver's window of 75 seconds;
//! - the wording of what kube-apiserver prints from Go values: the object a patch produced,
//!   quoted in the `422` that refuses it, has its keys sorted where kube-apiserver has Go's field
//!   order, and of decoding errors only JSON syntax errors are worded as Go's;
//! - timing: bookmarks come on the fake server's timers (one 2 s before a watch's timeout, then
//!   every `bookmark_interval`), and the bookmark that ends a watch's initial events at once,
//!   where kube-apiserver's cache sends it on its next bookmark tick;
//! - feature gates: it keeps a Lease's `spec.strategy` and `spec.preferredHolder`, as a server
//!   with `CoordinatedLeaderElection` on does (a beta gate, off by default through 1.37, where
//!   the real server drops both fields on write).
//!
//! # On a real cluster too
//!
//! [`TestCluster`] is this server or a real cluster, chosen by the environment
//! ([`CLUSTER_VAR`]), behind one interface, so that one suite runs on both.
//!
//! # Examples
//!
//! ```
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//! use lockheed_fake_apiserver::{FakeApiServer, Verb};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = FakeApiServer::start().await?;
//! let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("demo".into());
//! let created = api.create(&PostParams::default(), &cm).await?;
//! assert!(created.metadata.resource_version.is_some());
//! assert_eq!(server.counts().get(Verb::Create), 1);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![deny(clippy::pedantic)]
// `FakeApiServerBuilder` and the like read better than shorter, vaguer names.
#![allow(clippy::module_name_repetitions)]

mod access;
mod clock;
mod cluster;
mod commits;
mod faults;
mod gojson;
mod http;
mod log;
mod managed;
mod microtime;
mod names;
mod openapi;
mod paging;
mod patch;
mod protobuf;
mod request;
mod resources;
mod rng;
mod selector;
mod server;
mod status;
mod store;
mod validation;
mod watch;

pub use self::access::{ADMIN_TOKEN, AccessControl};
pub use self::clock::{Clock, SystemClock};
pub use self::cluster::{
    CLUSTER_VAR, CONTROL_PLANE_VAR, FAKE_COMMIT_LOG, Identity, ServerKind, TestCluster,
    TestClusterError,
};
pub use self::commits::{Commit, Operation};
pub use self::faults::{Fault, RequestMatcher};
pub use self::log::{RequestCounts, RequestRecord, Verb};
pub use self::resources::ResourceType;
pub use self::server::{FakeApiServer, FakeApiServerBuilder, StartError};

use self::server::Shared;

/// The README's examples, compiled and run as doctests so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
