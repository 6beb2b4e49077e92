//! Where Nomad is and how to talk to it: address, ACL token, namespace, region and TLS.
//! Pure data; files (token, CA, certificates) are read, size-bounded, when a client is
//! built, so a rotated token or certificate is picked up by the next client.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::error::{ApiError, Result};

/// A secret string: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the ACL token comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TokenSource {
    /// Anonymous requests.
    #[default]
    None,
    Value(Secret),
    /// Read (and trimmed) each time a client is built. A file that does not exist means
    /// no token (anonymous requests): the machine's default token file appears only once
    /// ACLs are bootstrapped.
    File(PathBuf),
}

/// TLS towards an `https://` address. Empty means: the system's roots, no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM CA bundle; when set, only these CAs are trusted (like Nomad's `-ca-cert`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and its key, for agents with `verify_https_client`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name the server's certificate must carry when it differs from the address's
    /// host (e.g. `server.global.nomad`).
    pub server_name: Option<String>,
    /// Accept any server certificate. For debugging only.
    pub skip_verify: bool,
}

/// The local agent's API as it is now, shared by every clone of the settings given it
/// ([`Settings::following`]). PID 1 moves it when a changed agent config (long-lived mode)
/// moves the API or turns TLS on: every client built after that (health, drain, gates,
/// the applier's environment) follows, without a reboot.
#[derive(Clone, Default)]
pub struct Live(Arc<RwLock<Option<Box<Settings>>>>);

impl Live {
    /// From now on, clients are built from `s` (its own `live`, if any, is dropped).
    pub fn set(&self, mut s: Settings) {
        s.live = None;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(s));
    }

    /// What was last set, if anything.
    pub fn get(&self) -> Option<Settings> {
        let g = self.0.read().unwrap_or_else(|p| p.into_inner());
        g.as_deref().cloned()
    }
}

impl PartialEq for Live {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Live {}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `http://host:port` or `https://host:port`.
    pub addr: String,
    pub token: TokenSource,
    /// Sent as `namespace=` on requests that do not name one (like Nomad's own client).
    pub namespace: Option<String>,
    /// Sent as `region=` on every request that does not name one.
    pub region: Option<String>,
    pub tls: Tls,
    /// Upper bound for one request, connection to last byte.
    pub request_timeout: Duration,
    /// When set, what it holds replaces all of the above ([`Settings::current`]).
    pub live: Option<Live>,
}

pub const DEFAULT_ADDR: &str = "http://127.0.0.1:4646";

/// Bounds for files read while building a client.
const TOKEN_FILE_LIMIT: u64 = 64 * 1024;
const PEM_FILE_LIMIT: u64 = 1024 * 1024;

/// A missing token file is said once per process, not at every request.
static MISSING_TOKEN_SAID: AtomicBool = AtomicBool::new(false);

impl Settings {
    /// Plain settings for `addr`: anonymous, no namespace or region, system TLS roots.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            token: TokenSource::None,
            namespace: None,
            region: None,
            tls: Tls::default(),
            request_timeout: Duration::from_secs(60),
            live: None,
        }
    }

    /// These settings, following `live` from now on (until it is set, they are these).
    pub fn following(mut self, live: Live) -> Self {
        self.live = Some(live);
        self
    }

    /// The settings in force now: what `live` holds once it was set, else these.
    pub fn current(&self) -> Settings {
        match self.live.as_ref().and_then(Live::get) {
            Some(s) => s,
            None => Settings {
                live: None,
                ..self.clone()
            },
        }
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = match token.filter(|t| !t.trim().is_empty()) {
            Some(t) => TokenSource::Value(Secret::new(t.trim())),
            None => TokenSource::None,
        };
        self
    }

    pub fn is_https(&self) -> bool {
        self.addr.starts_with("https://")
    }

    /// The token to send, read from its file when it comes from one.
    pub fn resolve_token(&self) -> Result<Option<Secret>> {
        match &self.token {
            TokenSource::None => Ok(None),
            TokenSource::Value(s) => Ok(Some(s.clone())),
            TokenSource::File(path) => {
                let missing = std::fs::metadata(path)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
                if missing {
                    if !MISSING_TOKEN_SAID.swap(true, Ordering::Relaxed) {
                        crate::debug!(
                            "no ACL token file {} (yet): requests are anonymous",
                            path.display()
                        );
                    }
                    return Ok(None);
                }
                let bytes = read_bounded(path, TOKEN_FILE_LIMIT, "ACL token file")?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    ApiError::Setup(format!("ACL token file {}: not UTF-8", path.display()))
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(ApiError::Setup(format!(
                        "ACL token file {} is empty",
                        path.display()
                    )));
                }
                Ok(Some(Secret::new(token)))
            }
        }
    }

    /// The environment a child `nomad-init packs ...` (or `nomad`) process needs to reach
    /// the same agent the same way: Nomad's own variables. The token is read now and
    /// passed as `NOMAD_TOKEN` (the environment of a process is readable only by its
    /// owner and root), never on a command line.
    pub fn child_env(&self) -> Result<Vec<(&'static str, OsString)>> {
        let current = self.current();
        let s = &current;
        let mut env: Vec<(&'static str, OsString)> = vec![("NOMAD_ADDR", s.addr.clone().into())];
        if let Some(token) = s.resolve_token()? {
            env.push(("NOMAD_TOKEN", token.expose().into()));
        }
        let text = |k, v: &Option<String>| v.as_ref().map(|v| (k, OsString::from(v)));
        let path = |k, v: &Option<PathBuf>| v.as_ref().map(|v| (k, v.clone().into_os_string()));
        env.extend(text("NOMAD_NAMESPACE", &s.namespace));
        env.extend(text("NOMAD_REGION", &s.region));
        env.extend(path("NOMAD_CACERT", &s.tls.ca_file));
        env.extend(path("NOMAD_CLIENT_CERT", &s.tls.client_cert));
        env.extend(path("NOMAD_CLIENT_KEY", &s.tls.client_key));
        env.extend(text("NOMAD_TLS_SERVER_NAME", &s.tls.server_name));
        if s.tls.skip_verify {
            env.push(("NOMAD_SKIP_VERIFY", "true".into()));
        }
        Ok(env)
    }
}

/// Reads at most `limit` bytes of `path`; a longer file is an error, not a truncation.
pub(crate) fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let fail = |e: std::io::Error| ApiError::Setup(format!("{what} {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(fail)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(fail)?;
    if bytes.len() as u64 > limit {
        return Err(ApiError::Setup(format!(
            "{what} {} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

pub(crate) fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    let bytes = read_bounded(path, PEM_FILE_LIMIT, what)?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(ApiError::Setup(format!(
            "{what} {}: not PEM (no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Settings::new("http://127.0.0.1:4646").with_token(Some("s3cr3t\n".into()));
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert_eq!(s.resolve_token().unwrap().unwrap().expose(), "s3cr3t");
        assert_eq!(
            Settings::new("x").with_token(Some(" ".into())).token,
            TokenSource::None
        );
    }

    #[test]
    fn token_files_are_read_trimmed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        let mut s = Settings::new("http://127.0.0.1:4646");
        s.token = TokenSource::File(p.clone());
        // Not there yet (before the ACL bootstrap): anonymous, not an error.
        assert_eq!(s.resolve_token().unwrap(), None);
        std::fs::create_dir(&p).unwrap();
        let e = s.resolve_token().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("ACL token file {}: ", p.display())),
            "{e}"
        );
        std::fs::remove_dir(&p).unwrap();
        std::fs::write(&p, "s3cr3t\n").unwrap();
        assert_eq!(s.resolve_token().unwrap().unwrap().expose(), "s3cr3t");
        std::fs::write(&p, "\n").unwrap();
        assert!(s
            .resolve_token()
            .unwrap_err()
            .to_string()
            .contains("is empty"));
        std::fs::write(&p, vec![b'a'; 70_000]).unwrap();
        let e = s.resolve_token().unwrap_err().to_string();
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        assert!(!e.contains("aaaa"), "{e}");
    }

    #[test]
    fn every_clone_follows_live_once_it_is_set() {
        let live = Live::default();
        let s = Settings::new("http://127.0.0.1:4646")
            .with_token(Some("t".into()))
            .following(live.clone());
        let copy = Settings {
            token: TokenSource::None,
            ..s.clone()
        };
        assert_eq!(s.current().addr, "http://127.0.0.1:4646");
        let mut moved = Settings::new("https://127.0.0.1:4747");
        moved.tls.server_name = Some("server.global.nomad".into());
        live.set(moved.clone());
        assert_eq!(s.current(), moved);
        assert_eq!(copy.current(), moved, "a copy made before follows too");
        assert_eq!(
            s.child_env().unwrap()[0],
            ("NOMAD_ADDR", "https://127.0.0.1:4747".into())
        );
        // Settings without it stay as they are.
        assert_eq!(Settings::new("http://a:1").current().addr, "http://a:1");
    }

    #[test]
    fn child_env_carries_everything_and_the_token_only_in_nomad_token() {
        let mut s = Settings::new("https://10.0.0.1:4646").with_token(Some("t0k".into()));
        s.region = Some("eu".into());
        s.tls.ca_file = Some("/etc/ca.pem".into());
        s.tls.skip_verify = true;
        let env = s.child_env().unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("NOMAD_ADDR").unwrap(), "https://10.0.0.1:4646");
        assert_eq!(get("NOMAD_TOKEN").unwrap(), "t0k");
        assert_eq!(get("NOMAD_REGION").unwrap(), "eu");
        assert_eq!(get("NOMAD_CACERT").unwrap(), "/etc/ca.pem");
        assert_eq!(get("NOMAD_SKIP_VERIFY").unwrap(), "true");
        assert_eq!(get("NOMAD_NAMESPACE"), None);
    }
}
