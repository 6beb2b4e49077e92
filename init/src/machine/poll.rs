//! `nomad-init machine-config poll`: long-lived mode's child, run by PID 1 on an interval
//! and on SIGHUP when the user data comes from `nomados.config=<url>`. One conditional
//! request (`If-None-Match` / `If-Modified-Since`) with the first fetch's bounds and
//! sha256 rule; a new version is checked whole, planned against the one in force
//! ([`super::plan`]) and applied like at boot (staged, renamed into place). The plan is
//! left in [`super::paths::PLAN_FILE`] for PID 1, which restarts Nomad, runs the applier
//! or sets the hostname as it says. A broken or failing version changes nothing.

use std::path::Path;

use super::found::{Facts, Found};
use super::paths::Paths;
use super::plan::{self, Plan};
use super::run::{self, ApplyOptions};
use super::sources::url::{self, Conditional, Validators};
use super::userdata;

/// Exit code of a poll that found the version in force (PID 1 then does nothing).
pub const EXIT_UNCHANGED: i32 = 3;
/// Exit code of a poll that applied a new version (the plan is in the plan file).
pub const EXIT_APPLIED: i32 = 0;

/// The poll state and the plan are a few hundred bytes; anything bigger is not ours.
const MAX_STATE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// 304, or the same bytes as in force.
    Unchanged,
    /// A new version was applied; PID 1 carries out the plan.
    Applied(Plan),
    /// The new version is broken or could not be applied: the running one stays.
    Refused,
    /// The URL did not answer as it should (network, HTTP error, size, sha256).
    Failed,
}

impl PollOutcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            PollOutcome::Unchanged => EXIT_UNCHANGED,
            PollOutcome::Applied(_) => EXIT_APPLIED,
            PollOutcome::Refused | PollOutcome::Failed => 1,
        }
    }
}

/// One poll; `limits` bound the request (one attempt: PID 1 backs off between polls).
pub async fn poll(opts: &ApplyOptions, limits: &url::Limits) -> PollOutcome {
    let kernel = crate::boot::cmdline::parse(&opts.cmdline);
    let Some(u) = kernel.config_url.as_deref() else {
        crate::error!("machine config: no nomados.config=<url> on the kernel command line to poll");
        return PollOutcome::Failed;
    };
    let shown = crate::redact::url(u);
    let paths = Paths::under(&opts.root);
    let since = read_json::<Validators>(&paths.poll_state).unwrap_or_default();
    let (body, validators) =
        match url::fetch_if_changed(u, kernel.config_sha256.as_deref(), limits, &since).await {
            Ok(Conditional::NotModified) => {
                crate::info!("machine config: {shown}: not modified");
                return PollOutcome::Unchanged;
            }
            Ok(Conditional::Changed { body, validators }) => (body, validators),
            Err(e) => {
                crate::error!("machine config: poll: {e}; the running configuration stays");
                return PollOutcome::Failed;
            }
        };
    let in_force =
        crate::fsutil::read_bounded(&paths.applied_user_data(), userdata::MAX_USER_DATA_BYTES).ok();
    if in_force.as_deref() == Some(body.as_slice()) {
        crate::info!("machine config: {shown}: unchanged");
        save_state(&paths, &validators);
        return PollOutcome::Unchanged;
    }
    let found = Found {
        source: "cmdline-url",
        user_data: Some(body),
        facts: Facts::default(),
    };
    let name = run::user_data_name(found.source);
    let new = match userdata::parse(&name, found.user_data.as_deref().unwrap_or_default()) {
        Ok(c) => c,
        Err(e) => {
            for line in e.to_string().lines() {
                crate::error!("machine config: {line}");
            }
            crate::error!(
                "machine config: the new version at {shown} is refused; the running configuration stays"
            );
            // Not fetched again until it changes: the error is said once.
            save_state(&paths, &validators);
            return PollOutcome::Refused;
        }
    };
    // What is in force parsed at boot (or at the last poll); a copy that no longer does
    // (unreadable) plans as "everything changed".
    let old = in_force
        .and_then(|b| userdata::parse(&name, &b).ok())
        .unwrap_or_default();
    let plan = plan::plan(&old, &new);
    if let Err(e) = run::apply_checked(opts, &found, &new).await {
        for line in e.lines() {
            crate::error!("machine config: {line}");
        }
        crate::error!("machine config: the new version at {shown} could not be applied; the running configuration stays");
        return PollOutcome::Refused;
    }
    if let Err(e) = write_private(
        &paths.plan_file,
        &serde_json::to_vec(&plan).unwrap_or_default(),
    ) {
        crate::error!("machine config: {}: {e}", paths.plan_file.display());
        return PollOutcome::Refused;
    }
    save_state(&paths, &validators);
    crate::info!(
        "machine config: a new version at {shown} is applied: {}",
        plan.summary()
    );
    PollOutcome::Applied(plan)
}

/// What the last applied poll asked for, read (and removed) by PID 1.
pub fn take_plan(paths: &Paths) -> Option<Plan> {
    let plan = read_json(&paths.plan_file);
    let _ = std::fs::remove_file(&paths.plan_file);
    plan
}

fn save_state(paths: &Paths, v: &Validators) {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    if let Err(e) = write_private(&paths.poll_state, &bytes) {
        crate::warn!("machine config: {}: {e}", paths.poll_state.display());
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = crate::fsutil::read_bounded(path, MAX_STATE_BYTES).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Atomic, 0600 from the start.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    crate::fsutil::write_atomic_mode(path, &[bytes], 0o600, None)
}

#[cfg(test)]
#[path = "poll_tests.rs"]
mod tests;
