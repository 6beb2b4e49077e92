//! The `nomad-init` command line (when not running as PID 1).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::power::PowerAction;

mod heartbeat;
mod machine;
mod power_request;
pub mod upgrade;
pub use power_request::request_power_action;

#[derive(Debug, Parser)]
#[command(name = "nomad-init", version, about = "NomadOS init and pack applier")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Validate, render, plan or apply a pack set.
    Packs {
        #[command(subcommand)]
        command: PacksCommand,
    },
    /// Print a JSON Schema (for editors): the pack-set file (default) or the user data.
    Schema {
        #[arg(value_enum, default_value = "pack-set")]
        which: SchemaKind,
    },
    /// Check (`validate`) or find and apply (`apply`, PID 1's child) the machine's user data.
    MachineConfig {
        #[command(subcommand)]
        command: machine::MachineCommand,
    },
    /// Acquire a DHCP lease (debugging and tests).
    Dhcp(crate::net::DhcpArgs),
    /// Write NomadOS to a disk (PID 1 runs this for `nomados.install=`; see docs/install.md).
    Install(crate::install::run::InstallArgs),
    /// Ask the running NomadOS init to power off.
    Poweroff,
    /// Ask the running NomadOS init to reboot.
    Reboot,
    /// Ask the running NomadOS init to halt.
    Halt,
    /// Write a new system into the inactive slot, arm a one-time trial boot, reboot.
    Upgrade(upgrade::UpgradeArgs),
    /// Print `<message> <hostname> <UTC time>` every interval (the `hello` pack's task).
    Heartbeat(heartbeat::HeartbeatArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SchemaKind {
    PackSet,
    UserData,
}

#[derive(Debug, Subcommand)]
enum PacksCommand {
    /// Check the pack set, fetch and render its packs; contacts Nomad only to parse HCL.
    Validate(PacksArgs),
    /// Print the rendered jobs, variables and policies.
    Render(PacksArgs),
    /// Show what apply would do, per job; writes nothing.
    Plan(PacksArgs),
    /// Make Nomad run exactly the declared set.
    Apply(PacksArgs),
    /// Internal: load and render one pack (request on stdin, answer on stdout); the
    /// applier runs this as a bounded child so that a runaway template fails only its pack.
    #[command(hide = true)]
    RenderChild,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PacksArgs {
    /// Pack-set file, or a directory of `*.toml` files read in lexical order.
    pub path: PathBuf,
    /// Owner recorded in managed jobs' meta (overrides the set's `_name`).
    #[arg(long)]
    pub owner: Option<String>,
    /// Cache for downloaded packs [default: /var/lib/nomad/nomados/packs-cache as root,
    /// else $XDG_CACHE_HOME/nomados/packs or ~/.cache/nomados/packs].
    #[arg(long, env = "NOMADOS_PACK_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// apply: wait until changed jobs' allocations run; print task events on failure.
    #[arg(long)]
    pub wait: bool,
    /// plan: exit 2 when the plan has changes (0: none, 1: error).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Print one JSON object per line (pack failures, steps, drift, summary, errors)
    /// instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nomad: NomadArgs,
}

/// How to reach Nomad: the flags and environment variables of Nomad's own CLI.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Nomad connection")]
pub struct NomadArgs {
    /// Nomad HTTP API address (http:// or https://).
    #[arg(
        long,
        visible_alias = "address",
        env = "NOMAD_ADDR",
        default_value = crate::nomad::settings::DEFAULT_ADDR
    )]
    pub nomad_addr: String,
    /// Nomad ACL token; prefer the environment variable (a flag shows in `ps`).
    #[arg(long, env = "NOMAD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Namespace for requests that name none (managed jobs carry their own).
    #[arg(long, env = "NOMAD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Region to send requests to.
    #[arg(long, env = "NOMAD_REGION")]
    pub region: Option<String>,
    /// PEM CA bundle to verify the agent's certificate with (only these CAs are trusted).
    #[arg(long, env = "NOMAD_CACERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for agents that verify HTTPS clients.
    #[arg(long, env = "NOMAD_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(long, env = "NOMAD_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Name the agent's certificate must carry, when not the address's host.
    #[arg(long, env = "NOMAD_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// Do not verify the agent's certificate (debugging only).
    #[arg(
        long,
        env = "NOMAD_SKIP_VERIFY",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub tls_skip_verify: bool,
}

impl NomadArgs {
    /// The client settings; empty values count as unset, like in Nomad's CLI.
    pub fn settings(&self) -> crate::nomad::Settings {
        let text = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let path = |v: &Option<PathBuf>| v.clone().filter(|v| !v.as_os_str().is_empty());
        let mut s =
            crate::nomad::Settings::new(self.nomad_addr.clone()).with_token(self.token.clone());
        s.namespace = text(&self.namespace);
        s.region = text(&self.region);
        s.tls = crate::nomad::Tls {
            ca_file: path(&self.ca_cert),
            client_cert: path(&self.client_cert),
            client_key: path(&self.client_key),
            server_name: text(&self.tls_server_name),
            skip_verify: self.tls_skip_verify,
        };
        s
    }
}

/// Runs the command line; returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let argv0 = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    match argv0 {
        "poweroff" => return request_power_action(PowerAction::Poweroff),
        "reboot" => return request_power_action(PowerAction::Reboot),
        "halt" => return request_power_action(PowerAction::Halt),
        _ => {}
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // 64 (EX_USAGE) keeps usage errors apart from `plan --detailed-exitcode`'s 2.
            return if e.use_stderr() { 64 } else { 0 };
        }
    };
    match cli.command {
        Command::Dhcp(args) => crate::net::run_dhcp_cli(args),
        Command::Install(args) => crate::install::run::main(&args),
        Command::Poweroff => request_power_action(PowerAction::Poweroff),
        Command::Reboot => request_power_action(PowerAction::Reboot),
        Command::Halt => request_power_action(PowerAction::Halt),
        Command::Upgrade(args) => upgrade::run(&args),
        Command::Heartbeat(args) => heartbeat::run(&args),
        Command::MachineConfig { command } => machine::run(command),
        Command::Schema { which } => {
            let schema = match which {
                SchemaKind::PackSet => crate::packs::schema::json_schema(),
                SchemaKind::UserData => crate::machine::userdata::schema::json_schema(),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            0
        }
        Command::Packs { command } => run_packs(command),
    }
}

/// Exit codes of `packs` commands.
pub mod exit {
    pub const OK: i32 = 0;
    /// Something failed: config, a pack, a job, or Nomad.
    pub const FAILED: i32 = 1;
    /// `plan --detailed-exitcode` found changes.
    pub const CHANGES: i32 = 2;
}

/// The single-threaded runtime a command's async work runs on; None once it has said on
/// stderr, as `who`, why there is none.
fn runtime(who: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("{who}: cannot start the async runtime: {e}");
            None
        }
    }
}

fn run_packs(command: PacksCommand) -> i32 {
    use crate::packs::apply::{self, Mode};
    let (mode, args) = match command {
        PacksCommand::Validate(a) => (Mode::Validate, a),
        PacksCommand::Render(a) => (Mode::Render, a),
        PacksCommand::Plan(a) => (Mode::Plan, a),
        PacksCommand::Apply(a) => (Mode::Apply, a),
        PacksCommand::RenderChild => return crate::packs::render_child::serve(),
    };
    let opts = apply::Options {
        set_path: args.path.clone(),
        nomad: args.nomad.settings(),
        owner: args.owner.clone(),
        cache_dir: args
            .cache_dir
            .clone()
            .unwrap_or_else(crate::packs::origin::default_cache_dir),
        wait: args.wait,
    };
    let Some(runtime) = runtime("nomad-init") else {
        return exit::FAILED;
    };
    use crate::packs::events::{JsonLines, Sink, Text};
    let mut sink: Box<dyn Sink> = if args.json {
        Box::new(JsonLines(std::io::stdout()))
    } else {
        Box::new(Text(std::io::stdout()))
    };
    let result = runtime.block_on(apply::run(&opts, mode, sink.as_mut()));
    if let Err(e) = &result {
        report_run_error(e, args.json);
    }
    match result {
        Ok(outcome) if outcome.summary.failed > 0 => exit::FAILED,
        Ok(outcome) if args.detailed_exitcode && outcome.has_changes => exit::CHANGES,
        Ok(_) => exit::OK,
        Err(_) => exit::FAILED,
    }
}

/// Says why a run could not be attempted: on stderr for people (a broken pack set renders
/// its own `error:` header and snippets), as a JSON line on stdout with `--json`.
fn report_run_error(e: &crate::packs::apply::RunError, json: bool) {
    use crate::packs::apply::RunError;
    match (e, json) {
        (RunError::Config(e), false) => eprintln!("{}", e.render().trim_end()),
        (RunError::Other(e), false) => eprintln!("error: {e:#}"),
        (RunError::Config(e), true) => {
            let problems: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
            let line = serde_json::json!({"event": "config_error", "problems": problems});
            println!("{line}");
        }
        (RunError::Other(e), true) => {
            let line = serde_json::json!({"event": "error", "message": format!("{e:#}")});
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packs_args(extra: &[&str]) -> Result<PacksArgs, clap::Error> {
        let mut argv = vec!["nomad-init", "packs", "apply", "/set"];
        argv.extend(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Packs {
                command: PacksCommand::Apply(a),
            } => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn schema_defaults_to_the_pack_set_and_machine_config_has_its_commands() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.command);
        assert!(matches!(
            parse(&["nomad-init", "schema"]),
            Ok(Command::Schema {
                which: SchemaKind::PackSet
            })
        ));
        assert!(matches!(
            parse(&["nomad-init", "schema", "user-data"]),
            Ok(Command::Schema {
                which: SchemaKind::UserData
            })
        ));
        assert!(parse(&["nomad-init", "schema", "bogus"]).is_err());
        assert!(matches!(
            parse(&["nomad-init", "machine-config", "validate", "/u.toml"]),
            Ok(Command::MachineConfig {
                command: machine::MachineCommand::Validate { .. }
            })
        ));
        assert!(matches!(
            parse(&["nomad-init", "machine-config", "apply"]),
            Ok(Command::MachineConfig {
                command: machine::MachineCommand::Apply { .. }
            })
        ));
    }

    #[test]
    fn the_install_command_pid1_builds_parses() {
        let req = crate::install::options::Request {
            target: "/dev/vda".into(),
            source: crate::install::options::ImageSource::Url {
                url: "http://10.0.2.2/x.raw.xz".into(),
                sha256: "ab".repeat(32),
            },
            wipe: true,
        };
        let cmd = crate::supervise::install::command(std::path::Path::new("x"), &req, "DATA");
        let mut argv: Vec<String> = vec!["nomad-init".into()];
        argv.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Install(a) => {
                assert_eq!(a.target, PathBuf::from("/dev/vda"));
                assert_eq!(a.image, "http://10.0.2.2/x.raw.xz");
                assert_eq!(a.sha256, Some("ab".repeat(32)));
                assert!(a.wipe);
                assert_eq!(a.data_label, "DATA");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nomad_connection_flags_mean_what_nomads_do() {
        let a = packs_args(&[
            "--address=https://10.0.0.1:4646",
            "--namespace=prod",
            "--region=eu",
            "--ca-cert=/ca.pem",
            "--client-cert=/cli.pem",
            "--client-key=/cli-key.pem",
            "--tls-server-name=server.global.nomad",
            "--tls-skip-verify",
        ])
        .unwrap();
        let s = a.nomad.settings();
        assert_eq!(s.addr, "https://10.0.0.1:4646");
        assert_eq!(s.namespace.as_deref(), Some("prod"));
        assert_eq!(s.region.as_deref(), Some("eu"));
        assert_eq!(s.tls.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(s.tls.client_cert, Some(PathBuf::from("/cli.pem")));
        assert_eq!(s.tls.client_key, Some(PathBuf::from("/cli-key.pem")));
        assert_eq!(s.tls.server_name.as_deref(), Some("server.global.nomad"));
        assert!(s.tls.skip_verify);
        let e = packs_args(&["--client-cert=/cli.pem"]).unwrap_err();
        assert!(e.to_string().contains("--client-key"), "{e}");
    }
}
