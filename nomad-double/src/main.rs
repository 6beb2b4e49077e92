//! `nomad-double agent -config <file>...` / `agent -dev` / `version`: Nomad's command line,
//! serving the in-memory API.

use anyhow::{bail, Context, Result};
use nomad_double::{AgentConfig, Options};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "Usage: nomad-double <command> [args]

Commands:
    agent -config <file> [-config <file>...]   Serve the Nomad API with this agent config
    agent -dev                                  Serve like `nomad agent -dev`
    version                                     Print the Nomad version it pretends to be

Environment: NOMAD_DOUBLE_VERSION, NOMAD_DOUBLE_ALLOC_DELAY_MS,
NOMAD_DOUBLE_MANAGEMENT_TOKEN, NOMAD_DOUBLE_NAMESPACES (see README.md).";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("==> Error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("version") | Some("-version") | Some("--version") | Some("-v") => {
            let o = Options::from_env(AgentConfig::default())?;
            println!("Nomad v{}", o.version);
            Ok(ExitCode::SUCCESS)
        }
        Some("agent") => agent(&args[1..]),
        Some("-h") | Some("--help") | Some("-help") | None => {
            println!("{USAGE}");
            Ok(ExitCode::from(if args.is_empty() { 1 } else { 0 }))
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// Parses Nomad-style flags: `-config x`, `-config=x`, `--config x`, `-dev`.
fn parse_agent_args(args: &[String]) -> Result<(Vec<PathBuf>, bool)> {
    let mut files = Vec::new();
    let mut dev = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let flag = a.trim_start_matches('-');
        if !a.starts_with('-') {
            bail!("unexpected argument {a:?}");
        }
        match flag.split_once('=') {
            Some(("config", v)) => files.push(PathBuf::from(v)),
            Some(("dev", v)) => dev = v != "false",
            Some((name, _)) => bail!("flag provided but not defined: -{name}"),
            None if flag == "config" => {
                let v = it.next().context("flag needs an argument: -config")?;
                files.push(PathBuf::from(v));
            }
            None if flag == "dev" => dev = true,
            None => bail!("flag provided but not defined: -{flag}"),
        }
    }
    if files.is_empty() && !dev {
        bail!("must specify either a -config or -dev\n\n{USAGE}");
    }
    Ok((files, dev))
}

fn agent(args: &[String]) -> Result<ExitCode> {
    let (files, dev) = parse_agent_args(args)?;
    let mut config = if dev {
        AgentConfig::dev()
    } else {
        AgentConfig::default()
    };
    for f in &files {
        config.load_file(f)?;
        println!("==> Loaded configuration from {}", f.display());
    }
    let options = Options::from_env(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = options.config.http_listen();
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("failed to bind the HTTP API to {listen}"))?;
        let bound = listener.local_addr()?;
        // Handlers go in before the "started" line: a supervisor may signal right after it.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut options = options;
        options.config.http_port = bound.port();
        options.log_requests = true;
        let c = &options.config;
        println!("==> Starting Nomad agent...");
        println!("==> Nomad agent configuration:\n");
        println!(
            "       Advertise Addrs: HTTP: {}:{}",
            c.advertise_host(),
            bound.port()
        );
        println!("            Bind Addrs: HTTP: [{bound}]");
        println!("                Client: {}", c.client_enabled);
        println!("             Log Level: INFO");
        println!(
            "                Region: {} (DC: {})",
            c.region, c.datacenter
        );
        println!("                Server: {}", c.server_enabled);
        println!("               Version: {} (nomad-double)", options.version);
        println!();
        println!("==> Nomad agent started! Log data will stream in below:\n");
        let shutdown = async move {
            let name = tokio::select! {
                _ = term.recv() => "terminated",
                _ = int.recv() => "interrupt",
            };
            println!("==> Caught signal: {name}");
            println!("==> Gracefully shutting down agent...");
        };
        nomad_double::serve_with_shutdown(listener, options, shutdown).await?;
        println!("==> Nomad agent stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn agent_flags_like_nomad() {
        let (f, dev) = parse_agent_args(&s(&["-config", "a.hcl", "-config=b.json"])).unwrap();
        assert_eq!(f, [PathBuf::from("a.hcl"), PathBuf::from("b.json")]);
        assert!(!dev);
        assert!(parse_agent_args(&s(&["-dev"])).unwrap().1);
        let e = parse_agent_args(&s(&["-bogus"])).unwrap_err();
        assert_eq!(e.to_string(), "flag provided but not defined: -bogus");
        assert!(parse_agent_args(&s(&[])).is_err());
        assert!(parse_agent_args(&s(&["-config"])).is_err());
    }
}
