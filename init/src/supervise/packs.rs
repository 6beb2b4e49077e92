//! Applying the pack set: when Nomad becomes healthy, on SIGHUP, and every interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::boot::config::PacksConfig;
use crate::packs::apply::{apply, Options};

pub async fn run(
    config: PacksConfig,
    api: crate::nomad::Settings,
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
            nomad: match &config.token_file {
                Some(f) => crate::nomad::Settings {
                    token: crate::nomad::TokenSource::File(f.clone()),
                    ..api.clone()
                },
                None => api.clone(),
            },
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
