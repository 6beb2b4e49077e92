//! The upgrade the machine's configuration asks for (`[upgrade]` of the user data,
//! docs/machine-config.md) and whether to run it now. Pure: [`decide`], the slot info file
//! (`nomados/<slot>/payload` on the ESP: what `nomad-init upgrade` wrote there) and the
//! list of payloads whose trial was rolled back (on the data partition, so that a bad image
//! is not tried again and again).

use std::path::Path;

/// What `[upgrade]` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Where the `nomados.slot` payload is (http or https); may carry credentials.
    pub url: String,
    /// The payload's SHA-256 (64 lowercase hex digits).
    pub sha256: String,
    /// The version the operator expects, for messages only.
    pub version: Option<String>,
}

impl Wanted {
    /// How messages name it: the version when given, else the hash's first 12 digits.
    pub fn name(&self) -> String {
        match &self.version {
            Some(v) => format!(
                "NomadOS {v} ({})",
                &self.sha256[..12.min(self.sha256.len())]
            ),
            None => format!("payload {}", &self.sha256[..12.min(self.sha256.len())]),
        }
    }

    /// The request as the machine directory keeps it (`upgrade.json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"url": self.url, "sha256": self.sha256, "version": self.version})
    }

    /// Reads back [`Self::to_json`]; None when it is not one.
    pub fn from_json(v: &serde_json::Value) -> Option<Wanted> {
        let sha256 = v["sha256"].as_str()?.to_string();
        let url = v["url"].as_str()?.to_string();
        (is_sha256(&sha256) && (url.starts_with("http://") || url.starts_with("https://"))).then(
            || Wanted {
                url,
                sha256,
                version: v["version"].as_str().map(str::to_string),
            },
        )
    }
}

pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether to upgrade now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run `nomad-init upgrade`.
    Upgrade,
    /// This machine runs the requested payload already.
    UpToDate,
    /// A trial of this payload was rolled back on this machine: not again.
    RolledBackBefore,
    /// Not on this boot: why.
    NotNow(&'static str),
}

/// Decides for a boot. `committed`: this boot runs the default slot (not a trial, not a
/// slot the loader fell back to or someone booted by hand). `running_sha256`: the payload
/// the running slot was written from, None for a slot no upgrade wrote (the image's first).
pub fn decide(
    wanted: &Wanted,
    committed: bool,
    running_sha256: Option<&str>,
    rolled_back: &[String],
) -> Decision {
    if !committed {
        return Decision::NotNow("this boot does not run the committed default slot");
    }
    if running_sha256 == Some(wanted.sha256.as_str()) {
        return Decision::UpToDate;
    }
    if rolled_back.contains(&wanted.sha256) {
        return Decision::RolledBackBefore;
    }
    Decision::Upgrade
}

/// The slot info file, relative to the ESP's root.
pub fn slot_info_path(slot: super::Slot) -> String {
    format!("nomados/{}/payload", slot.letter())
}

/// The slot info file's text: `sha256=` and `version=` lines.
pub fn render_slot_info(sha256: &str, version: &str) -> String {
    format!("sha256={sha256}\nversion={version}\n")
}

/// The `sha256=` of a slot info file, when it is one.
pub fn slot_info_sha256(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("sha256="))
        .map(str::trim)
        .filter(|s| is_sha256(s))
        .map(str::to_string)
}

/// The payload slot `slot` was written from, per its slot info file on `esp`; None when no
/// upgrade wrote it (the image's own slot A) or the file does not read.
pub fn slot_sha256(esp: &super::Esp, slot: super::Slot) -> Option<String> {
    crate::fsutil::read_bounded_to_string(&esp.path(&slot_info_path(slot)), 4096)
        .ok()
        .and_then(|t| slot_info_sha256(&t))
}

/// Writes slot `slot`'s info file on `esp` (after its kernel and root were verified, before
/// the trial is armed). A torn file reads as "unknown", which only costs a repeated upgrade.
pub fn write_slot_info(
    esp: &super::Esp,
    slot: super::Slot,
    sha256: &str,
    version: &str,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = esp.path(&slot_info_path(slot));
    let mut f = std::fs::File::create(&path)?;
    f.write_all(render_slot_info(sha256, version).as_bytes())?;
    f.sync_all()
}

/// The list of rolled-back payloads, on the data partition.
pub const ROLLED_BACK_FILE: &str = "/var/lib/nomad/nomados/upgrades-rolled-back";
/// Entries kept at most (oldest dropped): one line of 65 bytes each.
pub const ROLLED_BACK_MAX: usize = 64;

/// The hashes of a rolled-back list (one per line; anything else is skipped).
pub fn parse_rolled_back(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| is_sha256(l))
        .map(str::to_string)
        .collect()
}

/// `list` with `sha256` added (once), the oldest dropped beyond [`ROLLED_BACK_MAX`].
pub fn with_rolled_back(mut list: Vec<String>, sha256: &str) -> Vec<String> {
    if !list.iter().any(|s| s == sha256) {
        list.push(sha256.to_string());
    }
    let over = list.len().saturating_sub(ROLLED_BACK_MAX);
    list.drain(..over);
    list
}

/// Reads the rolled-back list at `path` (missing: empty).
pub fn read_rolled_back(path: &Path) -> Vec<String> {
    crate::fsutil::read_bounded_to_string(path, 16 * 1024)
        .map(|t| parse_rolled_back(&t))
        .unwrap_or_default()
}

/// Adds `sha256` to the rolled-back list at `path` (atomically).
pub fn record_rolled_back(path: &Path, sha256: &str) -> std::io::Result<()> {
    let list = with_rolled_back(read_rolled_back(path), sha256);
    crate::fsutil::write_atomic(path, &(list.join("\n") + "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(sha: &str) -> Wanted {
        Wanted {
            url: "http://10.0.2.2:8000/nomados.slot".into(),
            sha256: sha.into(),
            version: Some("1.2.0".into()),
        }
    }

    #[test]
    fn upgrades_only_on_a_committed_boot_to_something_new_and_not_rolled_back() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let w = wanted(&b);
        assert_eq!(decide(&w, true, None, &[]), Decision::Upgrade);
        assert_eq!(
            decide(&w, true, Some(&a), std::slice::from_ref(&a)),
            Decision::Upgrade
        );
        assert_eq!(decide(&w, true, Some(&b), &[]), Decision::UpToDate);
        assert_eq!(
            decide(&w, true, Some(&a), std::slice::from_ref(&b)),
            Decision::RolledBackBefore
        );
        assert!(matches!(
            decide(&w, false, Some(&a), &[]),
            Decision::NotNow(_)
        ));
        // Running it wins over having once rolled it back (it was installed by hand since).
        assert_eq!(
            decide(&w, true, Some(&b), std::slice::from_ref(&b)),
            Decision::UpToDate
        );
    }

    #[test]
    fn the_request_round_trips_through_the_machine_directory() {
        let w = wanted(&"c".repeat(64));
        assert_eq!(Wanted::from_json(&w.to_json()), Some(w.clone()));
        let mut bad = w.to_json();
        bad["url"] = "file:///etc/passwd".into();
        assert_eq!(Wanted::from_json(&bad), None);
        assert_eq!(w.name(), "NomadOS 1.2.0 (cccccccccccc)");
    }

    #[test]
    fn slot_info_and_the_rolled_back_list() {
        let sha = "d".repeat(64);
        let text = render_slot_info(&sha, "1.2.0");
        assert_eq!(slot_info_sha256(&text), Some(sha.clone()));
        assert_eq!(slot_info_sha256("sha256=xyz\n"), None);
        assert_eq!(slot_info_path(super::super::Slot::B), "nomados/b/payload");

        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("nomados/upgrades-rolled-back");
        assert!(read_rolled_back(&path).is_empty());
        record_rolled_back(&path, &sha).unwrap();
        record_rolled_back(&path, &sha).unwrap();
        assert_eq!(read_rolled_back(&path), vec![sha.clone()]);
        let many: Vec<String> = (0..70).map(|i| format!("{i:064x}")).collect();
        let kept = many.iter().fold(Vec::new(), |l, s| with_rolled_back(l, s));
        assert_eq!(kept.len(), ROLLED_BACK_MAX);
        assert_eq!(kept.last(), many.last());
        assert_eq!(parse_rolled_back("junk\n\n"), Vec::<String>::new());
    }
}
