//! The agent endpoints: health and `agent/self`.

use crate::api::App;
use crate::config::AgentConfig;
use crate::state::Store;
use serde_json::{json, Map, Value};

/// `GET /v1/agent/health`: one entry per role this agent has.
pub fn health(c: &AgentConfig) -> Value {
    let mut m = Map::new();
    if c.client_enabled {
        m.insert("client".into(), json!({"message": "ok", "ok": true}));
    }
    if c.server_enabled {
        m.insert("server".into(), json!({"message": "ok", "ok": true}));
    }
    Value::Object(m)
}

const AGENT_SELF: &str = include_str!("agent_self.json");

/// `GET /v1/agent/self`: the recorded document with this agent's version, datacenter,
/// region, roles and addresses.
pub fn self_document(app: &App, store: &Store) -> Value {
    let c = &app.config;
    let mut v: Value = serde_json::from_str(AGENT_SELF).unwrap_or_else(|_| json!({}));
    let host = c.advertise_host();
    let version = app.version.to_string();
    let cfg = &mut v["config"];
    cfg["Version"]["Version"] = json!(version);
    cfg["Datacenter"] = json!(c.datacenter);
    cfg["Region"] = json!(c.region);
    cfg["NodeName"] = json!(c.name);
    cfg["DataDir"] = json!(c.data_dir);
    cfg["DevMode"] = json!(c.dev);
    cfg["Files"] = json!(c.files);
    cfg["BindAddr"] = json!(c.bind_addr);
    cfg["ACL"]["Enabled"] = json!(c.acl_enabled);
    cfg["Client"]["Enabled"] = json!(c.client_enabled);
    cfg["Server"]["Enabled"] = json!(c.server_enabled);
    cfg["Client"]["Options"]["driver.raw_exec.enable"] =
        json!(if c.raw_exec_enabled { "true" } else { "false" });
    for (k, val) in &c.client_meta {
        cfg["Client"]["Meta"][k] = json!(val);
    }
    cfg["Addresses"]["HTTP"] = json!(c.http_addr.clone().unwrap_or_else(|| c.bind_addr.clone()));
    cfg["Ports"]["HTTP"] = json!(c.http_port);
    cfg["AdvertiseAddrs"]["HTTP"] = json!(format!("{host}:{}", c.http_port));
    let member = &mut v["member"];
    member["Name"] = json!(format!("{}.{}", c.name, c.region));
    member["Tags"]["build"] = json!(version);
    member["Tags"]["dc"] = json!(c.datacenter);
    member["Tags"]["region"] = json!(c.region);
    v["stats"]["client"]["node_id"] = json!(store.node_id);
    v["stats"]["raft"]["applied_index"] = json!(store.index.to_string());
    v["stats"]["raft"]["commit_index"] = json!(store.index.to_string());
    v["stats"]["raft"]["last_log_index"] = json!(store.index.to_string());
    v
}
