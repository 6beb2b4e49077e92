//! The slot payload `nomados-image` writes next to the disk image (`nomados.slot`): what an
//! upgrade streams into the inactive slot. A 4 KiB text header, then the kernel, then the
//! root filesystem (ext4, only its own size, not the partition's):
//!
//! ```text
//! nomados-slot-payload 1
//! version=0.1.0
//! kernel_bytes=5976064
//! kernel_sha256=<64 hex>
//! root_bytes=37748736
//! root_sha256=<64 hex>
//! ```
//! padded with NUL bytes to 4096. The file's own SHA-256 (what `--sha256` checks, and what
//! the build manifest lists) covers the header, so the inner hashes are trusted when it is
//! given; they let the upgrade check again what landed on the disk.

pub const HEADER_BYTES: usize = 4096;
pub const MAGIC: &str = "nomados-slot-payload 1";
/// Bounds on what a header may announce: a kernel, and a root filesystem.
pub const KERNEL_MAX: u64 = 256 * 1024 * 1024;
pub const ROOT_MAX: u64 = 64 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: String,
    pub kernel_bytes: u64,
    pub kernel_sha256: String,
    pub root_bytes: u64,
    pub root_sha256: String,
}

impl Header {
    pub fn total_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + self.kernel_bytes + self.root_bytes
    }

    pub fn render(&self) -> Result<Vec<u8>, String> {
        let text = format!(
            "{MAGIC}\nversion={}\nkernel_bytes={}\nkernel_sha256={}\nroot_bytes={}\nroot_sha256={}\n",
            self.version, self.kernel_bytes, self.kernel_sha256, self.root_bytes, self.root_sha256
        );
        let mut b = text.into_bytes();
        if b.len() > HEADER_BYTES {
            return Err("slot payload header longer than 4096 bytes".into());
        }
        b.resize(HEADER_BYTES, 0);
        Ok(b)
    }

    pub fn parse(bytes: &[u8]) -> Result<Header, String> {
        if bytes.len() != HEADER_BYTES {
            return Err(format!("slot payload header must be {HEADER_BYTES} bytes"));
        }
        if !bytes.starts_with(format!("{MAGIC}\n").as_bytes()) {
            return Err(format!(
                "not a NomadOS slot payload (first line is not `{MAGIC}`); give the \
                 `nomados.slot` file the image build writes, not a disk image"
            ));
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        if bytes[end..].iter().any(|&b| b != 0) {
            return Err("slot payload header: bytes after the NUL padding".into());
        }
        let text = std::str::from_utf8(&bytes[..end])
            .map_err(|e| format!("slot payload header is not UTF-8: {e}"))?;
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(format!(
                "not a NomadOS slot payload (first line is not `{MAGIC}`); give the \
                 `nomados.slot` file the image build writes, not a disk image"
            ));
        }
        let (mut version, mut kb, mut ks, mut rb, mut rs) = (None, None, None, None, None);
        for (i, line) in lines.enumerate() {
            let n = i + 2;
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("slot payload header line {n}: expected key=value"))?;
            let num = |max: u64| -> Result<u64, String> {
                let x: u64 = v
                    .parse()
                    .map_err(|_| format!("slot payload header line {n}: `{k}` is not a number"))?;
                if x == 0 || x > max {
                    return Err(format!(
                        "slot payload header line {n}: `{k}`={x} is outside 1..={max}"
                    ));
                }
                Ok(x)
            };
            let sha = || -> Result<String, String> {
                if v.len() == 64 && v.bytes().all(|c| c.is_ascii_hexdigit()) {
                    Ok(v.to_ascii_lowercase())
                } else {
                    Err(format!(
                        "slot payload header line {n}: `{k}` is not a SHA-256 in hex"
                    ))
                }
            };
            match k {
                "version" if v.len() <= 128 && !v.is_empty() => version = Some(v.to_string()),
                "version" => return Err(format!("slot payload header line {n}: bad version")),
                "kernel_bytes" => kb = Some(num(KERNEL_MAX)?),
                "kernel_sha256" => ks = Some(sha()?),
                "root_bytes" => rb = Some(num(ROOT_MAX)?),
                "root_sha256" => rs = Some(sha()?),
                _ => return Err(format!("slot payload header line {n}: unknown key `{k}`")),
            }
        }
        fn need<T>(o: Option<T>, k: &str) -> Result<T, String> {
            o.ok_or(format!("slot payload header: no `{k}`"))
        }
        Ok(Header {
            version: need(version, "version")?,
            kernel_bytes: need(kb, "kernel_bytes")?,
            kernel_sha256: need(ks, "kernel_sha256")?,
            root_bytes: need(rb, "root_bytes")?,
            root_sha256: need(rs, "root_sha256")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Header {
        Header {
            version: "2.0.0".into(),
            kernel_bytes: 10,
            kernel_sha256: "a".repeat(64),
            root_bytes: 4096,
            root_sha256: "B".repeat(64).to_ascii_lowercase(),
        }
    }

    #[test]
    fn header_round_trips_at_4_kib() {
        let b = sample().render().unwrap();
        assert_eq!(b.len(), HEADER_BYTES);
        assert_eq!(Header::parse(&b).unwrap(), sample());
        assert_eq!(sample().total_bytes(), 4096 + 10 + 4096);
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        let mut disk = vec![0u8; HEADER_BYTES];
        disk[..8].copy_from_slice(b"EFI PART");
        assert!(Header::parse(&disk)
            .unwrap_err()
            .contains("not a NomadOS slot payload"));
        let edit = |from: &str, to: &str| {
            let text = String::from_utf8(sample().render().unwrap())
                .unwrap()
                .replace(from, to);
            let mut b = text.into_bytes();
            b.resize(HEADER_BYTES, 0);
            Header::parse(&b).unwrap_err()
        };
        assert!(edit("kernel_bytes=10", "kernel_bytes=0").contains("outside"));
        assert!(edit("root_bytes=4096", "root_bytes=x").contains("not a number"));
        assert!(edit(&"a".repeat(64), "abc").contains("SHA-256"));
        assert!(edit("version=2.0.0\n", "").contains("no `version`"));
        assert!(edit("version=", "colour=").contains("unknown key"));
        let mut trailing = sample().render().unwrap();
        trailing[4000] = b'x';
        assert!(Header::parse(&trailing)
            .unwrap_err()
            .contains("after the NUL"));
    }
}
