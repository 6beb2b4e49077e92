//! PID 1's side of the slots (effects): at boot, tell what this boot is and record a
//! rollback the boot loader already did; on a trial boot, run the health gate and commit
//! the slot or roll back and reboot. Nothing here may stop PID 1: every problem is logged
//! and the machine goes on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::gate::{self, AllocsSeen, Observed, PacksSeen, Verdict};
use super::{classify, wanted, Boot, Esp, Record, Slot};
use crate::power::{Event, PowerAction};
use crate::sys::root::Root;

/// Where PID 1 mounts the ESP (shared with `nomad-init upgrade`).
pub const ESP_MOUNT: &str = "/run/nomados/esp";

/// Mounts the ESP `dev` on `at` (or finds it there, per `mountinfo`), as PID 1 and
/// `nomad-init upgrade` both do: vfat, nothing on it runs or is a device, root-only.
pub fn mount_esp(
    mountinfo: &Path,
    dev: &Path,
    at: &Path,
) -> Result<crate::sys::mount::MountOutcome, crate::sys::mount::MountError> {
    crate::sys::mount::mount_idempotent(
        mountinfo,
        &dev.display().to_string(),
        at,
        "vfat",
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None,
        0o700,
    )
}

/// A trial boot whose gate is still to be run.
#[derive(Debug)]
pub struct TrialBoot {
    esp: Esp,
    record: Record,
    slot: Slot,
    deadline: Duration,
    /// Where a rollback records the trial's payload (data partition).
    rolled_back_file: PathBuf,
}

/// What the slots hand supervision at boot.
#[derive(Debug, Default)]
pub struct AtBoot {
    /// Some when this is a trial boot whose gate is still to be run.
    pub trial: Option<TrialBoot>,
    /// The agent config fragment telling Nomad the slot (and a rollback), when slots exist.
    pub meta_fragment: Option<serde_json::Value>,
    /// Some on a boot of the committed default slot (not a trial, not a fallback): the ESP
    /// and the payload the running slot was written from (None: the image's own).
    pub committed: Option<Committed>,
}

/// A boot of the committed default slot.
#[derive(Debug, Clone)]
pub struct Committed {
    pub esp: Esp,
    pub slot: Slot,
    pub sha256: Option<String>,
}

/// Mounts the ESP and settles the record for this boot; on images without slots nothing
/// is done.
pub fn at_boot(root: &Root) -> AtBoot {
    let mut out = AtBoot::default();
    out.trial = settle_at_boot(root, &mut out);
    out
}

fn settle_at_boot(root: &Root, out: &mut AtBoot) -> Option<TrialBoot> {
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
    if let Err(e) = mount_esp(&root.path("/proc/self/mountinfo"), &dev, &mount) {
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
    let version = crate::fsutil::read_bounded_to_string(&root.path("/etc/os-release"), 4096)
        .ok()
        .and_then(|t| os_release_version(&t));
    crate::info!(
        "NomadOS {} in slot {booted}",
        version
            .as_deref()
            .unwrap_or("(no VERSION_ID in /etc/os-release)")
    );
    let why = super::meta::rollback_reason(&record, booted);
    out.meta_fragment = Some(super::meta::fragment(booted, why.as_deref()));
    if classify(&record, booted) == Boot::Normal {
        out.committed = Some(Committed {
            esp: esp.clone(),
            slot: booted,
            sha256: wanted::slot_sha256(&esp, booted),
        });
    }
    let rolled_back_file = root.path(wanted::ROLLED_BACK_FILE);
    settle(
        &esp,
        record,
        booted,
        gate::deadline_secs(&cmdline),
        &rolled_back_file,
    )
}

/// `VERSION_ID=` of an os-release file (quotes dropped).
fn os_release_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
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

/// Adds the payload of trial slot `slot` to the rolled-back list, so that the machine's
/// configuration does not ask for it again (logged, never fatal).
fn remember_rolled_back(esp: &Esp, slot: Slot, file: &Path) {
    let Some(sha) = wanted::slot_sha256(esp, slot) else {
        return;
    };
    match wanted::record_rolled_back(file, &sha) {
        Ok(()) => crate::info!(
            "payload {sha} will not be tried again by [upgrade] (recorded in {})",
            file.display()
        ),
        Err(e) => crate::error!(
            "cannot record the rolled-back payload in {}: {e}",
            file.display()
        ),
    }
}

/// What to do at boot for `record` and the slot the loader booted.
fn settle(
    esp: &Esp,
    record: Record,
    booted: Slot,
    deadline_secs: u64,
    rolled_back_file: &Path,
) -> Option<TrialBoot> {
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
            remember_rolled_back(esp, trial, rolled_back_file);
            None
        }
        Boot::Trial(slot) => {
            crate::info!(
                "TRIAL BOOT of slot {slot}; committed only if Nomad is healthy, this node ready, the pack set applied and its allocations here running within {deadline_secs}s, else back to slot {}",
                record.default
            );
            clear_marks();
            Some(TrialBoot {
                esp: esp.clone(),
                record,
                slot,
                deadline: Duration::from_secs(deadline_secs),
                rolled_back_file: rolled_back_file.to_path_buf(),
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

/// The pack set as the gate needs it: whether there is one, and whose jobs it runs.
#[derive(Debug, Clone)]
pub struct PackSetRef {
    /// False when the system has no pack set: it then cannot fail the gate and has no jobs.
    pub exists: bool,
    /// `packs.owner` when set; else the applier records the set's own name in its cache.
    pub owner: Option<String>,
    pub cache_dir: std::path::PathBuf,
}

impl PackSetRef {
    pub fn of(config: &crate::boot::config::PacksConfig) -> Self {
        Self {
            exists: config.set.exists(),
            owner: config.owner.clone(),
            cache_dir: config.cache_dir.clone(),
        }
    }

    /// Whose jobs to look for, once an apply of this boot has ended well.
    fn owner(&self) -> Option<String> {
        self.owner
            .clone()
            .or_else(|| crate::packs::record::read_owner(&self.cache_dir))
    }
}

/// Runs the health gate of a trial boot; commits, or rolls back and asks for a reboot.
pub async fn gate(
    t: TrialBoot,
    api: crate::nomad::Settings,
    set: PackSetRef,
    mut healthy: watch::Receiver<bool>,
    mut packs: watch::Receiver<PacksSeen>,
    events: mpsc::UnboundedSender<Event>,
) {
    let deadline = tokio::time::Instant::now() + t.deadline;
    loop {
        let nomad_healthy = *healthy.borrow();
        let packs_seen = if set.exists {
            packs.borrow().clone()
        } else {
            PacksSeen::Applied
        };
        let (node_status, allocs) = if !nomad_healthy {
            (None, AllocsSeen::Unknown)
        } else if !set.exists {
            (
                super::facts::node_seen(&api, None).await.0,
                AllocsSeen::Running(0),
            )
        } else if packs_seen == PacksSeen::Applied {
            let owner = set.owner();
            if owner.is_none() {
                crate::warn!(
                    "trial gate: the pack set's owner is not known (no packs.owner, nothing in {})",
                    crate::packs::record::owner_path(&set.cache_dir).display()
                );
            }
            super::facts::node_seen(&api, owner.as_deref()).await
        } else {
            (
                super::facts::node_seen(&api, None).await.0,
                AllocsSeen::Unknown,
            )
        };
        let observed = Observed {
            nomad_healthy,
            node_status,
            packs: packs_seen,
            allocs,
        };
        match gate::evaluate(&observed, tokio::time::Instant::now() >= deadline) {
            Verdict::Pass => {
                match t.esp.commit(&t.record, t.slot) {
                    Ok(_) => crate::info!(
                        "UPGRADE COMMITTED: slot {} passed its health gate ({}) and is the default now",
                        t.slot,
                        match observed.allocs {
                            AllocsSeen::Running(n) => format!("{n} allocation(s) of the pack set running here"),
                            _ => String::new(),
                        }
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
                remember_rolled_back(&t.esp, t.slot, &t.rolled_back_file);
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

    fn set() -> PackSetRef {
        PackSetRef {
            exists: true,
            owner: Some("edge".into()),
            cache_dir: "/nonexistent".into(),
        }
    }

    #[test]
    fn a_fallen_back_trial_is_recorded_and_its_marks_cleared() {
        let (_d, esp) = fake_esp();
        let armed = esp.arm_trial(&Record::default(), Slot::B).unwrap();
        assert!(settle(&esp, armed, Slot::A, 900, &esp.path("rolled-back")).is_none());
        let r = esp.read_record().unwrap();
        assert_eq!((r.default, r.trial), (Slot::A, None));
        assert!(r.rolled_back.unwrap().contains("slot b"));
        assert_eq!(esp.pending_trials().unwrap(), (None, None));
    }

    #[test]
    fn a_trial_boot_clears_the_other_loaders_mark_and_hands_over_to_the_gate() {
        let (_d, esp) = fake_esp();
        let armed = esp.arm_trial(&Record::default(), Slot::B).unwrap();
        let t = settle(&esp, armed.clone(), Slot::B, 120, &esp.path("rolled-back")).unwrap();
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
        let t = settle(&esp, armed, Slot::B, 900, &esp.path("rolled-back")).unwrap();
        let (_h_tx, h_rx) = watch::channel(false);
        let (p_tx, p_rx) = watch::channel(PacksSeen::NotYet);
        let (e_tx, mut e_rx) = mpsc::unbounded_channel();
        p_tx.send(PacksSeen::Failed("pack web: exit 1".into()))
            .unwrap();
        let api = crate::nomad::Settings::new("http://127.0.0.1:1");
        tokio::time::timeout(
            Duration::from_secs(10),
            gate(t, api, set(), h_rx, p_rx, e_tx),
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
        let t = settle(&esp, armed, Slot::B, 1, &esp.path("rolled-back")).unwrap();
        let (_h_tx, h_rx) = watch::channel(false);
        let (_p_tx, p_rx) = watch::channel(PacksSeen::NotYet);
        let (e_tx, mut e_rx) = mpsc::unbounded_channel();
        let api = crate::nomad::Settings::new("http://127.0.0.1:1");
        let started = std::time::Instant::now();
        tokio::time::timeout(
            Duration::from_secs(10),
            gate(t, api, set(), h_rx, p_rx, e_tx),
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

    /// A job of owner `edge` running `command`.
    fn job(id: &str, job_type: &str, command: &str) -> serde_json::Value {
        serde_json::json!({
            "ID": id, "Name": id, "Type": job_type, "Datacenters": ["dc1"],
            "Meta": {"nomados.owner": "edge"},
            "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [
                {"Name": "server", "Driver": "exec", "Config": {"command": command}}]}]
        })
    }

    /// The nomad-double with ACLs on, its scheduler taking `eval_delay` per evaluation,
    /// and `jobs` registered.
    async fn double_with(
        eval_delay: Duration,
        jobs: &[serde_json::Value],
    ) -> crate::nomad::Settings {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let mut opts = nomad_double::Options::new(nomad_double::AgentConfig {
            acl_enabled: true,
            ..nomad_double::AgentConfig::default()
        });
        opts.management_token = Some("t0ken".into());
        opts.alloc_delay = Duration::from_millis(50);
        opts.eval_delay = eval_delay;
        tokio::spawn(nomad_double::serve(listener, opts));
        let api = crate::nomad::Settings::new(addr).with_token(Some("t0ken".into()));
        let client = crate::nomad::Client::new(&api).unwrap();
        for j in jobs {
            client.register(j, None, None).await.unwrap();
        }
        api
    }

    /// The nomad-double with ACLs on and one job of owner `edge` running `command`.
    async fn double_with_job(command: &str) -> crate::nomad::Settings {
        double_with(Duration::ZERO, &[job("web", "service", command)]).await
    }

    /// This node's allocations as Nomad shows them now: (job, client status).
    async fn allocations_here(api: &crate::nomad::Settings) -> Vec<(String, String)> {
        let client = crate::nomad::Client::new(api).unwrap();
        let (me, _) = client.find_self().await.unwrap().unwrap();
        let mut v: Vec<(String, String)> = client
            .node_allocations(&me.id)
            .await
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["JobID"].as_str().unwrap().to_string(),
                    a["ClientStatus"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Right after an apply Nomad has placed nothing yet (its scheduler takes 2 s here):
    /// the gate must wait for the allocation, not pass on an empty list.
    #[tokio::test]
    async fn a_trial_waits_for_the_allocations_nomad_has_yet_to_place() {
        let api = double_with(Duration::from_secs(2), &[job("web", "system", "/bin/sh")]).await;
        let (_d, esp, event) = gate_against(api.clone(), Some("edge")).await;
        assert!(event.is_none(), "no reboot after a commit");
        assert_eq!(
            allocations_here(&api).await,
            [("web".to_string(), "running".to_string())],
            "committed before the pack set's allocation ran here"
        );
        assert_eq!(esp.read_record().unwrap().default, Slot::B);
    }

    /// A job Nomad cannot place on this node (it asks for more memory than the node has)
    /// fails the gate at once, with Nomad's reason, instead of passing with nothing here.
    #[tokio::test]
    async fn a_job_nomad_cannot_place_here_rolls_back_naming_why() {
        let mut big = job("big", "service", "/bin/sh");
        big["TaskGroups"][0]["Tasks"][0]["Resources"] =
            serde_json::json!({"CPU": 100, "MemoryMB": 4096});
        let api = double_with(Duration::from_millis(300), &[big]).await;
        let (_d, esp, event) = gate_against(api, Some("edge")).await;
        assert!(matches!(event, Some(Event::Power(PowerAction::Reboot))));
        let r = esp.read_record().unwrap();
        assert_eq!(r.default, Slot::A);
        let why = r.rolled_back.unwrap();
        assert!(
            why.contains("job `big` cannot be placed: group `g`: memory exhausted on 1 node"),
            "{why}"
        );
    }

    /// A system job whose constraints keep it off this node never runs here: it must not
    /// hold the gate until its deadline (the test's timeout is below it).
    #[tokio::test]
    async fn a_job_kept_off_this_node_by_its_constraints_does_not_hold_the_gate() {
        let mut pinned = job("pinned", "system", "/bin/sh");
        pinned["Constraints"] = serde_json::json!([
            {"LTarget": "${node.unique.name}", "RTarget": "another-node", "Operand": "="}]);
        let api = double_with(
            Duration::from_millis(300),
            &[pinned, job("web", "system", "/bin/sh")],
        )
        .await;
        let (_d, esp, event) = gate_against(api.clone(), Some("edge")).await;
        assert!(event.is_none());
        assert_eq!(esp.read_record().unwrap().default, Slot::B);
        assert_eq!(
            allocations_here(&api).await,
            [("web".to_string(), "running".to_string())]
        );
    }

    /// Runs the gate of a fresh trial of slot B with Nomad healthy and the set applied.
    #[test]
    fn the_version_comes_from_os_release() {
        let text =
            "NAME=NomadOS\nID=nomados\nVERSION_ID=0.1.0-v2\nPRETTY_NAME=\"NomadOS 0.1.0-v2\"\n";
        assert_eq!(os_release_version(text).as_deref(), Some("0.1.0-v2"));
        assert_eq!(
            os_release_version("VERSION_ID=\"3\"\n").as_deref(),
            Some("3")
        );
        assert_eq!(os_release_version("NAME=x\n"), None);
    }

    #[test]
    fn a_rolled_back_trial_payload_is_remembered() {
        let (_d, esp) = fake_esp();
        std::fs::create_dir_all(esp.path("nomados/b")).unwrap();
        let sha = "e".repeat(64);
        wanted::write_slot_info(&esp, Slot::B, &sha, "3").unwrap();
        let armed = esp.arm_trial(&Record::default(), Slot::B).unwrap();
        let list = esp.path("data/upgrades-rolled-back");
        assert!(settle(&esp, armed, Slot::A, 900, &list).is_none());
        assert_eq!(wanted::read_rolled_back(&list), vec![sha]);
    }

    async fn gate_against(
        api: crate::nomad::Settings,
        owner: Option<&str>,
    ) -> (tempfile::TempDir, Esp, Option<Event>) {
        let (d, esp) = fake_esp();
        let armed = esp.arm_trial(&Record::default(), Slot::B).unwrap();
        let t = settle(&esp, armed, Slot::B, 60, &esp.path("rolled-back")).unwrap();
        let (_h_tx, h_rx) = watch::channel(true);
        let (_p_tx, p_rx) = watch::channel(PacksSeen::Applied);
        let (e_tx, mut e_rx) = mpsc::unbounded_channel();
        // Without packs.owner, the owner the applier recorded in its cache.
        let cache = tempfile::tempdir().unwrap();
        std::fs::write(crate::packs::record::owner_path(cache.path()), "edge\n").unwrap();
        let set = PackSetRef {
            exists: true,
            owner: owner.map(str::to_string),
            cache_dir: cache.path().to_path_buf(),
        };
        tokio::time::timeout(Duration::from_secs(30), gate(t, api, set, h_rx, p_rx, e_tx))
            .await
            .unwrap();
        (d, esp, e_rx.try_recv().ok())
    }

    #[tokio::test]
    async fn running_allocations_of_the_set_commit_the_trial() {
        let api = double_with_job("/bin/sh").await;
        let (_d, esp, event) = gate_against(api, None).await;
        assert!(event.is_none(), "no reboot after a commit");
        let r = esp.read_record().unwrap();
        assert_eq!((r.default, r.trial), (Slot::B, None));
    }

    #[tokio::test]
    async fn a_failed_allocation_of_the_set_rolls_back_naming_job_and_task() {
        let api = double_with_job("/nope/missing").await;
        let (_d, esp, event) = gate_against(api, Some("edge")).await;
        assert!(matches!(event, Some(Event::Power(PowerAction::Reboot))));
        let r = esp.read_record().unwrap();
        assert_eq!(r.default, Slot::A);
        let why = r.rolled_back.unwrap();
        assert!(
            why.contains("job `web`")
                && why.contains("task `server`")
                && why.contains("/nope/missing"),
            "{why}"
        );
    }
}
