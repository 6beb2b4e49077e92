//! Checks on parsed jobs before anything is written: NomadOS runs system jobs on the
//! `exec` / `raw_exec` drivers, and every rendered job ID is unique across the set.

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::{ObjectKey, Source};

/// Drivers every job may use; others need the declared job's `_allow-drivers`.
pub const DEFAULT_DRIVERS: [&str; 2] = ["exec", "raw_exec"];

/// Problems with one parsed job; empty when it may be applied.
pub fn check_job(job: &Value, allow_drivers: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    if !job.is_object() {
        return vec!["the job is not a JSON object".into()];
    }
    let id = job["ID"].as_str().unwrap_or_default();
    if id.is_empty() {
        problems.push("the job has no ID".into());
    }
    match job["Type"].as_str() {
        Some("system") => {}
        Some(other) => problems.push(format!(
            "job `{id}` has type `{other}`; NomadOS applies only `system` jobs"
        )),
        None => problems.push(format!(
            "job `{id}` has no type; NomadOS applies only `system` jobs"
        )),
    }
    for (group, task, driver) in drivers(job) {
        let allowed = DEFAULT_DRIVERS.contains(&driver.as_str())
            || allow_drivers.iter().any(|d| d == &driver);
        if !allowed {
            problems.push(format!(
                "job `{id}`, group `{group}`, task `{task}` uses driver `{driver}`; \
                 only exec and raw_exec are allowed unless the declared job lists it in `_allow-drivers`"
            ));
        }
    }
    problems
}

fn drivers(job: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for group in job["TaskGroups"].as_array().into_iter().flatten() {
        let g = group["Name"].as_str().unwrap_or("?");
        for task in group["Tasks"].as_array().into_iter().flatten() {
            let t = task["Name"].as_str().unwrap_or("?");
            let d = task["Driver"].as_str().unwrap_or("");
            out.push((g.to_string(), t.to_string(), d.to_string()));
        }
    }
    out
}

/// Finds rendered job IDs produced more than once; each clash names both sources.
pub fn find_clashes<'a>(
    objects: impl IntoIterator<Item = (&'a ObjectKey, &'a Source)>,
) -> Vec<(ObjectKey, Source, Source)> {
    let mut first: BTreeMap<&ObjectKey, &Source> = BTreeMap::new();
    let mut clashes = Vec::new();
    for (key, source) in objects {
        match first.get(key) {
            Some(prev) => clashes.push((key.clone(), (*prev).clone(), source.clone())),
            None => {
                first.insert(key, source);
            }
        }
    }
    clashes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packs::model::JobKey;
    use serde_json::json;

    fn job(kind: &str, driver: &str) -> Value {
        json!({"ID": "web", "Type": kind, "TaskGroups": [
            {"Name": "g", "Tasks": [{"Name": "t", "Driver": driver}]}
        ]})
    }

    #[test]
    fn system_exec_jobs_pass() {
        assert!(check_job(&job("system", "exec"), &[]).is_empty());
        assert!(check_job(&job("system", "raw_exec"), &[]).is_empty());
    }

    #[test]
    fn other_types_are_refused() {
        let p = check_job(&job("service", "exec"), &[]);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("type `service`"), "{p:?}");
    }

    #[test]
    fn other_drivers_need_an_explicit_opt_out() {
        let p = check_job(&job("system", "docker"), &[]);
        assert!(p[0].contains("task `t` uses driver `docker`"), "{p:?}");
        assert!(check_job(&job("system", "docker"), &["docker".into()]).is_empty());
    }

    #[test]
    fn missing_id_is_reported() {
        let p = check_job(&json!({"Type": "system"}), &[]);
        assert!(p.iter().any(|m| m.contains("no ID")), "{p:?}");
    }

    #[test]
    fn clashes_name_both_sources() {
        let k = ObjectKey::Job(JobKey {
            namespace: "default".into(),
            id: "web".into(),
        });
        let a = Source {
            pack: "a".into(),
            job: "x".into(),
            file: "jobs/web.hcl".into(),
        };
        let b = Source {
            pack: "b".into(),
            job: "y".into(),
            file: "jobs/web.hcl".into(),
        };
        let other = ObjectKey::Job(JobKey {
            namespace: "prod".into(),
            id: "web".into(),
        });
        // A policy and a variable of the same name are other things than the job.
        let policy = ObjectKey::Policy("web".into());
        let variable = ObjectKey::Variable {
            namespace: "default".into(),
            path: "web".into(),
        };
        let clashes = find_clashes([
            (&k, &a),
            (&other, &a),
            (&policy, &a),
            (&variable, &a),
            (&k, &b),
            (&policy, &b),
        ]);
        assert_eq!(clashes, vec![(k, a.clone(), b.clone()), (policy, a, b)]);
    }
}
