//! `kube-lock`: a drop-in replacement for the Go tool of the same name. It takes (or, with
//! `--unlock`, gives back) a place in a semaphore kept in the `kube-lock` annotation of a
//! ConfigMap, with the Go tool's arguments, log lines, annotation JSON and exit codes.
//!
//! `args` reads the command line, `run` connects and dispatches, `lock` and `poll` take the
//! lock, `unlock` gives it back, `exit` maps failures to exit codes, `say` names things in log
//! lines.

#![forbid(unsafe_code)]
#![deny(clippy::pedantic)]

mod args;
mod exit;
mod lock;
mod poll;
mod run;
mod say;
#[path = "../shared/mod.rs"]
mod shared;
mod unlock;

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match args::Args::try_parse() {
        Ok(args) => args,
        Err(err) => return exit::usage(&err),
    };
    shared::log::init(args.verbose);
    match run::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
