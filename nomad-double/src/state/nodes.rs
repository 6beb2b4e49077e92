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
}

impl Store {
    pub fn node(&self) -> Value {
        let d = |healthy: bool, name: &str| {
            json!({"Attributes": if healthy { json!({format!("driver.{name}"): "true"}) } else { Value::Null },
                   "Detected": healthy,
                   "HealthDescription": if healthy { "Healthy" } else { "disabled" },
                   "Healthy": healthy, "UpdateTime": rfc3339(self.started)})
        };
        json!({
            "Address": self.settings.node_address, "CreateIndex": self.node_state.create_index,
            "Datacenter": self.settings.datacenter, "Drain": self.node_state.drain,
            "DrainStrategy": self.node_state.drain_strategy,
            "Drivers": {"exec": d(self.settings.exec_enabled, "exec"),
                        "raw_exec": d(self.settings.raw_exec_enabled, "raw_exec")},
            "HostVolumes": null, "ID": self.node_id, "LastDrain": null,
            "ModifyIndex": self.node_state.modify_index, "Name": self.settings.node_name,
            "NodeClass": "",
            "SchedulingEligibility": if self.node_state.eligible { "eligible" } else { "ineligible" },
            "Status": "ready", "StatusDescription": "",
            "Version": self.settings.version.to_string()
        })
    }

    pub(super) fn node_write(&mut self, now: i64) -> Value {
        let eval_id = self.uuid();
        let idx = self.bump();
        self.node_state.modify_index = idx;
        let keys: Vec<(String, String)> = self.jobs.keys().cloned().collect();
        for k in keys {
            self.place(&k, &eval_id, now);
        }
        json!({"EvalIDs": [eval_id], "EvalCreateIndex": idx, "NodeModifyIndex": idx,
               "Index": idx, "KnownLeader": false, "LastContact": 0})
    }

    /// `POST /v1/node/:id/drain`. A non-null `DrainSpec` drains (allocations stop at once;
    /// system jobs too unless `IgnoreSystemJobs`), null cancels.
    pub fn drain(&mut self, spec: &Value, mark_eligible: bool, now: i64) -> Value {
        if spec.is_object() {
            self.node_state.drain = true;
            self.node_state.eligible = false;
            let ignore_system = spec["IgnoreSystemJobs"].as_bool().unwrap_or(false);
            self.node_state.drain_strategy = json!({"Deadline": spec["Deadline"].as_i64().unwrap_or(0),
                "IgnoreSystemJobs": ignore_system, "ForceDeadline": null, "StartedAt": rfc3339(now)});
            let node = self.node_id.clone();
            self.stop_allocs(
                |a| {
                    a.v["NodeID"] == node.as_str() && !(ignore_system && a.v["JobType"] == "system")
                },
                "alloc is being migrated",
                now,
            );
        } else {
            self.node_state.drain = false;
            self.node_state.drain_strategy = Value::Null;
            if mark_eligible {
                self.node_state.eligible = true;
            }
        }
        self.node_write(now)
    }

    pub fn set_eligibility(&mut self, eligible: bool, now: i64) -> Result<Value> {
        if eligible && self.node_state.drain {
            return Err(Error::Server(
                "can not set node's scheduling eligibility to eligible while it is draining".into(),
            ));
        }
        self.node_state.eligible = eligible;
        Ok(self.node_write(now))
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
        s.drain(&json!({"Deadline": 0}), false, 2);
        s.advance(2);
        assert_eq!(
            s.job_allocs("default", "hello")[0]["ClientStatus"],
            "complete"
        );
        assert_eq!(s.node()["SchedulingEligibility"], "ineligible");
        s.drain(&Value::Null, true, 3);
        let allocs = s.job_allocs("default", "hello");
        assert_eq!(allocs.len(), 2, "system job placed again once eligible");
    }
}
