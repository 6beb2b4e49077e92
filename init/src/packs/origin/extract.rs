//! Safe tar extraction: every entry is checked before anything is written, and the archive
//! may only create plain files, directories, and links that stay inside the destination.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use tar::EntryType;

use crate::packs::safe_fs::{self, Tree};

/// Bytes a GNU long name or long link may hold (Linux's PATH_MAX). The `tar` crate would
/// buffer any size in memory; the applier reads these entries itself, bounded.
const MAX_LONG_NAME: u64 = 4096;
/// Bytes of one pax extended header (names, times, attributes: a few hundred in practice).
const MAX_PAX_HEADER: u64 = 64 * 1024;
/// Archive bytes allowed per entry on top of the content limit: headers, padding,
/// extension headers. Together they bound the whole decompressed stream.
const STREAM_BYTES_PER_ENTRY: u64 = 8 * 1024;

/// Memory the xz decoder may use. `xz -9` needs about 65 MiB; anything beyond is refused
/// rather than letting a hostile archive grow the applier.
const XZ_MEMLIMIT: u64 = 96 * 1024 * 1024;

/// Compression of a tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tar,
    Gzip,
    Xz,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Gzip => "gzip",
            Format::Xz => "xz",
        }
    }
}

/// The format implied by the URL path's suffix (case-insensitive).
pub fn format_from_suffix(path: &str) -> Option<Format> {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".tar.xz") || lower.ends_with(".txz") {
        Some(Format::Xz)
    } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        Some(Format::Gzip)
    } else if lower.ends_with(".tar") {
        Some(Format::Tar)
    } else {
        None
    }
}

/// The format the first bytes of a file show (needs at least 512 bytes to recognise tar).
pub fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Format::Xz)
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Some(Format::Gzip)
    } else if is_tar_header(head) {
        Some(Format::Tar)
    } else {
        None
    }
}

/// A POSIX/GNU tar header: `ustar` magic, or (old v7 archives) a valid header checksum.
fn is_tar_header(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    if &head[257..262] == b"ustar" {
        return true;
    }
    let field = &head[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = head[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == stored && head[..100].iter().any(|b| *b != 0)
}

/// Picks the decoder from the URL suffix and checks it against the magic bytes; without a
/// known suffix, the magic bytes decide.
pub fn choose_format(url_path: &str, head: &[u8]) -> Result<Format, String> {
    let sniffed = sniff(head);
    match (format_from_suffix(url_path), sniffed) {
        (Some(want), Some(got)) if want == got => Ok(want),
        (Some(want), Some(got)) => Err(format!(
            "the name says {} but the content is {}",
            want.name(),
            got.name()
        )),
        (Some(want), None) => Err(format!(
            "the name says {} but the content is not a {} archive",
            want.name(),
            want.name()
        )),
        (None, Some(got)) => Ok(got),
        (None, None) => Err(
            "not a .tar.xz, .tar.gz or .tar archive (unrecognised name and content)".to_string(),
        ),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: usize,
}

#[derive(Debug)]
pub enum ExtractError {
    Format(String),
    Unsafe { entry: String, reason: String },
    Limit(String),
    Io { action: String, source: io::Error },
}

fn io_err(action: impl Into<String>) -> impl FnOnce(io::Error) -> ExtractError {
    let action = action.into();
    move |source| ExtractError::Io { action, source }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub entries: usize,
    pub bytes: u64,
}

/// The components of an archive path, refusing `..` and absolute paths. `.` is dropped.
pub fn entry_components(path: &Path) -> Result<Vec<OsString>, &'static str> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err("has a `..` component"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

/// Checks that a symlink at `entry` with `target` stays inside the archive root, resolving
/// the target lexically from the entry's directory.
pub fn check_symlink(entry: &[OsString], target: &Path) -> Result<(), &'static str> {
    if target.as_os_str().is_empty() {
        return Err("is a symlink with an empty target");
    }
    let mut stack: Vec<&std::ffi::OsStr> = entry[..entry.len().saturating_sub(1)]
        .iter()
        .map(|s| s.as_os_str())
        .collect();
    for c in target.components() {
        match c {
            Component::Normal(n) => stack.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if stack.pop().is_none() {
                    return Err("is a symlink pointing outside the archive");
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("is a symlink to an absolute path")
            }
        }
    }
    Ok(())
}

fn join(root: &Path, comps: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(comps);
    p
}

/// Refuses writing through a symlink the archive created earlier (a symlink to a
/// directory inside the root could otherwise be chained to reach outside it).
fn check_parents(root: &Path, comps: &[OsString]) -> Result<(), &'static str> {
    let mut p = root.to_path_buf();
    for c in &comps[..comps.len().saturating_sub(1)] {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Err("goes through a symlink"),
            Ok(m) if !m.is_dir() => return Err("is inside something that is not a directory"),
            _ => {}
        }
    }
    Ok(())
}

/// Counts what the decoder produced and fails past `left`: caps the decompressed stream
/// (xz and gzip bombs, huge skipped entries) before the `tar` crate sees more of it.
struct Budget<R> {
    inner: R,
    left: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more would exceed the budget: is there one?
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded.set(true);
            return Err(io::Error::other("the decompressed archive is too large"));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn open_decoder(archive: &Path, format: Format) -> Result<Box<dyn Read>, ExtractError> {
    let file = File::open(archive).map_err(io_err(format!("open {}", archive.display())))?;
    let reader = BufReader::with_capacity(64 * 1024, file);
    Ok(match format {
        Format::Tar => Box::new(reader),
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Format::Xz => {
            let stream =
                xz2::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, xz2::stream::CONCATENATED)
                    .map_err(|e| ExtractError::Format(format!("xz decoder: {e}")))?;
            Box::new(xz2::bufread::XzDecoder::new_stream(reader, stream))
        }
    })
}

/// Extracts `archive` into `dest` (an existing empty directory). On error the caller
/// removes `dest`; nothing is cleaned up here.
pub fn extract(
    archive: &Path,
    format: Format,
    dest: &Path,
    limits: Limits,
) -> Result<Stats, ExtractError> {
    let exceeded = Rc::new(Cell::new(false));
    let stream_limit = limits
        .max_bytes
        .saturating_add((limits.max_entries as u64 + 1).saturating_mul(STREAM_BYTES_PER_ENTRY));
    let decoder = Budget {
        inner: open_decoder(archive, format)?,
        left: stream_limit,
        exceeded: exceeded.clone(),
    };
    let mut tar = tar::Archive::new(decoder);
    let result = extract_entries(&mut tar, dest, limits);
    // Whatever failed while the budget ran out failed because of it.
    if exceeded.get() {
        return Err(ExtractError::Limit(format!(
            "it decompresses to more than {stream_limit} bytes"
        )));
    }
    result
}

fn extract_entries<R: Read>(
    tar: &mut tar::Archive<R>,
    dest: &Path,
    limits: Limits,
) -> Result<Stats, ExtractError> {
    let mut stats = Stats::default();
    // Regular files extracted so far: the only valid hard-link targets.
    let mut files: HashSet<Vec<OsString>> = HashSet::new();
    // Symlinks extracted so far, checked once the tree is complete.
    let mut symlinks: HashSet<Vec<OsString>> = HashSet::new();
    let stream_error = |what: &str, e: io::Error| ExtractError::Format(format!("{what}: {e}"));
    // Raw: GNU long names and pax headers come as entries of their own, read here with a
    // size limit (the `tar` crate would buffer them whole).
    let entries = tar
        .entries()
        .map_err(|e| stream_error("cannot read the archive", e))?
        .raw(true);
    let mut ext = Extensions::default();
    for entry in entries {
        let mut entry = entry.map_err(|e| stream_error("corrupt archive", e))?;
        let kind = entry.header().entry_type();
        if ext.take(kind, &mut entry)? {
            continue;
        }
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(ExtractError::Limit(format!(
                "it has more than {} entries",
                limits.max_entries
            )));
        }
        if kind == EntryType::XGlobalHeader {
            // `git archive` puts its commit id there; it is metadata, not a file.
            continue;
        }
        let (long_name, long_link) = ext.finish();
        let raw_path = match long_name {
            Some(name) => PathBuf::from(OsString::from_vec(name)),
            None => entry
                .path()
                .map_err(|e| ExtractError::Format(format!("bad entry name: {e}")))?
                .into_owned(),
        };
        let shown = raw_path.display().to_string();
        let unsafe_entry = |reason: &str| ExtractError::Unsafe {
            entry: shown.clone(),
            reason: reason.to_string(),
        };
        let comps = entry_components(&raw_path).map_err(unsafe_entry)?;
        match kind {
            EntryType::Char => return Err(unsafe_entry("is a character device")),
            EntryType::Block => return Err(unsafe_entry("is a block device")),
            EntryType::Fifo => return Err(unsafe_entry("is a fifo")),
            EntryType::GNUSparse => return Err(unsafe_entry("is a sparse file (unsupported)")),
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link => {}
            other => {
                return Err(unsafe_entry(&format!(
                    "has unsupported type {:?}",
                    other.as_byte() as char
                )))
            }
        }
        if comps.is_empty() {
            if kind == EntryType::Directory {
                continue; // `./` itself
            }
            return Err(unsafe_entry("has an empty name"));
        }
        check_parents(dest, &comps).map_err(unsafe_entry)?;
        let target = join(dest, &comps);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("create {shown}")))?;
        }
        // A later entry replaces an earlier non-directory one (like `tar --unlink-first`),
        // so writing never follows a symlink left by the archive.
        if let Ok(meta) = fs::symlink_metadata(&target) {
            if meta.is_dir() {
                if kind != EntryType::Directory {
                    return Err(unsafe_entry("would replace a directory"));
                }
            } else {
                fs::remove_file(&target).map_err(io_err(format!("replace {shown}")))?;
                files.remove(&comps);
                symlinks.remove(&comps);
            }
        }
        match kind {
            EntryType::Directory => {
                if !target.is_dir() {
                    fs::create_dir(&target).map_err(io_err(format!("create {shown}")))?;
                }
                set_mode(&target, 0o755).map_err(io_err(format!("chmod {shown}")))?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let budget = limits.max_bytes - stats.bytes;
                let declared = entry.header().size().unwrap_or(0);
                if declared > budget {
                    return Err(too_big(limits));
                }
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(io_err(format!("create {shown}")))?;
                // Count what is actually written, whatever the header claimed.
                let written = io::copy(&mut (&mut entry).take(budget + 1), &mut out)
                    .map_err(|e| stream_error(&format!("corrupt entry {shown}"), e))?;
                if written > budget {
                    return Err(too_big(limits));
                }
                stats.bytes += written;
                let mode = entry.header().mode().unwrap_or(0o644);
                // No setuid/setgid/sticky, no group/other write; the owner can always
                // read and write (the cache must stay removable).
                set_mode(&target, (mode & 0o755) | 0o600)
                    .map_err(io_err(format!("chmod {shown}")))?;
                files.insert(comps);
            }
            EntryType::Symlink => {
                let link = link_name(&entry, long_link, &shown)?
                    .ok_or_else(|| unsafe_entry("is a symlink without a target"))?;
                check_symlink(&comps, &link).map_err(unsafe_entry)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(io_err(format!("create symlink {shown}")))?;
                symlinks.insert(comps);
            }
            EntryType::Link => {
                let link = link_name(&entry, long_link, &shown)?
                    .ok_or_else(|| unsafe_entry("is a hard link without a target"))?;
                let link_comps = entry_components(&link)
                    .map_err(|_| unsafe_entry("is a hard link to a path outside the archive"))?;
                if !files.contains(&link_comps) {
                    return Err(unsafe_entry(
                        "is a hard link to a path that is not an earlier file of the archive",
                    ));
                }
                fs::hard_link(join(dest, &link_comps), &target)
                    .map_err(io_err(format!("create hard link {shown}")))?;
                files.insert(comps);
            }
            _ => return Err(unsafe_entry("has an unsupported type")),
        }
    }
    if ext.pending() {
        return Err(ExtractError::Format(
            "the archive ends with a long name or pax header that describes no entry".into(),
        ));
    }
    check_symlink_chains(dest, &symlinks)?;
    Ok(stats)
}

/// Each symlink was checked alone when it was extracted; followed together, links can
/// still walk out (`x/up -> ..`, then `x/e -> up/..`). The kernel follows every link of
/// the finished tree with `RESOLVE_BENEATH` and refuses any that leaves it.
fn check_symlink_chains(
    dest: &Path,
    symlinks: &HashSet<Vec<OsString>>,
) -> Result<(), ExtractError> {
    let tree = Tree::open(dest).map_err(io_err("open the extracted tree"))?;
    let mut sorted: Vec<_> = symlinks.iter().collect();
    sorted.sort();
    for comps in sorted {
        let rel: PathBuf = comps.iter().collect();
        match tree.metadata(&rel) {
            Err(e) if safe_fs::is_escape(&e) => {
                return Err(ExtractError::Unsafe {
                    entry: rel.display().to_string(),
                    reason: "is a symlink that leads outside the archive through other symlinks"
                        .into(),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(ExtractError::Unsafe {
                    entry: rel.display().to_string(),
                    reason: "is part of a symlink loop".into(),
                })
            }
            // Dangling links are harmless: packs are read through the same checks.
            _ => {}
        }
    }
    Ok(())
}

/// The link target of `entry`: a GNU long link or pax `linkpath` if one preceded it.
fn link_name<R: Read>(
    entry: &tar::Entry<'_, R>,
    long_link: Option<Vec<u8>>,
    shown: &str,
) -> Result<Option<PathBuf>, ExtractError> {
    if let Some(bytes) = long_link {
        return Ok(Some(PathBuf::from(OsString::from_vec(bytes))));
    }
    Ok(entry
        .link_name()
        .map_err(|e| ExtractError::Format(format!("bad link of {shown}: {e}")))?
        .map(|l| l.into_owned()))
}

/// GNU long name / long link and pax headers seen since the last real entry.
#[derive(Default)]
struct Extensions {
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    pax_name: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    seen: bool,
}

impl Extensions {
    /// Consumes `entry` if it is an extension header; true when it was one.
    fn take<R: Read>(
        &mut self,
        kind: EntryType,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<bool, ExtractError> {
        let (what, limit) = if kind.is_gnu_longname() {
            ("GNU long name", MAX_LONG_NAME)
        } else if kind.is_gnu_longlink() {
            ("GNU long link", MAX_LONG_NAME)
        } else if kind.is_pax_local_extensions() {
            ("pax header", MAX_PAX_HEADER)
        } else {
            return Ok(false);
        };
        let declared = entry.header().size().unwrap_or(u64::MAX);
        if declared > limit {
            return Err(ExtractError::Limit(format!(
                "it has a {what} of {declared} bytes (at most {limit})"
            )));
        }
        let mut data = Vec::new();
        (&mut *entry)
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| ExtractError::Format(format!("corrupt {what}: {e}")))?;
        let slot = if kind.is_pax_local_extensions() {
            for ext in tar::PaxExtensions::new(&data) {
                let ext = ext.map_err(|e| ExtractError::Format(format!("corrupt {what}: {e}")))?;
                match ext.key_bytes() {
                    b"path" => self.pax_name = Some(ext.value_bytes().to_vec()),
                    b"linkpath" => self.pax_link = Some(ext.value_bytes().to_vec()),
                    // The content limit is far below what a header's size field holds.
                    b"size" => {
                        return Err(ExtractError::Format(
                            "pax `size` records (entries over 8 GiB) are not supported".into(),
                        ))
                    }
                    _ => {}
                }
            }
            self.seen = true;
            return Ok(true);
        } else if kind.is_gnu_longname() {
            &mut self.name
        } else {
            &mut self.link
        };
        if slot.is_some() {
            return Err(ExtractError::Format(format!(
                "two {what} entries describe the same entry"
            )));
        }
        // Written NUL-terminated.
        while data.last() == Some(&0) {
            data.pop();
        }
        *slot = Some(data);
        self.seen = true;
        Ok(true)
    }

    /// Name and link for the entry that follows; GNU records win over pax, like GNU tar.
    fn finish(&mut self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let done = std::mem::take(self);
        (done.name.or(done.pax_name), done.link.or(done.pax_link))
    }

    fn pending(&self) -> bool {
        self.seen
    }
}

fn too_big(limits: Limits) -> ExtractError {
    ExtractError::Limit(format!(
        "it expands to more than {} bytes",
        limits.max_bytes
    ))
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Vec<OsString> {
        entry_components(Path::new(s)).unwrap()
    }

    #[test]
    fn suffixes() {
        assert_eq!(format_from_suffix("/a/p.tar.xz"), Some(Format::Xz));
        assert_eq!(format_from_suffix("/a/p.TXZ"), Some(Format::Xz));
        assert_eq!(format_from_suffix("/a/p.tar.gz"), Some(Format::Gzip));
        assert_eq!(format_from_suffix("/a/p.tgz"), Some(Format::Gzip));
        assert_eq!(format_from_suffix("/a/p.tar"), Some(Format::Tar));
        assert_eq!(format_from_suffix("/a/p.zip"), None);
        assert_eq!(format_from_suffix("/a/tar"), None);
    }

    #[test]
    fn magic_must_match_suffix() {
        let gz = [0x1F, 0x8B, 8, 0];
        assert_eq!(choose_format("/p.tgz", &gz), Ok(Format::Gzip));
        let err = choose_format("/p.tar.xz", &gz).unwrap_err();
        assert!(err.contains("says xz") && err.contains("gzip"), "{err}");
        assert!(choose_format("/p.tar", b"<html>").is_err());
        assert_eq!(choose_format("/download", &gz), Ok(Format::Gzip));
        assert!(choose_format("/download", b"hello").is_err());
    }

    #[test]
    fn tar_header_detection() {
        let mut h = tar::Header::new_ustar();
        h.set_path("a.txt").unwrap();
        h.set_size(0);
        h.set_cksum();
        assert!(is_tar_header(h.as_bytes()));
        let mut old = tar::Header::new_old();
        old.set_path("a.txt").unwrap();
        old.set_cksum();
        assert!(is_tar_header(old.as_bytes()));
        assert!(!is_tar_header(&[0u8; 512]));
    }

    #[test]
    fn entry_paths() {
        assert_eq!(
            comps("./a/b"),
            vec![OsString::from("a"), OsString::from("b")]
        );
        assert!(comps("./").is_empty());
        assert_eq!(
            entry_components(Path::new("a/../../x")),
            Err("has a `..` component")
        );
        assert_eq!(
            entry_components(Path::new("/etc/passwd")),
            Err("is an absolute path")
        );
    }

    #[test]
    fn symlink_targets() {
        assert!(check_symlink(&comps("a/link"), Path::new("../b")).is_ok());
        assert!(check_symlink(&comps("a/b/link"), Path::new("../../c")).is_ok());
        assert!(check_symlink(&comps("link"), Path::new("./x/../y")).is_ok());
        assert_eq!(
            check_symlink(&comps("a/link"), Path::new("../../b")),
            Err("is a symlink pointing outside the archive")
        );
        assert_eq!(
            check_symlink(&comps("link"), Path::new("x/../../y")),
            Err("is a symlink pointing outside the archive")
        );
        assert_eq!(
            check_symlink(&comps("link"), Path::new("/etc")),
            Err("is a symlink to an absolute path")
        );
        assert!(check_symlink(&comps("link"), Path::new("")).is_err());
    }
}
