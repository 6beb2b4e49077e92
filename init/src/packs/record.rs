//! What this machine last saw agree with the pack set: each managed job's `JobModifyIndex`
//! after we registered it or Nomad confirmed it unchanged.
//!
//! The hash in a job's meta says what we rendered, not what runs: `nomad job run` of an
//! edited copy keeps the meta. Nomad bumps `JobModifyIndex` on every change, so a job whose
//! index still equals the recorded one cannot have drifted, and only the others are asked
//! about (a `/plan` dry run, never a write). Losing the record costs one dry run per job,
//! nothing else; a wrong one costs the same, since an index that moved is always checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::model::JobKey;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    seen: BTreeMap<String, u64>,
}

/// Where the record of `owner`'s jobs on the agent at `nomad_addr` lives, next to the cache.
pub fn path(cache_dir: &Path, nomad_addr: &str, owner: &str) -> PathBuf {
    let mut h = Sha256::new();
    h.update(nomad_addr.as_bytes());
    h.update(b"\n");
    h.update(owner.as_bytes());
    cache_dir
        .join("applied")
        .join(format!("{}.json", hex::encode(&h.finalize()[..16])))
}

/// The owner of the last apply with this cache, for PID 1's trial gate (which never
/// parses the pack set itself): `<cache_dir>/owner`.
pub fn owner_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("owner")
}

/// Owner names are short (checked by the applier); more than this is not an owner.
pub const MAX_OWNER_BYTES: u64 = 256;

/// The owner recorded by the last apply with `cache_dir`, if any.
pub fn read_owner(cache_dir: &Path) -> Option<String> {
    crate::fsutil::read_bounded_to_string(&owner_path(cache_dir), MAX_OWNER_BYTES)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn name(key: &JobKey) -> String {
    format!("{}/{}", key.namespace, key.id)
}

impl Record {
    /// Reads the record; a missing or unreadable one is empty (every job is then checked).
    pub fn load(path: &Path) -> Self {
        // One line per managed job: 16 MiB is far beyond any real record.
        let seen = crate::fsutil::read_bounded_to_string(path, 16 * 1024 * 1024)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        Self { seen }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(&self.seen).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(path, &json)
    }

    /// True when Nomad's index for `key` is the one we last saw agree with the set.
    pub fn confirms(&self, key: &JobKey, job_modify_index: u64) -> bool {
        self.seen.get(&name(key)) == Some(&job_modify_index)
    }

    pub fn set(&mut self, key: &JobKey, job_modify_index: u64) {
        self.seen.insert(name(key), job_modify_index);
    }

    pub fn remove(&mut self, key: &JobKey) {
        self.seen.remove(&name(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, id: &str) -> JobKey {
        JobKey {
            namespace: ns.into(),
            id: id.into(),
        }
    }

    #[test]
    fn round_trip_and_a_corrupt_file_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let p = path(d.path(), "http://127.0.0.1:4646", "set");
        assert_eq!(Record::load(&p), Record::default());
        let mut r = Record::default();
        r.set(&key("default", "web"), 12);
        r.set(&key("ops", "web"), 7);
        r.save(&p).unwrap();
        let back = Record::load(&p);
        assert!(back.confirms(&key("default", "web"), 12));
        assert!(back.confirms(&key("ops", "web"), 7));
        assert!(
            !back.confirms(&key("default", "web"), 13),
            "the index moved"
        );
        assert!(!back.confirms(&key("default", "db"), 12), "never seen");
        std::fs::write(&p, "{not json").unwrap();
        assert_eq!(Record::load(&p), Record::default());
    }

    #[test]
    fn the_owner_is_read_back_for_the_trial_gate() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_owner(d.path()), None);
        std::fs::write(owner_path(d.path()), "edge\n").unwrap();
        assert_eq!(read_owner(d.path()).as_deref(), Some("edge"));
        std::fs::write(owner_path(d.path()), "  \n").unwrap();
        assert_eq!(read_owner(d.path()), None);
        std::fs::write(owner_path(d.path()), "x".repeat(1000)).unwrap();
        assert_eq!(read_owner(d.path()), None, "too long for an owner");
    }

    #[test]
    fn owners_and_agents_get_their_own_record() {
        let base = Path::new("/c");
        let a = path(base, "http://127.0.0.1:4646", "set");
        assert_ne!(a, path(base, "http://127.0.0.1:4646", "other"));
        assert_ne!(a, path(base, "http://10.0.0.1:4646", "set"));
        assert!(a.starts_with("/c/applied"));
    }

    #[test]
    fn removed_jobs_are_forgotten() {
        let mut r = Record::default();
        r.set(&key("default", "web"), 3);
        r.remove(&key("default", "web"));
        assert!(!r.confirms(&key("default", "web"), 3));
    }
}
