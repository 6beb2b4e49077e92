//! The one redaction for messages and logs: URLs lose their credentials, and text (an
//! echoing server's body, an error) loses every form a secret travels in.

use base64::Engine as _;
use reqwest::Url;

/// Query parameters whose values are treated as secrets (pre-signed URLs, API keys).
const SECRET_QUERY_HINTS: [&str; 8] = [
    "token",
    "sig",
    "key",
    "secret",
    "password",
    "auth",
    "credential",
    "signature",
];

/// The URL without user info, and with secret-looking query values replaced by `***`.
/// Unparsable input is returned with everything after `://` up to the last `@` dropped.
pub fn url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(parsed) => url_parsed(&parsed),
        Err(_) => match (raw.find("://"), raw.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}{}", &raw[..scheme_end + 3], &raw[at + 1..])
            }
            _ => raw.to_string(),
        },
    }
}

pub fn url_parsed(parsed: &Url) -> String {
    let mut clean = parsed.clone();
    // Setting these only fails for URLs that cannot have credentials (e.g. `data:`).
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    if clean.query().is_some() {
        let pairs: Vec<(String, String)> = clean
            .query_pairs()
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                let secret = SECRET_QUERY_HINTS.iter().any(|hint| lower.contains(hint));
                let value = if secret {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), value)
            })
            .collect();
        clean.query_pairs_mut().clear().extend_pairs(pairs);
    }
    clean.to_string()
}

/// `text` (what an error says of itself; for a reqwest error, once `without_url` dropped the
/// URL, which may hold credentials) followed by each cause in `err`'s chain that it does not
/// already say, `: `-separated.
pub fn with_causes(mut text: String, err: &(dyn std::error::Error + 'static)) -> String {
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The forms a credential travels in on the wire, to scrub from text: the secret itself
/// and, for basic auth, the base64 of `user:password` that the `Authorization` header holds.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// A bearer token (or any single secret value).
    pub fn token(&mut self, token: &str) -> &mut Self {
        self.push(token.to_string());
        self
    }

    /// Basic auth: the password and the header's encoding of `user:password`.
    pub fn basic(&mut self, user: &str, password: &str) -> &mut Self {
        self.push(password.to_string());
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        // Servers may echo it URL-safe or without padding too.
        self.push(encoded.trim_end_matches('=').to_string());
        self.push(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{user}:{password}")),
        );
        self
    }

    fn push(&mut self, value: String) {
        // A one-letter "secret" would turn every message into stars.
        if value.len() >= 3 && !self.0.contains(&value) {
            self.0.push(value);
        }
    }

    /// `text` with every form of every secret replaced by `***`, longest first.
    pub fn scrub(&self, text: &str) -> String {
        let mut sorted: Vec<&String> = self.0.iter().collect();
        sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_string();
        for s in sorted {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_user_info() {
        assert_eq!(
            url("https://alice:hunter2@example.com/p.tar.gz"),
            "https://example.com/p.tar.gz"
        );
        assert_eq!(url("https://tok@example.com/x"), "https://example.com/x");
    }

    #[test]
    fn masks_secret_query_values_only() {
        let out = url("https://h/p.tar?X-Amz-Signature=abc&version=2&access_token=zz");
        assert!(!out.contains("abc") && !out.contains("zz"), "{out}");
        assert!(out.contains("version=2"), "{out}");
    }

    #[test]
    fn unparsable_url_loses_user_info() {
        assert_eq!(url("http://u:p@[bad/x"), "http://[bad/x");
        assert_eq!(url("not a url"), "not a url");
    }

    #[test]
    fn basic_credentials_are_scrubbed_in_their_encoded_form_too() {
        let mut secrets = Secrets::default();
        secrets.basic("alice", "s3cret-pw");
        // base64("alice:s3cret-pw")
        let echoed = "got Authorization: Basic YWxpY2U6czNjcmV0LXB3 and s3cret-pw";
        assert_eq!(
            secrets.scrub(echoed),
            "got Authorization: Basic *** and ***"
        );
        secrets.token("tok-123");
        assert_eq!(secrets.scrub("Bearer tok-123"), "Bearer ***");
    }

    #[test]
    fn scrub_replaces_secret() {
        let mut secrets = Secrets::default();
        secrets.token("s3cr3t").token("");
        assert_eq!(secrets.scrub("got s3cr3t!"), "got ***!");
        assert_eq!(Secrets::default().scrub("same"), "same");
    }
}
