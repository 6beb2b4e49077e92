//! `nomad-init machine-config ...`: the machine's user data (issue 10).

use std::path::PathBuf;

use clap::Subcommand;

use crate::machine::userdata;

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// Check a user-data file; every problem is printed with its line and column.
    Validate {
        /// The user-data file (TOML, see docs/machine-config.md).
        file: PathBuf,
    },
    /// Find the user data, check it and apply it (what PID 1 runs at boot, as a child).
    Apply {
        /// The baked Nomad agent config (`nomad.config` of the init config).
        #[arg(long, default_value = "/etc/nomad.d/init.json")]
        agent_config: PathBuf,
    },
    /// Long-lived mode: ask the `nomados.config=<url>` for a new version and apply it
    /// (what PID 1 runs on an interval and on SIGHUP). Exit 0: applied, 3: unchanged,
    /// 1: failed or refused (the running configuration stays).
    Poll {
        /// The baked Nomad agent config (`nomad.config` of the init config).
        #[arg(long, default_value = "/etc/nomad.d/init.json")]
        agent_config: PathBuf,
    },
}

/// Runs a `machine-config` command; returns the exit code.
pub fn run(command: MachineCommand) -> i32 {
    match command {
        MachineCommand::Validate { file } => validate(&file),
        MachineCommand::Apply { agent_config } => apply(agent_config, false),
        MachineCommand::Poll { agent_config } => apply(agent_config, true),
    }
}

fn apply(agent_config: PathBuf, poll: bool) -> i32 {
    use crate::sys::root::{Root, TEST_CMDLINE_ENV};
    let root = Root::from_env();
    // Read here rather than passed in argv: a config URL may carry credentials.
    let cmdline = if root.is_test() {
        std::env::var(TEST_CMDLINE_ENV).unwrap_or_default()
    } else {
        std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
    };
    let opts = crate::machine::run::ApplyOptions {
        root,
        cmdline,
        agent_config,
    };
    let Some(runtime) = super::runtime("nomad-init") else {
        return super::exit::FAILED;
    };
    if poll {
        // One attempt: PID 1 backs off between polls.
        let limits = crate::machine::sources::url::Limits {
            attempts: 1,
            ..Default::default()
        };
        return runtime
            .block_on(crate::machine::poll::poll(&opts, &limits))
            .exit_code();
    }
    runtime
        .block_on(crate::machine::run::apply(&opts))
        .exit_code()
}

fn validate(file: &std::path::Path) -> i32 {
    let bytes = match crate::fsutil::read_bounded(file, userdata::MAX_USER_DATA_BYTES) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return super::exit::FAILED;
        }
    };
    match userdata::parse(file, &bytes) {
        Ok(config) => {
            println!("{}: valid; provides {}", file.display(), config.summary());
            super::exit::OK
        }
        Err(e) => {
            // Locations only: a line of user data may hold a secret.
            for err in &e.0 {
                eprintln!("error: {err}");
            }
            super::exit::FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_exits_by_the_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "[nomad]\nrole = \"client\"\n").unwrap();
        assert_eq!(validate(&good), super::super::exit::OK);
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[nomad]\nrole = \"leader\"\n").unwrap();
        assert_eq!(validate(&bad), super::super::exit::FAILED);
        assert_eq!(
            validate(&dir.path().join("missing.toml")),
            super::super::exit::FAILED
        );
    }
}
