//! Runs lockheed's fake Kubernetes API server until killed (Ctrl-C).
//!
//! ```text
//! cargo run -p lockheed-fake-apiserver --example fake_apiserver -- [--kubeconfig PATH] [--port N]
//! ```
//!
//! With `--kubeconfig PATH` the kubeconfig is written there; otherwise it is printed. Point
//! `kubectl` (or any program that reads a kubeconfig) at it with `KUBECONFIG=PATH`.

use std::process::ExitCode;

use lockheed_fake_apiserver::FakeApiServer;

struct Args {
    kubeconfig: Option<String>,
    port: u16,
}

const USAGE: &str = "usage: fake_apiserver [--kubeconfig PATH] [--port N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        kubeconfig: None,
        port: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--kubeconfig" => args.kubeconfig = Some(value()?),
            "--port" => {
                let v = value()?;
                args.port = v
                    .parse()
                    .map_err(|_| format!("--port: {v:?} is not a port number\n{USAGE}"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let server = match FakeApiServer::builder().port(args.port).start().await {
        Ok(server) => server,
        Err(err) => {
            eprintln!(
                "fake_apiserver: {err}: {}",
                std::error::Error::source(&err)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            );
            return ExitCode::FAILURE;
        }
    };
    match &args.kubeconfig {
        Some(path) => {
            if let Err(err) = server.write_kubeconfig(path) {
                eprintln!("fake_apiserver: cannot write the kubeconfig to {path}: {err}");
                return ExitCode::FAILURE;
            }
            println!("kubeconfig written to {path}");
            println!("point kubectl at it:  export KUBECONFIG={path}; kubectl get configmaps");
        }
        None => {
            println!("{}", server.kubeconfig_document());
            println!("save the kubeconfig above to a file and point kubectl at it:");
            println!("  export KUBECONFIG=<file>; kubectl get configmaps");
        }
    }
    println!(
        "other programs: kube::Config with cluster URL {} and bearer token from the kubeconfig",
        server.url()
    );
    println!("fake API server listening on {}", server.url());
    println!("press Ctrl-C to stop");
    if let Err(err) = tokio::signal::ctrl_c().await {
        eprintln!("fake_apiserver: cannot wait for Ctrl-C: {err}");
        return ExitCode::FAILURE;
    }
    println!("stopped");
    ExitCode::SUCCESS
}
