//! The command lines (crate `lockheed-cli`), run as the built binaries against the fake API server,
//! which runs in the test's process: what they print, their exit codes, and what they leave
//! in the cluster.

mod harness;
mod kube_lock;
mod lockheed;
