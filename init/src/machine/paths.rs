//! Where the machine configuration lives on a running machine (agreed between issue 10's
//! and issue 9's work; see docs/machine-config.md). All of it is on tmpfs under `/run`
//! except the token, which must survive reboots on the data partition.

use std::path::PathBuf;

use crate::sys::root::Root;

pub const RUN_DIR: &str = "/run/nomados";
/// What the user data rendered: init override, agent base, fragment dir, pack set.
pub const MACHINE_DIR: &str = "/run/nomados/machine";
pub const SECRETS_DIR: &str = "/run/nomados/secrets";
/// The node's Nomad ACL token (bootstrapped, or given to a joining node).
pub const TOKEN_FILE: &str = "/var/lib/nomad/nomados/nomad-token";
/// A user data baked into the image: the last source, for images made for one fleet.
pub const BAKED_USER_DATA: &str = "/etc/nomados/user-data.toml";

// File names inside the machine directory.
/// The init config override, in the machine directory.
pub const INIT_OVERRIDE: &str = "nomados.toml";
/// The pack set (inline, or as fetched), in the machine directory.
pub const PACK_SET: &str = "packs.toml";
/// The baked agent config with the role's `enabled` switches set, in the machine directory.
pub const AGENT_BASE: &str = "agent.json";
/// The `[upgrade]` request (JSON), in the machine directory; PID 1 reads it.
pub const UPGRADE_REQUEST: &str = "upgrade.json";
/// The fragment directory, in the machine directory.
pub const FRAGMENT_DIR: &str = "nomad.d";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub run_dir: PathBuf,
    pub machine_dir: PathBuf,
    pub secrets_dir: PathBuf,
    pub token_file: PathBuf,
}

impl Paths {
    pub fn under(root: &Root) -> Self {
        Self {
            run_dir: root.path(RUN_DIR),
            machine_dir: root.path(MACHINE_DIR),
            secrets_dir: root.path(SECRETS_DIR),
            token_file: root.path(TOKEN_FILE),
        }
    }

    /// The directory of agent config fragments Nomad is started with.
    pub fn fragment_dir(&self) -> PathBuf {
        self.machine_dir.join(FRAGMENT_DIR)
    }

    /// The init config override PID 1 layers over the baked `nomados.toml`.
    pub fn init_override(&self) -> PathBuf {
        self.machine_dir.join(INIT_OVERRIDE)
    }
}
