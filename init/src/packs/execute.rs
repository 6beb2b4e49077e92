//! The one executor: performs a plan's steps against Nomad, whatever their kind, a few at
//! a time, and reports each in plan order as it completes. Policies and variables are
//! written first, then the owner's registry of variables, then the jobs that may use them.

use reqwest::StatusCode;
use serde_json::json;

use super::events::{Event, Sink};
use super::live::Registry;
use super::model::{JobKey, Kind, ObjectKey, Summary};
use super::objects;
use super::plan::{self, Body, Desired, Live, Step};
use super::record::Record;
use super::report;
use crate::nomad::{ApiError, Client};
use futures::stream::{self, StreamExt};

/// How many writes are in flight at once.
const IN_FLIGHT: usize = 8;

/// Who writes, where, and how.
pub(super) struct Executor<'a> {
    pub(super) client: &'a Client,
    pub(super) owner: &'a str,
    /// Send jobs' rendered source as `Submission` (the agent keeps it).
    pub(super) submission: bool,
}

/// What a run did, beyond the summary.
#[derive(Default)]
struct Progress {
    /// Jobs created or updated, to wait for.
    changed: Vec<JobKey>,
    /// Objects whose delete failed: still this owner's.
    undeleted: Vec<ObjectKey>,
}

/// Outcome of one step once performed; creates and updates carry the new modify index.
enum Done {
    Created(u64),
    Updated(u64),
    Unchanged,
    Deleted,
    Kept,
    Failed(String),
    /// The object exists and is not this owner's; why.
    Refused(String),
}

impl Executor<'_> {
    /// Performs `steps` (in plan order), counting into `summary` and recording jobs' new
    /// indexes in `record`. Returns the jobs that were created or updated.
    pub(super) async fn execute(
        &self,
        mut steps: Vec<Step>,
        registry: Option<&Registry>,
        summary: &mut Summary,
        record: &mut Record,
        out: &mut dyn Sink,
    ) -> anyhow::Result<Vec<JobKey>> {
        let first_job = (steps.iter())
            .position(|s| s.key().kind() == Kind::Job)
            .unwrap_or(steps.len());
        let jobs = steps.split_off(first_job);
        let next = registry.map(|r| objects::registry_after(&r.entries, &steps));
        let mut progress = Progress::default();
        self.perform_all(steps, &mut progress, summary, record, out)
            .await?;
        if let (Some(registry), Some(mut next)) = (registry, next) {
            // A variable that could not be deleted is still this owner's.
            for key in progress.undeleted.iter().filter_map(objects::registry_key) {
                if let Some(entry) = registry.entries.get(&key) {
                    next.insert(key, entry.clone());
                }
            }
            self.write_registry(registry, next).await?;
        }
        self.perform_all(jobs, &mut progress, summary, record, out)
            .await?;
        Ok(progress.changed)
    }

    async fn perform_all(
        &self,
        steps: Vec<Step>,
        progress: &mut Progress,
        summary: &mut Summary,
        record: &mut Record,
        out: &mut dyn Sink,
    ) -> anyhow::Result<()> {
        // Each step is reported as soon as it and every step before it are done (in plan
        // order), so an apply that is interrupted has already said what it wrote.
        let mut results = stream::iter(steps)
            .map(|step| async move {
                let done = self.perform(&step).await;
                (step, done)
            })
            .buffered(IN_FLIGHT);
        while let Some((step, done)) = results.next().await {
            let job = step.key().job();
            match done {
                Done::Created(index) | Done::Updated(index) => {
                    if matches!(done, Done::Created(_)) {
                        summary.created += 1;
                    } else {
                        summary.updated += 1;
                    }
                    out.emit(&Event::Step(&step))?;
                    if let Some(job) = job {
                        record.set(job, index);
                        progress.changed.push(job.clone());
                    }
                }
                Done::Unchanged => summary.unchanged += 1,
                Done::Deleted => {
                    if let Some(job) = job {
                        record.remove(job);
                    }
                    summary.deleted += 1;
                    out.emit(&Event::Step(&step))?;
                }
                Done::Kept => out.emit(&Event::Step(&step))?,
                Done::Failed(why) => {
                    summary.failed += 1;
                    if let Step::Delete(live) = &step {
                        progress.undeleted.push(live.key.clone());
                    }
                    out.emit(&Event::Problem {
                        subject: &report::problem_subject(step.key()),
                        message: &why,
                    })?;
                }
                Done::Refused(why) => {
                    summary.failed += 1;
                    // Which declaration wanted it, to be renamed or dropped.
                    let subject = match &step {
                        Step::Create(d)
                        | Step::Update { desired: d, .. }
                        | Step::Refuse { desired: d, .. } => {
                            format!("{} ({})", report::problem_subject(&d.key), d.source)
                        }
                        other => report::problem_subject(other.key()),
                    };
                    out.emit(&Event::Problem {
                        subject: &subject,
                        message: &why,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Performs one step.
    async fn perform(&self, step: &Step) -> Done {
        match step {
            Step::Unchanged { .. } => Done::Unchanged,
            Step::Keep { .. } => Done::Kept,
            Step::Refuse { live, .. } => Done::Refused(report::refusal(self.owner, live)),
            Step::Delete(live) => match self.delete(&live.key).await {
                Ok(()) => Done::Deleted,
                Err(e) => Done::Failed(e.to_string()),
            },
            Step::Create(d) | Step::Update { desired: d, .. } => {
                let mut now = match step {
                    Step::Update { live, .. } => Some(live.clone()),
                    _ => None,
                };
                // Two tries: on a check-and-set conflict, another writer came first; look
                // again and decide as the plan would.
                for _ in 0..2 {
                    let index = now.as_ref().map_or(0, |l| l.index);
                    match self.write(d, index).await {
                        Ok(index) if matches!(step, Step::Create(_)) => {
                            return Done::Created(index)
                        }
                        Ok(index) => return Done::Updated(index),
                        Err(e) if is_conflict(&e) => {
                            let read = match self.reread(d, now.as_ref()).await {
                                Ok(read) => read,
                                Err(read) => return Done::Failed(read.to_string()),
                            };
                            match plan::decide(self.owner, d, read.as_ref()) {
                                Step::Unchanged { .. } => return Done::Unchanged,
                                Step::Refuse { live, .. } => {
                                    return Done::Refused(report::refusal(self.owner, &live))
                                }
                                _ => now = read,
                            }
                        }
                        Err(e) => return Done::Failed(e.to_string()),
                    }
                }
                Done::Failed(format!(
                    "the {} kept changing under us (another applier?)",
                    d.key.kind().name()
                ))
            }
        }
    }

    /// Writes `d`, checked against `index` where the kind has check-and-set (0: it must
    /// not exist). Returns the new modify index.
    async fn write(&self, d: &Desired, index: u64) -> Result<u64, ApiError> {
        let client = self.client;
        match &d.body {
            Body::Job { job, submission } => {
                let submission = submission.clone().filter(|_| self.submission);
                let r = client.register(job, Some(index), submission).await?;
                Ok(r.job_modify_index)
            }
            Body::Policy {
                name,
                description,
                rules,
            } => {
                let body = json!({"Name": name, "Description": description, "Rules": rules});
                client.post(&objects::policy_path(name), &body).await?;
                Ok(0)
            }
            Body::Variable {
                namespace,
                path,
                items,
            } => {
                let url = format!("{}&cas={index}", objects::variable_path(namespace, path));
                let body = json!({"Namespace": namespace, "Path": path, "Items": items});
                let written = client.put(&url, &body).await?;
                Ok(written["ModifyIndex"].as_u64().unwrap_or(0))
            }
        }
    }

    /// Deletes the object at `key`; one that is already gone counts as deleted.
    async fn delete(&self, key: &ObjectKey) -> Result<(), ApiError> {
        let result = match key {
            ObjectKey::Job(job) => {
                (self.client)
                    .deregister_purge(&job.namespace, &job.id)
                    .await
            }
            ObjectKey::Policy(name) => self
                .client
                .delete(&objects::policy_path(name))
                .await
                .map(drop),
            ObjectKey::Variable { namespace, path } => (self.client)
                .delete(&objects::variable_path(namespace, path))
                .await
                .map(drop),
        };
        match result {
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(()),
            other => other,
        }
    }

    /// What Nomad now holds under `d`'s key. Whether a variable is ours was read from the
    /// owner's registry when the run planned (`planned`).
    async fn reread(&self, d: &Desired, planned: Option<&Live>) -> Result<Option<Live>, ApiError> {
        let client = self.client;
        Ok(match &d.body {
            Body::Job { .. } => match d.key.job() {
                Some(key) => (client.read_job(&key.namespace, &key.id).await?)
                    .as_ref()
                    .and_then(objects::live_job),
                None => None,
            },
            Body::Policy { name, .. } => (client.get_optional(&objects::policy_path(name)).await?)
                .map(|p| objects::live_policy(name, p["Description"].as_str().unwrap_or_default())),
            Body::Variable {
                namespace, path, ..
            } => {
                let held = client
                    .get_optional(&objects::variable_path(namespace, path))
                    .await?;
                let ours = planned.and_then(|l| Some((l.owner.as_deref()?, l.pack.as_deref()?)));
                held.map(|held| objects::live_variable(d.key.clone(), &held, ours))
            }
        })
    }

    /// Writes the owner's registry of variables when it changed, checked against the index
    /// it was read at. Nomad refuses variables without items: an empty one is deleted.
    async fn write_registry(
        &self,
        registry: &Registry,
        next: std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        if next == registry.entries {
            return Ok(());
        }
        let path = objects::registry_path(self.owner);
        let url = format!(
            "{}&cas={}",
            objects::variable_path("default", &path),
            registry.index
        );
        if next.is_empty() {
            self.client.delete(&url).await?;
        } else {
            let body = json!({"Namespace": "default", "Path": path, "Items": next});
            self.client.put(&url, &body).await?;
        }
        Ok(())
    }
}

/// A check-and-set write that lost: a job's enforced index, or a variable's `cas`.
fn is_conflict(e: &ApiError) -> bool {
    e.is_index_conflict() || e.status() == Some(StatusCode::CONFLICT)
}
