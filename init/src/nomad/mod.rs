//! Client for the Nomad HTTP API. The base URL is passed in; every call names the
//! request in its error so a failure says which call failed and what Nomad answered
//! (Nomad's errors are plain text).

mod version;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

pub use version::Version;

/// Errors from one API call. The token never appears in them.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {path}: Nomad answered {status}: {body}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    /// `cause` is rendered whole (without its URL) in the message, and is not a `source`:
    /// chained error reports would print it twice.
    #[error("{method} {path}: {}", chain(.cause))]
    Transport {
        method: Method,
        path: String,
        cause: reqwest::Error,
    },
    #[error("{method} {path}: unexpected response: {message}")]
    Decode {
        method: Method,
        path: String,
        message: String,
    },
    #[error("invalid Nomad address `{0}`: expected http://host:port or https://host:port")]
    Address(String),
}

impl ApiError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The plain-text body Nomad answered with, if it answered with an error status.
    pub fn body(&self) -> Option<&str> {
        match self {
            ApiError::Status { body, .. } => Some(body),
            _ => None,
        }
    }

    /// True when Nomad refused a register because the job's modify index moved
    /// (another writer got there first).
    pub fn is_index_conflict(&self) -> bool {
        self.body()
            .is_some_and(|b| b.contains("Enforcing job modify index"))
    }
}

pub type Result<T> = std::result::Result<T, ApiError>;

/// `err` and its sources joined with `: `, skipping parts an outer message already holds.
fn chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// What the applier needs to know about the agent it talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub version: Version,
    pub datacenter: String,
    pub region: String,
    pub acl_enabled: bool,
}

/// Answer of a job registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResponse {
    #[serde(rename = "EvalID", default)]
    pub eval_id: String,
    #[serde(default)]
    pub job_modify_index: u64,
    #[serde(default)]
    pub warnings: String,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// `base` without credentials, for messages.
    shown: String,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.shown)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Percent-encodes one path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Client {
    pub fn new(addr: &str, token: Option<String>) -> Result<Self> {
        let base = addr.trim_end_matches('/').to_string();
        let shown = crate::packs::origin::redact::url(&base);
        // API paths are appended to the base: a query or fragment would swallow them.
        let has_suffix = url::Url::parse(&base)
            .map(|u| u.query().is_some() || u.fragment().is_some())
            .unwrap_or(true);
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || base.len() < 10
            || has_suffix
        {
            return Err(ApiError::Address(crate::packs::origin::redact::url(addr)));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|cause| ApiError::Transport {
                method: Method::GET,
                path: shown.clone(),
                cause: cause.without_url(),
            })?;
        Ok(Self {
            http,
            base,
            shown,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The address for messages: without credentials.
    pub fn address(&self) -> &str {
        &self.shown
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            req = req.header("X-Nomad-Token", token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let transport = |cause: reqwest::Error| ApiError::Transport {
            method: method.clone(),
            path: path.to_string(),
            cause: cause.without_url(),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        // A proxy or a careless server may echo the token back; it must not reach a message
        // (success bodies are data, e.g. a token's own SecretID, and are left alone).
        let mut secrets = crate::packs::origin::redact::Secrets::default();
        if let Some(token) = &self.token {
            secrets.token(token);
        }
        if !status.is_success() {
            return Err(ApiError::Status {
                method,
                path: path.to_string(),
                status,
                body: secrets.scrub(text.trim()),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ApiError::Decode {
            method,
            path: path.to_string(),
            message: format!("{e}: {}", truncate(&secrets.scrub(&text), 200)),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None).await
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

    pub async fn health(&self) -> Result<()> {
        self.get("/v1/agent/health").await.map(|_| ())
    }

    pub async fn agent_info(&self) -> Result<AgentInfo> {
        let path = "/v1/agent/self";
        let v = self.get(path).await?;
        let config = &v["config"];
        let raw_version = config["Version"]["Version"]
            .as_str()
            .or_else(|| v["member"]["Tags"]["build"].as_str())
            .unwrap_or_default();
        let version = Version::parse(raw_version).ok_or_else(|| ApiError::Decode {
            method: Method::GET,
            path: path.into(),
            message: format!("cannot read the agent's version from `{raw_version}`"),
        })?;
        Ok(AgentInfo {
            version,
            datacenter: config["Datacenter"].as_str().unwrap_or("dc1").to_string(),
            region: config["Region"].as_str().unwrap_or("global").to_string(),
            acl_enabled: config["ACL"]["Enabled"].as_bool().unwrap_or(false),
        })
    }

    /// Turns HCL into an API job with the agent's own parser.
    pub async fn parse_hcl(&self, hcl: &str) -> Result<Value> {
        self.post(
            "/v1/jobs/parse",
            &json!({ "JobHCL": hcl, "Canonicalize": true }),
        )
        .await
    }

    /// Lists job stubs across all namespaces. `meta` asks for each stub's Meta (Nomad
    /// 1.4+ honours it, older agents ignore it); `filter` is a bexpr (Nomad 1.3+).
    pub async fn list_jobs(&self, meta: bool, filter: Option<&str>) -> Result<Vec<Value>> {
        let mut path = String::from("/v1/jobs?namespace=*");
        if meta {
            path.push_str("&meta=true");
        }
        if let Some(f) = filter {
            path.push_str("&filter=");
            path.push_str(&encode(f));
        }
        match self.get(&path).await? {
            Value::Array(items) => Ok(items),
            other => Err(ApiError::Decode {
                method: Method::GET,
                path,
                message: format!("expected a list of jobs, got {}", kind(&other)),
            }),
        }
    }

    pub async fn read_job(&self, namespace: &str, id: &str) -> Result<Option<Value>> {
        self.get_optional(&format!(
            "/v1/job/{}?namespace={}",
            encode(id),
            encode(namespace)
        ))
        .await
    }

    /// Registers `job`. With `enforce_index`, Nomad refuses the write unless the job's
    /// modify index still equals it (0: the job must not exist), so concurrent appliers
    /// never overwrite each other's newer writes.
    pub async fn register(
        &self,
        job: &Value,
        enforce_index: Option<u64>,
        submission: Option<Value>,
    ) -> Result<RegisterResponse> {
        let mut body = json!({ "Job": job });
        if let Some(index) = enforce_index {
            body["EnforceIndex"] = json!(true);
            body["JobModifyIndex"] = json!(index);
        }
        if let Some(s) = submission {
            body["Submission"] = s;
        }
        let ns = job["Namespace"].as_str().unwrap_or("default");
        let path = format!("/v1/jobs?namespace={}", encode(ns));
        let v = self.post(&path, &body).await?;
        serde_json::from_value(v).map_err(|e| ApiError::Decode {
            method: Method::POST,
            path,
            message: e.to_string(),
        })
    }

    /// Nomad's own dry run of `job`, with its structured diff against what runs.
    pub async fn plan(&self, job: &Value) -> Result<Value> {
        let id = job["ID"].as_str().unwrap_or_default();
        let ns = job["Namespace"].as_str().unwrap_or("default");
        self.post(
            &format!("/v1/job/{}/plan?namespace={}", encode(id), encode(ns)),
            &json!({ "Job": job, "Diff": true }),
        )
        .await
    }

    pub async fn deregister_purge(&self, namespace: &str, id: &str) -> Result<()> {
        self.delete(&format!(
            "/v1/job/{}?purge=true&namespace={}",
            encode(id),
            encode(namespace)
        ))
        .await
        .map(|_| ())
    }

    pub async fn allocations(&self, namespace: &str, id: &str) -> Result<Vec<Value>> {
        let v = self
            .get(&format!(
                "/v1/job/{}/allocations?namespace={}",
                encode(id),
                encode(namespace)
            ))
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments_and_bexpr_filters() {
        assert_eq!(encode("web/api v2"), "web%2Fapi%20v2");
        assert_eq!(
            encode(r#"Meta["nomados.owner"] == "a""#),
            "Meta%5B%22nomados.owner%22%5D%20%3D%3D%20%22a%22"
        );
    }

    #[test]
    fn rejects_addresses_without_scheme() {
        assert!(matches!(
            Client::new("127.0.0.1:4646", None),
            Err(ApiError::Address(_))
        ));
        assert!(Client::new("http://127.0.0.1:4646/", None).is_ok());
    }

    #[test]
    fn debug_output_hides_the_token() {
        let c = Client::new("http://127.0.0.1:4646", Some("s3cr3t".into())).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
