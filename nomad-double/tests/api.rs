//! Behaviour beyond the recordings, over real HTTP: version gates, filters, variables,
//! ACLs, write counters, and the process's signal handling.

mod common;

use common::Agent;
use serde_json::{json, Value};
use std::time::Duration;

const DEV: &str = "bind_addr = \"127.0.0.1\"\nports { http = 0 }\nclient { enabled = true }\nserver { enabled = true }\nplugin \"raw_exec\" {\n  config { enabled = true }\n}\n";

fn hello(meta: Value) -> Value {
    json!({"Job": {"ID": "hello", "Type": "system", "Datacenters": ["dc1"], "Meta": meta,
        "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec",
            "Config": {"command": "/bin/sh", "args": ["-c", "sleep 1"]}}]}]}})
}

struct Http {
    c: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

impl Http {
    fn send(&self, m: &str, path: &str, body: Option<Value>) -> (u16, String, String) {
        let mut r = self
            .c
            .request(m.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        if let Some(t) = &self.token {
            r = r.header("X-Nomad-Token", t);
        }
        let resp = r.send().unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, resp.text().unwrap())
    }
    fn json(&self, m: &str, path: &str, body: Option<Value>) -> Value {
        let (s, _, t) = self.send(m, path, body);
        assert_eq!(s, 200, "{m} {path}: {t}");
        serde_json::from_str(&t).unwrap()
    }
}

fn http(agent: &Agent) -> Http {
    Http {
        c: reqwest::blocking::Client::new(),
        base: agent.base.clone(),
        token: None,
    }
}

#[test]
fn filters_meta_variables_and_write_counts_on_a_new_version() {
    let agent = Agent::start(DEV, &[("NOMAD_DOUBLE_ALLOC_DELAY_MS", "0")]);
    let h = http(&agent);
    h.json(
        "POST",
        "/v1/jobs",
        Some(hello(json!({"nomados.pack": "demo"}))),
    );
    h.json(
        "POST",
        "/v1/jobs",
        Some(hello(json!({"nomados.pack": "demo"}))),
    );
    let q =
        "/v1/jobs?meta=true&namespace=*&filter=Meta%5B%22nomados.pack%22%5D%20%3D%3D%20%22demo%22";
    let list = h.json("GET", q, None);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["Meta"]["nomados.pack"], "demo");
    let none = h.json("GET", "/v1/jobs?filter=ID%20%3D%3D%20%22other%22", None);
    assert_eq!(none, json!([]));
    let (s, ct, body) = h.send("GET", "/v1/jobs?filter=ID%20%3D%3D", None);
    assert_eq!((s, ct.as_str()), (400, "text/plain; charset=utf-8"));
    assert!(
        body.starts_with("failed to read filter expression: "),
        "{body}"
    );

    // Second identical register: no new version.
    assert_eq!(h.json("GET", "/v1/job/hello", None)["Version"], 0);

    // Variables with check-and-set.
    let v = h.json(
        "PUT",
        "/v1/var/nomados/x?cas=0",
        Some(json!({"Namespace": "default", "Path": "nomados/x", "Items": {"a": "1"}})),
    );
    let (s, ct, body) = h.send(
        "PUT",
        "/v1/var/nomados/x?cas=0",
        Some(json!({"Path": "nomados/x", "Items": {"a": "2"}})),
    );
    assert_eq!((s, ct.as_str()), (409, "application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["Items"]["a"],
        "1"
    );
    let listed = h.json("GET", "/v1/vars?prefix=nomados/", None);
    assert_eq!(listed[0]["Path"], "nomados/x");
    assert!(
        listed[0].get("Items").is_none(),
        "lists carry metadata only"
    );
    let cas = v["ModifyIndex"].as_u64().unwrap();
    let (s, _, _) = h.send("DELETE", &format!("/v1/var/nomados/x?cas={cas}"), None);
    assert_eq!(s, 200);
    let (s, _, body) = h.send("GET", "/v1/var/nomados/x", None);
    assert_eq!((s, body.as_str()), (404, "variable not found"));

    // Plan and parse are not writes; registers, var put/delete are.
    h.json(
        "POST",
        "/v1/job/hello/plan",
        Some(json!({"Job": hello(Value::Null)["Job"], "Diff": true})),
    );
    let stats = h.json("GET", "/v1/double/stats", None);
    assert_eq!(stats["writes"], 5, "{stats}");
    assert_eq!(stats["writes_by_path"]["/v1/jobs"], 2);

    // Wrong method and unknown route.
    assert_eq!(h.send("PATCH", "/v1/jobs", None).0, 405);
    let (s, _, body) = h.send("GET", "/v1/nope", None);
    assert_eq!((s, body.as_str()), (404, "404 page not found\n"));
}

#[test]
fn old_versions_hide_newer_features() {
    let agent = Agent::start(DEV, &[("NOMAD_DOUBLE_VERSION", "1.2.6")]);
    let h = http(&agent);
    assert_eq!(h.send("GET", "/v1/vars", None).0, 404);
    h.json("POST", "/v1/jobs", Some(hello(json!({"k": "v"}))));
    // 1.2 ignores filter and meta.
    let list = h.json(
        "GET",
        "/v1/jobs?meta=true&filter=ID%20%3D%3D%20%22x%22",
        None,
    );
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("Meta").is_none());
    let me = h.json("GET", "/v1/agent/self", None);
    assert_eq!(me["config"]["Version"]["Version"], "1.2.6");
}

#[test]
fn acls_require_the_management_token() {
    let cfg = format!("{DEV}acl {{ enabled = true }}\n");
    let agent = Agent::start(&cfg, &[("NOMAD_DOUBLE_MANAGEMENT_TOKEN", "s3cret")]);
    let mut h = http(&agent);
    let (s, _, body) = h.send("GET", "/v1/jobs", None);
    assert_eq!((s, body.as_str()), (403, "Permission denied"));
    assert_eq!(h.send("GET", "/v1/agent/health", None).0, 200);
    h.token = Some("wrong".into());
    assert_eq!(h.send("GET", "/v1/jobs", None).0, 403);
    h.token = Some("s3cret".into());
    let (s, _, _) = h.send(
        "POST",
        "/v1/acl/policy/readonly",
        Some(json!({"Name": "readonly", "Rules": "namespace \"default\" { policy = \"read\" }"})),
    );
    assert_eq!(s, 200);
    let l = h.json("GET", "/v1/acl/policies", None);
    assert_eq!(l[0]["Name"], "readonly");
    assert_eq!(
        h.json("GET", "/v1/agent/self", None)["config"]["ACL"]["Enabled"],
        true
    );
}

#[test]
fn bootstrap_secret_becomes_the_management_token_from_1_4() {
    let cfg = format!("{DEV}acl {{ enabled = true }}\n");
    let agent = Agent::start(&cfg, &[("NOMAD_DOUBLE_VERSION", "1.4.0")]);
    let mut h = http(&agent);
    let secret = "6d1f3c2a-0b5e-4f7a-9c8d-1e2f3a4b5c6d";
    let t = h.json(
        "POST",
        "/v1/acl/bootstrap",
        Some(json!({"BootstrapSecret": secret})),
    );
    assert_eq!(
        (t["SecretID"].as_str(), t["Type"].as_str()),
        (Some(secret), Some("management"))
    );
    let (s, _, body) = h.send("POST", "/v1/acl/bootstrap", None);
    assert_eq!(s, 400);
    assert!(
        body.starts_with("ACL bootstrap already done (reset index: "),
        "{body}"
    );
    h.token = Some(secret.into());
    assert_eq!(
        h.json("GET", "/v1/acl/token/self", None)["AccessorID"],
        t["AccessorID"]
    );
    // A read-only client token reads jobs but cannot register one or touch the node.
    let rules = "namespace \"default\" { policy = \"read\" }";
    h.send(
        "POST",
        "/v1/acl/policy/ro",
        Some(json!({"Name": "ro", "Rules": rules})),
    );
    let reader = h.json(
        "POST",
        "/v1/acl/token",
        Some(json!({"Name": "r", "Type": "client", "Policies": ["ro"]})),
    );
    h.token = reader["SecretID"].as_str().map(String::from);
    assert_eq!(h.send("GET", "/v1/jobs", None).0, 200);
    let (s, _, body) = h.send("POST", "/v1/jobs", Some(hello(Value::Null)));
    assert_eq!((s, body.as_str()), (403, "Permission denied"));
    assert_eq!(h.send("GET", "/v1/nodes", None).0, 403);
    assert_eq!(h.send("GET", "/v1/acl/tokens", None).0, 403);
}

#[test]
fn acl_enabled_in_the_config_file_means_a_bootstrap_kept_in_data_dir_across_restarts() {
    let data = std::env::temp_dir().join(format!("nd-acl-data-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let cfg = format!(
        "{DEV}data_dir = \"{}\"\nacl {{\n  enabled = true\n}}\n",
        data.display()
    );
    let agent = Agent::start(&cfg, &[]);
    let mut h = http(&agent);
    let (s, _, body) = h.send("POST", "/v1/jobs", Some(hello(Value::Null)));
    assert_eq!((s, body.as_str()), (403, "Permission denied"));
    let (s, _, body) = h.send(
        "POST",
        "/v1/acl/bootstrap",
        Some(json!({"BootstrapSecret": "not-a-uuid"})),
    );
    assert_eq!((s, body.as_str()), (400, "invalid acl token"));
    let t = h.json("POST", "/v1/acl/bootstrap", None);
    let secret = t["SecretID"].as_str().unwrap().to_string();
    drop(agent);

    // Restarted on the same data_dir: still bootstrapped, the token still management.
    let agent = Agent::start(&cfg, &[]);
    h.base = agent.base.clone();
    let (s, _, body) = h.send("POST", "/v1/acl/bootstrap", None);
    assert_eq!(s, 400, "{body}");
    assert!(
        body.starts_with("ACL bootstrap already done (reset index: "),
        "{body}"
    );
    h.token = Some(secret);
    assert_eq!(h.send("POST", "/v1/jobs", Some(hello(Value::Null))).0, 200);

    // Nomad's bootstrap reset: the reset index in <data_dir>/acl-bootstrap-reset.
    let idx: u64 = body
        .trim_start_matches("ACL bootstrap already done (reset index: ")
        .trim_end_matches(')')
        .parse()
        .unwrap();
    std::fs::write(data.join("acl-bootstrap-reset"), format!("{idx}\n")).unwrap();
    h.token = None;
    let again = h.json("POST", "/v1/acl/bootstrap", None);
    assert_ne!(again["SecretID"], t["SecretID"]);
    drop(agent);
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn missing_command_fails_the_allocation_and_sigterm_exits_cleanly() {
    let mut agent = Agent::start(DEV, &[("NOMAD_DOUBLE_ALLOC_DELAY_MS", "50")]);
    let h = http(&agent);
    let mut job = hello(Value::Null);
    job["Job"]["TaskGroups"][0]["Tasks"][0]["Config"]["command"] = json!("/no/such/binary");
    h.json("POST", "/v1/jobs", Some(job));
    assert_eq!(
        h.json("GET", "/v1/job/hello/allocations", None)[0]["ClientStatus"],
        "pending"
    );
    // Blocking query: wakes when the allocation moves on.
    let idx = h.json("GET", "/v1/job/hello/allocations", None)[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    let allocs = h.json(
        "GET",
        &format!("/v1/job/hello/allocations?index={idx}&wait=5s"),
        None,
    );
    assert_eq!(allocs[0]["ClientStatus"], "failed");
    let ev = &allocs[0]["TaskStates"]["t"]["Events"];
    assert!(ev
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["Type"] == "Driver Failure"
            && e["DisplayMessage"]
                .as_str()
                .unwrap()
                .contains("/no/such/binary")));

    let pid = agent.child.id().to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let mut saw = false;
    while let Ok(line) = agent.lines.recv_timeout(Duration::from_secs(10)) {
        saw |= line.contains("Caught signal: terminated");
    }
    assert!(saw, "logs the signal");
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn submissions_plans_and_node_drain() {
    let agent = Agent::start(DEV, &[("NOMAD_DOUBLE_ALLOC_DELAY_MS", "0")]);
    let h = http(&agent);
    // A new job plans as "Added" with one placement.
    let plan = h.json(
        "POST",
        "/v1/job/hello/plan",
        Some(json!({"Job": hello(Value::Null)["Job"], "Diff": true})),
    );
    assert_eq!(plan["Diff"]["Type"], "Added");
    assert_eq!(plan["Annotations"]["DesiredTGUpdates"]["g"]["Place"], 1);
    assert_eq!(plan["Diff"]["TaskGroups"][0]["Updates"]["create"], 1);

    let mut body = hello(Value::Null);
    body["Job"].as_object_mut().unwrap().remove("Datacenters");
    body["Submission"] = json!({"Source": "job \"hello\" {}", "Format": "hcl2",
                                "VariableFlags": {"a": "b"}, "Variables": ""});
    h.json("POST", "/v1/jobs", Some(body));
    let sub = h.json("GET", "/v1/job/hello/submission?version=0", None);
    assert_eq!(sub["Source"], "job \"hello\" {}");
    assert_eq!(sub["Format"], "hcl2");
    assert_eq!(sub["JobID"], "hello");
    let (s, _, t) = h.send("GET", "/v1/job/hello/submission?version=7", None);
    assert_eq!((s, t.as_str()), (404, "job source not found"));
    // Datacenters omitted: Nomad 1.5+ means every datacenter.
    assert_eq!(
        h.json("GET", "/v1/job/hello", None)["Datacenters"],
        json!(["*"])
    );

    let nodes = h.json("GET", "/v1/nodes", None);
    assert_eq!(nodes[0]["Drivers"]["raw_exec"]["Healthy"], true);
    let id = nodes[0]["ID"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        h.json("GET", "/v1/job/hello/allocations", None)[0]["ClientStatus"],
        "running"
    );
    h.json(
        "POST",
        &format!("/v1/node/{id}/drain"),
        Some(json!({"DrainSpec": {"Deadline": 0, "IgnoreSystemJobs": false}})),
    );
    std::thread::sleep(Duration::from_millis(50));
    let allocs = h.json("GET", "/v1/job/hello/allocations", None);
    assert_eq!(allocs[0]["DesiredStatus"], "stop");
    assert_eq!(allocs[0]["ClientStatus"], "complete");
    // Its allocations stopped, so the drain is over, as the recorded Nomad shows: the
    // node stays ineligible and LastDrain says complete.
    let node = h.json("GET", &format!("/v1/node/{id}"), None);
    assert_eq!(
        (
            node["Drain"].as_bool(),
            node["DrainStrategy"].is_null(),
            node["SchedulingEligibility"].as_str(),
            node["LastDrain"]["Status"].as_str()
        ),
        (Some(false), true, Some("ineligible"), Some("complete"))
    );
    let (s, _, _) = h.send("GET", "/v1/node/not-a-node", None);
    assert_eq!(s, 404);
}

#[test]
fn bad_config_is_reported_with_the_file() {
    let dir = std::env::temp_dir().join(format!("nomad-double-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.hcl");
    std::fs::write(&file, "ports { http = \"nope\" }\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nomad-double"))
        .args(["agent", "-config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.hcl") && err.contains("ports.http"),
        "{err}"
    );
    let v = std::process::Command::new(env!("CARGO_BIN_EXE_nomad-double"))
        .arg("version")
        .env("NOMAD_DOUBLE_VERSION", "1.6.3")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&v.stdout), "Nomad v1.6.3\n");
}

/// `tls.http` needs the files to serve with, as in Nomad: the agent refuses to start and
/// names the missing key (a certificate that does not load names its file).
#[test]
fn a_tls_block_without_its_files_stops_the_agent() {
    let dir = std::env::temp_dir().join(format!("nomad-double-tlscfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let half = dir.join("half.hcl");
    std::fs::write(
        &half,
        "ports { http = 0 }\ntls {\n  http = true\n  cert_file = \"/c.pem\"\n}\n",
    )
    .unwrap();
    let missing = dir.join("missing.json");
    std::fs::write(
        &missing,
        r#"{"ports": {"http": 0}, "tls": {"http": true, "cert_file": "/nonexistent/c.pem", "key_file": "/nonexistent/k.pem"}}"#,
    )
    .unwrap();
    let run = |f: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nomad-double"))
            .args(["agent", "-config", f.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let (half_out, missing_out) = (run(&half), run(&missing));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!half_out.status.success());
    let err = String::from_utf8_lossy(&half_out.stderr);
    assert!(err.contains("tls.key_file"), "{err}");
    assert!(!missing_out.status.success());
    let err = String::from_utf8_lossy(&missing_out.stderr);
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
    let said = String::from_utf8_lossy(&missing_out.stdout);
    assert!(!said.contains("agent started"), "{said}");
}

/// Nomad's Go decoder matches keys without regard to case and keeps the last: a job sent
/// with `"Type": "system"` then `"type": "service"` is a service job, and a lowercase
/// `taskgroups` after `TaskGroups` replaces it. The double must store what Nomad would
/// run, or a client that checks the first spelling cannot be caught by tests.
#[test]
fn job_keys_are_decoded_as_nomad_does() {
    let agent = Agent::start(DEV, &[]);
    let h = http(&agent);
    let body = r#"{"job": {"ID": "twins", "Type": "system", "type": "service",
        "Datacenters": ["dc1"],
        "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec",
            "Config": {"command": "/bin/true"}}]}],
        "taskgroups": [{"name": "g", "tasks": [{"name": "t", "Driver": "raw_exec",
            "driver": "docker", "config": {"image": "busybox", "Image": "other"}}]}],
        "Meta": {"k": "1", "K": "2"}}}"#;
    let resp =
        h.c.post(format!("{}/v1/jobs", h.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().unwrap());
    let job = h.json("GET", "/v1/job/twins", None);
    assert_eq!(job["Type"], "service", "{job}");
    let task = &job["TaskGroups"][0]["Tasks"][0];
    assert_eq!(task["Driver"], "docker", "{job}");
    // Maps keep their keys: case is data there.
    assert_eq!(
        task["Config"],
        json!({"image": "busybox", "Image": "other"})
    );
    assert_eq!(job["Meta"], json!({"k": "1", "K": "2"}));
}
