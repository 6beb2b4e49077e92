//! Jobs as configuration: the pack set, where packs come from, how they render, and the
//! reconciling applier that makes Nomad run exactly the declared set.
//!
//! Pipeline: [`config`] reads the pack-set TOML into a [`model::PackSet`]; [`origin`] fetches
//! each pack to a local directory; [`pack`] loads that directory; [`render`] instantiates it
//! once per declared job, in a child process per pack ([`render_child`]); [`validate`] checks the output;
//! [`live`] reads what Nomad holds; [`plan`] diffs the jobs, ACL policies and Variables
//! against it (each kind stamped and read back by [`objects`]); [`execute`] performs the
//! plan; [`apply`] runs it all, and [`record`] remembers what it last saw agree, to catch
//! jobs changed outside the set.

pub mod apply;
pub mod config;
pub mod events;
mod execute;
pub mod json_job;
mod live;
pub mod model;
pub mod objects;
pub mod origin;
pub mod pack;
pub mod plan;
mod prepare;
pub mod record;
pub mod render;
pub mod render_child;
pub mod report;
pub mod safe_fs;
pub mod schema;
pub mod validate;
