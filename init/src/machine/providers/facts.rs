//! Facts from a metadata service are untrusted strings that end up as Nomad client `meta`
//! and the hostname: keep only short, printable values, and only hostnames that are names.

/// Longer than any instance ID, zone or machine type a provider documents.
const MAX_FACT_LEN: usize = 255;
/// RFC 1123: a full hostname is at most 253 characters, each label at most 63.
const MAX_HOSTNAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A fact as given, trimmed; `None` when empty, too long or containing control characters.
pub fn fact(raw: &str) -> Option<String> {
    let value = raw.trim();
    let printable = !value.chars().any(char::is_control);
    (!value.is_empty() && value.len() <= MAX_FACT_LEN && printable).then(|| value.to_string())
}

/// A hostname (letters, digits, `-`, dot-separated labels); `None` when it is not one.
pub fn hostname(raw: &str) -> Option<String> {
    let name = raw.trim().trim_end_matches('.');
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    (!name.is_empty() && name.len() <= MAX_HOSTNAME_LEN && name.split('.').all(label_ok))
        .then(|| name.to_string())
}

/// The last `/`-separated segment: `projects/1/zones/us-central1-a` -> `us-central1-a`.
pub fn last_segment(raw: &str) -> &str {
    raw.trim().rsplit('/').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_trimmed_and_bounded() {
        assert_eq!(fact("  i-0abc \n"), Some("i-0abc".to_string()));
        assert_eq!(fact("   "), None);
        assert_eq!(fact("a\u{7}b"), None);
        assert_eq!(fact("line\nbreak"), None);
        assert_eq!(
            fact(&"x".repeat(MAX_FACT_LEN)).map(|s| s.len()),
            Some(MAX_FACT_LEN)
        );
        assert_eq!(fact(&"x".repeat(MAX_FACT_LEN + 1)), None);
    }

    #[test]
    fn hostnames_must_be_names() {
        assert_eq!(
            hostname("ip-10-0-0-1.ec2.internal"),
            Some("ip-10-0-0-1.ec2.internal".to_string())
        );
        assert_eq!(hostname("web-1.\n"), Some("web-1".to_string()));
        assert_eq!(hostname("web_1"), None);
        assert_eq!(hostname("-web"), None);
        assert_eq!(hostname("a..b"), None);
        assert_eq!(hostname("rm -rf"), None);
        assert_eq!(hostname(&"a".repeat(64)), None);
        assert_eq!(hostname(""), None);
    }

    #[test]
    fn last_segment_of_a_resource_path() {
        assert_eq!(
            last_segment("projects/12/zones/us-central1-a"),
            "us-central1-a"
        );
        assert_eq!(last_segment("e2-medium"), "e2-medium");
    }
}
