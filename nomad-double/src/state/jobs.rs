//! Jobs: register (with `EnforceIndex`), versions, submissions, list stubs with summaries,
//! deregister, and plan.

use super::allocations::Alloc;
use super::{Error, Result, Store, WriteResult};
use crate::canonical::{
    canonicalize, datacenter_matches, spec_changed, to_stored, validate, version_defaults,
};
use crate::diff::job_diff;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub(super) struct JobRecord {
    pub(super) job: Value,
    /// Newest first, like `/v1/job/:id/versions`.
    pub(super) versions: Vec<Value>,
    pub(super) submissions: BTreeMap<u64, Value>,
}

impl Store {
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
            self.create_eval(&key, eval_id.clone(), "job-register", index, now);
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
        self.refresh_status(&key);
        // The evaluation stops the older versions' allocations and places the new ones.
        self.create_eval(&key, eval_id.clone(), "job-register", index, now);
        Ok(WriteResult {
            eval_id,
            index,
            job_modify_index: index,
        })
    }

    /// Nomad's `getJobStatus`: system jobs run until stopped; others follow their allocations.
    pub(super) fn refresh_status(&mut self, key: &(String, String)) {
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

    pub(super) fn summary(&self, key: &(String, String), job: &Value) -> Value {
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
            self.create_eval(&key, eval_id.clone(), "job-deregister", index, now);
        }
        WriteResult {
            eval_id,
            index,
            job_modify_index: index,
        }
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
    pub(super) fn admit(&self, mut job: Value, default_ns: &str) -> Result<Value> {
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
        let node_ok = self.node_state.eligible
            && !self.node_state.drain
            && datacenter_matches(&new, &self.settings.datacenter);
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{job, store};
    use super::super::*;
    use serde_json::{json, Value};

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
}
