//! `nomad-init install` against the real kernel: a small GPT "system image" (ESP, root,
//! an ext4 data partition), xz-compressed and served by a real HTTP server on 127.0.0.1,
//! installed onto a larger blank loop device. Then the same disk again without wipe
//! (refused, naming what is there, nothing written), and with wipe but a wrong SHA-256
//! (fails and leaves no partition table). Needs root, losetup, sgdisk, mkfs.ext4, e2fsck.
//! Run under `flock /tmp/nomados-heavy.lock`.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::process::Command;

use sha2::{Digest, Sha256};

mod host;
use host::{has_cap_sys_resource, run, Loop};

const TOOLS: &[&str] = &["losetup", "sgdisk", "mkfs.ext4", "e2fsck"];

/// Serves `body` to every request, forever (the thread dies with the test process).
fn serve(body: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}/nomados.raw.xz")
}

fn install(dev: &str, url: &str, sha: &str, wipe: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nomad-init"));
    cmd.args(["install", "--target", dev, "--image", url, "--sha256", sha]);
    if wipe {
        cmd.arg("--wipe");
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    (out.status.code().unwrap_or(-1), text)
}

fn head(dev: &str) -> Vec<u8> {
    let mut b = vec![0u8; 1 << 20];
    std::fs::File::open(dev)
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    b
}

#[test]
fn installs_an_image_from_http_refuses_a_used_disk_and_never_half_writes() {
    if let Some(why) = host::missing_prerequisite(TOOLS) {
        eprintln!("SKIP installs_an_image_from_http...: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The "system image": 64 MiB, data partition (ext4 NOMADOS-DATA) last.
    let img = tmp.path().join("image.raw");
    let img_s = img.to_str().unwrap();
    run("truncate", &["-s", "64M", img_s]);
    run(
        "sgdisk",
        &[
            "-o",
            "-n1:2048:+8M",
            "-c1:NOMADOS-ESP",
            "-n2:0:+16M",
            "-c2:NOMADOS-ROOT",
            "-n3:0:+36M",
            "-c3:NOMADOS-DATA",
            img_s,
        ],
    );
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "NOMADOS-DATA",
            "-E",
            &format!("offset={}", 25 << 20),
            img_s,
            "36M",
        ],
    );
    let raw = std::fs::read(&img).unwrap();
    let mut xz = Vec::new();
    xz2::read::XzEncoder::new(&raw[..], 6)
        .read_to_end(&mut xz)
        .unwrap();
    let sha = hex::encode(Sha256::digest(&xz));
    let url = serve(xz);

    let disk = tmp.path().join("disk.raw");
    run("truncate", &["-s", "300M", disk.to_str().unwrap()]);
    let lp = Loop::attach_scanned(&disk, 3);
    let dev = lp.dev.clone();

    let (code, out) = install(&dev, &url, &sha, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is 300 MiB; blank"), "{out}");
    assert!(out.contains("NomadOS installed to"), "{out}");
    let verify = run("sgdisk", &["-v", &dev]);
    assert!(verify.contains("No problems found"), "sgdisk -v: {verify}");
    let p3 = lp.part_path(3);
    let sectors = lp.sectors(3);
    assert!(
        sectors * 512 > 250 << 20,
        "data partition not grown: {sectors} sectors"
    );
    run("e2fsck", &["-fn", p3.to_str().unwrap()]);
    let mut sb = vec![0u8; 1024];
    std::fs::File::open(&p3)
        .unwrap()
        .read_exact_at(&mut sb, 1024)
        .unwrap();
    let (blocks, bsize) = nomad_init::boot::grow::ext4_size(&sb).unwrap();
    if has_cap_sys_resource() {
        assert!(
            blocks * bsize > 250 << 20,
            "data filesystem not grown: {blocks} x {bsize}"
        );
    } else {
        // Online resize needs CAP_SYS_RESOURCE (PID 1 has it; this sandbox does not).
        assert!(out.contains("its first boot will"), "{out}");
        eprintln!("SKIP the ext4 growth check: no CAP_SYS_RESOURCE here (the QEMU test covers it)");
    }
    assert_eq!(
        nomad_init::sys::block::ext_label(&sb).as_deref(),
        Some("NOMADOS-DATA")
    );
    // The system part is the image, byte for byte.
    let mut sys = vec![0u8; 25 << 20];
    std::fs::File::open(&dev)
        .unwrap()
        .read_exact_at(&mut sys, 0)
        .unwrap();
    assert!(
        sys[(1 << 20)..] == raw[(1 << 20)..(25 << 20)],
        "ESP/root differ"
    );

    // Installed disk, no wipe: refused, named, untouched.
    let before = head(&dev);
    let (code, out) = install(&dev, &url, &sha, false);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("REFUSED"), "{out}");
    assert!(out.contains("a GPT partition table"), "{out}");
    assert!(
        out.contains("an ext2/3/4 filesystem labelled NOMADOS-DATA"),
        "{out}"
    );
    assert!(out.contains("nomados.install.wipe=1"), "{out}");
    assert_eq!(head(&dev), before, "a refused disk was written to");

    // Wipe with a wrong hash: fails, and the disk holds no partition table.
    let (code, out) = install(&dev, &url, &"0".repeat(64), true);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("SHA-256"), "{out}");
    assert!(
        head(&dev).iter().all(|b| *b == 0),
        "a failed install left a table"
    );
    drop(lp);
}
