//! Conformance tests of `lockheed_fake_apiserver::FakeApiServer`: each drives the server through
//! `kube::Api` (or `kubectl`) only, and checks status codes, Status reasons, resourceVersions
//! and watch events the way kube-apiserver produces them.

mod access;
mod cluster;
mod common;
mod concurrency;
mod crud;
mod discovery;
mod faults;
mod kubectl;
mod lease_manager;
mod observe;
mod ownership;
mod patch;
mod reflector;
mod validation;
mod watch;
