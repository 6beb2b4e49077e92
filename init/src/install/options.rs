//! `nomados.install*` on the kernel command line: what to install where (pure parser).
//!
//! ```text
//! nomados.install=/dev/vda                   the target disk (whole disk, under /dev)
//! nomados.install.image=http://host/x.raw.xz the system image (raw, or xz-compressed raw)
//! nomados.install.sha256=<64 hex>            SHA-256 of that file as served (required)
//! nomados.install.image=iso                  the image the booted ISO carries (default)
//! nomados.install.wipe=1                     overwrite partitions and filesystems found
//! ```

use std::path::PathBuf;

/// Where the system image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An http(s) URL, checked against the SHA-256 given with it.
    Url { url: String, sha256: String },
    /// The compressed image on the NomadOS ISO: found among the block devices, or at the
    /// given path (a device or an ISO file).
    Iso(Option<PathBuf>),
}

/// A complete install request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub target: PathBuf,
    pub source: ImageSource,
    pub wipe: bool,
}

/// A target must be a device node directly under /dev (`/dev/vda`, `/dev/nvme0n1`).
pub fn check_target(t: &str) -> Result<PathBuf, String> {
    let name = t
        .strip_prefix("/dev/")
        .filter(|n| !n.is_empty() && !n.contains('/') && n != &"." && n != &"..")
        .ok_or_else(|| format!("nomados.install={t}: expected a disk under /dev, like /dev/vda"))?;
    Ok(PathBuf::from("/dev").join(name))
}

/// A SHA-256 in hex, lower-cased.
pub fn check_sha256(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "nomados.install.sha256: expected 64 hex digits, got {} characters",
            s.len()
        ))
    }
}

/// Parses the image source words: `iso`, `iso:/path`, or an http(s) URL with its hash.
pub fn source(image: Option<&str>, sha256: Option<&str>) -> Result<ImageSource, String> {
    if let Some(s) = sha256 {
        check_sha256(s)?;
    }
    match image {
        None | Some("iso") => Ok(ImageSource::Iso(None)),
        Some(i) if i.starts_with("iso:/") => Ok(ImageSource::Iso(Some(PathBuf::from(&i[4..])))),
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            let sha256 = sha256.ok_or(
                "nomados.install.image is a URL but nomados.install.sha256 is missing: an unverified image is never installed",
            )?;
            Ok(ImageSource::Url {
                url: u.to_string(),
                sha256: check_sha256(sha256)?,
            })
        }
        Some(other) => Err(format!(
            "nomados.install.image={other}: expected an http(s) URL, iso, or iso:/path"
        )),
    }
}

/// `Ok(None)` when the command line asks for no install; an error names the bad word.
pub fn from_cmdline(cmdline: &str) -> Result<Option<Request>, String> {
    let mut target = None;
    let mut image = None;
    let mut sha256 = None;
    let mut wipe = false;
    for word in crate::boot::cmdline::words(cmdline) {
        let Some((key, value)) = word.split_once('=') else {
            if word == "nomados.install.wipe" {
                wipe = true;
            }
            continue;
        };
        match key {
            "nomados.install" => target = Some(value.to_string()),
            "nomados.install.image" => image = Some(value.to_string()),
            "nomados.install.sha256" => sha256 = Some(value.to_string()),
            "nomados.install.wipe" => {
                wipe = match value {
                    "1" | "yes" | "true" | "on" => true,
                    "0" | "no" | "false" | "off" => false,
                    v => return Err(format!("nomados.install.wipe={v}: expected 0 or 1")),
                }
            }
            k if k.starts_with("nomados.install.") => {
                return Err(format!("unknown install option {key}"));
            }
            _ => {}
        }
    }
    let Some(target) = target else {
        if image.is_some() || sha256.is_some() {
            return Err("nomados.install.* given without nomados.install=/dev/<disk>".into());
        }
        return Ok(None);
    };
    Ok(Some(Request {
        target: check_target(&target)?,
        source: source(image.as_deref(), sha256.as_deref())?,
        wipe,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9F2C000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn no_install_words_means_no_install() {
        assert_eq!(from_cmdline("console=ttyS0 nomados.debug=1"), Ok(None));
    }

    #[test]
    fn reads_a_url_install() {
        let r = from_cmdline(&format!(
            "console=ttyS0 nomados.install=/dev/vda nomados.install.image=http://10.0.2.2:8080/nomados.raw.xz nomados.install.sha256={SHA} nomados.install.wipe=1"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(r.target, PathBuf::from("/dev/vda"));
        assert!(r.wipe);
        assert_eq!(
            r.source,
            ImageSource::Url {
                url: "http://10.0.2.2:8080/nomados.raw.xz".into(),
                sha256: SHA.to_ascii_lowercase(),
            }
        );
    }

    #[test]
    fn the_iso_is_the_default_source() {
        let r = from_cmdline("nomados.install=/dev/nvme0n1")
            .unwrap()
            .unwrap();
        assert_eq!(r.source, ImageSource::Iso(None));
        assert!(!r.wipe);
        let r = from_cmdline("nomados.install=/dev/sda nomados.install.image=iso:/dev/sr0")
            .unwrap()
            .unwrap();
        assert_eq!(r.source, ImageSource::Iso(Some("/dev/sr0".into())));
    }

    #[test]
    fn refuses_what_it_cannot_do_safely() {
        let e =
            from_cmdline("nomados.install=/dev/vda nomados.install.image=http://x/y").unwrap_err();
        assert!(e.contains("sha256 is missing"), "{e}");
        let e = from_cmdline("nomados.install=vda").unwrap_err();
        assert!(e.contains("expected a disk under /dev"), "{e}");
        let e = from_cmdline("nomados.install=/dev/../etc/passwd").unwrap_err();
        assert!(e.contains("expected a disk under /dev"), "{e}");
        let e = from_cmdline(&format!(
            "nomados.install=/dev/vda nomados.install.image=ftp://x nomados.install.sha256={SHA}"
        ))
        .unwrap_err();
        assert!(e.contains("ftp://x"), "{e}");
        let e = from_cmdline("nomados.install=/dev/vda nomados.install.sha256=abc").unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
        let e = from_cmdline("nomados.install=/dev/vda nomados.install.wipe=maybe").unwrap_err();
        assert!(e.contains("expected 0 or 1"), "{e}");
        let e = from_cmdline("nomados.install.image=iso").unwrap_err();
        assert!(e.contains("without nomados.install="), "{e}");
    }
}
