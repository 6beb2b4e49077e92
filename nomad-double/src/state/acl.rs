//! ACL policies, tokens and the one-time bootstrap.

use super::{rfc3339, Error, Result, Store};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Default)]
pub(super) struct AclStore {
    pub(super) policies: BTreeMap<String, Value>,
    /// Tokens by SecretID, as the API shows them.
    tokens: BTreeMap<String, Value>,
    /// The bootstrap's index once done (Nomad's "reset index").
    bootstrap_index: Option<u64>,
}

/// What a request's token turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    Management,
    /// A client token: the parsed `Rules` of each of its policies that exists.
    Client(Vec<Value>),
}

/// 8-4-4-4-12 hex digits, as Nomad's `helper.IsUUID` checks.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl Store {
    /// A base64 SHA-256-sized digest, shaped like Nomad's `Hash` fields (the value is random:
    /// nothing reads it but clients comparing it for change).
    fn fake_hash(&mut self) -> String {
        let bytes: Vec<u8> = (0..4)
            .flat_map(|_| self.next_rand().to_be_bytes())
            .collect();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn new_token(
        &mut self,
        secret: Option<&str>,
        name: &str,
        kind: &str,
        policies: Value,
        global: bool,
        now: i64,
    ) -> Value {
        let idx = self.bump();
        let accessor = self.uuid();
        let secret = secret.map_or_else(|| self.uuid(), str::to_string);
        let token = json!({"AccessorID": accessor, "SecretID": secret, "Name": name,
            "Type": kind, "Policies": policies, "Global": global, "Hash": self.fake_hash(),
            "CreateTime": rfc3339(now), "CreateIndex": idx, "ModifyIndex": idx});
        self.acl.tokens.insert(secret, token.clone());
        token
    }

    /// The management token an operator configured (`NOMAD_DOUBLE_MANAGEMENT_TOKEN`): the
    /// cluster counts as bootstrapped with it.
    pub(super) fn preset_management_token(&mut self, secret: &str, now: i64) {
        self.bootstrap_token(Some(secret), now);
    }

    /// Makes the bootstrap (management) token and marks the cluster bootstrapped.
    fn bootstrap_token(&mut self, secret: Option<&str>, now: i64) -> Value {
        let t = self.new_token(
            secret,
            "Bootstrap Token",
            "management",
            Value::Null,
            true,
            now,
        );
        self.acl.bootstrap_index = t["CreateIndex"].as_u64();
        t
    }

    /// `POST /v1/acl/bootstrap`. `secret` (`BootstrapSecret`) becomes the SecretID from
    /// Nomad 1.4 on (it must be a UUID, else `400 invalid acl token`); older versions
    /// ignore it and make a random one. `reset_index` is what the operator wrote to
    /// `<data_dir>/acl-bootstrap-reset`: the current reset index allows one more bootstrap.
    pub fn acl_bootstrap(
        &mut self,
        secret: Option<&str>,
        reset_index: Option<u64>,
        now: i64,
    ) -> Result<Value> {
        self.acl_on()?;
        if let Some(n) = self.acl.bootstrap_index {
            match reset_index {
                None => {
                    return Err(Error::BadRequest(format!(
                        "ACL bootstrap already done (reset index: {n})"
                    )))
                }
                Some(given) if given != n => {
                    return Err(Error::BadRequest(format!(
                        "Invalid bootstrap reset index (specified {given}, reset index: {n})"
                    )))
                }
                Some(_) => {}
            }
        }
        let secret =
            secret.filter(|s| !s.is_empty() && self.settings.version.has_bootstrap_secret());
        if secret.is_some_and(|s| !is_uuid(s)) {
            return Err(Error::BadRequest("invalid acl token".into()));
        }
        Ok(self.bootstrap_token(secret, now))
    }

    /// Who `secret` is; `None` for an unknown token.
    pub fn acl_caller(&self, secret: &str) -> Option<Caller> {
        let t = self.acl.tokens.get(secret)?;
        if t["Type"] == "management" {
            return Some(Caller::Management);
        }
        let rules = t["Policies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| self.acl.policies.get(p.as_str()?))
            .filter_map(|p| crate::authz::parse_rules(p["Rules"].as_str()?).ok())
            .collect();
        Some(Caller::Client(rules))
    }

    /// `GET /v1/acl/token/self`.
    pub fn acl_token_self(&self, secret: Option<&str>) -> Result<Value> {
        self.acl_on()?;
        secret
            .and_then(|s| self.acl.tokens.get(s))
            .cloned()
            .ok_or_else(|| Error::NotFound("ACL token not found".into()))
    }

    /// `POST /v1/acl/token`: a new client or management token.
    pub fn acl_token_create(&mut self, body: &Value, now: i64) -> Result<Value> {
        self.acl_on()?;
        let kind = body["Type"]
            .as_str()
            .filter(|t| !t.is_empty())
            .unwrap_or("client");
        let policies: Vec<Value> = body["Policies"].as_array().cloned().unwrap_or_default();
        let name = body["Name"].as_str().unwrap_or("");
        let invalid = match kind {
            "client" if policies.is_empty() => Some("client token missing policies"),
            "management" if !policies.is_empty() => {
                Some("management token cannot be associated with policies")
            }
            "client" | "management" => None,
            _ => Some("token type must be client or management"),
        }
        .or((name.len() > 256).then_some("token name too long"));
        if let Some(why) = invalid {
            return Err(Error::BadRequest(format!("token 0 invalid: {why}")));
        }
        let policies = if kind == "client" {
            Value::Array(policies)
        } else {
            Value::Null
        };
        let global = body["Global"].as_bool().unwrap_or(false);
        Ok(self.new_token(None, name, kind, policies, global, now))
    }

    /// `GET /v1/acl/tokens`: stubs, without secrets.
    pub fn acl_token_list(&self) -> Result<Vec<Value>> {
        self.acl_on()?;
        Ok(self
            .acl
            .tokens
            .values()
            .map(|t| {
                let mut t = t.clone();
                if let Some(m) = t.as_object_mut() {
                    m.remove("SecretID");
                }
                t
            })
            .collect())
    }

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
        let hash = self.fake_hash();
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
                   "CreateIndex": create, "ModifyIndex": idx, "Hash": hash}),
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
                json!({"Name": p["Name"], "Description": p["Description"], "Hash": p["Hash"],
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

    fn acl_store(version: crate::version::Version) -> Store {
        let mut s = store();
        s.settings.acl_enabled = true;
        s.settings.version = version;
        s
    }

    const SECRET: &str = "2b778dd9-f5f1-6f29-b4b4-9a5fa948757a";

    #[test]
    fn bootstrap_once_and_bootstrap_secret_from_1_4() {
        let mut old = acl_store(crate::version::Version(1, 1, 2));
        let t = old.acl_bootstrap(Some(SECRET), None, 1).unwrap();
        assert_ne!(t["SecretID"], SECRET, "1.1.2 ignores BootstrapSecret");
        assert_eq!(
            (t["Type"].as_str(), t["Name"].as_str()),
            (Some("management"), Some("Bootstrap Token"))
        );
        assert_eq!(t["Hash"].as_str().map(str::len), Some(44));
        let idx = t["CreateIndex"].as_u64().unwrap();
        assert_eq!(
            old.acl_bootstrap(None, None, 2),
            Err(Error::BadRequest(format!(
                "ACL bootstrap already done (reset index: {idx})"
            )))
        );
        assert_eq!(
            old.acl_caller(t["SecretID"].as_str().unwrap()),
            Some(Caller::Management)
        );

        let mut new = acl_store(crate::version::Version(1, 4, 0));
        let t = new.acl_bootstrap(Some(SECRET), None, 1).unwrap();
        assert_eq!(t["SecretID"], SECRET);
        assert_eq!(
            new.acl_token_self(Some(SECRET)).unwrap()["AccessorID"],
            t["AccessorID"]
        );
        assert_eq!(
            new.acl_token_self(Some("nope")),
            Err(Error::NotFound("ACL token not found".into()))
        );
    }

    #[test]
    fn a_chosen_secret_must_be_a_uuid_and_a_reset_index_allows_one_more_bootstrap() {
        let mut s = acl_store(crate::version::Version(1, 7, 7));
        assert_eq!(
            s.acl_bootstrap(Some("hunter2"), None, 1),
            Err(Error::BadRequest("invalid acl token".into()))
        );
        let first = s.acl_bootstrap(None, None, 1).unwrap();
        let idx = first["CreateIndex"].as_u64().unwrap();
        assert_eq!(
            s.acl_bootstrap(None, Some(idx + 5), 2),
            Err(Error::BadRequest(format!(
                "Invalid bootstrap reset index (specified {}, reset index: {idx})",
                idx + 5
            )))
        );
        let second = s.acl_bootstrap(Some(SECRET), Some(idx), 2).unwrap();
        assert_eq!(second["SecretID"], SECRET);
        // The reset index moved on: the same file does not allow a third.
        assert!(s.acl_bootstrap(None, Some(idx), 3).is_err());
    }

    #[test]
    fn a_preset_management_token_counts_as_bootstrapped() {
        let mut settings = crate::state::Settings::for_tests();
        settings.acl_enabled = true;
        settings.management_token = Some("s3cret".into());
        let mut s = Store::new(settings, 1);
        assert_eq!(s.acl_caller("s3cret"), Some(Caller::Management));
        assert!(s.acl_bootstrap(None, None, 2).is_err());
    }

    #[test]
    fn client_tokens_carry_their_policies_rules() {
        let mut s = acl_store(crate::version::Version::DEFAULT);
        let rules = "namespace \"default\" { policy = \"read\" }";
        s.policy_put("readonly", &json!({"Name": "readonly", "Rules": rules}))
            .unwrap();
        let t = s
            .acl_token_create(
                &json!({"Name": "reader", "Type": "client", "Policies": ["readonly", "gone"]}),
                3,
            )
            .unwrap();
        assert_eq!(t["Policies"], json!(["readonly", "gone"]));
        match s.acl_caller(t["SecretID"].as_str().unwrap()) {
            Some(Caller::Client(r)) => {
                assert_eq!(r, vec![crate::authz::parse_rules(rules).unwrap()])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.acl_token_list().unwrap()[0].get("SecretID"), None);
        for (body, why) in [
            (json!({"Type": "client"}), "client token missing policies"),
            (
                json!({"Type": "management", "Policies": ["readonly"]}),
                "management token cannot be associated with policies",
            ),
            (
                json!({"Type": "root", "Policies": ["readonly"]}),
                "token type must be client or management",
            ),
        ] {
            assert_eq!(
                s.acl_token_create(&body, 4),
                Err(Error::BadRequest(format!("token 0 invalid: {why}")))
            );
        }
    }
}
