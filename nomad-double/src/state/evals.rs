//! Evaluations, as `GET /v1/job/:id/evaluations` shows them. Every job write (and a node
//! that can take work again) makes one, `pending` until it is due (`eval_delay_ns` after it
//! was made; at once by default): then the scheduler runs (`place`), the allocations of
//! older job versions stop, and the evaluation is `complete`, with `FailedTGAllocs` (Nomad's
//! `AllocMetric`) for each group it could not place; for service and batch jobs a `blocked`
//! follow-up evaluation carries the same failures (`BlockedEval`), as Nomad 1.x does.
//! System jobs whose constraints exclude the node get no allocation and no failure.

use super::Store;
use serde_json::{json, Map, Value};

/// An evaluation still to run: its ID, its job, when it is due.
pub(super) struct Due {
    id: String,
    key: (String, String),
    at: i64,
}

/// Nomad's `AllocMetric` for one node evaluated and filtered or exhausted.
pub(super) fn metric(dc: &str, constraint: Option<&str>, dimension: Option<&str>) -> Value {
    json!({
        "AllocationTime": 21_000, "ClassExhausted": null, "ClassFiltered": null,
        "CoalescedFailures": 0,
        "ConstraintFiltered": constraint.map(|c| json!({c: 1})),
        "DimensionExhausted": dimension.map(|d| json!({d: 1})),
        "NodesAvailable": {dc: 1}, "NodesEvaluated": 1,
        "NodesExhausted": u64::from(dimension.is_some()),
        "NodesFiltered": u64::from(constraint.is_some()),
        "QuotaExhausted": null, "ResourcesExhausted": null, "ScoreMetaData": null,
        "Scores": null
    })
}

impl Store {
    /// Records a `pending` evaluation of job `key` made at raft `index` (the job write's own
    /// index, as Nomad commits both together) and runs it when no delay is set.
    pub(super) fn create_eval(
        &mut self,
        key: &(String, String),
        id: String,
        triggered_by: &str,
        index: u64,
        now: i64,
    ) {
        let job = self
            .jobs
            .get(key)
            .map(|r| r.job.clone())
            .unwrap_or_default();
        let mut e = json!({
            "ID": id, "Namespace": key.0, "Priority": job["Priority"].as_u64().unwrap_or(50),
            "Type": job["Type"].as_str().unwrap_or("service"), "TriggeredBy": triggered_by,
            "JobID": key.1, "JobModifyIndex": job["JobModifyIndex"].as_u64().unwrap_or(0),
            "NodeID": "", "NodeModifyIndex": 0, "DeploymentID": "", "Status": "pending",
            "StatusDescription": "", "Wait": 0, "WaitUntil": "0001-01-01T00:00:00Z",
            "NextEval": "", "PreviousEval": "", "BlockedEval": "", "FailedTGAllocs": null,
            "ClassEligibility": null, "EscapedComputedClass": false, "QuotaLimitReached": "",
            "AnnotatePlan": false, "QueuedAllocations": null, "LeaderACL": "",
            "SnapshotIndex": 0, "CreateIndex": index, "ModifyIndex": index,
            "CreateTime": now, "ModifyTime": now
        });
        if triggered_by == "node-update" {
            e["NodeID"] = json!(self.node_id);
            e["NodeModifyIndex"] = json!(self.node_state.modify_index);
        }
        self.evals.push(e);
        let at = now + self.settings.eval_delay_ns;
        self.evals_due.push(Due {
            id,
            key: key.clone(),
            at,
        });
        if self.settings.eval_delay_ns <= 0 {
            self.run_due_evals(now);
        }
    }

    /// Runs the evaluations that are due. True when any ran.
    pub(super) fn run_due_evals(&mut self, now: i64) -> bool {
        let (due, later): (Vec<Due>, Vec<Due>) = std::mem::take(&mut self.evals_due)
            .into_iter()
            .partition(|d| d.at <= now);
        self.evals_due = later;
        let any = !due.is_empty();
        for d in due {
            self.run_eval(&d, now);
        }
        any
    }

    fn run_eval(&mut self, d: &Due, now: i64) {
        let before = self.index;
        let job = self.jobs.get(&d.key).map(|r| r.job.clone());
        let mut failed = Map::new();
        if let Some(job) = &job {
            let current = job["JobModifyIndex"].as_u64().unwrap_or(0);
            let reason = if job["Stop"].as_bool().unwrap_or(false) {
                "alloc not needed due to job update"
            } else {
                "alloc is being updated due to job update"
            };
            let key = d.key.clone();
            self.stop_allocs(
                |a| {
                    a.ns == key.0
                        && a.job_id == key.1
                        && a.job["JobModifyIndex"].as_u64().unwrap_or(0) < current
                },
                reason,
                now,
            );
            failed = self.place(&d.key, &d.id, now);
            self.refresh_status(&d.key);
        }
        let job_type = job
            .as_ref()
            .and_then(|j| j["Type"].as_str())
            .unwrap_or("service")
            .to_string();
        // The evaluation completes in the raft write of its plan (a blocking query on the
        // allocations must not wake for the evaluation alone).
        let idx = if self.index > before {
            self.index
        } else {
            self.bump()
        };
        let blocked = (!failed.is_empty() && matches!(job_type.as_str(), "service" | "batch"))
            .then(|| self.uuid());
        let Some(e) = self.evals.iter_mut().find(|e| e["ID"] == d.id.as_str()) else {
            return;
        };
        e["Status"] = json!("complete");
        e["ModifyIndex"] = json!(idx);
        e["ModifyTime"] = json!(now);
        e["SnapshotIndex"] = json!(idx);
        let queued: Map<String, Value> = failed.keys().map(|g| (g.clone(), json!(1))).collect();
        e["QueuedAllocations"] = Value::Object(queued);
        if !failed.is_empty() {
            e["FailedTGAllocs"] = Value::Object(failed.clone());
        }
        let Some(bid) = blocked else {
            return;
        };
        e["BlockedEval"] = json!(bid);
        let mut b = e.clone();
        let prev = d.id.clone();
        b["ID"] = json!(bid);
        b["Status"] = json!("blocked");
        b["StatusDescription"] = json!("created to place remaining allocations");
        b["TriggeredBy"] = json!("queued-allocs");
        b["PreviousEval"] = json!(prev);
        b["BlockedEval"] = json!("");
        b["CreateIndex"] = json!(idx);
        b["ClassEligibility"] = json!({"v1:7968290453076422024": true});
        self.evals.push(b);
    }

    /// `GET /v1/job/:id/evaluations`: the job's evaluations, newest first.
    pub fn job_evals(&self, ns: &str, id: &str) -> Vec<Value> {
        let mut v: Vec<&Value> = self
            .evals
            .iter()
            .filter(|e| e["Namespace"] == ns && e["JobID"] == id)
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e["CreateIndex"].as_u64()));
        v.into_iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{job, store};
    use serde_json::json;

    #[test]
    fn a_job_write_makes_an_evaluation_that_completes_when_due() {
        let mut s = store();
        s.settings.eval_delay_ns = 1_000;
        let w = s
            .register(job("/bin/sh"), "default", None, None, 10)
            .unwrap();
        let evals = s.job_evals("default", "hello");
        assert_eq!(evals.len(), 1);
        assert_eq!(evals[0]["ID"], w.eval_id.as_str());
        assert_eq!(evals[0]["Status"], "pending");
        assert_eq!(evals[0]["CreateIndex"], w.index, "committed with the job");
        assert_eq!(evals[0]["JobModifyIndex"], w.job_modify_index);
        assert!(
            s.job_allocs("default", "hello").is_empty(),
            "not placed yet"
        );
        s.advance(500);
        assert_eq!(s.job_evals("default", "hello")[0]["Status"], "pending");
        s.advance(1_010);
        let e = &s.job_evals("default", "hello")[0];
        assert_eq!(e["Status"], "complete");
        assert_eq!(e["FailedTGAllocs"], json!(null));
        assert_eq!(s.job_allocs("default", "hello").len(), 1);
    }

    #[test]
    fn a_group_that_cannot_be_placed_fails_and_blocks_unless_a_system_job_is_excluded() {
        let mut s = store();
        let mut big = job("/bin/sh");
        big["Type"] = json!("service");
        big["TaskGroups"][0]["Tasks"][0]["Resources"] = json!({"CPU": 100, "MemoryMB": 4096});
        s.register(big, "default", None, None, 10).unwrap();
        let evals = s.job_evals("default", "hello");
        assert_eq!(evals.len(), 2);
        let (blocked, done) = (&evals[0], &evals[1]);
        assert_eq!(done["Status"], "complete");
        assert_eq!(done["BlockedEval"], blocked["ID"]);
        assert_eq!(
            done["FailedTGAllocs"]["g"]["DimensionExhausted"],
            json!({"memory": 1})
        );
        assert_eq!(blocked["Status"], "blocked");
        assert_eq!(blocked["FailedTGAllocs"], done["FailedTGAllocs"]);
        assert!(s.job_allocs("default", "hello").is_empty());

        let mut elsewhere = job("/bin/sh");
        elsewhere["ID"] = json!("pinned");
        elsewhere["Constraints"] =
            json!([{"LTarget": "${node.unique.name}", "RTarget": "other", "Operand": "="}]);
        s.register(elsewhere.clone(), "default", None, None, 20)
            .unwrap();
        let e = &s.job_evals("default", "pinned")[0];
        assert_eq!(
            (e["Status"].as_str(), &e["FailedTGAllocs"]),
            (Some("complete"), &json!(null))
        );
        assert!(s.job_allocs("default", "pinned").is_empty());
        // The same constraint on a service job is a placement failure.
        elsewhere["ID"] = json!("pinned-service");
        elsewhere["Type"] = json!("service");
        s.register(elsewhere, "default", None, None, 30).unwrap();
        let e = &s.job_evals("default", "pinned-service")[1];
        assert_eq!(
            e["FailedTGAllocs"]["g"]["ConstraintFiltered"],
            json!({"${node.unique.name} = other": 1})
        );
    }
}
