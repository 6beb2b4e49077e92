//! The Nomad version the double pretends to be, and the features gated on it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub const DEFAULT: Version = Version(1, 7, 7);

    /// Parses "1.7.7", "v1.4.0", "1.6.1-beta.1" (pre-release suffix ignored).
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches('v');
        let core = s.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next().unwrap_or(Ok(0)).ok()?;
        let patch = parts.next().unwrap_or(Ok(0)).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Version(major, minor, patch))
    }

    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= Version(major, minor, 0)
    }

    /// `?filter=` on list endpoints (Nomad 1.3).
    pub fn has_filter(self) -> bool {
        self.at_least(1, 3)
    }
    /// Variables API (Nomad 1.4).
    pub fn has_variables(self) -> bool {
        self.at_least(1, 4)
    }
    /// `?meta=true` on the job list adds `Meta` to stubs (Nomad 1.4).
    pub fn has_list_meta(self) -> bool {
        self.at_least(1, 4)
    }
    /// `BootstrapSecret` on `POST /v1/acl/bootstrap` sets the management SecretID (Nomad 1.4).
    pub fn has_bootstrap_secret(self) -> bool {
        self.at_least(1, 4)
    }
    /// Job submissions (source kept with each version, Nomad 1.6).
    pub fn has_submissions(self) -> bool {
        self.at_least(1, 6)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_gates() {
        assert_eq!(Version::parse("v1.1.2"), Some(Version(1, 1, 2)));
        assert_eq!(Version::parse("1.6.1-beta.1"), Some(Version(1, 6, 1)));
        assert_eq!(Version::parse("x"), None);
        let old = Version(1, 1, 2);
        assert!(!old.has_filter() && !old.has_variables() && !old.has_submissions());
        let new = Version::DEFAULT;
        assert!(new.has_filter() && new.has_variables() && new.has_submissions());
        assert!(Version(1, 4, 0).has_variables() && !Version(1, 4, 0).has_submissions());
    }
}
