//! The init's own configuration, `nomados.toml`.
//!
//! Unknown fields are rejected; every error names file:line:column. A broken file never
//! stops the boot: PID 1 falls back to the last good copy, else to built-in defaults.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diag::{Location, SourceError};
use crate::log::Level;
use crate::sys::root::Root;

pub const DEFAULT_PATH: &str = "/etc/nomados/nomados.toml";

/// The appliance's pack cache: on the data partition, so it survives reboots and an origin
/// that is down at boot still has its last download. PID 1 and a root CLI share it.
pub const PACK_CACHE_DIR: &str = "/var/lib/nomad/nomados/packs-cache";

/// The node's Nomad ACL token: written by the ACL bootstrap at first boot (or given by
/// the machine configuration to a node that joins a cluster); root-only, on the data
/// partition. Absent means anonymous requests.
pub const NOMAD_TOKEN_FILE: &str = "/var/lib/nomad/nomados/nomad-token";

/// Below this the applier cannot even load a small pack set.
const MIN_APPLIER_MIB: u64 = 48;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// Static hostname; else DHCP's, else derived from the first MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub nomad: NomadConfig,
    #[serde(default)]
    pub packs: PacksConfig,
    #[serde(default)]
    pub data: DataConfig,
    /// The machine configuration's child and its long-lived mode (docs/machine-config.md).
    #[serde(default)]
    pub machine: MachineSettings,
    /// Handed to the network stage as is (it owns its schema).
    #[serde(default)]
    pub network: toml::Table,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NomadConfig {
    pub binary: PathBuf,
    /// Agent configuration passed as `-config=`.
    pub config: PathBuf,
    /// Ignored: Nomad writes and rotates its own log (`log_file`, `log_rotate_bytes` in
    /// the agent config). Still accepted so that older files parse; a warning says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// Nomad's log lines at or above this level are also shown on the console (untagged
    /// lines, such as its start-up banner or a crash, always are).
    pub console_level: Level,
    /// Restart delay starts at 1 s and doubles up to this.
    pub restart_backoff_max_secs: u64,
    /// After SIGINT at shutdown, how long Nomad gets before SIGKILL.
    pub stop_timeout_secs: u64,
    /// Upper bound for draining this node at shutdown (0 = do not drain).
    pub drain_timeout_secs: u64,
    /// HTTP API address; derived from the agent config when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// File holding the ACL token PID 1 uses to drain this node and make it eligible
    /// again (read at each use, never logged; a missing file means no token). Needs
    /// `node:write` and `agent:read`. Default: [`NOMAD_TOKEN_FILE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle trusted for an `https://` address; default: the agent config's
    /// `tls.ca_file` when its `tls.http` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for agents with `verify_https_client`; default: the
    /// agent config's own `tls.cert_file`/`tls.key_file` when it verifies clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// Name the agent's certificate must carry when it differs from the address's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Accept any server certificate (debugging only).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_skip_verify: bool,
}

impl Default for NomadConfig {
    fn default() -> Self {
        Self {
            binary: "/usr/bin/nomad".into(),
            config: "/etc/nomad.d/init.json".into(),
            log_file: None,
            console_level: Level::Warn,
            restart_backoff_max_secs: 30,
            stop_timeout_secs: 30,
            drain_timeout_secs: 30,
            addr: None,
            token_file: Some(NOMAD_TOKEN_FILE.into()),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            tls_server_name: None,
            tls_skip_verify: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacksConfig {
    /// Pack-set file or directory.
    pub set: PathBuf,
    pub cache_dir: PathBuf,
    /// Re-apply every this many seconds (0 = only at start and on SIGHUP).
    pub interval_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// File holding the Nomad ACL token the applier uses (read at every apply, so a
    /// rotated token is picked up; never logged). Default: `nomad.token_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// An apply that runs longer than this is killed (the next trigger starts afresh).
    pub deadline_secs: u64,
    /// Memory the applier process may use (a cgroup's `memory.max`, and its data rlimit).
    pub memory_max_mib: u64,
}

impl Default for PacksConfig {
    fn default() -> Self {
        Self {
            set: "/etc/nomados/packs".into(),
            cache_dir: PACK_CACHE_DIR.into(),
            interval_secs: 300,
            owner: None,
            token_file: None,
            deadline_secs: 600,
            memory_max_mib: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachineSettings {
    /// Poll the user data's URL (`nomados.config=<url>`) every this many seconds, with
    /// jitter (0 = read it at boot only).
    pub poll_secs: u64,
    /// Memory of the `machine-config` child (its cgroup's `memory.max` and data rlimit).
    pub memory_max_mib: u64,
    /// A `machine-config` child still running after this is killed.
    pub deadline_secs: u64,
}

impl Default for MachineSettings {
    fn default() -> Self {
        Self {
            poll_secs: 300,
            memory_max_mib: 256,
            deadline_secs: 120,
        }
    }
}

/// Below this the machine-config child cannot start its runtime.
const MIN_MACHINE_MIB: u64 = 8;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Filesystem label of the persistent data partition.
    pub label: String,
    pub mount_point: PathBuf,
    pub fstype: String,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            label: "NOMADOS-DATA".into(),
            mount_point: "/var/lib/nomad".into(),
            fstype: "ext4".into(),
        }
    }
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            hostname: None,
            nomad: NomadConfig::default(),
            packs: PacksConfig::default(),
            data: DataConfig::default(),
            machine: MachineSettings::default(),
            network: toml::Table::new(),
        }
    }
}

impl InitConfig {
    /// Built-in defaults with every path placed under `root` (only differs in test mode).
    pub fn defaults_under(root: &Root) -> Self {
        let mut c = Self::default();
        c.nomad.config = root.path(&c.nomad.config);
        c.packs.set = root.path(&c.packs.set);
        c.packs.cache_dir = root.path(&c.packs.cache_dir);
        c.data.mount_point = root.path(&c.data.mount_point);
        c
    }

    /// Where the copy of the last config that parsed is kept on the data partition.
    pub fn last_good_path(data_mount: &Path) -> PathBuf {
        data_mount.join("nomados/last-good.toml")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] SourceError),
}

/// Parses `text` (the content of `file`) into a config; semantic checks included.
pub fn parse(file: &Path, text: &str) -> Result<InitConfig, SourceError> {
    let config: InitConfig = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        SourceError::new(
            Location::from_offset(file, text, offset),
            e.message().trim_end().to_string(),
        )
    })?;
    check(file, text, &config)?;
    Ok(config)
}

/// Checks the few rules serde cannot express; errors point at the offending key.
fn check(file: &Path, text: &str, c: &InitConfig) -> Result<(), SourceError> {
    let at = |key: &str| {
        // Points at the first occurrence of `key =`; good enough for a flat file.
        let offset = text
            .match_indices(key)
            .find(|(i, _)| text[i + key.len()..].trim_start().starts_with('='))
            .map_or(0, |(i, _)| i);
        Location::from_offset(file, text, offset)
    };
    if let Some(h) = &c.hostname {
        if !crate::boot::hostname::valid(h) {
            return Err(SourceError::new(
                at("hostname"),
                format!("invalid hostname {h:?}: use 1-63 letters, digits and '-' per label"),
            ));
        }
    }
    for (key, path) in [
        ("binary", &c.nomad.binary),
        ("config", &c.nomad.config),
        ("set", &c.packs.set),
        ("cache_dir", &c.packs.cache_dir),
        ("mount_point", &c.data.mount_point),
    ] {
        if !path.is_absolute() {
            return Err(SourceError::new(
                at(key),
                format!("{key} must be an absolute path, got {}", path.display()),
            ));
        }
    }
    if c.packs.deadline_secs == 0 {
        return Err(SourceError::new(
            at("deadline_secs"),
            "deadline_secs must be at least 1",
        ));
    }
    if c.packs.memory_max_mib < MIN_APPLIER_MIB {
        return Err(SourceError::new(
            at("memory_max_mib"),
            format!("memory_max_mib must be at least {MIN_APPLIER_MIB} (the applier needs about 25 MiB)"),
        ));
    }
    if c.machine.deadline_secs == 0 {
        return Err(SourceError::new(
            at("deadline_secs"),
            "machine.deadline_secs must be at least 1",
        ));
    }
    if c.machine.memory_max_mib < MIN_MACHINE_MIB {
        return Err(SourceError::new(
            at("memory_max_mib"),
            format!("machine.memory_max_mib must be at least {MIN_MACHINE_MIB}"),
        ));
    }
    for (key, path) in [
        ("token_file", &c.nomad.token_file),
        ("ca_file", &c.nomad.ca_file),
        ("client_cert_file", &c.nomad.client_cert_file),
        ("client_key_file", &c.nomad.client_key_file),
        ("token_file", &c.packs.token_file),
    ] {
        if let Some(path) = path.as_ref().filter(|p| !p.is_absolute()) {
            return Err(SourceError::new(
                at(key),
                format!("{key} must be an absolute path, got {}", path.display()),
            ));
        }
    }
    if c.nomad.client_cert_file.is_some() != c.nomad.client_key_file.is_some() {
        let key = if c.nomad.client_cert_file.is_some() {
            "client_cert_file"
        } else {
            "client_key_file"
        };
        return Err(SourceError::new(
            at(key),
            "client_cert_file and client_key_file go together: set both or neither",
        ));
    }
    if c.nomad.restart_backoff_max_secs == 0 {
        return Err(SourceError::new(
            at("restart_backoff_max_secs"),
            "restart_backoff_max_secs must be at least 1",
        ));
    }
    Ok(())
}

/// Reads and parses the config file at `path`.
pub fn load(path: &Path) -> Result<(InitConfig, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config = parse(path, &text)?;
    Ok((config, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("/etc/nomados/nomados.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn full_config_parses_and_network_stays_opaque() {
        let c = parse(
            Path::new("n.toml"),
            r#"
hostname = "edge-1"
[nomad]
binary = "/opt/nomad"
restart_backoff_max_secs = 8
[packs]
interval_secs = 0
owner = "ops"
[data]
label = "DATA"
[network]
interface = "eth0"
static = { address = "10.0.0.2/24" }
"#,
        )
        .unwrap();
        assert_eq!(c.hostname.as_deref(), Some("edge-1"));
        assert_eq!(c.nomad.binary, PathBuf::from("/opt/nomad"));
        assert_eq!(c.nomad.config, PathBuf::from("/etc/nomad.d/init.json"));
        assert_eq!(c.nomad.restart_backoff_max_secs, 8);
        assert_eq!(c.packs.interval_secs, 0);
        assert_eq!(c.packs.owner.as_deref(), Some("ops"));
        assert_eq!(c.data.label, "DATA");
        assert_eq!(c.data.mount_point, PathBuf::from("/var/lib/nomad"));
        assert_eq!(c.network["interface"].as_str(), Some("eth0"));
        assert_eq!(
            parse(Path::new("e.toml"), "").unwrap(),
            InitConfig::default()
        );
    }

    #[test]
    fn unknown_field_is_reported_with_file_line_column() {
        let e = err("[nomad]\nbinary = \"/usr/bin/nomad\"\n  restart_backof = 3\n");
        assert!(e.starts_with("/etc/nomados/nomados.toml:3:3: "), "{e}");
        assert!(e.contains("unknown field `restart_backof`"), "{e}");
    }

    #[test]
    fn type_and_syntax_errors_point_at_the_value() {
        let e = err("[packs]\ninterval_secs = \"often\"\n");
        assert!(e.starts_with("/etc/nomados/nomados.toml:2:17: "), "{e}");
        let e = err("hostname = \n");
        assert!(e.starts_with("/etc/nomados/nomados.toml:1:"), "{e}");
    }

    #[test]
    fn semantic_errors_point_at_the_key() {
        let e = err("[data]\nlabel = \"X\"\nmount_point = \"var/lib/nomad\"\n");
        assert_eq!(
            e,
            "/etc/nomados/nomados.toml:3:1: mount_point must be an absolute path, got var/lib/nomad"
        );
        let e = err("\n\nhostname = \"bad_name\"\n");
        assert!(
            e.starts_with("/etc/nomados/nomados.toml:3:1: invalid hostname"),
            "{e}"
        );
        let e = err("[nomad]\nrestart_backoff_max_secs = 0\n");
        assert!(e.starts_with("/etc/nomados/nomados.toml:2:1: "), "{e}");
        let e = err("[nomad]\nca_file = \"ca.pem\"\n");
        assert_eq!(
            e,
            "/etc/nomados/nomados.toml:2:1: ca_file must be an absolute path, got ca.pem"
        );
        let e = err("[nomad]\n\nclient_cert_file = \"/c.pem\"\n");
        assert!(
            e.starts_with(
                "/etc/nomados/nomados.toml:3:1: client_cert_file and client_key_file go together"
            ),
            "{e}"
        );
    }

    #[test]
    fn nomad_tls_and_token_settings_parse() {
        let c = parse(
            Path::new("n.toml"),
            r#"
[nomad]
addr = "https://127.0.0.1:4646"
token_file = "/etc/nomados/nomad-token"
ca_file = "/etc/nomados/ca.pem"
client_cert_file = "/etc/nomados/cli.pem"
client_key_file = "/etc/nomados/cli-key.pem"
tls_server_name = "server.global.nomad"
tls_skip_verify = false
"#,
        )
        .unwrap();
        assert_eq!(
            c.nomad.token_file,
            Some(PathBuf::from("/etc/nomados/nomad-token"))
        );
        assert_eq!(c.nomad.ca_file, Some(PathBuf::from("/etc/nomados/ca.pem")));
        assert_eq!(
            c.nomad.client_key_file,
            Some(PathBuf::from("/etc/nomados/cli-key.pem"))
        );
        assert_eq!(
            c.nomad.tls_server_name.as_deref(),
            Some("server.global.nomad")
        );
    }

    #[test]
    fn shipped_default_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/nomados.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        parse(&path, &text).unwrap();
    }
}
