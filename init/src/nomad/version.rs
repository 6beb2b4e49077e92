//! Nomad versions, to use what the agent offers and fall back where it does not.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `1.7.7`, `v1.6.0-beta.1`, `1.10.0+ent`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().trim_start_matches('v');
        let core = s.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next().unwrap_or(Ok(0)).ok()?;
        let patch = parts.next().unwrap_or(Ok(0)).ok()?;
        Some(Self::new(major, minor, patch))
    }

    /// `filter` expressions on list endpoints.
    pub fn supports_filter(self) -> bool {
        self >= Self::new(1, 3, 0)
    }

    /// Nomad Variables.
    pub fn supports_variables(self) -> bool {
        self >= Self::new(1, 4, 0)
    }

    /// `Submission` (the job's source) on register.
    pub fn supports_submission(self) -> bool {
        self >= Self::new(1, 6, 0)
    }

    /// Deployments for system jobs (before 1.11 system jobs are judged by allocations).
    pub fn system_deployments(self) -> bool {
        self >= Self::new(1, 11, 0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_prerelease_and_metadata() {
        assert_eq!(Version::parse("1.1.2"), Some(Version::new(1, 1, 2)));
        assert_eq!(Version::parse("v1.6.0-beta.1"), Some(Version::new(1, 6, 0)));
        assert_eq!(Version::parse("1.10.0+ent"), Some(Version::new(1, 10, 0)));
        assert_eq!(Version::parse("nope"), None);
    }

    #[test]
    fn feature_gates_follow_release_history() {
        let v112 = Version::new(1, 1, 2);
        assert!(!v112.supports_filter() && !v112.supports_variables());
        assert!(Version::new(1, 3, 0).supports_filter());
        assert!(Version::new(1, 4, 0).supports_variables());
        assert!(!Version::new(1, 5, 9).supports_submission());
        assert!(Version::new(1, 6, 0).supports_submission());
        assert!(!Version::new(1, 10, 3).system_deployments());
    }
}
