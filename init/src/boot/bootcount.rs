//! A boot counter on the data partition (`<mount_point>/nomados/boot-count`): tells an
//! operator (and the reboot test) that state really survives a reboot.

use std::path::{Path, PathBuf};

pub fn path(mount_point: &Path) -> PathBuf {
    mount_point.join("nomados/boot-count")
}

/// The next count from the file's text: missing or unreadable counts restart at 1.
pub fn next(previous: Option<&str>) -> u64 {
    previous
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map_or(1, |n| n.saturating_add(1))
}

/// Increments the counter (atomically) and returns the new value.
pub fn increment(mount_point: &Path) -> std::io::Result<u64> {
    let file = path(mount_point);
    let previous = std::fs::read_to_string(&file).ok();
    let n = next(previous.as_deref());
    crate::fsutil::write_atomic(&file, &format!("{n}\n"))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_and_restarts_on_garbage() {
        assert_eq!(next(None), 1);
        assert_eq!(next(Some("41\n")), 42);
        assert_eq!(next(Some("not a number")), 1);
        assert_eq!(next(Some(&u64::MAX.to_string())), u64::MAX);
    }

    #[test]
    fn increments_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(increment(dir.path()).unwrap(), 1);
        assert_eq!(increment(dir.path()).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(path(dir.path())).unwrap(), "2\n");
    }
}
