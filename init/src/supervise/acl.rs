//! ACLs at first boot: once Nomad's API answers and before the pack applier runs, a server
//! with ACLs on and no token yet bootstraps them, keeps the management token root-only on
//! the data partition, and shows it once on the console. Every later boot finds the token
//! file and does nothing.
//!
//! [`plan`] is the pure decision; [`Flow`] carries it out.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::nomad::acl::{is_uuid, uuid_from, Bootstrap, BootstrapToken};
use crate::nomad::{self as api, Secret, TokenSource, Version};

/// Where the machine configuration puts the operator's chosen bootstrap secret.
pub const BOOTSTRAP_SECRET_FILE: &str = "/run/nomados/secrets/acl-bootstrap-secret";
/// Nomad takes an operator-chosen `BootstrapSecret` from this version on.
pub const CHOSEN_SECRET_SINCE: Version = Version::new(1, 4, 0);
const SECRET_FILE_LIMIT: u64 = 4096;
const RETRY_MAX: Duration = Duration::from_secs(15);

/// What is known before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The agent config's `acl.enabled`.
    pub acl_enabled: bool,
    /// The agent config's `server.enabled`.
    pub server: bool,
    /// This node's token file exists.
    pub token_present: bool,
    /// The machine configuration gave a bootstrap secret.
    pub secret_given: bool,
    /// The agent's version, when it tells (`/v1/agent/self` needs a token once ACLs are
    /// on, so before the bootstrap it usually does not).
    pub version: Option<Version>,
}

/// Whose secret the bootstrap token gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretChoice {
    /// The operator's, from the machine configuration.
    Operator,
    /// A random UUID made here.
    Generated,
    /// Nomad's own: the agent is older than 1.4 and cannot take one.
    Nomads { version: Version },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No ACLs: nothing to do (the supervisor warns loudly at every boot).
    AclsOff,
    /// A token is there (bootstrapped before, or given): use it.
    UseToken,
    /// A client-only node never bootstraps: it needs a token given to it.
    ClientWithoutToken,
    Bootstrap(SecretChoice),
}

/// The pure decision.
pub fn plan(f: &Facts) -> Plan {
    if !f.acl_enabled {
        return Plan::AclsOff;
    }
    if f.token_present {
        return Plan::UseToken;
    }
    if !f.server {
        return Plan::ClientWithoutToken;
    }
    match f.version {
        Some(version) if version < CHOSEN_SECRET_SINCE => {
            Plan::Bootstrap(SecretChoice::Nomads { version })
        }
        _ if f.secret_given => Plan::Bootstrap(SecretChoice::Operator),
        _ => Plan::Bootstrap(SecretChoice::Generated),
    }
}

/// How one bootstrap attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to do or done; the applier may run.
    Settled,
    /// Will not succeed by trying again (logged): the applier runs without a token.
    Failed,
    /// Worth another try (no leader yet, the agent restarting).
    Retry(String),
}

/// Everything the bootstrap touches.
#[derive(Debug, Clone)]
pub struct Flow {
    /// How to reach the agent (address, TLS); requests here are anonymous.
    pub api: api::Settings,
    pub acl_enabled: bool,
    pub server: bool,
    /// Where the node's token lives (`nomad.token_file`).
    pub token_file: PathBuf,
    /// The operator's bootstrap secret, when the machine configuration gave one.
    pub secret_file: PathBuf,
    /// Where the token is shown once: the console device; stderr when `None` or when it
    /// cannot be opened.
    pub console: Option<PathBuf>,
}

impl Flow {
    /// For PID 1: the agent config's facts, `nomad.token_file`, and the system paths.
    pub fn for_boot(
        config: &crate::boot::config::NomadConfig,
        fragment_dirs: &[std::path::PathBuf],
        api: &api::Settings,
        root: &crate::sys::root::Root,
    ) -> Option<Self> {
        // What Nomad itself runs with: the base file and the machine's fragments.
        let agent = api::LocalAgent::from_files(&config.config, fragment_dirs);
        let token_file = match &api.token {
            TokenSource::File(f) => f.clone(),
            // No token file configured: nowhere to keep a bootstrap token.
            _ => {
                if agent.acl_enabled && agent.server {
                    crate::warn!(
                        "nomad.token_file is unset: ACLs are not bootstrapped by this node"
                    );
                }
                return None;
            }
        };
        Some(Self {
            api: api.clone(),
            acl_enabled: agent.acl_enabled,
            server: agent.server,
            token_file,
            secret_file: root.path(BOOTSTRAP_SECRET_FILE),
            // A test root's /dev is the host's devtmpfs: its console is not the test's.
            console: (!root.is_test()).then(|| root.path("/dev/console")),
        })
    }

    fn anonymous(&self) -> api::Settings {
        // What the API is now (long-lived mode may have moved it), without the token.
        api::Settings {
            token: TokenSource::None,
            ..self.api.current()
        }
    }

    /// Reads the operator's secret: `Ok(None)` when no file, an error naming the file
    /// when it is unusable (never showing its contents).
    fn operator_secret(&self) -> Result<Option<Secret>, String> {
        let path = &self.secret_file;
        if !path.exists() {
            return Ok(None);
        }
        let bytes = crate::fsutil::read_bounded(path, SECRET_FILE_LIMIT)
            .map_err(|e| format!("bootstrap secret {}: {e}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("bootstrap secret {}: not UTF-8", path.display()))?;
        let secret = text.trim();
        if !is_uuid(secret) {
            return Err(format!(
                "bootstrap secret {}: not a UUID (Nomad takes only a UUID such as \
                 2b778dd9-f5f1-6f29-b4b4-9a5fa948757a)",
                path.display()
            ));
        }
        Ok(Some(Secret::new(secret)))
    }

    /// One attempt: decide, and bootstrap when that is the decision.
    pub async fn attempt(&self) -> Outcome {
        let operator = match self.operator_secret() {
            Ok(s) => s,
            Err(e) => {
                crate::error!("{e}; ACLs are not bootstrapped (fix the machine configuration)");
                return Outcome::Failed;
            }
        };
        let client = match api::Client::new(&self.anonymous()) {
            Ok(c) => c,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let token_present = self.token_file.exists();
        // Only ask the agent when the answer matters.
        let version = if self.acl_enabled && self.server && !token_present {
            client.agent_info().await.ok().map(|i| i.version)
        } else {
            None
        };
        let facts = Facts {
            acl_enabled: self.acl_enabled,
            server: self.server,
            token_present,
            secret_given: operator.is_some(),
            version,
        };
        let choice = match plan(&facts) {
            Plan::AclsOff => return Outcome::Settled,
            Plan::UseToken => {
                crate::info!("nomad ACL token: {}", self.token_file.display());
                return Outcome::Settled;
            }
            Plan::ClientWithoutToken => {
                crate::warn!(
                    "nomad ACLs are on and this client-only node has no token at {}: it \
                     cannot drain itself or apply packs; give it a token through its \
                     machine configuration",
                    self.token_file.display()
                );
                return Outcome::Settled;
            }
            Plan::Bootstrap(choice) => choice,
        };
        let sent = match choice {
            SecretChoice::Operator => operator,
            SecretChoice::Generated => match random_uuid() {
                Ok(u) => Some(Secret::new(u)),
                Err(e) => {
                    crate::warn!("no random bytes for a bootstrap secret ({e}); Nomad makes one");
                    None
                }
            },
            SecretChoice::Nomads { version } => {
                crate::warn!(
                    "nomad {version} cannot take a chosen bootstrap secret (needs \
                     {CHOSEN_SECRET_SINCE}); Nomad generates it{}",
                    if operator.is_some() {
                        ": the machine configuration's secret is not used"
                    } else {
                        ""
                    }
                );
                None
            }
        };
        match client.acl_bootstrap(sent.as_ref()).await {
            Ok(Bootstrap::Done(token)) => {
                self.bootstrapped(&token, sent.as_ref(), choice).await;
                Outcome::Settled
            }
            Ok(Bootstrap::AlreadyDone(words)) => {
                // Every server of a cluster may be given the same secret: the first one
                // bootstraps, the others find it is the management token already.
                if let Some(secret) = sent.as_ref().filter(|_| choice == SecretChoice::Operator) {
                    if self.is_management(secret).await {
                        return self.adopt(secret);
                    }
                }
                crate::error!(
                    "nomad's ACLs were bootstrapped before ({words}) and this node has no \
                     token at {}: give this node a token through its machine configuration",
                    self.token_file.display()
                );
                Outcome::Failed
            }
            Err(e) if retryable(&e) => Outcome::Retry(e.to_string()),
            Err(e) => {
                crate::error!("ACL bootstrap failed: {e}");
                Outcome::Failed
            }
        }
    }

    /// The secret is a management token of this cluster (`GET /v1/acl/token/self`).
    async fn is_management(&self, secret: &Secret) -> bool {
        let settings = self.anonymous().with_token(Some(secret.expose().into()));
        match api::Client::new(&settings) {
            Ok(c) => c
                .get("/v1/acl/token/self")
                .await
                .is_ok_and(|t| t["Type"] == "management"),
            Err(_) => false,
        }
    }

    /// Keeps the machine configuration's secret as this node's token (another server
    /// bootstrapped with it); it is not shown: the operator wrote it.
    fn adopt(&self, secret: &Secret) -> Outcome {
        match write_token(&self.token_file, secret) {
            Ok(()) => {
                crate::info!(
                    "nomad's ACLs were bootstrapped by another server with the machine \
                     configuration's secret: kept it as this node's token in {}",
                    self.token_file.display()
                );
                Outcome::Settled
            }
            Err(e) => {
                crate::error!(
                    "cannot keep the token in {}: {e}",
                    self.token_file.display()
                );
                Outcome::Failed
            }
        }
    }

    /// Keeps the token, shows it once, logs its accessor.
    async fn bootstrapped(
        &self,
        token: &BootstrapToken,
        sent: Option<&Secret>,
        choice: SecretChoice,
    ) {
        if sent.is_some_and(|s| *s != token.secret) {
            // The agent ignored BootstrapSecret: older than 1.4. Ask it which it is.
            let with_token = self
                .anonymous()
                .with_token(Some(token.secret.expose().into()));
            let version = match api::Client::new(&with_token) {
                Ok(c) => c.agent_info().await.map(|i| i.version.to_string()).ok(),
                Err(_) => None,
            };
            crate::warn!(
                "nomad {} cannot take a chosen bootstrap secret (needs {CHOSEN_SECRET_SINCE}): \
                 it generated the token itself{}",
                version.as_deref().unwrap_or("(version unknown)"),
                if choice == SecretChoice::Operator {
                    "; the machine configuration's secret is not used"
                } else {
                    ""
                }
            );
        }
        let saved = write_token(&self.token_file, &token.secret);
        match &saved {
            Ok(()) => crate::info!(
                "nomad ACLs bootstrapped: management token accessor {}, kept in {}",
                token.accessor_id,
                self.token_file.display()
            ),
            Err(e) => crate::error!(
                "nomad ACLs bootstrapped (management token accessor {}) but the token could \
                 not be kept in {}: {e}; it is shown on the console now, keep it",
                token.accessor_id,
                self.token_file.display()
            ),
        }
        show_once(
            self.console.as_deref(),
            &console_banner(token, &self.token_file, saved.is_ok()),
        );
    }
}

/// Transient: no HTTP answer, or Nomad's server side not ready (`No cluster leader` is a 500).
fn retryable(e: &api::ApiError) -> bool {
    match e {
        api::ApiError::Transport { .. } => true,
        api::ApiError::Status { status, .. } => status.is_server_error(),
        _ => false,
    }
}

/// Waits for Nomad's first health, settles the ACL bootstrap (retrying what may pass),
/// then passes every health change on to the applier: it never runs before the token
/// exists.
pub async fn gate(
    flow: Option<Flow>,
    mut healthy: watch::Receiver<bool>,
    applier: watch::Sender<bool>,
) {
    if let Some(flow) = flow {
        if healthy.wait_for(|h| *h).await.is_err() {
            return;
        }
        let mut delay = Duration::from_secs(1);
        let mut said = false;
        loop {
            match flow.attempt().await {
                Outcome::Settled | Outcome::Failed => break,
                Outcome::Retry(why) => {
                    if !said {
                        crate::info!("ACL bootstrap not possible yet ({why}); trying again");
                        said = true;
                    } else {
                        crate::debug!("ACL bootstrap not possible yet ({why})");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }
    loop {
        applier.send_replace(*healthy.borrow_and_update());
        if healthy.changed().await.is_err() {
            return;
        }
    }
}

/// 16 bytes from the kernel's random pool, as a UUID.
fn random_uuid() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(uuid_from(bytes))
}

/// Writes the token root-only (0600) and atomically (`fsutil::write_atomic_mode`: a 0600
/// temporary file in the same directory, fsync, rename, fsync of the directory), in a
/// directory made root-only when missing. Never world-readable, not for a moment.
pub fn write_token(path: &Path, secret: &Secret) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    crate::fsutil::write_atomic_mode(path, &[secret.expose().as_bytes(), b"\n"], 0o600, None)
}

/// The framed text shown once on the console.
pub fn console_banner(token: &BootstrapToken, file: &Path, saved: bool) -> String {
    let rule = "=".repeat(72);
    let kept = if saved {
        format!("Kept root-only in {} on this machine.", file.display())
    } else {
        format!(
            "NOT saved ({} could not be written): copy it now.",
            file.display()
        )
    };
    format!(
        "\n{rule}\n NOMAD ACL BOOTSTRAP TOKEN (management; shown only at this first boot)\n\n   \
         Secret ID:   {}\n   Accessor ID: {}\n\n {kept}\n It can do anything on this cluster: \
         store it safely (e.g. as NOMAD_TOKEN).\n{rule}\n\n",
        token.secret.expose(),
        token.accessor_id
    )
}

/// Straight to the console device, not through the log (which could reach a file); stderr
/// (PID 1's console) when the device cannot be opened.
fn show_once(console: Option<&Path>, text: &str) {
    let written = console.is_some_and(|path| {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .and_then(|mut d| d.write_all(text.as_bytes()))
            .is_ok()
    });
    if !written {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests;
