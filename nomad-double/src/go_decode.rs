//! JSON keys as Nomad's Go decoder reads them. `encoding/json` matches an object key to a
//! struct field exactly or, failing that, without regard to case, and when several keys
//! land on one field the last one wins: `{"Type": "system", "type": "service"}` is a
//! service job. Maps (`Meta`, a task's `Config`, `Env`) keep their keys, case is data there.
//!
//! The double folds the structs a job request is made of (the request, the job, its task
//! groups and tasks) so that what it stores is what Nomad would run; a client whose checks
//! read a different key than Nomad does is then caught by tests against the double.
//! Keys that match no field are kept as sent (Nomad drops them; the double does not need to).

use serde_json::{Map, Value};

/// `api.JobRegisterRequest` / `api.JobPlanRequest` fields.
const REQUEST_FIELDS: &[&str] = &[
    "Job",
    "EnforceIndex",
    "JobModifyIndex",
    "PolicyOverride",
    "PreserveCounts",
    "EvalPriority",
    "Diff",
    "Submission",
    "Namespace",
    "Region",
];

/// `api.Job` fields.
const JOB_FIELDS: &[&str] = &[
    "Region",
    "Namespace",
    "ID",
    "Name",
    "Type",
    "Priority",
    "AllAtOnce",
    "Datacenters",
    "NodePool",
    "Constraints",
    "Affinities",
    "TaskGroups",
    "Update",
    "Multiregion",
    "Spreads",
    "Periodic",
    "ParameterizedJob",
    "Reschedule",
    "Migrate",
    "Meta",
    "ConsulToken",
    "VaultToken",
    "UI",
    "Stop",
    "ParentID",
    "Dispatched",
    "DispatchIdempotencyToken",
    "Payload",
    "ConsulNamespace",
    "VaultNamespace",
    "NomadTokenID",
    "Status",
    "StatusDescription",
    "Stable",
    "Version",
    "SubmitTime",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
];

/// `api.TaskGroup` fields.
const GROUP_FIELDS: &[&str] = &[
    "Name",
    "Count",
    "Constraints",
    "Affinities",
    "Tasks",
    "Spreads",
    "Volumes",
    "RestartPolicy",
    "ReschedulePolicy",
    "EphemeralDisk",
    "Update",
    "Migrate",
    "Networks",
    "Meta",
    "Services",
    "ShutdownDelay",
    "StopAfterClientDisconnect",
    "MaxClientDisconnect",
    "Scaling",
    "Consul",
    "PreventRescheduleOnLost",
    "Disconnect",
];

/// `api.Task` fields.
const TASK_FIELDS: &[&str] = &[
    "Name",
    "Driver",
    "User",
    "Lifecycle",
    "Config",
    "Constraints",
    "Affinities",
    "Env",
    "Services",
    "Resources",
    "RestartPolicy",
    "Meta",
    "KillTimeout",
    "LogConfig",
    "Artifacts",
    "Vault",
    "Templates",
    "DispatchPayload",
    "VolumeMounts",
    "Leader",
    "ShutdownDelay",
    "KillSignal",
    "Kind",
    "Identity",
    "Identities",
    "Actions",
];

/// A job register or plan request body as Nomad decodes it.
pub fn job_request(body: Value) -> Value {
    let mut body = fold(body, REQUEST_FIELDS);
    if let Some(job) = body.get_mut("Job") {
        *job = self::job(std::mem::take(job));
    }
    body
}

/// A job (`api.Job`) as Nomad decodes it: the job, its groups and their tasks folded.
pub fn job(job: Value) -> Value {
    let mut job = fold(job, JOB_FIELDS);
    for group in items(&mut job, "TaskGroups") {
        *group = fold(std::mem::take(group), GROUP_FIELDS);
        for task in items(group, "Tasks") {
            *task = fold(std::mem::take(task), TASK_FIELDS);
        }
    }
    job
}

fn items<'a>(v: &'a mut Value, key: &str) -> std::slice::IterMut<'a, Value> {
    match v.get_mut(key) {
        Some(Value::Array(a)) => a.iter_mut(),
        _ => [].iter_mut(),
    }
}

/// Renames each key of an object to the field it decodes into (exact match first, then
/// without regard to case), the last key for a field winning. Other values pass through.
fn fold(v: Value, fields: &[&str]) -> Value {
    let Value::Object(map) = v else {
        return v;
    };
    let mut out = Map::new();
    for (key, value) in map {
        let field = fields
            .iter()
            .find(|f| **f == key)
            .or_else(|| fields.iter().find(|f| f.eq_ignore_ascii_case(&key)));
        match field {
            Some(f) => {
                // Remove first so that the winner also takes the later position.
                out.remove(*f);
                out.insert((*f).to_string(), value);
            }
            None => {
                out.insert(key, value);
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_last_key_for_a_field_wins_whatever_its_case() {
        let body = json_request(
            r#"{"job": {"ID": "a", "Type": "system", "type": "service",
                "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "exec"}]}],
                "taskgroups": [{"name": "g", "tasks": [{"name": "t", "Driver": "exec", "driver": "docker",
                    "config": {"image": "x", "Image": "y"}}]}],
                "Meta": {"k": "1", "K": "2"}}, "enforceindex": true}"#,
        );
        let job = &body["Job"];
        assert_eq!(job["Type"], "service");
        assert_eq!(job["TaskGroups"][0]["Tasks"][0]["Driver"], "docker");
        assert_eq!(
            job["TaskGroups"][0]["Tasks"][0]["Config"],
            json!({"image": "x", "Image": "y"})
        );
        assert_eq!(job["Meta"], json!({"k": "1", "K": "2"}));
        assert_eq!(body["EnforceIndex"], true);
        assert!(job.get("type").is_none() && job.get("taskgroups").is_none());
    }

    fn json_request(text: &str) -> Value {
        job_request(serde_json::from_str(text).unwrap())
    }
}
