//! Writes what [`super::render`] produced: staged, then renamed into place, so a failure
//! leaves the baked configuration in force rather than half of the new one.
//!
//! The machine and secrets directories are built complete beside their final place and
//! renamed in; placed files and the token are each written atomically (temp file, fsync,
//! rename) before the directories are switched. Secrets are created 0600 in 0700
//! directories from the start: never world-readable, not even for a moment.
//!
//! Placed files are tracked in a manifest ([`super::placed`]): before the switch it lists
//! the new files and the previous ones (a superset, so a failure forgets nothing); after
//! it, the files the new user data dropped are removed if still as written, and the
//! manifest lists what is placed now.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::paths::Paths;
use super::placed::{self, Manifest};
use super::render::Rendered;

/// Applies `rendered`; on error nothing of the machine or secrets directories changed.
pub fn apply(rendered: &Rendered, paths: &Paths) -> anyhow::Result<()> {
    private_dir(&paths.run_dir)?;
    let machine_stage = staging(&paths.machine_dir);
    let secrets_stage = staging(&paths.secrets_dir);
    let previous = placed::read_manifest(&paths.placed_manifest);
    // No manifest is written for a machine that never placed a file.
    let tracking = !rendered.files.is_empty() || !previous.files.is_empty();
    let result = (|| {
        build_dir(
            &machine_stage,
            rendered
                .machine_files
                .iter()
                .map(|(p, c)| (p.as_path(), c.as_slice())),
        )?;
        build_dir(
            &secrets_stage,
            rendered
                .secret_files
                .iter()
                .map(|s| (s.path.as_path(), s.content.as_slice())),
        )?;
        for f in &rendered.files {
            let parent = f.path.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(parent)
                .with_context(|| format!("files: mkdir {}", parent.display()))?;
            crate::fsutil::write_atomic_mode(&f.path, &[&f.content], f.mode, Some((f.uid, f.gid)))
                .with_context(|| format!("files: {}", f.path.display()))?;
        }
        if let Some(token) = &rendered.token {
            write_private(&token.path, &token.content)
                .with_context(|| format!("the Nomad token file {}", token.path.display()))?;
        }
        if tracking {
            let mut both = placed::next_manifest(&rendered.files, &[]);
            both.files.extend(
                previous
                    .files
                    .iter()
                    .filter(|e| !rendered.files.iter().any(|f| f.path == e.path))
                    .cloned(),
            );
            write_manifest(&paths.placed_manifest, &both)?;
        }
        // Secrets first: the machine directory refers to them.
        switch(&secrets_stage, &paths.secrets_dir)?;
        switch(&machine_stage, &paths.machine_dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&machine_stage);
        let _ = std::fs::remove_dir_all(&secrets_stage);
        return result;
    }
    if tracking {
        let settled = placed::settle(&previous, &rendered.files);
        let next = placed::next_manifest(&rendered.files, &settled);
        // The superset written before stays on failure: nothing is forgotten.
        if let Err(e) = write_manifest(&paths.placed_manifest, &next) {
            crate::warn!("machine config: {e:#}");
        }
    }
    result
}

/// Writes `content` 0600 at `path` (atomically), its directory made 0700 if missing.
fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .with_context(|| format!("mkdir {}", parent.display()))?;
    crate::fsutil::write_atomic_mode(path, &[content], 0o600, None)?;
    Ok(())
}

fn write_manifest(path: &Path, m: &Manifest) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(m).unwrap_or_default();
    write_private(path, &bytes)
        .with_context(|| format!("the placed-files manifest {}", path.display()))
}

fn staging(dir: &Path) -> PathBuf {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
    dir.with_file_name(format!(".{name}.staging"))
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("mkdir {}", dir.display()))
}

/// Creates `dir` afresh (0700) holding `files` (0600), each relative to it.
fn build_dir<'a>(
    dir: &Path,
    files: impl Iterator<Item = (&'a Path, &'a [u8])>,
) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("rm -r {}", dir.display()))?;
    }
    private_dir(dir)?;
    for (rel, content) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            private_dir(parent)?;
        }
        write_new(&path, content, 0o600).with_context(|| format!("write {}", path.display()))?;
    }
    // Nomad reads these: keep them out of every other user's reach.
    Ok(())
}

/// Replaces `dir` with `stage` (the old one, if any, is removed after).
fn switch(stage: &Path, dir: &Path) -> anyhow::Result<()> {
    let old = dir.with_file_name(format!(
        ".{}.old",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("dir")
    ));
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old)
            .with_context(|| format!("rename {} to {}", dir.display(), old.display()))?;
    }
    std::fs::rename(stage, dir)
        .with_context(|| format!("rename {} to {}", stage.display(), dir.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn write_new(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::render::SecretFile;
    use crate::machine::userdata::PlacedFile;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    fn paths(root: &Path) -> Paths {
        Paths::under(&crate::sys::root::Root::test(root))
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn rendered(root: &Path) -> Rendered {
        Rendered {
            machine_files: vec![
                ("nomados.toml".into(), b"hostname = \"n1\"\n".to_vec()),
                ("nomad.d/10-nomados-machine.json".into(), b"{}".to_vec()),
            ],
            secret_files: vec![SecretFile {
                path: "tls/key.pem".into(),
                content: b"KEY".to_vec(),
            }],
            token: Some(SecretFile {
                path: root.join("var/lib/nomad/nomados/nomad-token"),
                content: b"tok\n".to_vec(),
            }),
            files: vec![PlacedFile {
                path: root.join("etc/motd"),
                mode: 0o640,
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
                content: b"hi".to_vec(),
            }],
        }
    }

    #[test]
    fn everything_lands_with_root_only_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        apply(&rendered(dir.path()), &p).unwrap();
        assert_eq!(
            std::fs::read_to_string(p.machine_dir.join("nomados.toml")).unwrap(),
            "hostname = \"n1\"\n"
        );
        assert_eq!(mode(&p.machine_dir), 0o700);
        assert_eq!(mode(&p.fragment_dir()), 0o700);
        assert_eq!(
            mode(&p.fragment_dir().join("10-nomados-machine.json")),
            0o600
        );
        assert_eq!(mode(&p.secrets_dir), 0o700);
        assert_eq!(mode(&p.secrets_dir.join("tls")), 0o700);
        assert_eq!(mode(&p.secrets_dir.join("tls/key.pem")), 0o600);
        assert_eq!(mode(&p.token_file), 0o600);
        assert_eq!(std::fs::read(&p.token_file).unwrap(), b"tok\n");
        let motd = dir.path().join("etc/motd");
        assert_eq!(mode(&motd), 0o640);
        assert_eq!(
            std::fs::metadata(&motd).unwrap().uid(),
            nix::unistd::getuid().as_raw()
        );
        // Applying again replaces the directories whole: nothing of the old one remains.
        let mut second = rendered(dir.path());
        second.machine_files.remove(1);
        apply(&second, &p).unwrap();
        assert!(!p.fragment_dir().exists());
        let names: Vec<_> = std::fs::read_dir(&p.run_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no staging left behind: {names:?}");
    }

    #[test]
    fn a_failure_leaves_the_previous_configuration_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        apply(&rendered(dir.path()), &p).unwrap();
        let mut broken = rendered(dir.path());
        broken.machine_files[0].1 = b"hostname = \"n2\"\n".to_vec();
        broken.secret_files[0].content = b"NEW".to_vec();
        // A placed file whose parent is a regular file cannot be written.
        broken.files[0].path = dir.path().join("etc/motd/x");
        assert!(apply(&broken, &p).is_err());
        assert_eq!(
            std::fs::read_to_string(p.machine_dir.join("nomados.toml")).unwrap(),
            "hostname = \"n1\"\n"
        );
        assert_eq!(
            std::fs::read(p.secrets_dir.join("tls/key.pem")).unwrap(),
            b"KEY"
        );
        let names: Vec<_> = std::fs::read_dir(&p.run_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
