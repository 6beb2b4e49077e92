//! Pure edits of the boot loaders' files: the default slot is one line in each config
//! (`DEFAULT`/`ONERROR` in syslinux.cfg, `set default=`/`set fallback=` in grub.cfg, as
//! image/src/bootcfg.rs writes them); the one-shot trial is the syslinux ADV's `BOOTONCE`
//! and GRUB's `next_entry`.

use super::adv::{Adv, ADV_BYTES, TAG_BOOTONCE};
use super::grubenv::GrubEnv;
use super::record::Slot;

/// Replaces every line starting with one of `keys` (exact prefix) with `key + label`;
/// each key must be found exactly once, or the file is not ours.
fn set_lines(text: &str, keys: &[&str], label: &str, file: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 8);
    let mut seen = vec![0usize; keys.len()];
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        match keys.iter().position(|k| body.starts_with(k)) {
            Some(i) => {
                seen[i] += 1;
                out += keys[i];
                out += label;
                out += "\n";
            }
            None => out += line,
        }
    }
    for (k, n) in keys.iter().zip(seen) {
        if n != 1 {
            return Err(format!(
                "{file}: expected one line starting `{k}`, found {n}; not a NomadOS boot config"
            ));
        }
    }
    Ok(out)
}

pub fn syslinux_with_default(text: &str, slot: Slot) -> Result<String, String> {
    set_lines(
        text,
        &["DEFAULT ", "ONERROR "],
        &slot.label(),
        "syslinux.cfg",
    )
}

pub fn grub_with_default(text: &str, slot: Slot) -> Result<String, String> {
    set_lines(
        text,
        &["set default=", "set fallback="],
        &slot.label(),
        "grub.cfg",
    )
}

/// The ADV with `BOOTONCE` set to `slot` (or cleared with `None`); other records are kept.
/// An invalid ADV is replaced by a fresh one, as syslinux itself does.
pub fn adv_with_trial(current: &[u8], slot: Option<Slot>) -> Result<[u8; ADV_BYTES], String> {
    let mut adv = Adv::parse(current).unwrap_or_default();
    let label = slot.map(Slot::label).unwrap_or_default();
    adv.set(TAG_BOOTONCE, label.as_bytes())?;
    adv.encode()
}

/// The label in the ADV's `BOOTONCE`, if any.
pub fn adv_trial(current: &[u8]) -> Option<String> {
    let adv = Adv::parse(current)?;
    let v = adv.get(TAG_BOOTONCE)?;
    Some(String::from_utf8_lossy(v).into_owned())
}

pub fn grubenv_with_trial(current: &[u8], slot: Option<Slot>) -> Result<Vec<u8>, String> {
    let mut env = GrubEnv::parse(current)?;
    env.set("next_entry", &slot.map(Slot::label).unwrap_or_default());
    env.encode()
}

pub fn grubenv_trial(current: &[u8]) -> Option<String> {
    let env = GrubEnv::parse(current).ok()?;
    env.get("next_entry")
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSLINUX: &str = "# Generated\nSERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT slot-a\n\
                            ONERROR slot-a\nLABEL slot-a\n  LINUX /nomados/a/vmlinuz\n  APPEND x\n";
    const GRUB: &str = "set timeout=0\nset default=slot-a\nset fallback=slot-a\n\
                        if load_env -f /nomados/grubenv next_entry; then\n  set default=\"${trial}\"\nfi\n";

    #[test]
    fn default_lines_are_replaced_and_nothing_else() {
        let s = syslinux_with_default(SYSLINUX, Slot::B).unwrap();
        assert_eq!(
            s,
            SYSLINUX
                .replace("DEFAULT slot-a", "DEFAULT slot-b")
                .replace("ONERROR slot-a", "ONERROR slot-b")
        );
        assert_eq!(syslinux_with_default(&s, Slot::A).unwrap(), SYSLINUX);
        let g = grub_with_default(GRUB, Slot::B).unwrap();
        assert!(g.contains("set default=slot-b\nset fallback=slot-b\n"));
        assert!(
            g.contains("  set default=\"${trial}\""),
            "indented lines stay: {g}"
        );
    }

    #[test]
    fn foreign_configs_are_refused() {
        let e = syslinux_with_default("DEFAULT x\n", Slot::B).unwrap_err();
        assert!(e.contains("ONERROR") && e.contains("found 0"), "{e}");
        let twice = format!("{SYSLINUX}DEFAULT slot-b\n");
        assert!(syslinux_with_default(&twice, Slot::B)
            .unwrap_err()
            .contains("found 2"));
        assert!(grub_with_default("set default=0\n", Slot::A).is_err());
    }

    #[test]
    fn trial_marks_round_trip_in_both_loaders() {
        let adv = adv_with_trial(&[0u8; 1024], Some(Slot::B)).unwrap();
        assert_eq!(adv_trial(&adv).as_deref(), Some("slot-b"));
        let cleared = adv_with_trial(&adv, None).unwrap();
        assert_eq!(adv_trial(&cleared), None);

        let mut env = b"# GRUB Environment Block\n".to_vec();
        env.resize(1024, b'#');
        let armed = grubenv_with_trial(&env, Some(Slot::B)).unwrap();
        assert_eq!(grubenv_trial(&armed).as_deref(), Some("slot-b"));
        assert_eq!(
            grubenv_trial(&grubenv_with_trial(&armed, None).unwrap()),
            None
        );
        assert_eq!(grubenv_trial(&env), None);
    }
}
