//! PID 1's side of the slots (effects): at boot, tell what this boot is and record a
//! rollback the boot loader already did; on a trial boot, run the health gate and commit
//! the slot or roll back and reboot. Nothing here may stop PID 1: every problem is logged
//! and the machine goes on.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::gate::{self, Observed, PacksSeen, Verdict};
use super::{classify, Boot, Esp, Record, Slot};
use crate::power::{Event, PowerAction};
use crate::sys::root::Root;

/// Where PID 1 mounts the ESP (shared with `nomad-init upgrade`).
pub const ESP_MOUNT: &str = "/run/nomados/esp";

/// A trial boot whose gate is still to be run.
#[derive(Debug)]
pub struct TrialBoot {
    esp: Esp,
    record: Record,
    slot: Slot,
    deadline: Duration,
}

/// What the slots hand supervision at boot.
#[derive(Debug, Default)]
pub struct AtBoot {
    /// Some when this is a trial boot whose gate is still to be run.
    pub trial: Option<TrialBoot>,
    /// The agent config fragment telling Nomad the slot (and a rollback), when slots exist.
    pub meta_fragment: Option<serde_json::Value>,
}

/// Mounts the ESP and settles the record for this boot; on images without slots nothing
/// is done.
pub fn at_boot(root: &Root) -> AtBoot {
    let mut meta_fragment = None;
    let trial = settle_at_boot(root, &mut meta_fragment);
    AtBoot {
        trial,
        meta_fragment,
    }
}

fn settle_at_boot(root: &Root, meta_out: &mut Option<serde_json::Value>) -> Option<TrialBoot> {
    let cmdline = crate::fsutil::read_bounded_to_string(&root.path("/proc/cmdline"), 8192).ok()?;
    let booted = super::booted_slot(&cmdline)?;
    let Some(dev) = super::find_partition(
        &root.path("/dev"),
        &root.path("/sys/class/block"),
        super::ESP_PARTITION,
    ) else {
        crate::warn!(
            "booted slot {booted} but no {} partition found",
            super::ESP_PARTITION
        );
        return None;
    };
    let mount = root.path(ESP_MOUNT);
    if let Err(e) = crate::sys::mount::mount_idempotent(
        &root.path("/proc/self/mountinfo"),
        &dev.display().to_string(),
        &mount,
        "vfat",
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None,
        0o700,
    ) {
        crate::error!(
            "cannot mount the ESP {} on {}: {e}",
            dev.display(),
            mount.display()
        );
        return None;
    }
    let esp = Esp::at(&mount);
    let record = match esp.read_record() {
        Ok(r) => r,
        Err(e) => {
            crate::error!("{e:#}; upgrades cannot be committed or rolled back");
            return None;
        }
    };
    let why = super::meta::rollback_reason(&record, booted);
    *meta_out = Some(super::meta::fragment(booted, why.as_deref()));
    settle(&esp, record, booted, gate::deadline_secs(&cmdline))
}

/// Writes the slot's agent config fragment (tmpfs, every boot) and returns its directory,
/// to be given to Nomad with `-config=`; None (logged) when it cannot be written.
pub fn write_meta_fragment(
    root: &Root,
    fragment: &serde_json::Value,
) -> Option<std::path::PathBuf> {
    let dir = root.path(super::meta::FRAGMENT_DIR);
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        crate::fsutil::write_atomic(
            &dir.join(super::meta::FRAGMENT_FILE),
            &format!("{fragment:#}\n"),
        )
    });
    match written {
        Ok(()) => Some(dir),
        Err(e) => {
            crate::warn!("cannot tell Nomad the slot ({}): {e}", dir.display());
            None
        }
    }
}

/// What to do at boot for `record` and the slot the loader booted.
fn settle(esp: &Esp, record: Record, booted: Slot, deadline_secs: u64) -> Option<TrialBoot> {
    // Whatever this boot is, the loaders' one-shot marks have done their job (the loader
    // that booted cleared its own); the other loader's mark must not fire later.
    let clear_marks = || {
        if let Err(e) = esp.set_trial(None) {
            crate::error!("cannot clear the boot loaders' trial marks: {e:#}");
        }
    };
    match classify(&record, booted) {
        Boot::Normal => {
            crate::info!("running slot {booted} (the default)");
            if let Some(why) = &record.rolled_back {
                crate::warn!("the last upgrade was rolled back: {why}");
            }
            if matches!(esp.pending_trials(), Ok((a, g)) if a.is_some() || g.is_some()) {
                clear_marks();
            }
            None
        }
        Boot::FellBack { trial, reason } => {
            crate::error!("UPGRADE ROLLED BACK: slot {trial}: {reason}");
            if let Err(e) = esp.roll_back(&record, &reason) {
                crate::error!("cannot record the rollback: {e:#}");
            }
            None
        }
        Boot::Trial(slot) => {
            crate::info!(
                "TRIAL BOOT of slot {slot}; committed only if Nomad is healthy, this node ready and the pack set applied within {deadline_secs}s, else back to slot {}",
                record.default
            );
            clear_marks();
            Some(TrialBoot {
                esp: esp.clone(),
                record,
                slot,
                deadline: Duration::from_secs(deadline_secs),
            })
        }
        Boot::Unexpected(slot) => {
            crate::warn!(
                "running slot {slot}, which is neither the default (slot {}) nor on trial; nothing will be committed",
                record.default
            );
            None
        }
    }
}

/// This node's `Status` as Nomad reports it, None while it cannot be asked.
async fn node_status(api: &crate::nomad::Settings) -> Option<String> {
    let client = crate::nomad::Client::new(api).ok()?;
    let (_, node) = client.find_self().await.ok()??;
    node["Status"].as_str().map(str::to_string)
}

/// Runs the health gate of a trial boot; commits, or rolls back and asks for a reboot.
/// `has_pack_set`: false when the system has no pack set, which then cannot fail the gate.
pub async fn gate(
    t: TrialBoot,
    api: crate::nomad::Settings,
    has_pack_set: bool,
    mut healthy: watch::Receiver<bool>,
    mut packs: watch::Receiver<PacksSeen>,
    events: mpsc::UnboundedSender<Event>,
) {
    let deadline = tokio::time::Instant::now() + t.deadline;
    loop {
        let nomad_healthy = *healthy.borrow();
        let observed = Observed {
            nomad_healthy,
            node_status: if nomad_healthy {
                node_status(&api).await
            } else {
                None
            },
            packs: if has_pack_set {
                packs.borrow().clone()
            } else {
                PacksSeen::Applied
            },
        };
        match gate::evaluate(&observed, tokio::time::Instant::now() >= deadline) {
            Verdict::Pass => {
                match t.esp.commit(&t.record, t.slot) {
                    Ok(_) => crate::info!(
                        "UPGRADE COMMITTED: slot {} passed its health gate and is the default now",
                        t.slot
                    ),
                    Err(e) => crate::error!(
                        "slot {} passed its health gate but the commit failed ({e:#}); the next boot runs slot {}",
                        t.slot,
                        t.record.default
                    ),
                }
                return;
            }
            Verdict::Fail(why) => {
                crate::error!(
                    "UPGRADE ROLLED BACK: slot {}: {why}; rebooting into slot {}",
                    t.slot,
                    t.record.default
                );
                if let Err(e) = t
                    .esp
                    .roll_back(&t.record, &format!("slot {}: {why}", t.slot))
                {
                    crate::error!("cannot record the rollback: {e:#}");
                }
                let _ = events.send(Event::Power(PowerAction::Reboot));
                return;
            }
            Verdict::Wait => {}
        }
        tokio::select! {
            _ = healthy.changed() => {}
            _ = packs.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::esp::tests::fake_esp;

    #[test]
    fn a_fallen_back_trial_is_recorded_and_its_marks_cleared() {
        let (_d, esp) = fake_esp();
        let armed = esp.arm_trial(&Record::default(), Slot::B).unwrap();
        assert!(settle(&esp, armed, Slot::A, 900).is_none());
        let r = esp.read_record().unwrap();
        assert_eq!((r.default, r.trial), (Slot::A, None));
        assert!(r.rolled_back.unwrap().contains("slot b"));
        assert_eq!(esp.pending_trials().unwrap(), (None, None));
    }

    #[test]
    fn a_trial_boot_clears_the_other_loaders_mark_and_hands_over_to_the_gate() {
        let (_d, esp) = fake_esp();
        let armed = esp.arm_trial(&Record::default(), Slot::B).unwrap();
        let t = settle(&esp, armed.clone(), Slot::B, 120).unwrap();
        assert_eq!(t.slot, Slot::B);
        assert_eq!(t.deadline, Duration::from_secs(120));
        assert_eq!(esp.pending_trials().unwrap(), (None, None));
        assert_eq!(
            esp.read_record().unwrap(),
            armed,
            "not committed before the gate"
        );
    }

    #[tokio::test]
    async fn a_failed_pack_set_rolls_back_and_asks_for_a_reboot() {
        let (_d, esp) = fake_esp();
        let armed = esp.arm_trial(&Record::default(), Slot::B).unwrap();
        let t = settle(&esp, armed, Slot::B, 900).unwrap();
        let (_h_tx, h_rx) = watch::channel(false);
        let (p_tx, p_rx) = watch::channel(PacksSeen::NotYet);
        let (e_tx, mut e_rx) = mpsc::unbounded_channel();
        p_tx.send(PacksSeen::Failed("pack web: exit 1".into()))
            .unwrap();
        let api = crate::nomad::Settings::new("http://127.0.0.1:1");
        tokio::time::timeout(
            Duration::from_secs(10),
            gate(t, api, true, h_rx, p_rx, e_tx),
        )
        .await
        .unwrap();
        assert!(matches!(
            e_rx.recv().await,
            Some(Event::Power(PowerAction::Reboot))
        ));
        let r = esp.read_record().unwrap();
        assert_eq!(r.default, Slot::A);
        assert!(r.rolled_back.unwrap().contains("pack web: exit 1"));
        let sys = std::fs::read_to_string(esp.path(super::super::esp::SYSLINUX_CFG)).unwrap();
        assert!(sys.contains("DEFAULT slot-a"));
    }

    #[tokio::test]
    async fn a_gate_that_never_passes_fails_at_its_deadline() {
        let (_d, esp) = fake_esp();
        let armed = esp.arm_trial(&Record::default(), Slot::B).unwrap();
        let t = settle(&esp, armed, Slot::B, 1).unwrap();
        let (_h_tx, h_rx) = watch::channel(false);
        let (_p_tx, p_rx) = watch::channel(PacksSeen::NotYet);
        let (e_tx, mut e_rx) = mpsc::unbounded_channel();
        let api = crate::nomad::Settings::new("http://127.0.0.1:1");
        let started = std::time::Instant::now();
        tokio::time::timeout(
            Duration::from_secs(10),
            gate(t, api, true, h_rx, p_rx, e_tx),
        )
        .await
        .unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "not before the deadline"
        );
        assert!(matches!(
            e_rx.recv().await,
            Some(Event::Power(PowerAction::Reboot))
        ));
        let why = esp.read_record().unwrap().rolled_back.unwrap();
        assert!(
            why.contains("deadline") && why.contains("never became healthy"),
            "{why}"
        );
    }
}
