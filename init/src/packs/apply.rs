//! The applier: fetch and render every pack ([`super::prepare`]), compare with what this
//! owner runs in Nomad, and make Nomad match. A pack that fails is reported and skipped; the jobs it
//! applied before stay exactly as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::Value;

use super::events::{Event, Sink};
use super::model::JobKey;
use super::model::PackSet;
use super::plan::{self, DesiredJob, LiveJob, Step};
use super::prepare::{prepare, Prepared};
use super::record::{self, Record};
use super::{config, extras, origin, report};
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
    let prepared = prepare(set, opts.owner.as_deref(), &opts.cache_dir, client).await?;
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
            out.emit(&summary_event(mode, &summary, set, &prepared))?;
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

    let live = live_jobs(client, &prepared).await?;
    let steps = plan::plan(
        &prepared.owner,
        &prepared.desired,
        &live,
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

    let extras = extras::reconcile(
        client,
        &prepared.agent,
        &prepared.owner,
        &prepared.policies,
        &prepared.variables,
        &prepared.failed_packs(),
        mode == Mode::Plan,
        out,
    )
    .await?;
    summary.failed += extras.failed;

    if mode == Mode::Plan {
        for step in &steps {
            out.emit(&Event::Step(step))?;
            if let Step::Update { desired, .. } = step {
                // A drifted job's dry run already happened in check_drift.
                let planned = match drift_plans.remove(&desired.key) {
                    Some(resp) => Ok(resp),
                    None => client.plan(&desired.job).await,
                };
                match planned {
                    Ok(resp) => out.emit(&Event::Diff {
                        job: &desired.key,
                        lines: report::diff_lines(&resp["Diff"]),
                    })?,
                    Err(e) => out.emit(&Event::Note(&format!(
                        "    (Nomad could not plan this job: {e})"
                    )))?,
                }
            }
        }
        let c = plan::count(&steps);
        summary.failed += c.foreign;
        let planned = Summary {
            created: c.create,
            updated: c.update,
            unchanged: c.unchanged,
            deleted: c.delete,
            failed: summary.failed,
        };
        out.emit(&summary_event(mode, &planned, set, &prepared))?;
        return Ok(Outcome {
            summary,
            has_changes,
        });
    }

    let changed = execute(client, &prepared, steps, &mut summary, &mut record, out).await?;
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
    out.emit(&summary_event(mode, &summary, set, &prepared))?;
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
    set: &PackSet,
    prepared: &Prepared,
) -> Event<'a> {
    Event::Summary {
        mode,
        counts,
        jobs: prepared.desired.len(),
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

/// `s` as a quoted string of Nomad's filter language (Go string syntax, which JSON's is
/// a subset of).
fn bexpr_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The owner's managed jobs, plus whatever exists under the declared IDs.
async fn live_jobs(client: &Client, prepared: &Prepared) -> anyhow::Result<Vec<LiveJob>> {
    let owner = &prepared.owner;
    let filter = format!(
        "Meta[{}] == {}",
        bexpr_string(super::model::meta::OWNER),
        bexpr_string(owner)
    );
    let version = prepared.agent.version;
    let stubs = client
        .list_jobs(true, version.supports_filter().then_some(filter.as_str()))
        .await?;
    let mut live: Vec<LiveJob> = Vec::new();
    if stubs.iter().all(|s| s.get("Meta").is_some()) {
        live.extend(stubs.iter().filter_map(LiveJob::from_api));
    } else {
        // Agents before 1.4 list no Meta: read each top-level job to learn its owner.
        for stub in stubs
            .iter()
            .filter(|s| s["ParentID"].as_str().unwrap_or("").is_empty())
        {
            if let Some(key) = JobKey::of(stub) {
                if let Some(job) = client.read_job(&key.namespace, &key.id).await? {
                    live.extend(LiveJob::from_api(&job));
                }
            }
        }
    }
    live.retain(|l| l.owner.as_deref() == Some(owner.as_str()));
    let known: BTreeSet<JobKey> = live.iter().map(|l| l.key.clone()).collect();
    for d in &prepared.desired {
        if !known.contains(&d.key) {
            if let Some(job) = client.read_job(&d.key.namespace, &d.key.id).await? {
                live.extend(LiveJob::from_api(&job));
            }
        }
    }
    Ok(live)
}

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
            Step::Unchanged { desired, .. } => Some((i, desired.job.clone())),
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
        match answer {
            Ok(resp) if resp["Diff"]["Type"].as_str() == Some("None") => {
                record.set(&live.key, live.job_modify_index)
            }
            Ok(resp) => {
                out.emit(&Event::Drift { job: &live.key })?;
                drifted.insert(i, resp);
            }
            // Left unchanged and unrecorded: the next run asks again.
            Err(e) => out.emit(&Event::Problem {
                subject: &live.key.to_string(),
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
                plans.insert(s.key().clone(), resp);
                plan::drifted(s)
            }
            None => s,
        })
        .collect();
    Ok((steps, plans))
}

/// Outcome of one step once performed; creates and updates carry the new JobModifyIndex.
enum Done {
    Created(DesiredJob, u64),
    Updated(DesiredJob, u64),
    Unchanged,
    Deleted,
    Kept,
    Failed(String),
}

/// Performs the changing steps (a few at a time) and reports each in plan order as it
/// completes.
/// Returns the jobs that were created or updated.
async fn execute(
    client: &Client,
    prepared: &Prepared,
    steps: Vec<Step>,
    summary: &mut Summary,
    record: &mut Record,
    out: &mut dyn Sink,
) -> anyhow::Result<Vec<DesiredJob>> {
    let use_submission = prepared.agent.version.supports_submission();
    let owner = prepared.owner.as_str();
    // Each step is reported as soon as it and every step before it are done (in plan
    // order), so an apply that is interrupted has already said what it wrote.
    let mut results = stream::iter(steps)
        .map(|step| async move {
            let done = perform(client, owner, &step, use_submission).await;
            (step, done)
        })
        .buffered(8);
    let mut changed = Vec::new();
    while let Some((step, done)) = results.next().await {
        match done {
            Done::Created(d, index) => {
                summary.created += 1;
                out.emit(&Event::Step(&step))?;
                record.set(&d.key, index);
                changed.push(d);
            }
            Done::Updated(d, index) => {
                summary.updated += 1;
                out.emit(&Event::Step(&step))?;
                record.set(&d.key, index);
                changed.push(d);
            }
            Done::Unchanged => summary.unchanged += 1,
            Done::Deleted => {
                record.remove(step.key());
                summary.deleted += 1;
                out.emit(&Event::Step(&step))?;
            }
            Done::Kept => out.emit(&Event::Step(&step))?,
            Done::Failed(why) => {
                summary.failed += 1;
                out.emit(&Event::Problem {
                    subject: &step.key().to_string(),
                    message: &why,
                })?;
            }
        }
    }
    Ok(changed)
}

/// Performs one step.
async fn perform(client: &Client, owner: &str, step: &Step, submission: bool) -> Done {
    let sub = |d: &DesiredJob| d.submission.clone().filter(|_| submission);
    match step {
        Step::Unchanged { .. } => Done::Unchanged,
        Step::Keep { .. } => Done::Kept,
        Step::Foreign { live, .. } => Done::Failed(format!(
            "a job with this ID exists and is not managed by `{owner}` (owner: {}); refusing to overwrite it",
            live.owner.as_deref().unwrap_or("none")
        )),
        Step::Delete(live) => match client.deregister_purge(&live.key.namespace, &live.key.id).await {
            Ok(()) => Done::Deleted,
            Err(e) => Done::Failed(e.to_string()),
        },
        Step::Create(d) | Step::Update { desired: d, .. } => {
            let mut index = match step {
                Step::Update { live, .. } => live.job_modify_index,
                _ => 0,
            };
            // Two tries: on an index conflict, another applier wrote first; look again.
            for _ in 0..2 {
                match client.register(&d.job, Some(index), sub(d)).await {
                    Ok(r) if matches!(step, Step::Create(_)) => {
                        return Done::Created(d.clone(), r.job_modify_index)
                    }
                    Ok(r) => return Done::Updated(d.clone(), r.job_modify_index),
                    Err(e) if e.is_index_conflict() => {
                        match client.read_job(&d.key.namespace, &d.key.id).await {
                            Ok(Some(job)) => {
                                let Some(live) = LiveJob::from_api(&job) else {
                                    return Done::Failed(e.to_string());
                                };
                                if live.owner.as_deref() != Some(owner) {
                                    return Done::Failed(format!(
                                        "a job with this ID exists and is not managed by `{owner}`; refusing to overwrite it"
                                    ));
                                }
                                if live.hash.as_deref() == Some(d.hash.as_str()) && !live.stopped {
                                    return Done::Unchanged;
                                }
                                index = live.job_modify_index;
                            }
                            Ok(None) => index = 0,
                            Err(read) => return Done::Failed(read.to_string()),
                        }
                    }
                    Err(e) => return Done::Failed(e.to_string()),
                }
            }
            Done::Failed("the job kept changing under us (another applier?)".into())
        }
    }
}

/// Waits until every changed job's allocations for its newest version run. System jobs
/// have no deployments before Nomad 1.11, so they are judged by their allocations.
/// Returns how many jobs failed; prints the task events that explain each failure.
async fn wait_for_allocations(
    client: &Client,
    jobs: &[DesiredJob],
    timeout: Duration,
    out: &mut dyn Sink,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut pending: BTreeMap<JobKey, &DesiredJob> =
        jobs.iter().map(|d| (d.key.clone(), d)).collect();
    let mut failed = 0;
    out.emit(&Event::Note(&format!(
        "Waiting for {} jobs to run...",
        pending.len()
    )))?;
    while !pending.is_empty() {
        let mut settled = Vec::new();
        for key in pending.keys() {
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
            for key in pending.keys() {
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
