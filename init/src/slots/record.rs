//! PID 1's record of the two system slots (`/nomados/slots` on the ESP) and what a boot
//! means for it. Pure: the effects live in [`super::esp`].
//!
//! ```text
//! default=a        the slot the boot loaders boot when nothing is on trial
//! trial=b          the slot the loaders were asked to boot once (empty: none)
//! rolled_back=...  why the last trial ended without a commit (empty: it did not)
//! ```

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    /// The boot loaders' entry name.
    pub fn label(self) -> String {
        format!("slot-{}", self.letter())
    }
    /// GPT partition name of the slot's root partition.
    pub fn partition_name(self) -> &'static str {
        match self {
            Slot::A => "NOMADOS-ROOT-A",
            Slot::B => "NOMADOS-ROOT-B",
        }
    }
    /// The slot's kernel, relative to the ESP's root.
    pub fn kernel_on_esp(self) -> String {
        format!("nomados/{}/vmlinuz", self.letter())
    }
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub default: Slot,
    pub trial: Option<Slot>,
    pub rolled_back: Option<String>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            default: Slot::A,
            trial: None,
            rolled_back: None,
        }
    }
}

/// The longest `rolled_back` reason kept: the record is read at every boot.
pub const REASON_MAX: usize = 300;
/// The record's fixed size on the ESP (rewritten in place): the text, then newlines.
pub const RECORD_BYTES: usize = 1024;

impl Record {
    pub fn parse(text: &str) -> Result<Record, String> {
        let mut r = Record::default();
        let mut saw_default = false;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("line {}", n + 1);
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("{}: expected key=value, got `{line}`", at()))?;
            let slot = |v: &str| {
                Slot::parse(v).ok_or_else(|| format!("{}: `{k}` must be a or b, got `{v}`", at()))
            };
            match k {
                "default" => {
                    r.default = slot(v)?;
                    saw_default = true;
                }
                "trial" if v.is_empty() => r.trial = None,
                "trial" => r.trial = Some(slot(v)?),
                "rolled_back" if v.is_empty() => r.rolled_back = None,
                "rolled_back" => r.rolled_back = Some(v.to_string()),
                _ => return Err(format!("{}: unknown key `{k}`", at())),
            }
        }
        if !saw_default {
            return Err("no `default=` line".into());
        }
        Ok(r)
    }

    pub fn render(&self) -> String {
        format!(
            "# NomadOS system slots; written by nomad-init (see docs/image.md)\n\
             default={}\ntrial={}\nrolled_back={}\n",
            self.default,
            self.trial.map_or("", Slot::letter),
            self.rolled_back
                .as_deref()
                .map(one_line)
                .unwrap_or_default()
        )
    }

    /// The record as stored: [`Record::render`] padded with newlines to [`RECORD_BYTES`].
    pub fn render_padded(&self) -> Result<String, String> {
        let mut s = self.render();
        if s.len() > RECORD_BYTES {
            return Err(format!(
                "slot record is {} bytes; at most {RECORD_BYTES}",
                s.len()
            ));
        }
        s.extend(std::iter::repeat_n('\n', RECORD_BYTES - s.len()));
        Ok(s)
    }

    /// The slot an upgrade writes: never the one running, never the committed default.
    pub fn upgrade_target(&self, booted: Slot) -> Result<Slot, String> {
        if let Some(t) = self.trial {
            return Err(format!(
                "slot {t} is on trial; wait for it to be committed or rolled back"
            ));
        }
        if booted != self.default {
            return Err(format!(
                "running slot {booted} but slot {} is the default; reboot first",
                self.default
            ));
        }
        Ok(booted.other())
    }

    /// After the new system was written into `slot`: boot it once, next time.
    pub fn arm_trial(&self, slot: Slot) -> Record {
        Record {
            trial: Some(slot),
            rolled_back: None,
            ..self.clone()
        }
    }

    /// The trial passed its health gate: `slot` becomes the default.
    pub fn commit(&self, slot: Slot) -> Record {
        Record {
            default: slot,
            trial: None,
            rolled_back: None,
        }
    }

    /// The trial failed: the default stays; say why.
    pub fn roll_back(&self, reason: &str) -> Record {
        Record {
            trial: None,
            rolled_back: Some(one_line(reason)),
            ..self.clone()
        }
    }
}

/// What this boot is, given the record and the slot the loader booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// The committed default, nothing pending.
    Normal,
    /// The slot on trial: PID 1 must pass the health gate, then commit (or roll back).
    Trial(Slot),
    /// A trial was recorded, but the loader booted the default: the trial's kernel or PID 1
    /// never got to commit (panic, hang, power cut). The record must say so.
    FellBack { trial: Slot, reason: String },
    /// Booted a slot that is neither the default nor on trial (someone picked it by hand,
    /// or the record was lost). Nothing is changed; the operator is told.
    Unexpected(Slot),
}

pub fn classify(record: &Record, booted: Slot) -> Boot {
    match record.trial {
        Some(t) if t == booted => Boot::Trial(t),
        Some(t) if booted == record.default => Boot::FellBack {
            trial: t,
            reason: format!(
                "the trial boot of slot {t} never committed (kernel panic, hang, PID 1 failure \
                 or power loss); the boot loader went back to slot {booted}"
            ),
        },
        _ if booted == record.default => Boot::Normal,
        _ => Boot::Unexpected(booted),
    }
}

/// The slot named by `nomados.slot=` on the kernel command line.
pub fn booted_slot(cmdline: &str) -> Option<Slot> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("nomados.slot="))
        .next_back()
        .and_then(Slot::parse)
}

fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > REASON_MAX {
        let mut cut = REASON_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = "# NomadOS system slots; written by nomad-init (see docs/image.md)\n\
                           default=a\ntrial=\nrolled_back=\n";

    #[test]
    fn the_shipped_record_parses_and_renders_back() {
        let r = Record::parse(SHIPPED).unwrap();
        assert_eq!(r, Record::default());
        assert_eq!(r.render(), SHIPPED);
        let padded = r.render_padded().unwrap();
        assert_eq!(padded.len(), RECORD_BYTES);
        assert_eq!(
            padded.trim_end(),
            SHIPPED.trim_end(),
            "as image/src/bootcfg.rs writes it"
        );
        assert_eq!(Record::parse(&padded).unwrap(), r);
        let t = Record {
            default: Slot::B,
            trial: Some(Slot::A),
            rolled_back: Some("x".into()),
        };
        assert_eq!(Record::parse(&t.render()).unwrap(), t);
    }

    #[test]
    fn bad_records_name_the_line() {
        assert!(Record::parse("trial=\n").unwrap_err().contains("default"));
        let e = Record::parse("default=a\ntrial=c\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("`c`"), "{e}");
        assert!(Record::parse("default=a\nfoo=1\n")
            .unwrap_err()
            .contains("unknown key"));
        assert!(Record::parse("default a\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn a_whole_upgrade_life() {
        let r = Record::default();
        assert_eq!(classify(&r, Slot::A), Boot::Normal);
        let target = r.upgrade_target(Slot::A).unwrap();
        assert_eq!(target, Slot::B);
        let armed = r.arm_trial(target);
        assert!(armed
            .upgrade_target(Slot::A)
            .unwrap_err()
            .contains("on trial"));
        // Trial boot reached PID 1.
        assert_eq!(classify(&armed, Slot::B), Boot::Trial(Slot::B));
        let committed = armed.commit(Slot::B);
        assert_eq!(committed.default, Slot::B);
        assert_eq!(classify(&committed, Slot::B), Boot::Normal);
        assert_eq!(committed.upgrade_target(Slot::B).unwrap(), Slot::A);
        // The next trial never reached PID 1: the loader booted the default.
        let armed2 = committed.arm_trial(Slot::A);
        match classify(&armed2, Slot::B) {
            Boot::FellBack { trial, reason } => {
                assert_eq!(trial, Slot::A);
                assert!(
                    reason.contains("slot a") && reason.contains("slot b"),
                    "{reason}"
                );
                let rolled = armed2.roll_back(&reason);
                assert_eq!(rolled.default, Slot::B);
                assert_eq!(rolled.trial, None);
                assert_eq!(classify(&rolled, Slot::B), Boot::Normal);
                let again = Record::parse(&rolled.render()).unwrap();
                assert_eq!(again.rolled_back.as_deref(), Some(reason.as_str()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn booting_the_other_slot_by_hand_is_reported_not_committed() {
        assert_eq!(
            classify(&Record::default(), Slot::B),
            Boot::Unexpected(Slot::B)
        );
        assert!(Record::default()
            .upgrade_target(Slot::B)
            .unwrap_err()
            .contains("reboot first"));
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        let r = Record::default().roll_back(&format!("bad\nthing{}", "é".repeat(400)));
        let why = r.rolled_back.clone().unwrap();
        assert!(!why.contains('\n'));
        assert!(why.len() <= REASON_MAX);
        assert_eq!(
            Record::parse(&r.render()).unwrap().rolled_back.unwrap(),
            why
        );
    }

    #[test]
    fn slot_from_the_command_line() {
        assert_eq!(booted_slot("root=x nomados.slot=b panic=10"), Some(Slot::B));
        assert_eq!(
            booted_slot("nomados.slot=a nomados.slot=b"),
            Some(Slot::B),
            "last wins"
        );
        assert_eq!(booted_slot("root=x"), None);
        assert_eq!(booted_slot("nomados.slot=c"), None);
    }
}
