//! TLS as PID 1 follows it: the real `nomad-init` as PID 1 of fresh PID + mount + UTS +
//! network namespaces (test mode, as in `acl_pid1.rs`), the Nomad API test double as its
//! Nomad, serving HTTPS from the agent config's `tls` block (`http`, `verify_https_client`,
//! `verify_server_hostname`) with certificates made here, ACLs on. PID 1 must reach it over
//! https with the agent's CA, its certificate as client certificate and the name
//! `server.global.nomad` (the certificate has no IP address): health, the ACL bootstrap, the
//! pack applier child, the drain at power-off. While the applier child runs (held on its
//! pack download, served by this test inside the namespace), every `/proc/<pid>/cmdline`
//! of the namespace is read: the token is in none of them. A wrong CA is an error naming
//! the address, and nothing falls back to http. Needs root; skips otherwise.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose};
use sha2::{Digest, Sha256};

#[macro_use]
mod pid1ns;
mod pki;
use pid1ns::{
    double_agent, double_script, log_lines, namespace_members, write_script, Console, TIMEOUT,
};

/// A CA, the node's certificate it signed (`server.global.nomad` and `localhost`, for
/// server and client authentication, as `nomad tls cert create -server` makes them), and
/// an unrelated CA.
struct Pki {
    dir: tempfile::TempDir,
    key_pem: String,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).unwrap();
        let ca = pki::Ca::new("NomadOS test CA");
        write("ca.pem", &ca.pem());
        write("wrong-ca.pem", &pki::Ca::new("someone else's CA").pem());
        let mut p = CertificateParams::new(vec![
            "server.global.nomad".to_string(),
            "localhost".to_string(),
        ])
        .unwrap();
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (cert, key_pem) = ca.sign(p);
        write("cert.pem", &cert);
        write("key.pem", &key_pem);
        Self { dir, key_pem }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The lines of the private key's body: none may reach the console.
    fn key_lines(&self) -> Vec<&str> {
        self.key_pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
            .collect()
    }
}

/// One boot: the files it needs under a temp dir, and its console.
struct Boot {
    console: Console,
    dir: tempfile::TempDir,
}

impl Boot {
    /// Writes the agent config (TLS on with `pki`'s files), `nomados.toml` (with `extra`
    /// in its `[nomad]` table) and the pack set `packs`, and returns the command that boots.
    fn prepare(pki: &Pki, extra: &str, packs: &str, new_net: bool) -> (Command, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc/nomados")).unwrap();
        let d = dir.path().display();
        write_script(&dir.path().join("nomad"), &double_script());
        let mut agent = double_agent(dir.path());
        agent["acl"] = serde_json::json!({"enabled": true});
        agent["plugin"] = serde_json::json!({"raw_exec": {"config": {"enabled": true}}});
        agent["tls"] = serde_json::json!({
            "http": true, "rpc": true,
            "ca_file": pki.path("ca.pem"),
            "cert_file": pki.path("cert.pem"),
            "key_file": pki.path("key.pem"),
            "verify_server_hostname": true,
            "verify_https_client": true,
        });
        std::fs::write(dir.path().join("agent.json"), agent.to_string()).unwrap();
        std::fs::write(dir.path().join("packs.toml"), packs).unwrap();
        std::fs::write(
            root.join("etc/nomados/nomados.toml"),
            format!(
                "hostname = \"ns-tls\"\n\
                 [nomad]\nbinary = \"{d}/nomad\"\nconfig = \"{d}/agent.json\"\n\
                 token_file = \"{d}/nomad-token\"\nstop_timeout_secs = 5\ndrain_timeout_secs = 5\n\
                 {extra}\n\
                 [packs]\nset = \"{d}/packs.toml\"\ncache_dir = \"{d}/root/var/cache\"\n\
                 interval_secs = 0\n\
                 [data]\nmount_point = \"{d}/root/var/lib/nomad\"\n"
            ),
        )
        .unwrap();
        (pid1ns::init_command(&root, dir.path(), new_net), dir)
    }
}

/// `packs/hello` as a tar archive (holding `hello/`), and its SHA-256.
fn hello_archive() -> (Vec<u8>, String) {
    let packs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packs");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&packs)
        .args(["-cf", "-", "hello"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {out:?}");
    let sum = hex::encode(Sha256::digest(&out.stdout));
    (out.stdout, sum)
}

/// Runs `f` on a thread moved into a fresh network namespace (loopback up): what it
/// binds and spawns lives there.
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET moves only this thread into a new network
        // namespace; nothing else of the process changes.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success(), "ip link set lo up: {up}");
        f()
    })
    .join()
    .unwrap()
}

/// Accepts one connection on `listener`, waiting at most [`TIMEOUT`].
fn accept(listener: &TcpListener) -> std::net::TcpStream {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    start.elapsed() < TIMEOUT,
                    "the applier never asked for its pack"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads a request's head (up to the blank line, at most 16 KiB).
fn read_request_head(s: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if s.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn pid1_and_the_applier_child_talk_https_with_the_agents_tls_and_the_token_is_in_no_argv() {
    skip_unless_namespaces!();
    let pki = Pki::new();
    let (archive, sum) = hello_archive();
    // The namespace is fresh: any port is free in it.
    let port = 8080;
    let packs = format!(
        "[hello]\n_origin = \"http://127.0.0.1:{port}/hello.tar\"\n_sha256 = \"{sum}\"\n\
         [hello.hello]\ninterval = 60\n"
    );
    let (mut cmd, dir) = Boot::prepare(&pki, "", &packs, false);
    cmd.env("NOMAD_DOUBLE_ALLOC_DELAY_MS", "0");
    // The pack server and the boot share a network namespace: the applier's download comes
    // to this test, which holds it while it looks at every process of the namespace.
    let (listener, unshare) = in_new_netns(move || {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        (listener, cmd.spawn().unwrap())
    });
    let mut boot = Boot {
        console: Console::new(unshare),
        dir,
    };
    boot.console
        .wait_for("nomad API healthy at https://127.0.0.1:4646");
    boot.console
        .wait_for("nomad ACLs bootstrapped: management token accessor");

    let mut conn = accept(&listener);
    let head = read_request_head(&mut conn);
    assert!(head.starts_with("GET /hello.tar "), "{head}");
    let token_file = boot.dir.path().join("nomad-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(!token.is_empty());
    let init = boot.console.init_pid();
    let mut applier = None;
    for pid in namespace_members(init) {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue; // ended meanwhile
        };
        let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !shown.contains(&token),
            "the token is on the command line of pid {pid}: {shown}"
        );
        if shown.contains("packs apply") {
            applier = Some(pid);
        }
    }
    // The applier is running (held on its download) and does carry the token: in its
    // environment, which only root and its owner can read.
    let applier = applier.expect("the applier child is running while its download is held");
    let environ = std::fs::read(format!("/proc/{applier}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ
            .split('\0')
            .any(|kv| kv == format!("NOMAD_TOKEN={token}")),
        "the applier was not given the token"
    );
    assert!(
        environ
            .split('\0')
            .any(|kv| kv == "NOMAD_TLS_SERVER_NAME=server.global.nomad"),
        "the applier was not given the TLS server name"
    );
    conn.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            archive.len()
        )
        .as_bytes(),
    )
    .unwrap();
    conn.write_all(&archive).unwrap();
    drop(conn);

    let applied = boot.console.wait_for("packs: Apply: ");
    assert!(
        applied.contains("1 created") && applied.contains(", 0 failed"),
        "{applied}"
    );
    let lines = boot.console.power_off();
    // The drain at power-off reached Nomad over https with the token (anonymous would be
    // refused, plain http would not be answered).
    assert!(
        lines
            .iter()
            .any(|l| l.contains("not draining: no other node could take")
                || l.contains("drained node")),
        "no drain over https with the token:\n{}",
        lines.join("\n")
    );
    for l in pki.key_lines() {
        assert!(
            !lines.iter().any(|c| c.contains(l)),
            "key material on the console"
        );
    }
    assert!(!lines.iter().any(|l| l.contains("PRIVATE KEY")));
    assert!(
        !log_lines(&lines).iter().any(|l| l.contains(&token)),
        "the token reached the log"
    );
    assert!(
        !lines.iter().any(|l| l.contains("http://127.0.0.1:4646")),
        "something used plain http:\n{}",
        lines.join("\n")
    );
}

#[test]
fn a_wrong_ca_is_an_error_naming_the_address_and_nothing_falls_back_to_http() {
    skip_unless_namespaces!();
    let pki = Pki::new();
    let extra = format!("ca_file = \"{}\"", pki.path("wrong-ca.pem").display());
    let (mut cmd, dir) = Boot::prepare(&pki, &extra, "[hello]\n_origin = \"/nonexistent\"\n", true);
    let mut boot = Boot {
        console: Console::new(cmd.spawn().unwrap()),
        dir,
    };
    let said = boot
        .console
        .wait_for("the nomad API cannot be reached over TLS: ");
    assert!(
        said.contains("GET https://127.0.0.1:4646/v1/agent/health: "),
        "{said}"
    );
    assert!(said.contains("certificate"), "{said}");
    // The agent did start (over https): PID 1 only cannot trust it.
    let lines = boot.console.power_off();
    assert!(lines.iter().any(|l| l.contains("TLS: HTTPS")));
    assert!(
        !lines.iter().any(|l| l.contains("nomad API healthy")),
        "healthy with a wrong CA:\n{}",
        lines.join("\n")
    );
    assert!(
        !lines.iter().any(|l| l.contains("http://127.0.0.1:4646")),
        "fell back to plain http:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("cannot be reached over TLS"))
            .count(),
        1,
        "said once per start of nomad"
    );
}
