//! The CLI's errors name the file and position, and `rootfs` stages a usable tree.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nomados-image"))
}

#[test]
fn bad_init_json_is_reported_with_file_line_column_and_nothing_is_staged() {
    let d = tempfile::tempdir().unwrap();
    let json = d.path().join("init.json");
    std::fs::write(&json, "{\n  \"a\": 1,\n  \"b\": \n}\n").unwrap();
    let init = d.path().join("init");
    std::fs::write(&init, "x").unwrap();
    let staging = d.path().join("stage");
    let out = bin()
        .arg("rootfs")
        .arg("--staging")
        .arg(&staging)
        .arg("--init")
        .arg(&init)
        .arg("--init-json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:4:1: invalid JSON", json.display())),
        "{err}"
    );
    assert!(!staging.exists(), "nothing half-written");
}

#[test]
fn rootfs_stages_init_links_and_config() {
    let d = tempfile::tempdir().unwrap();
    let init = d.path().join("init");
    std::fs::write(&init, "binary").unwrap();
    let json = d.path().join("init.json");
    std::fs::write(&json, "{}").unwrap();
    let packs = d.path().join("packs");
    std::fs::create_dir_all(packs.join("web")).unwrap();
    std::fs::write(packs.join("web/pack.toml"), "x = 1\n").unwrap();
    let staging = d.path().join("stage");
    let out = bin()
        .arg("rootfs")
        .arg("--staging")
        .arg(&staging)
        .arg("--init")
        .arg(&init)
        .arg("--init-json")
        .arg(&json)
        .arg("--packs")
        .arg(&packs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("nomad-init") && table.contains("packs"),
        "{table}"
    );
    assert_eq!(std::fs::read(staging.join("sbin/init")).unwrap(), b"binary");
    assert_eq!(
        std::fs::read_link(staging.join("sbin/poweroff")).unwrap(),
        std::path::PathBuf::from("init")
    );
    assert_eq!(
        std::fs::read(staging.join("etc/nomad.d/init.json")).unwrap(),
        b"{}"
    );
    assert!(staging.join("etc/nomados/packs/web/pack.toml").is_file());
    assert!(staging.join("var/lib/nomad").is_dir());
}
