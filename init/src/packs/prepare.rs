//! The applier's first half: from the pack set to checked Nomad objects, in named steps.
//!
//! [`fetch`] brings every pack to a local directory, [`render_pack`] loads and renders one
//! pack in a bounded child process, [`parse_and_check`] turns its rendered jobs into the
//! jobs to send (parsed as Nomad will read them, checked, stamped with the owner), and
//! [`fail_clashes`] fails the packs whose output collides. Packs fail independently: a
//! failure is recorded with its reasons and the other packs go on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use super::model::{
    JobFormat, JobKey, ObjectKey, PackDecl, PackSet, RenderedJob, RenderedPolicy, RenderedVariable,
    Source,
};
use super::objects;
use super::plan::{Body, Desired};
use super::render_child::{self, JobOutcome};
use super::validate;
use super::{origin, render};
use crate::nomad::{AgentInfo, Client};

/// A pack that could not be used this run, and why.
#[derive(Debug, Clone)]
pub(super) struct PackFailure {
    pub(super) pack: String,
    pub(super) reasons: Vec<String>,
}

/// Everything rendered and parsed, ready to diff.
pub(super) struct Prepared {
    pub(super) owner: String,
    pub(super) agent: AgentInfo,
    /// The jobs to write (policies and variables join them once the agent is known to
    /// have them, see [`super::live`]).
    pub(super) desired: Vec<Desired>,
    pub(super) rendered: Vec<RenderedJob>,
    pub(super) policies: Vec<RenderedPolicy>,
    pub(super) variables: Vec<RenderedVariable>,
    pub(super) failures: Vec<PackFailure>,
    pub(super) fetcher: origin::Fetcher,
    /// Archive digests the packs came from this run (kept by the cache collection).
    pub(super) used_digests: Vec<String>,
}

impl Prepared {
    pub(super) fn failed_packs(&self) -> BTreeSet<String> {
        self.failures.iter().map(|f| f.pack.clone()).collect()
    }
}

/// What one pack produced, parsed and checked.
#[derive(Default)]
struct PackOutput {
    jobs: Vec<(Desired, RenderedJob)>,
    policies: Vec<RenderedPolicy>,
    variables: Vec<RenderedVariable>,
}

impl PackOutput {
    fn extend(&mut self, other: PackOutput) {
        self.jobs.extend(other.jobs);
        self.policies.extend(other.policies);
        self.variables.extend(other.variables);
    }
}

/// Fetches, renders, parses and checks every pack. Errors only when nothing can be
/// attempted (a bad owner, Nomad unreachable, the cache unusable).
/// `owner` overrides the set's `_name`; downloads are cached in `cache_dir`.
pub(super) async fn prepare(
    set: &PackSet,
    owner: Option<&str>,
    cache_dir: &Path,
    client: &Client,
) -> anyhow::Result<Prepared> {
    let owner = owner.map_or_else(|| set.name.clone(), str::to_string);
    check_owner(&owner)?;
    let agent = client
        .agent_info()
        .await
        .with_context(|| format!("cannot reach the Nomad agent at {}", client.address()))?;
    let fetch_options = origin::FetchOptions {
        cache_dir: cache_dir.to_path_buf(),
        ..origin::FetchOptions::default()
    }
    .with_env_overrides()
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let fetcher = origin::Fetcher::new(fetch_options);
    let renderer = Renderer {
        exe: std::env::current_exe()
            .context("cannot find this program's own path to render packs in child processes")?,
        limits: render_child::Limits::default()
            .with_env_overrides()
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ctx: render::RenderContext {
            datacenters: vec![agent.datacenter.clone()],
        },
    };

    let fetched = fetch(&fetcher, set).await;
    let mut failures = Vec::new();
    let mut used_digests = Vec::new();
    let mut output = PackOutput::default();
    for (decl, fetched) in set.packs.iter().zip(fetched) {
        let result = match fetched {
            Ok(f) => {
                used_digests.extend(f.digest);
                match render_pack(&renderer, decl, &f.dir).await {
                    Ok(outcomes) => parse_and_check(client, &owner, decl, outcomes).await,
                    Err(reason) => Err(vec![reason]),
                }
            }
            Err(e) => Err(vec![e.to_string()]),
        };
        match result {
            Ok(pack) => output.extend(pack),
            Err(reasons) => failures.push(PackFailure {
                pack: decl.name.clone(),
                reasons,
            }),
        }
    }
    fail_clashes(&output, &mut failures);

    let failed: BTreeSet<&String> = failures.iter().map(|f| &f.pack).collect();
    let (desired, rendered) = output
        .jobs
        .into_iter()
        .filter(|(d, _)| !failed.contains(&d.source.pack))
        .unzip();
    output.policies.retain(|p| !failed.contains(&p.source.pack));
    output
        .variables
        .retain(|v| !failed.contains(&v.source.pack));
    Ok(Prepared {
        owner,
        agent,
        desired,
        rendered,
        policies: output.policies,
        variables: output.variables,
        failures,
        fetcher,
        used_digests,
    })
}

/// Step 1: every pack to a local directory, four downloads at a time, in set order.
async fn fetch(
    fetcher: &origin::Fetcher,
    set: &PackSet,
) -> Vec<Result<origin::FetchedPack, origin::OriginError>> {
    // Futures are built up front: a `map` closure over borrowed packs would not be `Send`.
    let fetches: Vec<_> = set.packs.iter().map(|decl| fetcher.fetch(decl)).collect();
    stream::iter(fetches).buffered(4).collect::<Vec<_>>().await
}

/// How packs are rendered: this binary as a bounded child, with the agent's context.
struct Renderer {
    exe: PathBuf,
    limits: render_child::Limits,
    ctx: render::RenderContext,
}

/// Step 2: loads and renders the pack in `dir` for every declared job of `decl`, in a
/// bounded child: whatever the templates do fails this pack only. One outcome per job.
async fn render_pack(
    renderer: &Renderer,
    decl: &PackDecl,
    dir: &Path,
) -> Result<Vec<JobOutcome>, String> {
    let request = render_child::Request::new(decl, dir, &renderer.ctx);
    let (exe, limits) = (renderer.exe.clone(), renderer.limits.clone());
    tokio::task::spawn_blocking(move || render_child::render(&exe, &limits, &request))
        .await
        .unwrap_or_else(|e| Err(format!("the render task failed: {e}")))
}

/// Step 3: the pack's rendered jobs parsed and checked (see [`desired_job`]), with its
/// policies and variables; every problem of the pack when any job fails.
async fn parse_and_check(
    client: &Client,
    owner: &str,
    decl: &PackDecl,
    outcomes: Vec<JobOutcome>,
) -> Result<PackOutput, Vec<String>> {
    let mut reasons = Vec::new();
    let mut out = PackOutput::default();
    for (job_decl, outcome) in decl.jobs.iter().zip(outcomes) {
        let rendered = match outcome {
            Ok(r) => r,
            Err(e) => {
                reasons.push(e);
                continue;
            }
        };
        out.policies.extend(rendered.policies);
        out.variables.extend(rendered.variables);
        for rj in rendered.jobs {
            match desired_job(client, owner, &rj, &job_decl.allow_drivers).await {
                Ok(d) => out.jobs.push((d, rj)),
                Err(problems) => reasons.extend(problems),
            }
        }
    }
    if reasons.is_empty() {
        Ok(out)
    } else {
        Err(reasons)
    }
}

/// Step 4: job IDs, policy names and variable paths must be unique across the whole
/// output; a clash fails both packs.
fn fail_clashes(output: &PackOutput, failures: &mut Vec<PackFailure>) {
    let keys: Vec<(ObjectKey, &Source)> = (output.jobs.iter())
        .map(|(d, _)| (d.key.clone(), &d.source))
        .chain(output.policies.iter().map(|p| (p.key(), &p.source)))
        .chain(output.variables.iter().map(|v| (v.key(), &v.source)))
        .collect();
    let clashes = validate::find_clashes(keys.iter().map(|(k, s)| (k, *s)));
    for (what, first, second) in &clashes {
        let reason = format!("{what} is rendered twice: by {first} and by {second}");
        for pack in [&first.pack, &second.pack] {
            match failures.iter_mut().find(|f| &f.pack == pack) {
                Some(f) if !f.reasons.contains(&reason) => f.reasons.push(reason.clone()),
                Some(_) => {}
                None => failures.push(PackFailure {
                    pack: pack.clone(),
                    reasons: vec![reason.clone()],
                }),
            }
        }
    }
}

/// The owner ends up in job meta and Nomad filter expressions: the alphabet of a pack
/// set's `_name`, as `--owner` can set it to anything.
fn check_owner(owner: &str) -> anyhow::Result<()> {
    let ok = !owner.is_empty()
        && owner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    anyhow::ensure!(
        ok,
        "owner `{}` is not a valid name: use 1 or more letters, digits, `_`, `.` and `-` (like a pack set's `_name`)",
        owner.escape_debug()
    );
    Ok(())
}

/// Parses one rendered job, checks it and stamps the ownership meta.
async fn desired_job(
    client: &Client,
    owner: &str,
    rj: &RenderedJob,
    allow_drivers: &[String],
) -> Result<Desired, Vec<String>> {
    let at = |msg: String| vec![format!("{}: {msg}", rj.source)];
    let (mut job, tag) = match rj.format {
        JobFormat::Hcl => match client.parse_hcl(&rj.text).await {
            Ok(job) => (job, "hcl2"),
            Err(e) => return Err(at(e.body().map_or(e.to_string(), str::to_string))),
        },
        // Checked as Nomad will decode it (keys without regard to case).
        JobFormat::Json => match serde_json::from_str::<Value>(&rj.text) {
            Ok(v) => match super::json_job::canonicalize(v) {
                Ok(job) => (job, "json"),
                Err(problems) => {
                    return Err(problems
                        .into_iter()
                        .map(|p| format!("{}: {p}", rj.source))
                        .collect())
                }
            },
            Err(e) => return Err(at(format!("invalid JSON: {e}"))),
        },
    };
    let problems = validate::check_job(&job, allow_drivers);
    if !problems.is_empty() {
        return Err(problems
            .into_iter()
            .map(|p| format!("{}: {p}", rj.source))
            .collect());
    }
    let key = JobKey::of(&job).ok_or_else(|| at("the job has no ID".into()))?;
    let hash = objects::hash_rendered(tag, &rj.text);
    objects::stamp(&mut job, owner, &rj.source, &hash);
    let submission = Some(json!({
        "Source": rj.text,
        "Format": tag,
    }));
    Ok(Desired {
        key: ObjectKey::Job(key),
        source: rj.source.clone(),
        hash,
        body: Body::Job { job, submission },
    })
}
