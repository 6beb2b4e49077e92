//! The files a user data placed (`[[files]]`), remembered so that a later user data that
//! no longer lists one removes it: a root-only manifest on the data partition
//! ([`super::paths::PLACED_MANIFEST`]), written atomically after the files.
//!
//! A dropped file is removed only when it is still what we wrote (a regular file with the
//! size and SHA-256 of the content we placed). One changed or replaced since (by an
//! operator, a job, a package) is left where it is, with a warning, and forgotten: it is
//! no longer ours. [`decide`] is the pure part; [`settle`] reads the disk and removes.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::userdata::PlacedFile;

/// The manifest lists at most the files of one user data (itself at most 1 MiB).
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// One file we placed: where, and what we wrote (never the content itself: it may be a
/// secret of the operator's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Entry {
    pub fn of(f: &PlacedFile) -> Self {
        Self {
            path: f.path.clone(),
            size: f.content.len() as u64,
            sha256: hex::encode(Sha256::digest(&f.content)),
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<Entry>,
}

/// What is at a dropped file's path now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Missing,
    /// A regular file of this size and SHA-256 (hex).
    Regular {
        size: u64,
        sha256: String,
    },
    /// A directory, a symlink, a device...: not what we wrote.
    Other(&'static str),
    /// It could not be read.
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Still what we wrote: remove it.
    Remove,
    /// Already gone: nothing to do.
    Gone,
    /// Not what we wrote any more (why): leave it, warn, forget it.
    Leave(String),
    /// Could not tell (why): leave it, warn, and ask again next time.
    Retry(String),
}

/// The files `previous` placed that `new` no longer lists, each with what to do about it,
/// given `observe` (what is at a path now).
pub fn decide(
    previous: &Manifest,
    new: &[PlacedFile],
    observe: impl Fn(&Path) -> Observed,
) -> Vec<(Entry, Decision)> {
    let listed: BTreeSet<&Path> = new.iter().map(|f| f.path.as_path()).collect();
    previous
        .files
        .iter()
        .filter(|e| !listed.contains(e.path.as_path()))
        .map(|e| {
            let d = match observe(&e.path) {
                Observed::Missing => Decision::Gone,
                Observed::Regular { size, sha256 } if size == e.size && sha256 == e.sha256 => {
                    Decision::Remove
                }
                Observed::Regular { .. } => {
                    Decision::Leave("its content changed since it was placed".into())
                }
                Observed::Other(kind) => Decision::Leave(format!("it is a {kind} now")),
                Observed::Unreadable(why) => Decision::Retry(why),
            };
            (e.clone(), d)
        })
        .collect()
}

/// The manifest after a user data placing `new` was applied, given what became of the
/// dropped files: the new files, and the dropped ones still to be settled.
pub fn next_manifest(new: &[PlacedFile], settled: &[(Entry, Decision)]) -> Manifest {
    let mut files: Vec<Entry> = new.iter().map(Entry::of).collect();
    files.extend(
        settled
            .iter()
            .filter(|(_, d)| matches!(d, Decision::Retry(_)))
            .map(|(e, _)| e.clone()),
    );
    Manifest { files }
}

/// What is at `path` now, without following a symlink; a file larger than `limit` is
/// not ours (we never place one that large).
pub fn observe(path: &Path, limit: u64) -> Observed {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Observed::Missing,
        Err(e) => return Observed::Unreadable(e.to_string()),
    };
    if !meta.file_type().is_file() {
        return Observed::Other(crate::fsutil::kind_of(&meta.file_type()));
    }
    if meta.len() > limit {
        return Observed::Regular {
            size: meta.len(),
            sha256: String::new(),
        };
    }
    let read = (|| {
        use std::os::unix::fs::OpenOptionsExt as _;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)?;
        let mut bytes = Vec::new();
        f.take(limit + 1).read_to_end(&mut bytes)?;
        Ok::<_, std::io::Error>(bytes)
    })();
    match read {
        Ok(bytes) => Observed::Regular {
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        },
        Err(e) => Observed::Unreadable(e.to_string()),
    }
}

/// Reads the manifest; none (first time, or unreadable: then nothing is removed) is empty.
pub fn read_manifest(path: &Path) -> Manifest {
    match crate::fsutil::read_bounded(path, MAX_MANIFEST_BYTES) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            crate::warn!(
                "machine config: {}: {e}; files placed before are not tracked",
                path.display()
            );
            Manifest::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
        Err(e) => {
            crate::warn!(
                "machine config: {}: {e}; files placed before are not tracked",
                path.display()
            );
            Manifest::default()
        }
    }
}

/// Removes the dropped files that are still ours, says what it did and left, and returns
/// the outcome per file for the next manifest.
pub fn settle(previous: &Manifest, new: &[PlacedFile]) -> Vec<(Entry, Decision)> {
    let limit = super::userdata::MAX_USER_DATA_BYTES;
    let mut out = decide(previous, new, |p| observe(p, limit));
    for (e, d) in &mut out {
        let shown = e.path.display();
        match d {
            Decision::Remove => match std::fs::remove_file(&e.path) {
                Ok(()) => crate::info!(
                    "machine config: files: removed {shown} (no longer in the user data)"
                ),
                Err(err) => {
                    crate::warn!("machine config: files: cannot remove {shown}: {err}; trying again next time");
                    *d = Decision::Retry(err.to_string());
                }
            },
            Decision::Gone => {}
            Decision::Leave(why) => crate::warn!(
                "machine config: files: {shown} is no longer in the user data but {why}: left in place"
            ),
            Decision::Retry(why) => crate::warn!(
                "machine config: files: {shown} is no longer in the user data; cannot check it ({why}): left in place, trying again next time"
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(path: &str, content: &str) -> PlacedFile {
        PlacedFile {
            path: path.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            content: content.as_bytes().to_vec(),
        }
    }

    fn manifest(files: &[PlacedFile]) -> Manifest {
        Manifest {
            files: files.iter().map(Entry::of).collect(),
        }
    }

    fn as_written(content: &str) -> Observed {
        Observed::Regular {
            size: content.len() as u64,
            sha256: hex::encode(Sha256::digest(content.as_bytes())),
        }
    }

    #[test]
    fn only_dropped_files_still_as_written_are_removed() {
        let before = manifest(&[
            placed("/etc/a", "a"),
            placed("/etc/b", "b"),
            placed("/etc/c", "c"),
            placed("/etc/d", "d"),
            placed("/etc/e", "e"),
            placed("/etc/kept", "k"),
        ]);
        let now = [placed("/etc/kept", "k2"), placed("/etc/new", "n")];
        let out = decide(&before, &now, |p| match p.to_str().unwrap() {
            "/etc/a" => as_written("a"),
            "/etc/b" => as_written("changed by hand"),
            "/etc/c" => Observed::Missing,
            "/etc/d" => Observed::Other("symlink"),
            "/etc/e" => Observed::Unreadable("EACCES".into()),
            other => panic!("{other} is still listed: not looked at"),
        });
        let got: Vec<_> = out
            .iter()
            .map(|(e, d)| (e.path.to_str().unwrap(), d.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("/etc/a", Decision::Remove),
                (
                    "/etc/b",
                    Decision::Leave("its content changed since it was placed".into())
                ),
                ("/etc/c", Decision::Gone),
                ("/etc/d", Decision::Leave("it is a symlink now".into())),
                ("/etc/e", Decision::Retry("EACCES".into())),
            ]
        );
        // The next manifest: the files now listed, and the one not settled yet.
        let next = next_manifest(&now, &out);
        let paths: Vec<_> = next.files.iter().map(|e| e.path.clone()).collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/etc/kept"),
                "/etc/new".into(),
                "/etc/e".into()
            ]
        );
        assert_eq!(next.files[0], Entry::of(&now[0]), "the new content's hash");
    }

    #[test]
    fn same_size_other_content_is_not_ours() {
        let before = manifest(&[placed("/etc/a", "aaaa")]);
        let out = decide(&before, &[], |_| as_written("bbbb"));
        assert!(matches!(out[0].1, Decision::Leave(_)), "{out:?}");
    }

    #[test]
    fn the_disk_is_observed_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        assert_eq!(observe(&f, 1024), as_written("abc"));
        assert_eq!(observe(&dir.path().join("none"), 1024), Observed::Missing);
        let l = dir.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert!(matches!(observe(&l, 1024), Observed::Other(_)));
        assert!(matches!(observe(dir.path(), 1024), Observed::Other(_)));
        // Larger than anything we place: not what we wrote.
        let out = decide(&manifest(&[placed(f.to_str().unwrap(), "abc")]), &[], |p| {
            observe(p, 2)
        });
        assert!(matches!(out[0].1, Decision::Leave(_)), "{out:?}");
    }
}
