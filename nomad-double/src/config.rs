//! Agent configuration: the subset of Nomad's agent config the double honours.
//!
//! Files are JSON or HCL, merged in command-line order like Nomad does. Unknown keys are
//! ignored (Nomad has hundreds; the double only needs the ones that change its behaviour).

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// The checked agent configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub bind_addr: String,
    /// `addresses.http`, falling back to `bind_addr`.
    pub http_addr: Option<String>,
    pub http_port: u16,
    pub datacenter: String,
    pub region: String,
    pub name: String,
    pub data_dir: String,
    pub acl_enabled: bool,
    pub client_enabled: bool,
    pub server_enabled: bool,
    pub dev: bool,
    /// `raw_exec` is off by default in Nomad; on in `-dev`, or via client options / plugin config.
    pub raw_exec_enabled: bool,
    /// The `tls` block's HTTP part (Nomad's `tls.http`, `ca_file`, `cert_file`, `key_file`,
    /// `verify_https_client`); checked into [`crate::TlsFiles`] by [`AgentConfig::https`].
    pub tls: TlsBlock,
    pub files: Vec<String>,
    /// `ports.rpc` (4647) and `ports.serf` (4648): where the peer handshake listens.
    pub rpc_port: u16,
    pub serf_port: u16,
    /// `server.bootstrap_expect`: servers seen before a leader is reported.
    pub bootstrap_expect: Option<u64>,
    /// `server.server_join.retry_join` (and the older `server.retry_join`).
    pub server_join: Vec<String>,
    /// `client.servers` and `client.server_join.retry_join`.
    pub client_servers: Vec<String>,
    /// `client.meta`, merged key by key across files.
    pub client_meta: std::collections::BTreeMap<String, String>,
}

/// What the `tls` block says about the HTTP API. Nomad's RPC keys (`rpc`,
/// `verify_server_hostname`) are ignored: the double has no RPC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsBlock {
    pub http: bool,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub verify_https_client: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            bind_addr: "0.0.0.0".into(),
            http_addr: None,
            http_port: 4646,
            datacenter: "dc1".into(),
            region: "global".into(),
            name: default_hostname(),
            data_dir: String::new(),
            acl_enabled: false,
            client_enabled: false,
            server_enabled: false,
            dev: false,
            raw_exec_enabled: false,
            tls: TlsBlock::default(),
            files: Vec::new(),
            rpc_port: 4647,
            serf_port: 4648,
            bootstrap_expect: None,
            server_join: Vec::new(),
            client_servers: Vec::new(),
            client_meta: Default::default(),
        }
    }
}

fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "nomad-double".into())
}

impl AgentConfig {
    /// What `nomad agent -dev` starts with: loopback, client + server, raw_exec on.
    pub fn dev() -> Self {
        AgentConfig {
            bind_addr: "127.0.0.1".into(),
            client_enabled: true,
            server_enabled: true,
            dev: true,
            raw_exec_enabled: true,
            ..AgentConfig::default()
        }
    }

    /// The address the HTTP API listens on.
    pub fn http_listen(&self) -> String {
        let host = self.http_addr.as_deref().unwrap_or(&self.bind_addr);
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.http_port)
        } else {
            format!("{host}:{}", self.http_port)
        }
    }

    /// The address other agents would be told to use (never 0.0.0.0).
    pub fn advertise_host(&self) -> String {
        let host = self.http_addr.as_deref().unwrap_or(&self.bind_addr);
        if host == "0.0.0.0" || host == "::" {
            "127.0.0.1".into()
        } else {
            host.to_string()
        }
    }

    /// The files to serve https with when `tls.http` is on, as Nomad checks them: a
    /// certificate and its key are required, and `verify_https_client` needs the CA the
    /// client certificates must be signed by.
    pub fn https(&self) -> Result<Option<crate::TlsFiles>> {
        let t = &self.tls;
        if !t.http {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
            bail!("tls.http is enabled but tls.cert_file or tls.key_file is not set");
        };
        let client_ca = match (&t.ca_file, t.verify_https_client) {
            (Some(ca), true) => Some(ca.into()),
            (None, true) => bail!("tls.verify_https_client needs tls.ca_file"),
            (_, false) => None,
        };
        Ok(Some(crate::TlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca,
        }))
    }

    /// Like Nomad's `-config`: a file, or a directory whose `*.hcl` and `*.json` files are
    /// loaded in name order. Returns the files loaded.
    pub fn load_path(&mut self, path: &Path) -> Result<Vec<std::path::PathBuf>> {
        if !path.is_dir() {
            self.load_file(path)?;
            return Ok(vec![path.to_path_buf()]);
        }
        let mut files: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("failed to read config directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "hcl" || e == "json"))
            .collect();
        files.sort();
        for f in &files {
            self.load_file(f)?;
        }
        Ok(files)
    }

    /// Reads and merges one config file into `self`.
    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read config file {}", path.display()))?;
        let value = parse_config_text(&text, path)?;
        self.merge(&value)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        self.files.push(path.display().to_string());
        Ok(())
    }

    /// Applies the keys the double understands; everything else is ignored.
    pub fn merge(&mut self, v: &Value) -> Result<()> {
        let v = normalize(v);
        let Some(top) = v.as_object() else {
            bail!("config root must be an object");
        };
        if let Some(s) = str_key(top, "bind_addr")? {
            self.bind_addr = s;
        }
        if let Some(s) = str_key(top, "datacenter")? {
            self.datacenter = s;
        }
        if let Some(s) = str_key(top, "region")? {
            self.region = s;
        }
        if let Some(s) = str_key(top, "name")? {
            self.name = s;
        }
        if let Some(s) = str_key(top, "data_dir")? {
            self.data_dir = s;
        }
        if let Some(a) = top.get("addresses").and_then(Value::as_object) {
            if let Some(s) = str_key(a, "http")? {
                self.http_addr = Some(s);
            }
        }
        if let Some(p) = top.get("ports").and_then(Value::as_object) {
            for (key, field) in [
                ("http", &mut self.http_port),
                ("rpc", &mut self.rpc_port),
                ("serf", &mut self.serf_port),
            ] {
                if let Some(port) = p.get(key) {
                    let n = match port {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => s.parse().ok(),
                        _ => None,
                    };
                    *field = n
                        .and_then(|n| u16::try_from(n).ok())
                        .with_context(|| format!("ports.{key}: not a port number: {port}"))?;
                }
            }
        }
        self.merge_joins(top)?;
        for (block, field) in [
            ("acl", &mut self.acl_enabled),
            ("client", &mut self.client_enabled),
            ("server", &mut self.server_enabled),
        ] {
            if let Some(b) = top.get(block).and_then(Value::as_object) {
                if let Some(e) = bool_key(b, "enabled", block)? {
                    *field = e;
                }
            }
        }
        if let Some(t) = top.get("tls").and_then(Value::as_object) {
            self.merge_tls(t)?;
        }
        if let Some(opts) = top
            .get("client")
            .and_then(|c| c.get("options"))
            .and_then(Value::as_object)
        {
            if let Some(v) = opts.get("driver.raw_exec.enable") {
                self.raw_exec_enabled = truthy(v);
            }
        }
        if let Some(en) = top
            .get("plugin")
            .and_then(|p| p.get("raw_exec"))
            .and_then(|p| p.get("config"))
            .and_then(|c| c.get("enabled"))
        {
            self.raw_exec_enabled = truthy(en);
        }
        Ok(())
    }
}

impl AgentConfig {
    fn merge_tls(&mut self, t: &Map<String, Value>) -> Result<()> {
        let tls = &mut self.tls;
        for (key, field) in [
            ("http", &mut tls.http),
            ("verify_https_client", &mut tls.verify_https_client),
        ] {
            if let Some(b) = bool_key(t, key, "tls")? {
                *field = b;
            }
        }
        for (key, field) in [
            ("ca_file", &mut tls.ca_file),
            ("cert_file", &mut tls.cert_file),
            ("key_file", &mut tls.key_file),
        ] {
            if let Some(s) = str_key(t, key).with_context(|| format!("tls.{key}"))? {
                *field = Some(s).filter(|s| !s.is_empty());
            }
        }
        Ok(())
    }

    /// `server.bootstrap_expect`, `server.server_join.retry_join`, `server.retry_join`,
    /// `client.servers`, `client.server_join.retry_join`: a later file's list replaces.
    fn merge_joins(&mut self, top: &Map<String, Value>) -> Result<()> {
        let at = |path: &[&str]| {
            path.iter()
                .try_fold(Value::Object(top.clone()), |v, k| v.get(k).cloned())
        };
        if let Some(n) = at(&["server", "bootstrap_expect"]) {
            let be = n
                .as_u64()
                .or_else(|| n.as_str().and_then(|s| s.parse().ok()));
            self.bootstrap_expect =
                Some(be.with_context(|| format!("server.bootstrap_expect: not a number: {n}"))?);
        }
        let list = |path: &[&str]| -> Result<Option<Vec<String>>> {
            let Some(v) = at(path) else { return Ok(None) };
            let items = v.as_array().map(|a| {
                a.iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            });
            items.flatten().map(Some).with_context(|| {
                format!("{}: expected a list of strings, found {v}", path.join("."))
            })
        };
        for path in [
            &["server", "retry_join"][..],
            &["server", "server_join", "retry_join"],
        ] {
            if let Some(l) = list(path)? {
                self.server_join = l;
            }
        }
        let mut client = Vec::new();
        for path in [
            &["client", "servers"][..],
            &["client", "server_join", "retry_join"],
        ] {
            client.extend(list(path)?.unwrap_or_default());
        }
        if !client.is_empty() {
            self.client_servers = client;
        }
        if let Some(Value::Object(meta)) = at(&["client", "meta"]) {
            for (k, v) in meta {
                let v = v
                    .as_str()
                    .with_context(|| format!("client.meta.{k}: expected a string, found {v}"))?;
                self.client_meta.insert(k, v.to_string());
            }
        }
        Ok(())
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.as_str(), "1" | "true" | "True" | "TRUE" | "t"),
        Value::Number(n) => n.as_i64() == Some(1),
        _ => false,
    }
}

fn str_key(m: &Map<String, Value>, k: &str) -> Result<Option<String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => bail!("{k}: expected a string, found {other}"),
    }
}

fn bool_key(m: &Map<String, Value>, k: &str, block: &str) -> Result<Option<bool>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(other) => bail!("{block}.{k}: expected a boolean, found {other}"),
    }
}

/// Nomad's JSON config allows blocks as `[{...}]` lists; fold those into plain objects.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            let mut merged = Map::new();
            for item in items {
                if let Value::Object(m) = normalize(item) {
                    merged.extend(m);
                }
            }
            Value::Object(merged)
        }
        other => other.clone(),
    }
}

/// Parses JSON (by extension or a leading `{`) or HCL into a JSON value.
pub fn parse_config_text(text: &str, path: &Path) -> Result<Value> {
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    if is_json {
        serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))
    } else {
        hcl::from_str::<Value>(text).map_err(|e| match &e {
            hcl::Error::Parse(p) => anyhow::anyhow!(
                "{}:{}:{}: {}",
                path.display(),
                p.location().line(),
                p.location().column(),
                p.message()
            ),
            _ => anyhow::anyhow!("{}: {e}", path.display()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_config_sets_known_keys_and_ignores_others() {
        let v = parse_config_text(
            r#"
            bind_addr = "127.0.0.2"
            datacenter = "edge"
            ports { http = 5656 }
            acl { enabled = true }
            client {
              enabled = true
              options = { "driver.raw_exec.enable" = "1" }
            }
            telemetry { whatever = 1 }
            "#,
            Path::new("a.hcl"),
        )
        .unwrap();
        let mut c = AgentConfig::default();
        c.merge(&v).unwrap();
        assert_eq!(c.http_listen(), "127.0.0.2:5656");
        assert_eq!(c.datacenter, "edge");
        assert!(c.acl_enabled && c.client_enabled && c.raw_exec_enabled);
        assert!(!c.server_enabled);
        assert_eq!(c.region, "global");
    }

    #[test]
    fn client_meta_merges_across_files() {
        let mut c = AgentConfig::default();
        c.merge(&serde_json::json!({"client": {"meta": {"a": "1", "b": "2"}}}))
            .unwrap();
        c.merge(&serde_json::json!({"client": [{"meta": [{"b": "3"}]}]}))
            .unwrap();
        assert_eq!(c.client_meta.get("a").map(String::as_str), Some("1"));
        assert_eq!(c.client_meta.get("b").map(String::as_str), Some("3"));
        let err = c
            .merge(&serde_json::json!({"client": {"meta": {"n": 1}}}))
            .unwrap_err();
        assert!(err.to_string().contains("client.meta.n"), "{err}");
    }

    #[test]
    fn json_config_accepts_block_lists_and_addresses() {
        let v = parse_config_text(
            r#"{"addresses": [{"http": "127.0.0.3"}], "server": [{"enabled": true}],
                "plugin": [{"raw_exec": [{"config": [{"enabled": true}]}]}]}"#,
            Path::new("init.json"),
        )
        .unwrap();
        let mut c = AgentConfig::default();
        c.merge(&v).unwrap();
        assert_eq!(c.http_listen(), "127.0.0.3:4646");
        assert!(c.server_enabled && c.raw_exec_enabled);
    }

    #[test]
    fn config_directories_load_in_name_order() {
        let dir = std::env::temp_dir().join(format!("nd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("10-base.hcl"),
            "datacenter = \"a\"\nregion = \"r\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("20-over.json"), r#"{"datacenter": "b"}"#).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let mut c = AgentConfig::default();
        let loaded = c.load_path(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!((c.datacenter.as_str(), c.region.as_str()), ("b", "r"));
    }

    #[test]
    fn the_tls_block_says_whether_and_how_https_is_served() {
        let v = parse_config_text(
            r#"
            tls {
              http = true
              rpc = true
              ca_file = "/s/ca.pem"
              cert_file = "/s/cert.pem"
              key_file = "/s/key.pem"
              verify_server_hostname = true
            }
            "#,
            Path::new("tls.hcl"),
        )
        .unwrap();
        let mut c = AgentConfig::default();
        assert_eq!(c.https().unwrap(), None);
        c.merge(&v).unwrap();
        let files = c.https().unwrap().unwrap();
        assert_eq!(
            (files.cert.to_str(), files.key.to_str(), files.client_ca),
            (Some("/s/cert.pem"), Some("/s/key.pem"), None)
        );
        c.merge(&serde_json::json!({"tls": [{"verify_https_client": true}]}))
            .unwrap();
        let files = c.https().unwrap().unwrap();
        assert_eq!(files.client_ca.as_deref(), Some(Path::new("/s/ca.pem")));
        // A later file turns it off again, like Nomad's merge.
        c.merge(&serde_json::json!({"tls": {"http": false}}))
            .unwrap();
        assert_eq!(c.https().unwrap(), None);
    }

    #[test]
    fn joins_bootstrap_expect_and_client_meta() {
        let mut c = AgentConfig::default();
        c.merge(&serde_json::json!({
            "ports": {"rpc": 5647, "serf": "5648"},
            "server": {"bootstrap_expect": 3, "server_join": {"retry_join": ["10.0.0.11", "10.0.0.12:4648"]}},
            "client": {"servers": ["a:4647"], "server_join": [{"retry_join": ["b"]}], "meta": {"rack": "r1"}}
        }))
        .unwrap();
        c.merge(&serde_json::json!({"client": {"meta": {"zone": "z"}}}))
            .unwrap();
        assert_eq!(
            (c.rpc_port, c.serf_port, c.bootstrap_expect),
            (5647, 5648, Some(3))
        );
        assert_eq!(c.server_join, ["10.0.0.11", "10.0.0.12:4648"]);
        assert_eq!(c.client_servers, ["a:4647", "b"]);
        assert_eq!(c.client_meta.len(), 2);
        let e = c
            .merge(&serde_json::json!({"server": {"server_join": {"retry_join": "x"}}}))
            .unwrap_err();
        assert!(
            e.to_string().contains("server.server_join.retry_join"),
            "{e}"
        );
    }

    #[test]
    fn tls_without_its_files_is_an_error_naming_the_key() {
        let mut c = AgentConfig::default();
        c.merge(&serde_json::json!({"tls": {"http": true, "cert_file": "/c.pem"}}))
            .unwrap();
        let e = c.https().unwrap_err().to_string();
        assert!(e.contains("tls.key_file"), "{e}");
        c.merge(&serde_json::json!({"tls": {"key_file": "/k.pem", "verify_https_client": true}}))
            .unwrap();
        let e = c.https().unwrap_err().to_string();
        assert!(e.contains("tls.ca_file"), "{e}");
        let e = c
            .merge(&serde_json::json!({"tls": {"http": "yes"}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.http"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = AgentConfig::default();
        let err = c
            .merge(&serde_json::json!({"ports": {"http": "x"}}))
            .unwrap_err();
        assert!(err.to_string().contains("ports.http"), "{err}");
        let err = parse_config_text("a = ", Path::new("x.hcl")).unwrap_err();
        assert!(err.to_string().starts_with("x.hcl:1:"), "{err}");
    }
}
