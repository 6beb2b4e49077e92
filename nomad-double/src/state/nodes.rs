//! The one node (this agent): its document, drain and scheduling eligibility.

use super::{rfc3339, Error, Result, Store};
use serde_json::{json, Value};

/// The node's mutable scheduling state.
pub(super) struct NodeState {
    pub(super) create_index: u64,
    pub(super) modify_index: u64,
    pub(super) drain: bool,
    pub(super) eligible: bool,
    pub(super) drain_strategy: Value,
    /// Whether the running drain stops system jobs too (no `IgnoreSystemJobs`).
    pub(super) drain_covers_system: bool,
    /// The last drain's `LastDrain` document (null before any).
    pub(super) last_drain: Value,
    /// Node events, newest last, at most [`MAX_EVENTS`] like Nomad.
    pub(super) events: Vec<Value>,
}

const MAX_EVENTS: usize = 10;

impl NodeState {
    pub(super) fn new(now: i64) -> NodeState {
        NodeState {
            create_index: 0,
            modify_index: 0,
            drain: false,
            eligible: true,
            drain_strategy: Value::Null,
            drain_covers_system: false,
            last_drain: Value::Null,
            events: vec![
                json!({"CreateIndex": 0, "Details": null, "Message": "Node registered",
                "Subsystem": "Cluster", "Timestamp": rfc3339(now)}),
            ],
        }
    }
}

impl Store {
    /// The node as `GET /v1/nodes` lists it.
    pub fn node(&self) -> Value {
        let d = |healthy: bool, name: &str| {
            json!({"Attributes": if healthy { json!({format!("driver.{name}"): "true"}) } else { Value::Null },
                   "Detected": healthy,
                   "HealthDescription": if healthy { "Healthy" } else { "disabled" },
                   "Healthy": healthy, "UpdateTime": rfc3339(self.started)})
        };
        let n = &self.node_state;
        json!({
            "Address": self.settings.node_address, "CreateIndex": n.create_index,
            "Datacenter": self.settings.datacenter, "Drain": n.drain,
            "DrainStrategy": n.drain_strategy,
            "Drivers": {"exec": d(self.settings.exec_enabled, "exec"),
                        "raw_exec": d(self.settings.raw_exec_enabled, "raw_exec")},
            "HostVolumes": null, "ID": self.node_id, "LastDrain": n.last_drain,
            "ModifyIndex": n.modify_index, "Name": self.settings.node_name,
            "NodeClass": "",
            "SchedulingEligibility": if n.eligible { "eligible" } else { "ineligible" },
            "Status": "ready", "StatusDescription": "",
            "Version": self.settings.version.to_string()
        })
    }

    /// The whole node document, as `GET /v1/node/:id` returns it (the caller adds `HTTPAddr`).
    pub fn node_full(&self) -> Value {
        let mut v = self.node();
        let s = &self.settings;
        let mut attrs = json!({"kernel.name": "linux", "os.name": "linux",
            "cpu.arch": std::env::consts::ARCH, "cpu.numcores": "1", "cpu.totalcompute": "1000",
            "memory.totalbytes": "1073741824", "nomad.version": s.version.to_string(),
            "nomad.advertise.address": s.node_address, "unique.hostname": s.node_name,
            "unique.network.ip-address": s.node_address});
        for (name, on) in [("exec", s.exec_enabled), ("raw_exec", s.raw_exec_enabled)] {
            if on {
                attrs[format!("driver.{name}")] = json!("1");
            }
        }
        let network = json!({"CIDR": format!("{}/32", s.node_address), "DNS": null,
            "Device": "lo", "DynamicPorts": null, "IP": s.node_address, "MBits": 1000,
            "Mode": "host", "ReservedPorts": null});
        let extra = json!({
            "Attributes": attrs, "CSIControllerPlugins": null, "CSINodePlugins": null,
            "ComputedClass": "v1:0", "Events": self.node_state.events, "HTTPAddr": "",
            "Links": null, "Meta": s.node_meta,
            "NodeResources": {"Cpu": {"CpuShares": 1000, "ReservableCpuCores": [0],
                                      "TotalCpuCores": 1},
                "Devices": null, "Disk": {"DiskMB": 1024}, "Memory": {"MemoryMB": 1024},
                "Networks": [network],
                "NodeNetworks": [{"Addresses": [{"Address": s.node_address, "Alias": "default",
                    "Family": "ipv4", "Gateway": "", "ReservedPorts": ""}], "Device": "lo",
                    "MacAddress": "", "Mode": "host", "Speed": 1000}]},
            "Reserved": {"CPU": 0, "Cores": 0, "Devices": null, "DiskMB": 0, "IOPS": 0,
                         "MemoryMB": 0, "MemoryMaxMB": 0, "Networks": null},
            "ReservedResources": {"Cpu": {"CpuShares": 0, "ReservedCpuCores": null},
                "Disk": {"DiskMB": 0}, "Memory": {"MemoryMB": 0},
                "Networks": {"ReservedHostPorts": ""}},
            "Resources": {"CPU": 1000, "Cores": 0, "Devices": null, "DiskMB": 1024, "IOPS": 0,
                          "MemoryMB": 1024, "MemoryMaxMB": 0, "Networks": [network]},
            "SecretID": "", "StatusUpdatedAt": self.started.div_euclid(1_000_000_000),
            "TLSEnabled": false
        });
        if let (Some(m), Value::Object(x)) = (v.as_object_mut(), extra) {
            m.extend(x);
        }
        v
    }

    fn node_event(&mut self, subsystem: &str, message: &str, index: u64, now: i64) {
        let events = &mut self.node_state.events;
        events.push(
            json!({"CreateIndex": index, "Details": null, "Message": message,
            "Subsystem": subsystem, "Timestamp": rfc3339(now)}),
        );
        if events.len() > MAX_EVENTS {
            events.remove(0);
        }
    }

    /// Records a node update; when the node can take work again, creates an evaluation
    /// (placing system jobs) as Nomad does. The response shape of drain and eligibility.
    fn node_write(&mut self, now: i64) -> Value {
        let idx = self.bump();
        self.node_state.modify_index = idx;
        let (eval_ids, eval_index) = if self.node_state.eligible && !self.node_state.drain {
            let eval_index = self.bump();
            let keys: Vec<(String, String)> = self.jobs.keys().cloned().collect();
            let mut ids = Vec::new();
            for k in keys {
                let eval_id = self.uuid();
                ids.push(eval_id.clone());
                self.create_eval(&k, eval_id, "node-update", eval_index, now);
            }
            (json!(ids), eval_index)
        } else {
            (Value::Null, 0)
        };
        json!({"EvalIDs": eval_ids, "EvalCreateIndex": eval_index, "NodeModifyIndex": idx,
               "Index": idx})
    }

    /// `POST /v1/node/:id/drain`. A non-null `DrainSpec` drains (the node turns ineligible
    /// and its allocations stop at once; system jobs too unless `IgnoreSystemJobs`); the
    /// drain completes once they have stopped. A null `DrainSpec` cancels; `MarkEligible`
    /// makes the node eligible again. `meta` is the request's top-level `Meta` (Nomad
    /// 1.2+ keeps it as the node's `LastDrain.Meta`).
    pub fn drain(&mut self, spec: &Value, meta: &Value, mark_eligible: bool, now: i64) -> Value {
        if spec.is_object() {
            let ignore_system = spec["IgnoreSystemJobs"].as_bool().unwrap_or(false);
            let n = &mut self.node_state;
            n.drain = true;
            n.eligible = false;
            n.drain_covers_system = !ignore_system;
            n.drain_strategy = json!({"Deadline": spec["Deadline"].as_i64().unwrap_or(0),
                "IgnoreSystemJobs": ignore_system, "ForceDeadline": null, "StartedAt": rfc3339(now)});
            n.last_drain = json!({"AccessorID": "", "Meta": meta, "StartedAt": rfc3339(now),
                "Status": "draining", "UpdatedAt": rfc3339(now)});
            let out = self.node_write(now);
            let idx = self.index;
            self.node_event("Drain", "Node drain strategy set", idx, now);
            let node = self.node_id.clone();
            self.stop_allocs(
                |a| {
                    a.v["NodeID"] == node.as_str() && !(ignore_system && a.v["JobType"] == "system")
                },
                "alloc is being migrated",
                now,
            );
            out
        } else {
            let was_draining = self.node_state.drain;
            let n = &mut self.node_state;
            n.drain = false;
            n.drain_strategy = Value::Null;
            if mark_eligible {
                n.eligible = true;
            }
            if was_draining {
                n.last_drain["Status"] = json!("canceled");
                n.last_drain["UpdatedAt"] = json!(rfc3339(now));
            }
            let out = self.node_write(now);
            if was_draining {
                let idx = out["Index"].as_u64().unwrap_or(0);
                self.node_event("Drain", "Node drain disabled", idx, now);
            }
            out
        }
    }

    /// Ends a drain whose allocations have all stopped. Returns true when it did.
    pub(super) fn finish_drain(&mut self, now: i64) -> bool {
        if !self.node_state.drain {
            return false;
        }
        let covers_system = self.node_state.drain_covers_system;
        let node = self.node_id.as_str();
        let busy = self.allocs.iter().any(|a| {
            a.v["NodeID"] == node && !a.terminal() && (covers_system || a.v["JobType"] != "system")
        });
        if busy {
            return false;
        }
        let idx = self.bump();
        let n = &mut self.node_state;
        n.drain = false;
        n.drain_strategy = Value::Null;
        n.modify_index = idx;
        n.last_drain["Status"] = json!("complete");
        n.last_drain["UpdatedAt"] = json!(rfc3339(now));
        self.node_event("Drain", "Node drain complete", idx, now);
        true
    }

    /// `POST /v1/node/:id/eligibility`. Nomad answers `NodeModifyIndex: 0` here.
    pub fn set_eligibility(&mut self, eligible: bool, now: i64) -> Result<Value> {
        if eligible && self.node_state.drain {
            return Err(Error::Server(
                "can not set node's scheduling eligibility to eligible while it is draining".into(),
            ));
        }
        let changed = self.node_state.eligible != eligible;
        self.node_state.eligible = eligible;
        let mut out = self.node_write(now);
        if changed {
            let msg = if eligible {
                "Node marked as eligible for scheduling"
            } else {
                "Node marked as ineligible for scheduling"
            };
            let idx = out["Index"].as_u64().unwrap_or(0);
            self.node_event("Cluster", msg, idx, now);
        }
        out["NodeModifyIndex"] = json!(0);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{job, store};
    use serde_json::{json, Value};

    #[test]
    fn drain_stops_allocations_and_eligibility_restores() {
        let mut s = store();
        s.register(job("/bin/sh"), "default", None, None, 1)
            .unwrap();
        s.advance(1);
        s.drain(
            &json!({"Deadline": 0}),
            &json!({"message": "test"}),
            false,
            2,
        );
        s.advance(2);
        assert_eq!(
            s.job_allocs("default", "hello")[0]["ClientStatus"],
            "complete"
        );
        assert_eq!(s.node()["SchedulingEligibility"], "ineligible");
        s.drain(&Value::Null, &Value::Null, true, 3);
        let allocs = s.job_allocs("default", "hello");
        assert_eq!(allocs.len(), 2, "system job placed again once eligible");
    }
}
