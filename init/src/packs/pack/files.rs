//! The file-reading half of pack loading: lists and reads a pack's files through a
//! [`Tree`], so a pack (often an archive from somewhere else) can only ever read itself.
//! Every file must be a regular file, each and all together of bounded size.

use std::cell::Cell;
use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{PackError, PackFile};
use crate::packs::safe_fs::{self, Tree};

/// Bytes one file of a pack may hold. Templates are text of a few KiB; this is far above.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes all files of one pack may hold together.
pub const MAX_PACK_BYTES: u64 = 64 * 1024 * 1024;
/// Files and directories one pack may have (what an archive may hold, too): real packs
/// have a few dozen; walking a million would take the applier's time and memory.
pub const MAX_PACK_ENTRIES: usize = 10_000;

pub(crate) struct PackFiles<'a> {
    pub(crate) pack: &'a str,
    dir: &'a Path,
    tree: Tree,
    /// Bytes read so far, against [`MAX_PACK_BYTES`].
    read_total: Cell<u64>,
    /// Directory entries listed so far, against [`MAX_PACK_ENTRIES`].
    entries: Cell<usize>,
}

impl<'a> PackFiles<'a> {
    /// Opens the pack directory `dir` (already checked to be a directory).
    pub(crate) fn open(pack: &'a str, dir: &'a Path) -> Result<Self, PackError> {
        let tree = Tree::open(dir).map_err(|source| PackError::Io {
            pack: pack.to_string(),
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            pack,
            dir,
            tree,
            read_total: Cell::new(0),
            entries: Cell::new(0),
        })
    }

    pub(crate) fn invalid(&self, rel: &str, message: &str) -> PackError {
        PackError::Invalid {
            pack: self.pack.to_string(),
            at: PackFile::new(rel),
            message: message.to_string(),
        }
    }

    /// An I/O error about `rel`; a path leading out of the pack is reported as invalid.
    fn io(&self, rel: &str, source: io::Error) -> PackError {
        if safe_fs::is_escape(&source) {
            return self.invalid(rel, &source.to_string());
        }
        PackError::Io {
            pack: self.pack.to_string(),
            path: self.path(rel),
            source,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// What `rel` is: `None` when it does not exist; `Some(true)` for a directory.
    pub(crate) fn is_dir(&self, rel: &str) -> Result<Option<bool>, PackError> {
        match self.tree.metadata(rel) {
            Ok(m) => Ok(Some(m.is_dir())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(rel, e)),
        }
    }

    /// Reads `rel` (a path inside the pack) as UTF-8 text.
    pub(crate) fn read(&self, rel: &str) -> Result<String, PackError> {
        let bytes = self
            .tree
            .read(rel, MAX_FILE_BYTES)
            .map_err(|e| self.io(rel, e))?;
        let total = self.read_total.get() + bytes.len() as u64;
        if total > MAX_PACK_BYTES {
            return Err(self.invalid(
                rel,
                &format!(
                    "the pack's files add up to more than the limit of {MAX_PACK_BYTES} bytes"
                ),
            ));
        }
        self.read_total.set(total);
        String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
            PackError::Invalid {
                pack: self.pack.to_string(),
                at: PackFile::from_offset(rel, &valid, at),
                message: "not UTF-8 text".to_string(),
            }
        })
    }

    /// Files under `top` (a directory of the pack), as sorted `/`-separated paths inside the
    /// pack. A missing directory is empty. Names starting with `.` (editor swap files,
    /// `.gitkeep`) are skipped. Symlinks are followed, but only within the pack.
    pub(crate) fn list(&self, top: &str, recursive: bool) -> Result<Vec<String>, PackError> {
        let mut out = Vec::new();
        match self.is_dir(top)? {
            None => return Ok(out),
            Some(false) => return Err(self.invalid(top, "must be a directory")),
            Some(true) => {}
        }
        let mut pending = vec![top.to_string()];
        // Directories already walked, so that a symlink to a parent cannot loop forever.
        let mut seen = HashSet::new();
        while let Some(rel_dir) = pending.pop() {
            let meta = self
                .tree
                .metadata(&rel_dir)
                .map_err(|e| self.io(&rel_dir, e))?;
            if !seen.insert((meta.dev(), meta.ino())) {
                return Err(self.invalid(&rel_dir, "directory symlink loop"));
            }
            let budget = MAX_PACK_ENTRIES.saturating_sub(self.entries.get());
            let names = self.tree.read_dir(&rel_dir, budget).map_err(|e| {
                if safe_fs::is_too_many(&e) {
                    self.invalid(
                        &rel_dir,
                        &format!("the pack has more than {MAX_PACK_ENTRIES} files and directories; refused"),
                    )
                } else {
                    self.io(&rel_dir, e)
                }
            })?;
            self.entries.set(self.entries.get() + names.len());
            for file_name in names {
                let Some(file_name) = file_name.to_str() else {
                    return Err(self.invalid(
                        &format!("{rel_dir}/{}", file_name.to_string_lossy()),
                        "file names in a pack must be UTF-8",
                    ));
                };
                if file_name.starts_with('.') {
                    continue;
                }
                let rel = format!("{rel_dir}/{file_name}");
                let meta = self.tree.metadata(&rel).map_err(|e| self.io(&rel, e))?;
                if meta.is_dir() {
                    if !recursive {
                        return Err(self.invalid(
                            &rel,
                            &format!("{top}/ cannot have subdirectories; put templates directly in {top}/"),
                        ));
                    }
                    pending.push(rel);
                } else if meta.is_file() {
                    out.push(rel);
                } else {
                    let kind = crate::fsutil::kind_of(&meta.file_type());
                    return Err(self.invalid(
                        &rel,
                        &format!("is {kind}; a pack holds only regular files and directories"),
                    ));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
