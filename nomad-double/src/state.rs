//! The in-memory store: jobs and their versions, allocations, the one node, variables and
//! ACL policies, with Raft-like indexes. Pure: time comes in as `now` (Unix nanoseconds) and
//! the only outside look-up (does a task's command exist?) is a function in [`Settings`].

use crate::canonical::{
    canonicalize, datacenter_matches, spec_changed, to_stored, validate, version_defaults,
};
use crate::diff::job_diff;
use crate::version::Version;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What the store needs to know about the agent it pretends to be.
#[derive(Clone)]
pub struct Settings {
    pub version: Version,
    pub alloc_delay_ns: i64,
    pub acl_enabled: bool,
    pub datacenter: String,
    pub region: String,
    pub node_name: String,
    pub node_address: String,
    pub exec_enabled: bool,
    pub raw_exec_enabled: bool,
    pub namespaces: Vec<String>,
    /// Whether an absolute task command exists on this host.
    pub command_exists: fn(&str) -> bool,
}

impl Settings {
    pub fn for_tests() -> Settings {
        Settings {
            version: Version::DEFAULT,
            alloc_delay_ns: 0,
            acl_enabled: false,
            datacenter: "dc1".into(),
            region: "global".into(),
            node_name: "double".into(),
            node_address: "127.0.0.1".into(),
            exec_enabled: true,
            raw_exec_enabled: true,
            namespaces: vec!["default".into()],
            command_exists: |p| std::path::Path::new(p).exists(),
        }
    }
}

/// Errors, each mapping to one HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// 400
    BadRequest(String),
    /// 404
    NotFound(String),
    /// 409, with the conflicting object as JSON.
    Conflict(Value),
    /// 500 (Nomad returns RPC errors such as validation failures this way).
    Server(String),
}

pub type Result<T> = std::result::Result<T, Error>;

struct JobRecord {
    job: Value,
    /// Newest first, like `/v1/job/:id/versions`.
    versions: Vec<Value>,
    submissions: BTreeMap<u64, Value>,
}

struct Alloc {
    v: Value,
    ns: String,
    job_id: String,
    group: String,
    /// When the client "starts" it (pending -> running/failed).
    ready_at: i64,
    /// When a stop request finishes (-> complete).
    stop_at: Option<i64>,
    /// Why the tasks cannot start: (task, driver error).
    failure: Option<(String, String)>,
    tasks: Vec<String>,
}

impl Alloc {
    fn desired_run(&self) -> bool {
        self.v["DesiredStatus"] == "run"
    }
    fn client_status(&self) -> &str {
        self.v["ClientStatus"].as_str().unwrap_or("")
    }
    fn terminal(&self) -> bool {
        matches!(self.client_status(), "complete" | "failed" | "lost")
    }
}

struct Var {
    items: Map<String, Value>,
    create_index: u64,
    modify_index: u64,
    create_time: i64,
    modify_time: i64,
}

/// Result of a job register or deregister.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteResult {
    pub eval_id: String,
    pub index: u64,
    pub job_modify_index: u64,
}

pub struct Store {
    pub settings: Settings,
    pub index: u64,
    pub node_id: String,
    node_create_index: u64,
    node_modify_index: u64,
    drain: bool,
    eligible: bool,
    drain_strategy: Value,
    jobs: BTreeMap<(String, String), JobRecord>,
    allocs: Vec<Alloc>,
    vars: BTreeMap<(String, String), Var>,
    policies: BTreeMap<String, Value>,
    seed: u64,
    started: i64,
}

/// RFC 3339 with nanoseconds, as Go prints `time.Time`.
pub fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
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
    pub fn new(settings: Settings, now: i64) -> Store {
        let mut s = Store {
            settings,
            index: 0,
            node_id: String::new(),
            node_create_index: 0,
            node_modify_index: 0,
            drain: false,
            eligible: true,
            drain_strategy: Value::Null,
            jobs: BTreeMap::new(),
            allocs: Vec::new(),
            vars: BTreeMap::new(),
            policies: BTreeMap::new(),
            seed: now as u64 ^ 0x9e37_79b9_7f4a_7c15,
            started: now,
        };
        s.node_id = s.uuid();
        // A fresh dev agent has done some Raft writes before serving (leader, node).
        s.index = 7;
        s.node_create_index = 7;
        s.index = 9;
        s.node_modify_index = 9;
        s
    }

    fn next_rand(&mut self) -> u64 {
        // splitmix64: plenty for IDs that only need to be unique.
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn uuid(&mut self) -> String {
        let a = self.next_rand();
        let b = self.next_rand();
        let h = format!("{a:016x}{b:016x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    // ---------------------------------------------------------------- jobs

    /// `POST /v1/jobs`. `enforce` is `Some(JobModifyIndex)` when `EnforceIndex` is set.
    pub fn register(
        &mut self,
        job: Value,
        default_ns: &str,
        enforce: Option<u64>,
        submission: Option<Value>,
        now: i64,
    ) -> Result<WriteResult> {
        let job = self.admit(job, default_ns)?;
        let ns = job["Namespace"].as_str().unwrap_or("default").to_string();
        let id = job["ID"].as_str().unwrap_or("").to_string();
        if !self.settings.namespaces.contains(&ns) {
            return Err(Error::Server(format!(
                "job \"{id}\" is in nonexistent namespace \"{ns}\""
            )));
        }
        let key = (ns.clone(), id.clone());
        let existing = self.jobs.get(&key).map(|r| r.job.clone());
        let existing = existing.as_ref();
        if let Some(jmi) = enforce {
            match existing {
                Some(old) => {
                    let cur = old["JobModifyIndex"].as_u64().unwrap_or(0);
                    if jmi == 0 {
                        return Err(Error::Server(
                            "Enforcing job modify index 0: job already exists".into(),
                        ));
                    }
                    if jmi != cur {
                        return Err(Error::Server(format!(
                            "Enforcing job modify index {jmi}: job exists with conflicting job modify index: {cur}"
                        )));
                    }
                }
                None if jmi != 0 => {
                    return Err(Error::Server(format!(
                        "Enforcing job modify index {jmi}: job does not exist"
                    )));
                }
                None => {}
            }
        }
        let mut stored = to_stored(&job);
        let changed = existing.is_none_or(|old| spec_changed(old, &stored));
        let eval_id = self.uuid();
        if !changed {
            // Nomad does not rewrite an unchanged job; it only creates an evaluation.
            let jmi = existing.map_or(0, |old| old["JobModifyIndex"].as_u64().unwrap_or(0));
            let index = self.bump();
            self.place(&key, &eval_id, now);
            return Ok(WriteResult {
                eval_id,
                index,
                job_modify_index: jmi,
            });
        }
        let index = self.bump();
        let (create_index, version) = match existing {
            Some(old) => (
                old["CreateIndex"].as_u64().unwrap_or(index),
                old["Version"].as_u64().unwrap_or(0) + 1,
            ),
            None => (index, 0),
        };
        let m = stored.as_object_mut().expect("canonicalize made an object");
        m.insert("CreateIndex".into(), json!(create_index));
        m.insert("ModifyIndex".into(), json!(index));
        m.insert("JobModifyIndex".into(), json!(index));
        m.insert("Version".into(), json!(version));
        m.insert("SubmitTime".into(), json!(now));
        m.insert("Stable".into(), json!(false));
        m.insert("Status".into(), json!("pending"));
        let stop = stored["Stop"].as_bool().unwrap_or(false);
        let rec = self.jobs.entry(key.clone()).or_insert_with(|| JobRecord {
            job: Value::Null,
            versions: Vec::new(),
            submissions: BTreeMap::new(),
        });
        rec.job = stored.clone();
        rec.versions.insert(0, stored);
        if let Some(sub) = submission.filter(|s| s.is_object()) {
            if self.settings.version.has_submissions() {
                rec.submissions.insert(version, sub);
            }
        }
        let reason = if stop {
            "alloc not needed due to job update"
        } else {
            "alloc is being updated due to job update"
        };
        self.stop_allocs(|a| a.ns == key.0 && a.job_id == key.1, reason, now);
        self.place(&key, &eval_id, now);
        self.refresh_status(&key);
        Ok(WriteResult {
            eval_id,
            index,
            job_modify_index: index,
        })
    }

    fn stop_allocs(&mut self, pred: impl Fn(&Alloc) -> bool, reason: &str, now: i64) {
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

    fn task_failure(&self, task: &Value) -> Option<String> {
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

    /// The scheduler, reduced to what one node needs: make the live allocations of a job
    /// match its groups (count, or one per eligible node for system jobs).
    fn place(&mut self, key: &(String, String), eval_id: &str, now: i64) {
        let Some(rec) = self.jobs.get(key) else {
            return;
        };
        let job = rec.job.clone();
        if job["Stop"].as_bool().unwrap_or(false) {
            return;
        }
        let job_type = job["Type"].as_str().unwrap_or("service").to_string();
        let node_ok =
            self.eligible && !self.drain && datacenter_matches(&job, &self.settings.datacenter);
        let mut new_allocs = Vec::new();
        let mut to_stop = Vec::new();
        for g in job["TaskGroups"].as_array().cloned().unwrap_or_default() {
            let gname = g["Name"].as_str().unwrap_or("").to_string();
            let want = if job_type == "system" || job_type == "sysbatch" {
                usize::from(node_ok)
            } else if node_ok {
                g["Count"].as_u64().unwrap_or(1) as usize
            } else {
                0
            };
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
            return;
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
            });
        }
    }

    /// Moves allocations along their life cycle. Returns true when anything changed.
    pub fn advance(&mut self, now: i64) -> bool {
        let mut changed_jobs = Vec::new();
        let mut any = false;
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
        any
    }

    /// Nomad's `getJobStatus`: system jobs run until stopped; others follow their allocations.
    fn refresh_status(&mut self, key: &(String, String)) {
        let Some(rec) = self.jobs.get(key) else {
            return;
        };
        let stop = rec.job["Stop"].as_bool().unwrap_or(false);
        let ty = rec.job["Type"].as_str().unwrap_or("");
        let allocs: Vec<&Alloc> = self
            .allocs
            .iter()
            .filter(|a| a.ns == key.0 && a.job_id == key.1)
            .collect();
        let status = if stop {
            "dead"
        } else if ty == "system"
            || rec.job["Periodic"].is_object()
            || allocs.iter().any(|a| !a.terminal())
        {
            "running"
        } else if allocs.is_empty() {
            "pending"
        } else {
            "dead"
        };
        if let Some(rec) = self.jobs.get_mut(key) {
            rec.job["Status"] = json!(status);
            if let Some(v) = rec.versions.first_mut() {
                v["Status"] = json!(status);
            }
        }
    }

    pub fn job(&self, ns: &str, id: &str) -> Option<&Value> {
        self.jobs
            .get(&(ns.to_string(), id.to_string()))
            .map(|r| &r.job)
    }

    pub fn job_versions(&self, ns: &str, id: &str) -> Option<&[Value]> {
        self.jobs
            .get(&(ns.to_string(), id.to_string()))
            .map(|r| r.versions.as_slice())
    }

    fn summary(&self, key: &(String, String), job: &Value) -> Value {
        let mut groups = Map::new();
        for g in job["TaskGroups"].as_array().into_iter().flatten() {
            let name = g["Name"].as_str().unwrap_or("").to_string();
            let count = |status: &str| {
                self.allocs
                    .iter()
                    .filter(|a| {
                        a.ns == key.0
                            && a.job_id == key.1
                            && a.group == name
                            && a.client_status() == status
                    })
                    .count()
            };
            groups.insert(
                name.clone(),
                json!({"Complete": count("complete"), "Failed": count("failed"),
                       "Lost": count("lost"), "Queued": 0, "Running": count("running"),
                       "Starting": count("pending")}),
            );
        }
        let modify = self
            .allocs
            .iter()
            .filter(|a| a.ns == key.0 && a.job_id == key.1)
            .filter_map(|a| a.v["ModifyIndex"].as_u64())
            .max()
            .unwrap_or(0)
            .max(job["ModifyIndex"].as_u64().unwrap_or(0));
        json!({"Children": {"Dead": 0, "Pending": 0, "Running": 0},
               "CreateIndex": job["CreateIndex"], "JobID": key.1, "ModifyIndex": modify,
               "Namespace": key.0, "Summary": groups})
    }

    /// Job list stubs. `ns` "*" lists every namespace.
    pub fn job_stubs(&self, ns: &str, prefix: &str, meta: bool) -> Vec<Value> {
        self.jobs
            .iter()
            .filter(|((jns, id), _)| (ns == "*" || jns == ns) && id.starts_with(prefix))
            .map(|(key, rec)| {
                let j = &rec.job;
                let mut stub = json!({
                    "CreateIndex": j["CreateIndex"], "Datacenters": j["Datacenters"],
                    "ID": j["ID"], "JobModifyIndex": j["JobModifyIndex"],
                    "JobSummary": self.summary(key, j), "ModifyIndex": j["ModifyIndex"],
                    "Multiregion": j["Multiregion"], "Name": j["Name"],
                    "Namespace": j["Namespace"],
                    "ParameterizedJob": j["ParameterizedJob"].is_object(),
                    "ParentID": j["ParentID"], "Periodic": j["Periodic"].is_object(),
                    "Priority": j["Priority"], "Status": j["Status"],
                    "StatusDescription": j["StatusDescription"], "Stop": j["Stop"],
                    "SubmitTime": j["SubmitTime"], "Type": j["Type"]
                });
                if let Some(pool) = j.get("NodePool") {
                    stub["NodePool"] = pool.clone();
                }
                if meta && self.settings.version.has_list_meta() {
                    stub["Meta"] = j["Meta"].clone();
                }
                stub
            })
            .collect()
    }

    /// `DELETE /v1/job/:id`: stop (new version with Stop=true) or purge.
    pub fn deregister(&mut self, ns: &str, id: &str, purge: bool, now: i64) -> WriteResult {
        let key = (ns.to_string(), id.to_string());
        let eval_id = self.uuid();
        let index = self.bump();
        if let Some(rec) = self.jobs.get_mut(&key) {
            if purge {
                self.jobs.remove(&key);
            } else {
                let mut j = rec.job.clone();
                let changed = !j["Stop"].as_bool().unwrap_or(false);
                if changed {
                    j["Stop"] = json!(true);
                    j["Version"] = json!(j["Version"].as_u64().unwrap_or(0) + 1);
                    j["JobModifyIndex"] = json!(index);
                    j["SubmitTime"] = json!(now);
                }
                j["ModifyIndex"] = json!(index);
                j["Status"] = json!("dead");
                if changed {
                    rec.versions.insert(0, j.clone());
                }
                rec.job = j;
            }
            self.stop_allocs(
                |a| a.ns == key.0 && a.job_id == key.1,
                "alloc not needed due to job update",
                now,
            );
        }
        WriteResult {
            eval_id,
            index,
            job_modify_index: index,
        }
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

    pub fn submission(&self, ns: &str, id: &str, version: Option<u64>) -> Result<Value> {
        let rec = self
            .jobs
            .get(&(ns.to_string(), id.to_string()))
            .ok_or_else(|| Error::NotFound("job not found".into()))?;
        let version = version.unwrap_or(rec.job["Version"].as_u64().unwrap_or(0));
        let sub = rec
            .submissions
            .get(&version)
            .ok_or_else(|| Error::NotFound("job source not found".into()))?;
        let jmi = rec
            .versions
            .iter()
            .find(|v| v["Version"].as_u64() == Some(version))
            .map_or(json!(0), |v| v["JobModifyIndex"].clone());
        let mut out = json!({"Source": "", "Format": "", "VariableFlags": null, "Variables": "",
                             "Namespace": ns, "JobID": id, "Version": version,
                             "JobModifyIndex": jmi});
        if let Value::Object(m) = sub {
            for k in ["Source", "Format", "VariableFlags", "Variables"] {
                if let Some(v) = m.get(k) {
                    out[k] = v.clone();
                }
            }
        }
        Ok(out)
    }

    /// What register and plan do first, as Nomad does: the namespace defaulted, the job
    /// canonicalized and given this version's defaults, then validated.
    fn admit(&self, mut job: Value, default_ns: &str) -> Result<Value> {
        if !job.is_object() {
            return Err(Error::BadRequest("Job must be specified".into()));
        }
        if job
            .get("Namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            job["Namespace"] = json!(default_ns);
        }
        canonicalize(&mut job);
        version_defaults(&mut job, self.settings.version);
        validate(&job).map_err(Error::Server)?;
        Ok(job)
    }

    /// `POST /v1/job/:id/plan`: what a register would do, without doing it.
    pub fn plan(&mut self, job: Value, default_ns: &str, want_diff: bool) -> Result<Value> {
        let job = self.admit(job, default_ns)?;
        let key = (
            job["Namespace"].as_str().unwrap_or("default").to_string(),
            job["ID"].as_str().unwrap_or("").to_string(),
        );
        let new = to_stored(&job);
        let old = self.jobs.get(&key).map(|r| r.job.clone());
        let mut diff = job_diff(old.as_ref(), &new);
        // Job meta reaches the tasks (destructive, like Nomad's tasksUpdated); other
        // job-level edits (priority, datacenters, ...) update allocations in place.
        let job_meta_changed = diff["Fields"].as_array().is_some_and(|f| {
            f.iter()
                .any(|x| x["Name"].as_str().is_some_and(|n| n.starts_with("Meta[")))
        });
        let job_level_changed = !diff["Fields"].is_null() || !diff["Objects"].is_null();
        let node_ok =
            self.eligible && !self.drain && datacenter_matches(&new, &self.settings.datacenter);
        let job_type = new["Type"].as_str().unwrap_or("service");
        let mut updates = Map::new();
        if let Some(groups) = diff["TaskGroups"].as_array_mut() {
            for g in groups {
                let name = g["Name"].as_str().unwrap_or("").to_string();
                let live = self
                    .allocs
                    .iter()
                    .filter(|a| {
                        a.ns == key.0 && a.job_id == key.1 && a.group == name && a.desired_run()
                    })
                    .count();
                let want = new["TaskGroups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|tg| tg["Name"] == name.as_str())
                    .map_or(0, |tg| {
                        if !node_ok {
                            0
                        } else if job_type == "system" || job_type == "sysbatch" {
                            1
                        } else {
                            tg["Count"].as_u64().unwrap_or(1) as usize
                        }
                    });
                let mut u = json!({"Canary": 0, "DestructiveUpdate": 0, "Ignore": 0,
                    "InPlaceUpdate": 0, "Migrate": 0, "Place": 0, "Preemptions": 0, "Stop": 0});
                let mut label = Map::new();
                let kept = live.min(want);
                let destructive = g["Type"] == "Edited" || job_meta_changed;
                if kept > 0 {
                    if destructive {
                        u["DestructiveUpdate"] = json!(kept);
                        label.insert("create/destroy update".into(), json!(kept));
                    } else if job_level_changed {
                        u["InPlaceUpdate"] = json!(kept);
                        label.insert("in-place update".into(), json!(kept));
                    } else {
                        u["Ignore"] = json!(kept);
                        label.insert("ignore".into(), json!(kept));
                    }
                }
                if want > live {
                    u["Place"] = json!(want - live);
                    label.insert("create".into(), json!(want - live));
                }
                if live > want {
                    u["Stop"] = json!(live - want);
                    label.insert("stop".into(), json!(live - want));
                }
                g["Updates"] = if label.is_empty() {
                    Value::Null
                } else {
                    Value::Object(label)
                };
                updates.insert(name, u);
            }
        }
        let jmi = old
            .as_ref()
            .map_or(json!(0), |o| o["JobModifyIndex"].clone());
        let index = old
            .as_ref()
            .and_then(|o| o["JobModifyIndex"].as_u64())
            .unwrap_or(self.index);
        Ok(json!({
            "Annotations": {"DesiredTGUpdates": updates, "PreemptedAllocs": null},
            "CreatedEvals": null,
            "Diff": if want_diff { diff } else { Value::Null },
            "FailedTGAllocs": null, "Index": index, "JobModifyIndex": jmi,
            "NextPeriodicLaunch": null, "Warnings": ""
        }))
    }

    // ---------------------------------------------------------------- node

    pub fn node(&self) -> Value {
        let d = |healthy: bool, name: &str| {
            json!({"Attributes": if healthy { json!({format!("driver.{name}"): "true"}) } else { Value::Null },
                   "Detected": healthy,
                   "HealthDescription": if healthy { "Healthy" } else { "disabled" },
                   "Healthy": healthy, "UpdateTime": rfc3339(self.started)})
        };
        json!({
            "Address": self.settings.node_address, "CreateIndex": self.node_create_index,
            "Datacenter": self.settings.datacenter, "Drain": self.drain,
            "DrainStrategy": self.drain_strategy,
            "Drivers": {"exec": d(self.settings.exec_enabled, "exec"),
                        "raw_exec": d(self.settings.raw_exec_enabled, "raw_exec")},
            "HostVolumes": null, "ID": self.node_id, "LastDrain": null,
            "ModifyIndex": self.node_modify_index, "Name": self.settings.node_name,
            "NodeClass": "",
            "SchedulingEligibility": if self.eligible { "eligible" } else { "ineligible" },
            "Status": "ready", "StatusDescription": "",
            "Version": self.settings.version.to_string()
        })
    }

    fn node_write(&mut self, now: i64) -> Value {
        let eval_id = self.uuid();
        let idx = self.bump();
        self.node_modify_index = idx;
        let keys: Vec<(String, String)> = self.jobs.keys().cloned().collect();
        for k in keys {
            self.place(&k, &eval_id, now);
        }
        json!({"EvalIDs": [eval_id], "EvalCreateIndex": idx, "NodeModifyIndex": idx,
               "Index": idx, "KnownLeader": false, "LastContact": 0})
    }

    /// `POST /v1/node/:id/drain`. A non-null `DrainSpec` drains (allocations stop at once;
    /// system jobs too unless `IgnoreSystemJobs`), null cancels.
    pub fn drain(&mut self, spec: &Value, mark_eligible: bool, now: i64) -> Value {
        if spec.is_object() {
            self.drain = true;
            self.eligible = false;
            let ignore_system = spec["IgnoreSystemJobs"].as_bool().unwrap_or(false);
            self.drain_strategy = json!({"Deadline": spec["Deadline"].as_i64().unwrap_or(0),
                "IgnoreSystemJobs": ignore_system, "ForceDeadline": null, "StartedAt": rfc3339(now)});
            let node = self.node_id.clone();
            self.stop_allocs(
                |a| {
                    a.v["NodeID"] == node.as_str() && !(ignore_system && a.v["JobType"] == "system")
                },
                "alloc is being migrated",
                now,
            );
        } else {
            self.drain = false;
            self.drain_strategy = Value::Null;
            if mark_eligible {
                self.eligible = true;
            }
        }
        self.node_write(now)
    }

    pub fn set_eligibility(&mut self, eligible: bool, now: i64) -> Result<Value> {
        if eligible && self.drain {
            return Err(Error::Server(
                "can not set node's scheduling eligibility to eligible while it is draining".into(),
            ));
        }
        self.eligible = eligible;
        Ok(self.node_write(now))
    }

    // ---------------------------------------------------------------- variables

    fn var_json(ns: &str, path: &str, v: &Var, items: bool) -> Value {
        let mut j = json!({"Namespace": ns, "Path": path, "CreateIndex": v.create_index,
            "ModifyIndex": v.modify_index, "CreateTime": v.create_time,
            "ModifyTime": v.modify_time});
        if items {
            j["Items"] = Value::Object(v.items.clone());
        }
        j
    }

    fn var_conflict(&self, ns: &str, path: &str) -> Error {
        match self.vars.get(&(ns.to_string(), path.to_string())) {
            Some(v) => Error::Conflict(Self::var_json(ns, path, v, true)),
            None => Error::Conflict(json!({"Namespace": ns, "Path": path, "CreateIndex": 0,
                "ModifyIndex": 0, "CreateTime": 0, "ModifyTime": 0, "Items": null})),
        }
    }

    pub fn var_list(&self, ns: &str, prefix: &str) -> Vec<Value> {
        self.vars
            .iter()
            .filter(|((vns, p), _)| (ns == "*" || vns == ns) && p.starts_with(prefix))
            .map(|((vns, p), v)| Self::var_json(vns, p, v, false))
            .collect()
    }

    pub fn var_get(&self, ns: &str, path: &str) -> Result<Value> {
        self.vars
            .get(&(ns.to_string(), path.to_string()))
            .map(|v| Self::var_json(ns, path, v, true))
            .ok_or_else(|| Error::NotFound("variable not found".into()))
    }

    fn check_var_path(path: &str) -> Result<()> {
        let ok = !path.is_empty()
            && path.len() <= 128
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '~' | '/'))
            && !path.starts_with('/')
            && !path.ends_with('/')
            && !path.contains("//");
        if !ok {
            return Err(Error::BadRequest(format!("invalid path {path:?}")));
        }
        let top = path.split('/').next().unwrap_or("");
        if top == "nomad" && !(path == "nomad/jobs" || path.starts_with("nomad/jobs/")) {
            return Err(Error::BadRequest(
                "\"nomad\" is a reserved top-level directory path, but you may write variables to \"nomad/jobs\" or below".into(),
            ));
        }
        Ok(())
    }

    /// `PUT /v1/var/:path`. `cas` is check-and-set: 0 means "must not exist yet".
    pub fn var_put(
        &mut self,
        ns: &str,
        path: &str,
        items: &Value,
        cas: Option<u64>,
        now: i64,
    ) -> Result<Value> {
        Self::check_var_path(path)?;
        if !self.settings.namespaces.iter().any(|n| n == ns) {
            return Err(Error::Server(format!("namespace \"{ns}\" does not exist")));
        }
        let items = match items {
            Value::Object(m) if !m.is_empty() => m.clone(),
            _ => return Err(Error::BadRequest("empty variables are invalid".into())),
        };
        if let Some((k, _)) = items.iter().find(|(_, v)| !v.is_string()) {
            return Err(Error::BadRequest(format!(
                "failed to parse request: item {k:?} must be a string"
            )));
        }
        let key = (ns.to_string(), path.to_string());
        let current = self.vars.get(&key).map(|v| v.modify_index);
        if let Some(cas) = cas {
            if current.unwrap_or(0) != cas {
                return Err(self.var_conflict(ns, path));
            }
        }
        let idx = self.bump();
        let v = self.vars.entry(key).or_insert(Var {
            items: Map::new(),
            create_index: idx,
            modify_index: idx,
            create_time: now,
            modify_time: now,
        });
        v.items = items;
        v.modify_index = idx;
        v.modify_time = now;
        Ok(Self::var_json(ns, path, v, true))
    }

    pub fn var_delete(&mut self, ns: &str, path: &str, cas: Option<u64>) -> Result<u64> {
        let key = (ns.to_string(), path.to_string());
        if let Some(cas) = cas {
            let current = self.vars.get(&key).map_or(0, |v| v.modify_index);
            if current != cas {
                return Err(self.var_conflict(ns, path));
            }
        }
        let idx = self.bump();
        self.vars.remove(&key);
        Ok(idx)
    }

    // ---------------------------------------------------------------- ACL policies

    fn acl_on(&self) -> Result<()> {
        if self.settings.acl_enabled {
            Ok(())
        } else {
            Err(Error::BadRequest("ACL support disabled".into()))
        }
    }

    pub fn policy_put(&mut self, name: &str, body: &Value) -> Result<u64> {
        self.acl_on()?;
        let body_name = body["Name"].as_str().unwrap_or("");
        if !body_name.is_empty() && body_name != name {
            return Err(Error::BadRequest(
                "Policy name does not match request path".into(),
            ));
        }
        let valid_name = !name.is_empty()
            && name.len() <= 128
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid_name {
            return Err(Error::Server(format!(
                "1 error occurred:\n\t* invalid name '{name}'\n\n"
            )));
        }
        let rules = body["Rules"].as_str().unwrap_or("");
        if let Err(e) = hcl::parse(rules) {
            return Err(Error::Server(format!(
                "policy 0 invalid: failed to parse rules: {}",
                e.to_string().lines().last().unwrap_or("")
            )));
        }
        let idx = self.bump();
        let create = self
            .policies
            .get(name)
            .and_then(|p| p["CreateIndex"].as_u64())
            .unwrap_or(idx);
        self.policies.insert(
            name.to_string(),
            json!({"Name": name, "Description": body["Description"].as_str().unwrap_or(""),
                   "Rules": rules, "JobACL": body.get("JobACL").cloned().unwrap_or(Value::Null),
                   "CreateIndex": create, "ModifyIndex": idx}),
        );
        Ok(idx)
    }

    pub fn policy_get(&self, name: &str) -> Result<Value> {
        self.acl_on()?;
        self.policies
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound("ACL policy not found".into()))
    }

    pub fn policy_list(&self, prefix: &str) -> Result<Vec<Value>> {
        self.acl_on()?;
        Ok(self
            .policies
            .values()
            .filter(|p| p["Name"].as_str().unwrap_or("").starts_with(prefix))
            .map(|p| {
                json!({"Name": p["Name"], "Description": p["Description"],
                       "CreateIndex": p["CreateIndex"], "ModifyIndex": p["ModifyIndex"]})
            })
            .collect())
    }

    pub fn policy_delete(&mut self, name: &str) -> Result<u64> {
        self.acl_on()?;
        self.policies.remove(name);
        Ok(self.bump())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cmd: &str) -> Value {
        json!({"ID": "hello", "Type": "system", "Datacenters": ["dc1"],
               "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec",
                 "Config": {"command": cmd}}]}]})
    }

    fn store() -> Store {
        let mut s = Settings::for_tests();
        s.command_exists = |p| p == "/bin/sh";
        Store::new(s, 1_000)
    }

    #[test]
    fn enforce_index_conflicts_use_nomads_texts() {
        let mut s = store();
        let err = s
            .register(job("/bin/sh"), "default", Some(5), None, 1)
            .unwrap_err();
        assert_eq!(
            err,
            Error::Server("Enforcing job modify index 5: job does not exist".into())
        );
        let r = s
            .register(job("/bin/sh"), "default", Some(0), None, 1)
            .unwrap();
        let err = s
            .register(job("/bin/sh"), "default", Some(0), None, 2)
            .unwrap_err();
        assert_eq!(
            err,
            Error::Server("Enforcing job modify index 0: job already exists".into())
        );
        let stale = r.job_modify_index - 1;
        let err = s
            .register(job("/bin/sh"), "default", Some(stale), None, 2)
            .unwrap_err();
        assert_eq!(
            err,
            Error::Server(format!(
                "Enforcing job modify index {stale}: job exists with conflicting job modify index: {}",
                r.job_modify_index
            ))
        );
        s.register(job("/bin/sh"), "default", Some(r.job_modify_index), None, 3)
            .unwrap();
    }

    #[test]
    fn version_bumps_only_on_spec_change() {
        let mut s = store();
        let a = s
            .register(job("/bin/sh"), "default", None, None, 1)
            .unwrap();
        let b = s
            .register(job("/bin/sh"), "default", None, None, 2)
            .unwrap();
        assert_eq!(s.job("default", "hello").unwrap()["Version"], 0);
        assert_eq!(
            b.job_modify_index, a.job_modify_index,
            "unchanged job not rewritten"
        );
        assert!(b.index > a.index, "an evaluation was still created");
        let mut changed = job("/bin/sh");
        changed["Meta"] = json!({"k": "v"});
        let c = s.register(changed, "default", None, None, 3).unwrap();
        let j = s.job("default", "hello").unwrap();
        assert_eq!(j["Version"], 1);
        assert_eq!(j["JobModifyIndex"], c.job_modify_index);
        assert!(c.job_modify_index > a.job_modify_index);
        assert_eq!(s.job_versions("default", "hello").unwrap().len(), 2);
    }

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
    fn plan_annotations_follow_what_changed() {
        let mut s = store();
        s.register(job("/bin/sh"), "default", None, None, 1)
            .unwrap();
        let tg = |p: &Value| p["Annotations"]["DesiredTGUpdates"]["g"].clone();
        let p = s.plan(job("/bin/sh"), "default", true).unwrap();
        assert_eq!(tg(&p)["Ignore"], 1);
        let mut prio = job("/bin/sh");
        prio["Priority"] = json!(70);
        let p = s.plan(prio, "default", true).unwrap();
        assert_eq!(tg(&p)["InPlaceUpdate"], 1);
        let mut meta = job("/bin/sh");
        meta["Meta"] = json!({"a": "b"});
        let p = s.plan(meta, "default", true).unwrap();
        assert_eq!(tg(&p)["DestructiveUpdate"], 1);
        assert_eq!(
            p["Diff"]["TaskGroups"][0]["Updates"]["create/destroy update"],
            1
        );
    }

    #[test]
    fn other_datacenters_get_no_allocations() {
        let mut s = store();
        let mut j = job("/bin/sh");
        j["Datacenters"] = json!(["elsewhere"]);
        s.register(j.clone(), "default", None, None, 1).unwrap();
        assert!(s.job_allocs("default", "hello").is_empty());
        let plan = s.plan(j, "default", true).unwrap();
        assert_eq!(plan["Annotations"]["DesiredTGUpdates"]["g"]["Place"], 0);
        let mut star = job("/bin/sh");
        star["Datacenters"] = json!(["*"]);
        s.register(star, "default", None, None, 2).unwrap();
        assert_eq!(s.job_allocs("default", "hello").len(), 1);
    }

    #[test]
    fn drain_stops_allocations_and_eligibility_restores() {
        let mut s = store();
        s.register(job("/bin/sh"), "default", None, None, 1)
            .unwrap();
        s.advance(1);
        s.drain(&json!({"Deadline": 0}), false, 2);
        s.advance(2);
        assert_eq!(
            s.job_allocs("default", "hello")[0]["ClientStatus"],
            "complete"
        );
        assert_eq!(s.node()["SchedulingEligibility"], "ineligible");
        s.drain(&Value::Null, true, 3);
        let allocs = s.job_allocs("default", "hello");
        assert_eq!(allocs.len(), 2, "system job placed again once eligible");
    }

    #[test]
    fn variables_check_and_set() {
        let mut s = store();
        let items = json!({"a": "1"});
        let v = s.var_put("default", "x/y", &items, Some(0), 1).unwrap();
        let idx = v["ModifyIndex"].as_u64().unwrap();
        // cas=0 on an existing variable conflicts and returns the current one.
        match s.var_put("default", "x/y", &json!({"a": "2"}), Some(0), 2) {
            Err(Error::Conflict(cur)) => assert_eq!(cur["Items"]["a"], "1"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.var_put("default", "x/y", &items, Some(idx + 7), 2),
            Err(Error::Conflict(_))
        ));
        let v2 = s
            .var_put("default", "x/y", &json!({"a": "2"}), Some(idx), 3)
            .unwrap();
        assert!(v2["ModifyIndex"].as_u64().unwrap() > idx);
        assert_eq!(v2["CreateIndex"].as_u64(), Some(idx));
        assert!(matches!(
            s.var_delete("default", "x/y", Some(idx)),
            Err(Error::Conflict(_))
        ));
        assert_eq!(s.var_list("default", "x/").len(), 1);
        assert!(s.var_list("default", "y").is_empty());
        s.var_delete("default", "x/y", None).unwrap();
        assert_eq!(
            s.var_get("default", "x/y"),
            Err(Error::NotFound("variable not found".into()))
        );
        assert!(matches!(
            s.var_put("default", "/abs", &items, None, 4),
            Err(Error::BadRequest(_))
        ));
        assert_eq!(
            s.var_put("default", "p", &json!({}), None, 4),
            Err(Error::BadRequest("empty variables are invalid".into()))
        );
        assert!(matches!(
            s.var_put("default", "nomad/x", &items, None, 4),
            Err(Error::BadRequest(_))
        ));
        assert!(s
            .var_put("default", "nomad/jobs/web", &items, None, 4)
            .is_ok());
    }

    #[test]
    fn acl_disabled_refuses_policies() {
        let mut s = store();
        let e = s.policy_put("readonly", &json!({"Name": "readonly", "Rules": ""}));
        assert_eq!(e, Err(Error::BadRequest("ACL support disabled".into())));
        assert!(s.policy_list("").is_err());
        s.settings.acl_enabled = true;
        s.policy_put(
            "readonly",
            &json!({"Name": "readonly", "Rules": "namespace \"default\" { policy = \"read\" }"}),
        )
        .unwrap();
        assert_eq!(s.policy_list("").unwrap().len(), 1);
        assert!(s.policy_put("x", &json!({"Name": "y"})).is_err());
    }

    #[test]
    fn time_format_matches_go() {
        assert_eq!(
            rfc3339(1_795_294_803_222_647_515),
            "2026-11-21T21:00:03.222647515Z"
        );
    }
}
