//! A hostile or careless pack, origin or flag cannot hurt the machine the applier runs on
//! (as root): the real `nomad-init packs ...` binary against the Nomad test double, with
//! archives served by a real HTTP server on 127.0.0.1. Every run has a deadline and an
//! address-space limit, so a regression fails the test instead of hanging or exhausting
//! the machine.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{text, DoubleConfig, Nomad, Workspace};

// ---------------------------------------------------------------------------------------
// An origin server with a few hostile behaviours, on its own thread and runtime.

#[derive(Clone)]
enum Route {
    Archive(Vec<u8>),
    /// Zeros as fast as the client reads (stops after 64 MiB so that a regression
    /// cannot fill the disk of the machine running the tests).
    Flood,
    /// One byte per second, for a minute.
    Trickle,
    /// 500 whose body repeats the request's Authorization header.
    EchoAuth,
    /// 302 to this location.
    Redirect(String),
    /// 403 whose body repeats the request's X-Nomad-Token (a careless proxy before Nomad).
    EchoNomadToken,
}

struct Origin {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Origin {
    fn start(routes: Vec<(&str, Route)>) -> Self {
        let routes: std::collections::HashMap<String, Route> = routes
            .into_iter()
            .map(|(p, r)| (p.to_string(), r))
            .collect();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().fallback(move |req: Request| {
                    let route = routes.get(req.uri().path()).cloned();
                    async move { answer(route, req) }
                });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            addr,
            _stop: stop_tx,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn answer(route: Option<Route>, req: Request) -> Response {
    match route {
        None => (StatusCode::NOT_FOUND, "no such archive").into_response(),
        Some(Route::Archive(body)) => Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(body))
            .unwrap(),
        Some(Route::Flood) => {
            let chunks = (0..1024).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 65536])));
            Body::from_stream(futures::stream::iter(chunks)).into_response()
        }
        Some(Route::Trickle) => {
            let stream = futures::stream::unfold(0u32, |n| async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                (n < 60).then(|| (Ok::<_, std::io::Error>(Bytes::from_static(b"x")), n + 1))
            });
            Body::from_stream(stream).into_response()
        }
        Some(Route::EchoAuth) => {
            let auth = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot handle Authorization: {auth}"),
            )
                .into_response()
        }
        Some(Route::EchoNomadToken) => {
            let token = req
                .headers()
                .get("x-nomad-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (StatusCode::FORBIDDEN, format!("token {token} not allowed")).into_response()
        }
        Some(Route::Redirect(to)) => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, to)
            .body(Body::empty())
            .unwrap(),
    }
}

// ---------------------------------------------------------------------------------------
// Archives with raw headers, so that hostile entries can be written.

enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (kind, name, link, data): (_, &str, &str, &[u8]) = match e {
            E::File(n, d) => (tar::EntryType::Regular, n, "", d),
            E::Dir(n) => (tar::EntryType::Directory, n, "", b""),
            E::Symlink(n, t) => (tar::EntryType::Symlink, n, t, b""),
        };
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A system job that puts `file(path="files/passwd")` in its meta.
const LEAKING_JOB: &str = r#"job "{{ jobname }}" {
  datacenters = {{ datacenters | json_encode() }}
  type = "system"
  meta {
    leak = {{ file(path="files/passwd") | hcl_encode }}
  }
  group "g" {
    task "t" {
      driver = "raw_exec"
      config {
        command = "/bin/true"
      }
    }
  }
}
"#;

/// A secret on the host, outside every pack.
const HOST_SECRET: &str = "HOST-SECRET-4b1d-not-for-packs";

/// The `x/up -> ..`, `x/e1 -> up/..`, ... chain: each link stays inside when read alone;
/// followed, `x/e<levels>` is `levels` directories above the pack, i.e. `/` from any
/// temp directory. `files/passwd` then names `secret` through it.
fn chain(levels: usize, secret: &Path) -> Vec<(String, String)> {
    let mut links = vec![("x/up".to_string(), "..".to_string())];
    links.push(("x/e1".into(), "up/..".into()));
    for i in 2..=levels {
        links.push((format!("x/e{i}"), format!("e{}/..", i - 1)));
    }
    let rel = secret.strip_prefix("/").unwrap().display();
    links.push(("files/passwd".into(), format!("../x/e{levels}/{rel}")));
    links
}

// ---------------------------------------------------------------------------------------
// Running the CLI with a deadline and a memory limit.

/// Runs `nomad-init packs <cmd> <set> --nomad-addr <addr> [extra...]` under a 2 GiB
/// address-space limit, killed after `limit`. Returns the output and whether it was killed.
fn packs_bounded(
    cmd: &str,
    set: &Path,
    nomad_addr: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Output, bool) {
    let cache = set.parent().unwrap().join(".cache");
    let mut command = Command::new("prlimit");
    command
        .arg("--as=2147483648")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_nomad-init"))
        .args(["packs", cmd])
        .arg(set)
        .args(["--nomad-addr", nomad_addr, "--cache-dir"])
        .arg(cache)
        .args(extra)
        .env_remove("NOMAD_TOKEN")
        .env_remove("NOMAD_ADDR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run prlimit (util-linux)");
    let started = Instant::now();
    let mut killed = false;
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().unwrap(), killed)
}

fn set_with(ws: &Workspace, origin: &str, extra_keys: &str) -> std::path::PathBuf {
    ws.write(
        "set.toml",
        &format!("_name = \"hostile\"\n\n[p]\n_origin = \"{origin}\"\n{extra_keys}[p.leaky]\n"),
    );
    ws.path("set.toml")
}

const QUICK: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// 1. Symlink chains.

#[test]
fn a_symlink_chain_in_an_archive_cannot_read_host_files() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.write("host-secret.txt", HOST_SECRET);
    let secret = ws.path("host-secret.txt");
    let links = chain(24, &secret);
    let mut entries = vec![
        E::Dir("jobs/"),
        E::File("jobs/leaky.hcl", LEAKING_JOB.as_bytes()),
        E::Dir("x/"),
        E::Dir("files/"),
    ];
    entries.extend(links.iter().map(|(n, t)| E::Symlink(n, t)));
    let origin = Origin::start(vec![("/p.tar.gz", Route::Archive(gz(&tar_of(&entries))))]);
    let set = set_with(&ws, &origin.url("/p.tar.gz"), "");
    let (out, killed) = packs_bounded("render", &set, &nomad.addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert!(!t.contains(HOST_SECRET), "host file leaked: {t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("refused: entry `files/passwd` is a symlink that leads outside the archive through other symlinks"),
        "{t}"
    );
    let unpacked = ws.path(".cache/unpacked");
    let left: Vec<_> = std::fs::read_dir(&unpacked)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing of the archive is kept: {left:?}");
}

#[test]
fn a_symlink_chain_in_a_local_pack_cannot_read_host_files() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.write("host-secret.txt", HOST_SECRET);
    ws.write("packs/p/jobs/leaky.hcl", LEAKING_JOB);
    std::fs::create_dir_all(ws.path("packs/p/x")).unwrap();
    std::fs::create_dir_all(ws.path("packs/p/files")).unwrap();
    for (name, target) in chain(24, &ws.path("host-secret.txt")) {
        std::os::unix::fs::symlink(target, ws.path(&format!("packs/p/{name}"))).unwrap();
    }
    let set = set_with(&ws, "packs", "");
    let (out, killed) = packs_bounded("render", &set, &nomad.addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert!(!t.contains(HOST_SECRET), "host file leaked: {t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("! pack `p` failed: pack `p`, files/passwd: leads outside the pack"),
        "{t}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Only regular files of bounded size are read.

#[test]
fn a_fifo_in_a_pack_is_refused_without_blocking() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.system_pack("p");
    std::fs::create_dir_all(ws.path("packs/p/files")).unwrap();
    nix::unistd::mkfifo(
        &ws.path("packs/p/files/pipe"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    let set = set_with(&ws, "packs", "");
    let (out, killed) = packs_bounded("validate", &set, &nomad.addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "reading a FIFO must not block: {t}");
    assert!(
        t.contains(
            "pack `p`, files/pipe: is a FIFO; a pack holds only regular files and directories"
        ),
        "{t}"
    );
}

#[test]
fn a_template_that_renders_too_much_fails_alone() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.system_pack("good");
    // 5 MiB of rendered text from a small template (a range of 5 million numbers would
    // itself take more than the render process's memory limit).
    ws.write(
        "packs/big/jobs/main.hcl",
        &format!(
            "{{% for i in range(end=5120) %}}{}{{% endfor %}}",
            "x".repeat(1024)
        ),
    );
    ws.write(
        "set.toml",
        "[good]\n_origin = \"packs\"\n[good.good]\n[big]\n_origin = \"packs\"\n[big.big]\n",
    );
    let (out, killed) = packs_bounded("apply", &ws.path("set.toml"), &nomad.addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("pack `big`, jobs/main.hcl: rendered to 5242880 bytes, more than the limit of 4194304 bytes"),
        "{t}"
    );
    assert_eq!(nomad.job_ids(), ["good"], "{t}");
}

/// Templates that abort or run away inside Tera, each the only job of its own pack:
/// (pack, file, template, what the failure must say).
const RUNAWAY_PACKS: &[(&str, &str, &str, &str)] = &[
    (
        "selfinclude",
        "jobs/main.hcl",
        "{% include \"jobs/main.hcl\" %}",
        "pack `selfinclude`: rendering recursed without end and overflowed the stack",
    ),
    (
        "includeloop",
        "jobs/main.hcl",
        "{% include \"files/a.tpl\" %}",
        "pack `includeloop`: rendering recursed without end and overflowed the stack",
    ),
    (
        "macro",
        "jobs/main.hcl",
        "{% import \"files/m.tpl\" as m %}{{ m::f(n=1) }}",
        "pack `macro`: rendering recursed without end and overflowed the stack",
    ),
    (
        "hugerange",
        "jobs/main.hcl",
        "{% for i in range(end=50000000) %}{{ i }}{% endfor %}",
        "pack `hugerange`: rendering needed more than the memory limit of 96 MiB",
    ),
    (
        "hugeoutput",
        "jobs/main.hcl",
        // 500 MB from two small ranges (the 500-byte line is added below).
        "{% for i in range(end=1000) %}{% for j in range(end=1000) %}LINE{% endfor %}{% endfor %}",
        "pack `hugeoutput`: rendering needed more than the memory limit of 96 MiB",
    ),
    (
        "endless",
        "jobs/main.hcl",
        // 10^15 iterations that print nothing: only the deadline ends it.
        "{% for i in range(end=100000) %}{% for j in range(end=100000) %}{% for k in range(end=100000) %}{% endfor %}{% endfor %}{% endfor %}",
        "pack `endless`: rendering took longer than 3 s; stopped",
    ),
];

#[test]
fn a_template_that_aborts_or_runs_away_fails_only_its_pack() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    let mut set = String::from("_name = \"hostile\"\n");
    let line = "x".repeat(499) + "\n";
    for (pack, file, template, _) in RUNAWAY_PACKS {
        ws.write(
            &format!("packs/{pack}/{file}"),
            &template.replace("LINE", &line),
        );
        set.push_str(&format!("[{pack}]\n_origin = \"packs\"\n[{pack}.{pack}]\n"));
    }
    ws.write(
        "packs/includeloop/files/a.tpl",
        "{% include \"files/b.tpl\" %}",
    );
    ws.write(
        "packs/includeloop/files/b.tpl",
        "{% include \"files/a.tpl\" %}",
    );
    ws.write(
        "packs/macro/files/m.tpl",
        "{% macro f(n) %}{{ self::f(n=n+1) }}{% endmacro f %}",
    );
    // The good pack comes from an origin server, after every runaway one.
    let good = tar_of(&[
        E::Dir("jobs/"),
        E::File("jobs/main.hcl", common::SYSTEM_JOB.as_bytes()),
    ]);
    let origin = Origin::start(vec![("/good.tar.gz", Route::Archive(gz(&good)))]);
    set.push_str(&format!(
        "[good]\n_origin = \"{}\"\n[good.good]\n",
        origin.url("/good.tar.gz")
    ));
    ws.write("set.toml", &set);
    let env = [("NOMADOS_PACK_RENDER_DEADLINE_SECS", "3")];
    let started = Instant::now();
    let (out, killed) = packs_bounded(
        "apply",
        &ws.path("set.toml"),
        &nomad.addr,
        &[],
        &env,
        Duration::from_secs(90),
    );
    let t = text(&out);
    assert!(!killed, "{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    for (pack, _, _, says) in RUNAWAY_PACKS {
        assert!(
            t.contains(&format!("! pack `{pack}` failed: {says}")),
            "{pack}: {t}"
        );
    }
    assert!(
        t.contains("Apply: 1 created, 0 updated, 0 unchanged, 0 deleted, 6 failed."),
        "{t}"
    );
    assert_eq!(nomad.job_ids(), ["good"], "{t}");
    assert!(started.elapsed() < Duration::from_secs(60), "{t}");
}

#[test]
fn a_pack_with_too_many_files_is_refused_early_and_alone() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.system_pack("good");
    ws.system_pack("crowded");
    let files = ws.path("packs/crowded/files/many");
    std::fs::create_dir_all(&files).unwrap();
    for i in 0..20_000 {
        std::fs::File::create(files.join(format!("f{i}"))).unwrap();
    }
    ws.write(
        "set.toml",
        "[crowded]\n_origin = \"packs\"\n[crowded.crowded]\n[good]\n_origin = \"packs\"\n[good.good]\n",
    );
    let (out, killed) = packs_bounded("apply", &ws.path("set.toml"), &nomad.addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("! pack `crowded` failed: pack `crowded`, files/many: the pack has more than 10000 files and directories; refused"),
        "{t}"
    );
    assert_eq!(nomad.job_ids(), ["good"], "{t}");
}

#[test]
fn a_huge_file_in_a_pack_is_refused() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.system_pack("p");
    std::fs::create_dir_all(ws.path("packs/p/files")).unwrap();
    // Sparse: 17 MiB on paper, nothing on disk.
    let big = std::fs::File::create(ws.path("packs/p/files/big")).unwrap();
    big.set_len(17 * 1024 * 1024).unwrap();
    let set = set_with(&ws, "packs", "");
    let (out, killed) = packs_bounded("validate", &set, &nomad.addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert!(
        t.contains("files/big: the file is larger than the limit of 16777216 bytes"),
        "{t}"
    );
}

#[test]
fn a_pack_set_that_is_a_device_a_fifo_or_huge_is_refused() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    let fifo = ws.path("set-fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let huge = ws.path("huge.toml");
    // Sparse: 17 MiB on paper, nothing on disk.
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(11 * 1024 * 1024)
        .unwrap();
    for (set, says) in [
        (
            PathBuf::from("/dev/zero"),
            "/dev/zero: a character device is not a regular file",
        ),
        (fifo.clone(), "set-fifo.toml: a FIFO is not a regular file"),
        (
            huge.clone(),
            "huge.toml: the file is larger than the limit of 10485760 bytes",
        ),
    ] {
        let (out, killed) = packs_bounded("validate", &set, &nomad.addr, &[], &[], QUICK);
        let t = text(&out);
        assert!(
            !killed,
            "reading {} must not hang or eat memory: {t}",
            set.display()
        );
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(t.contains(says), "{t}");
    }
}

#[test]
fn a_pack_set_directory_with_too_many_or_too_large_files_is_refused() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    let many = ws.path("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..1001 {
        std::fs::write(many.join(format!("{i:04}.toml")), "").unwrap();
    }
    let (out, killed) = packs_bounded("validate", &many, &nomad.addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("the directory has more than 1000 *.toml files"),
        "{t}"
    );

    // Each file under its own limit, together over the set's.
    let large = ws.path("large");
    std::fs::create_dir_all(&large).unwrap();
    let comment = format!("# {}\n", "x".repeat(1022)).repeat(4 * 1024);
    for name in ["a.toml", "b.toml", "c.toml"] {
        std::fs::write(large.join(name), &comment).unwrap();
    }
    let (out, killed) = packs_bounded("validate", &large, &nomad.addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("c.toml: the pack-set files add up to more than the limit of 10485760 bytes"),
        "{t}"
    );
}

#[test]
fn secret_files_that_are_devices_or_fifos_are_refused() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    let fifo = ws.path("token-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let origin = Origin::start(vec![(
        "/p.tar.gz",
        Route::Archive(gz(&tar_of(&[E::File("jobs/a.hcl", b"job \"a\" {}")]))),
    )]);
    for (file, kind) in [
        ("/dev/zero".to_string(), "a character device"),
        (fifo.display().to_string(), "a FIFO"),
    ] {
        let set = set_with(
            &ws,
            &origin.url("/p.tar.gz"),
            &format!("_auth = {{ type = \"bearer\", file = \"{file}\" }}\n"),
        );
        let (out, killed) = packs_bounded("validate", &set, &nomad.addr, &[], &[], QUICK);
        let t = text(&out);
        assert!(!killed, "{t}");
        assert!(
            t.contains(&format!(
                "cannot read secret file {file}: {kind} is not a regular file"
            )),
            "{t}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Downloads are bounded in size and time, and leave nothing behind when they fail.

fn assert_no_download_left(ws: &Workspace) {
    for sub in ["blobs/sha256", "unpacked"] {
        let left: Vec<_> = std::fs::read_dir(ws.path(&format!(".cache/{sub}")))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
}

#[test]
fn an_endless_download_stops_at_the_size_limit() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    let origin = Origin::start(vec![("/p.tar.gz", Route::Flood)]);
    let set = set_with(&ws, &origin.url("/p.tar.gz"), "");
    let env = [("NOMADOS_PACK_MAX_DOWNLOAD_BYTES", "1048576")];
    let (out, killed) = packs_bounded("validate", &set, &nomad.addr, &[], &env, QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert!(
        t.contains(&format!(
            "pack `p`: cannot download {}: the archive is larger than the limit of 1048576 bytes",
            origin.url("/p.tar.gz")
        )),
        "{t}"
    );
    assert_no_download_left(&ws);
}

#[test]
fn a_trickling_download_stops_at_the_deadline() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    let origin = Origin::start(vec![("/p.tar.gz", Route::Trickle)]);
    let set = set_with(&ws, &origin.url("/p.tar.gz"), "");
    let env = [("NOMADOS_PACK_DOWNLOAD_DEADLINE_SECS", "3")];
    let started = Instant::now();
    let (out, killed) = packs_bounded("validate", &set, &nomad.addr, &[], &env, QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert!(
        t.contains("did not finish within the overall limit of 3s"),
        "{t}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{t}");
    assert_no_download_left(&ws);
}

#[test]
fn a_bad_download_limit_in_the_environment_is_named() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.system_pack("p");
    let set = set_with(&ws, "packs", "");
    let env = [("NOMADOS_PACK_MAX_DOWNLOAD_BYTES", "lots")];
    let (out, _) = packs_bounded("validate", &set, &nomad.addr, &[], &env, QUICK);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("NOMADOS_PACK_MAX_DOWNLOAD_BYTES must be a whole number, got `lots`"),
        "{t}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Secrets never reach the output, in any encoding.

#[test]
fn an_echoed_basic_authorization_header_is_masked() {
    const PASSWORD: &str = "pa55-w0rd-for-packs";
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.write("pw", PASSWORD);
    let origin = Origin::start(vec![("/p.tar.gz", Route::EchoAuth)]);
    let set = set_with(
        &ws,
        &origin.url("/p.tar.gz"),
        "_auth = { type = \"basic\", username = \"ci\", file = \"pw\" }\n",
    );
    let (out, killed) = packs_bounded("validate", &set, &nomad.addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    // base64("ci:pa55-w0rd-for-packs")
    let encoded = "Y2k6cGE1NS13MHJkLWZvci1wYWNrcw";
    assert!(!t.contains(encoded), "encoded secret shown: {t}");
    assert!(!t.contains(PASSWORD), "secret shown: {t}");
    assert!(
        t.contains(
            "answered HTTP 500 Internal Server Error: cannot handle Authorization: Basic ***"
        ),
        "{t}"
    );
}

#[test]
fn a_password_in_the_nomad_address_is_not_shown_and_errors_say_things_once() {
    let ws = Workspace::new();
    ws.system_pack("p");
    let set = set_with(&ws, "packs", "");
    let port = common::free_port();
    let addr = format!("http://operator:hunter2-nomad-secret@127.0.0.1:{port}");
    let (out, killed) = packs_bounded("validate", &set, &addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(!t.contains("hunter2-nomad-secret"), "{t}");
    assert!(
        t.contains(&format!(
            "error: cannot reach the Nomad agent at http://127.0.0.1:{port}: GET http://127.0.0.1:{port}/v1/agent/self: error sending request"
        )),
        "{t}"
    );
    assert_eq!(t.matches("error sending request").count(), 1, "{t}");
}

#[test]
fn a_nomad_token_echoed_in_an_error_is_masked() {
    const TOKEN: &str = "5ecret-n0mad-t0ken-1234";
    let ws = Workspace::new();
    ws.system_pack("p");
    let set = set_with(&ws, "packs", "");
    let proxy = Origin::start(vec![("/v1/agent/self", Route::EchoNomadToken)]);
    let env = [("NOMAD_TOKEN", TOKEN)];
    let (out, killed) = packs_bounded("validate", &set, &proxy.url(""), &[], &env, QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert!(!t.contains(TOKEN), "token shown: {t}");
    assert!(t.contains("token *** not allowed"), "{t}");
}

// ---------------------------------------------------------------------------------------
// 6. `--owner` is a name, not a filter expression.

#[test]
fn owner_must_be_a_plain_name() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.system_pack("p");
    let set = set_with(&ws, "packs", "");
    for (owner, shown) in [("", ""), (r#"x" or "1" == "1"#, r#"x\" or \"1\" == \"1"#)] {
        let (out, killed) =
            packs_bounded("plan", &set, &nomad.addr, &["--owner", owner], &[], QUICK);
        let t = text(&out);
        assert!(!killed, "{t}");
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(
            t.contains(&format!(
                "error: owner `{shown}` is not a valid name: use 1 or more letters, digits"
            )),
            "{t}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 7. Clear errors for odd origins and addresses.

#[test]
fn a_redirect_to_a_local_file_is_refused_by_name() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    let origin = Origin::start(vec![(
        "/p.tar.gz",
        Route::Redirect("file:///etc/passwd".into()),
    )]);
    let set = set_with(&ws, &origin.url("/p.tar.gz"), "");
    let (out, killed) = packs_bounded("validate", &set, &nomad.addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert!(
        t.contains(
            "redirect to file:///etc/passwd refused: only http:// and https:// redirects are followed"
        ),
        "{t}"
    );
    assert!(!t.contains("HTTP 302"), "{t}");
}

#[test]
fn a_nomad_address_with_a_query_is_refused() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.system_pack("p");
    let set = set_with(&ws, "packs", "");
    let addr = format!("{}/?region=x", nomad.addr);
    let (out, killed) = packs_bounded("validate", &set, &addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("invalid Nomad address `{addr}`")),
        "{t}"
    );
}

// ---------------------------------------------------------------------------------------
// Checks that look at what Nomad will run: JSON keys without regard to case.

#[test]
fn json_jobs_are_checked_as_nomad_decodes_them() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    ws.system_pack("good");
    // Nomad would take the last `type`: a service job.
    ws.write(
        "packs/twins/jobs/a.json",
        r#"{"ID": "twins", "Type": "system", "type": "service", "TaskGroups": []}"#,
    );
    // Nomad would read the lowercase key as the task groups: a docker task.
    ws.write(
        "packs/lower/jobs/a.json",
        r#"{"ID": "lower", "Type": "system", "taskgroups": [{"Name": "g", "Tasks": [{"Name": "t", "driver": "docker", "Config": {"image": "x"}}]}]}"#,
    );
    ws.write(
        "set.toml",
        "[good]\n_origin = \"packs\"\n[good.good]\n\
         [twins]\n_origin = \"packs\"\n[twins.twins]\n\
         [lower]\n_origin = \"packs\"\n[lower.lower]\n",
    );
    let (out, killed) = packs_bounded("apply", &ws.path("set.toml"), &nomad.addr, &[], &[], QUICK);
    let t = text(&out);
    assert!(!killed, "{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("the job has both `Type` and `type`"), "{t}");
    assert!(
        t.contains("job `lower`, group `g`, task `t` uses driver `docker`"),
        "{t}"
    );
    assert_eq!(nomad.job_ids(), ["good"], "{t}");
}
