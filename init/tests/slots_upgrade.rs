//! `nomad-init upgrade` against a directory laid out like the ESP and a plain file as the
//! inactive slot's partition (the hidden --esp/--device/--booted flags), with the payload
//! served by a real HTTP server on 127.0.0.1 or read from a file. Checks what lands where,
//! that the trial is armed only after both hash checks, and the refusals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nomad_init::slots::adv::Adv;
use nomad_init::slots::payload::Header;
use nomad_init::slots::{Esp, Record, Slot};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_nomad-init");

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn payload(version: &str, kernel: &[u8], root: &[u8]) -> Vec<u8> {
    let mut p = Header {
        version: version.into(),
        kernel_bytes: kernel.len() as u64,
        kernel_sha256: sha(kernel),
        root_bytes: root.len() as u64,
        root_sha256: sha(root),
    }
    .render()
    .unwrap();
    p.extend_from_slice(kernel);
    p.extend_from_slice(root);
    p
}

/// An ESP as the image builder makes it, and a 1 MiB "partition" full of old bytes.
fn machine(dir: &Path) -> (Esp, PathBuf) {
    let esp = Esp::at(dir.join("esp"));
    for d in ["nomados/a", "EFI/BOOT"] {
        std::fs::create_dir_all(esp.path(d)).unwrap();
    }
    std::fs::write(esp.path("nomados/a/vmlinuz"), b"old kernel").unwrap();
    let mut ldlinux = vec![0x90u8; 8192];
    ldlinux.extend(Adv::default().encode().unwrap());
    std::fs::write(esp.path("ldlinux.sys"), ldlinux).unwrap();
    let mut env = b"# GRUB Environment Block\n".to_vec();
    env.resize(1024, b'#');
    std::fs::write(esp.path("nomados/grubenv"), env).unwrap();
    std::fs::write(esp.path("syslinux.cfg"), "DEFAULT slot-a\nONERROR slot-a\n").unwrap();
    std::fs::write(
        esp.path("EFI/BOOT/grub.cfg"),
        "set default=slot-a\nset fallback=slot-a\n",
    )
    .unwrap();
    std::fs::write(
        esp.path("nomados/slots"),
        Record::default().render_padded().unwrap(),
    )
    .unwrap();
    let dev = dir.join("root-b.img");
    std::fs::write(&dev, vec![0xeeu8; 1 << 20]).unwrap();
    (esp, dev)
}

fn upgrade(esp: &Esp, dev: &Path, src: &str, extra: &[&str]) -> Output {
    let out = Command::new(BIN)
        .arg("upgrade")
        .arg(src)
        .arg("--no-reboot")
        .arg("--booted=a")
        .arg(format!("--esp={}", esp.path("").display()))
        .arg(format!("--device={}", dev.display()))
        .args(extra)
        .output()
        .unwrap();
    eprintln!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn armed(esp: &Esp) -> Option<Slot> {
    esp.read_record().unwrap().trial
}

/// Serves `body` at every path, on its own thread; `short` cuts the body in half while
/// announcing the whole length (a broken-off download).
fn serve(body: Vec<u8>, short: bool) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
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
            let app = axum::Router::new().fallback(move || {
                let body = body.clone();
                async move {
                    if short {
                        let len = body.len();
                        let half = body[..len / 2].to_vec();
                        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                            vec![Ok(half), Err(std::io::Error::other("cut"))];
                        axum::response::Response::builder()
                            .header("content-length", len)
                            .body(axum::body::Body::from_stream(futures::StreamExt::then(
                                futures::stream::iter(chunks),
                                |c| async {
                                    // Headers and the first half go out before the cut.
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                    c
                                },
                            )))
                            .unwrap()
                    } else {
                        axum::response::Response::new(axum::body::Body::from(body))
                    }
                }
            });
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
    });
    (
        addr_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        stop_tx,
    )
}

#[test]
fn an_upgrade_over_http_writes_slot_b_verifies_it_and_arms_one_trial() {
    let d = tempfile::tempdir().unwrap();
    let (esp, dev) = machine(d.path());
    let kernel = b"new kernel v2".repeat(1000);
    let root: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let p = payload("2.0.0", &kernel, &root);
    let (addr, _stop) = serve(p.clone(), false);
    let out = upgrade(
        &esp,
        &dev,
        &format!("http://{addr}/nomados.slot"),
        &["--sha256", &sha(&p).to_uppercase()],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("NomadOS 2.0.0 into slot b"), "{stdout}");
    assert!(stdout.contains("(100%)"), "progress reaches 100%: {stdout}");
    assert!(stdout.contains("reading back to verify"), "{stdout}");

    let written = std::fs::read(&dev).unwrap();
    assert_eq!(&written[..root.len()], &root[..]);
    assert!(
        written[root.len()..].iter().all(|&b| b == 0xee),
        "nothing past the root fs"
    );
    assert_eq!(
        std::fs::read(esp.path("nomados/b/vmlinuz")).unwrap(),
        kernel
    );
    assert!(!esp.path("nomados/b/vmlinuz.new").exists());
    assert_eq!(
        std::fs::read(esp.path("nomados/a/vmlinuz")).unwrap(),
        b"old kernel"
    );
    assert_eq!(armed(&esp), Some(Slot::B));
    assert_eq!(
        esp.pending_trials().unwrap(),
        (Some("slot-b".into()), Some("slot-b".into()))
    );
    // The default stays A until the trial passes its health gate.
    assert_eq!(esp.read_record().unwrap().default, Slot::A);
    // What the slot was written from, for [upgrade]'s "runs it already".
    assert_eq!(
        std::fs::read_to_string(esp.path("nomados/b/payload")).unwrap(),
        format!("sha256={}\nversion=2.0.0\n", sha(&p))
    );
    let sys = std::fs::read_to_string(esp.path("syslinux.cfg")).unwrap();
    assert!(sys.starts_with("DEFAULT slot-a\n"));

    // A second upgrade while B is on trial is refused.
    let again = upgrade(&esp, &dev, &format!("http://{addr}/x"), &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("on trial"));
}

#[test]
fn a_wrong_hash_a_short_download_or_a_disk_image_arm_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (esp, dev) = machine(d.path());
    let p = payload("2.0.0", b"k", &[1u8; 5000]);
    let file = d.path().join("nomados.slot");
    std::fs::write(&file, &p).unwrap();

    let out = upgrade(
        &esp,
        &dev,
        file.to_str().unwrap(),
        &["--sha256", &"0".repeat(64)],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected 0000") && err.contains("not armed"),
        "{err}"
    );
    assert_eq!(armed(&esp), None);
    assert_eq!(esp.pending_trials().unwrap(), (None, None));

    let (addr, _stop) = serve(p.clone(), true);
    let out = upgrade(&esp, &dev, &format!("http://{addr}/nomados.slot"), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broke off") || err.contains("ended after"),
        "{err}"
    );
    assert_eq!(armed(&esp), None);

    let mut disk = vec![0u8; 8192];
    disk[512..520].copy_from_slice(b"EFI PART");
    std::fs::write(&file, &disk).unwrap();
    let out = upgrade(&esp, &dev, file.to_str().unwrap(), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a NomadOS slot payload"));
    assert_eq!(armed(&esp), None);

    // A root filesystem bigger than the slot is refused before it is written.
    std::fs::write(&file, payload("3", b"k", &vec![2u8; 2 << 20])).unwrap();
    let out = upgrade(&esp, &dev, file.to_str().unwrap(), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the slot holds"));
    assert_eq!(
        std::fs::metadata(&dev).unwrap().len(),
        1 << 20,
        "partition not grown"
    );
    assert_eq!(armed(&esp), None);

    let out = upgrade(&esp, &dev, file.to_str().unwrap(), &["--sha256", "xyz"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
}

/// PID 1 hands the source over in the environment (a URL's credentials must not show in
/// argv): the same upgrade, with no source argument.
#[test]
fn the_source_can_come_from_the_environment() {
    let d = tempfile::tempdir().unwrap();
    let (esp, dev) = machine(d.path());
    let p = payload("2.1", b"kernel", &[7u8; 4096]);
    let (addr, _stop) = serve(p.clone(), false);
    let run = |env: Option<String>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["upgrade", "--no-reboot", "--booted=a", "--sha256", &sha(&p)])
            .arg(format!("--esp={}", esp.path("").display()))
            .arg(format!("--device={}", dev.display()))
            .env_remove("NOMADOS_UPGRADE_SOURCE");
        if let Some(v) = env {
            cmd.env("NOMADOS_UPGRADE_SOURCE", v);
        }
        cmd.output().unwrap()
    };
    let out = run(None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no source given"), "{err}");
    let out = run(Some(format!(
        "http://u:secret@{addr}/nomados.slot?token=t0k"
    )));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        !stdout.contains("secret") && !stdout.contains("t0k"),
        "{stdout}"
    );
    assert_eq!(armed(&esp), Some(Slot::B));
}

/// The child as PID 1 starts it (`supervise::upgrade::command`): PID 1 shows each of its
/// lines on the console tagged `upgrade:`, so no line of the child's own may start with
/// that tag again (the console said `upgrade: upgrade: ...`). Read from the real child's
/// stdout and stderr, for a run that arms and one that fails.
#[test]
fn the_childs_lines_carry_no_tag_of_their_own() {
    use nomad_init::slots::wanted::Wanted;
    use nomad_init::supervise::upgrade::{command, TAG};
    let d = tempfile::tempdir().unwrap();
    let (esp, dev) = machine(d.path());
    let p = payload("2.2", b"kernel", &[7u8; 300_000]);
    let (addr, _stop) = serve(p.clone(), false);
    let run = |sha256: String| {
        let wanted = Wanted {
            url: format!("http://{addr}/nomados.slot"),
            sha256,
            version: None,
        };
        let out = command(Path::new(BIN), &wanted)
            .arg("--booted=a")
            .arg(format!("--esp={}", esp.path("").display()))
            .arg(format!("--device={}", dev.display()))
            .output()
            .unwrap();
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
            .map(str::to_string)
            .collect();
        (out.status.success(), lines)
    };
    let tagged = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{TAG}:")))
            .cloned()
            .collect()
    };
    let (ok, lines) = run("0".repeat(64));
    assert!(!ok);
    assert!(lines.iter().any(|l| l.contains("not armed")), "{lines:?}");
    assert_eq!(tagged(&lines), Vec::<String>::new());
    let (ok, lines) = run(sha(&p));
    assert!(ok, "{lines:?}");
    for want in [
        "running slot a",
        "MiB written (100%)",
        "reading back",
        "verified in slot b",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "{want}: {lines:?}");
    }
    assert_eq!(tagged(&lines), Vec::<String>::new());
}
