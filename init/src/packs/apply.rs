//! The applier: fetch and render every pack ([`super::prepare`]), read what Nomad holds
//! ([`super::live`]), plan ([`super::plan`]) and make Nomad match ([`super::execute`]). A
//! pack that fails is reported and skipped; the jobs, policies and variables it applied
//! before stay exactly as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::Value;

use super::events::{Event, Sink};
use super::execute::Executor;
use super::model::{JobKey, PackSet};
use super::plan::{self, Step};
use super::prepare::{prepare, Prepared};
use super::record::{self, Record};
use super::{config, live, origin, report};
use crate::nomad::{self, Client};

/// What one applier run needs. PID 1 builds this from its config; the CLI from its flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pack-set file or directory.
    pub set_path: PathBuf,
    /// How to reach Nomad: address, ACL token (never logged), namespace, region, TLS.
    pub nomad: nomad::Settings,
    /// Overrides the set's `_name` as the owner of managed jobs.
    pub owner: Option<String>,
    /// Where downloaded packs are cached.
    pub cache_dir: PathBuf,
    /// Wait for changed jobs' allocations to run.
    pub wait: bool,
}

impl Options {
    pub fn new(set_path: impl Into<PathBuf>, nomad_addr: impl Into<String>) -> Self {
        Self {
            set_path: set_path.into(),
            nomad: nomad::Settings::new(nomad_addr),
            owner: None,
            cache_dir: origin::FetchOptions::default().cache_dir,
            wait: false,
        }
    }
}

pub use super::model::{Mode, Summary};

/// Result of a run: the summary and whether the plan had changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub summary: Summary,
    pub has_changes: bool,
}

/// Why a run could not be attempted at all (per-pack failures are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pack set itself is broken; rendered as `file:line:column` problems with snippets.
    #[error("{}", .0.render().trim_end())]
    Config(config::ConfigError),
    /// Anything else: Nomad unreachable, the cache unusable...
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Runs the applier in `mode`, writing the human-readable report to `out`. Errors only
/// when nothing could be attempted; per-pack failures are counted in the outcome.
pub async fn run(opts: &Options, mode: Mode, out: &mut dyn Sink) -> Result<Outcome, RunError> {
    let client = Client::new(&opts.nomad).map_err(anyhow::Error::from)?;
    let set = config::load(&opts.set_path).map_err(RunError::Config)?;
    Ok(run_set(&set, opts, mode, out, &client).await?)
}

async fn run_set(
    set: &PackSet,
    opts: &Options,
    mode: Mode,
    out: &mut dyn Sink,
    client: &Client,
) -> anyhow::Result<Outcome> {
    let mut prepared = prepare(set, opts.owner.as_deref(), &opts.cache_dir, client).await?;
    // Counted now: planning takes the declared jobs out of `prepared`.
    let jobs = prepared.desired.len();
    for f in &prepared.failures {
        for r in &f.reasons {
            out.emit(&Event::PackFailed {
                pack: &f.pack,
                reason: r,
            })?;
        }
    }
    let mut summary = Summary {
        failed: prepared.failures.len(),
        ..Summary::default()
    };
    match mode {
        Mode::Validate => {
            out.emit(&summary_event(mode, &summary, jobs, set, &prepared))?;
            return Ok(Outcome {
                summary,
                has_changes: false,
            });
        }
        Mode::Render => {
            for job in &prepared.rendered {
                out.emit(&Event::Rendered {
                    source: &job.source,
                    text: &job.text,
                })?;
            }
            return Ok(Outcome {
                summary,
                has_changes: false,
            });
        }
        Mode::Plan | Mode::Apply => {}
    }

    let observed = live::observe(client, &mut prepared, out).await?;
    let steps = plan::plan(
        &prepared.owner,
        &observed.desired,
        &observed.live,
        &prepared.failed_packs(),
    );
    let record_path = record::path(&opts.cache_dir, &opts.nomad.addr, &prepared.owner);
    if mode == Mode::Apply {
        // PID 1's trial gate reads which owner's allocations to look at.
        if let Err(e) = crate::fsutil::write_atomic(
            &record::owner_path(&opts.cache_dir),
            &format!("{}\n", prepared.owner),
        ) {
            out.emit(&Event::Problem {
                subject: "cache",
                message: &format!("could not record the owner: {e}"),
            })?;
        }
    }
    let mut record = Record::load(&record_path);
    let (steps, mut drift_plans) = check_drift(client, steps, &mut record, out).await?;
    let has_changes = steps.iter().any(Step::is_change);

    if mode == Mode::Plan {
        for step in &steps {
            out.emit(&Event::Step(step))?;
            let Step::Update { desired, .. } = step else {
                continue;
            };
            if let (Some(key), Some(job)) = (desired.key.job(), desired.job()) {
                // A drifted job's dry run already happened in check_drift.
                let planned = match drift_plans.remove(key) {
                    Some(resp) => Ok(resp),
                    None => client.plan(job).await,
                };
                match planned {
                    Ok(resp) => out.emit(&Event::Diff {
                        job: key,
                        lines: report::diff_lines(&resp["Diff"]),
                    })?,
                    Err(e) => out.emit(&Event::Note(&format!(
                        "    (Nomad could not plan this job: {e})"
                    )))?,
                }
            }
        }
        let c = plan::count(&steps);
        summary.failed += c.refuse;
        let planned = Summary {
            created: c.create,
            updated: c.update,
            unchanged: c.unchanged,
            deleted: c.delete,
            failed: summary.failed,
        };
        out.emit(&summary_event(mode, &planned, jobs, set, &prepared))?;
        return Ok(Outcome {
            summary,
            has_changes,
        });
    }

    let executor = Executor {
        client,
        owner: &prepared.owner,
        submission: prepared.agent.version.supports_submission(),
    };
    let registry = observed.registry.as_ref();
    let changed = executor
        .execute(steps, registry, &mut summary, &mut record, out)
        .await?;
    if let Err(e) = record.save(&record_path) {
        // Only costs dry runs next time: every job is then checked again.
        out.emit(&Event::Problem {
            subject: &format!("cannot save {}", record_path.display()),
            message: &e.to_string(),
        })?;
    }
    if opts.wait && !changed.is_empty() {
        let failed = wait_for_allocations(client, &changed, Duration::from_secs(300), out).await?;
        summary.failed += failed;
    }
    collect_cache_garbage(set, &prepared, out)?;
    out.emit(&summary_event(mode, &summary, jobs, set, &prepared))?;
    Ok(Outcome {
        summary,
        has_changes,
    })
}

/// After an apply, drops cached downloads the set no longer names. A failure costs only
/// disk space, so it is reported and the run goes on.
/// The run's last event: the counts, and how the set's packs fared.
fn summary_event<'a>(
    mode: Mode,
    counts: &'a Summary,
    jobs: usize,
    set: &PackSet,
    prepared: &Prepared,
) -> Event<'a> {
    Event::Summary {
        mode,
        counts,
        jobs,
        packs_ok: set.packs.len().saturating_sub(prepared.failures.len()),
        packs_failed: prepared.failures.len(),
    }
}

fn collect_cache_garbage(
    set: &PackSet,
    prepared: &Prepared,
    out: &mut dyn Sink,
) -> std::io::Result<()> {
    match prepared
        .fetcher
        .collect_garbage(&set.packs, &prepared.used_digests)
    {
        // Index entries alone are a few hundred bytes: not worth a line.
        Ok(r) if r.archives > 0 => out.emit(&Event::Note(&format!(
            "Cache: removed {} the pack set no longer uses ({:.1} MiB).",
            plural(r.archives, "downloaded archive"),
            r.freed_bytes as f64 / (1024.0 * 1024.0)
        ))),
        Ok(_) => Ok(()),
        Err(e) => out.emit(&Event::Problem {
            subject: "cache",
            message: &format!("could not remove unused entries: {e}"),
        }),
    }
}

use super::events::plural;

/// Asks Nomad, with a dry run (never a write), whether the unchanged jobs whose index moved
/// since this machine last saw them still match what we render. Those that do not were
/// changed outside the pack set and become updates back to it (their dry runs are returned
/// for `plan` to show); those that do are recorded.
async fn check_drift(
    client: &Client,
    steps: Vec<Step>,
    record: &mut Record,
    out: &mut dyn Sink,
) -> anyhow::Result<(Vec<Step>, BTreeMap<JobKey, Value>)> {
    let asks: Vec<(usize, Value)> = plan::drift_suspects(&steps, record)
        .into_iter()
        .filter_map(|i| match &steps[i] {
            Step::Unchanged { desired, .. } => Some((i, desired.job()?.clone())),
            _ => None,
        })
        .collect();
    let answers: Vec<(usize, crate::nomad::Result<Value>)> = stream::iter(asks)
        .map(|(i, job)| async move { (i, client.plan(&job).await) })
        .buffered(8)
        .collect()
        .await;
    let mut drifted = BTreeMap::new();
    for (i, answer) in answers {
        let Step::Unchanged { live, .. } = &steps[i] else {
            continue;
        };
        let Some(key) = live.key.job() else {
            continue;
        };
        match answer {
            Ok(resp) if resp["Diff"]["Type"].as_str() == Some("None") => {
                record.set(key, live.index)
            }
            Ok(resp) => {
                out.emit(&Event::Drift { job: key })?;
                drifted.insert(i, resp);
            }
            // Left unchanged and unrecorded: the next run asks again.
            Err(e) => out.emit(&Event::Problem {
                subject: &key.to_string(),
                message: &format!("could not check for changes made outside the pack set: {e}"),
            })?,
        }
    }
    let mut plans = BTreeMap::new();
    let steps = steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| match drifted.remove(&i) {
            Some(resp) => {
                plans.extend(s.key().job().map(|key| (key.clone(), resp)));
                plan::drifted(s)
            }
            None => s,
        })
        .collect();
    Ok((steps, plans))
}

/// Waits until every changed job's allocations for its newest version run. System jobs
/// have no deployments before Nomad 1.11, so they are judged by their allocations.
/// Returns how many jobs failed; prints the task events that explain each failure.
async fn wait_for_allocations(
    client: &Client,
    jobs: &[JobKey],
    timeout: Duration,
    out: &mut dyn Sink,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut pending: BTreeSet<JobKey> = jobs.iter().cloned().collect();
    let mut failed = 0;
    out.emit(&Event::Note(&format!(
        "Waiting for {} jobs to run...",
        pending.len()
    )))?;
    while !pending.is_empty() {
        let mut settled = Vec::new();
        for key in &pending {
            let version = match client.read_job(&key.namespace, &key.id).await? {
                Some(job) => job["Version"].as_u64().unwrap_or(0),
                None => {
                    out.emit(&Event::Problem {
                        subject: &key.to_string(),
                        message: "the job disappeared while waiting",
                    })?;
                    settled.push((key.clone(), false));
                    continue;
                }
            };
            let allocs = client.allocations(&key.namespace, &key.id).await?;
            match report::alloc_state(&allocs, version) {
                report::AllocState::Running(n) => {
                    out.emit(&Event::Note(&format!("  {key}: {n} allocations running")))?;
                    settled.push((key.clone(), true));
                }
                report::AllocState::Failed(events) => {
                    out.emit(&Event::Problem {
                        subject: &key.to_string(),
                        message: "allocation failed",
                    })?;
                    for e in events {
                        out.emit(&Event::Note(&format!("    {e}")))?;
                    }
                    settled.push((key.clone(), false));
                }
                report::AllocState::Pending => {}
            }
        }
        for (key, ok) in settled {
            pending.remove(&key);
            if !ok {
                failed += 1;
            }
        }
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for key in &pending {
                out.emit(&Event::Problem {
                    subject: &key.to_string(),
                    message: &format!("allocations not running after {}s", timeout.as_secs()),
                })?;
            }
            failed += pending.len();
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(failed)
}
