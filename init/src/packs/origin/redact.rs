//! Renders origins for messages and logs with any credentials removed.

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

/// Replaces every occurrence of `secret` in `text` (server bodies may echo what they got).
pub fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text.to_string(),
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
    fn scrub_replaces_secret() {
        assert_eq!(scrub("got s3cr3t!", Some("s3cr3t")), "got ***!");
        assert_eq!(scrub("same", Some("")), "same");
    }
}
