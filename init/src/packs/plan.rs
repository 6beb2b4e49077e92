//! The reconcile plan: a pure diff between the jobs the pack set declares and the jobs
//! this owner manages in Nomad. No I/O here.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::model::JobKey;
use super::model::{meta, Source};
use super::record::Record;

/// A job the pack set wants, ready to register (owner meta already set).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredJob {
    pub key: JobKey,
    pub source: Source,
    pub hash: String,
    pub job: Value,
    /// The rendered source, sent as `Submission` where the agent supports it.
    pub submission: Option<Value>,
}

/// What Nomad reports about a job this owner manages (or a declared ID that exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveJob {
    pub key: JobKey,
    pub owner: Option<String>,
    pub pack: Option<String>,
    pub declared_job: Option<String>,
    pub hash: Option<String>,
    pub job_modify_index: u64,
    /// Set for children of periodic and parameterized jobs: never touched.
    pub parent_id: String,
    /// Stopped (deregistered without purge) jobs are recreated when declared.
    pub stopped: bool,
}

impl LiveJob {
    /// Reads the fields the planner needs from a job or a job list stub (with Meta).
    pub fn from_api(v: &Value) -> Option<Self> {
        let key = JobKey::of(v)?;
        let meta_str = |k: &str| v["Meta"][k].as_str().map(str::to_string);
        Some(Self {
            key,
            owner: meta_str(meta::OWNER),
            pack: meta_str(meta::PACK),
            declared_job: meta_str(meta::JOB),
            hash: meta_str(meta::HASH),
            job_modify_index: v["JobModifyIndex"].as_u64().unwrap_or(0),
            parent_id: v["ParentID"].as_str().unwrap_or_default().to_string(),
            stopped: v["Stop"].as_bool().unwrap_or(false),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Create(DesiredJob),
    Update {
        desired: DesiredJob,
        live: LiveJob,
    },
    Unchanged {
        desired: DesiredJob,
        live: LiveJob,
    },
    Delete(LiveJob),
    /// Owned by this set, no longer rendered, but its pack failed this run: left as is.
    Keep {
        live: LiveJob,
        pack: String,
    },
    /// The declared ID exists and belongs to someone else: refused, never overwritten.
    Foreign {
        desired: DesiredJob,
        live: LiveJob,
    },
}

impl Step {
    pub fn key(&self) -> &JobKey {
        match self {
            Step::Create(d) | Step::Update { desired: d, .. } => &d.key,
            Step::Unchanged { desired: d, .. } | Step::Foreign { desired: d, .. } => &d.key,
            Step::Delete(l) | Step::Keep { live: l, .. } => &l.key,
        }
    }

    pub fn is_change(&self) -> bool {
        matches!(
            self,
            Step::Create(_) | Step::Update { .. } | Step::Delete(_)
        )
    }
}

/// Diffs `desired` against `live` (every job Nomad reports for the declared IDs and for
/// this owner). `failed_packs` names packs that could not be fetched, rendered or
/// validated: their jobs are kept, never deleted.
pub fn plan(
    owner: &str,
    desired: &[DesiredJob],
    live: &[LiveJob],
    failed_packs: &BTreeSet<String>,
) -> Vec<Step> {
    let live_by_key: BTreeMap<&JobKey, &LiveJob> = live.iter().map(|l| (&l.key, l)).collect();
    let mut steps = Vec::new();
    let mut declared = BTreeSet::new();
    for d in desired {
        declared.insert(&d.key);
        let step = match live_by_key.get(&d.key) {
            None => Step::Create(d.clone()),
            Some(l) if l.owner.as_deref() != Some(owner) => Step::Foreign {
                desired: d.clone(),
                live: (*l).clone(),
            },
            Some(l) if l.hash.as_deref() == Some(d.hash.as_str()) && !l.stopped => {
                Step::Unchanged {
                    desired: d.clone(),
                    live: (*l).clone(),
                }
            }
            Some(l) => Step::Update {
                desired: d.clone(),
                live: (*l).clone(),
            },
        };
        steps.push(step);
    }
    for l in live {
        if declared.contains(&l.key) || l.owner.as_deref() != Some(owner) || !l.parent_id.is_empty()
        {
            continue;
        }
        match l.pack.as_ref().filter(|p| failed_packs.contains(*p)) {
            Some(pack) => steps.push(Step::Keep {
                live: l.clone(),
                pack: pack.clone(),
            }),
            None => steps.push(Step::Delete(l.clone())),
        }
    }
    steps
}

/// Unchanged steps whose job Nomad changed since this machine last saw it agree with the
/// set (its index moved, or it was never seen): a dry run tells drift from a no-op.
pub fn drift_suspects(steps: &[Step], record: &Record) -> Vec<usize> {
    steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| match step {
            Step::Unchanged { live, .. } if !record.confirms(&live.key, live.job_modify_index) => {
                Some(i)
            }
            _ => None,
        })
        .collect()
}

/// An unchanged step whose job was changed outside the set becomes an update back to the
/// rendered job. Other steps are returned as they are.
pub fn drifted(step: Step) -> Step {
    match step {
        Step::Unchanged { desired, live } => Step::Update { desired, live },
        other => other,
    }
}

/// True for an update whose rendered job did not change: someone changed the job in Nomad.
pub fn is_drift(step: &Step) -> bool {
    matches!(step, Step::Update { desired, live }
        if live.hash.as_deref() == Some(desired.hash.as_str()) && !live.stopped)
}

/// SHA-256 of a rendered job, as recorded in its meta. Only the rendered text counts, so
/// an unchanged set hashes the same on every Nomad version.
pub fn hash_rendered(format_tag: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(format_tag.as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    hex::encode(h.finalize())
}

/// Writes the ownership meta into a parsed job.
pub fn stamp(job: &mut Value, owner: &str, source: &Source, hash: &str) {
    if !job["Meta"].is_object() {
        job["Meta"] = Value::Object(Default::default());
    }
    let m = &mut job["Meta"];
    m[meta::OWNER] = owner.into();
    m[meta::PACK] = source.pack.clone().into();
    m[meta::JOB] = source.job.clone().into();
    m[meta::HASH] = hash.into();
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub create: usize,
    pub update: usize,
    pub unchanged: usize,
    pub delete: usize,
    pub keep: usize,
    pub foreign: usize,
}

pub fn count(steps: &[Step]) -> Counts {
    let mut c = Counts::default();
    for s in steps {
        match s {
            Step::Create(_) => c.create += 1,
            Step::Update { .. } => c.update += 1,
            Step::Unchanged { .. } => c.unchanged += 1,
            Step::Delete(_) => c.delete += 1,
            Step::Keep { .. } => c.keep += 1,
            Step::Foreign { .. } => c.foreign += 1,
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(id: &str) -> JobKey {
        JobKey {
            namespace: "default".into(),
            id: id.into(),
        }
    }

    fn desired(id: &str, hash: &str) -> DesiredJob {
        DesiredJob {
            key: key(id),
            source: Source {
                pack: "p".into(),
                job: id.into(),
                file: "jobs/x.hcl".into(),
            },
            hash: hash.into(),
            job: json!({"ID": id}),
            submission: None,
        }
    }

    fn live(id: &str, owner: Option<&str>, pack: &str, hash: &str) -> LiveJob {
        LiveJob {
            key: key(id),
            owner: owner.map(str::to_string),
            pack: Some(pack.into()),
            declared_job: Some(id.into()),
            hash: Some(hash.into()),
            job_modify_index: 7,
            parent_id: String::new(),
            stopped: false,
        }
    }

    fn kinds(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| {
                let k = match s {
                    Step::Create(_) => "create",
                    Step::Update { .. } => "update",
                    Step::Unchanged { .. } => "unchanged",
                    Step::Delete(_) => "delete",
                    Step::Keep { .. } => "keep",
                    Step::Foreign { .. } => "foreign",
                };
                format!("{k} {}", s.key())
            })
            .collect()
    }

    #[test]
    fn creates_updates_keeps_unchanged_and_deletes() {
        let d = [
            desired("new", "h1"),
            desired("same", "h2"),
            desired("changed", "h3"),
        ];
        let l = [
            live("same", Some("set"), "p", "h2"),
            live("changed", Some("set"), "p", "old"),
            live("gone", Some("set"), "p", "h9"),
        ];
        let steps = plan("set", &d, &l, &BTreeSet::new());
        assert_eq!(
            kinds(&steps),
            [
                "create new",
                "unchanged same",
                "update changed",
                "delete gone"
            ]
        );
    }

    #[test]
    fn jobs_of_failed_packs_are_kept_not_deleted() {
        let l = [
            live("a", Some("set"), "broken", "h"),
            live("b", Some("set"), "ok", "h"),
        ];
        let failed = BTreeSet::from(["broken".to_string()]);
        let steps = plan("set", &[], &l, &failed);
        assert_eq!(kinds(&steps), ["keep a", "delete b"]);
    }

    #[test]
    fn other_owners_and_unmanaged_jobs_are_never_touched() {
        let l = [
            live("theirs", Some("other-set"), "p", "h"),
            live("manual", None, "p", "h"),
        ];
        assert!(plan("set", &[], &l, &BTreeSet::new()).is_empty());
        let steps = plan("set", &[desired("manual", "h")], &l, &BTreeSet::new());
        assert_eq!(kinds(&steps), ["foreign manual"]);
    }

    #[test]
    fn child_jobs_of_periodic_or_parameterized_parents_are_never_deleted() {
        let mut child = live("batch/periodic-123", Some("set"), "p", "h");
        child.parent_id = "batch".into();
        assert!(plan("set", &[], &[child], &BTreeSet::new()).is_empty());
    }

    #[test]
    fn a_stopped_job_with_the_same_hash_is_registered_again() {
        let mut l = live("web", Some("set"), "p", "h");
        l.stopped = true;
        let steps = plan("set", &[desired("web", "h")], &[l], &BTreeSet::new());
        assert_eq!(kinds(&steps), ["update web"]);
    }

    #[test]
    fn stamping_records_owner_pack_job_and_hash_only() {
        let mut job = json!({"ID": "web", "Meta": {"team": "ops"}});
        let src = Source {
            pack: "redis".into(),
            job: "redis-cache".into(),
            file: "jobs/redis.hcl".into(),
        };
        stamp(&mut job, "edge", &src, "abc");
        assert_eq!(
            job["Meta"],
            json!({"team": "ops", "nomados.owner": "edge", "nomados.pack": "redis",
                   "nomados.job": "redis-cache", "nomados.hash": "abc"})
        );
    }

    #[test]
    fn hash_depends_on_format_and_text() {
        assert_ne!(hash_rendered("hcl", "x"), hash_rendered("json", "x"));
        assert_eq!(hash_rendered("hcl", "x"), hash_rendered("hcl", "x"));
        assert_eq!(hash_rendered("hcl", "x").len(), 64);
    }

    #[test]
    fn live_jobs_are_read_from_stubs_with_meta() {
        let stub = json!({"ID": "w", "Namespace": "prod", "JobModifyIndex": 42, "ParentID": "",
            "Meta": {"nomados.owner": "set", "nomados.hash": "h", "nomados.pack": "p"}});
        let l = LiveJob::from_api(&stub).unwrap();
        assert_eq!(l.key.to_string(), "prod/w");
        assert_eq!(l.job_modify_index, 42);
        assert_eq!(l.owner.as_deref(), Some("set"));
    }

    #[test]
    fn only_unchanged_jobs_whose_index_moved_are_drift_suspects() {
        let d = [
            desired("seen", "h1"),
            desired("moved", "h2"),
            desired("unseen", "h3"),
            desired("changed", "h4"),
        ];
        let mut moved = live("moved", Some("set"), "p", "h2");
        moved.job_modify_index = 9;
        let l = [
            live("seen", Some("set"), "p", "h1"),
            moved,
            live("unseen", Some("set"), "p", "h3"),
            live("changed", Some("set"), "p", "old"),
        ];
        let steps = plan("set", &d, &l, &BTreeSet::new());
        let mut record = Record::default();
        record.set(&key("seen"), 7);
        record.set(&key("moved"), 7);
        record.set(&key("changed"), 1);
        let suspects = drift_suspects(&steps, &record);
        let names: Vec<String> = suspects
            .iter()
            .map(|&i| steps[i].key().to_string())
            .collect();
        assert_eq!(names, ["moved", "unseen"]);

        let after: Vec<Step> = steps.into_iter().map(drifted).collect();
        assert_eq!(
            kinds(&after),
            [
                "update seen",
                "update moved",
                "update unseen",
                "update changed"
            ]
        );
        assert!(
            is_drift(&after[1]),
            "same hash, updated: changed outside the set"
        );
        assert!(
            !is_drift(&after[3]),
            "the rendered job changed: an ordinary update"
        );
    }
}
