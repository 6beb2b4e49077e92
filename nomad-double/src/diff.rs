//! Job diffs for `POST /v1/job/:id/plan` with `Diff: true`.
//!
//! Follows the shape of Nomad's `JobDiff`: primitive fields and `Meta[key]` entries are listed
//! only when they changed; nested objects (Config, Resources, ...) are flattened like Go's
//! flatmap (`args[0]`, `a.b`) and, once an object changed, list every field with its Type
//! ("None" for unchanged), as Nomad's contextual diff does.

use crate::canonical::spec_of;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Added,
    Deleted,
    Edited,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::None => "None",
            Change::Added => "Added",
            Change::Deleted => "Deleted",
            Change::Edited => "Edited",
        }
    }
}

/// Job-level fields that are bookkeeping or shown elsewhere.
const JOB_SKIP: &[&str] = &["ID", "TaskGroups", "Meta", "Update", "Namespace"];
const GROUP_SKIP: &[&str] = &["Name", "Tasks", "Meta"];
const TASK_SKIP: &[&str] = &["Name", "Meta", "Env"];

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Null => {}
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        Value::Bool(b) => {
            out.insert(prefix.to_string(), b.to_string());
        }
        Value::Number(n) => {
            out.insert(prefix.to_string(), n.to_string());
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, out);
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, item, out);
            }
        }
    }
}

fn field(name: &str, old: &str, new: &str, t: Change) -> Value {
    json!({"Annotations": null, "Name": name, "New": new, "Old": old, "Type": t.as_str()})
}

fn field_diffs(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    contextual: bool,
) -> Vec<Value> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        match (old.get(k), new.get(k)) {
            (Some(o), Some(n)) if o == n => {
                if contextual {
                    out.push(field(k, o, n, Change::None));
                }
            }
            (Some(o), Some(n)) => out.push(field(k, o, n, Change::Edited)),
            (None, Some(n)) => out.push(field(k, "", n, Change::Added)),
            (Some(o), None) => out.push(field(k, o, "", Change::Deleted)),
            (None, None) => {}
        }
    }
    out
}

fn primitives(v: Option<&Value>, skip: &[&str], maps: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(Value::Object(m)) = v else {
        return out;
    };
    for (k, val) in m {
        if skip.contains(&k.as_str()) && !maps.contains(&k.as_str()) {
            continue;
        }
        if maps.contains(&k.as_str()) {
            if let Value::Object(entries) = val {
                for (mk, mv) in entries {
                    let mut one = BTreeMap::new();
                    flatten("", mv, &mut one);
                    if let Some(s) = one.get("") {
                        out.insert(format!("{k}[{mk}]"), s.clone());
                    }
                }
            }
            continue;
        }
        match val {
            Value::String(_) | Value::Bool(_) | Value::Number(_) => {
                flatten(k, val, &mut out);
            }
            _ => {}
        }
    }
    out
}

fn objects(old: Option<&Value>, new: Option<&Value>, skip: &[&str]) -> Vec<Value> {
    let empty = Map::new();
    let om = old.and_then(Value::as_object).unwrap_or(&empty);
    let nm = new.and_then(Value::as_object).unwrap_or(&empty);
    let keys: BTreeSet<&String> = om.keys().chain(nm.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let o = om.get(k).filter(|v| is_container(v));
        let n = nm.get(k).filter(|v| is_container(v));
        if o.is_none() && n.is_none() {
            continue;
        }
        if o == n {
            continue;
        }
        let (mut of, mut nf) = (BTreeMap::new(), BTreeMap::new());
        // Lists of plain strings (Datacenters) diff as sets named after the list.
        let is_string_list = |v: Option<&Value>| {
            v.is_none_or(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
        };
        let fields = if is_string_list(o) && is_string_list(n) {
            let set = |v: Option<&Value>| -> BTreeSet<String> {
                v.and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (os, ns) = (set(o), set(n));
            let mut f = Vec::new();
            for s in os.union(&ns) {
                let t = match (os.contains(s), ns.contains(s)) {
                    (true, true) => Change::None,
                    (false, true) => Change::Added,
                    _ => Change::Deleted,
                };
                let (old_s, new_s) = match t {
                    Change::Added => ("", s.as_str()),
                    Change::Deleted => (s.as_str(), ""),
                    _ => (s.as_str(), s.as_str()),
                };
                f.push(field(k, old_s, new_s, t));
            }
            f
        } else {
            if let Some(o) = o {
                flatten("", o, &mut of);
            }
            if let Some(n) = n {
                flatten("", n, &mut nf);
            }
            field_diffs(&of, &nf, true)
        };
        let t = match (o, n) {
            (None, Some(_)) => Change::Added,
            (Some(_), None) => Change::Deleted,
            _ => Change::Edited,
        };
        out.push(
            json!({"Fields": nonempty(fields), "Name": k, "Objects": null, "Type": t.as_str()}),
        );
    }
    out
}

fn is_container(v: &Value) -> bool {
    v.is_object() || v.is_array()
}

fn nonempty(v: Vec<Value>) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        Value::Array(v)
    }
}

fn by_name(v: Option<&Value>, key: &str) -> BTreeMap<String, Value> {
    v.and_then(|v| v.get(key))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    (
                        i.get("Name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        i.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn kind(old: Option<&Value>, new: Option<&Value>, changed: bool) -> Change {
    match (old, new) {
        (None, Some(_)) => Change::Added,
        (Some(_), None) => Change::Deleted,
        _ if changed => Change::Edited,
        _ => Change::None,
    }
}

fn task_diff(name: &str, old: Option<&Value>, new: Option<&Value>) -> Value {
    let fields = field_diffs(
        &primitives(old, TASK_SKIP, &["Meta", "Env"]),
        &primitives(new, TASK_SKIP, &["Meta", "Env"]),
        false,
    );
    let objs = objects(old, new, TASK_SKIP);
    let t = kind(old, new, !fields.is_empty() || !objs.is_empty());
    let annotations = if t == Change::Edited {
        json!(["forces create/destroy update"])
    } else {
        Value::Null
    };
    json!({"Annotations": annotations, "Fields": nonempty(fields), "Name": name,
           "Objects": nonempty(objs), "Type": t.as_str()})
}

fn group_diff(name: &str, old: Option<&Value>, new: Option<&Value>) -> Value {
    let fields = field_diffs(
        &primitives(old, GROUP_SKIP, &["Meta"]),
        &primitives(new, GROUP_SKIP, &["Meta"]),
        false,
    );
    let objs = objects(old, new, GROUP_SKIP);
    let (ot, nt) = (by_name(old, "Tasks"), by_name(new, "Tasks"));
    let names: BTreeSet<&String> = ot.keys().chain(nt.keys()).collect();
    let tasks: Vec<Value> = names
        .into_iter()
        .map(|n| task_diff(n, ot.get(n), nt.get(n)))
        .collect();
    let tasks_changed = tasks.iter().any(|t| t["Type"] != "None");
    let t = kind(
        old,
        new,
        !fields.is_empty() || !objs.is_empty() || tasks_changed,
    );
    json!({"Fields": nonempty(fields), "Name": name, "Objects": nonempty(objs),
           "Tasks": nonempty(tasks), "Type": t.as_str()})
}

/// Diffs two stored-shape jobs (`old` is None for a new job).
pub fn job_diff(old: Option<&Value>, new: &Value) -> Value {
    let old_spec = old.map(spec_of);
    let new_spec = spec_of(new);
    let old = old_spec.as_ref();
    let new = Some(&new_spec);
    let fields = field_diffs(
        &primitives(old, JOB_SKIP, &["Meta"]),
        &primitives(new, JOB_SKIP, &["Meta"]),
        false,
    );
    let objs = objects(old, new, JOB_SKIP);
    let (og, ng) = (by_name(old, "TaskGroups"), by_name(new, "TaskGroups"));
    let names: BTreeSet<&String> = og.keys().chain(ng.keys()).collect();
    let groups: Vec<Value> = names
        .into_iter()
        .map(|n| group_diff(n, og.get(n), ng.get(n)))
        .collect();
    let groups_changed = groups.iter().any(|g| g["Type"] != "None");
    let t = kind(
        old,
        new,
        !fields.is_empty() || !objs.is_empty() || groups_changed,
    );
    json!({"Fields": nonempty(fields), "ID": new_spec.get("ID").cloned().unwrap_or(Value::Null),
           "Objects": nonempty(objs), "TaskGroups": nonempty(groups), "Type": t.as_str()})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{canonicalize, to_stored};

    fn job(args: &[&str], meta: Value) -> Value {
        let mut j = json!({"ID": "hello", "Type": "system", "Datacenters": ["dc1"], "Meta": meta,
            "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec",
              "Config": {"command": "/bin/sh", "args": args}}]}]});
        canonicalize(&mut j);
        to_stored(&j)
    }

    #[test]
    fn unchanged_job_has_none_everywhere() {
        let a = job(&["-c", "x"], Value::Null);
        let d = job_diff(Some(&a), &a);
        assert_eq!(d["Type"], "None");
        assert_eq!(d["Fields"], Value::Null);
        assert_eq!(d["TaskGroups"][0]["Type"], "None");
        assert_eq!(d["TaskGroups"][0]["Tasks"][0]["Type"], "None");
        assert_eq!(d["TaskGroups"][0]["Tasks"][0]["Annotations"], Value::Null);
    }

    #[test]
    fn reproduces_the_recorded_changed_plan() {
        let a = job(&["-c", "echo hello-from-raw-exec; sleep 3600"], Value::Null);
        let b = job(
            &["-c", "echo changed; sleep 3600"],
            json!({"nomados.hash": "abc", "nomados.pack": "demo"}),
        );
        let d = job_diff(Some(&a), &b);
        assert_eq!(d["Type"], "Edited");
        assert_eq!(
            d["Fields"],
            json!([
                {"Annotations": null, "Name": "Meta[nomados.hash]", "New": "abc", "Old": "", "Type": "Added"},
                {"Annotations": null, "Name": "Meta[nomados.pack]", "New": "demo", "Old": "", "Type": "Added"}
            ])
        );
        let t = &d["TaskGroups"][0]["Tasks"][0];
        assert_eq!(t["Type"], "Edited");
        assert_eq!(t["Annotations"], json!(["forces create/destroy update"]));
        assert_eq!(t["Fields"], Value::Null);
        let cfg = &t["Objects"][0];
        assert_eq!(cfg["Name"], "Config");
        let names: Vec<&str> = cfg["Fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["args[0]", "args[1]", "command"]);
        assert_eq!(cfg["Fields"][1]["Type"], "Edited");
        assert_eq!(cfg["Fields"][0]["Type"], "None");
    }

    #[test]
    fn new_job_is_added_and_datacenters_diff_as_set() {
        let a = job(&["x"], Value::Null);
        let d = job_diff(None, &a);
        assert_eq!(d["Type"], "Added");
        assert_eq!(d["TaskGroups"][0]["Type"], "Added");
        let mut b = a.clone();
        b["Datacenters"] = json!(["dc1", "dc2"]);
        let d = job_diff(Some(&a), &b);
        let dc = &d["Objects"][0];
        assert_eq!(dc["Name"], "Datacenters");
        assert_eq!(dc["Fields"][1]["Type"], "Added");
        assert_eq!(dc["Fields"][1]["New"], "dc2");
    }
}
