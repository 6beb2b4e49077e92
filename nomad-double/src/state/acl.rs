//! ACL policies.

use super::{Error, Result, Store};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Default)]
pub(super) struct AclStore {
    pub(super) policies: BTreeMap<String, Value>,
}

impl Store {
    pub(super) fn acl_on(&self) -> Result<()> {
        if self.settings.acl_enabled {
            Ok(())
        } else {
            Err(Error::BadRequest("ACL support disabled".into()))
        }
    }

    pub fn policy_put(&mut self, name: &str, body: &Value) -> Result<u64> {
        self.acl_on()?;
        let body_name = body["Name"].as_str().unwrap_or("");
        if !body_name.is_empty() && body_name != name {
            return Err(Error::BadRequest(
                "Policy name does not match request path".into(),
            ));
        }
        let valid_name = !name.is_empty()
            && name.len() <= 128
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid_name {
            return Err(Error::Server(format!(
                "1 error occurred:\n\t* invalid name '{name}'\n\n"
            )));
        }
        let rules = body["Rules"].as_str().unwrap_or("");
        if let Err(e) = hcl::parse(rules) {
            return Err(Error::Server(format!(
                "policy 0 invalid: failed to parse rules: {}",
                e.to_string().lines().last().unwrap_or("")
            )));
        }
        let idx = self.bump();
        let create = self
            .acl
            .policies
            .get(name)
            .and_then(|p| p["CreateIndex"].as_u64())
            .unwrap_or(idx);
        self.acl.policies.insert(
            name.to_string(),
            json!({"Name": name, "Description": body["Description"].as_str().unwrap_or(""),
                   "Rules": rules, "JobACL": body.get("JobACL").cloned().unwrap_or(Value::Null),
                   "CreateIndex": create, "ModifyIndex": idx}),
        );
        Ok(idx)
    }

    pub fn policy_get(&self, name: &str) -> Result<Value> {
        self.acl_on()?;
        self.acl
            .policies
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound("ACL policy not found".into()))
    }

    pub fn policy_list(&self, prefix: &str) -> Result<Vec<Value>> {
        self.acl_on()?;
        Ok(self
            .acl
            .policies
            .values()
            .filter(|p| p["Name"].as_str().unwrap_or("").starts_with(prefix))
            .map(|p| {
                json!({"Name": p["Name"], "Description": p["Description"],
                       "CreateIndex": p["CreateIndex"], "ModifyIndex": p["ModifyIndex"]})
            })
            .collect())
    }

    pub fn policy_delete(&mut self, name: &str) -> Result<u64> {
        self.acl_on()?;
        self.acl.policies.remove(name);
        Ok(self.bump())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::store;
    use super::super::*;
    use serde_json::json;

    #[test]
    fn acl_disabled_refuses_policies() {
        let mut s = store();
        let e = s.policy_put("readonly", &json!({"Name": "readonly", "Rules": ""}));
        assert_eq!(e, Err(Error::BadRequest("ACL support disabled".into())));
        assert!(s.policy_list("").is_err());
        s.settings.acl_enabled = true;
        s.policy_put(
            "readonly",
            &json!({"Name": "readonly", "Rules": "namespace \"default\" { policy = \"read\" }"}),
        )
        .unwrap();
        assert_eq!(s.policy_list("").unwrap().len(), 1);
        assert!(s.policy_put("x", &json!({"Name": "y"})).is_err());
    }
}
