//! The data that flows between the applier's stages. Plain values, no I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::diag::Location;

/// Meta keys the applier writes into every job it manages.
pub mod meta {
    /// Name of the pack set that owns the job; two sets never prune each other.
    pub const OWNER: &str = "nomados.owner";
    /// Pack name (`_name`) the job came from.
    pub const PACK: &str = "nomados.pack";
    /// Declared job (the job table's key) that produced this Nomad job.
    pub const JOB: &str = "nomados.job";
    /// SHA-256 of the rendered job, before these meta keys were added.
    pub const HASH: &str = "nomados.hash";
}

/// Owner name used when the pack set does not set a top-level `_name`.
pub const DEFAULT_OWNER: &str = "nomados";

/// The whole declared set, after every file of a directory has been merged.
#[derive(Debug, Clone, PartialEq)]
pub struct PackSet {
    /// Owner recorded in each managed job's meta (top-level `_name`, default [`DEFAULT_OWNER`]).
    pub name: String,
    /// Packs in order of first declaration (file order, then order within the file).
    pub packs: Vec<PackDecl>,
    /// The files that were read, in the order they were merged.
    pub files: Vec<PathBuf>,
}

/// One pack table of the pack set: where the pack comes from and the jobs declared from it.
#[derive(Debug, Clone, PartialEq)]
pub struct PackDecl {
    /// The table's key.
    pub key: String,
    /// `_name`, defaults to the key. Templates see it as `pack`; meta records it.
    pub name: String,
    /// `_origin`, required.
    pub origin: Origin,
    /// `_origin-name`: the pack's name at the origin, defaults to the key.
    pub origin_name: String,
    /// `_sha256`: pin for downloaded archives (64 lowercase hex digits).
    pub sha256: Option<String>,
    /// `_auth`: how to authenticate to the origin.
    pub auth: Option<Auth>,
    /// Where the pack table was first declared.
    pub location: Location,
    /// Declared jobs in order of first declaration.
    pub jobs: Vec<JobDecl>,
}

/// Where a pack comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local directory (plain path or `file://`), already resolved against the
    /// directory of the config file that set it. Holds `<origin-name>/` or is the pack itself.
    Local(PathBuf),
    /// An `http://` or `https://` URL of a `.tar.xz`, `.tar.gz` or `.tar` archive.
    Http(String),
}

/// Credentials for an origin, always read from a file or an environment variable at fetch
/// time; the config never holds the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub scheme: AuthScheme,
    pub secret: SecretSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// HTTP basic. With `username` set the secret is the password; without, the secret
    /// is `user:password`.
    Basic { username: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Path of a file holding the secret (trailing newline stripped); resolved against the
    /// config file's directory.
    File(PathBuf),
    /// Name of an environment variable holding the secret.
    Env(String),
}

/// One job table: instantiates every job file of its pack with these variables.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDecl {
    /// The job table's key; templates see it as `jobname`.
    pub name: String,
    /// Template variables (every key not starting with `_`), TOML values as JSON.
    pub vars: BTreeMap<String, Value>,
    /// `_allow-drivers`: task drivers allowed besides `exec` and `raw_exec` (explicit opt-out).
    pub allow_drivers: Vec<String>,
    /// Where the job table was first declared.
    pub location: Location,
}

/// Names the origin of a rendered artifact in messages: pack, declared job, file in the pack.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Source {
    pub pack: String,
    pub job: String,
    /// Path of the template inside the pack, e.g. `jobs/redis.hcl`.
    pub file: PathBuf,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pack '{}', job '{}', file {}",
            self.pack,
            self.job,
            self.file.display()
        )
    }
}

/// How a rendered job file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobFormat {
    /// `.hcl` / `.nomad`: parsed by the Nomad agent (`POST /v1/jobs/parse`).
    Hcl,
    /// `.json`: a Nomad API job, bare or wrapped as `{"Job": {...}}`.
    Json,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RenderedJob {
    pub source: Source,
    pub format: JobFormat,
    pub text: String,
}

/// Identity of a job in Nomad.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    pub namespace: String,
    pub id: String,
}

impl JobKey {
    pub fn of(job: &Value) -> Option<Self> {
        let id = job["ID"].as_str().filter(|s| !s.is_empty())?;
        let namespace = job["Namespace"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        Some(Self {
            namespace: namespace.to_string(),
            id: id.to_string(),
        })
    }
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace == "default" {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{}/{}", self.namespace, self.id)
        }
    }
}

/// Identity of anything the applier writes to Nomad: a job, an ACL policy or a Variable.
/// Two rendered objects with one key clash; messages name objects by it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    Job(JobKey),
    /// ACL policies have a name and no namespace.
    Policy(String),
    Variable {
        namespace: String,
        path: String,
    },
}

/// The kinds of object the applier writes, in the order a run writes them: policies and
/// variables before the jobs that may need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Policy,
    Variable,
    Job,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Policy => "policy",
            Kind::Variable => "variable",
            Kind::Job => "job",
        }
    }
}

impl ObjectKey {
    pub fn kind(&self) -> Kind {
        match self {
            ObjectKey::Job(_) => Kind::Job,
            ObjectKey::Policy(_) => Kind::Policy,
            ObjectKey::Variable { .. } => Kind::Variable,
        }
    }

    /// The job's key, for a job.
    pub fn job(&self) -> Option<&JobKey> {
        match self {
            ObjectKey::Job(key) => Some(key),
            _ => None,
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectKey::Job(key) => write!(f, "job ID `{key}`"),
            ObjectKey::Policy(name) => write!(f, "ACL policy `{name}`"),
            ObjectKey::Variable { namespace, path } if namespace == "default" => {
                write!(f, "variable `{path}`")
            }
            ObjectKey::Variable { namespace, path } => write!(f, "variable `{namespace}/{path}`"),
        }
    }
}

/// A Nomad Variable rendered from `variables/`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RenderedVariable {
    pub source: Source,
    pub path: String,
    /// None means the namespace the applier runs in (`default` unless told otherwise).
    pub namespace: Option<String>,
    pub items: BTreeMap<String, String>,
}

/// An ACL policy rendered from `policies/<name>.hcl`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RenderedPolicy {
    pub source: Source,
    pub name: String,
    pub description: Option<String>,
    pub rules: String,
}

impl RenderedVariable {
    /// The namespace it is written to.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::Variable {
            namespace: self.namespace().to_string(),
            path: self.path.clone(),
        }
    }
}

impl RenderedPolicy {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::Policy(self.name.clone())
    }
}

/// Everything one job table produced.
// Serialisable: a pack is rendered in a child process and sent back (see `render_child`).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Rendered {
    pub jobs: Vec<RenderedJob>,
    pub variables: Vec<RenderedVariable>,
    pub policies: Vec<RenderedPolicy>,
}

/// Outcome counts of the run's objects (jobs, policies and variables); printed as the
/// one-line summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub failed: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} created, {} updated, {} unchanged, {} deleted, {} failed",
            self.created, self.updated, self.unchanged, self.deleted, self.failed
        )
    }
}

/// How far a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fetch, render, parse and check; no state read, nothing written.
    Validate,
    /// Print what the packs render to.
    Render,
    /// Show the reconcile plan with Nomad's diffs; nothing written.
    Plan,
    /// Make it so.
    Apply,
}
