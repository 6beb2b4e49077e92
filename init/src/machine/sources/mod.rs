//! Where the machine's configuration comes from, tried in this order; the first source
//! that is present wins (a present source that fails ends the search: the baked
//! configuration stays, rather than a surprise from a later source):
//!
//! 1. `nomados.config=<url>` on the kernel command line ([`url`]);
//! 2. a config drive, NoCloud `cidata` or OpenStack `config-2` ([`drive`]);
//! 3. QEMU's fw_cfg entry `opt/nomados/user-data`;
//! 4. the cloud metadata services ([`crate::machine::providers`]);
//! 5. a user data baked into the image (`/etc/nomados/user-data.toml`).

pub mod drive;
pub mod url;

use std::time::Duration;

use crate::machine::found::{Facts, Found};
use crate::machine::paths;
use crate::machine::userdata::MAX_USER_DATA_BYTES;
use crate::sys::root::Root;

/// fw_cfg's file for the user data (`-fw_cfg name=opt/nomados/user-data,file=...`).
pub const FW_CFG_USER_DATA: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/nomados/user-data/raw";

/// What the sources need to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub root: Root,
    pub url: Option<String>,
    pub url_sha256: Option<String>,
    pub url_limits: url::Limits,
    /// How long the cloud metadata services get, all together.
    pub providers_deadline: Duration,
}

/// A source that is present but could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct SourceFailed {
    pub source_name: &'static str,
    pub message: String,
}

/// Tries each source in order; `Ok(None)` when none is present.
///
/// On Azure the wireserver must hear "ready" whichever source answered (else Azure marks the
/// VM as failed to provision), so it is told here when the metadata service was not asked.
pub async fn find(opts: &Options) -> Result<Option<Found>, SourceFailed> {
    let found = find_first(opts).await;
    let asked_azure = matches!(&found, Ok(Some(f)) if f.source == "azure");
    if !asked_azure && !opts.root.is_test() {
        crate::machine::providers::report_ready_if_azure(opts.providers_deadline).await;
    }
    found
}

async fn find_first(opts: &Options) -> Result<Option<Found>, SourceFailed> {
    let failed = |source_name: &'static str, e: &dyn std::fmt::Display| SourceFailed {
        source_name,
        message: e.to_string(),
    };
    if let Some(u) = &opts.url {
        crate::info!(
            "machine config: fetching {} (kernel command line{})",
            crate::redact::url(u),
            if opts.url_sha256.is_some() {
                ", sha256 given"
            } else {
                ""
            }
        );
        let body = url::fetch(u, opts.url_sha256.as_deref(), &opts.url_limits)
            .await
            .map_err(|e| failed("cmdline-url", &e))?;
        return Ok(Some(Found {
            source: "cmdline-url",
            user_data: Some(body),
            facts: Facts::default(),
        }));
    }
    crate::debug!("machine config: no nomados.config URL on the kernel command line");

    let root = &opts.root;
    if root.is_test() {
        crate::info!("machine config: test mode: config drives are not probed (would mount the host's devices)");
    } else if let Some((dev, kind, fstype)) =
        drive::find(&root.path("/dev"), &root.path("/sys/class/block"))
    {
        crate::info!(
            "machine config: {} drive on {} ({fstype})",
            kind.source(),
            dev.display()
        );
        let mount_point = root.path(paths::RUN_DIR).join(".config-drive");
        return drive::read_device(&dev, kind, fstype, &mount_point)
            .map(Some)
            .map_err(|e| failed(kind.source(), &format!("{e:#}")));
    }
    crate::debug!("machine config: no config drive");

    let fw_cfg = root.path(FW_CFG_USER_DATA);
    match crate::fsutil::read_bounded(&fw_cfg, MAX_USER_DATA_BYTES) {
        Ok(bytes) => {
            return Ok(Some(Found {
                source: "fw_cfg",
                user_data: Some(bytes),
                facts: Facts::default(),
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::debug!("machine config: no fw_cfg entry opt/nomados/user-data")
        }
        Err(e) => return Err(failed("fw_cfg", &format!("{}: {e}", fw_cfg.display()))),
    }

    if let Some(found) = crate::machine::providers::discover(opts.providers_deadline).await {
        return Ok(Some(found));
    }
    crate::debug!("machine config: no cloud metadata service answered");

    let baked = root.path(paths::BAKED_USER_DATA);
    match crate::fsutil::read_bounded(&baked, MAX_USER_DATA_BYTES) {
        Ok(bytes) => Ok(Some(Found {
            source: "baked",
            user_data: Some(bytes),
            facts: Facts::default(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failed("baked", &format!("{}: {e}", baked.display()))),
    }
}

/// One line for the log: what a source provided (facts and sizes; never the content).
pub fn describe(found: &Found) -> String {
    let f = &found.facts;
    let mut facts = Vec::new();
    for (k, v) in [
        ("instance_id", &f.instance_id),
        ("hostname", &f.hostname),
        ("region", &f.region),
        ("zone", &f.zone),
        ("instance_type", &f.instance_type),
    ] {
        if let Some(v) = v {
            facts.push(format!("{k}={v}"));
        }
    }
    let data = match &found.user_data {
        Some(b) => format!("user data ({} bytes)", b.len()),
        None => "no user data".into(),
    };
    if facts.is_empty() {
        format!("{} answered: {data}", found.source)
    } else {
        format!(
            "{} answered: {data}; facts {}",
            found.source,
            facts.join(" ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(root: &std::path::Path) -> Options {
        Options {
            root: Root::test(root),
            url: None,
            url_sha256: None,
            url_limits: url::Limits::default(),
            providers_deadline: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn fw_cfg_comes_before_the_baked_user_data() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        assert!(find(&o).await.unwrap().is_none(), "nothing present");
        let baked = dir.path().join("etc/nomados/user-data.toml");
        std::fs::create_dir_all(baked.parent().unwrap()).unwrap();
        std::fs::write(&baked, "# baked\n").unwrap();
        let f = find(&o).await.unwrap().unwrap();
        assert_eq!(f.source, "baked");
        let fw = dir.path().join(FW_CFG_USER_DATA.trim_start_matches('/'));
        std::fs::create_dir_all(fw.parent().unwrap()).unwrap();
        std::fs::write(&fw, "# from fw_cfg\n").unwrap();
        let f = find(&o).await.unwrap().unwrap();
        assert_eq!(f.source, "fw_cfg");
        assert_eq!(f.user_data.as_deref(), Some(&b"# from fw_cfg\n"[..]));
        assert_eq!(describe(&f), "fw_cfg answered: user data (14 bytes)");
    }

    #[tokio::test]
    async fn a_failing_url_ends_the_search_instead_of_falling_through() {
        let dir = tempfile::tempdir().unwrap();
        let fw = dir.path().join(FW_CFG_USER_DATA.trim_start_matches('/'));
        std::fs::create_dir_all(fw.parent().unwrap()).unwrap();
        std::fs::write(&fw, "# from fw_cfg\n").unwrap();
        let mut o = opts(dir.path());
        // Nothing listens on port 9 of loopback.
        o.url = Some("http://127.0.0.1:9/user-data".into());
        o.url_limits = url::Limits {
            deadline: Duration::from_millis(500),
            attempts: 2,
            first_backoff: Duration::from_millis(10),
            ..url::Limits::default()
        };
        let e = find(&o).await.unwrap_err();
        assert_eq!(e.source_name, "cmdline-url");
        assert!(
            e.to_string()
                .starts_with("cmdline-url: http://127.0.0.1:9/user-data:"),
            "{e}"
        );
    }

    #[test]
    fn describe_names_facts_never_content() {
        let f = Found {
            source: "nocloud",
            user_data: Some(b"[secrets]\nnomad_token = \"t0k\"\n".to_vec()),
            facts: Facts {
                instance_id: Some("iid-1".into()),
                hostname: Some("n1".into()),
                ..Facts::default()
            },
        };
        let d = describe(&f);
        assert_eq!(
            d,
            "nocloud answered: user data (30 bytes); facts instance_id=iid-1 hostname=n1"
        );
    }
}
