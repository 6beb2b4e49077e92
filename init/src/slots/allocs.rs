//! What the trial gate makes of the pack set's jobs on this node, pure: does each job that
//! should run here run here? Input is what PID 1 fetched from Nomad, in this order: the
//! set's jobs (`GET /v1/jobs`, their `JobModifyIndex`), each job's evaluations
//! (`GET /v1/job/<id>/evaluations`), then this node's allocations in full
//! (`GET /v1/node/<id>/allocations`, each with its `Job`), and the node's `ModifyIndex`.
//! Evaluations are read before allocations: a plan's allocations are committed before its
//! evaluation completes, so a completed evaluation with no allocation here really placed
//! nothing here.
//!
//! Per job, the first that holds:
//! * one of its allocations here (wanted running, not replaced) failed or was lost: **fail**;
//! * its allocations here of the current version (their job's `JobModifyIndex` is the
//!   job's) all run (a batch one may have completed): **runs**; some pending: **wait**;
//! * no evaluation of the current version yet, or it is `pending`: **wait** (Nomad has yet
//!   to place it);
//! * the latest evaluation could not place it (`FailedTGAllocs`, a `blocked` evaluation,
//!   or `failed`): **fail**, naming what Nomad said; unless the node changed after that
//!   evaluation (re-registered, eligible again: Nomad retries blocked evaluations then):
//!   **wait**, and the deadline names it;
//! * the evaluation completed with no failure, an older version still runs here: **wait**
//!   (an update not yet placed here);
//! * completed with no failure and nothing here: the job's constraints keep it off this
//!   node: **not for this node** (it never holds the gate).

use serde_json::Value;

/// The pack set's jobs on this node, as the gate sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocsSeen {
    /// Not known yet (Nomad not asked, or it could not answer).
    Unknown,
    /// Every job that should run here runs here: the count of their allocations here (0
    /// when the set has no job for this node).
    Running(usize),
    /// Some are not running here yet: which, and why.
    Starting(String),
    /// One cannot run here: which, and why.
    Failed(String),
}

/// One job of the pack set, with its evaluations, as fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFacts {
    pub id: String,
    pub namespace: String,
    pub job_type: String,
    /// The job's `JobModifyIndex`: its current version.
    pub job_modify_index: u64,
    /// `GET /v1/job/<id>/evaluations`.
    pub evals: Vec<Value>,
}

/// What one job is on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobHere {
    Runs(usize),
    NotForThisNode,
    Wait(String),
    Fail(String),
}

/// Jobs or allocations shown by name in a message at most (the rest are counted).
const NAMED: usize = 3;

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// What `job` is on this node, from this node's `allocations` (all jobs) and the node's
/// `ModifyIndex`.
pub fn job_here(job: &JobFacts, allocations: &[Value], node_modify_index: u64) -> JobHere {
    let name = &job.id;
    let mine: Vec<&Value> = allocations
        .iter()
        .filter(|a| {
            a["JobID"] == job.id.as_str()
                && a["Namespace"].as_str().unwrap_or("default") == job.namespace
                && a["DesiredStatus"] == "run"
                && a["NextAllocation"].as_str().is_none_or(str::is_empty)
        })
        .collect();
    for a in &mine {
        let alloc = a["Name"].as_str().unwrap_or("?");
        match a["ClientStatus"].as_str() {
            Some("failed") => return JobHere::Fail(failed(a, name, alloc)),
            Some("lost") => {
                return JobHere::Fail(format!("allocation {alloc} of job `{name}` was lost"))
            }
            _ => {}
        }
    }
    let batch = matches!(job.job_type.as_str(), "batch" | "sysbatch");
    let (current, older): (Vec<&Value>, Vec<&Value>) = mine
        .iter()
        .partition(|a| u64_of(&a["Job"]["JobModifyIndex"]) >= job.job_modify_index);
    if !current.is_empty() {
        let starting: Vec<String> = current
            .iter()
            .filter(|a| {
                !matches!(
                    (a["ClientStatus"].as_str(), batch),
                    (Some("running"), _) | (Some("complete"), true)
                )
            })
            .map(|a| {
                format!(
                    "{} ({})",
                    a["Name"].as_str().unwrap_or("?"),
                    a["ClientStatus"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .unwrap_or("no status")
                )
            })
            .collect();
        return if starting.is_empty() {
            JobHere::Runs(current.len())
        } else {
            JobHere::Wait(named(starting))
        };
    }
    let latest = job
        .evals
        .iter()
        .filter(|e| e["Status"] != "canceled")
        .max_by_key(|e| (u64_of(&e["CreateIndex"]), u64_of(&e["ModifyIndex"])));
    let Some(latest) = latest.filter(|e| u64_of(&e["CreateIndex"]) >= job.job_modify_index) else {
        return JobHere::Wait(format!("job `{name}` (not evaluated yet)"));
    };
    let status = latest["Status"].as_str().unwrap_or("");
    if status == "pending" {
        return JobHere::Wait(format!("job `{name}` (evaluation pending)"));
    }
    if let Some(why) = placement_failure(latest, &job.evals) {
        let why = format!("job `{name}` cannot be placed: {why}");
        return if u64_of(&latest["ModifyIndex"]) > node_modify_index {
            JobHere::Fail(why)
        } else {
            JobHere::Wait(format!(
                "{why} (decided before this node's last change: Nomad may retry)"
            ))
        };
    }
    if !older.is_empty() {
        return JobHere::Wait(format!(
            "job `{name}` (its new version is not placed here yet)"
        ));
    }
    JobHere::NotForThisNode
}

/// Why evaluation `e` placed nothing, if it failed to: its `FailedTGAllocs` (or, for a
/// blocked one without them, those of the evaluation that created it), its status.
fn placement_failure(e: &Value, all: &[Value]) -> Option<String> {
    let status = e["Status"].as_str().unwrap_or("");
    let failures = e["FailedTGAllocs"]
        .as_object()
        .filter(|m| !m.is_empty())
        .or_else(|| {
            (status == "blocked").then(|| {
                all.iter()
                    .find(|p| p["BlockedEval"] == e["ID"])
                    .and_then(|p| p["FailedTGAllocs"].as_object())
            })?
        });
    if let Some(groups) = failures.filter(|m| !m.is_empty()) {
        let text: Vec<String> = groups
            .iter()
            .map(|(g, m)| format!("group `{g}`: {}", metric_text(m)))
            .collect();
        return Some(cut(&text.join("; ")));
    }
    match status {
        "blocked" => Some("its evaluation is blocked".into()),
        "failed" => Some(cut(&format!(
            "its evaluation failed: {}",
            e["StatusDescription"].as_str().unwrap_or("")
        ))),
        _ => None,
    }
}

/// Nomad's `AllocMetric` in words: "memory exhausted on 1 node; constraint `...` filtered 1 node".
fn metric_text(m: &Value) -> String {
    let nodes = |n: u64| format!("{n} node{}", if n == 1 { "" } else { "s" });
    let mut out = Vec::new();
    if u64_of(&m["NodesEvaluated"]) == 0 {
        out.push("no node in its datacenters or node pool".to_string());
    }
    for (key, what) in [
        ("DimensionExhausted", "exhausted on"),
        ("ConstraintFiltered", "filtered"),
        ("ClassFiltered", "filtered"),
        ("ClassExhausted", "exhausted on"),
    ] {
        for (k, n) in m[key].as_object().into_iter().flatten() {
            let subject = if key == "ConstraintFiltered" {
                format!("constraint `{k}`")
            } else {
                k.clone()
            };
            out.push(format!("{subject} {what} {}", nodes(u64_of(n))));
        }
    }
    for q in m["QuotaExhausted"].as_array().into_iter().flatten() {
        out.extend(q.as_str().map(|q| format!("quota: {q}")));
    }
    if out.is_empty() {
        out.push(format!(
            "{} of {} evaluated exhausted",
            nodes(u64_of(&m["NodesExhausted"])),
            nodes(u64_of(&m["NodesEvaluated"]))
        ));
    }
    out.join(", ")
}

/// The set as the gate sees it, from each of its jobs on this node.
pub fn seen(jobs: &[JobFacts], allocations: &[Value], node_modify_index: u64) -> AllocsSeen {
    let mut running = 0;
    let mut waiting = Vec::new();
    let mut failures = Vec::new();
    for j in jobs {
        match job_here(j, allocations, node_modify_index) {
            JobHere::Runs(n) => running += n,
            JobHere::NotForThisNode => {}
            JobHere::Wait(why) => waiting.push(why),
            JobHere::Fail(why) => failures.push(why),
        }
    }
    if !failures.is_empty() {
        return AllocsSeen::Failed(named(failures));
    }
    if !waiting.is_empty() {
        return AllocsSeen::Starting(named(waiting));
    }
    AllocsSeen::Running(running)
}

fn named(mut items: Vec<String>) -> String {
    let more = items.len().saturating_sub(NAMED);
    items.truncate(NAMED);
    let mut text = items.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// A task event's message, cut to a console line's worth (Nomad's are short; this is a bound).
fn cut(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

/// "allocation web.g[0] of job `web` failed: task `t`: <the event that failed it>".
fn failed(a: &Value, job: &str, name: &str) -> String {
    let mut out = format!("allocation {name} of job `{job}` failed");
    let Some(states) = a["TaskStates"].as_object() else {
        return out;
    };
    let task = states
        .iter()
        .find(|(_, st)| st["Failed"].as_bool() == Some(true))
        .or_else(|| states.iter().next());
    if let Some((task, st)) = task {
        out.push_str(&format!(": task `{task}`"));
        let events = st["Events"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        // The event that failed the task says why; else the last one.
        let why = events
            .iter()
            .rev()
            .find(|e| {
                e["FailsTask"].as_bool() == Some(true)
                    && e["DisplayMessage"] != "Error was unrecoverable"
            })
            .or(events.last())
            .and_then(|e| e["DisplayMessage"].as_str())
            .filter(|m| !m.is_empty());
        if let Some(why) = why {
            out.push_str(&format!(": {}", cut(why)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An allocation here of job `job` at version index `jmi`.
    fn alloc(job: &str, client: &str, desired: &str, jmi: u64) -> Value {
        json!({
            "Name": format!("{job}.g[0]"), "JobID": job, "Namespace": "default",
            "ClientStatus": client, "DesiredStatus": desired, "NextAllocation": "",
            "Job": {"ID": job, "JobModifyIndex": jmi}, "TaskStates": null
        })
    }

    fn eval(status: &str, create: u64, modify: u64) -> Value {
        json!({"ID": format!("e{create}"), "Status": status, "CreateIndex": create,
               "ModifyIndex": modify, "FailedTGAllocs": null, "BlockedEval": ""})
    }

    fn job(id: &str, jmi: u64, evals: Vec<Value>) -> JobFacts {
        JobFacts {
            id: id.into(),
            namespace: "default".into(),
            job_type: "system".into(),
            job_modify_index: jmi,
            evals,
        }
    }

    fn exhausted(mut e: Value) -> Value {
        e["FailedTGAllocs"] = json!({"g": {"NodesEvaluated": 1, "NodesExhausted": 1,
            "DimensionExhausted": {"memory": 1}, "ConstraintFiltered": null}});
        e
    }

    /// One job (`web`, current version at index 20) in every situation the gate meets;
    /// the node last changed at index 15.
    #[test]
    fn each_job_runs_waits_fails_or_is_not_for_this_node() {
        let done = eval("complete", 20, 22);
        let mut blocked = eval("blocked", 22, 22);
        blocked["FailedTGAllocs"] = json!({"g": {"NodesEvaluated": 1, "NodesFiltered": 1,
            "ConstraintFiltered": {"${meta.role} = db": 1}}});
        let mut old_failure = exhausted(eval("complete", 20, 12));
        old_failure["CreateIndex"] = json!(20);
        let mut failed_eval = eval("failed", 20, 25);
        failed_eval["StatusDescription"] = json!("maximum attempts reached (5)");
        let mut replaced = alloc("web", "failed", "run", 20);
        replaced["NextAllocation"] = json!("b2c1");
        let cases: Vec<(&str, Vec<Value>, Vec<Value>, JobHere)> = vec![
            (
                "its allocation of this version runs",
                vec![done.clone()],
                vec![alloc("web", "running", "run", 20)],
                JobHere::Runs(1),
            ),
            (
                "just registered: no evaluation yet, nothing here",
                vec![eval("complete", 10, 11)],
                vec![],
                JobHere::Wait("job `web` (not evaluated yet)".into()),
            ),
            (
                "its evaluation is pending, the old version still runs here",
                vec![eval("complete", 10, 11), eval("pending", 20, 20)],
                vec![alloc("web", "running", "run", 10)],
                JobHere::Wait("job `web` (evaluation pending)".into()),
            ),
            (
                "placed, still pending",
                vec![done.clone()],
                vec![alloc("web", "pending", "run", 20)],
                JobHere::Wait("web.g[0] (pending)".into()),
            ),
            (
                "evaluated, the old version not yet replaced here (rolling update)",
                vec![done.clone()],
                vec![alloc("web", "running", "run", 10)],
                JobHere::Wait("job `web` (its new version is not placed here yet)".into()),
            ),
            (
                "its constraints keep it off this node",
                vec![done.clone()],
                vec![alloc("other", "running", "run", 20)],
                JobHere::NotForThisNode,
            ),
            (
                "a stopped old allocation says nothing",
                vec![done.clone()],
                vec![alloc("web", "failed", "stop", 10), replaced],
                JobHere::NotForThisNode,
            ),
            (
                "a failed allocation of the job here",
                vec![done.clone()],
                vec![alloc("web", "failed", "run", 20)],
                JobHere::Fail("allocation web.g[0] of job `web` failed".into()),
            ),
            (
                "a lost one",
                vec![done.clone()],
                vec![alloc("web", "lost", "run", 20)],
                JobHere::Fail("allocation web.g[0] of job `web` was lost".into()),
            ),
            (
                "placement failed (FailedTGAllocs) after the node's last change",
                vec![exhausted(eval("complete", 20, 21))],
                vec![],
                JobHere::Fail(
                    "job `web` cannot be placed: group `g`: memory exhausted on 1 node".into(),
                ),
            ),
            (
                "a blocked evaluation, its failures its own",
                vec![done.clone(), blocked],
                vec![],
                JobHere::Fail(
                    "job `web` cannot be placed: group `g`: constraint `${meta.role} = db` filtered 1 node"
                        .into(),
                ),
            ),
            (
                "the scheduler gave up",
                vec![failed_eval],
                vec![],
                JobHere::Fail(
                    "job `web` cannot be placed: its evaluation failed: maximum attempts reached (5)"
                        .into(),
                ),
            ),
            (
                "a failure from before this node changed: Nomad retries",
                vec![old_failure],
                vec![],
                JobHere::Wait(
                    "job `web` cannot be placed: group `g`: memory exhausted on 1 node (decided before this node's last change: Nomad may retry)"
                        .into(),
                ),
            ),
        ];
        for (what, evals, allocs, want) in cases {
            assert_eq!(
                job_here(&job("web", 20, evals), &allocs, 15),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn a_blocked_evaluation_without_failures_borrows_its_creators() {
        let mut first = exhausted(eval("complete", 20, 21));
        first["BlockedEval"] = json!("e21");
        let blocked = eval("blocked", 21, 21);
        assert_eq!(
            job_here(&job("web", 20, vec![first, blocked.clone()]), &[], 15),
            JobHere::Fail(
                "job `web` cannot be placed: group `g`: memory exhausted on 1 node".into()
            )
        );
        assert_eq!(
            job_here(&job("web", 20, vec![blocked]), &[], 15),
            JobHere::Fail("job `web` cannot be placed: its evaluation is blocked".into())
        );
    }

    #[test]
    fn the_set_fails_on_any_failure_waits_on_any_wait_and_counts_what_runs() {
        let done = eval("complete", 20, 22);
        let ok = job("web", 20, vec![done.clone()]);
        let elsewhere = job("db", 20, vec![done.clone()]);
        let here = [alloc("web", "running", "run", 20)];
        assert_eq!(
            seen(&[ok.clone(), elsewhere], &here, 15),
            AllocsSeen::Running(1)
        );
        assert_eq!(seen(&[], &[], 15), AllocsSeen::Running(0), "no job");
        let pending = job("api", 30, vec![eval("pending", 30, 30)]);
        assert_eq!(
            seen(&[ok.clone(), pending.clone()], &here, 15),
            AllocsSeen::Starting("job `api` (evaluation pending)".into())
        );
        let broken = job("bad", 20, vec![exhausted(eval("complete", 20, 21))]);
        assert!(matches!(
            seen(&[ok, pending, broken], &here, 15),
            AllocsSeen::Failed(w) if w.starts_with("job `bad` cannot be placed")
        ));
        let many: Vec<JobFacts> = (0..5).map(|i| job(&format!("j{i}"), 20, vec![])).collect();
        assert_eq!(
            seen(&many, &[], 15),
            AllocsSeen::Starting(
                "job `j0` (not evaluated yet), job `j1` (not evaluated yet), job `j2` (not evaluated yet) and 2 more"
                    .into()
            )
        );
    }

    #[test]
    fn completed_batch_allocations_count_as_running() {
        let mut j = job("once", 20, vec![eval("complete", 20, 22)]);
        j.job_type = "batch".into();
        assert_eq!(
            job_here(&j, &[alloc("once", "complete", "run", 20)], 15),
            JobHere::Runs(1)
        );
        j.job_type = "service".into();
        assert!(matches!(
            job_here(&j, &[alloc("once", "complete", "run", 20)], 15),
            JobHere::Wait(_)
        ));
    }

    #[test]
    fn a_failed_allocation_names_its_task_and_the_event_that_failed_it() {
        let mut a = alloc("web", "failed", "run", 20);
        a["TaskStates"] = json!({
            "sidecar": {"Failed": false, "Events": [{"DisplayMessage": "Task's sibling \"server\" failed"}]},
            "server": {"Failed": true, "Events": [
                {"DisplayMessage": "Task received by client", "FailsTask": false},
                {"DisplayMessage": "failed to launch command: exec: \"/nope\": no such file", "FailsTask": true},
                {"DisplayMessage": "Error was unrecoverable", "FailsTask": true}
            ]}
        });
        assert_eq!(
            job_here(&job("web", 20, vec![]), &[a], 15),
            JobHere::Fail(
                "allocation web.g[0] of job `web` failed: task `server`: failed to launch command: exec: \"/nope\": no such file".into()
            )
        );
    }
}
