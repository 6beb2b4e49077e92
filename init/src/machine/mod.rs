//! The machine's own configuration, found at boot where the platform puts it (issue 10):
//! one image, many machines, each told at boot who it is.
//!
//! Pure core: [`userdata`] (the format, checked with line and column), [`render`] (user
//! data + facts → agent config fragment, init override, secret files), [`overlay`]
//! (layering the init override over the baked `nomados.toml`). Effects: [`sources`] (where
//! the user data comes from, in order), [`apply`] (staged writes, renamed into place; [`placed`]
//! removes the files a later user data drops),
//! [`run`] (the `machine-config apply` child). [`found`] is what every source hands over;
//! [`providers`] are the cloud metadata services. Finding, validating and applying the user
//! data is untrusted work and runs in a child that PID 1 supervises
//! ([`crate::supervise::machine`]), never inside PID 1. Format: docs/machine-config.md.

pub mod apply;
pub mod found;
pub mod hcl;
pub mod overlay;
pub mod paths;
pub mod placed;
pub mod plan;
pub mod poll;
pub mod providers;
pub mod render;
pub mod run;
pub mod sources;
pub mod userdata;
