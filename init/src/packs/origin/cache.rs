//! The content-addressed pack cache.
//!
//! ```text
//! <cache>/blobs/sha256/<hex>     downloaded archives, named by their digest
//! <cache>/unpacked/<hex>/        extracted trees, named by the archive digest
//! <cache>/index/<sha256(url)>.json   {url, etag, last_modified, digest}
//! ```
//! Every entry appears by a rename of a complete temp file or directory (`.tmp-*`), so a
//! crash leaves at most a temp that is never used and is swept later.
//!
//! Entries the pack set no longer names are collected after an apply (`collect_garbage`),
//! but only once nobody has used them for a while: a use sets the entry's mtime, so another
//! pack set sharing the cache, or a run still rendering from it, keeps what it needs.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::digest::{is_sha256_hex, sha256_str};

/// Temps older than this belong to a crashed run and are removed.
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);
/// An index entry is a URL, an ETag and a date: a few hundred bytes.
const MAX_INDEX_BYTES: u64 = 64 * 1024;

/// What the last successful download of a URL returned, for conditional requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The URL with credentials removed (informational; the file name is the key).
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub digest: String,
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// A name no other process or thread uses at the same time: pid, time and a counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Cache {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn unpacked_dir(&self) -> PathBuf {
        self.root.join("unpacked")
    }

    fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// Creates the layout and removes temps left by crashed runs.
    pub fn prepare(&self) -> io::Result<()> {
        for dir in [self.blobs_dir(), self.unpacked_dir(), self.index_dir()] {
            fs::create_dir_all(&dir)?;
            sweep_stale_temps(&dir);
        }
        Ok(())
    }

    pub fn blob(&self, hex: &str) -> PathBuf {
        self.blobs_dir().join(hex)
    }

    /// The extracted tree for `hex`, if a complete one exists.
    pub fn unpacked(&self, hex: &str) -> Option<PathBuf> {
        if !is_sha256_hex(hex) {
            return None;
        }
        let dir = self.unpacked_dir().join(hex);
        dir.is_dir().then_some(dir)
    }

    fn index_path(&self, url: &str) -> PathBuf {
        self.index_dir().join(format!("{}.json", sha256_str(url)))
    }

    /// The index entry of `url`; a missing or unreadable one is treated as absent.
    pub fn read_index(&self, url: &str) -> Option<IndexEntry> {
        let text =
            crate::fsutil::read_bounded_to_string(&self.index_path(url), MAX_INDEX_BYTES).ok()?;
        let entry: IndexEntry = serde_json::from_str(&text).ok()?;
        is_sha256_hex(&entry.digest).then_some(entry)
    }

    pub fn write_index(&self, url: &str, entry: &IndexEntry) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
        let (tmp, mut file) = self.temp_file(&self.index_dir())?;
        let result = file
            .write_all(&json)
            .and_then(|_| file.sync_all())
            .and_then(|_| fs::rename(&tmp, self.index_path(url)));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// A new temp file next to the blobs, for a download in progress.
    pub fn temp_blob(&self) -> io::Result<(PathBuf, File)> {
        self.temp_file(&self.blobs_dir())
    }

    fn temp_file(&self, dir: &Path) -> io::Result<(PathBuf, File)> {
        let path = dir.join(unique_name(".tmp-"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    /// Moves a verified download into place (same content if another process won).
    pub fn commit_blob(&self, tmp: &Path, hex: &str) -> io::Result<PathBuf> {
        let dest = self.blob(hex);
        fs::rename(tmp, &dest)?;
        Ok(dest)
    }

    /// A new empty directory to extract into.
    pub fn temp_unpack_dir(&self) -> io::Result<PathBuf> {
        let path = self.unpacked_dir().join(unique_name(".tmp-"));
        fs::create_dir(&path)?;
        Ok(path)
    }

    /// Renames a complete extraction to `unpacked/<hex>`. If another process finished the
    /// same digest first, its tree is used and ours removed.
    pub fn commit_unpacked(&self, tmp: &Path, hex: &str) -> io::Result<PathBuf> {
        let dest = self.unpacked_dir().join(hex);
        // Flush the tree before it becomes visible, so a crash cannot expose empty files.
        if let Ok(dir) = File::open(tmp) {
            let _ = nix::unistd::syncfs(&dir);
        }
        match fs::rename(tmp, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(tmp);
                Ok(dest)
            }
            Err(e) => Err(e),
        }
    }
}

/// What must survive a collection: archive digests, and URLs whose index entry (and the
/// digest it names) is kept for revalidation.
#[derive(Debug, Clone, Default)]
pub struct Keep {
    pub digests: BTreeSet<String>,
    pub urls: BTreeSet<String>,
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Archives whose blob or extracted tree (or both) were removed.
    pub archives: usize,
    /// Revalidation records of URLs no longer declared.
    pub index_entries: usize,
    pub freed_bytes: u64,
}

impl Cache {
    /// Marks the blob and tree of `hex` as used now. Failures are ignored: a read-only,
    /// pre-seeded cache is never collected by this process anyway.
    pub fn touch(&self, hex: &str) {
        let now = SystemTime::now();
        for path in [self.blob(hex), self.unpacked_dir().join(hex)] {
            if let Ok(f) = File::open(&path) {
                let _ = f.set_modified(now);
            }
        }
    }

    /// Removes blobs, trees and index entries that `keep` does not name and that were last
    /// used more than `min_idle` ago. Temps and names this cache did not create are left
    /// alone. A missing cache is an empty one.
    pub fn collect_garbage(&self, keep: &Keep, min_idle: Duration) -> io::Result<GcReport> {
        let mut keep_digests = keep.digests.clone();
        let mut keep_index = BTreeSet::new();
        for url in &keep.urls {
            keep_index.insert(format!("{}.json", sha256_str(url)));
            if let Some(entry) = self.read_index(url) {
                keep_digests.insert(entry.digest);
            }
        }
        let mut report = GcReport::default();
        let mut archives = BTreeSet::new();
        let idle = |path: &Path| {
            fs::symlink_metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > min_idle)
        };
        let dirs = [
            (self.index_dir(), None),
            (self.blobs_dir(), Some(&keep_digests)),
            (self.unpacked_dir(), Some(&keep_digests)),
        ];
        for (dir, digests) in dirs {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let ours = match digests {
                    Some(keep) => is_sha256_hex(&name) && !keep.contains(&name),
                    None => {
                        name.strip_suffix(".json").is_some_and(is_sha256_hex)
                            && !keep_index.contains(&name)
                    }
                };
                let path = entry.path();
                if !ours || !idle(&path) {
                    continue;
                }
                let bytes = disk_usage(&path);
                let removed = if entry.file_type()?.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                match removed {
                    Ok(()) => {
                        match digests {
                            Some(_) => {
                                archives.insert(name);
                            }
                            None => report.index_entries += 1,
                        }
                        report.freed_bytes += bytes;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        report.archives = archives.len();
        Ok(report)
    }
}

/// Bytes under `path` (files only, symlinks not followed).
fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0)
}

fn sweep_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(".tmp-") {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if old {
            let path = entry.path();
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trip_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path().to_path_buf());
        c.prepare().unwrap();
        assert_eq!(c.read_index("http://h/p.tar"), None);
        let e = IndexEntry {
            url: "http://h/p.tar".into(),
            etag: Some("\"v1\"".into()),
            last_modified: None,
            digest: sha256_str("x"),
        };
        c.write_index("http://h/p.tar", &e).unwrap();
        assert_eq!(c.read_index("http://h/p.tar"), Some(e));
        fs::write(c.index_path("http://h/p.tar"), "{not json").unwrap();
        assert_eq!(c.read_index("http://h/p.tar"), None);
    }

    #[test]
    fn losing_the_unpack_race_uses_the_winner() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path().to_path_buf());
        c.prepare().unwrap();
        let hex = sha256_str("tree");
        let a = c.temp_unpack_dir().unwrap();
        let b = c.temp_unpack_dir().unwrap();
        fs::write(a.join("from"), "a").unwrap();
        fs::write(b.join("from"), "b").unwrap();
        let first = c.commit_unpacked(&a, &hex).unwrap();
        let second = c.commit_unpacked(&b, &hex).unwrap();
        assert_eq!(first, second);
        assert_eq!(fs::read_to_string(first.join("from")).unwrap(), "a");
        assert!(!b.exists(), "loser's temp tree removed");
    }

    /// A cache holding one downloaded archive per name: blob, tree and index entry.
    fn seeded(names: &[&str]) -> (tempfile::TempDir, Cache, Vec<String>) {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path().to_path_buf());
        c.prepare().unwrap();
        let mut digests = Vec::new();
        for name in names {
            let hex = sha256_str(name);
            fs::write(c.blob(&hex), vec![0u8; 1000]).unwrap();
            let tmp = c.temp_unpack_dir().unwrap();
            fs::create_dir(tmp.join("jobs")).unwrap();
            fs::write(tmp.join("jobs/a.hcl"), "job").unwrap();
            c.commit_unpacked(&tmp, &hex).unwrap();
            let url = format!("https://h/{name}.tar");
            let entry = IndexEntry {
                url: url.clone(),
                etag: None,
                last_modified: None,
                digest: hex.clone(),
            };
            c.write_index(&url, &entry).unwrap();
            digests.push(hex);
        }
        (d, c, digests)
    }

    fn backdate(c: &Cache, age: Duration) {
        let then = SystemTime::now() - age;
        for dir in [c.blobs_dir(), c.unpacked_dir(), c.index_dir()] {
            for e in fs::read_dir(dir).unwrap().flatten() {
                File::open(e.path()).unwrap().set_modified(then).unwrap();
            }
        }
    }

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    #[test]
    fn collects_only_idle_entries_nobody_keeps() {
        let (_d, c, digests) = seeded(&["old", "pinned", "current"]);
        backdate(&c, 2 * WEEK);
        let keep = Keep {
            digests: [digests[1].clone()].into(),
            urls: ["https://h/current.tar".to_string()].into(),
        };
        let report = c.collect_garbage(&keep, WEEK).unwrap();
        assert_eq!(report.archives, 1, "{report:?}");
        assert_eq!(
            report.index_entries, 2,
            "old and pinned URLs are not declared"
        );
        assert!(report.freed_bytes >= 1003, "{report:?}");
        assert!(!c.blob(&digests[0]).exists());
        assert!(c.unpacked(&digests[0]).is_none());
        assert!(c.read_index("https://h/old.tar").is_none());
        // Kept by pin, and by the declared URL's index entry.
        for hex in &digests[1..] {
            assert!(c.blob(hex).is_file());
            assert!(c.unpacked(hex).is_some());
        }
        assert!(c.read_index("https://h/current.tar").is_some());
        assert_eq!(c.collect_garbage(&keep, WEEK).unwrap(), GcReport::default());
    }

    #[test]
    fn recently_used_entries_survive_until_idle() {
        let (_d, c, digests) = seeded(&["a", "b"]);
        backdate(&c, 2 * WEEK);
        c.touch(&digests[0]);
        let report = c.collect_garbage(&Keep::default(), WEEK).unwrap();
        assert_eq!(report.archives, 1, "{report:?}");
        assert!(c.blob(&digests[0]).is_file(), "touched blob kept");
        assert!(c.unpacked(&digests[0]).is_some(), "touched tree kept");
        assert!(!c.blob(&digests[1]).exists());
    }

    #[test]
    fn temps_foreign_names_and_a_missing_cache_are_left_alone() {
        let (_d, c, _) = seeded(&[]);
        let stray = c.blobs_dir().join("README");
        fs::write(&stray, "mine").unwrap();
        let tmp = c.temp_unpack_dir().unwrap();
        backdate(&c, 2 * WEEK);
        let report = c.collect_garbage(&Keep::default(), WEEK).unwrap();
        assert_eq!(report, GcReport::default());
        assert!(stray.exists() && tmp.exists());
        let missing = Cache::new(c.root().join("nope"));
        assert_eq!(
            missing.collect_garbage(&Keep::default(), WEEK).unwrap(),
            GcReport::default()
        );
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name(".tmp-"), unique_name(".tmp-"));
    }
}
