//! `nomados.install*` on the kernel command line: what to install where (pure parser).
//!
//! ```text
//! nomados.install=/dev/vda                   the target disk (whole disk, under /dev)
//! nomados.install.image=http://host/x.raw.xz the system image (raw, or xz-compressed raw)
//! nomados.install.sha256=<64 hex>            SHA-256 of that file as served (required)
//! nomados.install.image=iso                  the image the booted ISO carries (default)
//! nomados.install.wipe=1                     overwrite partitions and filesystems found
//! nomados.install.deadline=SECS              bound of the installer's run (default 3 h)
//! ```
//!
//! The same request can come from the user data's `[install]` table
//! (`crate::machine::userdata`); [`decide`] says which one a boot follows: the command line
//! wins. The machine-config child hands a user data request to PID 1 as these same words
//! ([`to_words`], read back with [`from_cmdline`]), so there is one parser.

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
            // Read by [`deadline_from`]: it bounds the run, not the request.
            "nomados.install.deadline" => {}
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

/// How long an install may run when nothing says otherwise: a slow link and a big disk.
pub const DEFAULT_DEADLINE_SECS: u64 = 3 * 3600;

/// `nomados.install.deadline=SECS` from the kernel command line (bounded to 10 minutes .. 1
/// day; missing or unreadable: 3 hours). It bounds the installer's whole run, from the
/// command line's request or the user data's.
pub fn deadline_from(cmdline: &str) -> std::time::Duration {
    let secs = crate::boot::cmdline::words(cmdline)
        .iter()
        .filter_map(|w| w.strip_prefix("nomados.install.deadline="))
        .next_back()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(DEFAULT_DEADLINE_SECS, |s| s.clamp(600, 86_400));
    std::time::Duration::from_secs(secs)
}

/// The request as the command-line words [`from_cmdline`] reads back.
pub fn to_words(req: &Request) -> String {
    let mut w = vec![format!("nomados.install={}", req.target.display())];
    match &req.source {
        ImageSource::Url { url, sha256 } => {
            w.push(format!("nomados.install.image={url}"));
            w.push(format!("nomados.install.sha256={sha256}"));
        }
        ImageSource::Iso(None) => w.push("nomados.install.image=iso".into()),
        ImageSource::Iso(Some(p)) => w.push(format!("nomados.install.image=iso:{}", p.display())),
    }
    if req.wipe {
        w.push("nomados.install.wipe=1".into());
    }
    w.join(" ")
}

/// Where the install request a boot follows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cmdline,
    UserData,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Cmdline => "kernel command line",
            Origin::UserData => "user data's [install]",
        })
    }
}

/// What a boot does about installing, and what to say about the request it does not follow.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub install: Option<(Request, Origin)>,
    /// Warnings for the console: an ignored or broken request.
    pub notes: Vec<String>,
}

/// Where this boot's root filesystem is, from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Booted {
    /// In RAM: the PXE initramfs, or the ISO (which boots that same initramfs). Install
    /// media: no `root=`, no `nomados.slot=`.
    InstallMedia,
    /// On a disk: a slot of an installed or imaged disk (`nomados.slot=`, put there by each
    /// boot loader entry) or any other `root=`; the text says which, for the console.
    Disk(String),
}

/// [`Booted`] from the kernel command line's words.
pub fn booted_from(cmdline: &str) -> Booted {
    let words = crate::boot::cmdline::words(cmdline);
    let last = |key: &str| {
        words
            .iter()
            .filter_map(|w| w.strip_prefix(key))
            .next_back()
            .map(str::to_string)
    };
    if let Some(slot) = last("nomados.slot=") {
        return Booted::Disk(format!("slot {slot}"));
    }
    match last("root=") {
        Some(root) => Booted::Disk(format!("root={root}")),
        None => Booted::InstallMedia,
    }
}

/// The command line wins when both ask: it is what the operator typed for this one boot
/// (a boot prompt, a PXE entry), the user data is what the whole fleet is told. A broken
/// command-line request installs nothing at all (not the user data's either): the operator
/// meant something for this boot that cannot be done safely. The user data's request is
/// followed only on a boot from install media: the installed system (or any disk) boots
/// with the same user data, and acting on it there would install again at every boot.
pub fn decide(
    cmdline: Result<Option<Request>, String>,
    user_data: Option<Request>,
    booted: &Booted,
) -> Decision {
    match (cmdline, user_data) {
        (Ok(Some(c)), u) => Decision {
            notes: u
                .filter(|u| u != &c)
                .map(|u| {
                    format!(
                        "the user data's [install] ({}) is ignored: the kernel command line's                          request wins",
                        u.target.display()
                    )
                })
                .into_iter()
                .collect(),
            install: Some((c, Origin::Cmdline)),
        },
        (Err(e), u) => Decision {
            install: None,
            notes: vec![format!(
                "kernel command line: {e}; not installing{}",
                if u.is_some() {
                    " (nor from the user data's [install]: the command line's request wins)"
                } else {
                    ""
                }
            )],
        },
        (Ok(None), Some(u)) => match booted {
            Booted::InstallMedia => Decision {
                install: Some((u, Origin::UserData)),
                notes: Vec::new(),
            },
            Booted::Disk(from) => Decision {
                install: None,
                notes: vec![format!(
                    "the user data's [install] ({}) is ignored: this machine runs from its disk ({from}); [install] is followed only on a boot from install media (PXE, the ISO)",
                    u.target.display()
                )],
            },
        },
        (Ok(None), None) => Decision::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: Booted = Booted::InstallMedia;
    const SHA: &str = "9F2C000000000000000000000000000000000000000000000000000000000000";

    fn req(target: &str, wipe: bool) -> Request {
        Request {
            target: target.into(),
            source: ImageSource::Iso(None),
            wipe,
        }
    }

    #[test]
    fn words_read_back_as_the_same_request() {
        for r in [
            req("/dev/sda", false),
            req("/dev/nvme0n1", true),
            Request {
                target: "/dev/vda".into(),
                source: ImageSource::Url {
                    url: "https://h.example/n.raw.xz?x=1".into(),
                    sha256: SHA.to_ascii_lowercase(),
                },
                wipe: true,
            },
            Request {
                target: "/dev/sdb".into(),
                source: ImageSource::Iso(Some("/dev/sr0".into())),
                wipe: false,
            },
        ] {
            assert_eq!(from_cmdline(&to_words(&r)), Ok(Some(r.clone())), "{r:?}");
        }
    }

    #[test]
    fn the_command_line_wins_over_the_user_data() {
        let (c, u) = (req("/dev/vda", false), req("/dev/sda", true));
        let d = decide(Ok(Some(c.clone())), Some(u.clone()), &RAM);
        assert_eq!(d.install, Some((c.clone(), Origin::Cmdline)));
        assert_eq!(d.notes.len(), 1);
        assert!(
            d.notes[0].contains("/dev/sda") && d.notes[0].contains("wins"),
            "{d:?}"
        );
        // The same request twice is nothing to warn about.
        assert!(decide(Ok(Some(c.clone())), Some(c.clone()), &RAM)
            .notes
            .is_empty());

        let d = decide(Ok(None), Some(u.clone()), &RAM);
        assert_eq!(d.install, Some((u.clone(), Origin::UserData)));
        assert!(d.notes.is_empty());
        assert_eq!(
            decide(Ok(Some(c.clone())), None, &RAM).install,
            Some((c, Origin::Cmdline))
        );
        assert_eq!(decide(Ok(None), None, &RAM), Decision::default());
    }

    #[test]
    fn a_machine_running_from_its_disk_ignores_the_user_datas_install() {
        let u = req("/dev/sda", false);
        for (cmdline, from) in [
            (
                "console=ttyS0,115200 root=PARTUUID=0a1b rootfstype=ext4 rw panic=10 nomados.slot=b",
                "slot b",
            ),
            ("console=ttyS0 root=/dev/vda2 rw", "root=/dev/vda2"),
        ] {
            let booted = booted_from(cmdline);
            assert_eq!(booted, Booted::Disk(from.into()));
            let d = decide(Ok(None), Some(u.clone()), &booted);
            assert_eq!(d.install, None, "{cmdline}");
            assert_eq!(d.notes.len(), 1, "said once: {d:?}");
            assert!(
                d.notes[0].contains("[install] (/dev/sda) is ignored")
                    && d.notes[0].contains(&format!("runs from its disk ({from})")),
                "{d:?}"
            );
        }
        // The PXE initramfs and the ISO: no root=, no slot.
        let pxe = booted_from("console=tty0 console=ttyS0,115200");
        assert_eq!(pxe, Booted::InstallMedia);
        assert_eq!(
            decide(Ok(None), Some(u.clone()), &pxe).install,
            Some((u.clone(), Origin::UserData))
        );
        // The kernel command line's request stays as it is, whatever the boot.
        let c = req("/dev/vda", false);
        let disk = booted_from("root=PARTUUID=x nomados.slot=a");
        assert_eq!(
            decide(Ok(Some(c.clone())), Some(u), &disk).install,
            Some((c, Origin::Cmdline))
        );
    }

    #[test]
    fn a_broken_command_line_installs_nothing_not_even_the_user_data() {
        let d = decide(
            Err("nomados.install=vda: expected a disk under /dev".into()),
            Some(req("/dev/sda", true)),
            &RAM,
        );
        assert_eq!(d.install, None);
        assert!(d.notes[0].contains("nomados.install=vda"), "{d:?}");
        assert!(d.notes[0].contains("nor from the user data"), "{d:?}");
        let d = decide(Err("bad".into()), None, &RAM);
        assert_eq!(
            (d.install, d.notes),
            (
                None,
                vec!["kernel command line: bad; not installing".to_string()]
            )
        );
    }

    #[test]
    fn the_deadline_comes_from_the_command_line_bounded() {
        let d = |c: &str| deadline_from(c).as_secs();
        assert_eq!(d("console=ttyS0"), DEFAULT_DEADLINE_SECS);
        assert_eq!(d("nomados.install.deadline=1800"), 1800);
        assert_eq!(d("nomados.install.deadline=5"), 600);
        assert_eq!(d("nomados.install.deadline=999999"), 86_400);
        assert_eq!(d("nomados.install.deadline=soon"), DEFAULT_DEADLINE_SECS);
        // Not an unknown install option, and not a request by itself.
        assert_eq!(from_cmdline("nomados.install.deadline=1800"), Ok(None));
        assert!(
            from_cmdline("nomados.install=/dev/vda nomados.install.deadline=1800")
                .unwrap()
                .is_some()
        );
    }

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
