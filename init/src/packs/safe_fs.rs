//! Reading inside a directory tree written by someone else (a pack, an extracted archive).
//! Every path is resolved by the kernel relative to the tree's root with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: no symlink, `..`, or chain of them can lead
//! outside the tree, however the links were arranged, and `/proc` magic links are refused.

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// An open directory; every path given to it is relative to it and must stay beneath it.
#[derive(Debug)]
pub struct Tree {
    root: OwnedFd,
    path: PathBuf,
}

/// The kernel refused a path because resolving it leaves the tree (`EXDEV`).
#[derive(Debug, thiserror::Error)]
#[error("leads outside the pack (through `..` or a symlink)")]
pub struct Escape;

/// A directory listing went past its limit ([`Tree::read_dir`]).
#[derive(Debug, thiserror::Error)]
#[error("too many entries")]
pub struct TooManyEntries;

/// True when `err` is a [`TooManyEntries`].
pub fn is_too_many(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<TooManyEntries>())
}

/// True when `err` is an [`Escape`].
pub fn is_escape(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<Escape>())
}

impl Tree {
    /// Opens `path` (which may itself be reached through symlinks: it is the trusted
    /// starting point) as the root.
    pub fn open(path: &Path) -> io::Result<Self> {
        let root = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            root,
            path: path.to_path_buf(),
        })
    }

    /// The path the tree was opened at, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn resolve(&self, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let mut tries = 0;
        loop {
            match nix::fcntl::openat2(&self.root, rel, how) {
                Ok(fd) => return Ok(fd),
                // A rename elsewhere in the filesystem raced the lookup; the kernel asks to retry.
                Err(Errno::EAGAIN) if tries < 8 => tries += 1,
                Err(Errno::EXDEV) => {
                    return Err(io::Error::new(io::ErrorKind::PermissionDenied, Escape))
                }
                Err(Errno::ENOSYS) => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "reading packs safely needs openat2 (Linux 5.6 or newer)",
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// What `rel` resolves to (following symlinks, all within the tree).
    pub fn metadata(&self, rel: impl AsRef<Path>) -> io::Result<Metadata> {
        File::from(self.resolve(rel.as_ref(), OFlag::O_PATH)?).metadata()
    }

    /// The regular file `rel`, at most `cap` bytes of it; FIFOs, devices and directories are
    /// refused without blocking.
    pub fn read(&self, rel: impl AsRef<Path>, cap: u64) -> io::Result<Vec<u8>> {
        let fd = self.resolve(
            rel.as_ref(),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
        )?;
        crate::fsutil::read_open_bounded(File::from(fd), cap)
    }

    /// Names in the directory `rel` (without `.` and `..`), unsorted. More than `max`
    /// names is an [`TooManyEntries`] error, found without reading the rest: a directory
    /// of a million files costs no more than one of `max`.
    pub fn read_dir(&self, rel: impl AsRef<Path>, max: usize) -> io::Result<Vec<OsString>> {
        let fd = self.resolve(rel.as_ref(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let mut dir = Dir::from_fd(fd)?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                if names.len() == max {
                    return Err(io::Error::other(TooManyEntries));
                }
                names.push(OsString::from_vec(name));
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_chain_of_links_that_each_look_inside_cannot_leave_the_tree() {
        let outer = tempfile::tempdir().unwrap();
        std::fs::write(outer.path().join("secret"), "s").unwrap();
        let root = outer.path().join("pack");
        std::fs::create_dir_all(root.join("x")).unwrap();
        std::fs::write(root.join("inside"), "in").unwrap();
        symlink("..", root.join("x/up")).unwrap();
        symlink("up/..", root.join("x/e1")).unwrap();
        symlink("x/e1/secret", root.join("leak")).unwrap();
        symlink("x/up/inside", root.join("ok")).unwrap();
        // The plain filesystem follows the chain out.
        assert_eq!(std::fs::read_to_string(root.join("leak")).unwrap(), "s");
        let tree = Tree::open(&root).unwrap();
        let err = tree.read("leak", 100).unwrap_err();
        assert!(is_escape(&err), "{err}");
        assert_eq!(err.to_string(), Escape.to_string());
        assert!(is_escape(&tree.read("../secret", 100).unwrap_err()));
        assert!(is_escape(&tree.metadata("x/e1").unwrap_err()));
        assert_eq!(tree.read("ok", 100).unwrap(), b"in");
        let mut names = tree.read_dir("x", 100).unwrap();
        names.sort();
        assert_eq!(names, ["e1", "up"]);
    }

    #[test]
    fn absolute_links_and_magic_links_are_refused() {
        let root = tempfile::tempdir().unwrap();
        symlink("/etc/passwd", root.path().join("abs")).unwrap();
        symlink("/proc/self/root/etc/passwd", root.path().join("magic")).unwrap();
        let tree = Tree::open(root.path()).unwrap();
        assert!(is_escape(&tree.read("abs", 100).unwrap_err()));
        assert!(is_escape(&tree.read("magic", 100).unwrap_err()));
    }
}
