//! HTTP(S) downloads: a redirect policy that keeps credentials on their origin, conditional
//! requests, and streaming into a hashed temp file in the cache.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::header::{
    CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION,
};
use reqwest::{redirect, Client, StatusCode, Url};

use super::auth::Credentials;
use super::cache::{Cache, IndexEntry};
use super::digest::HashingWriter;
use crate::redact;

const MAX_REDIRECTS: usize = 10;
/// How often a long download reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Characters of an error body quoted in the message.
const BODY_EXCERPT_CHARS: usize = 200;
/// Bytes of an error body read at most (it may be large; only the start is shown).
const BODY_READ_LIMIT: usize = 4096;

/// Whether a redirect from the first URL of a request to `next` may be followed.
/// Never from https to http; with credentials attached, only to the same origin
/// (scheme, host and port), so the `Authorization` header cannot travel elsewhere.
pub fn redirect_allowed(original: &Url, next: &Url, credentials: bool) -> Result<(), String> {
    // reqwest would hand back the 302 itself, reported as a plain HTTP error.
    if !matches!(next.scheme(), "http" | "https") {
        return Err(format!(
            "redirect to {} refused: only http:// and https:// redirects are followed",
            redact::url_parsed(next)
        ));
    }
    if original.scheme() == "https" && next.scheme() != "https" {
        return Err(format!(
            "redirect from https to {} refused",
            redact::url_parsed(next)
        ));
    }
    let same_origin = original.scheme() == next.scheme()
        && original.host_str() == next.host_str()
        && original.port_or_known_default() == next.port_or_known_default();
    if credentials && !same_origin {
        return Err(format!(
            "redirect to another origin ({}) refused because credentials are attached",
            redact::url_parsed(next)
        ));
    }
    Ok(())
}

fn policy(credentials: bool) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let verdict = match attempt.previous().first() {
            Some(first) => redirect_allowed(first, attempt.url(), credentials),
            None => Ok(()),
        };
        match verdict {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(why),
        }
    })
}

/// One client for anonymous requests, one whose redirects stay on the origin.
#[derive(Debug, Clone)]
pub struct Clients {
    plain: Client,
    authed: Client,
}

impl Clients {
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let build = |credentials: bool| {
            Client::builder()
                .connect_timeout(timeout)
                .read_timeout(timeout)
                .redirect(policy(credentials))
                .user_agent(concat!("nomados-init/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Ok(Self {
            plain: build(false)?,
            authed: build(true)?,
        })
    }
}

#[derive(Debug)]
pub enum HttpFailure {
    /// Could not connect, timed out, refused redirect, broken stream.
    Request(String),
    /// A status that is neither 2xx nor 304, with the start of a text body.
    Status { status: u16, body: Option<String> },
    Io {
        action: String,
        source: std::io::Error,
    },
}

/// A completed download, still in its temp file (removed on drop unless kept).
#[derive(Debug)]
pub struct Download {
    pub tmp: TempFile,
    pub digest: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Debug)]
pub enum Outcome {
    NotModified,
    Downloaded(Download),
}

/// A temp file that is deleted when dropped, so errors and cancellation leave nothing.
#[derive(Debug)]
pub struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Gives up ownership (after the file was renamed into place).
    pub fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Renders a reqwest error without its URL (which may hold credentials).
fn describe(err: reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("timed out (limit {}s)", timeout.as_secs());
    }
    let err = err.without_url();
    if err.is_connect() {
        // The innermost cause says it best ("Connection refused", a DNS failure).
        let mut inner: &dyn std::error::Error = &err;
        while let Some(s) = inner.source() {
            inner = s;
        }
        return format!("cannot connect: {inner}");
    }
    redact::with_causes(err.to_string(), &err)
}

pub struct Request<'a> {
    pub url: &'a Url,
    pub credentials: Option<&'a Credentials>,
    /// What was stored last time, for `If-None-Match` / `If-Modified-Since`.
    pub previous: Option<&'a IndexEntry>,
    /// Pack key, for log lines.
    pub pack: &'a str,
    /// Longest pause between bytes (and connect timeout).
    pub timeout: Duration,
    /// The whole download, headers and body, must finish within this.
    pub deadline: Duration,
    /// Bytes the body may have.
    pub max_bytes: u64,
}

/// Sends the (conditional) GET and streams a 200 body into a temp file in the cache,
/// within `req.deadline` and `req.max_bytes`. On any failure the temp file is removed.
pub async fn download(
    clients: &Clients,
    cache: &Cache,
    req: Request<'_>,
) -> Result<Outcome, HttpFailure> {
    let deadline = req.deadline;
    match tokio::time::timeout(deadline, request_and_stream(clients, cache, req)).await {
        Ok(result) => result,
        // Dropping the download future dropped its temp file: nothing is left in the cache.
        Err(_) => Err(HttpFailure::Request(format!(
            "did not finish within the overall limit of {}s",
            deadline.as_secs()
        ))),
    }
}

async fn request_and_stream(
    clients: &Clients,
    cache: &Cache,
    req: Request<'_>,
) -> Result<Outcome, HttpFailure> {
    let shown = redact::url_parsed(req.url);
    // Everything a server could echo back: the token, or basic auth in both forms;
    // `user:password@` in the URL is sent as basic auth by reqwest.
    let mut secrets = redact::Secrets::default();
    match req.credentials {
        Some(Credentials::Bearer(token)) => secrets.token(token.expose()),
        Some(Credentials::Basic { username, password }) => {
            secrets.basic(username, password.expose())
        }
        None => &mut secrets,
    };
    if let Some(password) = req.url.password() {
        secrets.basic(req.url.username(), password);
        secrets.basic(req.url.username(), &percent_decode(password));
    }
    let has_userinfo = !req.url.username().is_empty() || req.url.password().is_some();
    let has_credentials = req.credentials.is_some() || has_userinfo;
    let client = if has_credentials {
        &clients.authed
    } else {
        &clients.plain
    };
    let mut builder = client.get(req.url.clone());
    match req.credentials {
        Some(Credentials::Bearer(token)) => builder = builder.bearer_auth(token.expose()),
        Some(Credentials::Basic { username, password }) => {
            builder = builder.basic_auth(username, Some(password.expose()))
        }
        None => {}
    }
    if let Some(prev) = req.previous {
        if let Some(etag) = &prev.etag {
            builder = builder.header(IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &prev.last_modified {
            builder = builder.header(IF_MODIFIED_SINCE, lm);
        }
    }
    let scrub = |text: String| secrets.scrub(&text);
    let mut resp = builder
        .send()
        .await
        .map_err(|e| HttpFailure::Request(scrub(describe(e, req.timeout))))?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Outcome::NotModified);
    }
    if status.is_redirection() {
        // A redirect reqwest did not follow: one to another scheme (file://, ftp://).
        let next = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| resp.url().join(l).ok());
        let why = match next {
            Some(next) => redirect_allowed(req.url, &next, has_credentials)
                .err()
                .unwrap_or_else(|| {
                    format!("redirect to {} not followed", redact::url_parsed(&next))
                }),
            None => format!("HTTP {status} without a usable Location header"),
        };
        return Err(HttpFailure::Request(scrub(why)));
    }
    if !status.is_success() {
        let body = error_body(&mut resp).await.map(scrub);
        return Err(HttpFailure::Status {
            status: status.as_u16(),
            body,
        });
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header(ETAG);
    let last_modified = header(LAST_MODIFIED);
    let total = resp.content_length();
    let too_big = || {
        HttpFailure::Request(format!(
            "the archive is larger than the limit of {} bytes",
            req.max_bytes
        ))
    };
    if total.is_some_and(|t| t > req.max_bytes) {
        return Err(too_big());
    }

    let (path, file) = cache.temp_blob().map_err(|source| HttpFailure::Io {
        action: "create a temp file in the cache".into(),
        source,
    })?;
    let tmp = TempFile { path: Some(path) };
    let mut out = HashingWriter::new(file);
    let started = Instant::now();
    let mut last_report = started;
    crate::info!(
        "pack `{}`: downloading {shown}{}",
        req.pack,
        total
            .map(|t| format!(" ({})", human(t)))
            .unwrap_or_default()
    );
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(|e| HttpFailure::Request(scrub(describe(e, req.timeout))))?;
        let Some(chunk) = chunk else { break };
        if out.written() + chunk.len() as u64 > req.max_bytes {
            return Err(too_big());
        }
        out.write_all(&chunk).map_err(|source| HttpFailure::Io {
            action: "write the download to the cache".into(),
            source,
        })?;
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            crate::info!(
                "pack `{}`: {shown}: {}{} after {:.0}s",
                req.pack,
                human(out.written()),
                total
                    .map(|t| format!(" of {}", human(t)))
                    .unwrap_or_default(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let size = out.written();
    let (file, digest) = out.finish();
    file.sync_all().map_err(|source| HttpFailure::Io {
        action: "flush the download to disk".into(),
        source,
    })?;
    crate::info!(
        "pack `{}`: downloaded {shown}: {} in {:.1}s, sha256 {digest}",
        req.pack,
        human(size),
        started.elapsed().as_secs_f64()
    );
    Ok(Outcome::Downloaded(Download {
        tmp,
        digest,
        etag,
        last_modified,
    }))
}

/// A URL's percent-encoded userinfo as the server receives it after decoding.
fn percent_decode(s: &str) -> String {
    let query = format!("p={}", s.replace('+', "%2B"));
    url::form_urlencoded::parse(query.as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The first ~200 characters of a textual error body, whitespace collapsed.
async fn error_body(resp: &mut reqwest::Response) -> Option<String> {
    let textual = match resp.headers().get(CONTENT_TYPE) {
        None => true,
        Some(ct) => {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            ct.starts_with("text/") || ct.contains("json") || ct.contains("xml")
        }
    };
    if !textual {
        return None;
    }
    let mut raw = Vec::new();
    while raw.len() < BODY_READ_LIMIT {
        match resp.chunk().await {
            Ok(Some(c)) => raw.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut excerpt: String = collapsed.chars().take(BODY_EXCERPT_CHARS).collect();
    if collapsed.chars().count() > BODY_EXCERPT_CHARS {
        excerpt.push('…');
    }
    (!excerpt.is_empty()).then_some(excerpt)
}

/// Bytes in a short human form (`1.5 MiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn redirects_without_credentials_may_change_host() {
        assert!(redirect_allowed(&u("https://a/x"), &u("https://b/y"), false).is_ok());
        assert!(redirect_allowed(&u("http://a/x"), &u("https://b/y"), false).is_ok());
    }

    #[test]
    fn redirects_only_to_http_and_https() {
        let err = redirect_allowed(&u("http://a/x"), &u("file:///etc/passwd"), false).unwrap_err();
        assert_eq!(
            err,
            "redirect to file:///etc/passwd refused: only http:// and https:// redirects are followed"
        );
    }

    #[test]
    fn never_downgrade_https() {
        let err = redirect_allowed(&u("https://a/x"), &u("http://a/x"), false).unwrap_err();
        assert!(err.contains("https"), "{err}");
    }

    #[test]
    fn credentials_stay_on_origin() {
        assert!(redirect_allowed(&u("https://a/x"), &u("https://a:443/y"), true).is_ok());
        for other in ["https://b/x", "https://a:8443/x", "http://a/x"] {
            assert!(
                redirect_allowed(&u("https://a/x"), &u(other), true).is_err(),
                "{other}"
            );
        }
        let err = redirect_allowed(&u("http://a/x"), &u("http://u:pw@b/x"), true).unwrap_err();
        assert!(
            err.contains("another origin") && !err.contains("pw"),
            "{err}"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 * 1024 * 1024), "5.0 MiB");
    }
}
