#![forbid(unsafe_code)]
//! Runs the test API server standalone until SIGINT or SIGTERM, for trying a client by hand.
//!
//! `keelson-kube-testserver [--listen ADDR] [--kubeconfig PATH] [--token TOKEN] [--latency-ms N]`

use std::path::PathBuf;
use std::time::Duration;

use keelson_kube_testserver::{Options, TestServer};

const USAGE: &str =
    "usage: keelson-kube-testserver [--listen 127.0.0.1:0] [--kubeconfig PATH] [--token TOKEN] [--latency-ms N]

Serves an in-memory Kubernetes API (for tests; never for production) on loopback and prints its URL.";

fn parse() -> Result<(Options, Option<PathBuf>), String> {
    let mut opts = Options::default();
    let mut kubeconfig = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"));
        match a.as_str() {
            "--listen" => opts.listen = value("--listen")?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value("--kubeconfig")?)),
            "--token" => opts.token = Some(value("--token")?),
            "--latency-ms" => {
                opts.latency =
                    Duration::from_millis(value("--latency-ms")?.parse().map_err(|e| format!("--latency-ms: {e}"))?)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok((opts, kubeconfig))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (opts, kubeconfig) = match parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let server = match TestServer::start(opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Some(path) = kubeconfig
        && let Err(e) = server.kubeconfig(&path)
    {
        eprintln!("error: writing {}: {e}", path.display());
        std::process::exit(2);
    }
    println!("{}", server.url());
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
}
