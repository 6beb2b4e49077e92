//! The user data as written (TOML, `docs/machine-config.md`): what one machine is told at
//! boot. Values that need checks beyond their type keep their span, so an error points at
//! them.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::boot::config::InitConfig;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserData {
    /// A `nomados.toml` table layered over the baked one.
    #[serde(default)]
    pub init: Option<Spanned<InitConfig>>,
    #[serde(default)]
    pub nomad: Option<Spanned<NomadRole>>,
    /// Nomad agent config fragments, written beside the rendered one.
    #[serde(default)]
    pub fragments: Vec<Spanned<Fragment>>,
    #[serde(default)]
    pub packs: Option<Spanned<PackSetSource>>,
    /// The system this machine should run (issue 11).
    #[serde(default)]
    pub upgrade: Option<Spanned<UpgradeSpec>>,
    #[serde(default)]
    pub files: Vec<Spanned<FileSpec>>,
    #[serde(default)]
    pub secrets: Option<Spanned<Secrets>>,
    /// Install this machine to a disk (the command line's `nomados.install=` wins).
    #[serde(default)]
    pub install: Option<Spanned<super::install::InstallSpec>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Client,
    /// Server and client on one agent.
    Both,
}

impl Role {
    pub fn server(self) -> bool {
        matches!(self, Role::Server | Role::Both)
    }
    pub fn client(self) -> bool {
        matches!(self, Role::Client | Role::Both)
    }
}

/// Nomad's role in the cluster and how it finds its peers; rendered into agent config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NomadRole {
    pub role: Option<Role>,
    pub bootstrap_expect: Option<Spanned<i64>>,
    /// Addresses (`10.0.0.1`, `host:4648`) or Nomad's cloud auto-join strings.
    #[serde(default)]
    pub retry_join: Vec<Spanned<String>>,
    pub datacenter: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    /// Client meta (added to the platform's facts; these win).
    #[serde(default)]
    pub meta: BTreeMap<String, Spanned<String>>,
}

/// One agent config file: `name` ends in `.json` or `.hcl`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fragment {
    pub name: Spanned<String>,
    pub content: Spanned<String>,
}

/// The pack set: inline TOML, or a URL whose content must have this sha256.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackSetSource {
    pub inline: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
}

/// `[upgrade]`: the slot payload (`nomados.slot`) to run, by URL and SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeSpec {
    pub url: Spanned<String>,
    pub sha256: Spanned<String>,
    pub version: Option<Spanned<String>>,
}

/// A file to place on the machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: Spanned<String>,
    /// Octal permission bits as a string (`"0644"`), default `0644`.
    pub mode: Option<Spanned<String>>,
    /// `uid:gid` in numbers, or `root`; default `root`.
    pub owner: Option<Spanned<String>>,
    pub content: Option<Spanned<String>>,
    pub content_base64: Option<Spanned<String>>,
}

/// The secrets of the secure defaults (issue 9). Never logged; written root-only.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    pub acl_bootstrap_secret: Option<Spanned<String>>,
    /// A token for a node that joins an existing cluster (instead of bootstrapping ACLs).
    pub nomad_token: Option<Spanned<String>>,
    /// Nomad's gossip encryption key (base64 of 16 or 32 bytes).
    pub gossip_key: Option<Spanned<String>>,
    pub tls: Option<Spanned<TlsSecrets>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSecrets {
    pub ca: Spanned<String>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    /// `verify_server_hostname` (default true).
    pub verify_server_hostname: Option<bool>,
}

// Hand-written so that no `{:?}` can print a secret.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: bool| if v { "<set>" } else { "<unset>" };
        f.debug_struct("Secrets")
            .field(
                "acl_bootstrap_secret",
                &set(self.acl_bootstrap_secret.is_some()),
            )
            .field("nomad_token", &set(self.nomad_token.is_some()))
            .field("gossip_key", &set(self.gossip_key.is_some()))
            .field("tls", &set(self.tls.is_some()))
            .finish()
    }
}

impl std::fmt::Debug for TlsSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSecrets")
            .field("verify_server_hostname", &self.verify_server_hostname)
            .finish_non_exhaustive()
    }
}
