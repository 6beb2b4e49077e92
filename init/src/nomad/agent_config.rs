//! How PID 1 reaches the agent it runs: the address and TLS come from the agent's own
//! config (`init.json`) unless `nomados.toml` says otherwise; the token from a file.

use std::path::Path;

use serde_json::Value;

use super::settings::{read_bounded, Settings, Tls, TokenSource};
use crate::boot::config::NomadConfig;

const AGENT_CONFIG_LIMIT: u64 = 1024 * 1024;

/// What the local agent's config says about its HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAgent {
    pub addr: String,
    pub tls: Tls,
    /// `acl.enabled`: requests need a token, and a server bootstraps the ACL system.
    pub acl_enabled: bool,
    /// `server.enabled`: this agent is a server (only a server can bootstrap ACLs).
    pub server: bool,
}

impl LocalAgent {
    /// The API address from the agent config: `addresses.http`, else `bind_addr`, with
    /// 0.0.0.0/:: (and go-sockaddr templates) meaning loopback; `ports.http` else 4646;
    /// `https` when `tls.http` is on, trusting the agent's own CA (and presenting its
    /// certificate when it verifies HTTPS clients). With `tls.verify_server_hostname` the
    /// certificate is checked for the name Nomad requires it to carry,
    /// `server.<region>.nomad` (`client.<region>.nomad` on a client-only agent), whatever
    /// the address; without it, for the address itself (e.g. an IP SAN `127.0.0.1`).
    pub fn from_config(config: &Value) -> Self {
        let host = config
            .pointer("/addresses/http")
            .or_else(|| config.get("bind_addr"))
            .and_then(Value::as_str)
            .unwrap_or("127.0.0.1");
        let host = match host {
            "" | "0.0.0.0" | "::" | "[::]" => "127.0.0.1".to_string(),
            h if h.contains("{{") => "127.0.0.1".to_string(),
            h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            h => h.to_string(),
        };
        let port = config
            .pointer("/ports/http")
            .and_then(Value::as_u64)
            .unwrap_or(4646);
        let tls_on = config.pointer("/tls/http").and_then(Value::as_bool) == Some(true);
        let file = |key: &str| {
            config
                .pointer(&format!("/tls/{key}"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(Into::into)
        };
        let enabled = |block: &str| {
            config
                .pointer(&format!("/{block}/enabled"))
                .and_then(Value::as_bool)
                == Some(true)
        };
        let mut tls = Tls::default();
        if tls_on {
            tls.ca_file = file("ca_file");
            if config
                .pointer("/tls/verify_server_hostname")
                .and_then(Value::as_bool)
                == Some(true)
            {
                let region = config
                    .get("region")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                    .unwrap_or("global");
                let role = if enabled("server") {
                    "server"
                } else {
                    "client"
                };
                tls.server_name = Some(format!("{role}.{region}.nomad"));
            }
            if config
                .pointer("/tls/verify_https_client")
                .and_then(Value::as_bool)
                == Some(true)
            {
                tls.client_cert = file("cert_file");
                tls.client_key = file("key_file");
            }
        }
        let scheme = if tls_on { "https" } else { "http" };
        Self {
            addr: format!("{scheme}://{host}:{port}"),
            tls,
            acl_enabled: enabled("acl"),
            server: enabled("server"),
        }
    }

    /// The merged view Nomad itself has when started with `-config=<base>` and then
    /// `-config=<dir>` for each of `dirs`: the base, then each directory's `*.json` files in
    /// lexical order, later keys winning, objects merged. HCL fragments are not read here
    /// (no HCL parser in PID 1): the machine-config child merges them into
    /// `agent-view.json`, which PID 1 reads instead (`crate::machine::hcl`).
    pub fn from_files(base: &Path, dirs: &[std::path::PathBuf]) -> Self {
        let mut merged = read_json(base).unwrap_or_else(|e| {
            crate::warn!(
                "cannot derive the Nomad API address from {}: {e}; using {}",
                base.display(),
                super::settings::DEFAULT_ADDR
            );
            Value::Null
        });
        for dir in dirs {
            for file in fragment_files(dir) {
                match read_json(&file) {
                    Ok(v) => merge(&mut merged, v),
                    Err(e) => crate::warn!("agent config fragment {}: {e}", file.display()),
                }
            }
        }
        Self::from_config(&merged)
    }

    /// Reads the agent config file; defaults (plain http on loopback) when unreadable.
    pub fn from_file(path: &Path) -> Self {
        let parsed = read_bounded(path, AGENT_CONFIG_LIMIT, "Nomad agent config")
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(v) => Self::from_config(&v),
            Err(e) => {
                crate::warn!(
                    "cannot derive the Nomad API address from {}: {e}; using {}",
                    path.display(),
                    super::settings::DEFAULT_ADDR
                );
                Self::from_config(&Value::Null)
            }
        }
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    read_bounded(path, AGENT_CONFIG_LIMIT, "Nomad agent config")
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
}

/// The `*.json` files of a fragment directory in lexical order (Nomad's order too).
fn fragment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    files.sort();
    files
}

/// Merges `over` into `base`: objects key by key, anything else replaced (Nomad's own
/// rule for later config files).
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

impl Settings {
    /// What PID 1 uses: `nomados.toml`'s `[nomad]` settings, each falling back to what
    /// the agent config says. The token file is read whenever a client is built.
    pub fn for_local_agent(config: &NomadConfig) -> Self {
        Self::for_local_agent_with_fragments(config, &[])
    }

    /// [`Self::for_local_agent`] for an agent also started with `-config=<dir>` for each of
    /// `fragment_dirs` (the machine configuration's fragments): their JSON is read too.
    pub fn for_local_agent_with_fragments(
        config: &NomadConfig,
        fragment_dirs: &[std::path::PathBuf],
    ) -> Self {
        let agent = LocalAgent::from_files(&config.config, fragment_dirs);
        let mut s = Settings::new(config.addr.clone().unwrap_or(agent.addr));
        if let Some(f) = &config.token_file {
            s.token = TokenSource::File(f.clone());
        }
        s.tls = Tls {
            ca_file: config.ca_file.clone().or(agent.tls.ca_file),
            client_cert: config.client_cert_file.clone().or(agent.tls.client_cert),
            client_key: config.client_key_file.clone().or(agent.tls.client_key),
            server_name: config.tls_server_name.clone().or(agent.tls.server_name),
            skip_verify: config.tls_skip_verify,
        };
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn addr(v: Value) -> String {
        LocalAgent::from_config(&v).addr
    }

    #[test]
    fn api_address_follows_the_agent_config() {
        let shipped: Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/init.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            LocalAgent::from_config(&shipped),
            LocalAgent {
                addr: "http://127.0.0.1:4646".into(),
                tls: Tls::default(),
                acl_enabled: true,
                server: true,
            }
        );
        assert!(!LocalAgent::from_config(&json!({"acl": {"enabled": false}})).acl_enabled);
        assert!(!LocalAgent::from_config(&json!({})).acl_enabled);
        assert_eq!(
            addr(json!({"bind_addr": "10.0.0.5", "ports": {"http": 5656}})),
            "http://10.0.0.5:5656"
        );
        assert_eq!(
            addr(json!({"bind_addr": "0.0.0.0", "addresses": {"http": "::1"}})),
            "http://[::1]:4646"
        );
        assert_eq!(
            addr(json!({"bind_addr": "{{ GetPrivateIP }}"})),
            "http://127.0.0.1:4646"
        );
        assert_eq!(addr(json!({})), "http://127.0.0.1:4646");
    }

    #[test]
    fn an_agent_with_tls_is_reached_over_https_with_its_own_ca() {
        let tls = json!({"tls": {"http": true, "ca_file": "/etc/nomad.d/ca.pem",
            "cert_file": "/etc/nomad.d/server.pem", "key_file": "/etc/nomad.d/server-key.pem"}});
        let a = LocalAgent::from_config(&tls);
        assert_eq!(a.addr, "https://127.0.0.1:4646");
        assert_eq!(
            a.tls.ca_file.as_deref(),
            Some(Path::new("/etc/nomad.d/ca.pem"))
        );
        assert_eq!(
            a.tls.client_cert, None,
            "no client certificate unless verified"
        );
        let mut strict = tls.clone();
        strict["tls"]["verify_https_client"] = json!(true);
        let a = LocalAgent::from_config(&strict);
        assert_eq!(
            a.tls.client_cert.as_deref(),
            Some(Path::new("/etc/nomad.d/server.pem"))
        );
        assert_eq!(
            a.tls.client_key.as_deref(),
            Some(Path::new("/etc/nomad.d/server-key.pem"))
        );
    }

    #[test]
    fn verify_server_hostname_checks_the_name_nomad_gives_its_agents() {
        let mut c = json!({"tls": {"http": true, "ca_file": "/ca.pem",
            "verify_server_hostname": true}, "server": {"enabled": true}});
        let name = |c: &Value| LocalAgent::from_config(c).tls.server_name;
        assert_eq!(name(&c).as_deref(), Some("server.global.nomad"));
        c["region"] = json!("eu");
        c["server"]["enabled"] = json!(false);
        assert_eq!(name(&c).as_deref(), Some("client.eu.nomad"));
        c["tls"]["verify_server_hostname"] = json!(false);
        assert_eq!(name(&c), None, "the address's own name then");
        c["tls"]["verify_server_hostname"] = json!(true);
        c["tls"]["http"] = json!(false);
        assert_eq!(name(&c), None, "plain http has no name to check");
    }

    #[test]
    fn fragments_are_merged_over_the_base_in_lexical_order() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("init.json");
        std::fs::write(
            &base,
            r#"{"bind_addr": "0.0.0.0", "ports": {"http": 4646}}"#,
        )
        .unwrap();
        let frags = dir.path().join("nomad.d");
        std::fs::create_dir(&frags).unwrap();
        std::fs::write(
            frags.join("10-nomados-machine.json"),
            r#"{"tls": {"http": true, "ca_file": "/run/nomados/secrets/tls/ca.pem"}, "ports": {"http": 1}}"#,
        )
        .unwrap();
        std::fs::write(frags.join("50-port.json"), r#"{"ports": {"http": 5000}}"#).unwrap();
        // Not read: HCL, and a broken JSON (warned about, skipped).
        std::fs::write(frags.join("60-x.hcl"), "ports { http = 6000 }").unwrap();
        std::fs::write(frags.join("70-bad.json"), "{").unwrap();
        let a = LocalAgent::from_files(&base, std::slice::from_ref(&frags));
        assert_eq!(a.addr, "https://127.0.0.1:5000");
        assert_eq!(
            a.tls.ca_file.as_deref(),
            Some(Path::new("/run/nomados/secrets/tls/ca.pem"))
        );
        assert_eq!(
            LocalAgent::from_files(&base, &[]).addr,
            "http://127.0.0.1:4646"
        );
        let c = NomadConfig {
            config: base,
            ..NomadConfig::default()
        };
        assert_eq!(
            Settings::for_local_agent_with_fragments(&c, &[frags]).addr,
            "https://127.0.0.1:5000"
        );
        assert_eq!(Settings::for_local_agent(&c).addr, "http://127.0.0.1:4646");
    }

    #[test]
    fn nomados_toml_overrides_the_agent_config() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("init.json");
        std::fs::write(
            &agent,
            r#"{"tls": {"http": true, "ca_file": "/agent-ca.pem"}}"#,
        )
        .unwrap();
        let mut c = NomadConfig {
            config: agent,
            ..NomadConfig::default()
        };
        let s = Settings::for_local_agent(&c);
        assert_eq!(s.addr, "https://127.0.0.1:4646");
        assert_eq!(s.tls.ca_file.as_deref(), Some(Path::new("/agent-ca.pem")));
        assert_eq!(
            s.token,
            TokenSource::File(crate::boot::config::NOMAD_TOKEN_FILE.into())
        );
        c.addr = Some("https://10.1.1.1:4646".into());
        c.ca_file = Some("/etc/nomados/ca.pem".into());
        c.token_file = Some("/etc/nomados/nomad-token".into());
        c.tls_server_name = Some("server.global.nomad".into());
        let s = Settings::for_local_agent(&c);
        assert_eq!(s.addr, "https://10.1.1.1:4646");
        assert_eq!(
            s.tls.ca_file.as_deref(),
            Some(Path::new("/etc/nomados/ca.pem"))
        );
        assert_eq!(s.tls.server_name.as_deref(), Some("server.global.nomad"));
        assert_eq!(
            s.token,
            TokenSource::File("/etc/nomados/nomad-token".into())
        );
    }
}
