//! HCL agent config fragments (pure), read in the machine-config child, never in PID 1:
//! [`to_json`] checks a fragment (errors with line and column) and gives its JSON form;
//! [`api_view`] merges the agent config Nomad is started with (base, then the fragment
//! directory in lexical order, JSON and HCL alike) and keeps what PID 1 needs to talk to
//! Nomad. The child writes that view as `agent-view.json` beside the fragments; PID 1
//! reads it instead of the fragments (docs/machine-config.md).

use serde_json::Value;

/// The keys of the merged agent config PID 1 reads: the API's address (`bind_addr`,
/// `addresses`, `ports`), its TLS (`tls`), and what the ACL bootstrap needs (`acl`,
/// `server`, `client`).
pub const API_KEYS: [&str; 7] = [
    "addresses",
    "bind_addr",
    "ports",
    "tls",
    "acl",
    "server",
    "client",
];

/// Where an HCL document is broken (1-based, inside the document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HclError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The JSON form of an HCL agent config (blocks become objects, labels nested keys).
pub fn to_json(text: &str) -> Result<Value, HclError> {
    let value: hcl::Value = hcl::from_str(text).map_err(|e| match e {
        hcl::Error::Parse(p) => HclError {
            line: p.location().line(),
            column: p.location().column(),
            message: p.message().to_string(),
        },
        other => HclError {
            line: 1,
            column: 1,
            message: other.to_string(),
        },
    })?;
    serde_json::to_value(value).map_err(|e| HclError {
        line: 1,
        column: 1,
        message: e.to_string(),
    })
}

/// The merged view of `base` and `fragments` ((file name, content) as written to the
/// fragment directory, in any order: they are merged in lexical order, as Nomad does),
/// reduced to [`API_KEYS`]. A fragment that does not parse is an error naming it (the
/// user data check refuses those before this runs).
pub fn api_view(base: Option<&Value>, fragments: &[(String, String)]) -> Result<Value, String> {
    let mut merged = base.cloned().unwrap_or(Value::Object(Default::default()));
    let mut sorted: Vec<&(String, String)> = fragments.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, content) in sorted {
        let v = if name.ends_with(".hcl") {
            to_json(content)
                .map_err(|e| format!("{name}:{}:{}: {}", e.line, e.column, e.message))?
        } else if name.ends_with(".json") {
            serde_json::from_str(content).map_err(|e| format!("{name}: {e}"))?
        } else {
            continue;
        };
        crate::nomad::agent_config::merge(&mut merged, v);
    }
    let mut view = serde_json::Map::new();
    if let Value::Object(m) = merged {
        for (k, v) in m {
            if API_KEYS.contains(&k.as_str()) {
                view.insert(k, v);
            }
        }
    }
    Ok(Value::Object(view))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hcl_blocks_become_json_objects() {
        let v = to_json(
            "tls {\n  http = true\n  ca_file = \"/ca.pem\"\n}\nports { http = 4747 }\n\
             plugin \"docker\" {\n  config {\n    volumes {\n      enabled = true\n    }\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(v["tls"], json!({"http": true, "ca_file": "/ca.pem"}));
        assert_eq!(v["ports"]["http"], 4747);
        assert_eq!(v["plugin"]["docker"]["config"]["volumes"]["enabled"], true);
    }

    #[test]
    fn broken_hcl_is_located() {
        let e = to_json("tls {\n  http = \n}\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 10), "{e:?}");
        assert!(e.message.contains("expected"), "{e:?}");
        let e = to_json("limits {\n  a = [1,\n").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
    }

    #[test]
    fn the_view_merges_in_lexical_order_and_keeps_the_api_keys() {
        let base = json!({"ports": {"http": 4646}, "data_dir": "/var/lib/nomad",
                          "server": {"enabled": false}});
        let fragments = vec![
            (
                "50-tls.hcl".to_string(),
                "tls {\n  http = true\n}\nports { http = 4747 }\n".to_string(),
            ),
            (
                "10-nomados-machine.json".to_string(),
                r#"{"server": {"enabled": true}, "ports": {"http": 1}}"#.to_string(),
            ),
            (
                "60-addr.json".to_string(),
                r#"{"addresses": {"http": "10.0.0.5"}, "telemetry": {}}"#.to_string(),
            ),
        ];
        let v = api_view(Some(&base), &fragments).unwrap();
        assert_eq!(
            v,
            json!({
                "ports": {"http": 4747},
                "server": {"enabled": true},
                "tls": {"http": true},
                "addresses": {"http": "10.0.0.5"}
            })
        );
        let bad = vec![("50-x.hcl".to_string(), "a = [".to_string())];
        let e = api_view(None, &bad).unwrap_err();
        assert!(e.starts_with("50-x.hcl:1:"), "{e}");
    }

    #[test]
    fn a_broken_hcl_fragment_is_refused_at_its_line_and_column_in_the_user_data() {
        let text = "[nomad]\nrole = \"client\"\n\n[[fragments]]\nname = \"tls.hcl\"\ncontent = \"\"\"\ntls {\n  http = \n}\n\"\"\"\n";
        let e = crate::machine::userdata::parse(std::path::Path::new("u.toml"), text.as_bytes())
            .unwrap_err()
            .to_string();
        // Line 2 of the fragment is line 8 of the user data.
        assert!(
            e.contains("u.toml:8:10: fragment tls.hcl: invalid HCL"),
            "{e}"
        );
    }
}
