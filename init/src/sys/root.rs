//! Where the system's paths live: `/` on a real boot, a temporary directory in tests.
//!
//! `NOMADOS_TEST_ROOT=/some/dir` puts the init in test mode: the mount table, the default
//! config and data paths are placed under that directory, nothing touches the host's root
//! filesystem or cgroups, and the kernel command line is read from `NOMADOS_TEST_CMDLINE`.
//! The tests run it as PID 1 of a fresh PID/mount/UTS/network namespace.

use std::path::{Path, PathBuf};

pub const TEST_ROOT_ENV: &str = "NOMADOS_TEST_ROOT";
pub const TEST_CMDLINE_ENV: &str = "NOMADOS_TEST_CMDLINE";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    prefix: Option<PathBuf>,
}

impl Root {
    /// The real root `/`.
    pub fn real() -> Self {
        Self { prefix: None }
    }

    /// A test root: every system path is mapped under `prefix`.
    pub fn test(prefix: impl Into<PathBuf>) -> Self {
        Self {
            prefix: Some(prefix.into()),
        }
    }

    /// Test mode when `NOMADOS_TEST_ROOT` names an absolute directory, else the real root.
    pub fn from_env() -> Self {
        match std::env::var_os(TEST_ROOT_ENV) {
            Some(p) if Path::new(&p).is_absolute() => Self::test(PathBuf::from(p)),
            _ => Self::real(),
        }
    }

    pub fn is_test(&self) -> bool {
        self.prefix.is_some()
    }

    /// Maps an absolute system path (`/proc`) to where it lives under this root.
    pub fn path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        match &self.prefix {
            None => p.to_path_buf(),
            Some(prefix) => prefix.join(p.strip_prefix("/").unwrap_or(p)),
        }
    }

    /// Is `p` (an absolute path) inside this root? Always true for the real root.
    pub fn contains(&self, p: &Path) -> bool {
        match &self.prefix {
            None => true,
            Some(prefix) => p.starts_with(prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_root_maps_system_paths_under_its_prefix() {
        let r = Root::test("/tmp/t");
        assert_eq!(r.path("/proc"), PathBuf::from("/tmp/t/proc"));
        assert_eq!(
            r.path("/sys/fs/cgroup"),
            PathBuf::from("/tmp/t/sys/fs/cgroup")
        );
        assert!(r.contains(Path::new("/tmp/t/dev")));
        assert!(!r.contains(Path::new("/dev")));
        assert_eq!(Root::real().path("/proc"), PathBuf::from("/proc"));
    }
}
