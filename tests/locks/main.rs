//! Tests of the lock API: one behavioural suite run against every backend, and the
//! Kubernetes-specific tests (Go lockheed's formats, client-go's Leases, request counts,
//! interoperation).
#![cfg(feature = "testing")]

mod bad_input;
mod bounds;
mod client_go;
mod edges;
mod election;
mod failures;
mod fifo;
mod harness;
mod history;
mod kinds;
mod kube_format;
mod kube_lock_format;
mod kube_requests;
mod lease_format;
mod lease_interop;
mod liveness;
#[cfg(feature = "metrics")]
mod metrics;
mod rbac;
#[cfg(feature = "metrics")]
mod recorder;
mod suite;
mod unexpiring;
mod waiting;
mod watches;
