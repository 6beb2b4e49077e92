//! The reconcile plan: a pure diff between the objects the pack set declares (jobs, ACL
//! policies, Variables) and what Nomad holds of them and of this owner. One plan type for
//! every kind; how each kind is stamped and read back is [`super::objects`]. No I/O here.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::model::{ObjectKey, Source};
use super::record::Record;

/// An object the pack set wants, ready to write (already stamped as this owner's).
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub key: ObjectKey,
    pub source: Source,
    /// What was rendered, as recorded with the object: an unchanged object hashes the same.
    pub hash: String,
    pub body: Body,
}

/// What is written, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// The parsed job with the owner meta; the rendered source is sent as `Submission`
    /// where the agent keeps it.
    Job {
        job: Value,
        submission: Option<Value>,
    },
    /// The description ends with the owner marker.
    Policy {
        name: String,
        description: String,
        rules: String,
    },
    Variable {
        namespace: String,
        path: String,
        items: BTreeMap<String, String>,
    },
}

impl Desired {
    /// The API job, for a job.
    pub fn job(&self) -> Option<&Value> {
        match &self.body {
            Body::Job { job, .. } => Some(job),
            _ => None,
        }
    }
}

/// What Nomad holds under a declared key, or an object this owner manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub key: ObjectKey,
    /// The pack set that manages it; None when nothing says (made by hand, or not ours).
    pub owner: Option<String>,
    pub pack: Option<String>,
    pub declared_job: Option<String>,
    /// The hash of what Nomad holds, to compare with [`Desired::hash`].
    pub hash: Option<String>,
    /// Nomad's modify index (`JobModifyIndex` for a job) for check-and-set; 0 where none.
    pub index: u64,
    /// A child of a periodic or parameterized job: never touched.
    pub child: bool,
    /// A stopped (deregistered, not purged) job: registered again when declared.
    pub stopped: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Create(Desired),
    Update {
        desired: Desired,
        live: Live,
    },
    Unchanged {
        desired: Desired,
        live: Live,
    },
    Delete(Live),
    /// Owned by this set, no longer rendered, but its pack failed this run: left as is.
    Keep {
        live: Live,
        pack: String,
    },
    /// The declared key exists and belongs to someone else: refused, never overwritten.
    Refuse {
        desired: Desired,
        live: Live,
    },
}

impl Step {
    pub fn key(&self) -> &ObjectKey {
        match self {
            Step::Create(d) | Step::Update { desired: d, .. } => &d.key,
            Step::Unchanged { desired: d, .. } | Step::Refuse { desired: d, .. } => &d.key,
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

/// The step for one declared object, given what Nomad holds under its key. The planner
/// and the executor (when a check-and-set write finds the object changed) both decide here.
pub fn decide(owner: &str, desired: &Desired, live: Option<&Live>) -> Step {
    match live {
        None => Step::Create(desired.clone()),
        Some(l) if l.owner.as_deref() != Some(owner) => Step::Refuse {
            desired: desired.clone(),
            live: l.clone(),
        },
        Some(l) if l.hash.as_deref() == Some(desired.hash.as_str()) && !l.stopped => {
            Step::Unchanged {
                desired: desired.clone(),
                live: l.clone(),
            }
        }
        Some(l) => Step::Update {
            desired: desired.clone(),
            live: l.clone(),
        },
    }
}

/// Diffs `desired` against `live` (what Nomad holds under the declared keys and every
/// object it says this owner manages). `failed_packs` names packs that could not be
/// fetched, rendered or validated: their objects are kept, never deleted. The steps come
/// in the order they are written: by [`super::model::Kind`], then declared objects in
/// order, then deletions.
pub fn plan(
    owner: &str,
    desired: &[Desired],
    live: &[Live],
    failed_packs: &BTreeSet<String>,
) -> Vec<Step> {
    let live_by_key: BTreeMap<&ObjectKey, &Live> = live.iter().map(|l| (&l.key, l)).collect();
    let mut steps = Vec::new();
    let mut declared = BTreeSet::new();
    for d in desired {
        declared.insert(&d.key);
        steps.push(decide(owner, d, live_by_key.get(&d.key).copied()));
    }
    for l in live {
        if declared.contains(&l.key) || l.owner.as_deref() != Some(owner) || l.child {
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
    // Stable: within a kind, the order above.
    steps.sort_by_key(|s| s.key().kind());
    steps
}

/// Unchanged job steps whose job Nomad changed since this machine last saw it agree with
/// the set (its index moved, or it was never seen): a dry run tells drift from a no-op.
pub fn drift_suspects(steps: &[Step], record: &Record) -> Vec<usize> {
    steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| match step {
            Step::Unchanged { live, .. } => {
                let job = live.key.job()?;
                (!record.confirms(job, live.index)).then_some(i)
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

/// True for an update whose rendered object did not change: someone changed it in Nomad.
pub fn is_drift(step: &Step) -> bool {
    matches!(step, Step::Update { desired, live }
        if live.hash.as_deref() == Some(desired.hash.as_str()) && !live.stopped)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub create: usize,
    pub update: usize,
    pub unchanged: usize,
    pub delete: usize,
    pub keep: usize,
    pub refuse: usize,
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
            Step::Refuse { .. } => c.refuse += 1,
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packs::model::{JobKey, RenderedPolicy, RenderedVariable};
    use crate::packs::objects;
    use serde_json::json;

    fn key(id: &str) -> ObjectKey {
        ObjectKey::Job(JobKey {
            namespace: "default".into(),
            id: id.into(),
        })
    }

    fn source(pack: &str, job: &str) -> Source {
        Source {
            pack: pack.into(),
            job: job.into(),
            file: "x".into(),
        }
    }

    fn desired(id: &str, hash: &str) -> Desired {
        Desired {
            key: key(id),
            source: source("p", id),
            hash: hash.into(),
            body: Body::Job {
                job: json!({"ID": id}),
                submission: None,
            },
        }
    }

    fn live(id: &str, owner: Option<&str>, pack: &str, hash: &str) -> Live {
        Live {
            key: key(id),
            owner: owner.map(str::to_string),
            pack: Some(pack.into()),
            declared_job: Some(id.into()),
            hash: Some(hash.into()),
            index: 7,
            child: false,
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
                    Step::Refuse { .. } => "refuse",
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
                "create job ID `new`",
                "unchanged job ID `same`",
                "update job ID `changed`",
                "delete job ID `gone`"
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
        assert_eq!(kinds(&steps), ["keep job ID `a`", "delete job ID `b`"]);
    }

    #[test]
    fn other_owners_and_unmanaged_jobs_are_never_touched() {
        let l = [
            live("theirs", Some("other-set"), "p", "h"),
            live("manual", None, "p", "h"),
        ];
        assert!(plan("set", &[], &l, &BTreeSet::new()).is_empty());
        let steps = plan("set", &[desired("manual", "h")], &l, &BTreeSet::new());
        assert_eq!(kinds(&steps), ["refuse job ID `manual`"]);
    }

    #[test]
    fn child_jobs_of_periodic_or_parameterized_parents_are_never_deleted() {
        let mut child = live("batch/periodic-123", Some("set"), "p", "h");
        child.child = true;
        assert!(plan("set", &[], &[child], &BTreeSet::new()).is_empty());
    }

    #[test]
    fn a_stopped_job_with_the_same_hash_is_registered_again() {
        let mut l = live("web", Some("set"), "p", "h");
        l.stopped = true;
        let steps = plan("set", &[desired("web", "h")], &[l], &BTreeSet::new());
        assert_eq!(kinds(&steps), ["update job ID `web`"]);
    }

    fn policy(name: &str, rules: &str) -> RenderedPolicy {
        RenderedPolicy {
            source: source("p", "j"),
            name: name.into(),
            description: Some("d".into()),
            rules: rules.into(),
        }
    }

    /// What Nomad lists for `p` as written by `owner` from `pack`.
    fn listed(p: &RenderedPolicy, owner: &str, pack: &str) -> Live {
        let mut written = p.clone();
        written.source.pack = pack.into();
        let Body::Policy { description, .. } = objects::desired_policy(owner, &written).body else {
            unreachable!()
        };
        objects::live_policy(&p.name, &description)
    }

    #[test]
    fn policies_are_created_updated_left_deleted_kept_and_refused() {
        let declared = [
            policy("new", "r"),
            policy("same", "r"),
            policy("changed", "new rules"),
            policy("theirs", "r"),
            policy("other-set", "r"),
        ];
        let live = [
            listed(&policy("same", "r"), "me", "p"),
            listed(&policy("changed", "old rules"), "me", "p"),
            objects::live_policy("theirs", "made by hand"),
            listed(&policy("other-set", "r"), "you", "p"),
            listed(&policy("gone", "r"), "me", "p"),
            listed(&policy("failed", "r"), "me", "f"),
            listed(&policy("yours", "r"), "you", "p"),
        ];
        let desired: Vec<Desired> = declared
            .iter()
            .map(|p| objects::desired_policy("me", p))
            .collect();
        let failed = BTreeSet::from(["f".to_string()]);
        let steps = plan("me", &desired, &live, &failed);
        assert_eq!(
            kinds(&steps),
            [
                "create ACL policy `new`",
                "unchanged ACL policy `same`",
                "update ACL policy `changed`",
                "refuse ACL policy `theirs`",
                "refuse ACL policy `other-set`",
                "delete ACL policy `gone`",
                "keep ACL policy `failed`",
            ]
        );
    }

    fn variable(path: &str, value: &str) -> RenderedVariable {
        RenderedVariable {
            source: source("p", "j"),
            path: path.into(),
            namespace: None,
            items: BTreeMap::from([("k".to_string(), value.to_string())]),
        }
    }

    #[test]
    fn variables_are_planned_against_the_registry() {
        let declared = [
            variable("app/new", "1"),
            variable("app/same", "1"),
            variable("app/changed", "2"),
            variable("app/theirs", "1"),
            variable("app/lost", "1"),
        ];
        let held = |v: &str, index: u64| Some(json!({"Items": {"k": v}, "ModifyIndex": index}));
        let read: Vec<(ObjectKey, Option<serde_json::Value>)> = declared
            .iter()
            .zip([None, held("1", 5), held("1", 7), held("1", 9), None])
            .map(|(v, h)| (v.key(), h))
            .collect();
        let registry = BTreeMap::from([
            ("default:app/same".to_string(), "p h".to_string()),
            ("default:app/changed".to_string(), "p h".to_string()),
            ("default:app/lost".to_string(), "p h".to_string()),
            ("default:app/gone".to_string(), "p h".to_string()),
            ("default:app/failed".to_string(), "f h".to_string()),
        ]);
        let live = objects::live_variables("me", &registry, &read);
        let desired: Vec<Desired> = declared.iter().map(objects::desired_variable).collect();
        let failed = BTreeSet::from(["f".to_string()]);
        let steps = plan("me", &desired, &live, &failed);
        assert_eq!(
            kinds(&steps),
            [
                "create variable `app/new`",
                "unchanged variable `app/same`",
                "update variable `app/changed`",
                "refuse variable `app/theirs`",
                "create variable `app/lost`",
                "keep variable `app/failed`",
                "delete variable `app/gone`",
            ]
        );
        let Step::Update { live, .. } = &steps[2] else {
            unreachable!()
        };
        assert_eq!(live.index, 7, "the update is checked against this index");
        let keys: Vec<String> = objects::registry_after(&registry, &steps)
            .into_keys()
            .collect();
        assert_eq!(
            keys,
            [
                "default:app/changed",
                "default:app/failed",
                "default:app/lost",
                "default:app/new",
                "default:app/same"
            ],
            "written and kept variables are this owner's; deleted and refused ones are not"
        );
    }

    #[test]
    fn policies_and_variables_come_before_the_jobs_that_may_need_them() {
        let desired = [
            desired("web", "h"),
            objects::desired_variable(&variable("app/x", "1")),
            objects::desired_policy("set", &policy("read", "r")),
        ];
        let live = [live("old", Some("set"), "p", "h")];
        let steps = plan("set", &desired, &live, &BTreeSet::new());
        assert_eq!(
            kinds(&steps),
            [
                "create ACL policy `read`",
                "create variable `app/x`",
                "create job ID `web`",
                "delete job ID `old`"
            ]
        );
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
        moved.index = 9;
        let l = [
            live("seen", Some("set"), "p", "h1"),
            moved,
            live("unseen", Some("set"), "p", "h3"),
            live("changed", Some("set"), "p", "old"),
        ];
        let steps = plan("set", &d, &l, &BTreeSet::new());
        let mut record = Record::default();
        let job = |id: &str| key(id).job().cloned().unwrap();
        record.set(&job("seen"), 7);
        record.set(&job("moved"), 7);
        record.set(&job("changed"), 1);
        let suspects = drift_suspects(&steps, &record);
        let names: Vec<String> = suspects
            .iter()
            .map(|&i| steps[i].key().to_string())
            .collect();
        assert_eq!(names, ["job ID `moved`", "job ID `unseen`"]);

        let after: Vec<Step> = steps.into_iter().map(drifted).collect();
        assert_eq!(
            kinds(&after),
            [
                "update job ID `seen`",
                "update job ID `moved`",
                "update job ID `unseen`",
                "update job ID `changed`"
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

    #[test]
    fn unchanged_policies_and_variables_are_never_drift_suspects() {
        let d = [objects::desired_variable(&variable("app/x", "1"))];
        let registry = BTreeMap::from([("default:app/x".to_string(), "p h".to_string())]);
        let read = [(d[0].key.clone(), Some(json!({"Items": {"k": "1"}})))];
        let live = objects::live_variables("set", &registry, &read);
        let steps = plan("set", &d, &live, &BTreeSet::new());
        assert_eq!(kinds(&steps), ["unchanged variable `app/x`"]);
        assert!(drift_suspects(&steps, &Record::default()).is_empty());
    }
}
