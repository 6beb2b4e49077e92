//! `nomad-double agent -config <file>...` / `agent -dev` / `version`: Nomad's command line,
//! serving the in-memory API.

use anyhow::{bail, Context, Result};
use nomad_double::{AgentConfig, Options, TlsFiles};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "Usage: nomad-double <command> [args]

Commands:
    agent -config <file> [-config <file>...]   Serve the Nomad API with this agent config
    agent -dev                                  Serve like `nomad agent -dev`
    agent ... -tls-cert <pem> -tls-key <pem> [-tls-client-ca <pem>]
                                                Serve https (and require client
                                                certificates signed by the CA);
                                                without them, the config's `tls` block
                                                (http, cert_file, key_file, ca_file,
                                                verify_https_client) decides, as in Nomad
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

/// What `agent` was asked for on its command line.
#[derive(Debug, Default, PartialEq)]
struct AgentArgs {
    files: Vec<PathBuf>,
    dev: bool,
    /// Flags that override config-file keys, as (config key, value) JSON.
    overrides: serde_json::Map<String, serde_json::Value>,
    /// `-tls-cert`, `-tls-key`, `-tls-client-ca` (the double's own flags).
    tls: Option<TlsFiles>,
}

/// Parses Nomad-style flags: `-config x`, `-config=x`, `--config x`, `-dev`, and the common
/// overrides (`-bind`, `-data-dir`, `-region`, `-dc`, `-node`, `-client`, `-server`,
/// `-acl-enabled`; `-log-level` is accepted and ignored), and the double's TLS flags.
fn parse_agent_args(args: &[String]) -> Result<AgentArgs> {
    use serde_json::json;
    let mut out = AgentArgs::default();
    let (mut cert, mut key, mut client_ca) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if !a.starts_with('-') {
            bail!("unexpected argument {a:?}");
        }
        let flag = a.trim_start_matches('-');
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let bool_value = |v: &Option<String>| v.as_deref().is_none_or(|v| v != "false");
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("flag needs an argument: -{name}")),
            }
        };
        match name {
            "config" => out.files.push(PathBuf::from(value()?)),
            "dev" => out.dev = bool_value(&inline),
            "bind" => _ = out.overrides.insert("bind_addr".into(), json!(value()?)),
            "data-dir" => _ = out.overrides.insert("data_dir".into(), json!(value()?)),
            "region" => _ = out.overrides.insert("region".into(), json!(value()?)),
            "dc" => _ = out.overrides.insert("datacenter".into(), json!(value()?)),
            "node" => _ = out.overrides.insert("name".into(), json!(value()?)),
            "log-level" => _ = value()?,
            "tls-cert" => cert = Some(PathBuf::from(value()?)),
            "tls-key" => key = Some(PathBuf::from(value()?)),
            "tls-client-ca" => client_ca = Some(PathBuf::from(value()?)),
            "client" | "server" => {
                _ = out
                    .overrides
                    .insert(name.into(), json!({"enabled": bool_value(&inline)}))
            }
            "acl-enabled" => {
                _ = out
                    .overrides
                    .insert("acl".into(), json!({"enabled": bool_value(&inline)}))
            }
            _ => bail!("flag provided but not defined: -{name}"),
        }
    }
    out.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            client_ca,
        }),
        (None, None) if client_ca.is_none() => None,
        _ => bail!("-tls-cert and -tls-key go together (and -tls-client-ca needs both)"),
    };
    if out.files.is_empty() && !out.dev {
        bail!("must specify either a -config or -dev\n\n{USAGE}");
    }
    Ok(out)
}

fn agent(args: &[String]) -> Result<ExitCode> {
    let parsed = parse_agent_args(args)?;
    let mut config = if parsed.dev {
        AgentConfig::dev()
    } else {
        AgentConfig::default()
    };
    for f in &parsed.files {
        for loaded in config.load_path(f)? {
            println!("==> Loaded configuration from {}", loaded.display());
        }
    }
    config
        .merge(&serde_json::Value::Object(parsed.overrides))
        .context("invalid command-line flag")?;
    // The double's own flags win over the config's `tls` block (which Nomad serves from).
    let tls = match parsed.tls {
        Some(files) => Some(files),
        None => config.https().context("invalid tls block")?,
    };
    // Unusable certificate files stop the agent before it says it started, as in Nomad.
    if let Some(files) = &tls {
        nomad_double::tls::acceptor(files)?;
    }
    let mut options = Options::from_env(config)?;
    options.tls = tls;
    if options.config.acl_enabled
        && options.management_token.is_none()
        && nomad_double::persist::bootstrap_token(&options.config).is_none()
    {
        println!("==> ACLs are enabled and not bootstrapped: POST /v1/acl/bootstrap makes the management token");
    }
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
        if options.tls.is_some() {
            println!("                   TLS: HTTPS");
        }
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
        let a = parse_agent_args(&s(&["-config", "a.hcl", "-config=b.json"])).unwrap();
        assert_eq!(a.files, [PathBuf::from("a.hcl"), PathBuf::from("b.json")]);
        assert!(!a.dev);
        assert!(parse_agent_args(&s(&["-dev"])).unwrap().dev);
        let e = parse_agent_args(&s(&["-bogus"])).unwrap_err();
        assert_eq!(e.to_string(), "flag provided but not defined: -bogus");
        assert!(parse_agent_args(&s(&[])).is_err());
        assert!(parse_agent_args(&s(&["-config"])).is_err());
        let a = parse_agent_args(&s(&[
            "-dev",
            "-bind=0.0.0.0",
            "-dc",
            "edge",
            "-acl-enabled",
        ]))
        .unwrap();
        let mut c = AgentConfig::dev();
        c.merge(&serde_json::Value::Object(a.overrides)).unwrap();
        assert_eq!(
            (c.bind_addr.as_str(), c.datacenter.as_str()),
            ("0.0.0.0", "edge")
        );
        assert!(c.acl_enabled);
    }

    #[test]
    fn tls_flags_name_the_pem_files_and_go_together() {
        let a = parse_agent_args(&s(&["-dev", "-tls-cert=c.pem", "-tls-key", "k.pem"])).unwrap();
        assert_eq!(
            a.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into(),
                client_ca: None
            })
        );
        assert_eq!(parse_agent_args(&s(&["-dev"])).unwrap().tls, None);
        for half in [
            &["-dev", "-tls-cert=c.pem"][..],
            &["-dev", "-tls-client-ca=ca.pem"],
        ] {
            let e = parse_agent_args(&s(half)).unwrap_err().to_string();
            assert!(e.contains("go together"), "{e}");
        }
    }
}
