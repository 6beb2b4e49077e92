//! The slot payload (`nomados.slot`): what `nomad-init upgrade` streams into a machine's
//! inactive slot. A 4 KiB text header, the kernel, the root filesystem image (its own
//! size, not the partition's). The format is parsed by init/src/slots/payload.rs; change
//! both together.
//!
//! Why a payload and not the disk image: the disk image's kernel sits inside a FAT on the
//! ESP, which an upgrade would have to parse from a stream, and half of the image (ESP,
//! empty slot B, DATA) would be downloaded only to be thrown away. The payload is the two
//! things a slot holds, in the order they are written, each with its hash.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const HEADER_BYTES: usize = 4096;
pub const MAGIC: &str = "nomados-slot-payload 1";

pub fn header(
    version: &str,
    kernel_bytes: u64,
    kernel_sha256: &str,
    root_bytes: u64,
    root_sha256: &str,
) -> Result<Vec<u8>> {
    if version.is_empty() || version.len() > 128 || version.contains(char::is_whitespace) {
        bail!("version `{version}` must be 1 to 128 characters without spaces");
    }
    let mut b = format!(
        "{MAGIC}\nversion={version}\nkernel_bytes={kernel_bytes}\nkernel_sha256={kernel_sha256}\n\
         root_bytes={root_bytes}\nroot_sha256={root_sha256}\n"
    )
    .into_bytes();
    b.resize(HEADER_BYTES, 0);
    Ok(b)
}

/// Writes the payload atomically (temp file, rename).
pub fn write(out: &Path, version: &str, kernel: &Path, root_fs: &Path) -> Result<()> {
    let kernel_bytes = std::fs::metadata(kernel)?.len();
    let root_bytes = std::fs::metadata(root_fs)?.len();
    let head = header(
        version,
        kernel_bytes,
        &crate::tools::sha256_file(kernel)?,
        root_bytes,
        &crate::tools::sha256_file(root_fs)?,
    )?;
    let tmp = out.with_extension("slot.tmp");
    {
        let mut f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(&head)?;
        for part in [kernel, root_fs] {
            let mut src = File::open(part).with_context(|| format!("open {}", part.display()))?;
            std::io::copy(&mut src, &mut f)
                .with_context(|| format!("copy {} into {}", part.display(), tmp.display()))?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("rename to {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_header_kernel_root_in_order() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("k");
        let r = d.path().join("r");
        std::fs::write(&k, b"kernel").unwrap();
        std::fs::write(&r, vec![7u8; 8192]).unwrap();
        let out = d.path().join("nomados.slot");
        write(&out, "1.2.3", &k, &r).unwrap();
        let b = std::fs::read(&out).unwrap();
        assert_eq!(b.len(), 4096 + 6 + 8192);
        let text = std::str::from_utf8(&b[..b.iter().position(|&c| c == 0).unwrap()]).unwrap();
        assert!(text.starts_with("nomados-slot-payload 1\nversion=1.2.3\nkernel_bytes=6\n"));
        assert!(text.contains("root_bytes=8192\n"));
        assert!(text.contains(&format!(
            "kernel_sha256={}\n",
            crate::tools::sha256_file(&k).unwrap()
        )));
        assert_eq!(&b[4096..4102], b"kernel");
        assert!(header("a b", 1, "", 1, "").is_err());
    }
}
