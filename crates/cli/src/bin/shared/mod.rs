//! What the `kube-lock` and `lockheed` command lines share: connecting to the cluster, Go-style
//! durations, log lines, the progress line while waiting, termination signals, and (from the
//! library) text from the cluster made safe to print.
//!
//! Each binary includes this folder with `#[path = "../shared/mod.rs"] mod shared;`; it is
//! not a target of its own (it has no `main.rs`). The library stays free of `clap`, `anyhow`
//! and terminal handling.

// Each binary uses a different part of what is shared.
#![allow(dead_code, unused_imports)]

pub(crate) mod cluster;
pub(crate) mod duration;
pub(crate) mod log;
pub(crate) mod progress;
pub(crate) mod signals;
pub(crate) use lockheed::text;
