//! Replays the exchanges recorded from a real Nomad v1.1.2 agent against the double, started
//! as a real process, and checks status, Content-Type, headers and body shape (every recorded
//! key at every level, same JSON types), plus exact values where they are deterministic.

mod common;

use common::Agent;
use serde_json::Value;
use std::path::{Path, PathBuf};

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

/// The `v1.1.2-acl` recording order (recordings/README.md; state carries over).
const ACL_ORDER: &[&str] = &[
    "status-leader-anonymous",
    "agent-health-anonymous",
    "agent-self-anonymous",
    "jobs-list-anonymous",
    "jobs-register-anonymous",
    "acl-bootstrap",
    "acl-bootstrap-again",
    "acl-token-self",
    "acl-token-self-unknown",
    "jobs-register-with-token",
    "jobs-list-with-token",
    "acl-policy-put",
    "acl-policies-list",
    "acl-token-create",
    "jobs-register-with-read-only-token",
    "nodes-with-token",
    "node-drain-anonymous",
    "node-drain-with-token",
    "node-read-draining",
    "node-drain-off-mark-eligible",
    "node-eligibility-ineligible",
    "node-eligibility-eligible",
    "job-deregister-purge-with-token",
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
    if path.ends_with(".Drivers") {
        return Some(&["exec", "raw_exec"]);
    }
    // Node attributes and meta describe the host; these are the ones the double has.
    if path.ends_with(".Attributes") {
        return Some(&[
            "driver.exec",
            "driver.raw_exec",
            "kernel.name",
            "nomad.version",
            "unique.hostname",
        ]);
    }
    (path == "$.Meta").then_some(&[])
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
        "agent-health" | "status-leader" | "agent-health-anonymous" => eq("body", want, got),
        "acl-bootstrap" | "acl-token-self" | "acl-token-create" => {
            for k in ["Name", "Type", "Policies", "Global"] {
                eq(k, &want[k], &got[k]);
            }
        }
        "acl-policies-list" => {
            for k in ["Name", "Description"] {
                eq(k, &want[0][k], &got[0][k]);
            }
        }
        "node-read-draining" => {
            for k in ["Drain", "DrainStrategy", "SchedulingEligibility"] {
                eq(k, &want[k], &got[k]);
            }
            eq(
                "LastDrain.Status",
                &want["LastDrain"]["Status"],
                &got["LastDrain"]["Status"],
            );
            let messages = |v: &Value| -> Value {
                v["Events"]
                    .as_array()
                    .map_or(vec![], |a| a.iter().map(|e| e["Message"].clone()).collect())
                    .into()
            };
            eq("Events[].Message", &messages(want), &messages(got));
        }
        "node-drain-with-token"
        | "node-drain-off-mark-eligible"
        | "node-eligibility-ineligible"
        | "node-eligibility-eligible" => {
            // Whether an evaluation was made (EvalIDs null or not) is deterministic.
            eq(
                "EvalIDs is null",
                &want["EvalIDs"].is_null().into(),
                &got["EvalIDs"].is_null().into(),
            );
            eq(
                "EvalCreateIndex is 0",
                &(want["EvalCreateIndex"] == 0).into(),
                &(got["EvalCreateIndex"] == 0).into(),
            );
            eq(
                "NodeModifyIndex is 0",
                &(want["NodeModifyIndex"] == 0).into(),
                &(got["NodeModifyIndex"] == 0).into(),
            );
        }
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

/// Every recording in `dir` is in `order` and every entry exists: nothing is skipped silently.
fn assert_order_covers(dir: &Path, order: &[&str]) {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
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
    let mut listed: Vec<String> = order.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk,
        listed,
        "recordings in {} and the replay order differ; add new recordings to the order",
        dir.display()
    );
}

fn read_recording(dir: &Path, name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("read recording"),
    )
    .expect("recording is JSON")
}

/// Sends one recorded request (to `path`, with `token`) and compares the answer with the
/// recorded one: status, headers, Content-Type, then the body (exact text for non-JSON,
/// shape and deterministic values for JSON). Returns the differences and the JSON body.
fn replay(
    client: &reqwest::blocking::Client,
    base: &str,
    name: &str,
    rec: &Value,
    path: &str,
    token: Option<&str>,
) -> (Vec<String>, Value) {
    let method: reqwest::Method = rec["request"]["method"].as_str().unwrap().parse().unwrap();
    let mut req = client.request(method, format!("{base}{path}"));
    if !rec["request"]["body"].is_null() {
        req = req.json(&rec["request"]["body"]);
    }
    if let Some(t) = token {
        req = req.header("X-Nomad-Token", t);
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
    let mut got_json = Value::Null;
    let content_type = want["headers"]["Content-Type"].as_str().unwrap_or("");
    match &want["body"] {
        Value::String(w) if !content_type.contains("json") => {
            if name == "jobs-parse-syntax-error" {
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
                got_json = got;
            }
        },
    }
    (errs, got_json)
}

#[test]
fn replays_recorded_nomad_1_1_2_exchanges() {
    let dir = recordings_dir("v1.1.2");
    assert_order_covers(&dir, ORDER);
    let agent = Agent::start(
        "bind_addr = \"127.0.0.1\"\nports { http = 0 }\nclient { enabled = true }\nserver { enabled = true }\nplugin \"raw_exec\" {\n  config { enabled = true }\n}\n",
        &[("NOMAD_DOUBLE_VERSION", "1.1.2"), ("NOMAD_DOUBLE_ALLOC_DELAY_MS", "0")],
    );
    let client = reqwest::blocking::Client::new();
    let mut failures = Vec::new();
    for name in ORDER {
        let rec = read_recording(&dir, name);
        if *name == "jobs-list" || *name == "job-allocations" {
            // The recording was taken once the allocation ran; give the clock a moment.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let path = rec["request"]["path"].as_str().unwrap();
        let (errs, _) = replay(&client, &agent.base, name, &rec, path, None);
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

/// The ACL recordings, against the double with `acl { enabled = true }` and no preset token:
/// it is bootstrapped by the replay, and the tokens it hands out are used where the
/// recording says which token was sent.
#[test]
fn replays_recorded_nomad_1_1_2_acl_exchanges() {
    let dir = recordings_dir("v1.1.2-acl");
    assert_order_covers(&dir, ACL_ORDER);
    let agent = Agent::start(
        "bind_addr = \"127.0.0.1\"\nports { http = 0 }\nclient { enabled = true }\nserver { enabled = true }\nacl { enabled = true }\nplugin \"raw_exec\" {\n  config { enabled = true }\n}\n",
        &[("NOMAD_DOUBLE_VERSION", "1.1.2"), ("NOMAD_DOUBLE_ALLOC_DELAY_MS", "0")],
    );
    let client = reqwest::blocking::Client::new();
    let mut failures = Vec::new();
    let mut management: Option<String> = None;
    let mut reader: Option<String> = None;
    let mut node_id: Option<String> = None;
    // The recorded node's ID, to swap for the double's in request paths.
    let recorded_node = read_recording(&dir, "nodes-with-token")["response"]["body"][0]["ID"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ACL_ORDER {
        let rec = read_recording(&dir, name);
        let token = match rec["request"]["token"].as_str() {
            None => None,
            Some("<management token>") => Some(management.clone().expect("bootstrap came first")),
            Some("<other token>") if *name == "jobs-register-with-read-only-token" => {
                Some(reader.clone().expect("reader token made first"))
            }
            Some("<other token>") => Some("00000000-0000-0000-0000-00000000beef".to_string()),
            Some(t) => panic!("{name}: unknown token placeholder {t:?}"),
        };
        let mut path = rec["request"]["path"].as_str().unwrap().to_string();
        if path.contains(&recorded_node) {
            let id = node_id.as_deref().expect("nodes listed before node calls");
            path = path.replace(&recorded_node, id);
        }
        if *name == "node-read-draining" || *name == "jobs-list-with-token" {
            // Recorded once the drain (or the allocation) moved on; give the clock a moment.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let (mut errs, got) = replay(&client, &agent.base, name, &rec, &path, token.as_deref());
        match *name {
            "acl-bootstrap" => {
                management = got["SecretID"].as_str().map(String::from);
                // 1.1.2 ignores BootstrapSecret (the recording's note): a random secret.
                if got["SecretID"] == rec["request"]["body"]["BootstrapSecret"] {
                    errs.push("SecretID: 1.1.2 must ignore BootstrapSecret".into());
                }
            }
            "acl-token-self" if got["SecretID"].as_str() != management.as_deref() => {
                errs.push(format!("token self is not the bootstrap token: {got}"));
            }
            "acl-token-create" => reader = got["SecretID"].as_str().map(String::from),
            "nodes-with-token" => node_id = got[0]["ID"].as_str().map(String::from),
            _ => {}
        }
        if !errs.is_empty() {
            failures.push(format!("{name}:\n  {}", errs.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "double (ACLs on) differs from recorded Nomad:\n{}",
        failures.join("\n")
    );
}

/// `/v1/node/:id/allocations` was not recorded; Nomad answers it with full `Allocation`
/// structs, which hold every field of the recorded stub of `/v1/job/:id/allocations` and the
/// job as `/v1/job/:id` reads it. The double's answer is held to both recorded shapes.
#[test]
fn node_allocations_hold_the_recorded_stub_and_job_shapes() {
    let dir = recordings_dir("v1.1.2");
    let agent = Agent::start(
        "bind_addr = \"127.0.0.1\"\nports { http = 0 }\nclient { enabled = true }\nserver { enabled = true }\nplugin \"raw_exec\" {\n  config { enabled = true }\n}\n",
        &[("NOMAD_DOUBLE_VERSION", "1.1.2"), ("NOMAD_DOUBLE_ALLOC_DELAY_MS", "0")],
    );
    let client = reqwest::blocking::Client::new();
    let register = read_recording(&dir, "jobs-register-ok");
    let sent = client
        .post(format!("{}/v1/jobs", agent.base))
        .json(&register["request"]["body"])
        .send()
        .unwrap();
    assert!(sent.status().is_success(), "{:?}", sent.text());
    let node: Value = client
        .get(format!("{}/v1/nodes", agent.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = node[0]["ID"].as_str().unwrap().to_string();
    let get = |path: &str| -> (u16, Option<String>, Value) {
        let r = client.get(format!("{}{path}", agent.base)).send().unwrap();
        let index = header(r.headers(), "X-Nomad-Index").map(str::to_string);
        (r.status().as_u16(), index, r.json().unwrap())
    };
    let (status, index, allocs) = get(&format!("/v1/node/{id}/allocations"));
    assert_eq!(status, 200);
    assert!(index.is_some(), "no X-Nomad-Index");
    let stub = &read_recording(&dir, "job-allocations")["response"]["body"][0];
    let job = &read_recording(&dir, "job-read")["response"]["body"];
    let mut errs = Vec::new();
    let list = allocs.as_array().unwrap();
    assert_eq!(list.len(), 1, "{allocs}");
    same_shape(stub, &list[0], "$[0]", &mut errs);
    same_shape(job, &list[0]["Job"], "$[0].Job", &mut errs);
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    assert_eq!(list[0]["Job"]["ID"], "hello");
    assert_eq!(list[0]["NodeID"], id.as_str());
    let (status, _, none) = get("/v1/node/00000000-0000-0000-0000-000000000000/allocations");
    assert_eq!((status, none), (200, serde_json::json!([])));
}
