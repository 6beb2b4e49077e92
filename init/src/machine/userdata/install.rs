//! The user data's `[install]` table: install this machine to a disk, as
//! `nomados.install=` on the kernel command line does (docs/install.md). Checked into the
//! same [`Request`] the command line gives; which of the two a boot follows is
//! [`crate::install::options::decide`]'s (the command line wins).
//!
//! ```toml
//! [install]
//! target = "/dev/sda"                          # a whole disk under /dev
//! image = "https://host/nomados.raw.xz"        # or "iso" (default), "iso:/dev/sr0"
//! sha256 = "<64 hex digits>"                   # required with a URL
//! wipe = false                                 # overwrite what the disk holds
//! ```

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::install::options::{self, ImageSource, Request};

/// `[install]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallSpec {
    pub target: Spanned<String>,
    pub image: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
    #[serde(default)]
    pub wipe: bool,
}

/// The request, or every problem with where it is.
pub fn check(spec: &Spanned<InstallSpec>) -> Result<Request, Vec<(Range<usize>, String)>> {
    let s = spec.get_ref();
    let mut errors = Vec::new();
    let target = s.target.get_ref();
    let target = options::check_target(target)
        .map_err(|_| {
            errors.push((
                s.target.span(),
                format!("install.target `{target}` is not a whole disk under /dev (like /dev/sda)"),
            ))
        })
        .ok();
    let sha256 = s.sha256.as_ref().and_then(|h| {
        options::check_sha256(h.get_ref())
            .map_err(|_| {
                errors.push((
                    h.span(),
                    format!(
                        "install.sha256: expected 64 hex digits, got {} characters",
                        h.get_ref().len()
                    ),
                ))
            })
            .ok()
    });
    let source = match &s.image {
        None => Some(ImageSource::Iso(None)),
        Some(i) => {
            let v = i.get_ref();
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                errors.push((
                    i.span(),
                    "install.image: empty, or has spaces or control characters".into(),
                ));
                None
            } else if v == "iso" {
                Some(ImageSource::Iso(None))
            } else if let Some(p) = v.strip_prefix("iso:").filter(|p| p.starts_with('/')) {
                Some(ImageSource::Iso(Some(p.into())))
            } else if v.starts_with("http://") || v.starts_with("https://") {
                match (&sha256, &s.sha256) {
                    (Some(h), _) => Some(ImageSource::Url {
                        url: v.clone(),
                        sha256: h.clone(),
                    }),
                    (None, Some(_)) => None, // the bad hash is reported above
                    (None, None) => {
                        errors.push((
                            i.span(),
                            "install.image is a URL but install.sha256 is missing: an \
                             unverified image is never installed"
                                .into(),
                        ));
                        None
                    }
                }
            } else {
                errors.push((
                    i.span(),
                    format!(
                        "install.image `{}`: expected an http(s) URL, \"iso\" or \"iso:/path\"",
                        crate::redact::url(v)
                    ),
                ));
                None
            }
        }
    };
    match (target, source) {
        (Some(target), Some(source)) if errors.is_empty() => Ok(Request {
            target,
            source,
            wipe: s.wipe,
        }),
        _ => Err(errors),
    }
}
