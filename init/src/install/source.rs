//! Where the image's bytes come from (effects): an HTTP(S) download read as a stream, or
//! the IMAGE.XZ the NomadOS ISO carries (read from the device at its extent).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use super::iso9660;

/// The file on the ISO holding the compressed disk image, and its SHA-256 (hex).
pub const ISO_IMAGE: &str = "IMAGE.XZ";
pub const ISO_IMAGE_SHA: &str = "IMAGE.SHA";
/// No data for this long from the server: the download is given up.
const STALL: Duration = Duration::from_secs(60);

/// An opened source: the stream, its expected SHA-256, its length when known, and a name.
pub struct Opened {
    pub reader: Box<dyn Read>,
    pub sha256: String,
    pub bytes: Option<u64>,
    pub describe: String,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("describe", &self.describe)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// The body of an HTTP response as a blocking reader (the installer is a plain process;
/// a small runtime drives reqwest underneath).
struct HttpBody {
    rt: tokio::runtime::Runtime,
    resp: reqwest::Response,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for HttpBody {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            let (rt, resp) = (&self.rt, &mut self.resp);
            let chunk = rt
                .block_on(async { tokio::time::timeout(STALL, resp.chunk()).await })
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no data from the server for {} s", STALL.as_secs()),
                    )
                })?
                .map_err(std::io::Error::other)?;
            match chunk {
                Some(b) => {
                    self.buf = b.to_vec();
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The URL without user info, query or fragment: what may be printed.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(an unparsable URL)".into(),
    }
}

/// Starts the download of `url`.
pub fn open_url(url: &str, sha256: &str) -> anyhow::Result<Opened> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shown = redacted(url);
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .build()?;
    let resp = rt
        .block_on(client.get(url).send())
        .with_context(|| format!("GET {shown}"))?;
    if !resp.status().is_success() {
        bail!("GET {shown}: {}", resp.status());
    }
    let bytes = resp.content_length();
    Ok(Opened {
        reader: Box::new(HttpBody {
            rt,
            resp,
            buf: Vec::new(),
            pos: 0,
        }),
        sha256: sha256.to_string(),
        bytes,
        describe: shown,
    })
}

/// (offset, bytes) of `name` on the ISO at `device`, when it is a NomadOS ISO.
fn locate(device: &Path, name: &str) -> anyhow::Result<(u64, u64)> {
    let mut f = File::open(device)?;
    let mut pvd = vec![0u8; iso9660::PVD_BYTES];
    f.seek(SeekFrom::Start(iso9660::PVD_OFFSET))?;
    f.read_exact(&mut pvd)?;
    let (off, len) = iso9660::root_dir(&pvd)?;
    let mut dir = vec![0u8; usize::try_from(len)?];
    f.seek(SeekFrom::Start(off))?;
    f.read_exact(&mut dir)?;
    iso9660::find(&dir, name, 2048).with_context(|| format!("no {name} on {}", device.display()))
}

/// Devices that may hold the ISO: whole disks and CD drives, in name order.
fn candidates(dev_dir: &Path, sys_class_block: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys_class_block) else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.path().join("partition").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("ram") && !n.starts_with("loop"))
        .map(|n| dev_dir.join(n))
        .collect();
    v.sort();
    v
}

/// Opens IMAGE.XZ on the ISO at `device`, or on the first device that carries one.
pub fn open_iso(
    device: Option<&Path>,
    dev_dir: &Path,
    sys_class_block: &Path,
) -> anyhow::Result<Opened> {
    let device = match device {
        Some(d) => d.to_path_buf(),
        None => candidates(dev_dir, sys_class_block)
            .into_iter()
            .find(|d| locate(d, ISO_IMAGE).is_ok())
            .context(
                "no NomadOS ISO with an IMAGE.XZ among the block devices \
                 (booted over PXE? give nomados.install.image=<url>)",
            )?,
    };
    let (off, len) = locate(&device, ISO_IMAGE)?;
    let (sha_off, sha_len) = locate(&device, ISO_IMAGE_SHA)?;
    let mut f = File::open(&device)?;
    let mut sha = vec![0u8; usize::try_from(sha_len.min(128))?];
    f.seek(SeekFrom::Start(sha_off))?;
    f.read_exact(&mut sha)?;
    let sha = String::from_utf8_lossy(&sha).trim().to_string();
    let sha = super::options::check_sha256(&sha)
        .map_err(|e| anyhow::anyhow!("{ISO_IMAGE_SHA} on {}: {e}", device.display()))?;
    f.seek(SeekFrom::Start(off))?;
    Ok(Opened {
        reader: Box::new(f.take(len)),
        sha256: sha,
        bytes: Some(len),
        describe: format!("{ISO_IMAGE} on {}", device.display()),
    })
}

#[cfg(test)]
// Fixtures are small: their sizes fit every integer type.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn printed_urls_carry_no_credentials() {
        assert_eq!(
            redacted("https://user:pw@host:8080/a/b.raw.xz?token=s3cret#x"),
            "https://host:8080/a/b.raw.xz"
        );
        assert_eq!(redacted("not a url"), "(an unparsable URL)");
    }

    #[test]
    fn downloads_from_a_real_http_server() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = body.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 2048];
            let _ = s.read(&mut req).unwrap();
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                served.len()
            )
            .unwrap();
            s.write_all(&served).unwrap();
        });
        let mut o = open_url(&format!("http://{addr}/img"), &"0".repeat(64)).unwrap();
        assert_eq!(o.bytes, Some(body.len() as u64));
        let mut got = Vec::new();
        o.reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, body);
    }
}
