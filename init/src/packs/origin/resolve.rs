//! Finds the pack's own directory inside a local origin or an extracted archive.

use std::path::{Component, Path, PathBuf};

/// Why no pack directory was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// `origin_name` is absolute or has `..`: it could name a directory outside the origin.
    BadOriginName,
    /// Neither `<origin_name>/` nor `jobs/` exists under the root.
    NotFound,
}

/// The root of an extracted archive: its only top-level directory when it holds exactly
/// one directory and nothing else (GitHub-style archives), else `dir` itself. A lone
/// `jobs/` is the pack's own content, not a wrapper, and is never stripped.
pub fn archive_root(dir: &Path) -> std::io::Result<PathBuf> {
    let mut only = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if only.is_some() {
            return Ok(dir.to_path_buf());
        }
        only = Some(entry);
    }
    match only {
        // file_type does not follow symlinks: a lone symlink is not stripped.
        Some(e) if e.file_type()?.is_dir() && e.file_name() != "jobs" => Ok(e.path()),
        _ => Ok(dir.to_path_buf()),
    }
}

/// `root/<origin_name>` if it is a directory, else `root` if `root/jobs` is one.
pub fn pack_dir(root: &Path, origin_name: &str) -> Result<PathBuf, ResolveError> {
    let name = Path::new(origin_name);
    let plain = !origin_name.is_empty()
        && name
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain {
        return Err(ResolveError::BadOriginName);
    }
    let named = root.join(name);
    if named.is_dir() {
        return Ok(named);
    }
    if root.join("jobs").is_dir() {
        return Ok(root.to_path_buf());
    }
    Err(ResolveError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn named_subdir_wins_over_root() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("redis/jobs")).unwrap();
        fs::create_dir_all(d.path().join("jobs")).unwrap();
        assert_eq!(pack_dir(d.path(), "redis"), Ok(d.path().join("redis")));
        assert_eq!(pack_dir(d.path(), "other"), Ok(d.path().to_path_buf()));
    }

    #[test]
    fn not_found_and_bad_names() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("redis"), "a file, not a dir").unwrap();
        assert_eq!(pack_dir(d.path(), "redis"), Err(ResolveError::NotFound));
        assert_eq!(pack_dir(d.path(), "../x"), Err(ResolveError::BadOriginName));
        assert_eq!(pack_dir(d.path(), "/etc"), Err(ResolveError::BadOriginName));
        assert_eq!(pack_dir(d.path(), ""), Err(ResolveError::BadOriginName));
    }

    #[test]
    fn single_top_level_dir_is_stripped() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("repo-main/jobs")).unwrap();
        assert_eq!(archive_root(d.path()).unwrap(), d.path().join("repo-main"));
        fs::write(d.path().join("README"), "x").unwrap();
        assert_eq!(archive_root(d.path()).unwrap(), d.path());
        let e = tempfile::tempdir().unwrap();
        fs::write(e.path().join("only-a-file"), "x").unwrap();
        assert_eq!(archive_root(e.path()).unwrap(), e.path());
        let j = tempfile::tempdir().unwrap();
        fs::create_dir(j.path().join("jobs")).unwrap();
        assert_eq!(archive_root(j.path()).unwrap(), j.path());
    }
}
