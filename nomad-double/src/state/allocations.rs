//! Allocations: placement on the one node (the scheduler, reduced) and their life cycle
//! (`pending` -> `running`/`failed`, stop -> `complete`), with task events shaped like Nomad's.

use super::{rfc3339, Store};
use crate::canonical::datacenter_matches;
use serde_json::{json, Map, Value};

/// The node's memory (its `NodeResources`): a group asking for more cannot be placed.
const NODE_MEMORY_MB: u64 = 1024;

pub(super) struct Alloc {
    pub(super) v: Value,
    pub(super) ns: String,
    pub(super) job_id: String,
    pub(super) group: String,
    /// When the client "starts" it (pending -> running/failed).
    pub(super) ready_at: i64,
    /// When a stop request finishes (-> complete).
    pub(super) stop_at: Option<i64>,
    /// Why the tasks cannot start: (task, driver error).
    pub(super) failure: Option<(String, String)>,
    pub(super) tasks: Vec<String>,
    /// The job as it was when placed: a full allocation (`/v1/node/:id/allocations`)
    /// carries it, the stubs of `/v1/job/:id/allocations` do not.
    pub(super) job: Value,
}

impl Alloc {
    pub(super) fn desired_run(&self) -> bool {
        self.v["DesiredStatus"] == "run"
    }
    pub(super) fn client_status(&self) -> &str {
        self.v["ClientStatus"].as_str().unwrap_or("")
    }
    pub(super) fn terminal(&self) -> bool {
        matches!(self.client_status(), "complete" | "failed" | "lost")
    }
}

fn event(kind: &str, display: &str, time: i64, extra: Value) -> Value {
    let mut e = json!({
        "Details": {}, "DiskLimit": 0, "DisplayMessage": display, "DownloadError": "",
        "DriverError": "", "DriverMessage": "", "ExitCode": 0, "FailedSibling": "",
        "FailsTask": false, "GenericSource": "", "KillError": "", "KillReason": "",
        "KillTimeout": 0, "Message": "", "RestartReason": "", "SetupError": "", "Signal": 0,
        "StartDelay": 0, "TaskSignal": "", "TaskSignalReason": "", "Time": time, "Type": kind,
        "ValidationError": "", "VaultError": ""
    });
    if let (Value::Object(m), Value::Object(x)) = (&mut e, extra) {
        m.extend(x);
    }
    e
}

fn task_state(state: &str, failed: bool, started: Option<i64>, events: Vec<Value>) -> Value {
    json!({"Events": events, "Failed": failed, "FinishedAt": null, "LastRestart": null,
           "Restarts": 0, "StartedAt": started.map(rfc3339), "State": state,
           "TaskHandle": null})
}

impl Store {
    pub(super) fn stop_allocs(&mut self, pred: impl Fn(&Alloc) -> bool, reason: &str, now: i64) {
        let hits: Vec<usize> = (0..self.allocs.len())
            .filter(|&i| self.allocs[i].desired_run() && pred(&self.allocs[i]))
            .collect();
        if hits.is_empty() {
            return;
        }
        let idx = self.bump();
        let delay = self.settings.alloc_delay_ns;
        for i in hits {
            let a = &mut self.allocs[i];
            a.v["DesiredStatus"] = json!("stop");
            a.v["DesiredDescription"] = json!(reason);
            a.v["ModifyIndex"] = json!(idx);
            a.v["ModifyTime"] = json!(now);
            a.stop_at = Some(now + delay);
        }
    }

    pub(super) fn task_failure(&self, task: &Value) -> Option<String> {
        let driver = task["Driver"].as_str().unwrap_or("");
        let enabled = match driver {
            "exec" => self.settings.exec_enabled,
            "raw_exec" => self.settings.raw_exec_enabled,
            _ => false,
        };
        if !enabled {
            return Some(format!(
                "failed to start task: driver {driver:?} is not available on this node"
            ));
        }
        let cmd = task["Config"]["command"].as_str().unwrap_or("");
        if cmd.starts_with('/') && !(self.settings.command_exists)(cmd) {
            return Some(format!(
                "failed to launch command with executor: rpc error: code = Unknown desc = exec: \"{cmd}\": stat {cmd}: no such file or directory"
            ));
        }
        None
    }

    /// Why group `g` of `job` cannot go on this node: a constraint (job, group or task
    /// level) that filters it, or more memory than the node has. Constraints on
    /// `${node.unique.name}`, `${node.unique.id}`, `${node.datacenter}`,
    /// `${attr.kernel.name}` and `${meta.<key>}` with `=`/`==`/`is`/`!=`/`not` are checked
    /// (an attribute the node lacks filters it, as in Nomad); other operators pass.
    fn misfit(&self, job: &Value, g: &Value) -> Option<(Option<String>, Option<&'static str>)> {
        let tasks = g["Tasks"].as_array().cloned().unwrap_or_default();
        let constraints = job["Constraints"]
            .as_array()
            .into_iter()
            .chain(g["Constraints"].as_array())
            .chain(tasks.iter().filter_map(|t| t["Constraints"].as_array()))
            .flatten();
        for c in constraints {
            let l = c["LTarget"].as_str().unwrap_or("");
            let r = c["RTarget"].as_str().unwrap_or("");
            let op = c["Operand"].as_str().unwrap_or("=");
            let value = match l {
                "${node.unique.name}" => Some(self.settings.node_name.clone()),
                "${node.unique.id}" => Some(self.node_id.clone()),
                "${node.datacenter}" => Some(self.settings.datacenter.clone()),
                "${attr.kernel.name}" => Some("linux".to_string()),
                _ => l
                    .strip_prefix("${meta.")
                    .and_then(|k| k.strip_suffix('}'))
                    .and_then(|k| self.settings.node_meta.get(k).cloned()),
            };
            let ok = match op {
                "" | "=" | "==" | "is" => value.as_deref() == Some(r),
                "!=" | "not" => value.is_some_and(|v| v != r),
                _ => true,
            };
            if !ok {
                return Some((Some(format!("{l} {op} {r}").replace("  ", " ")), None));
            }
        }
        let memory: u64 = tasks
            .iter()
            .map(|t| t["Resources"]["MemoryMB"].as_u64().unwrap_or(300))
            .sum();
        (memory > NODE_MEMORY_MB).then_some((None, Some("memory")))
    }

    /// The scheduler, reduced to what one node needs: make the live allocations of a job
    /// match its groups (count, or one per eligible node for system jobs). Returns the
    /// groups it could not place, each with Nomad's `AllocMetric`.
    pub(super) fn place(
        &mut self,
        key: &(String, String),
        eval_id: &str,
        now: i64,
    ) -> Map<String, Value> {
        let mut failed = Map::new();
        let Some(rec) = self.jobs.get(key) else {
            return failed;
        };
        let job = rec.job.clone();
        if job["Stop"].as_bool().unwrap_or(false) {
            return failed;
        }
        let job_type = job["Type"].as_str().unwrap_or("service").to_string();
        let node_ok = self.node_state.eligible
            && !self.node_state.drain
            && datacenter_matches(&job, &self.settings.datacenter);
        let mut new_allocs = Vec::new();
        let mut to_stop = Vec::new();
        for g in job["TaskGroups"].as_array().cloned().unwrap_or_default() {
            let gname = g["Name"].as_str().unwrap_or("").to_string();
            let system = job_type == "system" || job_type == "sysbatch";
            let misfit = if node_ok { self.misfit(&job, &g) } else { None };
            let want = if misfit.is_some() {
                0
            } else if system {
                usize::from(node_ok)
            } else if node_ok {
                g["Count"].as_u64().unwrap_or(1) as usize
            } else {
                0
            };
            match &misfit {
                // A system job goes where its constraints let it: elsewhere is no failure.
                Some((Some(_), None)) if system => {}
                Some((constraint, dimension)) => {
                    failed.insert(
                        gname.clone(),
                        super::evals::metric(
                            &self.settings.datacenter,
                            constraint.as_deref(),
                            *dimension,
                        ),
                    );
                }
                None => {}
            }
            let live: Vec<usize> = self
                .allocs
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    a.ns == key.0 && a.job_id == key.1 && a.group == gname && a.desired_run()
                })
                .map(|(i, _)| i)
                .collect();
            for &i in live.iter().skip(want) {
                to_stop.push(i);
            }
            let tasks = g["Tasks"].as_array().cloned().unwrap_or_default();
            let failure = tasks.iter().find_map(|t| {
                self.task_failure(t)
                    .map(|e| (t["Name"].as_str().unwrap_or("").to_string(), e))
            });
            for slot in live.len()..want {
                new_allocs.push((gname.clone(), slot, failure.clone(), tasks.clone()));
            }
        }
        if !to_stop.is_empty() {
            let ids: Vec<String> = to_stop
                .iter()
                .map(|&i| self.allocs[i].v["ID"].as_str().unwrap_or("").to_string())
                .collect();
            self.stop_allocs(
                |a| ids.iter().any(|id| a.v["ID"] == id.as_str()),
                "alloc not needed due to job update",
                now,
            );
        }
        if new_allocs.is_empty() {
            return failed;
        }
        let idx = self.bump();
        for (gname, slot, failure, tasks) in new_allocs {
            let id = self.uuid();
            let v = json!({
                "ClientDescription": "", "ClientStatus": "pending", "CreateIndex": idx,
                "CreateTime": now, "DeploymentStatus": null, "DesiredDescription": "",
                "DesiredStatus": "run",
                "DesiredTransition": {"ForceReschedule": null, "Migrate": null, "Reschedule": null},
                "EvalID": eval_id, "FollowupEvalID": "", "ID": id, "JobID": key.1,
                "JobType": job_type, "JobVersion": job["Version"], "ModifyIndex": idx,
                "ModifyTime": now, "Name": format!("{}.{}[{}]", key.1, gname, slot),
                "Namespace": key.0, "NodeID": self.node_id, "NodeName": self.settings.node_name,
                "PreemptedAllocations": null, "PreemptedByAllocation": "",
                "RescheduleTracker": null, "TaskGroup": gname, "TaskStates": null
            });
            self.allocs.push(Alloc {
                v,
                ns: key.0.clone(),
                job_id: key.1.clone(),
                group: gname,
                ready_at: now + self.settings.alloc_delay_ns,
                stop_at: None,
                failure,
                tasks: tasks
                    .iter()
                    .map(|t| t["Name"].as_str().unwrap_or("").to_string())
                    .collect(),
                job: job.clone(),
            });
        }
        failed
    }

    /// Moves allocations along their life cycle. Returns true when anything changed.
    pub fn advance(&mut self, now: i64) -> bool {
        let mut any = self.run_due_evals(now);
        let mut changed_jobs = Vec::new();
        for i in 0..self.allocs.len() {
            let a = &self.allocs[i];
            let start = a.desired_run() && a.client_status() == "pending" && now >= a.ready_at;
            let stop = !a.terminal() && a.stop_at.is_some_and(|t| now >= t);
            if !start && !stop {
                continue;
            }
            let idx = self.bump();
            any = true;
            let a = &mut self.allocs[i];
            a.v["ModifyIndex"] = json!(idx);
            a.v["ModifyTime"] = json!(now);
            let t0 = a.ready_at;
            if start {
                let mut states = Map::new();
                match &a.failure {
                    None => {
                        for t in &a.tasks {
                            states.insert(t.clone(), task_state("running", false, Some(now), vec![
                                event("Received", "Task received by client", t0, json!({})),
                                event("Task Setup", "Building Task Directory", t0,
                                    json!({"Details": {"message": "Building Task Directory"},
                                           "Message": "Building Task Directory"})),
                                event("Started", "Task started by client", now, json!({})),
                            ]));
                        }
                        a.v["ClientStatus"] = json!("running");
                        a.v["ClientDescription"] = json!("Tasks are running");
                    }
                    Some((failed_task, err)) => {
                        for t in &a.tasks {
                            let mut events = vec![
                                event("Received", "Task received by client", t0, json!({})),
                                event(
                                    "Task Setup",
                                    "Building Task Directory",
                                    t0,
                                    json!({"Details": {"message": "Building Task Directory"},
                                           "Message": "Building Task Directory"}),
                                ),
                            ];
                            if t == failed_task {
                                events.push(event(
                                    "Driver Failure",
                                    err,
                                    now,
                                    json!({"DriverError": err, "FailsTask": true,
                                           "Details": {"driver_error": err, "fails_task": "true"}}),
                                ));
                                events.push(event("Not Restarting", "Error was unrecoverable", now,
                                    json!({"FailsTask": true, "RestartReason": "Error was unrecoverable",
                                           "Details": {"fails_task": "true", "restart_reason": "Error was unrecoverable"}})));
                            } else {
                                events.push(event(
                                    "Sibling Task Failed",
                                    &format!("Task's sibling {failed_task:?} failed"),
                                    now,
                                    json!({"FailedSibling": failed_task}),
                                ));
                            }
                            let mut st = task_state("dead", t == failed_task, None, events);
                            st["FinishedAt"] = json!(rfc3339(now));
                            states.insert(t.clone(), st);
                        }
                        a.v["ClientStatus"] = json!("failed");
                        a.v["ClientDescription"] = json!("Failed tasks");
                    }
                }
                a.v["TaskStates"] = Value::Object(states);
            } else {
                if let Some(states) = a.v["TaskStates"].as_object_mut() {
                    for st in states.values_mut() {
                        if let Some(ev) = st["Events"].as_array_mut() {
                            ev.push(event("Killing", "Sent interrupt. Waiting 5s before force killing", now,
                                json!({"Details": {"kill_timeout": "5s"}, "KillTimeout": 5_000_000_000_i64})));
                            ev.push(event("Killed", "Task successfully killed", now, json!({})));
                        }
                        st["State"] = json!("dead");
                        st["FinishedAt"] = json!(rfc3339(now));
                    }
                }
                if a.client_status() != "failed" {
                    a.v["ClientStatus"] = json!("complete");
                    a.v["ClientDescription"] = json!("All tasks have completed");
                }
            }
            changed_jobs.push((a.ns.clone(), a.job_id.clone()));
        }
        for key in changed_jobs {
            self.refresh_status(&key);
        }
        // A drain ends once what it stopped has stopped.
        self.finish_drain(now) || any
    }

    pub fn job_allocs(&self, ns: &str, id: &str) -> Vec<Value> {
        let mut v: Vec<&Alloc> = self
            .allocs
            .iter()
            .filter(|a| a.ns == ns && a.job_id == id)
            .collect();
        v.sort_by_key(|a| std::cmp::Reverse(a.v["CreateIndex"].as_u64()));
        v.into_iter().map(|a| a.v.clone()).collect()
    }

    /// `/v1/node/:id/allocations`: this node's allocations in full (Nomad's `Allocation`,
    /// with its `Job`), in no particular order; an unknown node has none (Nomad does not
    /// check that the node exists).
    pub fn node_allocs(&self, node_id: &str) -> Vec<Value> {
        if node_id != self.node_id {
            return Vec::new();
        }
        self.allocs
            .iter()
            .map(|a| {
                let mut v = a.v.clone();
                v["Job"] = a.job.clone();
                v
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{job, store};

    #[test]
    fn allocations_run_fail_and_get_replaced() {
        let mut s = store();
        s.register(job("/bin/sh"), "default", None, None, 10)
            .unwrap();
        let allocs = s.job_allocs("default", "hello");
        assert_eq!(allocs.len(), 1);
        assert_eq!(allocs[0]["ClientStatus"], "pending");
        assert!(s.advance(10));
        assert_eq!(
            s.job_allocs("default", "hello")[0]["ClientStatus"],
            "running"
        );
        // A job update replaces the allocation; the new one fails: no such command.
        s.register(job("/nope/missing"), "default", None, None, 20)
            .unwrap();
        s.advance(20);
        let allocs = s.job_allocs("default", "hello");
        assert_eq!(allocs.len(), 2);
        assert_eq!(allocs[0]["ClientStatus"], "failed");
        assert_eq!(allocs[0]["JobVersion"], 1);
        let ev = &allocs[0]["TaskStates"]["t"]["Events"][2];
        assert_eq!(ev["Type"], "Driver Failure");
        assert!(ev["DisplayMessage"]
            .as_str()
            .unwrap()
            .contains("/nope/missing"));
        assert_eq!(allocs[1]["DesiredStatus"], "stop");
        assert_eq!(allocs[1]["ClientStatus"], "complete");
    }

    #[test]
    fn node_allocations_are_full_allocations_with_their_job() {
        let mut s = store();
        s.register(job("/bin/sh"), "default", None, None, 10)
            .unwrap();
        s.advance(10);
        let id = s.node_id.clone();
        let allocs = s.node_allocs(&id);
        assert_eq!(allocs.len(), 1);
        assert_eq!(allocs[0]["ClientStatus"], "running");
        assert_eq!(allocs[0]["NodeID"], id.as_str());
        assert_eq!(allocs[0]["Job"]["ID"], "hello");
        assert_eq!(allocs[0]["Job"]["Type"], "system");
        assert!(s.node_allocs("0000").is_empty());
        // The stubs of the job's list stay stubs.
        assert!(s.job_allocs("default", "hello")[0].get("Job").is_none());
    }
}
