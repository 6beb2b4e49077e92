//! A JSON job as Nomad will decode it. Nomad's decoder matches struct field names without
//! regard to case and takes the last of several matches, so `{"Type": "system", "type":
//! "service"}` runs a service job, and a lone `taskgroups` is the task groups. The checks
//! (system jobs, allowed drivers) must look at what Nomad will run: keys that differ only
//! in case are refused, and the keys the checks and the ownership stamp read are given
//! their canonical spelling. Maps (`Meta`, a task's `Config`, `Env`) keep their keys: there
//! case is data.

use serde_json::{Map, Value};

/// Struct fields read by the checks, the job key and the ownership stamp, per level.
const JOB_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Namespace",
    "Region",
    "Type",
    "Datacenters",
    "TaskGroups",
    "Meta",
    "ParentID",
    "Periodic",
    "ParameterizedJob",
];
const GROUP_FIELDS: &[&str] = &["Name", "Count", "Tasks"];
const TASK_FIELDS: &[&str] = &["Name", "Driver", "Config"];

/// Unwraps `{"Job": {...}}` (any case), refuses case-twin keys on the job, its groups and
/// their tasks, and spells the fields above canonically. Errors name where.
pub fn canonicalize(mut v: Value) -> Result<Value, Vec<String>> {
    if let Some(map) = v.as_object_mut() {
        if map.len() == 1 {
            if let Some(key) = map.keys().find(|k| k.eq_ignore_ascii_case("Job")).cloned() {
                v = map.remove(&key).unwrap_or(Value::Null);
            }
        }
    }
    let mut problems = Vec::new();
    normalize(&mut v, "the job", JOB_FIELDS, &mut problems);
    if let Some(groups) = v.get_mut("TaskGroups").and_then(Value::as_array_mut) {
        for (i, group) in groups.iter_mut().enumerate() {
            let at = format!("TaskGroups[{i}]");
            normalize(group, &at, GROUP_FIELDS, &mut problems);
            if let Some(tasks) = group.get_mut("Tasks").and_then(Value::as_array_mut) {
                for (j, task) in tasks.iter_mut().enumerate() {
                    normalize(
                        task,
                        &format!("{at}.Tasks[{j}]"),
                        TASK_FIELDS,
                        &mut problems,
                    );
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(v)
    } else {
        Err(problems)
    }
}

fn normalize(v: &mut Value, at: &str, fields: &[&str], problems: &mut Vec<String>) {
    let Some(map) = v.as_object_mut() else {
        return;
    };
    let before = problems.len();
    let keys: Vec<&String> = map.keys().collect();
    for (i, a) in keys.iter().enumerate() {
        if let Some(b) = keys[i + 1..].iter().find(|b| b.eq_ignore_ascii_case(a)) {
            problems.push(format!(
                "{at} has both `{a}` and `{b}`: Nomad reads keys without regard to case and \
                 takes the last, so write each key once"
            ));
        }
    }
    if problems.len() == before {
        respell(map, fields);
    }
}

/// Gives each of `fields` its canonical spelling (there are no case twins any more).
fn respell(map: &mut Map<String, Value>, fields: &[&str]) {
    for field in fields {
        if map.contains_key(*field) {
            continue;
        }
        let found = map.keys().find(|k| k.eq_ignore_ascii_case(field)).cloned();
        if let Some(value) = found.and_then(|k| map.remove(&k)) {
            map.insert((*field).to_string(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn case_twins_are_refused_where_nomad_would_fold_them() {
        let e = canonicalize(json!({"ID": "a", "Type": "system", "type": "service"})).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("the job has both `Type` and `type`"),
            "{e:?}"
        );
        let e = canonicalize(json!({"ID": "a", "TaskGroups": [{"Name": "g", "Tasks": [
            {"Name": "t", "Driver": "exec", "driver": "docker"}]}]}))
        .unwrap_err();
        assert!(
            e[0].starts_with("TaskGroups[0].Tasks[0] has both `Driver` and `driver`"),
            "{e:?}"
        );
    }

    #[test]
    fn fields_get_their_canonical_spelling_and_maps_keep_theirs() {
        let v = canonicalize(json!({"job": {"id": "a", "TYPE": "system",
            "taskgroups": [{"name": "g", "tasks": [{"name": "t", "driver": "docker",
                "config": {"image": "x", "Image": "y"}}]}],
            "meta": {"k": "1", "K": "2"}}}))
        .unwrap();
        assert_eq!(v["ID"], "a");
        assert_eq!(v["Type"], "system");
        assert_eq!(v["TaskGroups"][0]["Tasks"][0]["Driver"], "docker");
        assert_eq!(v["TaskGroups"][0]["Tasks"][0]["Config"]["Image"], "y");
        assert_eq!(v["Meta"], json!({"k": "1", "K": "2"}));
        assert!(v.get("taskgroups").is_none() && v.get("type").is_none());
    }
}
