//! ACLs on, end to end without a VM: PID 1's bootstrap flow against the Nomad test double
//! (and a real Nomad when NOMAD_BIN is set), then the pack applier as PID 1 runs it: with
//! the machine's token in its environment it applies; anonymous, Nomad refuses.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{DoubleConfig, Nomad, Workspace};
use nomad_init::nomad::{Settings, TokenSource};
use nomad_init::supervise::acl::{Flow, Outcome};
use serde_json::json;

fn flow(addr: &str, dir: &Path) -> Flow {
    let token_file = dir.join("data/nomados/nomad-token");
    let mut api = Settings::new(addr);
    api.token = TokenSource::File(token_file.clone());
    let console = dir.join("console");
    std::fs::write(&console, "").unwrap();
    Flow {
        api,
        acl_enabled: true,
        server: true,
        token_file,
        secret_file: dir.join("secrets/acl-bootstrap-secret"),
        console: Some(console),
    }
}

/// `nomad-init packs apply` as PID 1 starts it: Nomad's variables in the environment, the
/// token (when given) only in NOMAD_TOKEN.
fn apply(set: &Path, addr: &str, token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nomad-init"));
    cmd.args(["packs", "apply"])
        .arg(set)
        .args(["--cache-dir"])
        .arg(set.parent().unwrap().join(".cache"))
        .env("NOMAD_ADDR", addr)
        .env_remove("NOMAD_TOKEN");
    if let Some(t) = token {
        cmd.env("NOMAD_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn one_pack_set() -> (Workspace, PathBuf) {
    let ws = Workspace::new();
    ws.write("packs.toml", "[web]\n_origin = \"packs/web\"\n[web.web]\n");
    ws.system_pack("web");
    let set = ws.path("packs.toml");
    (ws, set)
}

/// What every Nomad (double or real) must show once ACLs are on.
fn check_bootstrap_then_apply(nomad: &Nomad) {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow(&nomad.addr, dir.path());

    let register = json!({"Job": {"ID": "intruder", "Name": "intruder", "Type": "batch",
        "Datacenters": ["dc1"], "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t",
        "Driver": "raw_exec", "Config": {"command": "/bin/true"}}]}]}});
    let refused = nomad.post("/v1/jobs", &register, None).unwrap_err();
    assert!(refused.contains("403"), "anonymous register: {refused}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rt.block_on(flow.attempt()) {
            Outcome::Settled => break,
            Outcome::Retry(why) if Instant::now() < deadline => {
                eprintln!("retrying the bootstrap: {why}");
                std::thread::sleep(Duration::from_millis(500));
            }
            other => panic!("bootstrap: {other:?}"),
        }
    }
    let token = std::fs::read_to_string(&flow.token_file).unwrap();
    let token = token.trim();
    let mode = std::fs::metadata(&flow.token_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "token file mode {mode:o}");
    let console = std::fs::read_to_string(flow.console.as_ref().unwrap()).unwrap();
    assert!(
        console.contains(token),
        "the token is shown on the console once"
    );

    let (_ws, set) = one_pack_set();
    let anonymous = apply(&set, &nomad.addr, None);
    assert!(
        !anonymous.status.success(),
        "an anonymous apply must fail: {}",
        common::text(&anonymous)
    );
    assert!(
        common::text(&anonymous).contains("403"),
        "{}",
        common::text(&anonymous)
    );
    let applied = apply(&set, &nomad.addr, Some(token));
    assert!(applied.status.success(), "{}", common::text(&applied));
    assert!(
        common::summary(&applied).ends_with(", 0 failed."),
        "{}",
        common::summary(&applied)
    );
    let out = common::text(&applied) + &common::text(&anonymous);
    assert!(!out.contains(token), "the applier printed the token");

    // The next boot: the token file is there, nothing is bootstrapped or shown again.
    std::fs::write(flow.console.as_ref().unwrap(), "").unwrap();
    assert!(matches!(rt.block_on(flow.attempt()), Outcome::Settled));
    assert_eq!(
        std::fs::read_to_string(&flow.token_file).unwrap().trim(),
        token
    );
    assert_eq!(
        std::fs::read_to_string(flow.console.as_ref().unwrap()).unwrap(),
        ""
    );
}

#[test]
fn with_the_double_anonymous_is_refused_and_the_bootstrapped_token_applies() {
    let nomad = Nomad::double(DoubleConfig {
        acl: true,
        // No preset management token: the double waits for a bootstrap, as Nomad does.
        token: String::new(),
        ..DoubleConfig::default()
    });
    check_bootstrap_then_apply(&nomad);
}

/// A real server + client agent with ACLs on and a data dir, so that a restart keeps its
/// state (`-dev` would forget the bootstrap).
struct RealAgent {
    child: std::process::Child,
    addr: String,
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_real(bin: &Path, dir: &Path) -> RealAgent {
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let cfg = dir.join("agent.hcl");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\nbind_addr = \"127.0.0.1\"\n\
             ports {{\n  http = {}\n  rpc = {}\n  serf = {}\n}}\n\
             server {{\n  enabled = true\n  bootstrap_expect = 1\n}}\n\
             client {{\n  enabled = true\n}}\nacl {{\n  enabled = true\n}}\n\
             plugin \"raw_exec\" {{\n  config {{\n    enabled = true\n  }}\n}}\n",
            dir.join("data").display(),
            ports[0],
            ports[1],
            ports[2]
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["agent", "-config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start NOMAD_BIN");
    let agent = RealAgent {
        child,
        addr: format!("http://127.0.0.1:{}", ports[0]),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let leader = status_and_body("GET", &format!("{}/v1/status/leader", agent.addr), None);
        if leader.is_some_and(|(s, l)| s == 200 && l.contains(':')) {
            return agent;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the real Nomad at {} elected no leader in 60 s", agent.addr);
}

#[test]
fn with_a_real_nomad_bootstrap_happens_once_and_survives_a_restart() {
    let Some(bin) = std::env::var_os("NOMAD_BIN").map(PathBuf::from) else {
        eprintln!(
            "SKIP with_a_real_nomad_bootstrap_happens_once_and_survives_a_restart: NOMAD_BIN \
             is not set (point it at a nomad binary to run this against a real agent)"
        );
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let nomad_dir = state.path().join("nomad");
    std::fs::create_dir_all(&nomad_dir).unwrap();
    let agent = start_real(&bin, &nomad_dir);
    let flow = flow(&agent.addr, state.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(rt.block_on(flow.attempt()), Outcome::Settled) {
        assert!(Instant::now() < deadline, "no bootstrap within 60 s");
        std::thread::sleep(Duration::from_millis(500));
    }
    let token = std::fs::read_to_string(&flow.token_file).unwrap();
    let mode = std::fs::metadata(&flow.token_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let anon = status_and_body("POST", &format!("{}/v1/jobs", agent.addr), None);
    assert_eq!(anon.map(|(s, _)| s), Some(403));
    let (_ws, set) = one_pack_set();
    let applied = apply(&set, &agent.addr, Some(token.trim()));
    assert!(applied.status.success(), "{}", common::text(&applied));
    drop(agent);

    // The reboot: same data dir, same token file: no second bootstrap, the token still works.
    let agent = start_real(&bin, &nomad_dir);
    let mut again = flow.clone();
    again.api.addr = agent.addr.clone();
    std::fs::write(again.console.as_ref().unwrap(), "").unwrap();
    assert!(matches!(rt.block_on(again.attempt()), Outcome::Settled));
    assert_eq!(std::fs::read_to_string(&again.token_file).unwrap(), token);
    assert_eq!(
        std::fs::read_to_string(again.console.as_ref().unwrap()).unwrap(),
        ""
    );
    let me = status_and_body(
        "GET",
        &format!("{}/v1/acl/token/self", agent.addr),
        Some(token.trim()),
    );
    assert_eq!(
        me.map(|(s, _)| s),
        Some(200),
        "the kept token works after the restart"
    );
    let bootstrap = status_and_body("POST", &format!("{}/v1/acl/bootstrap", agent.addr), None);
    assert_eq!(
        bootstrap.map(|(s, _)| s),
        Some(400),
        "Nomad is still bootstrapped"
    );
}

/// One plain HTTP/1.1 request (std only: the test does not use the code under test for it).
fn status_and_body(method: &str, url: &str, token: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let body = if method == "POST" { "{}" } else { "" };
    let auth = token
        .map(|t| format!("X-Nomad-Token: {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}
