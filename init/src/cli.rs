//! The `nomad-init` command line (when not running as PID 1).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::pid1::PowerAction;

#[derive(Debug, Parser)]
#[command(name = "nomad-init", version, about = "NomadOS init and pack applier")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate, render, plan or apply a pack set.
    Packs {
        #[command(subcommand)]
        command: PacksCommand,
    },
    /// Print the JSON Schema of the pack-set file (for editors).
    Schema,
    /// Acquire a DHCP lease (debugging and tests).
    Dhcp(crate::net::DhcpArgs),
    /// Ask the running NomadOS init to power off.
    Poweroff,
    /// Ask the running NomadOS init to reboot.
    Reboot,
    /// Ask the running NomadOS init to halt.
    Halt,
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
}

#[derive(Debug, Clone, clap::Args)]
pub struct PacksArgs {
    /// Pack-set file, or a directory of `*.toml` files read in lexical order.
    pub path: PathBuf,
    /// Nomad HTTP API address.
    #[arg(long, env = "NOMAD_ADDR", default_value = "http://127.0.0.1:4646")]
    pub nomad_addr: String,
    /// Nomad ACL token.
    #[arg(long, env = "NOMAD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Runs the command line; returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let argv0 = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    match argv0 {
        "poweroff" => return crate::pid1::request_power_action(PowerAction::Poweroff),
        "reboot" => return crate::pid1::request_power_action(PowerAction::Reboot),
        "halt" => return crate::pid1::request_power_action(PowerAction::Halt),
        _ => {}
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Dhcp(args) => crate::net::run_dhcp_cli(args),
        Command::Poweroff => crate::pid1::request_power_action(PowerAction::Poweroff),
        Command::Reboot => crate::pid1::request_power_action(PowerAction::Reboot),
        Command::Halt => crate::pid1::request_power_action(PowerAction::Halt),
        Command::Schema | Command::Packs { .. } => {
            eprintln!("nomad-init: not implemented yet");
            1
        }
    }
}
