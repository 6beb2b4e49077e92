//! The effects: the slot state on a mounted ESP. Every file is rewritten **in place, same
//! size**, never replaced: the loaders write `ldlinux.sys`'s ADV and `grubenv` through block
//! lists and must find the same clusters, and on FAT a rename is not atomic (Linux writes
//! the renamed file's directory entry at inode writeback, after the old clusters were freed:
//! a power cut in between leaves the name pointing at free clusters; tests/image/
//! slots-gate.sh caught exactly that). In place, no cluster is allocated or freed and only
//! the changed bytes differ: the configs swap `slot-a` for `slot-b` (same length) and PID
//! 1's record is padded to a fixed size.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::adv::ADV_BYTES;
use super::grubenv::GRUBENV_BYTES;
use super::loader;
use super::record::{Record, Slot};

pub const RECORD: &str = "nomados/slots";
pub const SYSLINUX_CFG: &str = "syslinux.cfg";
pub const LDLINUX_SYS: &str = "ldlinux.sys";
pub const GRUB_CFG: &str = "EFI/BOOT/grub.cfg";
pub const GRUBENV: &str = "nomados/grubenv";
/// Configs and the record are small; anything bigger is not ours.
const TEXT_MAX: u64 = 64 * 1024;

/// A mounted ESP (or a directory laid out like one, in tests).
#[derive(Debug, Clone)]
pub struct Esp {
    root: PathBuf,
}

impl Esp {
    pub fn at(root: impl Into<PathBuf>) -> Esp {
        Esp { root: root.into() }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read_text(&self, rel: &str) -> Result<String> {
        let p = self.path(rel);
        crate::fsutil::read_bounded_to_string(&p, TEXT_MAX)
            .with_context(|| format!("read {}", p.display()))
    }

    /// Overwrites `rel` with `text` in place; refuses a change of size.
    fn rewrite(&self, rel: &str, text: &str) -> Result<()> {
        let p = self.path(rel);
        let old = crate::fsutil::read_bounded(&p, TEXT_MAX)
            .with_context(|| format!("read {}", p.display()))?;
        if old.len() != text.len() {
            bail!(
                "{}: the new contents are {} bytes, the file {}; files on the ESP are only rewritten in place",
                p.display(),
                text.len(),
                old.len()
            );
        }
        if old == text.as_bytes() {
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .write(true)
            .open(&p)
            .with_context(|| format!("open {} for writing", p.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("write {}", p.display()))
    }

    pub fn read_record(&self) -> Result<Record> {
        let text = self.read_text(RECORD)?;
        Record::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", self.path(RECORD).display()))
    }

    pub fn write_record(&self, r: &Record) -> Result<()> {
        self.rewrite(RECORD, &r.render_padded().map_err(anyhow::Error::msg)?)
    }

    /// Asks both loaders to boot `slot` once at the next boot (`None`: clear the request).
    /// The record is written first: should power fail in between, the next boot reports a
    /// trial that did not happen rather than running one nobody recorded.
    pub fn set_trial(&self, slot: Option<Slot>) -> Result<()> {
        let ldlinux = self.path(LDLINUX_SYS);
        rewrite_tail(&ldlinux, ADV_BYTES, |old| {
            loader::adv_with_trial(old, slot).map(|a| a.to_vec())
        })
        .with_context(|| format!("syslinux ADV in {}", ldlinux.display()))?;
        let env = self.path(GRUBENV);
        rewrite_tail(&env, GRUBENV_BYTES, |old| {
            loader::grubenv_with_trial(old, slot)
        })
        .with_context(|| format!("GRUB environment {}", env.display()))?;
        Ok(())
    }

    /// What the loaders were asked to boot once, as (syslinux, GRUB) labels.
    pub fn pending_trials(&self) -> Result<(Option<String>, Option<String>)> {
        let adv = read_tail(&self.path(LDLINUX_SYS), ADV_BYTES)?;
        let env = read_tail(&self.path(GRUBENV), GRUBENV_BYTES)?;
        Ok((loader::adv_trial(&adv), loader::grubenv_trial(&env)))
    }

    /// Makes `slot` what both loaders boot by default.
    pub fn set_default(&self, slot: Slot) -> Result<()> {
        let sys = self.read_text(SYSLINUX_CFG)?;
        let sys = loader::syslinux_with_default(&sys, slot).map_err(anyhow::Error::msg)?;
        let grub = self.read_text(GRUB_CFG)?;
        let grub = loader::grub_with_default(&grub, slot).map_err(anyhow::Error::msg)?;
        self.rewrite(SYSLINUX_CFG, &sys)?;
        self.rewrite(GRUB_CFG, &grub)
    }

    /// Records and arms a one-time trial of `slot`.
    pub fn arm_trial(&self, record: &Record, slot: Slot) -> Result<Record> {
        let next = record.arm_trial(slot);
        self.write_record(&next)?;
        self.set_trial(Some(slot))?;
        Ok(next)
    }

    /// The trial of `slot` passed: it becomes the default everywhere.
    pub fn commit(&self, record: &Record, slot: Slot) -> Result<Record> {
        self.set_trial(None)?;
        self.set_default(slot)?;
        let next = record.commit(slot);
        self.write_record(&next)?;
        Ok(next)
    }

    /// The trial failed or never committed: the default stays, the reason is kept.
    pub fn roll_back(&self, record: &Record, reason: &str) -> Result<Record> {
        self.set_trial(None)?;
        let next = record.roll_back(reason);
        self.write_record(&next)?;
        Ok(next)
    }
}

fn read_tail(path: &Path, n: usize) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = f.metadata()?.len();
    let n64 = u64::try_from(n)?;
    if len < n64 {
        bail!("{} is {len} bytes; expected at least {n}", path.display());
    }
    f.seek(SeekFrom::Start(len - n64))?;
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// Rewrites the last `n` bytes of `path` in place (same file, same size, same clusters).
fn rewrite_tail(
    path: &Path,
    n: usize,
    edit: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<()> {
    let old = read_tail(path, n)?;
    let new = edit(&old).map_err(anyhow::Error::msg)?;
    if new.len() != n {
        bail!("internal: new tail is {} bytes, not {n}", new.len());
    }
    if new == old {
        return Ok(());
    }
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("open {} for writing", path.display()))?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len - u64::try_from(n)?))?;
    f.write_all(&new)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ESP directory as the image builder lays it out (files, not a FAT).
    pub(crate) fn fake_esp() -> (tempfile::TempDir, Esp) {
        let d = tempfile::tempdir().unwrap();
        let esp = Esp::at(d.path());
        std::fs::create_dir_all(esp.path("nomados")).unwrap();
        std::fs::create_dir_all(esp.path("EFI/BOOT")).unwrap();
        let mut ldlinux = vec![0x90u8; 4096];
        ldlinux.extend(super::super::adv::Adv::default().encode().unwrap());
        std::fs::write(esp.path(LDLINUX_SYS), ldlinux).unwrap();
        let mut env = b"# GRUB Environment Block\n".to_vec();
        env.resize(1024, b'#');
        std::fs::write(esp.path(GRUBENV), env).unwrap();
        std::fs::write(
            esp.path(SYSLINUX_CFG),
            "PROMPT 0\nDEFAULT slot-a\nONERROR slot-a\nLABEL slot-a\n",
        )
        .unwrap();
        std::fs::write(
            esp.path(GRUB_CFG),
            "set default=slot-a\nset fallback=slot-a\nmenuentry slot-a {\n}\n",
        )
        .unwrap();
        std::fs::write(esp.path(RECORD), Record::default().render_padded().unwrap()).unwrap();
        (d, esp)
    }

    #[test]
    fn arm_then_commit_changes_the_loaders_files_and_keeps_ldlinux_intact() {
        let (_d, esp) = fake_esp();
        let before = std::fs::read(esp.path(LDLINUX_SYS)).unwrap();
        let r = esp.read_record().unwrap();
        let armed = esp.arm_trial(&r, Slot::B).unwrap();
        assert_eq!(esp.read_record().unwrap(), armed);
        assert_eq!(
            esp.pending_trials().unwrap(),
            (Some("slot-b".into()), Some("slot-b".into()))
        );
        let after = std::fs::read(esp.path(LDLINUX_SYS)).unwrap();
        assert_eq!(after.len(), before.len());
        assert_eq!(after[..4096], before[..4096], "only the ADV changed");
        assert_eq!(std::fs::metadata(esp.path(GRUBENV)).unwrap().len(), 1024);

        let committed = esp.commit(&armed, Slot::B).unwrap();
        assert_eq!(committed.default, Slot::B);
        assert_eq!(esp.pending_trials().unwrap(), (None, None));
        let sys = std::fs::read_to_string(esp.path(SYSLINUX_CFG)).unwrap();
        assert!(sys.contains("DEFAULT slot-b\nONERROR slot-b\n"), "{sys}");
        let grub = std::fs::read_to_string(esp.path(GRUB_CFG)).unwrap();
        assert!(grub.starts_with("set default=slot-b\nset fallback=slot-b\n"));
        assert_eq!(esp.read_record().unwrap(), committed);
    }

    #[test]
    fn files_are_rewritten_in_place_never_replaced_or_resized() {
        use std::os::unix::fs::MetadataExt;
        let (_d, esp) = fake_esp();
        let inode = |rel: &str| std::fs::metadata(esp.path(rel)).unwrap().ino();
        let before: Vec<u64> = [RECORD, SYSLINUX_CFG, GRUB_CFG].map(inode).to_vec();
        let armed = esp.arm_trial(&Record::default(), Slot::B).unwrap();
        esp.commit(&armed, Slot::B).unwrap();
        esp.roll_back(&Record::default(), &"why ".repeat(100))
            .unwrap();
        let after: Vec<u64> = [RECORD, SYSLINUX_CFG, GRUB_CFG].map(inode).to_vec();
        assert_eq!(before, after, "same files (a rename would make new inodes)");
        assert_eq!(
            std::fs::metadata(esp.path(RECORD)).unwrap().len(),
            super::super::record::RECORD_BYTES as u64
        );
        std::fs::write(
            esp.path(SYSLINUX_CFG),
            "DEFAULT slot-b\nONERROR slot-b\nX\n",
        )
        .unwrap();
        std::fs::write(esp.path(SYSLINUX_CFG), "DEFAULT x\nONERROR x\n").unwrap();
        let e = format!("{:#}", esp.set_default(Slot::A).unwrap_err());
        assert!(e.contains("in place"), "{e}");
    }

    #[test]
    fn roll_back_keeps_the_default_and_says_why() {
        let (_d, esp) = fake_esp();
        let armed = esp.arm_trial(&Record::default(), Slot::B).unwrap();
        let r = esp.roll_back(&armed, "Nomad never became healthy").unwrap();
        assert_eq!(r.default, Slot::A);
        let back = esp.read_record().unwrap();
        assert_eq!(
            back.rolled_back.as_deref(),
            Some("Nomad never became healthy")
        );
        assert_eq!(esp.pending_trials().unwrap(), (None, None));
        let sys = std::fs::read_to_string(esp.path(SYSLINUX_CFG)).unwrap();
        assert!(sys.contains("DEFAULT slot-a"));
    }

    #[test]
    fn a_missing_or_short_loader_file_is_an_error_naming_it() {
        let (_d, esp) = fake_esp();
        std::fs::write(esp.path(GRUBENV), b"short").unwrap();
        let e = format!("{:#}", esp.set_trial(Some(Slot::B)).unwrap_err());
        assert!(e.contains("grubenv") && e.contains("1024"), "{e}");
        std::fs::remove_file(esp.path(LDLINUX_SYS)).unwrap();
        let e = format!("{:#}", esp.set_trial(None).unwrap_err());
        assert!(e.contains("ldlinux.sys"), "{e}");
    }
}
