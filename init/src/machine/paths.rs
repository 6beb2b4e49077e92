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
/// The files the user data placed (`[[files]]`: path, size, SHA-256, mode, owner), so
/// that a later user data that drops one removes it; root-only, on the data partition.
pub const PLACED_MANIFEST: &str = "/var/lib/nomad/nomados/placed-files.json";
/// A user data baked into the image: the last source, for images made for one fleet.
pub const BAKED_USER_DATA: &str = "/etc/nomados/user-data.toml";

// File names inside the machine directory.
/// The init config override, in the machine directory.
pub const INIT_OVERRIDE: &str = "nomados.toml";
/// The pack set (inline, or as fetched), in the machine directory.
pub const PACK_SET: &str = "packs.toml";
/// The baked agent config with the role's `enabled` switches set, in the machine directory.
pub const AGENT_BASE: &str = "agent.json";
/// The user data's install request as `nomados.install*` words, in the machine directory.
pub const INSTALL_REQUEST: &str = "install.cmdline";
/// The `[upgrade]` request (JSON), in the machine directory; PID 1 reads it.
pub const UPGRADE_REQUEST: &str = "upgrade.json";
/// The fragment directory, in the machine directory.
pub const FRAGMENT_DIR: &str = "nomad.d";
/// What PID 1 reads to talk to Nomad: the API keys of the merged agent config (base and
/// fragments, HCL included), in the machine directory.
pub const AGENT_VIEW: &str = "agent-view.json";
/// The user data in force (0600: it may hold secrets), in the machine directory: what a
/// poll compares a new version with.
pub const APPLIED_USER_DATA: &str = "user-data.toml";
/// Long-lived mode: the URL's validators (`ETag`, `Last-Modified`) of the last poll.
pub const POLL_STATE: &str = "/run/nomados/machine-poll.json";
/// Long-lived mode: what the last applied change asks of PID 1 (see `machine::plan`).
pub const PLAN_FILE: &str = "/run/nomados/machine-plan.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub run_dir: PathBuf,
    pub machine_dir: PathBuf,
    pub secrets_dir: PathBuf,
    pub token_file: PathBuf,
    pub placed_manifest: PathBuf,
    pub poll_state: PathBuf,
    pub plan_file: PathBuf,
}

impl Paths {
    pub fn under(root: &Root) -> Self {
        Self {
            run_dir: root.path(RUN_DIR),
            machine_dir: root.path(MACHINE_DIR),
            secrets_dir: root.path(SECRETS_DIR),
            token_file: root.path(TOKEN_FILE),
            placed_manifest: root.path(PLACED_MANIFEST),
            poll_state: root.path(POLL_STATE),
            plan_file: root.path(PLAN_FILE),
        }
    }

    /// The directory of agent config fragments Nomad is started with.
    pub fn fragment_dir(&self) -> PathBuf {
        self.machine_dir.join(FRAGMENT_DIR)
    }

    /// The user data in force.
    pub fn applied_user_data(&self) -> PathBuf {
        self.machine_dir.join(APPLIED_USER_DATA)
    }

    /// The init config override PID 1 layers over the baked `nomados.toml`.
    pub fn init_override(&self) -> PathBuf {
        self.machine_dir.join(INIT_OVERRIDE)
    }
}
