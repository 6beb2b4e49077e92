//! Applying the pack set: when Nomad becomes healthy, on SIGHUP, and every interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::boot::config::PacksConfig;
use crate::packs::apply::{apply, Options};

pub async fn run(
    config: PacksConfig,
    addr: String,
    mut healthy: watch::Receiver<bool>,
    reapply: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = Duration::from_secs(config.interval_secs);
    loop {
        let reason = tokio::select! {
            changed = healthy.changed() => {
                if changed.is_err() { return; }
                if !*healthy.borrow_and_update() { continue; }
                "nomad became healthy"
            }
            _ = reapply.notified() => "SIGHUP",
            _ = tokio::time::sleep(interval), if !interval.is_zero() => "interval",
            _ = stop.changed() => return,
        };
        if !*healthy.borrow() {
            crate::info!("packs: {reason}: nomad is not healthy; applying once it is");
            continue;
        }
        let opts = Options {
            set_path: config.set.clone(),
            nomad_addr: addr.clone(),
            token: config.token_file.as_deref().and_then(read_token),
            owner: config.owner.clone(),
            cache_dir: config.cache_dir.clone(),
            wait: false,
        };
        crate::info!("packs: applying {} ({reason})", opts.set_path.display());
        // A task of its own, so a panic in the applier is caught by the runtime, not us.
        match tokio::spawn(async move { apply(&opts).await }).await {
            Ok(Ok(summary)) => crate::info!("packs: {summary}"),
            Ok(Err(e)) => crate::error!("packs: apply failed: {e:#}"),
            Err(e) => crate::error!("packs: applier crashed: {e}"),
        }
    }
}

/// Reads the ACL token file; a missing or unreadable file is logged (by name, never its
/// content) and the apply goes on without a token, which Nomad then refuses clearly.
fn read_token(path: &std::path::Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        Ok(_) => {
            crate::error!("packs: token file {} is empty", path.display());
            None
        }
        Err(e) => {
            crate::error!("packs: cannot read token file {}: {e}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_trimmed_and_missing_ones_give_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cr3t\n").unwrap();
        assert_eq!(read_token(&p).as_deref(), Some("s3cr3t"));
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(read_token(&p), None);
        assert_eq!(read_token(&dir.path().join("missing")), None);
    }
}
