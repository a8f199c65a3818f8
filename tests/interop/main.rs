//! Go and Rust on the same objects, for real: the Go programs of `interop/` (built by
//! `scripts/interop` from the Go module proxy) beside this crate, on the real control plane of
//! `scripts/control-plane`.
//!
//! Every test here needs `scripts/control-plane` (it says so and returns without
//! `LOCKHEED_CONTROL_PLANE`), and fails loudly when that is set but the Go programs cannot be
//! built. Run them alone with
//! `scripts/control-plane -- cargo test --all-features --test interop -- --nocapture`.
#![cfg(feature = "testing")]

mod lease_fleet;
mod peers;
mod release_cost;

/// Not a test: the entry point of a `LeaderElection` replica, which the tests run as a process
/// of its own (this test binary, run again with `LOCKHEED_INTEROP_REPLICA` set), so that it
/// can be stopped with SIGTERM and crashed with SIGKILL like the Go replicas. Without that
/// variable it does nothing.
#[test]
fn replica() {
    let Ok(config) = std::env::var(peers::REPLICA_VAR) else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(peers::run_replica(&config));
}
