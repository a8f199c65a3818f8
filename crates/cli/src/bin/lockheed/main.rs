//! `lockheed`: run a command under a distributed lock kept in a Kubernetes ConfigMap, and
//! list, show and release such locks.
//!
//! Arguments are defined in [`args`] (with the manual's longer sections in [`help`]); each
//! subcommand runs in its own module ([`run`], [`list`], [`show`], [`release`]), and [`exit`]
//! says which exit code means what. `run` starts the command with [`child`], which hands it
//! the terminal with [`terminal`].
#![forbid(unsafe_code)]
#![deny(clippy::pedantic)]

#[path = "../shared/mod.rs"]
mod shared;

mod args;
mod child;
mod connect;
mod exit;
mod help;
mod list;
mod output;
mod release;
mod run;
mod show;
mod terminal;

use std::process::ExitCode;

use clap::Parser as _;

use crate::args::{Cli, Command};

/// The program's name in log lines and messages.
const PROGRAM: &str = "lockheed";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // `--help` and `--version` are printed on stdout, and are no failure.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                exit::FAILED
            } else {
                exit::OK
            });
        }
    };
    shared::log::init(cli.verbose);
    match execute(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{PROGRAM}: error: {err:#}");
            ExitCode::from(exit::code_of(&err))
        }
    }
}

/// Runs the subcommand, returning the exit code.
async fn execute(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        // It holds a waiting acquire's whole state: boxed, as the other commands need not be.
        Command::Run(args) => Box::pin(run::run(&cli.cluster, args)).await,
        Command::List(args) => list::list(&cli.cluster, args).await,
        Command::Show(args) => show::show(&cli.cluster, args).await,
        Command::Release(args) => release::release(&cli.cluster, args).await,
    }
}
