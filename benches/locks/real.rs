//! Scenarios 8 to 12: the real server beside the fake one. They run when the environment
//! gives a real server (inside `scripts/control-plane`, or with `LOCKHEED_BENCH_SERVER=real`
//! and a `KUBECONFIG`), each measuring both servers in the same run, so that every real
//! figure reads as a ratio to the fake one or to the real server's own floor and ceiling:
//!
//! - 8 (`floor.rs`): each server's floor (PUT → watch event) and ceiling (writes/s);
//! - 9 (`side_requests.rs`): requests per lock operation;
//! - 10 (`side_handover.rs`): handover latency against the floor;
//! - 11 (`processes.rs`): 8 contenders, each a process of its own;
//! - 12 (`renewals.rs`): what 1,000 and 10,000 held locks cost the server.

use crate::plane::{ControlPlane, SERVER, check_parser, real_wanted};
use crate::{Mode, floor, processes, renewals, run_on_own_runtime, side_handover, side_requests};

/// The scenarios of this file.
pub const SCENARIOS: std::ops::RangeInclusive<u32> = 8..=12;

/// One line for the report's head: which servers this run measures.
pub fn servers() -> String {
    if real_wanted() {
        format!(
            "servers: the in-process fake (scenarios 1-7) and, side by side with it, the real \
             cluster of KUBECONFIG (scenarios 8-12{})",
            match std::env::var_os(lockheed::testing::CONTROL_PLANE_VAR) {
                Some(dir) => format!(", scripts/control-plane in {}", dir.to_string_lossy()),
                None => String::new(),
            }
        )
    } else {
        format!(
            "server: the in-process fake only (scenarios 8-12, the real server beside it, run \
             under scripts/control-plane or with {SERVER}=real)"
        )
    }
}

/// Runs the scenarios of `runs` among 8 to 12, when the environment gives a real server;
/// scenario 8 runs whenever another does, as their baseline.
pub fn run(mode: Mode, runs: &dyn Fn(u32) -> bool) {
    if !real_wanted() || !SCENARIOS.clone().any(runs) {
        return;
    }
    check_parser();
    let plane = ControlPlane::from_env();
    if let Some(plane) = &plane {
        println!(
            "\nreal server: kube-apiserver pid {}, etcd {} (pids {:?})",
            plane.apiserver_pid,
            plane.etcd_version(),
            plane.etcd.iter().map(|e| e.pid).collect::<Vec<_>>()
        );
    }
    let floors = run_on_own_runtime("side_floor", async {
        let version = match kube::Client::try_default().await {
            Ok(client) => client
                .apiserver_version()
                .await
                .map_or_else(|e| format!("unknown ({e})"), |v| v.git_version),
            Err(e) => format!("unknown ({e})"),
        };
        println!("real server: kube-apiserver {version}");
        floor::run(mode, plane.as_ref()).await
    });
    if runs(9) {
        run_on_own_runtime("side_requests", side_requests::run(mode));
    }
    if runs(10) {
        run_on_own_runtime("side_handover", side_handover::run(mode, &floors));
    }
    if runs(11) {
        run_on_own_runtime(
            "side_processes",
            processes::run(mode, &floors, plane.as_ref()),
        );
    }
    if runs(12) {
        renewals::run(mode, &floors, plane.as_ref());
    }
}
