//! The one client for the Nomad HTTP API, used by PID 1 (health, this node's drain and
//! eligibility) and by the pack applier (jobs, variables, policies).
//!
//! [`Settings`] says where Nomad is and how to talk to it (address, ACL token, TLS); the
//! CLI fills it from Nomad's own `NOMAD_*` variables and flags, PID 1 from its config.
//! Every request is bounded in time and in response size, and every error names the
//! request and what Nomad answered (Nomad's errors are plain text). The token never
//! appears in logs, errors or `Debug` output.

pub mod acl;
pub mod agent_config;
mod connection;
mod error;
mod jobs;
mod nodes;
pub mod settings;
mod version;

pub use agent_config::LocalAgent;
pub use connection::{Client, LIST_BODY_LIMIT, SMALL_BODY_LIMIT};
pub use error::{ApiError, Result};
pub use jobs::RegisterResponse;
pub use nodes::{AgentInfo, Drain, Eligibility, NodeRef, DRAIN_MESSAGE};
pub use settings::{Live, Secret, Settings, Tls, TokenSource};
pub use version::Version;

use serde_json::Value;

/// Percent-encodes one path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments_and_bexpr_filters() {
        assert_eq!(encode("web/api v2"), "web%2Fapi%20v2");
        assert_eq!(
            encode(r#"Meta["nomados.owner"] == "a""#),
            "Meta%5B%22nomados.owner%22%5D%20%3D%3D%20%22a%22"
        );
    }

    #[test]
    fn truncates_on_a_char_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("aéb", 2), "a…");
    }
}
