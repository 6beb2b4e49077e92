//! ACL authorization, pure: which capability a request needs, and whether a set of policy
//! rules (Nomad's HCL policy language, the subset tests use) grants it.

use serde_json::Value;

/// What a request needs from the token it carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Need {
    /// Answered without a token (health, leader, bootstrap, token self, the double's own).
    Open,
    /// Any valid token.
    AnyToken,
    /// A management token.
    Management,
    /// A namespace capability such as `read-job` or `submit-job`.
    Namespace(String, &'static str),
    /// A variables capability (`list`, `read`, `write`, `destroy`) on a path.
    Variable(String, String, &'static str),
    /// `node` rules; `true` means write.
    Node(bool),
    /// `agent` rules; `true` means write.
    Agent(bool),
}

/// The capability a request needs. Unknown routes are `Open` so they get Nomad's 404 text.
pub fn need(method: &str, segs: &[&str], ns: &str) -> Need {
    let read = method == "GET";
    let ns_cap = |cap| Need::Namespace(ns.to_string(), cap);
    match segs {
        ["v1", "agent", "health"]
        | ["v1", "status", ..]
        | ["v1", "double", ..]
        | ["v1", "regions"]
        | ["v1", "acl", "bootstrap"]
        | ["v1", "acl", "token", "self"] => Need::Open,
        ["v1", "agent", "members"] => Need::Node(!read),
        ["v1", "agent", ..] => Need::Agent(!read),
        ["v1", "nodes"] | ["v1", "node", ..] => Need::Node(!read),
        ["v1", "namespaces"] => Need::AnyToken,
        ["v1", "acl", ..] => Need::Management,
        ["v1", "jobs"] if read => ns_cap("list-jobs"),
        ["v1", "jobs"] => ns_cap("submit-job"),
        ["v1", "jobs", "parse"] => ns_cap("parse-job"),
        ["v1", "job", ..] if read => ns_cap("read-job"),
        ["v1", "job", ..] => ns_cap("submit-job"),
        ["v1", "vars"] => Need::Variable(ns.to_string(), String::new(), "list"),
        ["v1", "var", rest @ ..] => {
            let cap = match method {
                "GET" => "read",
                "DELETE" => "destroy",
                _ => "write",
            };
            Need::Variable(ns.to_string(), rest.join("/"), cap)
        }
        _ => Need::Open,
    }
}

const READ_JOB: &[&str] = &[
    "list-jobs",
    "parse-job",
    "read-job",
    "csi-list-volume",
    "csi-read-volume",
    "list-scaling-policies",
    "read-scaling-policy",
    "read-job-scaling",
];
const WRITE_JOB: &[&str] = &[
    "scale-job",
    "submit-job",
    "dispatch-job",
    "read-logs",
    "read-fs",
    "alloc-exec",
    "alloc-lifecycle",
    "csi-write-volume",
    "csi-mount-volume",
];

/// Nomad's globs in rule labels: `*` matches any run of characters.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob(tail, &rest[i..]))
        }
    }
}

/// Rules blocks (`namespace "<glob>" { ... }`) whose label matches `name`.
fn labelled<'a>(rules: &'a Value, kind: &str, name: &str) -> Vec<&'a Value> {
    rules[kind]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(label, _)| glob(label, name))
        .map(|(_, v)| v)
        .collect()
}

fn caps_of(block: &Value) -> impl Iterator<Item = &str> {
    block["capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn namespace_allows(rules: &Value, ns: &str, cap: &str) -> bool {
    labelled(rules, "namespace", ns).into_iter().any(|b| {
        let by_policy = match b["policy"].as_str() {
            Some("read") => READ_JOB.contains(&cap),
            Some("write") => READ_JOB.contains(&cap) || WRITE_JOB.contains(&cap),
            Some("scale") => {
                matches!(
                    cap,
                    "list-scaling-policies" | "read-scaling-policy" | "scale-job"
                )
            }
            _ => false,
        };
        by_policy || caps_of(b).any(|c| c == cap)
    })
}

fn variable_allows(rules: &Value, ns: &str, path: &str, cap: &str) -> bool {
    labelled(rules, "namespace", ns).into_iter().any(|b| {
        // Nomad 1.4+ expands `policy = "read"|"write"` to variables on every path.
        let by_policy = match b["policy"].as_str() {
            Some("read") => matches!(cap, "list" | "read"),
            Some("write") => true,
            _ => false,
        };
        let by_path = b["variables"]["path"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(p, _)| path.is_empty() || glob(p, path))
            .any(|(_, v)| caps_of(v).any(|c| c == cap || (c == "write" && cap == "destroy")));
        by_policy || by_path
    })
}

fn level_allows(rules: &Value, kind: &str, write: bool) -> bool {
    match rules[kind]["policy"].as_str() {
        Some("write") => true,
        Some("read") => !write,
        _ => false,
    }
}

/// Whether any of `policies` (each a parsed rules document) grants `need`. A `deny`
/// anywhere wins, as in Nomad.
pub fn allows(policies: &[Value], need: &Need) -> bool {
    let denied = |kind: &str, name: Option<&str>| {
        policies.iter().any(|r| match name {
            Some(n) => labelled(r, kind, n)
                .iter()
                .any(|b| b["policy"].as_str() == Some("deny")),
            None => r[kind]["policy"].as_str() == Some("deny"),
        })
    };
    match need {
        Need::Open | Need::AnyToken => true,
        Need::Management => false,
        Need::Namespace(ns, cap) => {
            !denied("namespace", Some(ns)) && policies.iter().any(|r| namespace_allows(r, ns, cap))
        }
        Need::Variable(ns, path, cap) => {
            !denied("namespace", Some(ns))
                && policies.iter().any(|r| variable_allows(r, ns, path, cap))
        }
        Need::Node(write) => {
            !denied("node", None) && policies.iter().any(|r| level_allows(r, "node", *write))
        }
        Need::Agent(write) => {
            !denied("agent", None) && policies.iter().any(|r| level_allows(r, "agent", *write))
        }
    }
}

/// Parses a policy's `Rules` (HCL) into the JSON the checks above read.
pub fn parse_rules(rules: &str) -> Result<Value, String> {
    hcl::from_str::<Value>(rules).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(s: &str) -> Vec<Value> {
        vec![parse_rules(s).unwrap()]
    }

    #[test]
    fn read_policy_reads_but_cannot_submit() {
        let r = rules(r#"namespace "default" { policy = "read" }"#);
        assert!(allows(&r, &need("GET", &["v1", "jobs"], "default")));
        assert!(allows(&r, &need("GET", &["v1", "job", "x"], "default")));
        assert!(!allows(&r, &need("POST", &["v1", "jobs"], "default")));
        assert!(!allows(&r, &need("DELETE", &["v1", "job", "x"], "default")));
        assert!(!allows(&r, &need("GET", &["v1", "jobs"], "other")));
        assert!(!allows(&r, &need("GET", &["v1", "nodes"], "default")));
        assert!(!allows(
            &r,
            &need("GET", &["v1", "acl", "policies"], "default")
        ));
    }

    #[test]
    fn write_globs_capabilities_node_and_deny() {
        let r = rules(
            r#"
namespace "*" { policy = "write" }
namespace "secret" { policy = "deny" }
namespace "ops-*" { capabilities = ["read-job"] }
node { policy = "read" }
"#,
        );
        assert!(allows(&r, &need("POST", &["v1", "jobs"], "apps")));
        assert!(!allows(&r, &need("GET", &["v1", "jobs"], "secret")));
        assert!(allows(&r, &need("GET", &["v1", "nodes"], "default")));
        assert!(!allows(
            &r,
            &need("POST", &["v1", "node", "n", "drain"], "default")
        ));
        assert!(!allows(
            &r,
            &need("GET", &["v1", "agent", "self"], "default")
        ));
        let ops = rules(r#"namespace "ops-*" { capabilities = ["read-job"] }"#);
        assert!(allows(&ops, &need("GET", &["v1", "job", "x"], "ops-a")));
        assert!(!allows(&ops, &need("GET", &["v1", "jobs"], "ops-a")));
    }

    #[test]
    fn variables_follow_policy_and_paths() {
        let r = rules(
            r#"namespace "default" {
  variables {
    path "apps/*" { capabilities = ["read", "list"] }
  }
}"#,
        );
        assert!(allows(
            &r,
            &need("GET", &["v1", "var", "apps", "web"], "default")
        ));
        assert!(!allows(
            &r,
            &need("PUT", &["v1", "var", "apps", "web"], "default")
        ));
        assert!(!allows(
            &r,
            &need("GET", &["v1", "var", "db", "x"], "default")
        ));
        assert!(allows(&r, &need("GET", &["v1", "vars"], "default")));
    }

    #[test]
    fn open_routes_need_no_token() {
        for segs in [
            &["v1", "agent", "health"][..],
            &["v1", "status", "leader"],
            &["v1", "acl", "bootstrap"],
            &["v1", "acl", "token", "self"],
            &["v1", "nope"],
        ] {
            assert_eq!(need("GET", segs, "default"), Need::Open, "{segs:?}");
        }
        assert_eq!(
            need("GET", &["v1", "agent", "self"], "default"),
            Need::Agent(false)
        );
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("ops-*", "ops-a"));
        assert!(!glob("ops-*", "dev-a"));
        assert!(glob("a*c", "abbc"));
        assert!(!glob("a*c", "abcd"));
    }
}
