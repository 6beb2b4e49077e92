//! `nomad-init upgrade`: write a new system into the inactive slot and arm a one-time
//! trial boot of it (docs/image.md, "Upgrade"). The work is in `crate::slots::upgrade`; this
//! finds the machine's pieces (the booted slot, the ESP, the slot partition).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::power::PowerAction;
use crate::slots::upgrade::{self, Target, SOURCE_ENV};
use crate::slots::{self, Esp, Slot};

use crate::slots::trial::{mount_esp, ESP_MOUNT};

#[derive(Debug, Clone, clap::Args)]
pub struct UpgradeArgs {
    /// The new system: the `nomados.slot` file an image build writes, as a path or an
    /// http(s) URL. Without it, the environment variable NOMADOS_UPGRADE_SOURCE (how PID 1
    /// passes a URL that may carry credentials: the environment is not world-readable).
    pub source: Option<String>,
    /// Expected SHA-256 of the payload (the build manifest lists it); nothing is armed on a
    /// mismatch.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Arm the trial but do not reboot (it runs at the next reboot).
    #[arg(long)]
    pub no_reboot: bool,
    /// Give up when the whole upgrade takes longer (seconds).
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// Give up when the download stalls this long (seconds).
    #[arg(long, default_value_t = 60)]
    pub io_timeout: u64,
    /// A mounted ESP to use instead of finding and mounting NOMADOS-ESP (installers, tests).
    #[arg(long, hide = true)]
    pub esp: Option<PathBuf>,
    /// The inactive slot's device instead of finding NOMADOS-ROOT-<slot> (tests).
    #[arg(long, hide = true)]
    pub device: Option<PathBuf>,
    /// The running slot instead of `nomados.slot=` in /proc/cmdline (tests).
    #[arg(long, hide = true)]
    pub booted: Option<String>,
}

fn booted(args: &UpgradeArgs) -> Result<Slot> {
    if let Some(b) = &args.booted {
        return Slot::parse(b).with_context(|| format!("--booted must be a or b, got `{b}`"));
    }
    let cmdline = crate::fsutil::read_bounded_to_string(Path::new("/proc/cmdline"), 8192)
        .context("read /proc/cmdline")?;
    slots::booted_slot(&cmdline).context(
        "the kernel command line has no nomados.slot=: this machine was not booted from a \
         two-slot NomadOS disk (images from before the slots cannot be upgraded in place)",
    )
}

fn esp(args: &UpgradeArgs) -> Result<Esp> {
    if let Some(dir) = &args.esp {
        return Ok(Esp::at(dir));
    }
    let dev = slots::find_partition(
        Path::new("/dev"),
        Path::new("/sys/class/block"),
        slots::ESP_PARTITION,
    )
    .with_context(|| {
        format!(
            "no partition named {} on this machine",
            slots::ESP_PARTITION
        )
    })?;
    mount_esp(
        Path::new("/proc/self/mountinfo"),
        &dev,
        Path::new(ESP_MOUNT),
    )
    .map_err(|e| anyhow::anyhow!("mount the ESP {} on {ESP_MOUNT}: {e}", dev.display()))?;
    Ok(Esp::at(ESP_MOUNT))
}

fn device(args: &UpgradeArgs, slot: Slot) -> Result<PathBuf> {
    if let Some(d) = &args.device {
        return Ok(d.clone());
    }
    slots::find_partition(
        Path::new("/dev"),
        Path::new("/sys/class/block"),
        slot.partition_name(),
    )
    .with_context(|| {
        format!(
            "no partition named {} on this machine",
            slot.partition_name()
        )
    })
}

fn source(args: &UpgradeArgs) -> Result<String> {
    match &args.source {
        Some(s) => Ok(s.clone()),
        None => std::env::var(SOURCE_ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .with_context(|| format!("no source given (an argument, or {SOURCE_ENV})")),
    }
}

async fn upgrade(args: &UpgradeArgs) -> Result<()> {
    let src = source(args)?;
    let expected = args
        .sha256
        .as_deref()
        .map(upgrade::parse_sha256)
        .transpose()?;
    let running = booted(args)?;
    let esp = esp(args)?;
    let record = esp.read_record()?;
    let slot = record
        .upgrade_target(running)
        .map_err(|e| anyhow::anyhow!("cannot upgrade now: {e}"))?;
    let target = Target {
        esp: esp.clone(),
        slot,
        device: device(args, slot)?,
    };
    println!(
        "running slot {running}; writing slot {slot} ({}) from {}",
        target.device.display(),
        shown(&src)
    );
    let mut print = |line: &str| println!("{line}");
    let work = upgrade::write_slot(
        &src,
        &target,
        expected.as_deref(),
        Duration::from_secs(args.io_timeout.max(1)),
        &mut print,
    );
    let header = match tokio::time::timeout(Duration::from_secs(args.timeout.max(1)), work).await {
        Ok(r) => r?,
        Err(_) => bail!(
            "the upgrade took longer than {}s; slot {slot} is not armed",
            args.timeout
        ),
    };
    esp.arm_trial(&record, slot)?;
    println!(
        "NomadOS {} verified in slot {slot}; the next boot tries it once (slot {running} stays the default until the new system passes its health gate)",
        header.version
    );
    Ok(())
}

/// The source as shown in messages: URLs lose user info and query (secrets live there).
fn shown(src: &str) -> String {
    match reqwest::Url::parse(src) {
        Ok(u) if u.scheme().starts_with("http") => format!(
            "{}://{}{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        _ => src.to_string(),
    }
}

pub fn run(args: &UpgradeArgs) -> i32 {
    let Some(runtime) = super::runtime("nomad-init upgrade") else {
        return 1;
    };
    if let Err(e) = runtime.block_on(upgrade(args)) {
        // No tag of its own: PID 1 tags its child's lines (`supervise::upgrade::TAG`).
        eprintln!("error: {e:#}");
        return 1;
    }
    if args.no_reboot {
        println!("--no-reboot: reboot when convenient (`reboot`)");
        return 0;
    }
    println!("rebooting");
    super::request_power_action(PowerAction::Reboot)
}
