//! Replays the exchanges recorded from a real Nomad v1.1.2 agent against the double, started
//! as a real process, and checks status, Content-Type, headers and body shape (every recorded
//! key at every level, same JSON types), plus exact values where they are deterministic.

mod common;

use common::Agent;
use serde_json::Value;
use std::path::PathBuf;

/// Recording order from recordings/README.md (state carries over). The two agent
/// reads that are not in the README's sequence come first; they do not depend on state.
const ORDER: &[&str] = &[
    "status-leader",
    "nodes",
    "jobs-parse-ok",
    "jobs-parse-syntax-error",
    "jobs-register-ok",
    "jobs-register-invalid",
    "jobs-list",
    "jobs-list-prefix",
    "job-read",
    "job-read-missing",
    "job-plan-unchanged",
    "job-plan-changed",
    "jobs-register-changed",
    "job-allocations",
    "job-versions",
    "acl-policy-put-acl-disabled",
    "agent-health",
    "job-deregister-purge",
    "job-read-after-purge",
    "agent-self",
];

/// The recordings kept in this repository (`nomad-double/recordings/<set>`);
/// `NOMAD_API_RECORDINGS` may point at another directory holding the same sets.
fn recordings_dir(set: &str) -> PathBuf {
    let root = match std::env::var_os("NOMAD_API_RECORDINGS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recordings"),
    };
    let dir = root.join(set);
    assert!(
        dir.is_dir(),
        "recorded Nomad exchanges not found in {} (set NOMAD_API_RECORDINGS to the directory holding {set}/)",
        dir.display()
    );
    dir
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Maps whose keys are data, not schema: only these keys are required of the double.
fn open_map_keys(path: &str) -> Option<&'static [&'static str]> {
    // The recording host had docker, java, qemu and mock drivers; the double fakes exec ones.
    path.ends_with(".Drivers")
        .then_some(&["exec", "raw_exec"][..])
}

/// Every key of `want` exists in `got` with the same JSON type. A recorded null accepts any
/// value (Nomad emits null for unset pointers that are set in other states).
fn same_shape(want: &Value, got: &Value, path: &str, errs: &mut Vec<String>) {
    if want.is_null() {
        return;
    }
    if kind(want) != kind(got) {
        errs.push(format!(
            "{path}: recorded {}, double sent {} ({got})",
            kind(want),
            kind(got)
        ));
        return;
    }
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let required: Vec<&String> = match open_map_keys(path) {
                Some(keys) => w.keys().filter(|k| keys.contains(&k.as_str())).collect(),
                None => w.keys().collect(),
            };
            for k in required {
                match g.get(k) {
                    None => errs.push(format!("{path}.{k}: missing")),
                    Some(gv) => same_shape(&w[k], gv, &format!("{path}.{k}"), errs),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if !w.is_empty() && g.is_empty() {
                errs.push(format!(
                    "{path}: recorded {} elements, double sent none",
                    w.len()
                ));
                return;
            }
            for (i, wv) in w.iter().enumerate() {
                let gv = &g[i.min(g.len() - 1)];
                same_shape(wv, gv, &format!("{path}[{i}]"), errs);
            }
        }
        _ => {}
    }
}

fn header<'a>(resp: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    resp.get(name).and_then(|v| v.to_str().ok())
}

/// Values that are deterministic in a replay and must match the recording exactly.
fn check_values(name: &str, want: &Value, got: &Value, errs: &mut Vec<String>) {
    let mut eq = |what: &str, w: &Value, g: &Value| {
        if w != g {
            errs.push(format!("{what}: recorded {w}, double sent {g}"));
        }
    };
    match name {
        "jobs-parse-ok" => eq("parsed job", want, got),
        "job-plan-unchanged" | "job-plan-changed" => {
            eq("Diff", &want["Diff"], &got["Diff"]);
            eq("Annotations", &want["Annotations"], &got["Annotations"]);
        }
        "jobs-list" | "jobs-list-prefix" => {
            for k in [
                "ID",
                "Name",
                "Type",
                "Status",
                "Priority",
                "Datacenters",
                "Stop",
            ] {
                eq(k, &want[0][k], &got[0][k]);
            }
            eq(
                "list length",
                &Value::from(want.as_array().map_or(0, Vec::len)),
                &Value::from(got.as_array().map_or(0, Vec::len)),
            );
        }
        "job-read" => {
            let mut w = want.clone();
            let mut g = got.clone();
            for k in ["CreateIndex", "ModifyIndex", "JobModifyIndex", "SubmitTime"] {
                w[k] = Value::Null;
                g[k] = Value::Null;
            }
            eq("job (indexes and time aside)", &w, &g);
        }
        "job-versions" => {
            let versions = |v: &Value| -> Vec<Value> {
                v["Versions"]
                    .as_array()
                    .map_or(vec![], |a| a.iter().map(|j| j["Version"].clone()).collect())
            };
            eq(
                "Versions[].Version",
                &Value::from(versions(want)),
                &Value::from(versions(got)),
            );
            eq(
                "Versions[0].Meta",
                &want["Versions"][0]["Meta"],
                &got["Versions"][0]["Meta"],
            );
        }
        "job-allocations" => {
            let fields = |v: &Value| -> Vec<Value> {
                v.as_array().map_or(vec![], |a| {
                    a.iter()
                        .map(|x| {
                            serde_json::json!([
                                x["JobVersion"],
                                x["DesiredStatus"],
                                x["DesiredDescription"],
                                x["Name"]
                            ])
                        })
                        .collect()
                })
            };
            eq(
                "allocations (version, desired status, name)",
                &Value::from(fields(want)),
                &Value::from(fields(got)),
            );
        }
        "agent-health" | "status-leader" => eq("body", want, got),
        "agent-self" => {
            eq(
                "config.Version.Version",
                &want["config"]["Version"]["Version"],
                &got["config"]["Version"]["Version"],
            );
            eq(
                "config.ACL.Enabled",
                &want["config"]["ACL"]["Enabled"],
                &got["config"]["ACL"]["Enabled"],
            );
            eq(
                "config.Datacenter",
                &want["config"]["Datacenter"],
                &got["config"]["Datacenter"],
            );
            eq(
                "config.Region",
                &want["config"]["Region"],
                &got["config"]["Region"],
            );
        }
        _ => {}
    }
}

#[test]
fn replays_recorded_nomad_1_1_2_exchanges() {
    let dir = recordings_dir("v1.1.2");
    // Skip nothing silently: every recording must be in ORDER, and every entry must exist.
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("read recordings dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(String::from)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = ORDER.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "recordings and the replay order differ; add new recordings to ORDER"
    );

    let agent = Agent::start(
        "bind_addr = \"127.0.0.1\"\nports { http = 0 }\nclient { enabled = true }\nserver { enabled = true }\nplugin \"raw_exec\" {\n  config { enabled = true }\n}\n",
        &[("NOMAD_DOUBLE_VERSION", "1.1.2"), ("NOMAD_DOUBLE_ALLOC_DELAY_MS", "0")],
    );
    let client = reqwest::blocking::Client::new();
    let mut failures = Vec::new();
    for name in ORDER {
        let rec: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("read recording"),
        )
        .expect("recording is JSON");
        let method: reqwest::Method = rec["request"]["method"].as_str().unwrap().parse().unwrap();
        let url = format!("{}{}", agent.base, rec["request"]["path"].as_str().unwrap());
        let mut req = client.request(method, &url);
        if !rec["request"]["body"].is_null() {
            req = req.json(&rec["request"]["body"]);
        }
        if *name == "jobs-list" || *name == "job-allocations" {
            // The recording was taken once the allocation ran; give the clock a moment.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("{name}: request failed: {e}"));
        let mut errs = Vec::new();
        let want = &rec["response"];
        if resp.status().as_u16() as u64 != want["status"].as_u64().unwrap() {
            errs.push(format!(
                "status: recorded {}, double sent {}",
                want["status"],
                resp.status()
            ));
        }
        let headers = resp.headers().clone();
        for (h, v) in want["headers"].as_object().unwrap() {
            match header(&headers, h) {
                None => errs.push(format!("header {h}: missing")),
                Some(got) if h == "Content-Type" && got != v.as_str().unwrap() => {
                    errs.push(format!("Content-Type: recorded {v}, double sent {got:?}"))
                }
                Some(_) => {}
            }
        }
        let text = resp.text().unwrap();
        match &want["body"] {
            Value::String(w)
                if !want["headers"]["Content-Type"]
                    .as_str()
                    .unwrap()
                    .contains("json") =>
            {
                if *name == "jobs-parse-syntax-error" {
                    // Nomad adds a second, derived diagnostic; the first line must match.
                    let first = w.lines().next().unwrap_or("");
                    if text.lines().next() != Some(first) {
                        errs.push(format!("error text: recorded {w:?}, double sent {text:?}"));
                    }
                } else if *w != text {
                    errs.push(format!("body: recorded {w:?}, double sent {text:?}"));
                }
            }
            w => match serde_json::from_str::<Value>(&text) {
                Err(e) => errs.push(format!("body is not JSON ({e}): {text:?}")),
                Ok(got) => {
                    same_shape(w, &got, "$", &mut errs);
                    check_values(name, w, &got, &mut errs);
                }
            },
        }
        if !errs.is_empty() {
            failures.push(format!("{name}:\n  {}", errs.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "double differs from recorded Nomad:\n{}",
        failures.join("\n")
    );
}
