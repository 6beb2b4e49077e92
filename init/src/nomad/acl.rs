//! The ACL bootstrap call: the one request that makes a cluster's first management token.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::connection::SMALL_BODY_LIMIT;
use super::error::{ApiError, Result};
use super::{Client, Secret};

const PATH: &str = "/v1/acl/bootstrap";

/// The management token the bootstrap made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// Public: what logs may show.
    pub accessor_id: String,
    pub secret: Secret,
}

/// What Nomad said to a bootstrap request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    Done(BootstrapToken),
    /// Someone bootstrapped this cluster before (Nomad's words, with its reset index).
    AlreadyDone(String),
}

impl Client {
    /// `POST /v1/acl/bootstrap`, with `BootstrapSecret` when `secret` is given (Nomad 1.4+
    /// makes it the token's SecretID; older agents ignore it and choose their own).
    pub async fn acl_bootstrap(&self, secret: Option<&Secret>) -> Result<Bootstrap> {
        let body = match secret {
            Some(s) => json!({ "BootstrapSecret": s.expose() }),
            None => json!({}),
        };
        let answer = self
            .call_limited(Method::POST, PATH, Some(&body), SMALL_BODY_LIMIT, None)
            .await;
        let v = match answer {
            Ok(v) => v,
            Err(e)
                if e.status() == Some(StatusCode::BAD_REQUEST)
                    && e.body()
                        .is_some_and(|b| b.contains("ACL bootstrap already done")) =>
            {
                return Ok(Bootstrap::AlreadyDone(e.body().unwrap_or_default().into()));
            }
            Err(e) => return Err(e),
        };
        // The body holds the secret: errors name the missing field, never show the body.
        let field = |name: &str| {
            v[name]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| ApiError::Decode {
                    method: Method::POST,
                    path: PATH.into(),
                    message: format!("no {name} in the bootstrap answer ({})", kind_of(&v)),
                })
        };
        Ok(Bootstrap::Done(BootstrapToken {
            accessor_id: field("AccessorID")?,
            secret: Secret::new(field("SecretID")?),
        }))
    }
}

fn kind_of(v: &Value) -> &'static str {
    super::kind(v)
}

/// Is `s` a UUID as Nomad writes them (8-4-4-4-12 hex digits)? Nomad refuses any other
/// `BootstrapSecret` ("invalid acl token").
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A random (version 4) UUID from `random` bytes: the version 4 GUID of the GPT codec, in
/// the 8-4-4-4-12 form Nomad's tokens have.
pub fn uuid_from(random: [u8; 16]) -> String {
    nomados_gpt::Guid::v4_from(random).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nomad::Settings;

    #[test]
    fn uuids_are_checked_and_made_like_nomads() {
        assert!(is_uuid("2b778dd9-f5f1-6f29-b4b4-9a5fa948757a"));
        assert!(!is_uuid("2b778dd9f5f16f29b4b49a5fa948757a"));
        assert!(!is_uuid("2b778dd9-f5f1-6f29-b4b4-9a5fa948757g"));
        assert!(!is_uuid("s3cr3t"));
        let u = uuid_from([0xff; 16]);
        assert!(is_uuid(&u), "{u}");
        assert_eq!(&u[14..15], "4");
        assert_ne!(uuid_from([1; 16]), uuid_from([2; 16]));
    }

    async fn double(version: &str) -> Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let mut opts = nomad_double::Options::new(nomad_double::AgentConfig {
            acl_enabled: true,
            ..nomad_double::AgentConfig::default()
        });
        opts.version = nomad_double::Version::parse(version).unwrap();
        tokio::spawn(nomad_double::serve(listener, opts));
        Client::new(&Settings::new(addr)).unwrap()
    }

    #[tokio::test]
    async fn bootstrap_takes_the_chosen_secret_once() {
        let c = double("1.7.7").await;
        let chosen = Secret::new("2b778dd9-f5f1-6f29-b4b4-9a5fa948757a");
        let Bootstrap::Done(t) = c.acl_bootstrap(Some(&chosen)).await.unwrap() else {
            panic!("first bootstrap refused")
        };
        assert_eq!(t.secret, chosen);
        assert!(is_uuid(&t.accessor_id));
        match c.acl_bootstrap(None).await.unwrap() {
            Bootstrap::AlreadyDone(words) => {
                assert!(words.contains("reset index"), "{words}")
            }
            other => panic!("second bootstrap: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_old_agent_ignores_the_chosen_secret() {
        let c = double("1.1.2").await;
        let chosen = Secret::new("2b778dd9-f5f1-6f29-b4b4-9a5fa948757a");
        let Bootstrap::Done(t) = c.acl_bootstrap(Some(&chosen)).await.unwrap() else {
            panic!("bootstrap refused")
        };
        assert_ne!(t.secret, chosen);
    }
}
