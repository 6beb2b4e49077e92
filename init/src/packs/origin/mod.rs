//! Pack origins: turns a declared pack into a local directory holding it.
//!
//! Local origins are used in place (never written to). HTTP(S) tarballs are downloaded into
//! a content-addressed cache (see `cache.rs`), verified against their `_sha256` pin before
//! anything is extracted, and extracted entry by entry with the checks in `extract.rs`.
//! A failing origin is an error, never a stale copy: the applier then leaves the pack's
//! running jobs alone.

mod auth;
mod cache;
mod digest;
mod extract;
mod http;
pub use crate::redact;
mod resolve;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use crate::packs::model::{Origin, PackDecl};

pub use cache::GcReport;

/// Where and how packs are fetched.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Root of the pack cache (`blobs/`, `unpacked/`, `index/`).
    pub cache_dir: PathBuf,
    /// Total bytes an archive may expand to.
    pub max_unpacked_bytes: u64,
    /// Entries (files, directories, links) an archive may hold.
    pub max_entries: usize,
    /// Connect timeout, and the longest pause allowed between bytes of a response.
    pub timeout: Duration,
    /// Time a whole download may take (a server trickling bytes never hits `timeout`).
    pub download_deadline: Duration,
    /// Bytes one downloaded archive may have.
    pub max_download_bytes: u64,
    /// Cache entries the pack set no longer names are removed once unused this long.
    pub cache_min_idle: Duration,
}

/// The one default for the pack cache: PID 1's (`boot::config::PACK_CACHE_DIR`) for root;
/// a user cannot write there, so `$XDG_CACHE_HOME/nomados/packs` (or `~/.cache/nomados/packs`) otherwise.
pub fn default_cache_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from(crate::boot::config::PACK_CACHE_DIR);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("nomados/packs")
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            max_unpacked_bytes: 256 * 1024 * 1024,
            max_entries: 10_000,
            timeout: Duration::from_secs(30),
            download_deadline: Duration::from_secs(600),
            max_download_bytes: 256 * 1024 * 1024,
            cache_min_idle: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Environment variables that override the download limits (for tests, and for a site
/// that serves unusually large packs).
pub const ENV_MAX_DOWNLOAD_BYTES: &str = "NOMADOS_PACK_MAX_DOWNLOAD_BYTES";
pub const ENV_DOWNLOAD_DEADLINE_SECS: &str = "NOMADOS_PACK_DOWNLOAD_DEADLINE_SECS";
pub const ENV_IDLE_TIMEOUT_SECS: &str = "NOMADOS_PACK_IDLE_TIMEOUT_SECS";

impl FetchOptions {
    /// These options with the download limits the environment sets (see `ENV_*`).
    pub fn with_env_overrides(mut self) -> Result<Self, OriginError> {
        let read = |var: &str| -> Result<Option<u64>, OriginError> {
            match std::env::var(var) {
                Ok(v) => v.trim().parse().map(Some).map_err(|_| OriginError::Client {
                    message: format!("{var} must be a whole number, got `{}`", v.escape_debug()),
                }),
                Err(_) => Ok(None),
            }
        };
        if let Some(n) = read(ENV_MAX_DOWNLOAD_BYTES)? {
            self.max_download_bytes = n;
        }
        if let Some(n) = read(ENV_DOWNLOAD_DEADLINE_SECS)? {
            self.download_deadline = Duration::from_secs(n);
        }
        if let Some(n) = read(ENV_IDLE_TIMEOUT_SECS)? {
            self.timeout = Duration::from_secs(n);
        }
        Ok(self)
    }
}

/// A pack on local disk, ready to be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPack {
    /// The pack's own directory (the one holding `jobs/`).
    pub dir: PathBuf,
    /// SHA-256 of the downloaded archive; `None` for local origins.
    pub digest: Option<String>,
    /// True when no download happened (pinned tree present, or the server said 304).
    pub from_cache: bool,
}

/// Why a pack could not be fetched. Every message names the pack key and the origin,
/// with credentials removed from URLs; secret values never appear.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("cannot set up the HTTP client for pack origins: {message}")]
    Client { message: String },
    #[error("pack `{pack}`: origin {origin}: {message}")]
    Invalid {
        pack: String,
        origin: String,
        message: String,
    },
    #[error("pack `{pack}`: local origin {origin} {message}")]
    LocalMissing {
        pack: String,
        origin: String,
        message: String,
    },
    #[error("pack `{pack}`: pack `{origin_name}` not found at {origin} (looked for {origin_name}/ and jobs/)")]
    NotFound {
        pack: String,
        origin: String,
        origin_name: String,
    },
    #[error("pack `{pack}`: credentials for {origin}: {message}")]
    Credentials {
        pack: String,
        origin: String,
        message: String,
    },
    #[error("pack `{pack}`: cannot download {origin}: {message}")]
    Request {
        pack: String,
        origin: String,
        message: String,
    },
    #[error("pack `{pack}`: {origin} answered HTTP {status}{}{}", reason(*.status), body_suffix(.body))]
    Status {
        pack: String,
        origin: String,
        status: u16,
        body: Option<String>,
    },
    #[error(
        "pack `{pack}`: sha256 mismatch for {origin}: computed {computed}, expected {expected}"
    )]
    Sha256Mismatch {
        pack: String,
        origin: String,
        computed: String,
        expected: String,
    },
    #[error("pack `{pack}`: {origin} is not a usable archive: {message}")]
    Archive {
        pack: String,
        origin: String,
        message: String,
    },
    #[error("pack `{pack}`: archive {origin} refused: entry `{entry}` {reason}")]
    UnsafeEntry {
        pack: String,
        origin: String,
        entry: String,
        reason: String,
    },
    #[error("pack `{pack}`: archive {origin} refused: {message}")]
    Limit {
        pack: String,
        origin: String,
        message: String,
    },
    #[error("pack `{pack}`: {origin}: cannot {action}: {source}")]
    Io {
        pack: String,
        origin: String,
        action: String,
        source: std::io::Error,
    },
}

fn reason(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default()
}

fn body_suffix(body: &Option<String>) -> String {
    body.as_ref().map(|b| format!(": {b}")).unwrap_or_default()
}

/// Pack key and shown origin, to build errors.
struct Ctx {
    pack: String,
    origin: String,
}

impl Ctx {
    fn invalid(&self, message: impl Into<String>) -> OriginError {
        OriginError::Invalid {
            pack: self.pack.clone(),
            origin: self.origin.clone(),
            message: message.into(),
        }
    }

    fn io(&self, action: impl Into<String>) -> impl FnOnce(std::io::Error) -> OriginError + '_ {
        let action = action.into();
        move |source| OriginError::Io {
            pack: self.pack.clone(),
            origin: self.origin.clone(),
            action,
            source,
        }
    }

    fn resolve(&self, err: resolve::ResolveError, origin_name: &str) -> OriginError {
        match err {
            resolve::ResolveError::BadOriginName => self.invalid(format!(
                "origin name `{origin_name}` must be a relative path without `..`"
            )),
            resolve::ResolveError::NotFound => OriginError::NotFound {
                pack: self.pack.clone(),
                origin: self.origin.clone(),
                origin_name: origin_name.to_string(),
            },
        }
    }

    fn http(&self, err: http::HttpFailure) -> OriginError {
        let (pack, origin) = (self.pack.clone(), self.origin.clone());
        match err {
            http::HttpFailure::Request(message) => OriginError::Request {
                pack,
                origin,
                message,
            },
            http::HttpFailure::Status { status, body } => OriginError::Status {
                pack,
                origin,
                status,
                body,
            },
            http::HttpFailure::Io { action, source } => OriginError::Io {
                pack,
                origin,
                action,
                source,
            },
        }
    }

    fn extract(&self, err: extract::ExtractError) -> OriginError {
        let (pack, origin) = (self.pack.clone(), self.origin.clone());
        match err {
            extract::ExtractError::Format(message) => OriginError::Archive {
                pack,
                origin,
                message,
            },
            extract::ExtractError::Unsafe { entry, reason } => OriginError::UnsafeEntry {
                pack,
                origin,
                entry,
                reason,
            },
            extract::ExtractError::Limit(message) => OriginError::Limit {
                pack,
                origin,
                message,
            },
            extract::ExtractError::Io { action, source } => OriginError::Io {
                pack,
                origin,
                action,
                source,
            },
        }
    }
}

/// Fetches packs; share one per applier run (it holds the HTTP connection pools).
#[derive(Debug, Clone)]
pub struct Fetcher {
    opts: FetchOptions,
    cache: cache::Cache,
    /// Built at the first download: each client parses the whole system CA bundle (about
    /// 150 certificates, tens of ms per client under TCG), which a run of local or
    /// `file://` packs never needs.
    clients: std::sync::OnceLock<http::Clients>,
}

impl Fetcher {
    pub fn new(opts: FetchOptions) -> Self {
        Self {
            cache: cache::Cache::new(opts.cache_dir.clone()),
            opts,
            clients: std::sync::OnceLock::new(),
        }
    }

    /// The HTTP clients, built now if no download needed them before.
    fn clients(&self) -> Result<&http::Clients, OriginError> {
        if let Some(c) = self.clients.get() {
            return Ok(c);
        }
        let built = http::Clients::new(self.opts.timeout).map_err(|e| OriginError::Client {
            message: e.without_url().to_string(),
        })?;
        // Two fetches may race here; either's clients will do.
        Ok(self.clients.get_or_init(|| built))
    }

    /// Makes the pack available locally and returns its directory.
    pub async fn fetch(&self, decl: &PackDecl) -> Result<FetchedPack, OriginError> {
        match &decl.origin {
            Origin::Local(path) => self.fetch_local(decl, path),
            Origin::Http(url) if url.starts_with("file:") => {
                let ctx = Ctx {
                    pack: decl.key.clone(),
                    origin: url.clone(),
                };
                let path = Url::parse(url)
                    .ok()
                    .and_then(|u| u.to_file_path().ok())
                    .ok_or_else(|| ctx.invalid("not a valid file:// URL of a local path"))?;
                self.fetch_local(decl, &path)
            }
            Origin::Http(url) => self.fetch_http(decl, url).await,
        }
    }

    fn fetch_local(&self, decl: &PackDecl, path: &Path) -> Result<FetchedPack, OriginError> {
        let ctx = Ctx {
            pack: decl.key.clone(),
            origin: path.display().to_string(),
        };
        let missing = |message: &str| OriginError::LocalMissing {
            pack: ctx.pack.clone(),
            origin: ctx.origin.clone(),
            message: message.to_string(),
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(missing("is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(missing("does not exist"))
            }
            Err(e) => return Err(missing(&format!("cannot be read: {e}"))),
        }
        let dir = resolve::pack_dir(path, &decl.origin_name)
            .map_err(|e| ctx.resolve(e, &decl.origin_name))?;
        Ok(FetchedPack {
            dir,
            digest: None,
            from_cache: false,
        })
    }

    async fn fetch_http(&self, decl: &PackDecl, raw_url: &str) -> Result<FetchedPack, OriginError> {
        let ctx = Ctx {
            pack: decl.key.clone(),
            origin: redact::url(raw_url),
        };
        let url = Url::parse(raw_url).map_err(|e| ctx.invalid(format!("invalid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ctx.invalid("only http://, https:// and file:// origins are supported"));
        }
        if let Some(pin) = &decl.sha256 {
            if !digest::is_sha256_hex(pin) {
                return Err(ctx.invalid("`_sha256` must be 64 lowercase hex digits"));
            }
        }
        // A pinned tree is immutable: use it without asking the network (and without
        // writing, so a read-only pre-seeded cache works).
        if let Some(pin) = &decl.sha256 {
            if let Some(tree) = self.cache.unpacked(pin) {
                crate::debug!("pack `{}`: using cached {}", ctx.pack, short(pin));
                return self.found(&ctx, decl, &tree, pin, true);
            }
        }
        self.cache
            .prepare()
            .map_err(ctx.io(format!("create the cache {}", self.cache.root().display())))?;
        if let Some(pin) = &decl.sha256 {
            if let Some(tree) = self.unpack_cached_blob(&ctx, &url, pin).await? {
                return self.found(&ctx, decl, &tree, pin, true);
            }
        }

        let credentials = match &decl.auth {
            Some(a) => Some(auth::load(a).map_err(|message| OriginError::Credentials {
                pack: ctx.pack.clone(),
                origin: ctx.origin.clone(),
                message,
            })?),
            None => None,
        };
        // Revalidate only what we could reuse on a 304.
        let mut previous = match &decl.sha256 {
            Some(_) => None,
            None => self.cache.read_index(raw_url).filter(|e| {
                self.cache.unpacked(&e.digest).is_some() || self.cache.blob(&e.digest).is_file()
            }),
        };
        // At most two rounds: a 304 whose cached copy turned out unusable is followed by
        // one unconditional request.
        loop {
            let outcome = http::download(
                self.clients()?,
                &self.cache,
                http::Request {
                    url: &url,
                    credentials: credentials.as_ref(),
                    previous: previous.as_ref(),
                    pack: &ctx.pack,
                    timeout: self.opts.timeout,
                    deadline: self.opts.download_deadline,
                    max_bytes: self.opts.max_download_bytes,
                },
            )
            .await
            .map_err(|e| ctx.http(e))?;
            let dl = match outcome {
                http::Outcome::Downloaded(dl) => dl,
                http::Outcome::NotModified => {
                    let Some(prev) = previous.take() else {
                        return Err(ctx.invalid(
                            "the server answered 304 Not Modified to an unconditional request",
                        ));
                    };
                    let tree = match self.cache.unpacked(&prev.digest) {
                        Some(tree) => Some(tree),
                        None => self.unpack_cached_blob(&ctx, &url, &prev.digest).await?,
                    };
                    let Some(tree) = tree else {
                        crate::warn!(
                            "pack `{}`: the cached copy of {} is gone; downloading it again",
                            ctx.pack,
                            ctx.origin
                        );
                        continue;
                    };
                    crate::info!(
                        "pack `{}`: {} not modified, using cached {}",
                        ctx.pack,
                        ctx.origin,
                        short(&prev.digest)
                    );
                    return self.found(&ctx, decl, &tree, &prev.digest, true);
                }
            };
            return self.store(&ctx, decl, &url, raw_url, dl).await;
        }
    }

    /// Verifies the pin, extracts (unless the tree exists), and records the download.
    async fn store(
        &self,
        ctx: &Ctx,
        decl: &PackDecl,
        url: &Url,
        raw_url: &str,
        dl: http::Download,
    ) -> Result<FetchedPack, OriginError> {
        if let Some(pin) = &decl.sha256 {
            if &dl.digest != pin {
                // Dropping `dl` deletes the temp file: nothing of it is kept.
                return Err(OriginError::Sha256Mismatch {
                    pack: ctx.pack.clone(),
                    origin: ctx.origin.clone(),
                    computed: dl.digest,
                    expected: pin.clone(),
                });
            }
        }
        let tree = match self.cache.unpacked(&dl.digest) {
            Some(tree) => tree,
            None => {
                self.unpack(ctx, url, dl.tmp.path().to_path_buf(), &dl.digest)
                    .await?
            }
        };
        self.cache
            .commit_blob(dl.tmp.path(), &dl.digest)
            .map_err(ctx.io("store the download in the cache"))?;
        let http::Download {
            tmp,
            digest,
            etag,
            last_modified,
        } = dl;
        tmp.keep();
        let entry = cache::IndexEntry {
            url: ctx.origin.clone(),
            etag,
            last_modified,
            digest: digest.clone(),
        };
        if let Err(e) = self.cache.write_index(raw_url, &entry) {
            // Only revalidation is lost; the next run downloads again.
            crate::warn!("pack `{}`: cannot update the cache index: {e}", ctx.pack);
        }
        self.found(ctx, decl, &tree, &digest, false)
    }

    /// Re-extracts a cached archive whose tree is missing, after checking its digest.
    /// `None` when there is no usable blob (a corrupt one is deleted).
    async fn unpack_cached_blob(
        &self,
        ctx: &Ctx,
        url: &Url,
        hex: &str,
    ) -> Result<Option<PathBuf>, OriginError> {
        let blob = self.cache.blob(hex);
        if !blob.is_file() {
            return Ok(None);
        }
        let check = blob.clone();
        let actual = tokio::task::spawn_blocking(move || digest::sha256_file(&check))
            .await
            .map_err(|e| ctx.invalid(format!("hashing task failed: {e}")))?;
        if actual.ok().as_deref() != Some(hex) {
            let _ = std::fs::remove_file(&blob);
            return Ok(None);
        }
        self.unpack(ctx, url, blob, hex).await.map(Some)
    }

    /// Extracts `archive` into a temp tree and renames it to `unpacked/<hex>`.
    async fn unpack(
        &self,
        ctx: &Ctx,
        url: &Url,
        archive: PathBuf,
        hex: &str,
    ) -> Result<PathBuf, OriginError> {
        let cache = self.cache.clone();
        let url_path = url.path().to_string();
        let hex_owned = hex.to_string();
        let limits = extract::Limits {
            max_bytes: self.opts.max_unpacked_bytes,
            max_entries: self.opts.max_entries,
        };
        let job = move || -> Result<PathBuf, UnpackError> {
            let head = read_head(&archive).map_err(UnpackError::Head)?;
            let format = extract::choose_format(&url_path, &head)
                .map_err(|m| UnpackError::Extract(extract::ExtractError::Format(m)))?;
            let tmp = cache.temp_unpack_dir().map_err(UnpackError::Temp)?;
            match extract::extract(&archive, format, &tmp, limits) {
                Ok(_) => cache
                    .commit_unpacked(&tmp, &hex_owned)
                    .map_err(UnpackError::Commit),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    Err(UnpackError::Extract(e))
                }
            }
        };
        let result = tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| ctx.invalid(format!("extraction task failed: {e}")))?;
        result.map_err(|e| match e {
            UnpackError::Head(source) => ctx.io("read the downloaded archive")(source),
            UnpackError::Temp(source) => ctx.io("create a temp directory in the cache")(source),
            UnpackError::Commit(source) => ctx.io("move the extracted pack into the cache")(source),
            UnpackError::Extract(e) => ctx.extract(e),
        })
    }

    /// Removes cache entries that none of `decls` can use any more (see
    /// `Cache::collect_garbage`). `used` are the digests fetched this run; pins and the
    /// last download of every declared URL are kept too, so a pack whose origin is down
    /// today still finds its pinned copy tomorrow.
    pub fn collect_garbage(
        &self,
        decls: &[PackDecl],
        used: &[String],
    ) -> std::io::Result<GcReport> {
        let mut keep = cache::Keep::default();
        keep.digests.extend(used.iter().cloned());
        for decl in decls {
            keep.digests.extend(decl.sha256.iter().cloned());
            if let Origin::Http(url) = &decl.origin {
                keep.urls.insert(url.clone());
            }
        }
        self.cache.collect_garbage(&keep, self.opts.cache_min_idle)
    }

    fn found(
        &self,
        ctx: &Ctx,
        decl: &PackDecl,
        tree: &Path,
        hex: &str,
        from_cache: bool,
    ) -> Result<FetchedPack, OriginError> {
        self.cache.touch(hex);
        let root = resolve::archive_root(tree).map_err(ctx.io("read the extracted pack"))?;
        let dir = resolve::pack_dir(&root, &decl.origin_name)
            .map_err(|e| ctx.resolve(e, &decl.origin_name))?;
        Ok(FetchedPack {
            dir,
            digest: Some(hex.to_string()),
            from_cache,
        })
    }
}

enum UnpackError {
    Head(std::io::Error),
    Temp(std::io::Error),
    Commit(std::io::Error),
    Extract(extract::ExtractError),
}

/// The first 512 bytes (or fewer), enough to recognise the format.
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(path)?
        .take(512)
        .read_to_end(&mut head)?;
    Ok(head)
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}
