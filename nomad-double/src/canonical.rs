//! Job defaults and validation, mirroring what Nomad's `api.Job.Canonicalize`, the
//! server's conversion to `structs.Job`, and `Job.Validate` do for the fields tests use.
//!
//! Jobs are kept as JSON values so every field a client sends survives a round trip.

use serde_json::{json, Map, Value};

const SECOND: i64 = 1_000_000_000;

fn obj(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made it an object"),
    }
}

/// Sets `key` to `default` when it is absent or null (Go pointers that were nil).
fn fill(m: &mut Map<String, Value>, key: &str, default: Value) {
    match m.get(key) {
        None | Some(Value::Null) => {
            m.insert(key.to_string(), default);
        }
        _ => {}
    }
}

/// Like [`fill`] for nested structs: fills the missing members of an existing object.
fn fill_obj(m: &mut Map<String, Value>, key: &str, default: Value) {
    match m.get_mut(key) {
        Some(Value::Object(existing)) => {
            if let Value::Object(d) = default {
                for (k, v) in d {
                    fill(existing, &k, v);
                }
            }
        }
        _ => {
            m.insert(key.to_string(), default);
        }
    }
}

fn restart_default(job_type: &str) -> Value {
    if job_type == "batch" {
        json!({"Attempts": 3, "Delay": 15 * SECOND, "Interval": 86400 * SECOND, "Mode": "fail"})
    } else {
        json!({"Attempts": 2, "Delay": 15 * SECOND, "Interval": 1800 * SECOND, "Mode": "fail"})
    }
}

/// Fills defaults like `api.Job.Canonicalize` (the shape `/v1/jobs/parse` returns).
pub fn canonicalize(job: &mut Value) {
    let m = obj(job);
    let id = m
        .get("ID")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    for (k, d) in [
        ("Affinities", Value::Null),
        ("AllAtOnce", json!(false)),
        ("Constraints", Value::Null),
        ("ConsulNamespace", json!("")),
        ("ConsulToken", json!("")),
        ("CreateIndex", json!(0)),
        ("Datacenters", Value::Null),
        ("Dispatched", json!(false)),
        ("ID", json!("")),
        ("JobModifyIndex", json!(0)),
        ("Meta", Value::Null),
        ("Migrate", Value::Null),
        ("ModifyIndex", json!(0)),
        ("Multiregion", Value::Null),
        ("Name", json!(id)),
        ("Namespace", json!("default")),
        ("NomadTokenID", json!("")),
        ("ParameterizedJob", Value::Null),
        ("ParentID", json!("")),
        ("Payload", Value::Null),
        ("Periodic", Value::Null),
        ("Priority", json!(50)),
        ("Region", json!("global")),
        ("Reschedule", Value::Null),
        ("Spreads", Value::Null),
        ("Stable", json!(false)),
        ("Status", json!("")),
        ("StatusDescription", json!("")),
        ("Stop", json!(false)),
        ("SubmitTime", Value::Null),
        ("TaskGroups", Value::Null),
        ("Type", json!("service")),
        ("Update", Value::Null),
        ("VaultNamespace", json!("")),
        ("VaultToken", json!("")),
        ("Version", json!(0)),
    ] {
        fill(m, k, d);
    }
    if m.get("Name").and_then(Value::as_str) == Some("") {
        m.insert("Name".into(), json!(id));
    }
    if m.get("Namespace").and_then(Value::as_str) == Some("") {
        m.insert("Namespace".into(), json!("default"));
    }
    let job_type = m["Type"].as_str().unwrap_or("service").to_string();
    if let Some(Value::Array(groups)) = m.get_mut("TaskGroups") {
        for g in groups {
            canonicalize_group(g, &job_type);
        }
    }
}

fn canonicalize_group(g: &mut Value, job_type: &str) {
    let g = obj(g);
    for (k, d) in [
        ("Affinities", Value::Null),
        ("Constraints", Value::Null),
        ("Count", json!(1)),
        ("Meta", Value::Null),
        ("Migrate", Value::Null),
        ("Name", json!("")),
        ("Networks", Value::Null),
        ("ReschedulePolicy", Value::Null),
        ("Scaling", Value::Null),
        ("Services", Value::Null),
        ("ShutdownDelay", Value::Null),
        ("Spreads", Value::Null),
        ("StopAfterClientDisconnect", Value::Null),
        ("Tasks", Value::Null),
        ("Update", Value::Null),
        ("Volumes", Value::Null),
    ] {
        fill(g, k, d);
    }
    fill_obj(g, "Consul", json!({"Namespace": ""}));
    fill_obj(
        g,
        "EphemeralDisk",
        json!({"Migrate": false, "SizeMB": 300, "Sticky": false}),
    );
    fill_obj(g, "RestartPolicy", restart_default(job_type));
    if job_type == "service" {
        fill_obj(
            g,
            "ReschedulePolicy",
            json!({"Attempts": 0, "Delay": 30 * SECOND, "DelayFunction": "exponential",
                   "Interval": 0, "MaxDelay": 3600 * SECOND, "Unlimited": true}),
        );
    } else if job_type == "batch" {
        fill_obj(
            g,
            "ReschedulePolicy",
            json!({"Attempts": 1, "Delay": 5 * SECOND, "DelayFunction": "constant",
                   "Interval": 86400 * SECOND, "MaxDelay": 0, "Unlimited": false}),
        );
    }
    let restart = g["RestartPolicy"].clone();
    if let Some(Value::Array(tasks)) = g.get_mut("Tasks") {
        for t in tasks {
            canonicalize_task(t, &restart);
        }
    }
}

fn canonicalize_task(t: &mut Value, group_restart: &Value) {
    let t = obj(t);
    for (k, d) in [
        ("Affinities", Value::Null),
        ("Artifacts", Value::Null),
        ("Config", Value::Null),
        ("Constraints", Value::Null),
        ("DispatchPayload", Value::Null),
        ("Driver", json!("")),
        ("Env", Value::Null),
        ("KillSignal", json!("")),
        ("KillTimeout", json!(5 * SECOND)),
        ("Kind", json!("")),
        ("Leader", json!(false)),
        ("Lifecycle", Value::Null),
        ("Meta", Value::Null),
        ("Name", json!("")),
        ("ScalingPolicies", Value::Null),
        ("Services", Value::Null),
        ("ShutdownDelay", json!(0)),
        ("Templates", Value::Null),
        ("User", json!("")),
        ("Vault", Value::Null),
        ("VolumeMounts", Value::Null),
    ] {
        fill(t, k, d);
    }
    fill_obj(t, "LogConfig", json!({"MaxFileSizeMB": 10, "MaxFiles": 10}));
    fill_obj(
        t,
        "Resources",
        json!({"CPU": 100, "Cores": 0, "Devices": null, "DiskMB": null, "IOPS": null,
               "MemoryMB": 300, "MemoryMaxMB": null, "Networks": null}),
    );
    fill_obj(t, "RestartPolicy", group_restart.clone());
    if let Some(Value::Array(arts)) = t.get_mut("Artifacts") {
        for a in arts {
            let a = obj(a);
            fill(a, "GetterHeaders", Value::Null);
            fill(a, "GetterMode", json!("any"));
            fill(a, "GetterOptions", Value::Null);
            fill(a, "GetterSource", json!(""));
            fill(a, "RelativeDest", json!("local/"));
        }
    }
}

/// Defaults that depend on the Nomad version: since 1.5 an empty `Datacenters` means
/// `["*"]` (every datacenter); since 1.6 jobs carry a `NodePool`.
pub fn version_defaults(job: &mut Value, version: crate::version::Version) {
    let m = obj(job);
    if version.at_least(1, 5)
        && m.get("Datacenters")
            .and_then(Value::as_array)
            .is_none_or(|d| d.is_empty())
    {
        m.insert("Datacenters".into(), json!(["*"]));
    }
    if version.at_least(1, 6) {
        match m.get("NodePool") {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => {
                m.insert("NodePool".into(), json!("default"));
            }
        }
    }
}

/// Whether a job's datacenter list (globs with `*`) admits `dc`.
pub fn datacenter_matches(job: &Value, dc: &str) -> bool {
    job.get("Datacenters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|pat| glob_match(pat, dc))
}

fn glob_match(pat: &str, s: &str) -> bool {
    match pat.split_once('*') {
        None => pat == s,
        Some((head, tail)) => {
            s.len() >= head.len()
                && s.starts_with(head)
                && (0..=s.len() - head.len()).any(|i| {
                    s.is_char_boundary(head.len() + i) && glob_match(tail, &s[head.len() + i..])
                })
        }
    }
}

/// Converts a canonical API job to the shape the server stores and returns on reads
/// (`structs.Job`): job-level Migrate/Reschedule move into groups, nil resources become 0,
/// and the job gets a zero `Update` block.
pub fn to_stored(job: &Value) -> Value {
    let mut job = job.clone();
    let m = obj(&mut job);
    m.remove("Migrate");
    m.remove("Reschedule");
    fill(
        m,
        "Update",
        json!({"AutoPromote": false, "AutoRevert": false, "Canary": 0, "HealthCheck": "",
               "HealthyDeadline": 0, "MaxParallel": 0, "MinHealthyTime": 0,
               "ProgressDeadline": 0, "Stagger": 0}),
    );
    if let Some(Value::Array(groups)) = m.get_mut("TaskGroups") {
        for g in groups {
            if let Some(Value::Array(tasks)) = obj(g).get_mut("Tasks") {
                for t in tasks {
                    let t = obj(t);
                    fill(t, "CSIPluginConfig", Value::Null);
                    if let Some(r) = t.get_mut("Resources") {
                        let r = obj(r);
                        for k in ["DiskMB", "IOPS", "MemoryMaxMB"] {
                            fill(r, k, json!(0));
                        }
                    }
                }
            }
        }
    }
    job
}

/// Fields that change without the job's spec changing (Nomad's `SpecChanged` ignores them).
const NON_SPEC: &[&str] = &[
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "Version",
    "Status",
    "StatusDescription",
    "Stable",
    "SubmitTime",
    "NomadTokenID",
];

/// The job without its bookkeeping fields, for spec comparison.
pub fn spec_of(job: &Value) -> Value {
    let mut j = job.clone();
    if let Value::Object(m) = &mut j {
        for k in NON_SPEC {
            m.remove(*k);
        }
    }
    j
}

/// True when the two stored jobs differ in anything but bookkeeping.
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    spec_of(old) != spec_of(new)
}

/// Formats errors like hashicorp/go-multierror.
pub fn multierror(errs: &[String]) -> String {
    let mut s = if errs.len() == 1 {
        "1 error occurred:\n".to_string()
    } else {
        format!("{} errors occurred:\n", errs.len())
    };
    for e in errs {
        s.push_str("\t* ");
        s.push_str(e);
        s.push('\n');
    }
    s.push('\n');
    s
}

/// `Job.Validate` for the rules tests hit. Returns the multierror text on failure.
pub fn validate(job: &Value) -> Result<(), String> {
    let mut errs = Vec::new();
    let s = |k: &str| job.get(k).and_then(Value::as_str).unwrap_or("");
    if s("Region").is_empty() {
        errs.push("Missing job region".to_string());
    }
    let id = s("ID");
    if id.is_empty() {
        errs.push("Missing job ID".to_string());
    } else if id.contains(' ') {
        errs.push("Job ID contains a space".to_string());
    }
    if s("Name").is_empty() {
        errs.push("Missing job name".to_string());
    }
    match s("Type") {
        "" => errs.push("Missing job type".to_string()),
        "service" | "batch" | "system" | "sysbatch" => {}
        other => errs.push(format!("Invalid job type: {other:?}")),
    }
    let prio = job.get("Priority").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=100).contains(&prio) {
        errs.push("Job priority must be between [1, 100]".to_string());
    }
    let dcs = job.get("Datacenters").and_then(Value::as_array);
    if dcs.is_none_or(|d| d.is_empty()) {
        errs.push("Missing job datacenters".to_string());
    } else if dcs.is_some_and(|d| d.iter().any(|v| v.as_str().is_none_or(str::is_empty))) {
        errs.push("Job datacenter must be non-empty string".to_string());
    }
    let groups = job.get("TaskGroups").and_then(Value::as_array);
    match groups {
        None => errs.push("Missing job task groups".to_string()),
        Some(g) if g.is_empty() => errs.push("Missing job task groups".to_string()),
        Some(groups) => {
            let mut seen = Vec::new();
            for (i, g) in groups.iter().enumerate() {
                let name = g.get("Name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    errs.push(format!("Job task group {} missing name", i + 1));
                    continue;
                }
                if seen.contains(&name) {
                    errs.push(format!("Job task group {} redefines '{name}'", i + 1));
                }
                seen.push(name);
                if let Err(inner) = validate_group(g) {
                    errs.push(format!(
                        "Task group {name} validation failed: {}",
                        multierror(&inner)
                    ));
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(multierror(&errs))
    }
}

fn validate_group(g: &Value) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    if g.get("Count").and_then(Value::as_i64).unwrap_or(0) < 0 {
        errs.push("Task group count can't be negative".to_string());
    }
    match g.get("Tasks").and_then(Value::as_array) {
        Some(tasks) if !tasks.is_empty() => {
            for (i, t) in tasks.iter().enumerate() {
                let name = t.get("Name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    errs.push(format!("Task {} missing name", i + 1));
                    continue;
                }
                let mut terrs = Vec::new();
                if t.get("Driver")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    terrs.push("Missing task driver".to_string());
                }
                let r = &t["Resources"];
                if r.get("CPU").and_then(Value::as_i64).unwrap_or(0) < 1 {
                    terrs.push("minimum CPU value is 1; got 0".to_string());
                }
                if r.get("MemoryMB").and_then(Value::as_i64).unwrap_or(0) < 10 {
                    terrs.push(format!(
                        "minimum MemoryMB value is 10; got {}",
                        r.get("MemoryMB").and_then(Value::as_i64).unwrap_or(0)
                    ));
                }
                if !terrs.is_empty() {
                    errs.push(format!(
                        "Task {name} validation failed: {}",
                        multierror(&terrs)
                    ));
                }
            }
        }
        _ => errs.push("Missing tasks for task group".to_string()),
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Value {
        json!({"ID": "hello", "Type": "system", "Datacenters": ["dc1"],
               "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec",
                 "Config": {"command": "/bin/sh"}}]}]})
    }

    #[test]
    fn canonical_defaults_match_nomad() {
        let mut j = minimal();
        canonicalize(&mut j);
        assert_eq!(j["Name"], "hello");
        assert_eq!(j["Priority"], 50);
        assert_eq!(j["Region"], "global");
        assert_eq!(j["Namespace"], "default");
        let t = &j["TaskGroups"][0]["Tasks"][0];
        assert_eq!(t["Resources"]["CPU"], 100);
        assert_eq!(t["Resources"]["MemoryMB"], 300);
        assert_eq!(t["RestartPolicy"]["Attempts"], 2);
        assert_eq!(t["KillTimeout"], 5_000_000_000_i64);
        assert_eq!(j["TaskGroups"][0]["EphemeralDisk"]["SizeMB"], 300);
        assert!(validate(&j).is_ok());
    }

    #[test]
    fn missing_datacenters_uses_multierror_text() {
        let mut j = minimal();
        j["Datacenters"] = json!([]);
        canonicalize(&mut j);
        assert_eq!(
            validate(&j).unwrap_err(),
            "1 error occurred:\n\t* Missing job datacenters\n\n"
        );
    }

    #[test]
    fn newer_versions_default_datacenters_and_node_pool() {
        use crate::version::Version;
        let mut j = minimal();
        j["Datacenters"] = json!([]);
        version_defaults(&mut j, Version(1, 1, 2));
        assert_eq!(j["Datacenters"], json!([]));
        assert!(j.get("NodePool").is_none());
        version_defaults(&mut j, Version(1, 7, 7));
        assert_eq!(j["Datacenters"], json!(["*"]));
        assert_eq!(j["NodePool"], "default");
        assert!(datacenter_matches(&j, "edge"));
        j["Datacenters"] = json!(["eu-*", "dc1"]);
        assert!(datacenter_matches(&j, "eu-west") && datacenter_matches(&j, "dc1"));
        assert!(!datacenter_matches(&j, "us-east"));
    }

    #[test]
    fn spec_change_ignores_bookkeeping() {
        let mut a = minimal();
        canonicalize(&mut a);
        let a = to_stored(&a);
        let mut b = a.clone();
        b["JobModifyIndex"] = json!(99);
        b["Status"] = json!("running");
        b["SubmitTime"] = json!(12345);
        assert!(!spec_changed(&a, &b));
        b["Meta"] = json!({"k": "v"});
        assert!(spec_changed(&a, &b));
    }
}
