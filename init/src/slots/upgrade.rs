//! `nomad-init upgrade`: stream a slot payload ([`super::payload`]) into the inactive slot,
//! hashing while writing and reading back after, then arm a one-time trial boot.
//! Machine discovery (sysfs, mounting the ESP) lives in the CLI; this module takes paths,
//! so it runs against plain files in tests.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::esp::Esp;
use super::payload::{Header, HEADER_BYTES};
use super::record::Slot;

/// The environment variable that carries the source when the command line leaves it out
/// (how PID 1 passes a URL that may carry credentials: argv is world-readable).
pub const SOURCE_ENV: &str = "NOMADOS_UPGRADE_SOURCE";

/// Where the new system goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub esp: Esp,
    pub slot: Slot,
    /// The slot's root partition (a regular file in tests).
    pub device: PathBuf,
}

/// Where the payload comes from: a local file or an http(s) URL.
#[derive(Debug)]
enum Source {
    File(File),
    Http(reqwest::Response),
}

const CHUNK: usize = 1 << 20;

impl Source {
    async fn open(src: &str, timeout: Duration) -> Result<(Source, Option<u64>)> {
        if src.starts_with("http://") || src.starts_with("https://") {
            let url = reqwest::Url::parse(src).with_context(|| format!("bad URL `{src}`"))?;
            let shown = redacted(&url);
            let client = reqwest::Client::builder()
                .connect_timeout(timeout)
                .read_timeout(timeout)
                .user_agent(concat!("nomados-init/", env!("CARGO_PKG_VERSION")))
                .build()?;
            let resp = client
                .get(url)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("GET {shown}: {}", chain(e)))?;
            if !resp.status().is_success() {
                bail!("GET {shown}: HTTP {}", resp.status());
            }
            let len = resp.content_length();
            Ok((Source::Http(resp), len))
        } else {
            let f = File::open(src).with_context(|| format!("open {src}"))?;
            let md = f.metadata()?;
            if !md.is_file() {
                bail!("{src} is not a regular file");
            }
            Ok((Source::File(f), Some(md.len())))
        }
    }

    async fn chunk(&mut self) -> Result<Option<Vec<u8>>> {
        match self {
            Source::File(f) => {
                let mut buf = vec![0u8; CHUNK];
                let n = f.read(&mut buf)?;
                buf.truncate(n);
                Ok((n > 0).then_some(buf))
            }
            Source::Http(r) => Ok(r
                .chunk()
                .await
                .map_err(|e| anyhow::anyhow!("download broke off: {}", chain(e)))?
                .map(|b| b.to_vec())),
        }
    }
}

/// A reqwest error with its causes, without the URL (which may hold credentials).
fn chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        s += &format!(": {c}");
        cause = c.source();
    }
    s
}

/// A URL without user info or query (either may carry a secret).
fn redacted(u: &reqwest::Url) -> String {
    format!(
        "{}://{}{}{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.port().map(|p| format!(":{p}")).unwrap_or_default(),
        u.path()
    )
}

/// Progress lines: at most one per 5 % (and the last).
#[derive(Debug)]
struct Progress {
    total: u64,
    done: u64,
    shown_pct: u64,
    start: Instant,
}

impl Progress {
    fn advance(&mut self, n: u64, out: &mut dyn FnMut(&str)) {
        self.done += n;
        let pct = self.done.saturating_mul(100) / self.total.max(1);
        if pct >= self.shown_pct + 5 || (self.done == self.total && pct != self.shown_pct) {
            self.shown_pct = pct;
            let secs = self.start.elapsed().as_secs_f64().max(0.001);
            // Display only: precision loss in these figures does not matter.
            #[allow(clippy::cast_precision_loss)]
            let mib = |b: u64| b as f64 / 1_048_576.0;
            out(&format!(
                "{:.1} MiB of {:.1} MiB written ({pct}%), {:.1} MiB/s",
                mib(self.done),
                mib(self.total),
                mib(self.done) / secs
            ));
        }
    }
}

/// Writes `data` into whichever parts of the payload it covers, hashing each part.
struct Sinks<'a> {
    header: Vec<u8>,
    parsed: Option<Header>,
    kernel: &'a mut File,
    kernel_hash: Sha256,
    root: &'a mut File,
    root_hash: Sha256,
    all_hash: Sha256,
    pos: u64,
    root_limit: u64,
}

impl Sinks<'_> {
    fn take(&mut self, mut data: &[u8]) -> Result<()> {
        self.all_hash.update(data);
        while !data.is_empty() {
            if self.header.len() < HEADER_BYTES {
                let n = (HEADER_BYTES - self.header.len()).min(data.len());
                self.header.extend_from_slice(&data[..n]);
                data = &data[n..];
                self.pos += n as u64;
                if self.header.len() == HEADER_BYTES {
                    let h = Header::parse(&self.header).map_err(anyhow::Error::msg)?;
                    if h.root_bytes > self.root_limit {
                        bail!(
                            "the new root filesystem is {} bytes; the slot holds {}",
                            h.root_bytes,
                            self.root_limit
                        );
                    }
                    self.parsed = Some(h);
                }
                continue;
            }
            let Some(h) = &self.parsed else {
                bail!("internal: no header")
            };
            let k_end = HEADER_BYTES as u64 + h.kernel_bytes;
            let total = h.total_bytes();
            if self.pos >= total {
                bail!("the payload is longer than its header says ({total} bytes)");
            }
            let (sink, hash, end) = if self.pos < k_end {
                (&mut *self.kernel, &mut self.kernel_hash, k_end)
            } else {
                (&mut *self.root, &mut self.root_hash, total)
            };
            let n = usize::try_from(end - self.pos)
                .unwrap_or(usize::MAX)
                .min(data.len());
            sink.write_all(&data[..n])?;
            hash.update(&data[..n]);
            self.pos += n as u64;
            data = &data[n..];
        }
        Ok(())
    }
}

/// Parses `--sha256`.
pub fn parse_sha256(s: &str) -> Result<String> {
    let s = s.trim().to_ascii_lowercase();
    if s.len() != 64 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        bail!("--sha256 must be 64 hex digits, got {} characters", s.len());
    }
    Ok(s)
}

fn device_bytes(f: &File) -> Result<u64> {
    let md = f.metadata()?;
    if md.is_file() {
        return Ok(md.len());
    }
    Ok(crate::sys::block::size_bytes(f)?)
}

/// Hash of the first `n` bytes of `f`, read back from the start.
fn hash_prefix(f: &mut File, n: u64) -> Result<String> {
    f.seek(SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    let mut left = n;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        f.read_exact(&mut buf[..want])?;
        h.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(hex::encode(h.finalize()))
}

/// Streams `src` into `target` and verifies it; does not arm the trial (the caller does,
/// once this returned Ok). Returns the payload's header.
pub async fn write_slot(
    src: &str,
    target: &Target,
    expected_sha256: Option<&str>,
    io_timeout: Duration,
    out: &mut dyn FnMut(&str),
) -> Result<Header> {
    let (mut source, announced) = Source::open(src, io_timeout).await?;
    // The slot is about to hold something else: its info must not name the old payload.
    let info = target.esp.path(&super::wanted::slot_info_path(target.slot));
    match std::fs::remove_file(&info) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove {}", info.display()))
        }
        _ => {}
    }
    let kdir = target
        .esp
        .path(&format!("nomados/{}", target.slot.letter()));
    std::fs::create_dir_all(&kdir).with_context(|| format!("create {}", kdir.display()))?;
    let kernel_path = target.esp.path(&target.slot.kernel_on_esp());
    let kernel_tmp = kernel_path.with_extension("new");
    let mut kernel =
        File::create(&kernel_tmp).with_context(|| format!("create {}", kernel_tmp.display()))?;
    let mut root = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&target.device)
        .with_context(|| format!("open slot {} ({})", target.slot, target.device.display()))?;
    let root_limit = device_bytes(&root)?;
    let mut sinks = Sinks {
        header: Vec::with_capacity(HEADER_BYTES),
        parsed: None,
        kernel: &mut kernel,
        kernel_hash: Sha256::new(),
        root: &mut root,
        root_hash: Sha256::new(),
        all_hash: Sha256::new(),
        pos: 0,
        root_limit,
    };
    let mut progress: Option<Progress> = None;
    while let Some(chunk) = source.chunk().await? {
        sinks.take(&chunk)?;
        if let (None, Some(h)) = (&progress, &sinks.parsed) {
            if let Some(len) = announced {
                if len != h.total_bytes() {
                    bail!(
                        "the payload is {len} bytes but its header says {}; truncated or not a slot payload",
                        h.total_bytes()
                    );
                }
            }
            out(&format!(
                "NomadOS {} into slot {} ({}): kernel {} bytes, root filesystem {} bytes",
                h.version,
                target.slot,
                target.device.display(),
                h.kernel_bytes,
                h.root_bytes
            ));
            progress = Some(Progress {
                total: h.total_bytes(),
                done: 0,
                shown_pct: 0,
                start: Instant::now(),
            });
        }
        if let Some(p) = progress.as_mut() {
            p.advance(chunk.len() as u64, out);
        }
    }
    let Some(header) = sinks.parsed.clone() else {
        bail!("the payload ended inside its 4096-byte header");
    };
    if sinks.pos != header.total_bytes() {
        bail!(
            "the payload ended after {} of {} bytes",
            sinks.pos,
            header.total_bytes()
        );
    }
    let all = hex::encode(sinks.all_hash.clone().finalize());
    let kernel_sum = hex::encode(sinks.kernel_hash.clone().finalize());
    let root_sum = hex::encode(sinks.root_hash.clone().finalize());
    if let Some(want) = expected_sha256 {
        if all != want {
            bail!("payload SHA-256 is {all}, expected {want}; the slot is not armed");
        }
    }
    if kernel_sum != header.kernel_sha256 || root_sum != header.root_sha256 {
        bail!("the payload's kernel or root filesystem does not match the hashes in its header");
    }
    kernel.sync_all()?;
    root.sync_all()?;
    out("written; reading back to verify");
    if hash_prefix(&mut kernel_reopen(&kernel_tmp)?, header.kernel_bytes)? != header.kernel_sha256 {
        bail!(
            "the kernel read back from {} differs from what was written",
            kernel_tmp.display()
        );
    }
    if hash_prefix(&mut root, header.root_bytes)? != header.root_sha256 {
        bail!(
            "the root filesystem read back from {} differs from what was written",
            target.device.display()
        );
    }
    std::fs::rename(&kernel_tmp, &kernel_path)
        .with_context(|| format!("rename to {}", kernel_path.display()))?;
    File::open(&kdir).and_then(|d| d.sync_all())?;
    super::wanted::write_slot_info(&target.esp, target.slot, &all, &header.version)
        .with_context(|| format!("write {}", info.display()))?;
    Ok(header)
}

fn kernel_reopen(p: &Path) -> Result<File> {
    File::open(p).with_context(|| format!("open {}", p.display()))
}
