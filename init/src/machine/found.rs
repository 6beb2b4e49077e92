//! What a configuration source hands over: the user data (raw, unvalidated bytes) and the
//! facts the platform knows about this machine.

/// Facts about this machine from the platform (metadata service, config drive). They become
/// Nomad client `meta` (and the hostname), so jobs can be constrained by them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub instance_id: Option<String>,
    pub hostname: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub instance_type: Option<String>,
}

/// One source's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Which source answered, for the log: `cmdline-url`, `nocloud`, `config-2`,
    /// `fw_cfg`, `ec2`, `gce`, `azure`, `openstack`, `baked`.
    pub source: &'static str,
    /// The user data exactly as the source gave it (bounded in size by the source);
    /// `None` when the source has facts but no user data.
    pub user_data: Option<Vec<u8>>,
    pub facts: Facts,
}
