//! What the trial gate makes of this node's allocations, pure: are the pack set's jobs
//! running here? Input is Nomad's answer to `GET /v1/node/<id>/allocations` (full
//! allocations, each with its `Job`).

use serde_json::Value;

/// This node's allocations of the pack set's jobs, as the gate sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocsSeen {
    /// Not known yet (Nomad not asked, or it could not answer).
    Unknown,
    /// Every one runs (batch ones may have completed); the count, 0 when the set has no
    /// job for this node.
    Running(usize),
    /// Some are not running yet: which, and what they are.
    Starting(String),
    /// One failed or was lost: its job, task and why.
    Failed(String),
}

/// Allocations shown by name in a message at most (the rest are counted).
const NAMED: usize = 3;

/// Sorts this node's `allocations` of jobs whose meta `nomados.owner` is `owner`. Only
/// allocations Nomad wants running count (`DesiredStatus` `run`) and not yet replaced by a
/// reschedule (`NextAllocation` empty): an old version's stopped allocation or a failed one
/// Nomad already replaced says nothing about the set as it is now.
pub fn seen(allocations: &[Value], owner: &str) -> AllocsSeen {
    let mut running = 0;
    let mut starting = Vec::new();
    for a in allocations {
        if a.pointer("/Job/Meta/nomados.owner").and_then(Value::as_str) != Some(owner)
            || a["DesiredStatus"] != "run"
            || a["NextAllocation"].as_str().is_some_and(|n| !n.is_empty())
        {
            continue;
        }
        let name = a["Name"].as_str().unwrap_or("?");
        let job = a["JobID"].as_str().unwrap_or("?");
        let batch = matches!(a["Job"]["Type"].as_str(), Some("batch" | "sysbatch"));
        match a["ClientStatus"].as_str().unwrap_or("") {
            "running" => running += 1,
            "complete" if batch => running += 1,
            "failed" => return AllocsSeen::Failed(failed(a, job, name)),
            "lost" => {
                return AllocsSeen::Failed(format!("allocation {name} of job `{job}` was lost"))
            }
            status => starting.push(format!("{name} ({})", or_unknown(status))),
        }
    }
    if starting.is_empty() {
        return AllocsSeen::Running(running);
    }
    let more = starting.len().saturating_sub(NAMED);
    starting.truncate(NAMED);
    let mut text = starting.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    AllocsSeen::Starting(text)
}

/// A task event's message, cut to a console line's worth (Nomad's are short; this is a bound).
fn cut(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "no status"
    } else {
        s
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

    fn alloc(job: &str, owner: &str, client: &str, desired: &str) -> Value {
        json!({
            "Name": format!("{job}.g[0]"), "JobID": job, "ClientStatus": client,
            "DesiredStatus": desired, "NextAllocation": "",
            "Job": {"ID": job, "Type": "service", "Meta": {"nomados.owner": owner}},
            "TaskStates": null
        })
    }

    #[test]
    fn only_the_owners_wanted_allocations_count() {
        let list = [
            alloc("web", "edge", "running", "run"),
            alloc("db", "edge", "running", "run"),
            alloc("other", "someone", "failed", "run"),
            alloc("web", "edge", "failed", "stop"),
            json!({"Name": "x.g[0]", "JobID": "x", "ClientStatus": "failed", "DesiredStatus": "run",
                   "Job": {"ID": "x", "Meta": null}}),
        ];
        assert_eq!(seen(&list, "edge"), AllocsSeen::Running(2));
        assert_eq!(
            seen(&[], "edge"),
            AllocsSeen::Running(0),
            "no job for this node"
        );
        let mut replaced = alloc("web", "edge", "failed", "run");
        replaced["NextAllocation"] = json!("b2c1");
        assert_eq!(seen(&[replaced], "edge"), AllocsSeen::Running(0));
    }

    #[test]
    fn pending_ones_are_named_and_completed_batch_ones_count_as_done() {
        let mut batch = alloc("once", "edge", "complete", "run");
        batch["Job"]["Type"] = json!("batch");
        assert_eq!(seen(&[batch], "edge"), AllocsSeen::Running(1));
        let list: Vec<Value> = (0..5)
            .map(|i| alloc(&format!("j{i}"), "edge", "pending", "run"))
            .collect();
        assert_eq!(
            seen(&list, "edge"),
            AllocsSeen::Starting(
                "j0.g[0] (pending), j1.g[0] (pending), j2.g[0] (pending) and 2 more".into()
            )
        );
        let service_done = alloc("web", "edge", "complete", "run");
        assert!(matches!(
            seen(&[service_done], "edge"),
            AllocsSeen::Starting(_)
        ));
    }

    #[test]
    fn a_failed_or_lost_allocation_names_its_job_task_and_reason() {
        let mut a = alloc("web", "edge", "failed", "run");
        a["TaskStates"] = json!({
            "sidecar": {"Failed": false, "Events": [{"DisplayMessage": "Task's sibling \"server\" failed"}]},
            "server": {"Failed": true, "Events": [
                {"DisplayMessage": "Task received by client", "FailsTask": false},
                {"DisplayMessage": "failed to launch command: exec: \"/nope\": no such file", "FailsTask": true},
                {"DisplayMessage": "Error was unrecoverable", "FailsTask": true}
            ]}
        });
        assert_eq!(
            seen(&[alloc("db", "edge", "running", "run"), a], "edge"),
            AllocsSeen::Failed(
                "allocation web.g[0] of job `web` failed: task `server`: failed to launch command: exec: \"/nope\": no such file".into()
            )
        );
        assert_eq!(
            seen(&[alloc("db", "edge", "lost", "run")], "edge"),
            AllocsSeen::Failed("allocation db.g[0] of job `db` was lost".into())
        );
    }
}
