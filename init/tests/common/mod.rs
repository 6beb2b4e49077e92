//! Test harness for the applier: a Nomad to talk to (the in-process test double, or a
//! real `nomad agent -dev` when NOMAD_BIN is set), pack sets written into temp dirs,
//! and the real `nomad-init` binary run as a process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A Nomad API to test against; stopped on drop.
pub struct Nomad {
    pub addr: String,
    kind: Kind,
}

enum Kind {
    Double(
        std::sync::mpsc::Sender<()>,
        Option<std::thread::JoinHandle<()>>,
    ),
    Real(Child, tempfile::TempDir),
}

impl Drop for Nomad {
    fn drop(&mut self) {
        match &mut self.kind {
            Kind::Double(stop, thread) => {
                let _ = stop.send(());
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
            Kind::Real(child, _) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Knobs of the double for one test.
#[derive(Clone)]
pub struct DoubleConfig {
    pub version: String,
    pub acl: bool,
    pub token: String,
    /// Namespaces besides `default`.
    pub namespaces: Vec<String>,
    /// Serve https with these files (the address is then `https://`).
    pub tls: Option<nomad_double::TlsFiles>,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        Self {
            version: "1.7.7".into(),
            acl: false,
            token: "management-token".into(),
            namespaces: Vec::new(),
            tls: None,
        }
    }
}

impl Nomad {
    /// Starts the in-process test double on a free loopback port.
    pub fn double(cfg: DoubleConfig) -> Self {
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let config = nomad_double::AgentConfig {
                    acl_enabled: cfg.acl,
                    raw_exec_enabled: true,
                    ..nomad_double::AgentConfig::default()
                };
                let mut opts = nomad_double::Options::new(config);
                opts.version = nomad_double::Version::parse(&cfg.version).expect("version");
                opts.alloc_delay = Duration::from_millis(50);
                opts.management_token = cfg.acl.then_some(cfg.token);
                opts.namespaces.extend(cfg.namespaces);
                opts.tls = cfg.tls;
                let stop = async move {
                    let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                };
                let server = tokio::spawn(nomad_double::serve_with_shutdown(listener, opts, stop));
                let _ = server.await;
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            addr: format!("{scheme}://{addr}"),
            kind: Kind::Double(stop_tx, Some(thread)),
        }
    }

    /// Starts `$NOMAD_BIN agent -dev` on free loopback ports, or None (with a printed
    /// reason) when NOMAD_BIN is not set.
    pub fn real(test: &str) -> Option<Self> {
        let Some(bin) = std::env::var_os("NOMAD_BIN") else {
            eprintln!("skipping {test} against a real Nomad: NOMAD_BIN is not set");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let cfg = dir.path().join("agent.hcl");
        std::fs::write(
            &cfg,
            format!(
                "bind_addr = \"127.0.0.1\"\nports {{\n  http = {}\n  rpc = {}\n  serf = {}\n}}\n\
                 plugin \"raw_exec\" {{\n  config {{\n    enabled = true\n  }}\n}}\n",
                ports[0], ports[1], ports[2]
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .args(["agent", "-dev", "-config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start NOMAD_BIN");
        let nomad = Self {
            addr: format!("http://127.0.0.1:{}", ports[0]),
            kind: Kind::Real(child, dir),
        };
        nomad.wait_healthy(Duration::from_secs(60));
        Some(nomad)
    }

    pub fn is_double(&self) -> bool {
        matches!(self.kind, Kind::Double(..))
    }

    fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(v) = self.get("/v1/agent/health") {
                if v["client"]["ok"] == true || v["server"]["ok"] == true {
                    // A dev agent needs its node registered before system jobs place.
                    if self
                        .get("/v1/nodes")
                        .map(|n| n.as_array().is_some_and(|a| !a.is_empty()))
                        .unwrap_or(false)
                    {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("Nomad at {} did not become healthy", self.addr);
    }

    pub fn get(&self, path: &str) -> Result<Value, String> {
        http("GET", &format!("{}{path}", self.addr), None, None)
    }

    pub fn get_with_token(&self, path: &str, token: &str) -> Result<Value, String> {
        http("GET", &format!("{}{path}", self.addr), None, Some(token))
    }

    pub fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Result<Value, String> {
        http("POST", &format!("{}{path}", self.addr), Some(body), token)
    }

    /// Write requests the double has served so far.
    pub fn writes(&self) -> u64 {
        self.get("/v1/double/stats").unwrap()["writes"]
            .as_u64()
            .unwrap()
    }

    /// JobModifyIndex of every job, to prove a no-op wrote nothing on a real Nomad too.
    pub fn job_indexes(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .get("/v1/jobs?namespace=*")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["ID"].as_str().unwrap().to_string(),
                    j["JobModifyIndex"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }

    pub fn job_ids(&self) -> Vec<String> {
        self.job_indexes().into_iter().map(|(id, _)| id).collect()
    }
}

/// Minimal blocking HTTP over std (tests must not depend on the code under test).
fn http(
    method: &str,
    url: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Result<Value, String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("only http")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        payload.len()
    );
    if body.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        req.push_str(&format!("X-Nomad-Token: {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("bad response")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    if !(200..300).contains(&status) {
        return Err(format!("{status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pack set on disk: `set.toml` plus pack directories beside it.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    pub fn remove(&self, rel: &str) {
        let p = self.path(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }

    /// A pack with one system raw_exec job whose ID is the declared job's name.
    pub fn system_pack(&self, name: &str) -> &Self {
        self.write(&format!("packs/{name}/jobs/main.hcl"), SYSTEM_JOB)
    }
}

/// A system job template: ID from `jobname`, a message from the `message` variable.
pub const SYSTEM_JOB: &str = r#"job "{{ jobname }}" {
  datacenters = {{ datacenters | json_encode() }}
  type = "system"
  group "g" {
    task "t" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args = ["-c", "echo {{ message | default(value='hello') }}; sleep 3600"]
      }
    }
  }
}
"#;

/// Runs `nomad-init packs <cmd> <set> --nomad-addr <addr> [extra...]`.
pub fn packs(cmd: &str, set: &Path, nomad: &Nomad, extra: &[&str]) -> Output {
    let cache = set.parent().unwrap().join(".cache");
    Command::new(env!("CARGO_BIN_EXE_nomad-init"))
        .args(["packs", cmd])
        .arg(set)
        .args(["--nomad-addr", &nomad.addr, "--cache-dir"])
        .arg(cache)
        .args(extra)
        .env_remove("NOMAD_TOKEN")
        .env_remove("NOMAD_ADDR")
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The last line of the output: the apply summary.
pub fn summary(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}
