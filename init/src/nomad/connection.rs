//! The HTTP connection to one Nomad agent: TLS, token header, default query parameters,
//! and the bounds (time and size) every request gets.

use std::net::ToSocketAddrs;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::error::{describe, ApiError, Result};
use super::settings::{read_pem, Settings};
use super::truncate;

/// Cap for small answers (health, agent self, one node).
pub const SMALL_BODY_LIMIT: usize = 1024 * 1024;
/// Cap for everything else: lists, jobs, plans with their diffs.
pub const LIST_BODY_LIMIT: usize = 8 * 1024 * 1024;
/// Error bodies are shown up to this many bytes.
const ERROR_BODY_SHOWN: usize = 2000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The address as configured, credentials redacted: what errors and logs show.
    base: String,
    /// Where requests go: `base`, its host replaced by the TLS server name when one is set.
    target: String,
    token: Option<HeaderValue>,
    /// The token's forms to scrub from error bodies (a proxy may echo it back).
    secrets: crate::redact::Secrets,
    namespace: Option<String>,
    region: Option<String>,
    timeout: Duration,
    https: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Client {
    /// Builds a client from `settings`, reading the token and TLS files now.
    pub fn new(settings: &Settings) -> Result<Self> {
        let current = settings.current();
        let settings = &current;
        let raw_base = settings.addr.trim_end_matches('/').to_string();
        let shown = || ApiError::Address(crate::redact::url(&settings.addr));
        let url = url::Url::parse(&raw_base).map_err(|_| shown())?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(shown()),
        };
        let Some(host) = url.host_str().map(str::to_string) else {
            return Err(shown());
        };
        // API paths are appended to the address: a query or fragment would swallow them.
        if url.query().is_some() || url.fragment().is_some() {
            return Err(shown());
        }
        let base = crate::redact::url(&raw_base)
            .trim_end_matches('/')
            .to_string();
        let mut secrets = crate::redact::Secrets::default();
        let token = match settings.resolve_token()? {
            Some(t) => {
                secrets.token(t.expose());
                let mut v = HeaderValue::from_str(t.expose()).map_err(|_| {
                    ApiError::Setup(
                        "the ACL token contains characters not allowed in an HTTP header".into(),
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(settings.request_timeout)
            .pool_max_idle_per_host(4)
            // Nomad does not redirect; following one could leave https or the agent.
            .redirect(reqwest::redirect::Policy::none());
        let mut target = raw_base.clone();
        if !https {
            // A plain-http client never makes a TLS connection (its address is fixed and it
            // follows no redirect), yet reqwest would parse the whole system CA bundle into
            // every one: about 150 certificates, tens of ms under TCG per client, and PID 1
            // builds one per health wait, ACL step and eligibility check.
            builder = builder.tls_built_in_root_certs(false);
        }
        if https {
            let tls = &settings.tls;
            if let Some(ca) = &tls.ca_file {
                let pem = read_pem(ca, "Nomad CA file")?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| ApiError::Setup(format!("Nomad CA file {}: {e}", ca.display())))?;
                // Only the given CAs, like Nomad's own -ca-cert.
                builder = builder.tls_built_in_root_certs(false);
                for c in certs {
                    builder = builder.add_root_certificate(c);
                }
            }
            match (&tls.client_cert, &tls.client_key) {
                (Some(cert), Some(key)) => {
                    let mut pem = read_pem(cert, "Nomad client certificate")?;
                    pem.push(b'\n');
                    pem.extend(read_pem(key, "Nomad client key")?);
                    let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                        ApiError::Setup(format!(
                            "Nomad client certificate {} with key {}: {e}",
                            cert.display(),
                            key.display()
                        ))
                    })?;
                    builder = builder.identity(identity);
                }
                (None, None) => {}
                _ => {
                    return Err(ApiError::Setup(
                        "a Nomad client certificate needs its key and the key its certificate \
                         (NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY)"
                            .into(),
                    ))
                }
            }
            if tls.skip_verify {
                builder = builder.danger_accept_invalid_certs(true);
            }
            if let Some(name) = tls.server_name.as_deref().filter(|n| *n != host) {
                // Verify the certificate against `name` but connect to the address: ask
                // for `name` and resolve it to the address's IPs ourselves.
                let port = url.port_or_known_default().unwrap_or(443);
                let addrs: Vec<_> = (host.trim_matches(['[', ']']), port)
                    .to_socket_addrs()
                    .map_err(|e| ApiError::Setup(format!("cannot resolve {host}: {e}")))?
                    .collect();
                builder = builder.resolve_to_addrs(name, &addrs);
                let mut u = url.clone();
                u.set_host(Some(name)).map_err(|e| {
                    ApiError::Setup(format!("invalid TLS server name {name:?}: {e}"))
                })?;
                target = u.as_str().trim_end_matches('/').to_string();
            }
        }
        let http = builder.build().map_err(|e| {
            ApiError::Setup(format!("cannot set up the HTTP client for {base}: {e}"))
        })?;
        Ok(Self {
            http,
            base,
            target,
            secrets,
            token,
            namespace: settings.namespace.clone().filter(|n| !n.is_empty()),
            region: settings.region.clone().filter(|r| !r.is_empty()),
            timeout: settings.request_timeout,
            https,
        })
    }

    /// The address as configured, e.g. `https://127.0.0.1:4646`, credentials redacted.
    pub fn address(&self) -> &str {
        &self.base
    }

    /// `path` with the default namespace and region added where it names none.
    fn path_with_defaults(&self, path: &str) -> String {
        let mut out = path.to_string();
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let has = |key: &str| query.split('&').any(|kv| kv.split('=').next() == Some(key));
        for (key, value) in [("namespace", &self.namespace), ("region", &self.region)] {
            if let Some(v) = value {
                if !has(key) {
                    out.push(if out.contains('?') { '&' } else { '?' });
                    out.push_str(&format!("{key}={}", super::encode(v)));
                }
            }
        }
        out
    }

    /// One request; the answer is read up to `limit` bytes and decoded as JSON (an empty
    /// answer is `null`).
    pub async fn call_limited(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        limit: usize,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let full = self.path_with_defaults(path);
        let mut req = self
            .http
            .request(method.clone(), format!("{}{full}", self.target));
        if let Some(token) = &self.token {
            req = req.header("X-Nomad-Token", token.clone());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let timeout = timeout.unwrap_or(self.timeout);
        req = req.timeout(timeout);
        let transport = |e: reqwest::Error| {
            let (message, tls) = describe(&e, timeout, self.https);
            ApiError::Transport {
                method: method.clone(),
                url: format!("{}{path}", self.base),
                message,
                tls,
            }
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = read_body(resp, limit).await.map_err(|e| match e {
            BodyError::TooLarge => ApiError::TooLarge {
                method: method.clone(),
                path: path.to_string(),
                limit,
            },
            BodyError::Transport(e) => transport(e),
        })?;
        let text = String::from_utf8_lossy(&bytes);
        if !status.is_success() {
            return Err(ApiError::Status {
                method,
                path: path.to_string(),
                status,
                body: truncate(&self.secrets.scrub(text.trim()), ERROR_BODY_SHOWN),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ApiError::Decode {
            method,
            path: path.to_string(),
            message: format!("{e}: {}", truncate(&self.secrets.scrub(&text), 200)),
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        self.call_limited(method, path, body, LIST_BODY_LIMIT, None)
            .await
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// `GET path` for an endpoint that answers a JSON list of `what` (bounded like every
    /// list); anything else is a decode error naming the path.
    pub async fn get_list(&self, path: String, what: &str) -> Result<Vec<Value>> {
        match self.get(&path).await? {
            Value::Array(items) => Ok(items),
            other => Err(ApiError::Decode {
                method: Method::GET,
                path,
                message: format!("expected a list of {what}, got {}", super::kind(&other)),
            }),
        }
    }

    /// GET that maps 404 to `None`.
    pub async fn get_optional(&self, path: &str) -> Result<Option<Value>> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.call(Method::DELETE, path, None).await
    }
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads the body chunk by chunk, giving up as soon as it passes `limit`.
async fn read_body(
    mut resp: reqwest::Response,
    limit: usize,
) -> std::result::Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if out.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_addresses_without_scheme() {
        for bad in ["127.0.0.1:4646", "ftp://x:1", "http://"] {
            assert!(
                matches!(Client::new(&Settings::new(bad)), Err(ApiError::Address(_))),
                "{bad}"
            );
        }
        assert!(Client::new(&Settings::new("http://127.0.0.1:4646/")).is_ok());
        assert!(Client::new(&Settings::new("https://[::1]:4646")).is_ok());
    }

    #[test]
    fn debug_output_hides_the_token() {
        let s = Settings::new("http://127.0.0.1:4646").with_token(Some("s3cr3t".into()));
        let c = Client::new(&s).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn default_namespace_and_region_go_where_the_path_names_none() {
        let mut s = Settings::new("http://127.0.0.1:4646");
        s.namespace = Some("prod".into());
        s.region = Some("eu west".into());
        let c = Client::new(&s).unwrap();
        assert_eq!(
            c.path_with_defaults("/v1/jobs"),
            "/v1/jobs?namespace=prod&region=eu%20west"
        );
        assert_eq!(
            c.path_with_defaults("/v1/jobs?namespace=*&meta=true"),
            "/v1/jobs?namespace=*&meta=true&region=eu%20west"
        );
        let plain = Client::new(&Settings::new("http://127.0.0.1:4646")).unwrap();
        assert_eq!(plain.path_with_defaults("/v1/jobs"), "/v1/jobs");
    }

    #[test]
    fn half_a_client_identity_or_a_missing_ca_is_a_setup_error_naming_the_file() {
        let mut s = Settings::new("https://127.0.0.1:4646");
        s.tls.client_cert = Some("/nonexistent/cert.pem".into());
        let e = Client::new(&s).unwrap_err().to_string();
        assert!(e.contains("needs its key"), "{e}");
        let mut s = Settings::new("https://127.0.0.1:4646");
        s.tls.ca_file = Some("/nonexistent/ca.pem".into());
        let e = Client::new(&s).unwrap_err().to_string();
        assert!(e.starts_with("Nomad CA file /nonexistent/ca.pem: "), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        s.tls.ca_file = Some(ca.clone());
        let e = Client::new(&s).unwrap_err().to_string();
        assert!(e.contains("not PEM"), "{e}");
    }
}
