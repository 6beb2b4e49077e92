//! File helpers shared by PID 1 and the network stage.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// Writes `contents` to `path` atomically and durably: a temp file in the same directory,
/// fsync, rename, fsync of the directory, so readers see the old file or the new one, never
/// half of it, and once this returns the new one survives a power cut (without the
/// directory's fsync the rename may still be only in memory: a VM killed right after boot
/// came back with the old boot count). Creates the directory if needed and skips the write
/// when the file already holds these contents.
pub fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    replace(path, &[contents.as_bytes()], None, None)
}

/// Writes `parts`, one after the other, to `path` as [`write_atomic`] does (temp file,
/// fsync, rename, fsync of the directory; the directory must exist), with exactly `mode`
/// and, when given, the owner `(uid, gid)`, both set before any content is written, so a
/// secret is never readable by others for an instant. Parts, so that a secret and what
/// follows it need not be joined in a copy of the secret.
pub fn write_atomic_mode(
    path: &Path,
    parts: &[&[u8]],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    replace(path, parts, Some(mode), owner)
}

/// The one atomic, durable replace behind both: `mode` None creates the file as
/// `File::create` would (0666 less the umask).
fn replace(
    path: &Path,
    parts: &[&[u8]],
    mode: Option<u32>,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.nomad-init.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        // The create mode is cut by the umask (and at most 0700 until the owner is set);
        // the exact bits are set after.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.map_or(0o666, |m| m & 0o700))
            .open(&tmp)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        if let Some(mode) = mode {
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        }
        for part in parts {
            f.write_all(part)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// fsync of a directory, so that a rename or a new entry in it is on disk. Filesystems
/// that cannot sync a directory (`EINVAL`) have nothing more to give: not an error.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}

/// Reads the regular file at `path`, refusing anything else (a FIFO, a device such as
/// `/dev/zero`, a directory) and any file longer than `cap` bytes, so that input from
/// outside can neither hang the reader nor exhaust its memory. The error says which limit
/// was hit; callers name the file.
pub fn read_bounded(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO without a writer would block forever.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    read_open_bounded(file, cap)
}

/// [`read_bounded`] as UTF-8 text; invalid UTF-8 is an `InvalidData` error.
pub fn read_bounded_to_string(path: &Path, cap: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, cap)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Checks that `file` (opened, possibly with `O_NONBLOCK`) is a regular file, puts it back
/// in blocking mode, and reads at most `cap` bytes of it.
pub fn read_open_bounded(file: File, cap: u64) -> std::io::Result<Vec<u8>> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", kind_of(&meta.file_type())),
        ));
    }
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is larger than the limit of {cap} bytes"),
        )
    };
    if meta.len() > cap {
        return Err(too_big());
    }
    let flags = OFlag::from_bits_retain(fcntl(&file, FcntlArg::F_GETFL)?);
    fcntl(&file, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    // The size may change while reading (a file being written): count what is read.
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).map_err(|_| too_big())?);
    file.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(out)
}

/// "a FIFO", "a directory", ... for messages about a file that should be a regular one.
pub fn kind_of(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symlink"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "an unknown kind of file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_bounded_refuses_devices_fifos_and_big_files() {
        let err = read_bounded(Path::new("/dev/zero"), 1024).unwrap_err();
        assert_eq!(err.to_string(), "a character device is not a regular file");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Would block forever without O_NONBLOCK (no writer).
        let err = read_bounded(&fifo, 1024).unwrap_err();
        assert_eq!(err.to_string(), "a FIFO is not a regular file");
        let err = read_bounded(dir.path(), 1024).unwrap_err();
        assert_eq!(err.to_string(), "a directory is not a regular file");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 1025]).unwrap();
        let err = read_bounded(&big, 1024).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the file is larger than the limit of 1024 bytes"
        );
        assert_eq!(read_bounded(&big, 1025).unwrap().len(), 1025);
        assert_eq!(read_bounded_to_string(&big, 2000).unwrap().len(), 1025);
    }

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/f.toml");
        write_atomic(&p, "a = 1\nlonger line\n").unwrap();
        write_atomic(&p, "b = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b = 2\n");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.toml"]);
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("is-a-dir");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), "keep").unwrap();
        assert!(write_atomic(&target, "x").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["is-a-dir"]);
    }
}
