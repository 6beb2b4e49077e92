//! The machine's own configuration, found at boot where the platform puts it (issue 10):
//! one image, many machines, each told at boot who it is.
//!
//! [`found`] holds what every source hands over; [`providers`] are the cloud metadata
//! services. Finding, validating and applying the user data is untrusted work and runs in
//! a child that PID 1 supervises, never inside PID 1.

pub mod apply;
pub mod found;
pub mod overlay;
pub mod paths;
pub mod providers;
pub mod render;
pub mod run;
pub mod sources;
pub mod userdata;
