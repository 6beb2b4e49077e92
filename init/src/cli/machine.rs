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
}

/// Runs a `machine-config` command; returns the exit code.
pub fn run(command: MachineCommand) -> i32 {
    match command {
        MachineCommand::Validate { file } => validate(&file),
    }
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
