//! Performs a reconcile plan against Nomad (placeholder until the applier lands).

use std::path::PathBuf;

/// What one applier run needs. PID 1 builds this from its config; the CLI from its flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pack-set file or directory.
    pub set_path: PathBuf,
    /// Nomad HTTP API address, e.g. `http://127.0.0.1:4646`.
    pub nomad_addr: String,
    /// ACL token, if any (never logged).
    pub token: Option<String>,
    /// Overrides the set's `_name` as the owner of managed jobs.
    pub owner: Option<String>,
    /// Where downloaded packs are cached.
    pub cache_dir: PathBuf,
    /// Wait for changed jobs' allocations to run.
    pub wait: bool,
}

/// Per-job outcome counts; printed as the one-line summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub failed: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} created, {} updated, {} unchanged, {} deleted, {} failed",
            self.created, self.updated, self.unchanged, self.deleted, self.failed
        )
    }
}

/// Applies the pack set once. Errors only when nothing could be attempted (config broken,
/// Nomad unreachable); per-pack failures are counted in the summary.
pub async fn apply(opts: &Options) -> anyhow::Result<Summary> {
    anyhow::bail!(
        "applier not implemented yet for {}",
        opts.set_path.display()
    )
}
