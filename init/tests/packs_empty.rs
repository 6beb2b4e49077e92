//! An empty pack set deletes every managed job, so it must be said with `_empty = true`: an
//! emptied or truncated file is an error that deletes nothing. The real `nomad-init packs
//! apply` against the Nomad test double.

mod common;

use common::{packs, summary, text, DoubleConfig, Nomad, Workspace};

/// Applies a two-job set so there is something to lose.
fn applied_set(ws: &Workspace, nomad: &Nomad) {
    ws.system_pack("web");
    ws.write(
        "packs.d/10-web.toml",
        "_name = \"test-set\"\n[web]\n_origin = \"../packs\"\n[web.web-a]\n[web.web-b]\n",
    );
    let out = packs("apply", &ws.path("packs.d"), nomad, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(nomad.job_ids(), ["web-a", "web-b"]);
}

#[test]
fn applying_an_empty_file_fails_and_deletes_nothing() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    applied_set(&ws, &nomad);
    let writes = nomad.writes();

    ws.write("empty.toml", "");
    let out = packs("apply", &ws.path("empty.toml"), &nomad, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let file = ws.path("empty.toml");
    assert!(
        t.contains(&format!(
            "{}: the pack set declares no packs; applying it would stop every job it manages. \
             If that is meant, set `_empty = true` at the top level",
            file.display()
        )),
        "{t}"
    );
    assert_eq!(nomad.job_ids(), ["web-a", "web-b"]);
    assert_eq!(nomad.writes(), writes, "nothing may be written");
}

#[test]
fn a_directory_whose_only_file_is_empty_fails_and_names_it() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    applied_set(&ws, &nomad);

    // The pack file emptied, say by a failed config-management run.
    ws.write("packs.d/10-web.toml", "# managed by ansible\n");
    let out = packs("apply", &ws.path("packs.d"), &nomad, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let file = ws.path("packs.d/10-web.toml");
    assert!(
        t.contains(&format!(
            "{}: the pack set declares no packs",
            file.display()
        )),
        "{t}"
    );
    assert_eq!(nomad.job_ids(), ["web-a", "web-b"]);
}

#[test]
fn an_explicitly_empty_set_deletes_the_managed_jobs() {
    let nomad = Nomad::double(DoubleConfig::default());
    let ws = Workspace::new();
    applied_set(&ws, &nomad);

    ws.write(
        "packs.d/10-web.toml",
        "_name = \"test-set\"\n_empty = true\n",
    );
    let out = packs("apply", &ws.path("packs.d"), &nomad, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        summary(&out),
        "Apply: 0 created, 0 updated, 0 unchanged, 2 deleted, 0 failed."
    );
    assert!(nomad.job_ids().is_empty());
}
