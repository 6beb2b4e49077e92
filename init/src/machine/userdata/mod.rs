//! The user data: one TOML document that tells a machine at boot who it is (issue 10).
//!
//! [`parse`] is pure: it reads the text into [`MachineConfig`], checking every field before
//! anything is applied, and reports each problem with its line and column. Messages name
//! the field, never a secret's value. The format is documented in `docs/machine-config.md`;
//! [`schema`] prints it as JSON Schema.

mod check;
pub mod install;
pub mod model;
pub mod schema;
#[cfg(test)]
mod tests;
mod upgrade;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::{Location, SourceError};
pub use model::Role;

/// More than any real user data (a few KiB of config, certificates and a pack set);
/// every source reads at most this much.
pub const MAX_USER_DATA_BYTES: u64 = 1024 * 1024;

/// The checked user data, ready to render.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MachineConfig {
    /// The `[init]` table as written, layered over the baked `nomados.toml`.
    pub init: Option<toml::Table>,
    pub nomad: NomadSettings,
    /// Agent config fragments: (file name, content), in the order given.
    pub fragments: Vec<(String, String)>,
    pub packs: Option<PackSetSource>,
    /// `[upgrade]`: the system this machine should run.
    pub upgrade: Option<crate::slots::wanted::Wanted>,
    pub files: Vec<PlacedFile>,
    pub secrets: SecretValues,
    /// `[install]`: write the system to this disk instead of starting Nomad.
    pub install: Option<crate::install::options::Request>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NomadSettings {
    pub role: Option<Role>,
    pub bootstrap_expect: Option<u32>,
    pub retry_join: Vec<String>,
    pub datacenter: Option<String>,
    pub region: Option<String>,
    pub name: Option<String>,
    pub meta: BTreeMap<String, String>,
}

impl NomadSettings {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackSetSource {
    Inline(String),
    Url { url: String, sha256: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedFile {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: Vec<u8>,
}

/// Secret values; `Debug` says only which are set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValues {
    pub acl_bootstrap_secret: Option<String>,
    pub nomad_token: Option<String>,
    pub gossip_key: Option<String>,
    pub tls: Option<TlsMaterial>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca: String,
    pub cert: String,
    pub key: String,
    pub verify_server_hostname: bool,
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValues(")?;
        f.write_str(&self.names().join(", "))?;
        f.write_str(")")
    }
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial(..)")
    }
}

impl SecretValues {
    /// The names of the secrets that are set, for the log.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.acl_bootstrap_secret.is_some() {
            out.push("acl_bootstrap_secret");
        }
        if self.nomad_token.is_some() {
            out.push("nomad_token");
        }
        if self.gossip_key.is_some() {
            out.push("gossip_key");
        }
        if self.tls.is_some() {
            out.push("tls");
        }
        out
    }

    /// Every value, for scrubbing messages.
    pub fn redactor(&self) -> crate::redact::Secrets {
        let mut s = crate::redact::Secrets::default();
        for v in [
            &self.acl_bootstrap_secret,
            &self.nomad_token,
            &self.gossip_key,
        ]
        .into_iter()
        .flatten()
        {
            s.token(v);
        }
        if let Some(t) = &self.tls {
            s.token(&t.key);
        }
        s
    }
}

impl MachineConfig {
    /// One line for the log: what this user data provides (never a secret's value).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.init {
            let keys: Vec<&str> = t.keys().map(String::as_str).collect();
            parts.push(format!("init [{}]", keys.join(", ")));
        }
        if let Some(role) = self.nomad.role {
            parts.push(format!("role {role:?}").to_lowercase());
        }
        if let Some(n) = self.nomad.bootstrap_expect {
            parts.push(format!("bootstrap_expect {n}"));
        }
        if !self.nomad.retry_join.is_empty() {
            parts.push(format!("retry_join ({})", self.nomad.retry_join.len()));
        }
        if !self.fragments.is_empty() {
            let names: Vec<&str> = self.fragments.iter().map(|(n, _)| n.as_str()).collect();
            parts.push(format!("fragments [{}]", names.join(", ")));
        }
        match &self.packs {
            Some(PackSetSource::Inline(_)) => parts.push("pack set (inline)".into()),
            Some(PackSetSource::Url { url, .. }) => {
                parts.push(format!("pack set from {}", crate::redact::url(url)))
            }
            None => {}
        }
        if let Some(u) = &self.upgrade {
            parts.push(format!(
                "upgrade to {} from {}",
                u.name(),
                crate::redact::url(&u.url)
            ));
        }
        if !self.files.is_empty() {
            parts.push(format!("{} file(s)", self.files.len()));
        }
        if let Some(i) = &self.install {
            parts.push(format!("install to {}", i.target.display()));
        }
        let secrets = self.secrets.names();
        if !secrets.is_empty() {
            parts.push(format!("secrets [{}]", secrets.join(", ")));
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Every problem of a user data, sorted by place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct UserDataError(pub Vec<SourceError>);

fn render(errors: &[SourceError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Reads and checks the user data `bytes` (named `file` in messages).
pub fn parse(file: &Path, bytes: &[u8]) -> Result<MachineConfig, UserDataError> {
    let at_start = || Location::new(file, 1, 1);
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(UserDataError(vec![SourceError::new(
            at_start(),
            "the user data is not UTF-8 text",
        )]));
    };
    let first = text.trim_start().lines().next().unwrap_or("");
    if first.starts_with("#cloud-config") || first.starts_with("#!") {
        return Err(UserDataError(vec![SourceError::new(
            at_start(),
            "this is cloud-init user data (#cloud-config or a script); NomadOS reads TOML \
             (see docs/machine-config.md)",
        )]));
    }
    let written: model::UserData = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        UserDataError(vec![SourceError::new(
            Location::from_offset(file, text, offset),
            e.message().trim_end().to_string(),
        )])
    })?;
    check::check(file, text, written)
}
