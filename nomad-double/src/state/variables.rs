//! Variables (Nomad >= 1.4): list, read, write and delete with check-and-set.

use super::{Error, Result, Store};
use serde_json::{json, Map, Value};

pub(super) struct Var {
    items: Map<String, Value>,
    create_index: u64,
    modify_index: u64,
    create_time: i64,
    modify_time: i64,
}

impl Store {
    pub(super) fn var_json(ns: &str, path: &str, v: &Var, items: bool) -> Value {
        let mut j = json!({"Namespace": ns, "Path": path, "CreateIndex": v.create_index,
            "ModifyIndex": v.modify_index, "CreateTime": v.create_time,
            "ModifyTime": v.modify_time});
        if items {
            j["Items"] = Value::Object(v.items.clone());
        }
        j
    }

    pub(super) fn var_conflict(&self, ns: &str, path: &str) -> Error {
        match self.vars.get(&(ns.to_string(), path.to_string())) {
            Some(v) => Error::Conflict(Self::var_json(ns, path, v, true)),
            None => Error::Conflict(json!({"Namespace": ns, "Path": path, "CreateIndex": 0,
                "ModifyIndex": 0, "CreateTime": 0, "ModifyTime": 0, "Items": null})),
        }
    }

    pub fn var_list(&self, ns: &str, prefix: &str) -> Vec<Value> {
        self.vars
            .iter()
            .filter(|((vns, p), _)| (ns == "*" || vns == ns) && p.starts_with(prefix))
            .map(|((vns, p), v)| Self::var_json(vns, p, v, false))
            .collect()
    }

    pub fn var_get(&self, ns: &str, path: &str) -> Result<Value> {
        self.vars
            .get(&(ns.to_string(), path.to_string()))
            .map(|v| Self::var_json(ns, path, v, true))
            .ok_or_else(|| Error::NotFound("variable not found".into()))
    }

    pub(super) fn check_var_path(path: &str) -> Result<()> {
        let ok = !path.is_empty()
            && path.len() <= 128
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '~' | '/'))
            && !path.starts_with('/')
            && !path.ends_with('/')
            && !path.contains("//");
        if !ok {
            return Err(Error::BadRequest(format!("invalid path {path:?}")));
        }
        let top = path.split('/').next().unwrap_or("");
        if top == "nomad" && !(path == "nomad/jobs" || path.starts_with("nomad/jobs/")) {
            return Err(Error::BadRequest(
                "\"nomad\" is a reserved top-level directory path, but you may write variables to \"nomad/jobs\" or below".into(),
            ));
        }
        Ok(())
    }

    /// `PUT /v1/var/:path`. `cas` is check-and-set: 0 means "must not exist yet".
    pub fn var_put(
        &mut self,
        ns: &str,
        path: &str,
        items: &Value,
        cas: Option<u64>,
        now: i64,
    ) -> Result<Value> {
        Self::check_var_path(path)?;
        if !self.settings.namespaces.iter().any(|n| n == ns) {
            return Err(Error::Server(format!("namespace \"{ns}\" does not exist")));
        }
        let items = match items {
            Value::Object(m) if !m.is_empty() => m.clone(),
            _ => return Err(Error::BadRequest("empty variables are invalid".into())),
        };
        if let Some((k, _)) = items.iter().find(|(_, v)| !v.is_string()) {
            return Err(Error::BadRequest(format!(
                "failed to parse request: item {k:?} must be a string"
            )));
        }
        let key = (ns.to_string(), path.to_string());
        let current = self.vars.get(&key).map(|v| v.modify_index);
        if let Some(cas) = cas {
            if current.unwrap_or(0) != cas {
                return Err(self.var_conflict(ns, path));
            }
        }
        let idx = self.bump();
        let v = self.vars.entry(key).or_insert(Var {
            items: Map::new(),
            create_index: idx,
            modify_index: idx,
            create_time: now,
            modify_time: now,
        });
        v.items = items;
        v.modify_index = idx;
        v.modify_time = now;
        Ok(Self::var_json(ns, path, v, true))
    }

    pub fn var_delete(&mut self, ns: &str, path: &str, cas: Option<u64>) -> Result<u64> {
        let key = (ns.to_string(), path.to_string());
        if let Some(cas) = cas {
            let current = self.vars.get(&key).map_or(0, |v| v.modify_index);
            if current != cas {
                return Err(self.var_conflict(ns, path));
            }
        }
        let idx = self.bump();
        self.vars.remove(&key);
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::store;
    use super::super::*;
    use serde_json::json;

    #[test]
    fn variables_check_and_set() {
        let mut s = store();
        let items = json!({"a": "1"});
        let v = s.var_put("default", "x/y", &items, Some(0), 1).unwrap();
        let idx = v["ModifyIndex"].as_u64().unwrap();
        // cas=0 on an existing variable conflicts and returns the current one.
        match s.var_put("default", "x/y", &json!({"a": "2"}), Some(0), 2) {
            Err(Error::Conflict(cur)) => assert_eq!(cur["Items"]["a"], "1"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.var_put("default", "x/y", &items, Some(idx + 7), 2),
            Err(Error::Conflict(_))
        ));
        let v2 = s
            .var_put("default", "x/y", &json!({"a": "2"}), Some(idx), 3)
            .unwrap();
        assert!(v2["ModifyIndex"].as_u64().unwrap() > idx);
        assert_eq!(v2["CreateIndex"].as_u64(), Some(idx));
        assert!(matches!(
            s.var_delete("default", "x/y", Some(idx)),
            Err(Error::Conflict(_))
        ));
        assert_eq!(s.var_list("default", "x/").len(), 1);
        assert!(s.var_list("default", "y").is_empty());
        s.var_delete("default", "x/y", None).unwrap();
        assert_eq!(
            s.var_get("default", "x/y"),
            Err(Error::NotFound("variable not found".into()))
        );
        assert!(matches!(
            s.var_put("default", "/abs", &items, None, 4),
            Err(Error::BadRequest(_))
        ));
        assert_eq!(
            s.var_put("default", "p", &json!({}), None, 4),
            Err(Error::BadRequest("empty variables are invalid".into()))
        );
        assert!(matches!(
            s.var_put("default", "nomad/x", &items, None, 4),
            Err(Error::BadRequest(_))
        ));
        assert!(s
            .var_put("default", "nomad/jobs/web", &items, None, 4)
            .is_ok());
    }
}
